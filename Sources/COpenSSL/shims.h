// The one OpenSSL 3 libcrypto call (Debian libssl-dev) LoginService makes beside the string-to-key (CStringToKey):
// a keyed HMAC-SHA-256 for password digests. libcrypto is the library MIT's PKINIT plugin already loads, so this adds
// nothing to a process's start-up (swift-crypto would add Foundation).
#ifndef COPENSSL_SHIMS_H
#define COPENSSL_SHIMS_H

#include <stdint.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

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
