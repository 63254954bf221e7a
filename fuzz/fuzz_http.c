/*
 * fuzz_http: arbitrary bytes as the input of one HTTP connection (no socket: c->worker is
 * NULL, so answers land in c->out), cut into reads where the first byte says, then a state
 * change pushed to any EventSource stream the input opened.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jmap/http_api.h"
#include "jmap/jmap.h"
#include "net/conn.h"
#include "proto/http.h"
#include "proto/proto.h"

static bool fake_auth(const char *user, const char *secret, struct gh_principal *who)
{
    memset(who, 0, sizeof *who);
    if (strcmp(secret, "good"))
        return false;
    snprintf(who->username, sizeof who->username, "admin");
    who->admin = true;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gh_api_init(&(struct gh_api_hooks){
        .authenticate = fake_auth, .schema = json_object, .status = json_object});
    gh_http_set_handler(&gh_api_http);
    if (size < 1)
        return 0;
    size_t cut = data[0] ? data[0] : 1; /* bytes per read */
    data++;
    size--;

    struct gh_conn *c = calloc(1, sizeof *c);
    if (!c)
        return 0;
    c->proto = &gh_proto_http;
    c->phase = GH_PHASE_PROTOCOL;
    memcpy(c->peer_text, "127.0.0.1", 10);
    gh_proto_http.open(c);
    for (size_t off = 0; off < size && !c->closed && c->phase != GH_PHASE_CLOSING; off += cut) {
        size_t n = size - off < cut ? size - off : cut;
        gh_buf_append(&c->in, data + off, n);
        gh_proto_http.input(c);
        if (gh_buf_len(&c->out) > (1u << 20))
            gh_buf_clear(&c->out); /* bound memory; the answers are not checked here */
    }
    gh_jmap_state_changed("x:NetworkListener", "F1");
    gh_jmap_state_changed("x:NetworkListener", "F2");
    gh_proto_http.release(c);
    gh_buf_free(&c->in);
    gh_buf_free(&c->out);
    free(c);
    return 0;
}
