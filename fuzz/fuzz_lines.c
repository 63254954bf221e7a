/*
 * fuzz_lines: arbitrary bytes through each mail front door (SMTP, LMTP, IMAP, POP3,
 * ManageSieve) on a hand-built connection. The first byte picks the protocol and whether
 * STARTTLS is available. Besides memory errors it checks one property: the replies do not
 * depend on how the input is cut into reads (all at once, or one byte at a time).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/conn.h"
#include "proto/proto.h"

static const struct gh_proto *const protos[] = {
    &gh_proto_smtp, &gh_proto_lmtp, &gh_proto_imap, &gh_proto_pop3, &gh_proto_managesieve,
};

static void conn_init(struct gh_conn *c, const struct gh_proto *p, uint8_t sel)
{
    memset(c, 0, sizeof *c);
    c->conf = gh_listener_conf_new(1, 0);
    c->conf->use_tls = sel & 0x08;
    c->conf->tls_timeout_ms = 60000;
    c->tls_active = sel & 0x10; /* as after a PROXY v2 SSL TLV */
    c->proto = p;
    c->phase = GH_PHASE_PROTOCOL;
    memcpy(c->peer_text, "192.0.2.7", 10);
    p->open(c);
}

static void conn_fini(struct gh_conn *c)
{
    c->proto->release(c);
    gh_listener_conf_unref(c->conf);
    gh_buf_free(&c->in);
    gh_buf_free(&c->out);
}

/* Feeds data in reads of `step` bytes (0: all at once) while the protocol owns the input,
 * as the engine does. With `upgrade`, a STARTTLS handshake "succeeds" and feeding goes on. */
static void feed(struct gh_conn *c, const uint8_t *data, size_t size, size_t step, bool upgrade)
{
    size_t i = 0;
    while (i < size) {
        if (c->phase == GH_PHASE_HANDSHAKE && upgrade) {
            c->phase = GH_PHASE_PROTOCOL;
            c->tls_active = c->tls_done_once = true;
            c->proto->tls_ready(c);
        }
        if (c->phase != GH_PHASE_PROTOCOL)
            return;
        size_t n = step && size - i > step ? step : size - i;
        gh_buf_append(&c->in, data + i, n);
        i += n;
        c->proto->input(c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const struct gh_proto *p = protos[(sel & 0x07) % (sizeof protos / sizeof *protos)];
    data++;
    size--;

    struct gh_conn whole, bytes, upgraded;
    conn_init(&whole, p, sel);
    conn_init(&bytes, p, sel);
    feed(&whole, data, size, 0, false);
    feed(&bytes, data, size, 1, false);
    if (gh_buf_len(&whole.out) != gh_buf_len(&bytes.out) ||
        memcmp(gh_buf_head(&whole.out), gh_buf_head(&bytes.out), gh_buf_len(&whole.out)) != 0)
        abort();
    if (whole.phase != bytes.phase)
        abort();
    conn_fini(&whole);
    conn_fini(&bytes);

    /* Odd-sized reads through STARTTLS upgrades, goodbyes included. */
    conn_init(&upgraded, p, sel);
    feed(&upgraded, data, size, 1 + (sel >> 5), true);
    if (upgraded.phase == GH_PHASE_PROTOCOL)
        (sel & 0x20 ? p->idle : p->shutdown)(&upgraded);
    conn_fini(&upgraded);
    return 0;
}
