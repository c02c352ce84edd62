// The few OpenSSL 3 libcrypto calls (Debian libssl-dev) LoginService makes, as one Clang module: PBKDF2 and
// one AES block for the RFC 3962 string-to-key, and a keyed HMAC-SHA-256. libcrypto is the library MIT's PKINIT
// plugin already loads, so this adds nothing to a process's start-up (swift-crypto would add Foundation).
#ifndef COPENSSL_SHIMS_H
#define COPENSSL_SHIMS_H

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

/// PBKDF2-HMAC-SHA1 (`PKCS5_PBKDF2_HMAC`): 1 on success.
static inline int copenssl_pbkdf2_sha1(const void *password, size_t passwordLength, const unsigned char *salt, size_t saltLength,
                                       unsigned int iterations, unsigned char *output, size_t outputLength) {
    return PKCS5_PBKDF2_HMAC((const char *)password, (int)passwordLength, salt, (int)saltLength, (int)iterations, EVP_sha1(),
                             (int)outputLength, output);
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
