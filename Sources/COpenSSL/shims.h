// The few OpenSSL 3 libcrypto calls (Debian libssl-dev) LoginService makes, as one Clang module: PBKDF2 (on
// libcrypto's SHA-1) and one AES block for the RFC 3962 string-to-key, and a keyed HMAC-SHA-256. libcrypto is the library MIT's PKINIT
// plugin already loads, so this adds nothing to a process's start-up (swift-crypto would add Foundation).
#ifndef COPENSSL_SHIMS_H
#define COPENSSL_SHIMS_H

// SHA1_Init/_Update/_Final are deprecated in OpenSSL 3 (in favour of EVP) but kept; the PBKDF2 below needs a
// SHA-1 state it can copy by value.
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <stdint.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

/// PBKDF2-HMAC-SHA1 (RFC 8018 section 5.2): 1 on success.
///
/// The HMAC's inner and outer key states are made once and copied by value for each iteration, so an
/// iteration is two SHA-1 blocks and no allocation. OpenSSL's `PKCS5_PBKDF2_HMAC` gives the same bytes but
/// re-initialises EVP contexts every iteration (malloc, copy, cleanse, free): in krb5-verifyd's profile that
/// was more than half of the string-to-key. Every buffer and state holding key material is cleansed.
static inline int copenssl_pbkdf2_sha1(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                                       unsigned int iterations, unsigned char *output, size_t outputLength) {
    unsigned char key[SHA_CBLOCK] = {0}, pad[SHA_CBLOCK], u[SHA_DIGEST_LENGTH], t[SHA_DIGEST_LENGTH], counter[4];
    SHA_CTX inner, outer, work;
    if (iterations == 0) return 0;
    int ok = 1;
    if (passwordLength > SHA_CBLOCK) {
        ok = SHA1_Init(&work) && SHA1_Update(&work, password, passwordLength) && SHA1_Final(key, &work);
    } else if (passwordLength > 0) {
        memcpy(key, password, passwordLength);
    }
    for (int i = 0; i < SHA_CBLOCK; i++) pad[i] = key[i] ^ 0x36;
    ok = ok && SHA1_Init(&inner) && SHA1_Update(&inner, pad, SHA_CBLOCK);
    for (int i = 0; i < SHA_CBLOCK; i++) pad[i] = key[i] ^ 0x5c;
    ok = ok && SHA1_Init(&outer) && SHA1_Update(&outer, pad, SHA_CBLOCK);
    for (uint32_t block = 1; ok && outputLength > 0; block++) {
        counter[0] = (unsigned char)(block >> 24);
        counter[1] = (unsigned char)(block >> 16);
        counter[2] = (unsigned char)(block >> 8);
        counter[3] = (unsigned char)block;
        // U1 = HMAC(password, salt || INT(block)); Uj = HMAC(password, Uj-1); T = U1 ^ ... ^ Uc.
        work = inner;
        SHA1_Update(&work, salt, saltLength);
        SHA1_Update(&work, counter, sizeof counter);
        SHA1_Final(u, &work);
        work = outer;
        SHA1_Update(&work, u, sizeof u);
        SHA1_Final(u, &work);
        memcpy(t, u, sizeof t);
        for (unsigned int iteration = 1; iteration < iterations; iteration++) {
            work = inner;
            SHA1_Update(&work, u, sizeof u);
            SHA1_Final(u, &work);
            work = outer;
            SHA1_Update(&work, u, sizeof u);
            SHA1_Final(u, &work);
            for (size_t i = 0; i < sizeof t; i++) t[i] ^= u[i];
        }
        size_t length = outputLength < sizeof t ? outputLength : sizeof t;
        memcpy(output, t, length);
        output += length;
        outputLength -= length;
    }
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(u, sizeof u);
    OPENSSL_cleanse(t, sizeof t);
    OPENSSL_cleanse(&inner, sizeof inner);
    OPENSSL_cleanse(&outer, sizeof outer);
    OPENSSL_cleanse(&work, sizeof work);
    return ok;
}

/// One AES block encrypted in place under a 16- or 32-byte key (AES-ECB of a single block): 1 on success.
static inline int copenssl_aes_encrypt_block(const unsigned char *key, size_t keyLength, unsigned char block[16]) {
    const EVP_CIPHER *cipher = keyLength == 16 ? EVP_aes_128_ecb() : keyLength == 32 ? EVP_aes_256_ecb() : NULL;
    if (cipher == NULL) return 0;
    EVP_CIPHER_CTX *context = EVP_CIPHER_CTX_new();
    if (context == NULL) return 0;
    int length = 0, ok = EVP_EncryptInit_ex(context, cipher, NULL, key, NULL) && EVP_CIPHER_CTX_set_padding(context, 0)
        && EVP_EncryptUpdate(context, block, &length, block, 16) && length == 16;
    EVP_CIPHER_CTX_free(context);   // cleanses the expanded key
    return ok;
}

/// An HMAC-SHA-256 context keyed with `key`, or NULL; `EVP_MAC_CTX_dup` copies it per message.
static inline EVP_MAC_CTX *copenssl_hmac_sha256(const unsigned char *key, size_t keyLength) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (mac == NULL) return NULL;
    EVP_MAC_CTX *context = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (context == NULL) return NULL;
    OSSL_PARAM parameters[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_MAC_init(context, key, keyLength, parameters)) {
        EVP_MAC_CTX_free(context);
        return NULL;
    }
    return context;
}

#endif
