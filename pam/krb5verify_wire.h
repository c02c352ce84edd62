/*
 * pam_krb5verify: the wire side of the module. The socket to krb5-verifyd (checked as pam_sss checks its
 * own), the JSON lines the module writes (by hand, into buffers that are wiped), and the daemon's replies
 * (parsed with json-c into plain structures).
 */
#ifndef KRB5VERIFY_WIRE_H
#define KRB5VERIFY_WIRE_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

/* The protocol version the module speaks (docs/protocol.md, section 2). */
#define KV_PROTOCOL_VERSION 2
/* The daemon's longest line. */
#define KV_MAX_LINE (64 * 1024)
/* The most questions the module keeps from one round. */
#define KV_MAX_QUESTIONS 16

/* A growable byte buffer whose old contents are wiped whenever it moves or is freed. */
struct kv_buffer {
    char *data;
    size_t length;
    size_t capacity;
};

int kv_buffer_append(struct kv_buffer *buffer, const void *bytes, size_t count);
int kv_buffer_append_text(struct kv_buffer *buffer, const char *text);
/* Appends "text" as a JSON string, quotes included. */
int kv_buffer_append_json_string(struct kv_buffer *buffer, const char *text);
/* Appends ,"key":"value" (or without the comma when first). */
int kv_buffer_append_member(struct kv_buffer *buffer, int first, const char *key, const char *value);
void kv_buffer_wipe(struct kv_buffer *buffer);

enum kv_question_kind {
    KV_QUESTION_PASSWORD,
    KV_QUESTION_OTP,
    KV_QUESTION_PKINIT,
    KV_QUESTION_NEW_PASSWORD,
    KV_QUESTION_NEW_PASSWORD_AGAIN,
    KV_QUESTION_TEXT,
    KV_QUESTION_RAW,
};

/* OTP token flags and PKINIT identity flags, as named on the wire. */
#define KV_OTP_COLLECT_TOKEN 0x1
#define KV_OTP_COLLECT_PIN 0x2
#define KV_OTP_NEXT_OTP 0x4
#define KV_OTP_SEPARATE_PIN 0x8
#define KV_PIN_COUNT_LOW 0x1
#define KV_PIN_FINAL_TRY 0x2
#define KV_PIN_LOCKED 0x4

/* One question. An otp question keeps the token the module answers for (the first that collects a token);
 * a pkinit question with several identities becomes one question per identity. */
struct kv_question {
    enum kv_question_kind kind;
    char *prompt;        /* password, new-password(-again), text */
    int hidden;          /* text */
    int token;           /* otp: index into the daemon's tokens */
    int flags;           /* otp: KV_OTP_*; pkinit: KV_PIN_* */
    char *vendor;        /* otp, optional */
    char *challenge;     /* otp, optional */
    char *identity;      /* pkinit */
    char *name;          /* raw: the responder question */
};

enum kv_message_type { KV_MESSAGE_QUESTIONS, KV_MESSAGE_INFO, KV_MESSAGE_RESULT };

struct kv_message {
    enum kv_message_type type;
    long id;                                   /* questions */
    size_t count;                              /* questions */
    struct kv_question questions[KV_MAX_QUESTIONS];
    char *text;                                /* info */
    int ok;                                    /* result */
    int verified;                              /* result: the daemon verified the ticket against its keytab */
    char *principal;                           /* result, optional */
    char *error;                               /* result on failure */
    char *detail;                              /* result: the daemon's message, optional */
    unsigned char *ccache;                     /* result: a FILE credential cache, when asked for */
    size_t ccache_length;
};

/* Parses one line from the daemon (without its newline). Returns 0, or -1 with *why naming what was wrong. */
int kv_parse_message(const char *line, size_t length, struct kv_message *message, const char **why);
/* Frees what the message holds, wiping the credential cache. */
void kv_message_free(struct kv_message *message);

/* Who may answer on the socket: root and, when it exists, the daemon's user. */
struct kv_trust {
    uid_t daemon_uid;
    int has_daemon_uid;
};

/* A connection to the daemon with one deadline (CLOCK_MONOTONIC) for everything done on it. */
struct kv_connection {
    int fd;
    struct timespec deadline;
    struct kv_buffer input;
};

/* Checks the socket file and the peer, then connects; 0, or -1 with *why. */
int kv_connect(struct kv_connection *connection, const char *path, const struct kv_trust *trust, int timeout_seconds,
               const char **why);
/* Sends the bytes (MSG_NOSIGNAL), waiting no later than the deadline. */
int kv_send(struct kv_connection *connection, const char *bytes, size_t count, const char **why);
/* Reads one line into *line (NUL-terminated, newline dropped, owned by the connection until the next call). */
int kv_read_line(struct kv_connection *connection, char **line, size_t *length, const char **why);
/* Closes the socket and wipes what was read. */
void kv_close(struct kv_connection *connection);

/* Decodes standard base64 into a new buffer; -1 on anything but base64. */
int kv_base64_decode(const char *text, size_t length, unsigned char **bytes, size_t *count);

/* The default principal of a FILE credential cache (version 4), as name@REALM; NULL when malformed. */
char *kv_ccache_principal(const unsigned char *bytes, size_t count);

#endif
