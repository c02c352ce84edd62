// prctl(2) is variadic and does not import into Swift: one fixed-signature wrapper per use.
#ifndef CPROCESSCONTROL_SHIMS_H
#define CPROCESSCONTROL_SHIMS_H

#include <sys/prctl.h>

/// prctl(PR_SET_DUMPABLE, dumpable): 0 means no core dump, no ptrace by the same uid, /proc/PID files owned by root.
static inline int cprocess_set_dumpable(int dumpable) {
    return prctl(PR_SET_DUMPABLE, (unsigned long)dumpable, 0UL, 0UL, 0UL);
}

/// prctl(PR_GET_DUMPABLE): the calling process's dumpable flag.
static inline int cprocess_get_dumpable(void) {
    return prctl(PR_GET_DUMPABLE, 0UL, 0UL, 0UL, 0UL);
}

#endif
