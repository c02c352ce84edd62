/*
 * A PKCS#11 module that wraps another one (SoftHSM2 by default) and adds what SoftHSM2 lacks: a user-PIN
 * retry limit. After each wrong PIN it reports CKF_USER_PIN_COUNT_LOW, then CKF_USER_PIN_FINAL_TRY, and
 * after PINLOCK_TRIES (default 3) wrong PINs CKF_USER_PIN_LOCKED, refusing every further login with
 * CKR_PIN_LOCKED. A right PIN resets the count. Counts live in files in PINLOCK_DIR (default /tmp), one
 * per slot, so they survive from one process to the next as a card's counter does.
 *
 * Built by realm.sh; used by the tests of the responder's PKINIT token flags.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST real_copy, ours;
static CK_FUNCTION_LIST_PTR real;

static int tries(void) {
    const char *value = getenv("PINLOCK_TRIES");
    return value ? atoi(value) : 3;
}

static void counter_path(CK_SLOT_ID slot, char *path, size_t size) {
    const char *dir = getenv("PINLOCK_DIR");
    snprintf(path, size, "%s/pinlock-slot-%lu", dir ? dir : "/tmp", (unsigned long)slot);
}

static int failures(CK_SLOT_ID slot) {
    char path[512];
    counter_path(slot, path, sizeof path);
    FILE *file = fopen(path, "r");
    int count = 0;
    if (file) {
        if (fscanf(file, "%d", &count) != 1) count = 0;
        fclose(file);
    }
    return count;
}

static void set_failures(CK_SLOT_ID slot, int count) {
    char path[512];
    counter_path(slot, path, sizeof path);
    FILE *file = fopen(path, "w");
    if (file) {
        fprintf(file, "%d\n", count);
        fclose(file);
    }
}

static CK_RV pinlock_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) {
    CK_RV rv = real->C_GetTokenInfo(slot, info);
    if (rv != CKR_OK) return rv;
    int count = failures(slot), limit = tries();
    info->flags &= ~(CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED);
    if (count >= limit) info->flags |= CKF_USER_PIN_LOCKED;
    else if (count == limit - 1) info->flags |= CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY;
    else if (count > 0) info->flags |= CKF_USER_PIN_COUNT_LOW;
    return CKR_OK;
}

static CK_RV pinlock_Login(CK_SESSION_HANDLE session, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG length) {
    CK_SESSION_INFO info;
    if (user != CKU_USER || real->C_GetSessionInfo(session, &info) != CKR_OK) return real->C_Login(session, user, pin, length);
    int count = failures(info.slotID);
    if (count >= tries()) return CKR_PIN_LOCKED;
    CK_RV rv = real->C_Login(session, user, pin, length);
    if (rv == CKR_PIN_INCORRECT) set_failures(info.slotID, count + 1);
    else if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) set_failures(info.slotID, 0);
    return rv;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    if (real == NULL) {
        const char *path = getenv("PINLOCK_MODULE");
        void *module = dlopen(path ? path : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
        if (module == NULL) return CKR_GENERAL_ERROR;
        CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
        CK_FUNCTION_LIST_PTR functions;
        if (get == NULL || get(&functions) != CKR_OK) return CKR_GENERAL_ERROR;
        real_copy = *functions;
        real = &real_copy;
        ours = real_copy;
        ours.C_GetTokenInfo = pinlock_GetTokenInfo;
        ours.C_Login = pinlock_Login;
    }
    *list = &ours;
    return CKR_OK;
}
