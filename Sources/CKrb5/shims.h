// The C headers of MIT krb5 (Debian libkrb5-dev) as one Clang module. Everything the package needs
// imports directly; variadic functions and function-like macros are avoided rather than shimmed.
#ifndef CKRB5_SHIMS_H
#define CKRB5_SHIMS_H

#include <krb5/krb5.h>
#include <profile.h>
#include <resolv.h>

/// `res_query` is a macro for `__res_query` in glibc's <resolv.h>; the one shim, for KDC SRV lookups.
static inline int ckrb5_res_query(const char *name, int class_, int type, unsigned char *answer, int length) {
    return res_query(name, class_, type, answer, length);
}

#endif
