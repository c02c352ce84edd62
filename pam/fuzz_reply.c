/* libFuzzer target: every byte string as one line from the daemon, through the module's reply parser and the
 * credential-cache reader it hands a result's cache to (`make pam-fuzz`). */
#include "krb5verify_wire.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct kv_message message;
    const char *why;
    if (kv_parse_message((const char *)data, size, &message, &why) == 0) {
        if (message.ccache != NULL) free(kv_ccache_principal(message.ccache, message.ccache_length));
        kv_message_free(&message);
    }
    free(kv_ccache_principal(data, size));
    return 0;
}
