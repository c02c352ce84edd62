// PBKDF2-HMAC-SHA1 (RFC 8018) for the RFC 3962 string-to-key: on OpenSSL's SHA-1 with the HMAC key states made once
// (portable), or on the CPU's SHA extensions with both HMAC halves of an iteration in registers.

// SHA1_Init/_Update/_Final are deprecated in OpenSSL 3 (in favour of EVP) but kept; the PBKDF2 below needs a
// SHA-1 state it can copy by value.
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "CStringToKey.h"
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

/// The HMAC-SHA1 key states for `password` (RFC 2104): SHA-1 after the key block XOR ipad (`inner`) and
/// XOR opad (`outer`), made once and copied by value for every message. 1 on success; the key block is cleansed.
static inline int s2k_hmac_sha1_states(const void *password, size_t passwordLength, SHA_CTX *inner, SHA_CTX *outer) {
    unsigned char key[SHA_CBLOCK] = {0}, pad[SHA_CBLOCK];
    int ok = 1;
    if (passwordLength > SHA_CBLOCK) {
        SHA_CTX work;
        ok = SHA1_Init(&work) && SHA1_Update(&work, password, passwordLength) && SHA1_Final(key, &work);
        OPENSSL_cleanse(&work, sizeof work);
    } else if (passwordLength > 0) {
        memcpy(key, password, passwordLength);
    }
    for (int i = 0; i < SHA_CBLOCK; i++) pad[i] = key[i] ^ 0x36;
    ok = ok && SHA1_Init(inner) && SHA1_Update(inner, pad, SHA_CBLOCK);
    for (int i = 0; i < SHA_CBLOCK; i++) pad[i] = key[i] ^ 0x5c;
    ok = ok && SHA1_Init(outer) && SHA1_Update(outer, pad, SHA_CBLOCK);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(pad, sizeof pad);
    return ok;
}

/// One HMAC-SHA1 of PBKDF2 from the key states: of `message` (U1's salt), followed by the 4-byte big-endian
/// `block` number when `block` is non-zero (U1 = HMAC(password, salt || INT(block)); Uj = HMAC(password, Uj-1)).
static inline void s2k_hmac_sha1(const SHA_CTX *inner, const SHA_CTX *outer, const unsigned char *message, size_t messageLength,
                                      uint32_t block, unsigned char digest[SHA_DIGEST_LENGTH]) {
    const unsigned char counter[4] = {(unsigned char)(block >> 24), (unsigned char)(block >> 16), (unsigned char)(block >> 8), (unsigned char)block};
    SHA_CTX work = *inner;
    SHA1_Update(&work, message, messageLength);
    if (block != 0) SHA1_Update(&work, counter, sizeof counter);
    SHA1_Final(digest, &work);
    work = *outer;
    SHA1_Update(&work, digest, SHA_DIGEST_LENGTH);
    SHA1_Final(digest, &work);
    OPENSSL_cleanse(&work, sizeof work);
}

/// Appends up to `size` bytes of the block `t` to the output and advances it.
static inline void s2k_emit(unsigned char **output, size_t *outputLength, const unsigned char *t, size_t size) {
    size_t length = *outputLength < size ? *outputLength : size;
    memcpy(*output, t, length);
    *output += length;
    *outputLength -= length;
}

/// Wipes a PBKDF2's intermediates: the last U, the running T and the HMAC key states.
static void s2k_wipe(unsigned char *u, size_t uSize, unsigned char *t, size_t tSize, SHA_CTX *inner, SHA_CTX *outer) {
    OPENSSL_cleanse(u, uSize);
    OPENSSL_cleanse(t, tSize);
    OPENSSL_cleanse(inner, sizeof *inner);
    OPENSSL_cleanse(outer, sizeof *outer);
}

/// PBKDF2-HMAC-SHA1 (RFC 8018 section 5.2) on OpenSSL's SHA-1, on any CPU: 1 on success.
///
/// The HMAC's inner and outer key states are made once and copied by value for each iteration, so an
/// iteration is two SHA-1 blocks and no allocation. OpenSSL's `PKCS5_PBKDF2_HMAC` gives the same bytes but
/// re-initialises EVP contexts every iteration (malloc, copy, cleanse, free): in krb5-verifyd's profile that
/// was more than half of the string-to-key. Every buffer and state holding key material is cleansed.
int s2k_pbkdf2_sha1_portable(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                                                unsigned int iterations, unsigned char *output, size_t outputLength) {
    unsigned char u[SHA_DIGEST_LENGTH], t[SHA_DIGEST_LENGTH];
    SHA_CTX inner, outer;
    if (iterations == 0) return 0;
    int ok = s2k_hmac_sha1_states(password, passwordLength, &inner, &outer);
    for (uint32_t block = 1; ok && outputLength > 0; block++) {
        s2k_hmac_sha1(&inner, &outer, salt, saltLength, block, u);
        memcpy(t, u, sizeof t);
        for (unsigned int iteration = 1; iteration < iterations; iteration++) {
            s2k_hmac_sha1(&inner, &outer, u, sizeof u, 0, u);
            for (size_t i = 0; i < sizeof t; i++) t[i] ^= u[i];
        }
        s2k_emit(&output, &outputLength, t, sizeof t);
    }
    s2k_wipe(u, sizeof u, t, sizeof t, &inner, &outer);
    return ok;
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

/// Whether the CPU has the SHA extensions (CPUID leaf 7, EBX bit 29) and the SSSE3 and SSE4.1 they come with
/// (leaf 1, ECX bits 9 and 19). Asked once: CPUID traps to the hypervisor in a virtual machine.
int s2k_cpu_has_sha_ni(void) {
    static int known = -1;   // -1 until asked; racing threads each ask and store the same answer
    int answer = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (answer < 0) {
        unsigned int a, b, c, d;
        int basic = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9)) && (c & (1u << 19));
        answer = basic && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));
        __atomic_store_n(&known, answer, __ATOMIC_RELAXED);
    }
    return answer;
}

#define S2K_SHA_NI __attribute__((target("sha,sse4.1,ssse3")))
/// A step of the SHA-1 compression below for lane A, then for lane B.
#define S2K_SHA1_BOTH(step, ...) step(A, __VA_ARGS__) step(B, __VA_ARGS__)
/// Rounds of function F with e (EIN) plus the words W; a is kept as the next rounds' e (EOUT).
#define S2K_SHA1_ROUNDS(L, EIN, EOUT, W, F) \
    EIN##L = _mm_sha1nexte_epu32(EIN##L, W##L); EOUT##L = abcd##L; abcd##L = _mm_sha1rnds4_epu32(abcd##L, EIN##L, F);
/// The message schedule: words of later rounds made ahead from the current ones.
#define S2K_SHA1_MSG1(L, X, W) X##L = _mm_sha1msg1_epu32(X##L, W##L);
#define S2K_SHA1_MSG2(L, X, W) X##L = _mm_sha1msg2_epu32(X##L, W##L);
#define S2K_SHA1_XOR(L, X, W) X##L = _mm_xor_si128(X##L, W##L);
/// Four rounds of the steady part of the schedule (rounds 16-67): rounds of function F with the words W, which then
/// finish the words NEXT, start the words PREV and go into the words AFTER (the words rotate m0..m3).
#define S2K_SHA1_STEADY(EIN, EOUT, W, NEXT, PREV, AFTER, F) \
    S2K_SHA1_BOTH(S2K_SHA1_ROUNDS, EIN, EOUT, W, F) \
    S2K_SHA1_BOTH(S2K_SHA1_MSG2, NEXT, W) \
    S2K_SHA1_BOTH(S2K_SHA1_MSG1, PREV, W) \
    S2K_SHA1_BOTH(S2K_SHA1_XOR, AFTER, W)
/// Sixteen steady rounds, one turn of the words and two of e, with the functions of their four groups.
#define S2K_SHA1_SIXTEEN(F0, F1, F2, F3) \
    S2K_SHA1_STEADY(e0, e1, m0, m1, m3, m2, F0) \
    S2K_SHA1_STEADY(e1, e0, m1, m2, m0, m3, F1) \
    S2K_SHA1_STEADY(e0, e1, m2, m3, m1, m0, F2) \
    S2K_SHA1_STEADY(e1, e0, m3, m0, m2, m1, F3)

/// Two independent SHA-1 compressions (lanes A and B) of a 20-byte message that follows one 64-byte block, as each
/// half of an HMAC-SHA-1 iteration hashes: the state after that block in `stateA`/`eA` (a..d with a in the high
/// 32 bits; e in the high 32 bits), the message as a SHA-1 state holds its five words (`wordsA`, `lastA`), with
/// the padding and the length (84 bytes, 672 bits) written straight into the block. Intel's schedule (the SHA
/// extensions white paper), the two lanes' instructions interleaved so that one lane's rounds run while the
/// other's wait on their latency. Named registers, no arrays or loops, so that any optimiser keeps them in registers.
static inline __attribute__((always_inline)) S2K_SHA_NI void s2k_sha1_ni_after_block(__m128i *stateA, __m128i *eA, __m128i wordsA, __m128i lastA,
                                                                                                 __m128i *stateB, __m128i *eB, __m128i wordsB, __m128i lastB) {
    const __m128i highWord = _mm_set_epi32(-1, 0, 0, 0), padding = _mm_set_epi32(0, (int)0x80000000, 0, 0), length = _mm_set_epi32(0, 0, 0, 672);
    __m128i abcdA = *stateA, e0A = *eA, e1A, m0A = wordsA, m1A = _mm_or_si128(_mm_and_si128(lastA, highWord), padding), m2A = _mm_setzero_si128(), m3A = length;
    __m128i abcdB = *stateB, e0B = *eB, e1B, m0B = wordsB, m1B = _mm_or_si128(_mm_and_si128(lastB, highWord), padding), m2B = _mm_setzero_si128(), m3B = length;
    // Rounds 0-3.
    e0A = _mm_add_epi32(e0A, m0A); e1A = abcdA; abcdA = _mm_sha1rnds4_epu32(abcdA, e0A, 0);
    e0B = _mm_add_epi32(e0B, m0B); e1B = abcdB; abcdB = _mm_sha1rnds4_epu32(abcdB, e0B, 0);
    // Rounds 4-7.
    S2K_SHA1_BOTH(S2K_SHA1_ROUNDS, e1, e0, m1, 0)
    S2K_SHA1_BOTH(S2K_SHA1_MSG1, m0, m1)
    // Rounds 8-11.
    S2K_SHA1_BOTH(S2K_SHA1_ROUNDS, e0, e1, m2, 0)
    S2K_SHA1_BOTH(S2K_SHA1_MSG1, m1, m2)
    S2K_SHA1_BOTH(S2K_SHA1_XOR, m0, m2)
    // Rounds 12-15.
    S2K_SHA1_BOTH(S2K_SHA1_ROUNDS, e1, e0, m3, 0)
    S2K_SHA1_BOTH(S2K_SHA1_MSG2, m0, m3)
    S2K_SHA1_BOTH(S2K_SHA1_MSG1, m2, m3)
    S2K_SHA1_BOTH(S2K_SHA1_XOR, m1, m3)
    // Rounds 16-67.
    S2K_SHA1_SIXTEEN(0, 1, 1, 1)
    S2K_SHA1_SIXTEEN(1, 1, 2, 2)
    S2K_SHA1_SIXTEEN(2, 2, 2, 3)
    S2K_SHA1_STEADY(e0, e1, m0, m1, m3, m2, 3)
    // Rounds 68-71.
    S2K_SHA1_BOTH(S2K_SHA1_ROUNDS, e1, e0, m1, 3)
    S2K_SHA1_BOTH(S2K_SHA1_MSG2, m2, m1)
    S2K_SHA1_BOTH(S2K_SHA1_XOR, m3, m1)
    // Rounds 72-75.
    S2K_SHA1_BOTH(S2K_SHA1_ROUNDS, e0, e1, m2, 3)
    S2K_SHA1_BOTH(S2K_SHA1_MSG2, m3, m2)
    // Rounds 76-79.
    S2K_SHA1_BOTH(S2K_SHA1_ROUNDS, e1, e0, m3, 3)
    *stateA = _mm_add_epi32(abcdA, *stateA);
    *eA = _mm_sha1nexte_epu32(e0A, *eA);
    *stateB = _mm_add_epi32(abcdB, *stateB);
    *eB = _mm_sha1nexte_epu32(e0B, *eB);
}

/// A SHA-1 state's five words (a..d with a in the high 32 bits; e in the high 32 bits of `e`) from a digest.
static inline S2K_SHA_NI void s2k_sha1_ni_load(const unsigned char digest[SHA_DIGEST_LENGTH], __m128i reversal, __m128i *abcd, __m128i *e) {
    *abcd = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)digest), reversal);
    *e = _mm_set_epi32((int)((uint32_t)digest[16] << 24 | (uint32_t)digest[17] << 16 | (uint32_t)digest[18] << 8 | digest[19]), 0, 0, 0);
}

/// The digest of a SHA-1 state held as ``s2k_sha1_ni_load`` holds it.
static inline S2K_SHA_NI void s2k_sha1_ni_store(__m128i abcd, __m128i e, __m128i reversal, unsigned char digest[SHA_DIGEST_LENGTH]) {
    uint32_t word = (uint32_t)_mm_extract_epi32(e, 3);
    _mm_storeu_si128((__m128i *)digest, _mm_shuffle_epi8(abcd, reversal));
    digest[16] = (unsigned char)(word >> 24);
    digest[17] = (unsigned char)(word >> 16);
    digest[18] = (unsigned char)(word >> 8);
    digest[19] = (unsigned char)word;
}

/// PBKDF2-HMAC-SHA1 with the SHA extensions: the same bytes as `s2k_pbkdf2_sha1_portable`, about three
/// times as fast. Each iteration's two compressions run on values kept in registers (no SHA1_Final padding,
/// byte swaps or copies), and two output blocks (an AES-256 key's) are made at once, interleaved. Only for a CPU
/// with `s2k_cpu_has_sha_ni`. Never inlined, so that `s2k_wipe_stack` overwrites its frame.
__attribute__((noinline)) S2K_SHA_NI int s2k_pbkdf2_sha1_ni(const void *password, size_t passwordLength, const unsigned char *salt,
                                                             size_t saltLength, unsigned int iterations, unsigned char *output,
                                                             size_t outputLength) {
    static const unsigned char byteReversal[16] = {15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    unsigned char u[SHA_DIGEST_LENGTH], t[2 * SHA_DIGEST_LENGTH];
    SHA_CTX inner, outer;
    if (iterations == 0 || !s2k_cpu_has_sha_ni()) return 0;
    int ok = s2k_hmac_sha1_states(password, passwordLength, &inner, &outer);
    const __m128i reversal = _mm_loadu_si128((const __m128i *)byteReversal);
    const __m128i innerABCD = _mm_set_epi32((int)inner.h0, (int)inner.h1, (int)inner.h2, (int)inner.h3), innerE = _mm_set_epi32((int)inner.h4, 0, 0, 0);
    const __m128i outerABCD = _mm_set_epi32((int)outer.h0, (int)outer.h1, (int)outer.h2, (int)outer.h3), outerE = _mm_set_epi32((int)outer.h4, 0, 0, 0);
    for (uint32_t block = 1; ok && outputLength > 0; block += 2) {
        // U1 for this block (lane A) and the next (lane B), on OpenSSL's SHA-1 (any salt length); T starts as U1.
        __m128i uA, uEA, uB, uEB;
        s2k_hmac_sha1(&inner, &outer, salt, saltLength, block, u);
        s2k_sha1_ni_load(u, reversal, &uA, &uEA);
        s2k_hmac_sha1(&inner, &outer, salt, saltLength, block + 1, u);
        s2k_sha1_ni_load(u, reversal, &uB, &uEB);
        __m128i tA = uA, tEA = uEA, tB = uB, tEB = uEB;
        // Uj = HMAC(password, Uj-1); T = U1 ^ ... ^ Uc.
        for (unsigned int iteration = 1; iteration < iterations; iteration++) {
            __m128i xA = innerABCD, xEA = innerE, xB = innerABCD, xEB = innerE;
            s2k_sha1_ni_after_block(&xA, &xEA, uA, uEA, &xB, &xEB, uB, uEB);
            uA = outerABCD, uEA = outerE, uB = outerABCD, uEB = outerE;
            s2k_sha1_ni_after_block(&uA, &uEA, xA, xEA, &uB, &uEB, xB, xEB);
            tA = _mm_xor_si128(tA, uA), tEA = _mm_xor_si128(tEA, uEA), tB = _mm_xor_si128(tB, uB), tEB = _mm_xor_si128(tEB, uEB);
        }
        s2k_sha1_ni_store(tA, tEA, reversal, t);
        s2k_sha1_ni_store(tB, tEB, reversal, t + SHA_DIGEST_LENGTH);
        s2k_emit(&output, &outputLength, t, sizeof t);
    }
    s2k_wipe(u, sizeof u, t, sizeof t, &inner, &outer);
    return ok;
}
#undef S2K_SHA1_BOTH
#undef S2K_SHA1_ROUNDS
#undef S2K_SHA1_MSG1
#undef S2K_SHA1_MSG2
#undef S2K_SHA1_XOR
#undef S2K_SHA_NI
#else
int s2k_cpu_has_sha_ni(void) { return 0; }

int s2k_pbkdf2_sha1_ni(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                       unsigned int iterations, unsigned char *output, size_t outputLength) {
    (void)password, (void)passwordLength, (void)salt, (void)saltLength, (void)iterations, (void)output, (void)outputLength;
    return 0;
}
#endif

/// Overwrites the stack below the caller's frame, where a callee that has returned left its spilled registers.
static __attribute__((noinline)) void s2k_wipe_stack(void) {
    unsigned char scratch[4096];
    OPENSSL_cleanse(scratch, sizeof scratch);
}

int s2k_pbkdf2_sha1(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                    unsigned int iterations, unsigned char *output, size_t outputLength) {
#if defined(__x86_64__) && defined(__OPTIMIZE__)
    // Unoptimised (debug) builds take OpenSSL's SHA-1, which is then the faster.
    if (s2k_cpu_has_sha_ni()) {
        int ok = s2k_pbkdf2_sha1_ni(password, passwordLength, salt, saltLength, iterations, output, outputLength);
        s2k_wipe_stack();
        return ok;
    }
#endif
    return s2k_pbkdf2_sha1_portable(password, passwordLength, salt, saltLength, iterations, output, outputLength);
}
