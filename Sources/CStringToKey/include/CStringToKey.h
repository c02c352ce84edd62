// The AES-SHA1 string-to-key of RFC 3962 (PBKDF2-HMAC-SHA1, then DK with "kerberos"), made fast: on the CPU's SHA
// extensions where it has them, else on OpenSSL's SHA-1 with the HMAC key states made once. It also stands in for
// libk5crypto's `krb5_c_string_to_key_with_params` in the process (string_to_key.c), so that every password key
// MIT's own exchange derives (an AS-REP without preauth, PREAUTH_REQUIRED, FAST's encrypted challenge, any salt)
// is made here, and it can report which enctype, salt and parameters the KDC asked for.
#ifndef CSTRINGTOKEY_H
#define CSTRINGTOKEY_H

#include <stddef.h>
#include <stdint.h>

/// PBKDF2-HMAC-SHA1 (RFC 8018 section 5.2): 1 on success, 0 for zero iterations or a libcrypto failure. With the
/// SHA extensions when the CPU has them and the build is optimised, else `s2k_pbkdf2_sha1_portable`.
int s2k_pbkdf2_sha1(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                    unsigned int iterations, unsigned char *output, size_t outputLength);

/// PBKDF2-HMAC-SHA1 on OpenSSL's SHA-1, on any CPU.
int s2k_pbkdf2_sha1_portable(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                             unsigned int iterations, unsigned char *output, size_t outputLength);

/// PBKDF2-HMAC-SHA1 on the SHA extensions; 0 on a CPU without them (`s2k_cpu_has_sha_ni`).
int s2k_pbkdf2_sha1_ni(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                       unsigned int iterations, unsigned char *output, size_t outputLength);

/// Whether the CPU has the SHA extensions with SSSE3 and SSE4.1 (asked of CPUID once).
int s2k_cpu_has_sha_ni(void);

/// The RFC 3962 key of `password` for aes128-cts-hmac-sha1-96 (`keyLength` 16) or aes256-cts-hmac-sha1-96 (32):
/// DK(PBKDF2-HMAC-SHA1(password, salt, iterations), "kerberos"). 1 on success. Every intermediate is wiped.
int s2k_aes_sha1_key(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                     uint32_t iterations, unsigned char *key, size_t keyLength);

/// What the last password key derived on this thread was asked for: the enctype, the salt and the string-to-key
/// parameters MIT passed to `krb5_c_string_to_key_with_params` (from the KDC's etype info, or the defaults).
typedef struct {
    int32_t enctype;
    size_t saltLength;
    unsigned char salt[1024];
    size_t parametersLength;
    unsigned char parameters[16];
} s2k_request;

/// Forgets this thread's last request and leaves question mode (call before a krb5 step).
void s2k_begin_step(int questionMode);

/// Copies this thread's last request into `request` and forgets it: 1 when a key was asked for since
/// `s2k_begin_step`, else 0. In question mode, the key was refused (`KRB5_LIBOS_PWDINTR`) after being recorded:
/// the exchange learnt the KDC's etype info and sent no pre-authentication.
int s2k_end_step(s2k_request *request);

/// Keys made on this thread: by `s2k_aes_sha1_key` (`fast`) and by libk5crypto (`libk5crypto`, any enctype).
typedef struct {
    uint64_t fast;
    uint64_t libk5crypto;
} s2k_counts;

s2k_counts s2k_counts_on_this_thread(void);

#endif
