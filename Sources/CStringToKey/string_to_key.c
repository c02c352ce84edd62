// The RFC 3962 key, and the stand-in for libk5crypto's string-to-key that makes MIT's own exchanges use it.
//
// MIT's password exchange gets its key from `krb5_get_as_key_password`, which calls
// `krb5_c_string_to_key_with_params` in libk5crypto through libkrb5's PLT. A definition of that function in the
// program (this file, linked into every binary that uses the Kerberos library) is found first by the dynamic
// linker, so MIT's exchange, whatever the KDC asked for (an AS-REP without preauth, PREAUTH_REQUIRED, FAST's
// encrypted challenge, an AD or Heimdal salt), gets its AES-SHA1 key from `s2k_aes_sha1_key`: the same bytes,
// made 10–15 times faster. Anything else (other enctypes, parameters libk5crypto refuses) goes to libk5crypto's
// own definition, found with dlsym(RTLD_NEXT).
#define _GNU_SOURCE 1
// AES_set_encrypt_key/AES_encrypt are deprecated in OpenSSL 3 (in favour of EVP) but kept: see aes_encrypt_block.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "CStringToKey.h"
#include <dlfcn.h>
#include <immintrin.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <krb5/krb5.h>
#include <openssl/aes.h>
#include <openssl/crypto.h>

/// The 128-bit n-fold of "kerberos" (RFC 3961 section A.1): the constant of the final DK step.
static const unsigned char kerberosConstant[16] = {0x6b, 0x65, 0x72, 0x62, 0x65, 0x72, 0x6f, 0x73,
                                                   0x7b, 0x9b, 0x5b, 0x2b, 0x93, 0x13, 0x2b, 0x93};

#define S2K_AES_NI __attribute__((target("aes,sse2")))

/// One round key of AES-128's expansion: the previous one with its words folded in and `assist` (AESKEYGENASSIST's
/// output for the round constant) added.
static inline S2K_AES_NI __m128i aes_expand_128(__m128i key, __m128i assist) {
    assist = _mm_shuffle_epi32(assist, 0xff);
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, assist);
}

/// The second half of an AES-256 round key pair: `previous` folded, with SubWord of `next`'s last word.
static inline S2K_AES_NI __m128i aes_expand_256_odd(__m128i previous, __m128i next) {
    __m128i assist = _mm_shuffle_epi32(_mm_aeskeygenassist_si128(next, 0x00), 0xaa);
    previous = _mm_xor_si128(previous, _mm_slli_si128(previous, 4));
    previous = _mm_xor_si128(previous, _mm_slli_si128(previous, 4));
    previous = _mm_xor_si128(previous, _mm_slli_si128(previous, 4));
    return _mm_xor_si128(previous, assist);
}

/// One AES block encrypted in place with the CPU's AES instructions (AES-NI): no lookup tables indexed by the key,
/// which here is derived from the password. The round keys are wiped.
static S2K_AES_NI void aes_ni_encrypt_block(const unsigned char *key, size_t keyLength, unsigned char block[16]) {
    __m128i rounds[15];
    int last;
    if (keyLength == 16) {
        last = 10;
        rounds[0] = _mm_loadu_si128((const __m128i *)key);
#define S2K_ROUND_128(i, rcon) rounds[i] = aes_expand_128(rounds[(i) - 1], _mm_aeskeygenassist_si128(rounds[(i) - 1], rcon))
        S2K_ROUND_128(1, 0x01); S2K_ROUND_128(2, 0x02); S2K_ROUND_128(3, 0x04); S2K_ROUND_128(4, 0x08); S2K_ROUND_128(5, 0x10);
        S2K_ROUND_128(6, 0x20); S2K_ROUND_128(7, 0x40); S2K_ROUND_128(8, 0x80); S2K_ROUND_128(9, 0x1b); S2K_ROUND_128(10, 0x36);
#undef S2K_ROUND_128
    } else {
        last = 14;
        rounds[0] = _mm_loadu_si128((const __m128i *)key);
        rounds[1] = _mm_loadu_si128((const __m128i *)(key + 16));
#define S2K_ROUND_256(i, rcon)                                                                                          \
        rounds[i] = aes_expand_128(rounds[(i) - 2], _mm_aeskeygenassist_si128(rounds[(i) - 1], rcon));                  \
        if ((i) < 14) rounds[(i) + 1] = aes_expand_256_odd(rounds[(i) - 1], rounds[i])
        S2K_ROUND_256(2, 0x01); S2K_ROUND_256(4, 0x02); S2K_ROUND_256(6, 0x04); S2K_ROUND_256(8, 0x08);
        S2K_ROUND_256(10, 0x10); S2K_ROUND_256(12, 0x20); S2K_ROUND_256(14, 0x40);
#undef S2K_ROUND_256
    }
    __m128i state = _mm_xor_si128(_mm_loadu_si128((const __m128i *)block), rounds[0]);
    for (int round = 1; round < last; round++) state = _mm_aesenc_si128(state, rounds[round]);
    _mm_storeu_si128((__m128i *)block, _mm_aesenclast_si128(state, rounds[last]));
    OPENSSL_cleanse(rounds, sizeof rounds);
}

/// One AES block encrypted in place under a 16- or 32-byte key (AES-ECB of a single block): 1 on success.
/// Not through EVP: EVP_EncryptInit_ex's implicit fetch builds the default provider's whole cipher table on first
/// use (3.1 M instructions, about 0.7 ms of krb5-login's one-login process). With AES-NI (every x86-64 CPU of the
/// last decade), the CPU's instructions; otherwise libcrypto's AES_encrypt. The key schedule is cleansed.
static int aes_encrypt_block(const unsigned char *key, size_t keyLength, unsigned char block[16]) {
    if (keyLength != 16 && keyLength != 32) return 0;
    if (__builtin_cpu_supports("aes")) {
        aes_ni_encrypt_block(key, keyLength, block);
        return 1;
    }
    AES_KEY schedule;
    if (AES_set_encrypt_key(key, (int)keyLength * 8, &schedule) != 0) return 0;
    AES_encrypt(block, block, &schedule);
    OPENSSL_cleanse(&schedule, sizeof schedule);
    return 1;
}

static __thread s2k_counts counts;

int s2k_aes_sha1_key(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                     uint32_t iterations, unsigned char *key, size_t keyLength) {
    if (keyLength != 16 && keyLength != 32) return 0;
    // tkey = PBKDF2(password, salt, iterations); key = DK(tkey, "kerberos"): AES encryptions of the constant under
    // tkey, chained, until keyLength bytes are made (RFC 3961 section 5.1).
    unsigned char tkey[32], block[16];
    memcpy(block, kerberosConstant, sizeof block);
    int ok = s2k_pbkdf2_sha1(password, passwordLength, salt, saltLength, iterations, tkey, keyLength);
    for (size_t made = 0; ok && made < keyLength; made += sizeof block) {
        ok = aes_encrypt_block(tkey, keyLength, block);
        if (ok) memcpy(key + made, block, sizeof block);
    }
    OPENSSL_cleanse(tkey, sizeof tkey);
    OPENSSL_cleanse(block, sizeof block);
    if (!ok) OPENSSL_cleanse(key, keyLength);
    else counts.fast++;
    return ok;
}

s2k_counts s2k_counts_on_this_thread(void) { return counts; }

// MARK: What MIT asked for

static __thread s2k_request lastRequest;
static __thread int requested;
static __thread int questionOnly;

void s2k_begin_step(int questionMode) {
    requested = 0;
    questionOnly = questionMode;
}

int s2k_end_step(s2k_request *request) {
    int had = requested;
    if (had) *request = lastRequest;
    requested = 0;
    questionOnly = 0;
    return had;
}

/// Records what a key is asked for, unless the salt or parameters are too long to keep.
static void record(krb5_enctype enctype, const krb5_data *salt, const krb5_data *params) {
    size_t saltLength = salt == NULL ? 0 : salt->length;
    size_t parametersLength = params == NULL ? 0 : params->length;
    if (saltLength > sizeof lastRequest.salt || parametersLength > sizeof lastRequest.parameters) return;
    lastRequest.enctype = enctype;
    lastRequest.saltLength = saltLength;
    if (saltLength > 0) memcpy(lastRequest.salt, salt->data, saltLength);
    lastRequest.parametersLength = parametersLength;
    if (parametersLength > 0) memcpy(lastRequest.parameters, params->data, parametersLength);
    requested = 1;
}

// MARK: The stand-in

typedef krb5_error_code (*string_to_key_with_params_fn)(krb5_context, krb5_enctype, const krb5_data *, const krb5_data *,
                                                         const krb5_data *, krb5_keyblock *);

/// libk5crypto's own definition.
static string_to_key_with_params_fn libk5crypto(void) {
    static string_to_key_with_params_fn function;   // found once; racing threads store the same pointer
    string_to_key_with_params_fn found = __atomic_load_n(&function, __ATOMIC_ACQUIRE);
    if (found == NULL) {
        found = (string_to_key_with_params_fn)dlsym(RTLD_NEXT, "krb5_c_string_to_key_with_params");
        __atomic_store_n(&function, found, __ATOMIC_RELEASE);
    }
    return found;
}

/// The key length of an AES-SHA1 enctype, or 0.
static size_t aes_sha1_length(krb5_enctype enctype) {
    switch (enctype) {
    case ENCTYPE_AES128_CTS_HMAC_SHA1_96: return 16;
    case ENCTYPE_AES256_CTS_HMAC_SHA1_96: return 32;
    default: return 0;
    }
}

/// The iteration count libk5crypto would use, when it would accept it: 4096 without parameters, else their four
/// bytes big-endian, from 4096 to below 2^24 (libk5crypto refuses fewer unless weak crypto is allowed, and more).
static int aes_sha1_iterations(const krb5_data *params, uint32_t *iterations) {
    if (params == NULL) {
        *iterations = 4096;
        return 1;
    }
    if (params->length != 4) return 0;
    const unsigned char *bytes = (const unsigned char *)params->data;
    *iterations = (uint32_t)bytes[0] << 24 | (uint32_t)bytes[1] << 16 | (uint32_t)bytes[2] << 8 | bytes[3];
    return *iterations >= 4096 && *iterations < (1u << 24);
}

/// `krb5_c_string_to_key_with_params` for the whole process (see the top of this file).
krb5_error_code KRB5_CALLCONV krb5_c_string_to_key_with_params(krb5_context context, krb5_enctype enctype, const krb5_data *string,
                                                               const krb5_data *salt, const krb5_data *params, krb5_keyblock *key) {
    record(enctype, salt, params);
    if (questionOnly) return KRB5_LIBOS_PWDINTR;   // the etype info is learnt; no key, so nothing is sent
    size_t length = aes_sha1_length(enctype);
    uint32_t iterations = 0;
    if (length != 0 && string != NULL && salt != NULL && salt->length != SALT_TYPE_AFS_LENGTH && aes_sha1_iterations(params, &iterations)) {
        unsigned char *contents = malloc(length);
        if (contents == NULL) return ENOMEM;
        if (s2k_aes_sha1_key(string->data, string->length, (const unsigned char *)salt->data, salt->length, iterations, contents, length)) {
            key->magic = KV5M_KEYBLOCK;
            key->enctype = enctype;
            key->length = (unsigned int)length;
            key->contents = contents;
            return 0;
        }
        free(contents);
    }
    string_to_key_with_params_fn original = libk5crypto();
    if (original == NULL) return KRB5_CRYPTO_INTERNAL;
    counts.libk5crypto++;
    return original(context, enctype, string, salt, params, key);
}

/// `krb5_c_string_to_key`: the same, with the enctype's default parameters.
krb5_error_code KRB5_CALLCONV krb5_c_string_to_key(krb5_context context, krb5_enctype enctype, const krb5_data *string,
                                                   const krb5_data *salt, krb5_keyblock *key) {
    return krb5_c_string_to_key_with_params(context, enctype, string, salt, NULL, key);
}
