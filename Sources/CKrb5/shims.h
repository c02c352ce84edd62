// The C headers of MIT krb5 (Debian libkrb5-dev) as one Clang module. Everything the package needs
// imports directly; variadic functions and function-like macros are avoided rather than shimmed.
#ifndef CKRB5_SHIMS_H
#define CKRB5_SHIMS_H

#include <krb5/krb5.h>
#include <profile.h>

#endif
