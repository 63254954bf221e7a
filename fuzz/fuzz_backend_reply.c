/*
 * fuzz_backend_reply: libFuzzer target for what the front door reads from a backend before
 * relaying (greetings, STARTTLS and hello replies). Beyond memory safety: a reply ends at a
 * line end inside the input, a shorter read never finds a different end, and the verdict
 * on a reply reads nothing past its NUL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/backend.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    /* the first byte picks the protocol; the rest is what the backend sent */
    static const enum gh_protocol protos[] = {GH_PROTO_SMTP, GH_PROTO_LMTP, GH_PROTO_IMAP,
                                              GH_PROTO_POP3, GH_PROTO_MANAGESIEVE};
    enum gh_protocol p = protos[data[0] % 5];
    size -= 1;
    char *buf = malloc(size + 1); /* exact size (+ NUL), so ASan sees any overread */
    memcpy(buf, data + 1, size);
    size_t len = gh_backend_reply_length(p, buf, size);
    check(len <= size);
    if (len) {
        check(buf[len - 1] == '\n');
        for (size_t cut = 0; cut < len; cut++) /* shorter reads: no end, or none earlier */
            check(gh_backend_reply_length(p, buf, cut) == 0);
        check(gh_backend_reply_length(p, buf, len) == len);
    }
    buf[size] = '\0';
    (void)gh_backend_reply_positive(p, buf);
    free(buf);
    return 0;
}
