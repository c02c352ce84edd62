/*
 * pam_krb5verify: a PAM module that relays krb5-verifyd's conversation (docs/pam.md).
 *
 * The daemon holds the krb5 state and the policy; the module asks the person what the daemon asks (password,
 * OTP, smart-card PIN, new password), hands the session a ticket cache the daemon issued, and checks
 * authorization with krb5_kuserok. No Swift runtime is loaded into the application.
 */
#define _GNU_SOURCE
#include "krb5verify_wire.h"

#include <errno.h>
#include <fcntl.h>
#include <krb5/krb5.h>
#include <profile.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#define PAM_SM_SESSION
#define PAM_SM_PASSWORD
#include <security/pam_appl.h>
#include <security/pam_ext.h>
#include <security/pam_modules.h>

#define DEFAULT_SOCKET "/run/krb5-verifyd/conversation"
#define DEFAULT_DAEMON_USER "krb5-verifyd"
#define DEFAULT_TIMEOUT 300
#define DEFAULT_CCACHE_DIR "/tmp"
/* pam_set_data names, and the PAM environment variable that carries the pending cache across sshd's fork. */
#define DATA_PENDING "pam_krb5verify_pending_ccache"
#define DATA_EXPIRED "pam_krb5verify_expired"
#define DATA_SESSION "pam_krb5verify_session_ccache"
#define DATA_PRINCIPAL "pam_krb5verify_principal"
#define ENV_PENDING "KRB5VERIFY_PENDING_CCACHE"
#define PENDING_PREFIX "krb5verify_pending_"

struct options {
    const char *socket;
    const char *daemon_user;
    const char *ccache_dir;
    const char *krb5_config;  /* NULL: krb5's default configuration, read as a secure context reads it */
    int timeout;
    int use_first_pass, try_first_pass, use_authtok, forward_pass;
    int defer_pwchange, no_ccache, keep_ccache, allow_unverified, debug;
};

static int parse_options(pam_handle_t *pamh, int argc, const char **argv, struct options *options) {
    memset(options, 0, sizeof *options);
    options->socket = DEFAULT_SOCKET;
    options->daemon_user = DEFAULT_DAEMON_USER;
    options->ccache_dir = DEFAULT_CCACHE_DIR;
    options->timeout = DEFAULT_TIMEOUT;
    static const struct { const char *name; size_t offset; } flags[] = {
        {"use_first_pass", offsetof(struct options, use_first_pass)}, {"try_first_pass", offsetof(struct options, try_first_pass)},
        {"use_authtok", offsetof(struct options, use_authtok)}, {"forward_pass", offsetof(struct options, forward_pass)},
        {"defer_pwchange", offsetof(struct options, defer_pwchange)}, {"no_ccache", offsetof(struct options, no_ccache)},
        {"keep_ccache", offsetof(struct options, keep_ccache)}, {"allow_unverified", offsetof(struct options, allow_unverified)},
        {"debug", offsetof(struct options, debug)},
    };
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        size_t n = 0;
        while (n < sizeof flags / sizeof flags[0] && strcmp(arg, flags[n].name) != 0) n++;
        if (n < sizeof flags / sizeof flags[0]) {
            *(int *)((char *)options + flags[n].offset) = 1;
        } else if (strncmp(arg, "socket=", 7) == 0 && arg[7] == '/') {
            options->socket = arg + 7;
        } else if (strncmp(arg, "daemon_user=", 12) == 0 && arg[12] != '\0') {
            options->daemon_user = arg + 12;
        } else if (strncmp(arg, "ccache_dir=", 11) == 0 && arg[11] == '/') {
            options->ccache_dir = arg + 11;
        } else if (strncmp(arg, "krb5_config=", 12) == 0 && arg[12] == '/') {
            options->krb5_config = arg + 12;
        } else if (strncmp(arg, "timeout=", 8) == 0) {
            char *end;
            long value = strtol(arg + 8, &end, 10);
            if (*end != '\0' || value < 1 || value > 3600) {
                pam_syslog(pamh, LOG_ERR, "timeout must be 1 to 3600 seconds: %s", arg);
                return -1;
            }
            options->timeout = (int)value;
        } else {
            pam_syslog(pamh, LOG_ERR, "unknown option %s", arg);
            return -1;
        }
    }
    return 0;
}

static void debug_log(pam_handle_t *pamh, const struct options *options, const char *format, ...) {
    if (!options->debug) return;
    va_list args;
    va_start(args, format);
    pam_vsyslog(pamh, LOG_DEBUG, format, args);
    va_end(args);
}

static void wipe_free(char *secret) {
    if (secret != NULL) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
}

static void cleanup_secret(pam_handle_t *pamh, void *data, int status) {
    (void)pamh;
    (void)status;
    wipe_free(data);
}

/* Asks one question; refuses answers of PAM_MAX_RESP_SIZE bytes or more. */
static int ask(pam_handle_t *pamh, int style, const char *prompt, char **answer) {
    *answer = NULL;
    char *response = NULL;
    int status = pam_prompt(pamh, style, &response, "%s", prompt);
    if (status != PAM_SUCCESS) {
        wipe_free(response);
        return status;
    }
    if (response == NULL) return PAM_CONV_ERR;
    if (strlen(response) >= PAM_MAX_RESP_SIZE) {
        wipe_free(response);
        pam_syslog(pamh, LOG_NOTICE, "an answer of PAM_MAX_RESP_SIZE bytes or more was refused");
        return PAM_AUTH_ERR;
    }
    *answer = response;
    return PAM_SUCCESS;
}

static void tell(pam_handle_t *pamh, int style, const char *text) {
    pam_prompt(pamh, style, NULL, "%s", text);
}

/* MARK: one conversation with the daemon */

enum purpose { PURPOSE_LOGIN, PURPOSE_CHANGE_PASSWORD };

/* What a conversation is for and what it already knows. */
struct request {
    enum purpose purpose;
    const char *user;
    const char *password;      /* sent up front when known */
    const char *new_password;  /* answers new-password questions (chauthtok) */
    int stop_at_new_password;  /* chauthtok's preliminary check: the old password is proven once asked for a new one */
};

/* What the daemon answered. */
struct outcome {
    int reached;               /* a result line arrived */
    int ok;
    int verified;
    char *error;
    char *detail;
    char *principal;           /* the canonical principal, on success */
    unsigned char *ccache;
    size_t ccache_length;
    char *prompted_password;   /* the password the person typed, for PAM_AUTHTOK */
    int asked_new_password;    /* the daemon asked for a new password */
    const char *why;           /* when not reached: why not (no secret) */
};

static void outcome_free(struct outcome *outcome) {
    free(outcome->error);
    free(outcome->detail);
    free(outcome->principal);
    if (outcome->ccache != NULL) explicit_bzero(outcome->ccache, outcome->ccache_length);
    free(outcome->ccache);
    wipe_free(outcome->prompted_password);
    memset(outcome, 0, sizeof *outcome);
}

static int append_item(pam_handle_t *pamh, struct kv_buffer *line, int first, const char *name, int item) {
    const void *value = NULL;
    if (pam_get_item(pamh, item, &value) != PAM_SUCCESS || value == NULL || *(const char *)value == '\0') return 0;
    return kv_buffer_append_member(line, first, name, value);
}

static int login_line(pam_handle_t *pamh, const struct options *options, const struct request *request, struct kv_buffer *line) {
    char number[32];
    int failed = kv_buffer_append_text(line, "{")
        || kv_buffer_append_member(line, 1, "type", "login")
        || kv_buffer_append_member(line, 0, "principal", request->user)
        || kv_buffer_append_text(line, ",\"version\":")
        || (snprintf(number, sizeof number, "%d", KV_PROTOCOL_VERSION), kv_buffer_append_text(line, number))
        || kv_buffer_append_text(line, ",\"timeout\":")
        || (snprintf(number, sizeof number, "%d", options->timeout), kv_buffer_append_text(line, number))
        || append_item(pamh, line, 0, "service", PAM_SERVICE)
        || append_item(pamh, line, 0, "client_address", PAM_RHOST)
        || append_item(pamh, line, 0, "tty", PAM_TTY)
        || kv_buffer_append_member(line, 0, "purpose", request->purpose == PURPOSE_LOGIN ? "login" : "change-password");
    if (!failed && request->purpose == PURPOSE_LOGIN) {
        failed = kv_buffer_append_member(line, 0, "expired", options->defer_pwchange ? "report" : "change")
            || (!options->no_ccache && kv_buffer_append_text(line, ",\"credentials\":true"));
    }
    if (!failed && request->password != NULL) failed = kv_buffer_append_member(line, 0, "password", request->password);
    return failed || kv_buffer_append_text(line, "}\n");
}

/* The prompt for one question, in the words pam-krb5 and pam_sss use. */
static void prompt_for(const struct kv_question *question, char *text, size_t size) {
    switch (question->kind) {
    case KV_QUESTION_PASSWORD: snprintf(text, size, "Password: "); break;
    case KV_QUESTION_NEW_PASSWORD: snprintf(text, size, "New password: "); break;
    case KV_QUESTION_NEW_PASSWORD_AGAIN: snprintf(text, size, "Retype new password: "); break;
    case KV_QUESTION_OTP:
        if (question->flags & KV_OTP_NEXT_OTP) snprintf(text, size, "Next one-time password: ");
        else if (question->vendor != NULL) snprintf(text, size, "One-time password (%.64s): ", question->vendor);
        else snprintf(text, size, "One-time password: ");
        break;
    case KV_QUESTION_PKINIT: {
        /* The token's label when the identity names one (PKCS11:...:token=LABEL). */
        const char *label = strstr(question->identity, "token=");
        if (label != NULL) {
            label += 6;
            snprintf(text, size, "PIN for %.*s: ", (int)strcspn(label, ":"), label);
        } else {
            snprintf(text, size, "PIN for %.200s: ", question->identity);
        }
        break;
    }
    case KV_QUESTION_TEXT: snprintf(text, size, "%.200s: ", question->prompt ? question->prompt : ""); break;
    case KV_QUESTION_RAW: snprintf(text, size, "%s", ""); break;
    }
}

/* Answers one round into `answers` (a JSON object). Returns a PAM status. */
static int answer_round(pam_handle_t *pamh, const struct request *request, const struct kv_message *round, struct kv_buffer *answers,
                        struct outcome *outcome) {
    struct kv_buffer pins = {0}, texts = {0};
    int first = 1, status = PAM_SUCCESS;
    if (kv_buffer_append_text(answers, "{")) return PAM_BUF_ERR;
    /* The password first, as people expect it before an OTP, whatever order the daemon sent. */
    size_t order[KV_MAX_QUESTIONS], ordered = 0;
    for (size_t i = 0; i < round->count; i++)
        if (round->questions[i].kind == KV_QUESTION_PASSWORD) order[ordered++] = i;
    for (size_t i = 0; i < round->count; i++)
        if (round->questions[i].kind != KV_QUESTION_PASSWORD) order[ordered++] = i;
    for (size_t n = 0; n < ordered && status == PAM_SUCCESS; n++) {
        const struct kv_question *question = &round->questions[order[n]];
        char prompt[256];
        char *answer = NULL, *pin = NULL;
        prompt_for(question, prompt, sizeof prompt);
        switch (question->kind) {
        case KV_QUESTION_PASSWORD:
            if (request->password != NULL) {
                answer = strdup(request->password);
            } else if ((status = ask(pamh, PAM_PROMPT_ECHO_OFF, prompt, &answer)) == PAM_SUCCESS) {
                wipe_free(outcome->prompted_password);
                outcome->prompted_password = strdup(answer);
            }
            if (status == PAM_SUCCESS && (answer == NULL || kv_buffer_append_member(answers, first, "password", answer))) status = PAM_BUF_ERR;
            break;
        case KV_QUESTION_NEW_PASSWORD:
        case KV_QUESTION_NEW_PASSWORD_AGAIN:
            outcome->asked_new_password = 1;
            if (request->stop_at_new_password) {
                status = PAM_IGNORE;  /* ends the round: nothing is sent */
                break;
            }
            if (request->new_password != NULL) answer = strdup(request->new_password);
            else status = ask(pamh, PAM_PROMPT_ECHO_OFF, prompt, &answer);
            if (status == PAM_SUCCESS && (answer == NULL
                || kv_buffer_append_member(answers, first, question->kind == KV_QUESTION_NEW_PASSWORD ? "new-password" : "new-password-again", answer)))
                status = PAM_BUF_ERR;
            break;
        case KV_QUESTION_OTP: {
            if (question->challenge != NULL) {
                char challenge[160];
                snprintf(challenge, sizeof challenge, "Challenge: %.140s", question->challenge);
                tell(pamh, PAM_TEXT_INFO, challenge);
            }
            if ((question->flags & (KV_OTP_COLLECT_PIN | KV_OTP_SEPARATE_PIN)) == (KV_OTP_COLLECT_PIN | KV_OTP_SEPARATE_PIN))
                status = ask(pamh, PAM_PROMPT_ECHO_OFF, "Token PIN: ", &pin);
            if (status == PAM_SUCCESS) status = ask(pamh, PAM_PROMPT_ECHO_OFF, prompt, &answer);
            char number[24];
            snprintf(number, sizeof number, "%d", question->token);
            if (status == PAM_SUCCESS
                && ((!first && kv_buffer_append_text(answers, ",")) || kv_buffer_append_text(answers, "\"otp\":{\"token\":")
                    || kv_buffer_append_text(answers, number) || kv_buffer_append_member(answers, 0, "value", answer)
                    || (pin != NULL && kv_buffer_append_member(answers, 0, "pin", pin)) || kv_buffer_append_text(answers, "}")))
                status = PAM_BUF_ERR;
            break;
        }
        case KV_QUESTION_PKINIT:
            if (question->flags & KV_PIN_LOCKED) {
                tell(pamh, PAM_ERROR_MSG, "The smart card's PIN is locked.");
                status = PAM_AUTH_ERR;
                break;
            }
            if (question->flags & KV_PIN_FINAL_TRY) tell(pamh, PAM_ERROR_MSG, "This is the smart card's last PIN try.");
            else if (question->flags & KV_PIN_COUNT_LOW) tell(pamh, PAM_TEXT_INFO, "Few PIN tries are left on the smart card.");
            status = ask(pamh, PAM_PROMPT_ECHO_OFF, prompt, &answer);
            if (status == PAM_SUCCESS && kv_buffer_append_member(&pins, pins.length == 0, question->identity, answer)) status = PAM_BUF_ERR;
            break;
        case KV_QUESTION_TEXT:
            status = ask(pamh, question->hidden ? PAM_PROMPT_ECHO_OFF : PAM_PROMPT_ECHO_ON, prompt, &answer);
            if (status == PAM_SUCCESS && ((texts.length > 0 && kv_buffer_append_text(&texts, ","))
                                          || kv_buffer_append_json_string(&texts, answer))) status = PAM_BUF_ERR;
            break;
        case KV_QUESTION_RAW:
            /* A mechanism the module cannot present; the round is declined. */
            status = PAM_AUTHINFO_UNAVAIL;
            break;
        }
        if (status == PAM_SUCCESS && question->kind != KV_QUESTION_PKINIT && question->kind != KV_QUESTION_TEXT) first = 0;
        wipe_free(answer);
        wipe_free(pin);
    }
    if (status == PAM_SUCCESS && pins.length > 0) {
        if ((!first && kv_buffer_append_text(answers, ",")) || kv_buffer_append_text(answers, "\"pkinit\":{")
            || kv_buffer_append(answers, pins.data, pins.length) || kv_buffer_append_text(answers, "}")) status = PAM_BUF_ERR;
        first = 0;
    }
    if (status == PAM_SUCCESS && texts.length > 0) {
        if ((!first && kv_buffer_append_text(answers, ",")) || kv_buffer_append_text(answers, "\"text\":[")
            || kv_buffer_append(answers, texts.data, texts.length) || kv_buffer_append_text(answers, "]")) status = PAM_BUF_ERR;
    }
    if (status == PAM_SUCCESS && kv_buffer_append_text(answers, "}")) status = PAM_BUF_ERR;
    kv_buffer_wipe(&pins);
    kv_buffer_wipe(&texts);
    return status;
}

/* Runs one conversation to its end. Returns PAM_SUCCESS when a result arrived (outcome->ok says which), a
 * PAM status otherwise: PAM_AUTHINFO_UNAVAIL for the daemon, the conversation's own status for the person,
 * PAM_IGNORE when stopped at a new-password question as asked. */
static int converse(pam_handle_t *pamh, const struct options *options, const struct request *request, struct outcome *outcome) {
    memset(outcome, 0, sizeof *outcome);
    struct kv_trust trust = {0};
    struct passwd entry, *found = NULL;
    char scratch[4096];
    if (getpwnam_r(options->daemon_user, &entry, scratch, sizeof scratch, &found) == 0 && found != NULL) {
        trust.daemon_uid = found->pw_uid;
        trust.has_daemon_uid = 1;
    }
    struct kv_connection connection;
    if (kv_connect(&connection, options->socket, &trust, options->timeout, &outcome->why) != 0) {
        pam_syslog(pamh, LOG_ERR, "%s: %s", options->socket, outcome->why);
        return PAM_AUTHINFO_UNAVAIL;
    }
    struct kv_buffer line = {0};
    int status = login_line(pamh, options, request, &line) ? PAM_BUF_ERR : PAM_SUCCESS;
    if (status == PAM_SUCCESS && kv_send(&connection, line.data, line.length, &outcome->why) != 0) status = PAM_AUTHINFO_UNAVAIL;
    kv_buffer_wipe(&line);
    while (status == PAM_SUCCESS && !outcome->reached) {
        char *text;
        size_t length;
        struct kv_message message;
        if (kv_read_line(&connection, &text, &length, &outcome->why) != 0) {
            status = PAM_AUTHINFO_UNAVAIL;
            break;
        }
        if (kv_parse_message(text, length, &message, &outcome->why) != 0) {
            status = PAM_AUTHINFO_UNAVAIL;
            break;
        }
        switch (message.type) {
        case KV_MESSAGE_INFO:
            tell(pamh, PAM_TEXT_INFO, message.text);
            break;
        case KV_MESSAGE_RESULT:
            outcome->reached = 1;
            outcome->ok = message.ok;
            outcome->verified = message.verified;
            outcome->error = message.error;
            outcome->detail = message.detail;
            outcome->principal = message.principal;
            outcome->ccache = message.ccache;
            outcome->ccache_length = message.ccache_length;
            message.error = message.detail = message.principal = NULL;
            message.ccache = NULL;
            break;
        case KV_MESSAGE_QUESTIONS: {
            struct kv_buffer answers = {0};
            status = answer_round(pamh, request, &message, &answers, outcome);
            if (status == PAM_SUCCESS) {
                char head[64];
                snprintf(head, sizeof head, "{\"type\":\"answers\",\"id\":%ld,\"answers\":", message.id);
                if (kv_buffer_append_text(&line, head) || kv_buffer_append(&line, answers.data, answers.length) || kv_buffer_append_text(&line, "}\n"))
                    status = PAM_BUF_ERR;
                else if (kv_send(&connection, line.data, line.length, &outcome->why) != 0)
                    status = PAM_AUTHINFO_UNAVAIL;
                kv_buffer_wipe(&line);
            }
            kv_buffer_wipe(&answers);
            break;
        }
        }
        kv_message_free(&message);
    }
    kv_close(&connection);
    if (status == PAM_AUTHINFO_UNAVAIL && outcome->why != NULL) pam_syslog(pamh, LOG_ERR, "krb5-verifyd: %s", outcome->why);
    return status;
}

/* The PAM status of a daemon's failure name, for authentication. */
static int auth_status(const char *error) {
    if (strcmp(error, "unknown-principal") == 0) return PAM_USER_UNKNOWN;
    if (strcmp(error, "password-expired") == 0) return PAM_NEW_AUTHTOK_REQD;
    if (strcmp(error, "kdc-unreachable") == 0 || strcmp(error, "timeout") == 0 || strcmp(error, "internal") == 0
        || strcmp(error, "clock-skew") == 0 || strcmp(error, "invalid-request") == 0) return PAM_AUTHINFO_UNAVAIL;
    return PAM_AUTH_ERR;  /* bad-credentials, account-disabled, verification-failed, anything new */
}

/* MARK: the session's credential cache */

static void cleanup_pending(pam_handle_t *pamh, void *data, int status) {
    (void)pamh;
    /* pam_end in the process that authenticated: a cache never handed to a session goes. */
    if (!(status & PAM_DATA_REPLACE) && data != NULL) unlink(data);
    free(data);
}

/* Writes `bytes` to a new file made from `template` (O_EXCL: never an existing path or a link), mode 0600,
 * then gives it to uid/gid through the descriptor. Returns the descriptor's path in `template`, or -1. */
static int write_cache(char *template, const unsigned char *bytes, size_t count, uid_t uid, gid_t gid) {
    int fd = mkostemp(template, O_CLOEXEC);
    if (fd < 0) return -1;
    size_t written = 0;
    int failed = fchmod(fd, 0600) != 0;
    while (!failed && written < count) {
        ssize_t n = write(fd, bytes + written, count - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) failed = 1;
        else written += (size_t)n;
    }
    if (!failed) failed = fchown(fd, uid, gid) != 0 || fsync(fd) != 0;
    close(fd);
    if (failed) {
        unlink(template);
        return -1;
    }
    return 0;
}

/* Keeps the credential cache the daemon issued until setcred or open_session: a root-owned file (sshd
 * authenticates in a child process, so only the PAM environment reaches the parent). */
static int keep_pending(pam_handle_t *pamh, const struct options *options, const unsigned char *bytes, size_t count) {
    size_t size = strlen(options->ccache_dir) + sizeof "/" PENDING_PREFIX "XXXXXX";
    char *path = malloc(size);
    if (path == NULL) return PAM_BUF_ERR;
    snprintf(path, size, "%s/" PENDING_PREFIX "XXXXXX", options->ccache_dir);
    if (write_cache(path, bytes, count, geteuid(), getegid()) != 0) {
        pam_syslog(pamh, LOG_ERR, "cannot write a credential cache in %s: %m", options->ccache_dir);
        free(path);
        return PAM_AUTHINFO_UNAVAIL;
    }
    char *variable = NULL;
    if (asprintf(&variable, ENV_PENDING "=%s", path) < 0 || pam_putenv(pamh, variable) != PAM_SUCCESS
        || pam_set_data(pamh, DATA_PENDING, path, cleanup_pending) != PAM_SUCCESS) {
        unlink(path);
        free(path);
        free(variable);
        return PAM_BUF_ERR;
    }
    free(variable);
    return PAM_SUCCESS;
}

/* Reads the pending cache named in this handle's data or its PAM environment. Only a file this module can
 * have made is read: the name pattern in ccache_dir, a regular file of one link owned by this process's user,
 * mode 0600, beginning as a version 4 cache. */
static int read_pending(pam_handle_t *pamh, const struct options *options, char **path_out, unsigned char **bytes, size_t *count) {
    const void *data = NULL;
    const char *path = NULL;
    *bytes = NULL;
    *count = 0;
    if (pam_get_data(pamh, DATA_PENDING, &data) == PAM_SUCCESS && data != NULL) path = data;
    else path = pam_getenv(pamh, ENV_PENDING);
    if (path == NULL) return -1;
    size_t dir_length = strlen(options->ccache_dir);
    if (strncmp(path, options->ccache_dir, dir_length) != 0 || path[dir_length] != '/'
        || strncmp(path + dir_length + 1, PENDING_PREFIX, strlen(PENDING_PREFIX)) != 0
        || strchr(path + dir_length + 1, '/') != NULL) {
        pam_syslog(pamh, LOG_ERR, "ignoring a pending credential cache outside %s", options->ccache_dir);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return -1;
    struct stat info;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode) || info.st_nlink != 1 || info.st_uid != geteuid()
        || (info.st_mode & 07777) != 0600 || info.st_size < 4 || info.st_size > 1024 * 1024) {
        close(fd);
        pam_syslog(pamh, LOG_ERR, "ignoring a pending credential cache that this module did not write");
        return -1;
    }
    unsigned char *buffer = malloc((size_t)info.st_size);
    size_t got = 0;
    while (buffer != NULL && got < (size_t)info.st_size) {
        ssize_t n = read(fd, buffer + got, (size_t)info.st_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    if (buffer == NULL || got != (size_t)info.st_size || buffer[0] != 5 || buffer[1] != 4) {
        if (buffer != NULL) explicit_bzero(buffer, (size_t)info.st_size);
        free(buffer);
        return -1;
    }
    *path_out = strdup(path);
    *bytes = buffer;
    *count = got;
    return *path_out == NULL ? (explicit_bzero(buffer, got), free(buffer), -1) : 0;
}

static void forget_pending(pam_handle_t *pamh, const char *path) {
    unlink(path);
    pam_putenv(pamh, ENV_PENDING);
    pam_set_data(pamh, DATA_PENDING, NULL, NULL);
}

static void cleanup_session(pam_handle_t *pamh, void *data, int status) {
    (void)pamh;
    (void)status;
    free(data);
}

/* Gives the session its cache: a new file owned by the user, named in KRB5CCNAME. */
static int establish(pam_handle_t *pamh, const struct options *options) {
    const void *existing = NULL;
    if (pam_get_data(pamh, DATA_SESSION, &existing) == PAM_SUCCESS && existing != NULL) return PAM_SUCCESS;
    char *pending;
    unsigned char *bytes;
    size_t count;
    if (read_pending(pamh, options, &pending, &bytes, &count) != 0) return PAM_IGNORE;  /* not authenticated here */
    const char *user = NULL;
    struct passwd entry, *found = NULL;
    char scratch[4096];
    int status = PAM_SUCCESS;
    if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL
        || getpwnam_r(user, &entry, scratch, sizeof scratch, &found) != 0 || found == NULL) {
        status = PAM_USER_UNKNOWN;
    }
    char *path = NULL;
    if (status == PAM_SUCCESS) {
        if (asprintf(&path, "%s/krb5cc_%lu_XXXXXX", options->ccache_dir, (unsigned long)found->pw_uid) < 0) status = PAM_BUF_ERR;
        else if (write_cache(path, bytes, count, found->pw_uid, found->pw_gid) != 0) {
            pam_syslog(pamh, LOG_ERR, "cannot write the session's credential cache in %s: %m", options->ccache_dir);
            status = PAM_CRED_ERR;
        }
    }
    explicit_bzero(bytes, count);
    free(bytes);
    forget_pending(pamh, pending);
    free(pending);
    if (status != PAM_SUCCESS) {
        free(path);
        return status;
    }
    char *variable = NULL;
    if (asprintf(&variable, "KRB5CCNAME=FILE:%s", path) < 0 || pam_putenv(pamh, variable) != PAM_SUCCESS
        || pam_set_data(pamh, DATA_SESSION, path, cleanup_session) != PAM_SUCCESS) {
        unlink(path);
        free(path);
        free(variable);
        return PAM_BUF_ERR;
    }
    free(variable);
    debug_log(pamh, options, "session credential cache %s", path);
    return PAM_SUCCESS;
}

/* Removes the session's cache: the one this handle made, or the one KRB5CCNAME names when it is a file of
 * this module's naming in ccache_dir owned by the user. unlink removes a link, never what it points to. */
static int remove_cache(pam_handle_t *pamh, const struct options *options) {
    const void *data = NULL;
    const char *path = NULL;
    if (pam_get_data(pamh, DATA_SESSION, &data) == PAM_SUCCESS && data != NULL) {
        path = data;
    } else {
        const char *name = pam_getenv(pamh, "KRB5CCNAME");
        size_t dir_length = strlen(options->ccache_dir);
        if (name != NULL && strncmp(name, "FILE:", 5) == 0 && strncmp(name + 5, options->ccache_dir, dir_length) == 0
            && name[5 + dir_length] == '/' && strncmp(name + 6 + dir_length, "krb5cc_", 7) == 0 && strchr(name + 6 + dir_length, '/') == NULL)
            path = name + 5;
    }
    if (path == NULL) return PAM_IGNORE;
    if (unlink(path) != 0 && errno != ENOENT) {
        pam_syslog(pamh, LOG_ERR, "cannot remove %s: %m", path);
        return PAM_SESSION_ERR;
    }
    debug_log(pamh, options, "removed %s", path);
    pam_putenv(pamh, "KRB5CCNAME");
    pam_set_data(pamh, DATA_SESSION, NULL, NULL);
    return PAM_SUCCESS;
}

/* MARK: PAM entry points */

static int authenticate_once(pam_handle_t *pamh, const struct options *options, const char *user, const char *password, struct outcome *outcome) {
    struct request request = {.purpose = PURPOSE_LOGIN, .user = user, .password = password};
    int status = converse(pamh, options, &request, outcome);
    if (status != PAM_SUCCESS) return status;
    if (!outcome->ok) return auth_status(outcome->error);
    /* A ticket nobody checked against the keytab may come from a forged KDC (a daemon run with
     * insecure_skip_verification, or whatever answers on the socket). */
    if (!outcome->verified && !options->allow_unverified) {
        pam_syslog(pamh, LOG_ERR, "the daemon did not verify the credentials; refused (allow_unverified to accept)");
        return PAM_AUTH_ERR;
    }
    return PAM_SUCCESS;
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)flags;
    struct options options;
    if (parse_options(pamh, argc, argv, &options) != 0) return PAM_SERVICE_ERR;
    const char *user = NULL;
    if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL || *user == '\0') return PAM_USER_UNKNOWN;
    const void *stacked = NULL;
    const char *given = NULL;
    if (options.use_first_pass || options.try_first_pass || options.use_authtok) {
        if (pam_get_item(pamh, PAM_AUTHTOK, &stacked) == PAM_SUCCESS && stacked != NULL) given = stacked;
        if (given == NULL && (options.use_first_pass || options.use_authtok)) {
            debug_log(pamh, &options, "no password from an earlier module");
            return PAM_AUTH_ERR;
        }
    }
    char *password = given != NULL ? strdup(given) : NULL;
    if (given != NULL && password == NULL) return PAM_BUF_ERR;
    struct outcome outcome;
    int status = authenticate_once(pamh, &options, user, password, &outcome);
    if (status == PAM_AUTH_ERR && password != NULL && options.try_first_pass && !outcome.asked_new_password) {
        /* The stacked password was wrong: ask. */
        outcome_free(&outcome);
        wipe_free(password);
        password = NULL;
        status = authenticate_once(pamh, &options, user, NULL, &outcome);
    }
    const char *typed = outcome.prompted_password;
    if (typed != NULL && (status == PAM_SUCCESS || status == PAM_NEW_AUTHTOK_REQD || options.forward_pass))
        pam_set_item(pamh, PAM_AUTHTOK, typed);
    if (status == PAM_SUCCESS && outcome.principal != NULL) {
        /* For acct_mgmt in this process (the cache carries it to another, as sshd's parent). */
        char *principal = strdup(outcome.principal);
        if (principal == NULL || pam_set_data(pamh, DATA_PRINCIPAL, principal, cleanup_session) != PAM_SUCCESS) {
            free(principal);
            status = PAM_BUF_ERR;
        }
    }
    if (status == PAM_SUCCESS && outcome.ccache != NULL) status = keep_pending(pamh, &options, outcome.ccache, outcome.ccache_length);
    if (status == PAM_NEW_AUTHTOK_REQD) {
        /* acct_mgmt says so too, for stacks that let authentication pass (new_authtok_reqd=ok); the proven old
         * password is kept for chauthtok's PAM_CHANGE_EXPIRED_AUTHTOK pass (libpam does not keep PAM_AUTHTOK). */
        const char *old = password != NULL ? password : typed;
        pam_set_data(pamh, DATA_EXPIRED, old != NULL ? strdup(old) : NULL, cleanup_secret);
        if (options.defer_pwchange) tell(pamh, PAM_TEXT_INFO, "Password expired. You must change it now.");
        else if (outcome.detail != NULL) tell(pamh, PAM_ERROR_MSG, outcome.detail);  /* the change during login was refused */
    }
    debug_log(pamh, &options, "authenticate %s: %s (%s)", user, pam_strerror(pamh, status), outcome.error ? outcome.error : "ok");
    outcome_free(&outcome);
    wipe_free(password);
    return status;
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    struct options options;
    if (parse_options(pamh, argc, argv, &options) != 0) return PAM_SERVICE_ERR;
    if (flags & PAM_DELETE_CRED) return options.keep_ccache ? PAM_SUCCESS : remove_cache(pamh, &options);
    /* Nothing to establish is not a failure: a stack whose every setcred ignores fails (sshd then drops the login). */
    if (options.no_ccache) return PAM_SUCCESS;
    return establish(pamh, &options);
}

PAM_EXTERN int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)flags;
    struct options options;
    if (parse_options(pamh, argc, argv, &options) != 0) return PAM_SERVICE_ERR;
    if (options.no_ccache) return PAM_SUCCESS;
    int status = establish(pamh, &options);
    return status == PAM_IGNORE ? PAM_SUCCESS : status;
}

PAM_EXTERN int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)flags;
    struct options options;
    if (parse_options(pamh, argc, argv, &options) != 0) return PAM_SERVICE_ERR;
    if (options.keep_ccache) return PAM_SUCCESS;
    int status = remove_cache(pamh, &options);
    return status == PAM_IGNORE ? PAM_SUCCESS : status;
}

/* Authorization as krb5-login does it: krb5_kuserok (the user's .k5login, else auth_to_local) for the
 * principal that authenticated: the one the daemon's result named, kept in the handle, or in another process
 * (sshd's parent) read from the credential cache the daemon issued. */
PAM_EXTERN int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)flags;
    struct options options;
    if (parse_options(pamh, argc, argv, &options) != 0) return PAM_SERVICE_ERR;
    const void *expired = NULL;
    if (pam_get_data(pamh, DATA_EXPIRED, &expired) == PAM_SUCCESS && expired != NULL) return PAM_NEW_AUTHTOK_REQD;
    const char *user = NULL;
    if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL) return PAM_USER_UNKNOWN;
    char *principal = NULL;
    const void *session = NULL, *known = NULL;
    if (pam_get_data(pamh, DATA_PRINCIPAL, &known) == PAM_SUCCESS && known != NULL) {
        principal = strdup(known);
    } else if (pam_get_data(pamh, DATA_SESSION, &session) == PAM_SUCCESS && session != NULL) {
        int fd = open(session, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        unsigned char head[2048];
        ssize_t n = fd >= 0 ? read(fd, head, sizeof head) : -1;
        if (fd >= 0) close(fd);
        if (n > 0) principal = kv_ccache_principal(head, (size_t)n);
        explicit_bzero(head, sizeof head);
    } else {
        char *pending;
        unsigned char *bytes;
        size_t count;
        if (read_pending(pamh, &options, &pending, &bytes, &count) == 0) {
            principal = kv_ccache_principal(bytes, count);
            explicit_bzero(bytes, count);
            free(bytes);
            free(pending);
        }
    }
    if (principal == NULL) return PAM_IGNORE;  /* this module did not authenticate the user */
    krb5_context context;
    krb5_principal parsed;
    int status = PAM_PERM_DENIED;
    /* A secure context: the application's environment (KRB5_CONFIG, KRB5_TRACE) is not read. */
    krb5_error_code failed;
    if (options.krb5_config != NULL) {
        profile_t profile = NULL;
        const_profile_filespec_t files = options.krb5_config;
        failed = (krb5_error_code)profile_init_path(files, &profile);
        if (!failed) failed = krb5_init_context_profile(profile, KRB5_INIT_CONTEXT_SECURE, &context);
        if (profile != NULL) profile_release(profile);
    } else {
        failed = krb5_init_secure_context(&context);
    }
    if (failed) {
        pam_syslog(pamh, LOG_ERR, "cannot read the krb5 configuration");
        free(principal);
        return PAM_SERVICE_ERR;
    }
    if (krb5_parse_name(context, principal, &parsed) == 0) {
        if (krb5_kuserok(context, parsed, user)) status = PAM_SUCCESS;
        krb5_free_principal(context, parsed);
    }
    krb5_free_context(context);
    if (status != PAM_SUCCESS) pam_syslog(pamh, LOG_NOTICE, "%s may not log in as %s (.k5login, auth_to_local)", principal, user);
    free(principal);
    return status;
}

/* The two-phase change through the daemon's kpasswd path: the preliminary check proves the old password
 * (a kadmin/changepw ticket); the update asks for the new one twice and has the daemon change it. */
PAM_EXTERN int pam_sm_chauthtok(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    struct options options;
    if (parse_options(pamh, argc, argv, &options) != 0) return PAM_SERVICE_ERR;
    const char *user = NULL;
    if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL || *user == '\0') return PAM_USER_UNKNOWN;
    struct outcome outcome;
    if (flags & PAM_PRELIM_CHECK) {
        const void *old = NULL;
        char *typed = NULL;
        pam_get_item(pamh, PAM_OLDAUTHTOK, &old);
        if (old == NULL && (flags & PAM_CHANGE_EXPIRED_AUTHTOK)) {
            /* The password that just authenticated and turned out expired. */
            const void *expired = NULL;
            if (pam_get_data(pamh, DATA_EXPIRED, &expired) == PAM_SUCCESS && expired != NULL) old = expired;
        }
        if (old == NULL && (options.use_first_pass || options.use_authtok)) return PAM_AUTHTOK_RECOVERY_ERR;
        if (old == NULL) {
            int asked = ask(pamh, PAM_PROMPT_ECHO_OFF, "Current password: ", &typed);
            if (asked != PAM_SUCCESS) return asked == PAM_AUTH_ERR ? PAM_AUTHTOK_RECOVERY_ERR : asked;
            old = typed;
        }
        char *copy = strdup(old);
        struct request request = {.purpose = PURPOSE_CHANGE_PASSWORD, .user = user, .password = copy, .stop_at_new_password = 1};
        int status = copy == NULL ? PAM_BUF_ERR : converse(pamh, &options, &request, &outcome);
        if (status == PAM_IGNORE && outcome.asked_new_password) status = PAM_SUCCESS;          /* proven */
        else if (status == PAM_SUCCESS && outcome.reached && !outcome.ok)
            status = strcmp(outcome.error, "bad-credentials") == 0 ? PAM_AUTHTOK_RECOVERY_ERR
                   : strcmp(outcome.error, "unknown-principal") == 0 ? PAM_USER_UNKNOWN
                   : auth_status(outcome.error) == PAM_AUTHINFO_UNAVAIL ? PAM_TRY_AGAIN : PAM_AUTHTOK_ERR;
        else if (status == PAM_AUTHINFO_UNAVAIL) status = PAM_TRY_AGAIN;
        else if (status == PAM_SUCCESS) status = PAM_AUTHTOK_ERR;  /* a result without the question: not a change */
        if (status == PAM_SUCCESS) pam_set_item(pamh, PAM_OLDAUTHTOK, copy);
        debug_log(pamh, &options, "chauthtok preliminary check %s: %s", user, pam_strerror(pamh, status));
        outcome_free(&outcome);
        wipe_free(copy);
        wipe_free(typed);
        return status;
    }
    if (!(flags & PAM_UPDATE_AUTHTOK)) return PAM_SERVICE_ERR;
    const void *old = NULL, *stacked = NULL;
    if (pam_get_item(pamh, PAM_OLDAUTHTOK, &old) != PAM_SUCCESS || old == NULL) return PAM_AUTHTOK_RECOVERY_ERR;
    char *new_password = NULL;
    if (options.use_authtok) {
        if (pam_get_item(pamh, PAM_AUTHTOK, &stacked) != PAM_SUCCESS || stacked == NULL) return PAM_AUTHTOK_ERR;
        new_password = strdup(stacked);
    } else {
        char *again = NULL;
        int asked = ask(pamh, PAM_PROMPT_ECHO_OFF, "New password: ", &new_password);
        if (asked == PAM_SUCCESS) asked = ask(pamh, PAM_PROMPT_ECHO_OFF, "Retype new password: ", &again);
        if (asked == PAM_SUCCESS && strcmp(new_password, again) != 0) {
            tell(pamh, PAM_ERROR_MSG, "The passwords do not match.");
            asked = PAM_AUTHTOK_ERR;
        }
        wipe_free(again);
        if (asked != PAM_SUCCESS) {
            wipe_free(new_password);
            return asked == PAM_AUTH_ERR ? PAM_AUTHTOK_ERR : asked;
        }
    }
    if (new_password == NULL) return PAM_BUF_ERR;
    char *old_copy = strdup(old);
    struct request request = {.purpose = PURPOSE_CHANGE_PASSWORD, .user = user, .password = old_copy, .new_password = new_password};
    int status = old_copy == NULL ? PAM_BUF_ERR : converse(pamh, &options, &request, &outcome);
    if (status == PAM_SUCCESS && outcome.reached && !outcome.ok) {
        if (outcome.detail != NULL) tell(pamh, PAM_ERROR_MSG, outcome.detail);
        status = strcmp(outcome.error, "bad-credentials") == 0 ? PAM_AUTHTOK_RECOVERY_ERR : PAM_AUTHTOK_ERR;
    } else if (status == PAM_AUTHINFO_UNAVAIL) {
        status = PAM_AUTHTOK_ERR;
    }
    if (status == PAM_SUCCESS) {
        pam_set_item(pamh, PAM_AUTHTOK, new_password);
        pam_set_data(pamh, DATA_EXPIRED, NULL, NULL);
    }
    debug_log(pamh, &options, "chauthtok update %s: %s", user, pam_strerror(pamh, status));
    outcome_free(&outcome);
    wipe_free(old_copy);
    wipe_free(new_password);
    return status;
}
