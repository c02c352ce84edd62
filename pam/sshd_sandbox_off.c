/*
 * Test-only: preloaded into sshd when PAMSSHDTests run it under valgrind (never installed). OpenSSH's preauth
 * child (the network-facing one; it loads no PAM module) locks itself in with setrlimit(RLIMIT_FSIZE, 0),
 * setrlimit(RLIMIT_NOFILE, 0) and a seccomp filter. Under valgrind none of them can work: memcheck refuses to
 * move the descriptor limit under its own reserved descriptors (so sshd's fatal() ends every connection), a
 * zero file size stops it writing its log, and the filter would forbid valgrind's own system calls. OpenSSH
 * knows the first (SANDBOX_SKIP_RLIMIT_NOFILE). Here those two limits are reported as set and the filter as
 * unsupported, which sshd accepts (it logs and goes on, as on a kernel without seccomp). The monitor and the
 * PAM process it forks, where pam_krb5verify.so runs, are untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/resource.h>

int setrlimit(__rlimit_resource_t resource, const struct rlimit *limit) {
    if (resource == RLIMIT_NOFILE || resource == RLIMIT_FSIZE) return 0;
    int (*next)(__rlimit_resource_t, const struct rlimit *) = (int (*)(__rlimit_resource_t, const struct rlimit *))dlsym(RTLD_NEXT, "setrlimit");
    return next(resource, limit);
}

int prctl(int option, ...) {
    va_list arguments;
    va_start(arguments, option);
    unsigned long a2 = va_arg(arguments, unsigned long), a3 = va_arg(arguments, unsigned long);
    unsigned long a4 = va_arg(arguments, unsigned long), a5 = va_arg(arguments, unsigned long);
    va_end(arguments);
    if (option == PR_SET_SECCOMP) {
        errno = EINVAL;
        return -1;
    }
    int (*next)(int, ...) = (int (*)(int, ...))dlsym(RTLD_NEXT, "prctl");
    return next(option, a2, a3, a4, a5);
}
