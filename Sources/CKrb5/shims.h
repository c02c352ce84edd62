// C shims for the parts of MIT krb5 that the Swift importer cannot see.
#ifndef CKRB5_SHIMS_H
#define CKRB5_SHIMS_H

#include <krb5/krb5.h>
#include <profile.h>
#include <string.h>

/// Wipes `len` bytes at `p` in a way the optimiser may not remove.
static inline void ckrb5_wipe(void *p, size_t len) {
    if (p != NULL && len > 0) {
        explicit_bzero(p, len);
    }
}

#endif
