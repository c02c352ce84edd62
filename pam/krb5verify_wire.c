/* pam_krb5verify: socket, JSON lines and reply parsing (see krb5verify_wire.h). */
#define _GNU_SOURCE
#include "krb5verify_wire.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <json-c/printbuf.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* MARK: buffers */

static int kv_buffer_reserve(struct kv_buffer *buffer, size_t more) {
    if (more > SIZE_MAX / 2 - buffer->length) return -1;
    if (buffer->length + more + 1 <= buffer->capacity) return 0;
    size_t capacity = buffer->capacity ? buffer->capacity : 256;
    while (capacity < buffer->length + more + 1) capacity *= 2;
    char *data = malloc(capacity);
    if (data == NULL) return -1;
    if (buffer->data != NULL) {
        memcpy(data, buffer->data, buffer->length);
        explicit_bzero(buffer->data, buffer->capacity);
        free(buffer->data);
    }
    buffer->data = data;
    buffer->capacity = capacity;
    buffer->data[buffer->length] = '\0';
    return 0;
}

int kv_buffer_append(struct kv_buffer *buffer, const void *bytes, size_t count) {
    if (kv_buffer_reserve(buffer, count) != 0) return -1;
    memcpy(buffer->data + buffer->length, bytes, count);
    buffer->length += count;
    buffer->data[buffer->length] = '\0';
    return 0;
}

int kv_buffer_append_text(struct kv_buffer *buffer, const char *text) {
    return kv_buffer_append(buffer, text, strlen(text));
}

int kv_buffer_append_json_string(struct kv_buffer *buffer, const char *text) {
    static const char hex[] = "0123456789abcdef";
    if (kv_buffer_append(buffer, "\"", 1) != 0) return -1;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        char escaped[7];
        size_t count = 2;
        escaped[0] = '\\';
        switch (*p) {
        case '"': escaped[1] = '"'; break;
        case '\\': escaped[1] = '\\'; break;
        case '\n': escaped[1] = 'n'; break;
        case '\r': escaped[1] = 'r'; break;
        case '\t': escaped[1] = 't'; break;
        default:
            if (*p < 0x20) {
                memcpy(escaped + 1, "u00", 3);
                escaped[4] = hex[*p >> 4];
                escaped[5] = hex[*p & 0xf];
                count = 6;
            } else {
                escaped[0] = (char)*p;
                count = 1;
            }
        }
        int failed = kv_buffer_append(buffer, escaped, count);
        explicit_bzero(escaped, sizeof escaped);
        if (failed) return -1;
    }
    return kv_buffer_append(buffer, "\"", 1);
}

int kv_buffer_append_member(struct kv_buffer *buffer, int first, const char *key, const char *value) {
    if (!first && kv_buffer_append(buffer, ",", 1) != 0) return -1;
    if (kv_buffer_append_json_string(buffer, key) != 0 || kv_buffer_append(buffer, ":", 1) != 0) return -1;
    return kv_buffer_append_json_string(buffer, value);
}

void kv_buffer_wipe(struct kv_buffer *buffer) {
    if (buffer->data != NULL) {
        explicit_bzero(buffer->data, buffer->capacity);
        free(buffer->data);
    }
    buffer->data = NULL;
    buffer->length = buffer->capacity = 0;
}

/* MARK: replies */

static char *copy_string(struct json_object *object, const char *key) {
    struct json_object *member;
    if (!json_object_object_get_ex(object, key, &member) || !json_object_is_type(member, json_type_string)) return NULL;
    return strdup(json_object_get_string(member));
}

/* A member that must be a string when present: 0 absent or null, 1 present, -1 of another type. */
static int optional_string(struct json_object *object, const char *key, char **out) {
    struct json_object *member;
    *out = NULL;
    if (!json_object_object_get_ex(object, key, &member) || member == NULL) return 0;
    if (!json_object_is_type(member, json_type_string)) return -1;
    *out = strdup(json_object_get_string(member));
    return *out == NULL ? -1 : 1;
}

static int flag_bits(struct json_object *object, const char *const names[], const int bits[], size_t count) {
    struct json_object *flags;
    int result = 0;
    if (!json_object_object_get_ex(object, "flags", &flags) || !json_object_is_type(flags, json_type_array)) return 0;
    size_t length = json_object_array_length(flags);
    for (size_t i = 0; i < length; i++) {
        struct json_object *item = json_object_array_get_idx(flags, i);
        if (!json_object_is_type(item, json_type_string)) continue;
        for (size_t n = 0; n < count; n++)
            if (strcmp(json_object_get_string(item), names[n]) == 0) result |= bits[n];
    }
    return result;
}

static const char *const otp_flag_names[] = {"collect-token", "collect-pin", "next-otp", "separate-pin"};
static const int otp_flag_bits[] = {KV_OTP_COLLECT_TOKEN, KV_OTP_COLLECT_PIN, KV_OTP_NEXT_OTP, KV_OTP_SEPARATE_PIN};
static const char *const pin_flag_names[] = {"pin-count-low", "pin-final-try", "pin-locked"};
static const int pin_flag_bits[] = {KV_PIN_COUNT_LOW, KV_PIN_FINAL_TRY, KV_PIN_LOCKED};

static int parse_question(struct json_object *item, struct kv_message *message, const char **why) {
    if (!json_object_is_type(item, json_type_object)) return *why = "a question is not an object", -1;
    char *kind = copy_string(item, "kind");
    if (kind == NULL) return *why = "a question has no \"kind\"", -1;
    int status = 0;
    struct kv_question *question = &message->questions[message->count];
    memset(question, 0, sizeof *question);
    if (strcmp(kind, "otp") == 0) {
        struct json_object *tokens;
        if (!json_object_object_get_ex(item, "tokens", &tokens) || !json_object_is_type(tokens, json_type_array)
            || json_object_array_length(tokens) == 0) {
            *why = "an otp question without tokens";
            status = -1;
        } else {
            /* The first token that collects a code; the first token when none says so. */
            size_t chosen = 0, length = json_object_array_length(tokens);
            for (size_t i = 0; i < length; i++) {
                struct json_object *token = json_object_array_get_idx(tokens, i);
                if (json_object_is_type(token, json_type_object)
                    && flag_bits(token, otp_flag_names, otp_flag_bits, 4) & KV_OTP_COLLECT_TOKEN) {
                    chosen = i;
                    break;
                }
            }
            struct json_object *token = json_object_array_get_idx(tokens, chosen);
            if (!json_object_is_type(token, json_type_object)) {
                *why = "an otp token is not an object";
                status = -1;
            } else {
                question->kind = KV_QUESTION_OTP;
                question->token = (int)chosen;
                question->flags = flag_bits(token, otp_flag_names, otp_flag_bits, 4);
                if (optional_string(token, "vendor", &question->vendor) < 0 || optional_string(token, "challenge", &question->challenge) < 0) {
                    *why = "an otp token's vendor or challenge is not a string";
                    status = -1;
                }
                message->count++;
            }
        }
    } else if (strcmp(kind, "pkinit") == 0) {
        struct json_object *identities;
        if (!json_object_object_get_ex(item, "identities", &identities) || !json_object_is_type(identities, json_type_array)) {
            *why = "a pkinit question without identities";
            status = -1;
        } else {
            size_t length = json_object_array_length(identities);
            for (size_t i = 0; i < length && status == 0; i++) {
                struct json_object *identity = json_object_array_get_idx(identities, i);
                if (message->count >= KV_MAX_QUESTIONS) {
                    *why = "too many questions";
                    status = -1;
                    break;
                }
                question = &message->questions[message->count];
                memset(question, 0, sizeof *question);
                question->kind = KV_QUESTION_PKINIT;
                if (!json_object_is_type(identity, json_type_object) || (question->identity = copy_string(identity, "identity")) == NULL) {
                    *why = "a pkinit identity without \"identity\"";
                    status = -1;
                    break;
                }
                question->flags = flag_bits(identity, pin_flag_names, pin_flag_bits, 3);
                message->count++;
            }
        }
    } else {
        static const struct { const char *name; enum kv_question_kind kind; } prompted[] = {
            {"password", KV_QUESTION_PASSWORD}, {"new-password", KV_QUESTION_NEW_PASSWORD},
            {"new-password-again", KV_QUESTION_NEW_PASSWORD_AGAIN}, {"text", KV_QUESTION_TEXT}, {"raw", KV_QUESTION_RAW},
        };
        size_t n = 0;
        while (n < sizeof prompted / sizeof prompted[0] && strcmp(kind, prompted[n].name) != 0) n++;
        if (n == sizeof prompted / sizeof prompted[0]) {
            *why = "a question of an unknown kind";
            status = -1;
        } else {
            question->kind = prompted[n].kind;
            question->hidden = 1;
            struct json_object *hidden;
            if (json_object_object_get_ex(item, "hidden", &hidden) && json_object_is_type(hidden, json_type_boolean))
                question->hidden = json_object_get_boolean(hidden);
            if (optional_string(item, "prompt", &question->prompt) < 0) {
                *why = "a question's prompt is not a string";
                status = -1;
            } else if (question->kind == KV_QUESTION_RAW && (question->name = copy_string(item, "question")) == NULL) {
                *why = "a raw question without \"question\"";
                status = -1;
            }
            message->count++;
        }
    }
    free(kind);
    return status;
}

/* Wipes a string json-c holds before the object is released (the credential cache's base64). */
static void wipe_json_string(struct json_object *object) {
    if (object != NULL && json_object_is_type(object, json_type_string))
        explicit_bzero((char *)json_object_get_string(object), (size_t)json_object_get_string_len(object));
}

int kv_parse_message(const char *line, size_t length, struct kv_message *message, const char **why) {
    memset(message, 0, sizeof *message);
    if (length > KV_MAX_LINE || length > INT32_MAX) return *why = "line too long", -1;
    struct json_tokener *tokener = json_tokener_new_ex(16);
    if (tokener == NULL) return *why = "out of memory", -1;
    json_tokener_set_flags(tokener, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *root = json_tokener_parse_ex(tokener, line, (int)length);
    int complete = root != NULL && json_tokener_get_error(tokener) == json_tokener_success
        && json_tokener_get_parse_end(tokener) == length;
    /* json-c's token buffer held the last string it read; the reply may carry a credential cache. */
    if (tokener->pb != NULL && tokener->pb->buf != NULL) explicit_bzero(tokener->pb->buf, (size_t)tokener->pb->size);
    json_tokener_free(tokener);
    if (!complete) {
        json_object_put(root);
        return *why = "not one JSON value", -1;
    }
    int status = 0;
    char *type = NULL;
    struct json_object *ccache = NULL;
    if (!json_object_is_type(root, json_type_object) || (type = copy_string(root, "type")) == NULL) {
        *why = "not an object with a \"type\"";
        status = -1;
    } else if (strcmp(type, "questions") == 0) {
        struct json_object *id, *questions;
        message->type = KV_MESSAGE_QUESTIONS;
        if (!json_object_object_get_ex(root, "id", &id) || !json_object_is_type(id, json_type_int)
            || !json_object_object_get_ex(root, "questions", &questions) || !json_object_is_type(questions, json_type_array)) {
            *why = "questions without an integer \"id\" or a \"questions\" array";
            status = -1;
        } else {
            message->id = (long)json_object_get_int64(id);
            size_t count = json_object_array_length(questions);
            if (count == 0) {
                *why = "a round of no questions";
                status = -1;
            }
            for (size_t i = 0; i < count && status == 0; i++) {
                if (message->count >= KV_MAX_QUESTIONS) {
                    *why = "too many questions";
                    status = -1;
                } else {
                    status = parse_question(json_object_array_get_idx(questions, i), message, why);
                }
            }
        }
    } else if (strcmp(type, "info") == 0) {
        message->type = KV_MESSAGE_INFO;
        if ((message->text = copy_string(root, "message")) == NULL) {
            *why = "info without a \"message\"";
            status = -1;
        }
    } else if (strcmp(type, "result") == 0) {
        struct json_object *ok;
        message->type = KV_MESSAGE_RESULT;
        if (!json_object_object_get_ex(root, "ok", &ok) || !json_object_is_type(ok, json_type_boolean)) {
            *why = "a result without a boolean \"ok\"";
            status = -1;
        } else {
            message->ok = json_object_get_boolean(ok);
            struct json_object *verified;
            message->verified = json_object_object_get_ex(root, "verified", &verified) && json_object_is_type(verified, json_type_boolean)
                && json_object_get_boolean(verified);
            if (optional_string(root, "principal", &message->principal) < 0 || optional_string(root, "error", &message->error) < 0
                || optional_string(root, "message", &message->detail) < 0) {
                *why = "a result member is not a string";
                status = -1;
            } else if (message->ok == (message->error != NULL)) {
                *why = "\"ok\" and \"error\" disagree";
                status = -1;
            } else if (json_object_object_get_ex(root, "ccache", &ccache)) {
                if (!json_object_is_type(ccache, json_type_string)
                    || kv_base64_decode(json_object_get_string(ccache), (size_t)json_object_get_string_len(ccache),
                                        &message->ccache, &message->ccache_length) != 0) {
                    *why = "\"ccache\" is not base64";
                    status = -1;
                }
            }
        }
    } else {
        *why = "a message of an unknown type";
        status = -1;
    }
    wipe_json_string(ccache);
    free(type);
    json_object_put(root);
    if (status != 0) kv_message_free(message);
    return status;
}

void kv_message_free(struct kv_message *message) {
    for (size_t i = 0; i < message->count; i++) {
        struct kv_question *question = &message->questions[i];
        free(question->prompt);
        free(question->vendor);
        free(question->challenge);
        free(question->identity);
        free(question->name);
    }
    free(message->text);
    free(message->principal);
    free(message->error);
    free(message->detail);
    if (message->ccache != NULL) {
        explicit_bzero(message->ccache, message->ccache_length);
        free(message->ccache);
    }
    memset(message, 0, sizeof *message);
}

int kv_base64_decode(const char *text, size_t length, unsigned char **bytes, size_t *count) {
    *bytes = NULL;
    *count = 0;
    if (length % 4 != 0) return -1;
    unsigned char *out = malloc(length / 4 * 3 + 1);
    if (out == NULL) return -1;
    size_t written = 0;
    for (size_t i = 0; i < length; i += 4) {
        uint32_t value = 0;
        int padding = 0;
        for (size_t j = 0; j < 4; j++) {
            char c = text[i + j];
            int digit;
            if (c >= 'A' && c <= 'Z') digit = c - 'A';
            else if (c >= 'a' && c <= 'z') digit = c - 'a' + 26;
            else if (c >= '0' && c <= '9') digit = c - '0' + 52;
            else if (c == '+') digit = 62;
            else if (c == '/') digit = 63;
            else if (c == '=' && i + 4 == length && j >= 2 && (j == 3 || text[i + 3] == '=')) { digit = 0; padding++; }
            else { explicit_bzero(out, length / 4 * 3 + 1); free(out); return -1; }
            if (padding && c != '=') { explicit_bzero(out, length / 4 * 3 + 1); free(out); return -1; }
            value = value << 6 | (uint32_t)digit;
        }
        out[written++] = (unsigned char)(value >> 16);
        if (padding < 2) out[written++] = (unsigned char)(value >> 8);
        if (padding < 1) out[written++] = (unsigned char)value;
        value = 0;
    }
    *bytes = out;
    *count = written;
    return 0;
}

/* MARK: credential caches */

static int read_u32(const unsigned char *bytes, size_t count, size_t *offset, uint32_t *value) {
    if (count - *offset < 4 || *offset > count) return -1;
    const unsigned char *p = bytes + *offset;
    *value = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    *offset += 4;
    return 0;
}

char *kv_ccache_principal(const unsigned char *bytes, size_t count) {
    if (count < 4 || bytes[0] != 5 || bytes[1] != 4) return NULL;
    size_t offset = 4 + ((size_t)bytes[2] << 8 | bytes[3]);
    uint32_t type, components, realm_length;
    if (offset > count || read_u32(bytes, count, &offset, &type) || read_u32(bytes, count, &offset, &components)
        || components > 64 || read_u32(bytes, count, &offset, &realm_length) || realm_length > count - offset) return NULL;
    const unsigned char *realm = bytes + offset;
    offset += realm_length;
    struct kv_buffer name = {0};
    for (uint32_t i = 0; i < components; i++) {
        uint32_t length;
        if (read_u32(bytes, count, &offset, &length) || length > count - offset
            || (i > 0 && kv_buffer_append(&name, "/", 1)) || kv_buffer_append(&name, bytes + offset, length)) {
            kv_buffer_wipe(&name);
            return NULL;
        }
        offset += length;
    }
    if (kv_buffer_append(&name, "@", 1) || kv_buffer_append(&name, realm, realm_length) || memchr(name.data, '\0', name.length)) {
        kv_buffer_wipe(&name);
        return NULL;
    }
    return name.data;
}

/* MARK: the socket */

static int remaining_ms(const struct timespec *deadline) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ms = (long long)(deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
    if (ms <= 0) return 0;
    return ms > 86400000 ? 86400000 : (int)ms;
}

static int wait_for(struct kv_connection *connection, short events, const char **why) {
    for (;;) {
        int ms = remaining_ms(&connection->deadline);
        if (ms == 0) return *why = "the daemon did not answer in time", -1;
        struct pollfd poller = {.fd = connection->fd, .events = events};
        int ready = poll(&poller, 1, ms);
        if (ready > 0) {
            if (poller.revents & POLLNVAL) return *why = "the socket went away", -1;
            return 0;
        }
        if (ready < 0 && errno != EINTR) return *why = "poll failed", -1;
    }
}

static int trusted_uid(const struct kv_trust *trust, uid_t uid) {
    return uid == 0 || (trust->has_daemon_uid && uid == trust->daemon_uid);
}

int kv_connect(struct kv_connection *connection, const char *path, const struct kv_trust *trust, int timeout_seconds,
               const char **why) {
    memset(connection, 0, sizeof *connection);
    connection->fd = -1;
    clock_gettime(CLOCK_MONOTONIC, &connection->deadline);
    connection->deadline.tv_sec += timeout_seconds;

    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path) return *why = "socket path too long", -1;
    strcpy(address.sun_path, path);
    /* The file: a socket, owned by root or the daemon's user, that others cannot write to. */
    struct stat info;
    if (lstat(path, &info) != 0) return *why = "the daemon's socket does not exist", -1;
    if (!S_ISSOCK(info.st_mode)) return *why = "the daemon's socket is not a socket", -1;
    if (!trusted_uid(trust, info.st_uid)) return *why = "the daemon's socket is owned by an untrusted user", -1;
    if (info.st_mode & S_IWOTH) return *why = "the daemon's socket is writable by everyone", -1;

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return *why = "socket failed", -1;
    /* Kept off standard input, output and error, which a daemon may have closed. */
    if (fd < 3) {
        int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        close(fd);
        if (moved < 0) return *why = "fcntl failed", -1;
        fd = moved;
    }
    connection->fd = fd;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        if (errno != EAGAIN && errno != EINPROGRESS) {
            kv_close(connection);
            return *why = "the daemon is not running", -1;
        }
        int error = 0;
        socklen_t length = sizeof error;
        if (wait_for(connection, POLLOUT, why) != 0) {
            kv_close(connection);
            return -1;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0) {
            kv_close(connection);
            return *why = "the daemon is not running", -1;
        }
    }
    /* The process that answers: the same trust as the file, whoever bound the path. */
    struct ucred peer;
    socklen_t length = sizeof peer;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 || length != sizeof peer || !trusted_uid(trust, peer.uid)) {
        kv_close(connection);
        return *why = "the process behind the socket runs as an untrusted user", -1;
    }
    return 0;
}

int kv_send(struct kv_connection *connection, const char *bytes, size_t count, const char **why) {
    size_t sent = 0;
    while (sent < count) {
        ssize_t n = send(connection->fd, bytes + sent, count - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_for(connection, POLLOUT, why) != 0) return -1;
        } else {
            return *why = "the daemon closed the connection", -1;
        }
    }
    return 0;
}

int kv_read_line(struct kv_connection *connection, char **line, size_t *length, const char **why) {
    struct kv_buffer *input = &connection->input;
    /* Drop the line handed out last time (it ends at the first NUL we wrote over its newline). */
    if (input->data != NULL && input->length > 0) {
        char *end = memchr(input->data, '\0', input->length);
        if (end != NULL && (size_t)(end - input->data) < input->length) {
            size_t used = (size_t)(end - input->data) + 1;
            explicit_bzero(input->data, used);
            memmove(input->data, input->data + used, input->length - used);
            input->length -= used;
            explicit_bzero(input->data + input->length, used);
        }
    }
    for (;;) {
        char *newline = input->data ? memchr(input->data, '\n', input->length) : NULL;
        if (newline != NULL) {
            *newline = '\0';
            *line = input->data;
            *length = (size_t)(newline - input->data);
            return 0;
        }
        if (input->length > KV_MAX_LINE) return *why = "the daemon sent a line longer than 64 KiB", -1;
        char chunk[4096];
        ssize_t n = recv(connection->fd, chunk, sizeof chunk, 0);
        if (n > 0) {
            int failed = kv_buffer_append(input, chunk, (size_t)n);
            explicit_bzero(chunk, sizeof chunk);
            if (failed) return *why = "out of memory", -1;
            if (memchr(input->data, '\0', input->length)) return *why = "the daemon sent a NUL byte", -1;
        } else if (n == 0) {
            return *why = "the daemon closed the connection", -1;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (wait_for(connection, POLLIN, why) != 0) return -1;
        } else {
            return *why = "recv failed", -1;
        }
    }
}

void kv_close(struct kv_connection *connection) {
    if (connection->fd >= 0) close(connection->fd);
    connection->fd = -1;
    kv_buffer_wipe(&connection->input);
}
