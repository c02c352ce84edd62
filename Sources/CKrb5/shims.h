// The C headers of MIT krb5 (Debian libkrb5-dev) as one Clang module. Everything the package needs
// imports directly; variadic functions and function-like macros are avoided rather than shimmed.
#ifndef CKRB5_SHIMS_H
#define CKRB5_SHIMS_H

#include <krb5/krb5.h>
#include <profile.h>
#include <resolv.h>
#include <arpa/inet.h>
#include <string.h>

/// `res_query` is a macro for `__res_query` in glibc's <resolv.h>; the one shim, for KDC SRV lookups.
static inline int ckrb5_res_query(const char *name, int class_, int type, unsigned char *answer, int length) {
    return res_query(name, class_, type, answer, length);
}

/// `res_query` against one given IPv4 nameserver and port instead of resolv.conf's (`res_ninit` on a private
/// resolver state, `res_nquery`, `res_nclose`): the tests' SRV records served on loopback.
static inline int ckrb5_res_query_at(const char *name, int class_, int type, unsigned char *answer, int length,
                                     const char *address, int port) {
    struct __res_state state;
    memset(&state, 0, sizeof state);
    if (res_ninit(&state) != 0) return -1;
    state.nscount = 1;
    memset(&state.nsaddr_list[0], 0, sizeof state.nsaddr_list[0]);
    state.nsaddr_list[0].sin_family = AF_INET;
    state.nsaddr_list[0].sin_port = htons((uint16_t)port);
    int result = -1;
    if (inet_pton(AF_INET, address, &state.nsaddr_list[0].sin_addr) == 1)
        result = res_nquery(&state, name, class_, type, answer, length);
    res_nclose(&state);
    return result;
}

#endif
