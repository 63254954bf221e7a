/*
 * Unit tests for the PROXY protocol parser and writers: every v1 grammar rule, every v2
 * field and TLV, and for each the malformed and truncated forms, including that a valid
 * header is NEED_MORE at every shorter length and never claims a byte after its end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "net/proxy_protocol.h"

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

struct parsed {
    enum gh_proxy_result r;
    size_t need;
    struct gh_proxy_header h;
    gh_err err;
};

static struct parsed parse(const void *buf, size_t len)
{
    struct parsed p;
    memset(&p, 0, sizeof p);
    p.r = gh_proxy_parse(buf, len, &p.need, &p.h, &p.err);
    return p;
}

static struct parsed parse_str(const char *s)
{
    return parse(s, strlen(s));
}

/* Every proper prefix of a valid header must ask for more, and for no more than the
 * header holds, so a caller that waits for *need bytes never waits past the header. */
static void assert_prefixes_need_more(const uint8_t *buf, size_t total)
{
    for (size_t k = 0; k < total; k++) {
        struct parsed p = parse(buf, k);
        if (p.r != GH_PROXY_NEED_MORE)
            fail_msg("prefix of %zu/%zu bytes: result %d (%s)", k, total, p.r, p.err.msg);
        assert_true(p.need > k);
        assert_true(p.need <= total);
    }
}

static void assert_invalid(const void *buf, size_t len, const char *why)
{
    struct parsed p = parse(buf, len);
    if (p.r != GH_PROXY_INVALID)
        fail_msg("expected INVALID (%s), got %d", why, p.r);
    if (!strstr(p.err.msg, why))
        fail_msg("error \"%s\" does not say \"%s\"", p.err.msg, why);
}

static void assert_invalid_str(const char *s, const char *why)
{
    assert_invalid(s, strlen(s), why);
}

static void assert_addr(const struct gh_sockaddr *a, const char *text)
{
    char got[GH_ADDR_TEXT];
    gh_sockaddr_format(a, got);
    assert_string_equal(got, text);
}

/* ---- v1 ---- */

static void v1_tcp4(void **state)
{
    const char *hdr = "PROXY TCP4 203.0.113.7 192.0.2.1 51234 25\r\n";
    char buf[128];
    snprintf(buf, sizeof buf, "%sEHLO client\r\n", hdr);
    struct parsed p = parse_str(buf);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.need, strlen(hdr)); /* the EHLO after it is not claimed */
    assert_int_equal(p.h.version, 1);
    assert_false(p.h.local);
    assert_false(p.h.ssl);
    assert_addr(&p.h.src, "203.0.113.7:51234");
    assert_addr(&p.h.dst, "192.0.2.1:25");
    assert_prefixes_need_more((const uint8_t *)hdr, strlen(hdr));
}

static void v1_tcp6(void **state)
{
    const char *hdr = "PROXY TCP6 2001:db8::7 2001:DB8::1 0 65535\r\n";
    struct parsed p = parse_str(hdr);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.need, strlen(hdr));
    assert_addr(&p.h.src, "[2001:db8::7]:0");
    assert_addr(&p.h.dst, "[2001:db8::1]:65535");
    assert_prefixes_need_more((const uint8_t *)hdr, strlen(hdr));
}

static void v1_tcp6_longest(void **state)
{
    /* The longest TCP6 line the spec allows: 104 bytes. */
    const char *hdr = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                      "FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF 65535 65535\r\n";
    assert_int_equal(strlen(hdr), 104);
    struct parsed p = parse_str(hdr);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.need, 104);
}

static void v1_tcp6_v4_mapped(void **state)
{
    struct parsed p = parse_str("PROXY TCP6 ::ffff:203.0.113.7 ::ffff:127.0.0.1 1000 25\r\n");
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.h.src.u.sa.sa_family, AF_INET);
    assert_addr(&p.h.src, "203.0.113.7:1000");
    assert_addr(&p.h.dst, "127.0.0.1:25");
}

static void v1_unknown(void **state)
{
    struct parsed p = parse_str("PROXY UNKNOWN\r\nEHLO");
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.need, 15);
    assert_true(p.h.local);
    assert_int_equal(p.h.version, 1);
    assert_prefixes_need_more((const uint8_t *)"PROXY UNKNOWN\r\n", 15);

    /* Whatever follows UNKNOWN up to the CRLF is ignored. */
    const char *hdr = "PROXY UNKNOWN ffff:f::1 not-an-address 99999 x\r\n";
    p = parse_str(hdr);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_true(p.h.local);
    assert_int_equal(p.need, strlen(hdr));
}

static void v1_length_limit(void **state)
{
    char line[200];
    /* 107 bytes with the CRLF: accepted. */
    memset(line, 0, sizeof line);
    strcpy(line, "PROXY UNKNOWN ");
    memset(line + 14, 'a', 107 - 2 - 14);
    strcat(line, "\r\n");
    assert_int_equal(strlen(line), 107);
    struct parsed p = parse_str(line);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.need, 107);
    assert_prefixes_need_more((const uint8_t *)line, 107);

    /* 108: refused, and as soon as 107 bytes without a CRLF are in. */
    memset(line, 0, sizeof line);
    strcpy(line, "PROXY UNKNOWN ");
    memset(line + 14, 'a', 108 - 2 - 14);
    strcat(line, "\r\n");
    assert_invalid(line, 107, "no CRLF within 107 bytes");
    assert_invalid_str(line, "no CRLF within 107 bytes");
    assert_int_equal(parse(line, 106).r, GH_PROXY_NEED_MORE);
}

static void v1_grammar_errors(void **state)
{
    static const struct {
        const char *line, *why;
    } cases[] = {
        {"PROXY\r\n", "single space after PROXY"},
        {"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"},
        {"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"},
        {"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"},
        {"PROXY UNKNOWNX\r\n", "unknown protocol"},
        {"PROXY TCP4\r\n", "source address is missing"},
        {"PROXY TCP4 1.2.3.4\r\n", "destination address is missing"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8\r\n", "source port is missing"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "destination port is missing"},
        {"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "destination address is missing"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "unexpected data after the destination port"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "unexpected data after the destination port"},
        {"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "destination address is not an IPv4 address"},
        {"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "source address is not an IPv6 address"},
        {"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "destination address is not an IPv6 address"},
        {"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "source address is not an IPv6 address"},
        {"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "source address is not an IPv6 address"},
        {"PROXY TCP6 12345::1 ::1 1 2\r\n", "source address is not an IPv6 address"},
        {"PROXY TCP6 1::2::3 ::1 1 2\r\n", "source address is not an IPv6 address"},
        {"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 1.2.3.1000 5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 localhost 5.6.7.8 1 2\r\n", "source address is not an IPv4 address"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "source port out of range"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "destination port out of range"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n", "source port out of range"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", "source port out of range"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n", "source port has a leading zero"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", "source port has a leading zero"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "source port is not a number"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n", "destination port is not a number"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", "destination port is not a number"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "line feed without carriage return"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "carriage return without line feed"},
        {"PROXY UNKNOWN\n", "line feed without carriage return"},
        {"PROXX TCP4", "no PROXY protocol header"},
        {"EHLO client.example\r\n", "no PROXY protocol header"},
        {"GET / HTTP/1.1\r\n", "no PROXY protocol header"},
        {"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"},
        {" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_invalid_str(cases[i].line, cases[i].why);
}

static void v1_nul_byte(void **state)
{
    const char line[] = "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n";
    assert_invalid(line, sizeof line - 1, "source address is not an IPv4 address");
}

static void v1_rejects_early(void **state)
{
    /* A prefix that can no longer become a header is refused before the CRLF arrives. */
    assert_invalid_str("PROXY FOO", "unknown protocol");
    assert_invalid_str("PROXY TCP4 1.2.x", "source address is not an IPv4 address");
    assert_invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 655369", "source port out of range");
    assert_invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 01", "source port has a leading zero");
    assert_invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", "unexpected data after");
    assert_invalid_str("E", "no PROXY protocol header");
    /* ... while what may still be right is not. */
    assert_int_equal(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 0").r, GH_PROXY_NEED_MORE);
    assert_int_equal(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r").r, GH_PROXY_NEED_MORE);
    assert_int_equal(parse_str("PROXY UNKNOWN whatever").r, GH_PROXY_NEED_MORE);
    assert_int_equal(parse_str("PROXY UNK").r, GH_PROXY_NEED_MORE);
    assert_int_equal(parse_str("PROX").r, GH_PROXY_NEED_MORE);
    struct parsed p = parse(NULL, 0);
    assert_int_equal(p.r, GH_PROXY_NEED_MORE);
    assert_true(p.need >= 1 && p.need <= 15);
}

/* ---- v2 ---- */

struct v2 {
    uint8_t b[GH_PROXY_V2_MAX + 64];
    size_t n;
};

static void v2_start(struct v2 *h, uint8_t ver_cmd, uint8_t fam)
{
    memcpy(h->b, sig, 12);
    h->b[12] = ver_cmd;
    h->b[13] = fam;
    h->n = 16;
}

static void v2_put(struct v2 *h, const void *p, size_t n)
{
    memcpy(h->b + h->n, p, n);
    h->n += n;
}

static void v2_tlv(struct v2 *h, uint8_t type, const void *v, size_t n)
{
    uint8_t t[3] = {type, (uint8_t)(n >> 8), (uint8_t)n};
    v2_put(h, t, 3);
    v2_put(h, v, n);
}

/* Sets the length field from what was put after the preamble. */
static void v2_end(struct v2 *h)
{
    size_t body = h->n - 16;
    h->b[14] = (uint8_t)(body >> 8);
    h->b[15] = (uint8_t)body;
}

static void v2_inet(struct v2 *h, const char *src, const char *dst, uint16_t sp, uint16_t dp)
{
    uint8_t a[12];
    inet_pton(AF_INET, src, a);
    inet_pton(AF_INET, dst, a + 4);
    a[8] = (uint8_t)(sp >> 8), a[9] = (uint8_t)sp;
    a[10] = (uint8_t)(dp >> 8), a[11] = (uint8_t)dp;
    v2_put(h, a, 12);
}

static void v2_inet6(struct v2 *h, const char *src, const char *dst, uint16_t sp, uint16_t dp)
{
    uint8_t a[36];
    inet_pton(AF_INET6, src, a);
    inet_pton(AF_INET6, dst, a + 16);
    a[32] = (uint8_t)(sp >> 8), a[33] = (uint8_t)sp;
    a[34] = (uint8_t)(dp >> 8), a[35] = (uint8_t)dp;
    v2_put(h, a, 36);
}

/* Appends a CRC32c TLV and fills it in over the finished header. */
static void v2_crc(struct v2 *h, bool right)
{
    static const uint8_t zero[4];
    v2_tlv(h, 0x03, zero, 4);
    v2_end(h);
    uint32_t crc = gh_proxy_crc32c(0, h->b, h->n) ^ (right ? 0 : 1);
    h->b[h->n - 4] = (uint8_t)(crc >> 24);
    h->b[h->n - 3] = (uint8_t)(crc >> 16);
    h->b[h->n - 2] = (uint8_t)(crc >> 8);
    h->b[h->n - 1] = (uint8_t)crc;
}

static void v2_tcp4(void **state)
{
    struct v2 h;
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 51234, 25);
    v2_end(&h);
    size_t total = h.n;
    v2_put(&h, "EHLO x\r\n", 8);
    struct parsed p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.need, total);
    assert_int_equal(p.h.version, 2);
    assert_false(p.h.local);
    assert_false(p.h.ssl);
    assert_string_equal(p.h.authority, "");
    assert_string_equal(p.h.unique_id, "");
    assert_addr(&p.h.src, "203.0.113.7:51234");
    assert_addr(&p.h.dst, "192.0.2.1:25");
    assert_prefixes_need_more(h.b, total);
    /* Once the preamble is in, need is the whole header. */
    assert_int_equal(parse(h.b, 16).need, total);
    assert_int_equal(parse(h.b, 5).need, 16);
}

static void v2_tcp6(void **state)
{
    struct v2 h;
    v2_start(&h, 0x21, 0x21);
    v2_inet6(&h, "2001:db8::7", "2001:db8::1", 1, 65535);
    v2_end(&h);
    struct parsed p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.need, 16 + 36);
    assert_addr(&p.h.src, "[2001:db8::7]:1");
    assert_addr(&p.h.dst, "[2001:db8::1]:65535");
    assert_prefixes_need_more(h.b, h.n);

    v2_start(&h, 0x21, 0x21);
    v2_inet6(&h, "::ffff:198.51.100.9", "::ffff:127.0.0.1", 4000, 25);
    v2_end(&h);
    p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.h.src.u.sa.sa_family, AF_INET);
    assert_addr(&p.h.src, "198.51.100.9:4000");
}

static void v2_local(void **state)
{
    struct v2 h;
    /* LOCAL discards the block, family included, whatever it holds. */
    v2_start(&h, 0x20, 0xff);
    v2_put(&h, "\x01\x02\x03", 3);
    v2_end(&h);
    struct parsed p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_true(p.h.local);
    assert_int_equal(p.h.version, 2);
    assert_int_equal(p.need, 19);

    v2_start(&h, 0x20, 0x00);
    v2_end(&h);
    p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_true(p.h.local);
    assert_int_equal(p.need, 16);
    assert_prefixes_need_more(h.b, 16);
}

static void v2_other_families_are_local(void **state)
{
    struct v2 h;
    /* UNSPEC: the body's layout is unknown and is skipped. */
    v2_start(&h, 0x21, 0x00);
    v2_put(&h, "\xff\xff\xff", 3);
    v2_end(&h);
    struct parsed p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_true(p.h.local);

    /* UNIX stream: 216 address bytes. */
    uint8_t unix_addrs[216] = {0};
    v2_start(&h, 0x21, 0x31);
    v2_put(&h, unix_addrs, sizeof unix_addrs);
    v2_end(&h);
    p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_true(p.h.local);
    assert_int_equal(p.need, 16 + 216);

    /* TCP4 addresses over UDP: not a TCP client. */
    v2_start(&h, 0x21, 0x12);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_end(&h);
    p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_true(p.h.local);
}

static void v2_preamble_errors(void **state)
{
    struct v2 h;
    v2_start(&h, 0x11, 0x11); /* version 1 in the binary form */
    v2_inet(&h, "1.2.3.4", "5.6.7.8", 1, 2);
    v2_end(&h);
    assert_invalid(h.b, h.n, "version 1 is not supported");
    assert_invalid(h.b, 13, "version 1 is not supported"); /* known at byte 13 */

    h.b[12] = 0x22;
    assert_invalid(h.b, h.n, "unknown command 0x2");
    assert_invalid(h.b, 13, "unknown command");
    h.b[12] = 0x2f;
    assert_invalid(h.b, h.n, "unknown command 0xf");

    h.b[12] = 0x21;
    h.b[13] = 0x41;
    assert_invalid(h.b, h.n, "unknown address family or transport 0x41");
    assert_invalid(h.b, 14, "unknown address family");
    h.b[13] = 0x13;
    assert_invalid(h.b, h.n, "unknown address family or transport 0x13");

    /* Signature wrong in its middle. */
    h.b[13] = 0x11;
    h.b[6] = 0x0B;
    assert_invalid(h.b, h.n, "no PROXY protocol header");
    assert_invalid(h.b, 7, "no PROXY protocol header");
}

static void v2_length_errors(void **state)
{
    struct v2 h;
    v2_start(&h, 0x21, 0x11);
    v2_put(&h, "12345678901", 11); /* one byte short of the TCP4 addresses */
    v2_end(&h);
    assert_invalid(h.b, h.n, "11 address bytes are too few");
    assert_invalid(h.b, 16, "too few"); /* known from the preamble */

    v2_start(&h, 0x21, 0x21);
    v2_inet(&h, "1.2.3.4", "5.6.7.8", 1, 2); /* TCP6 needs 36 */
    v2_end(&h);
    assert_invalid(h.b, h.n, "too few for family 2");

    v2_start(&h, 0x21, 0x31);
    v2_inet(&h, "1.2.3.4", "5.6.7.8", 1, 2); /* UNIX needs 216 */
    v2_end(&h);
    assert_invalid(h.b, h.n, "too few for family 3");

    /* The length bound: refused on the preamble alone, before buffering anything. */
    v2_start(&h, 0x21, 0x11);
    h.b[14] = (uint8_t)((GH_PROXY_V2_MAX - 16 + 1) >> 8);
    h.b[15] = (uint8_t)(GH_PROXY_V2_MAX - 16 + 1);
    assert_invalid(h.b, 16, "is longer than the 4096 accepted");
    h.b[14] = h.b[15] = 0xff;
    assert_invalid(h.b, 16, "65551 bytes");

    /* The largest accepted header: padding in a NOOP TLV. */
    static uint8_t pad[GH_PROXY_V2_MAX];
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "1.2.3.4", "5.6.7.8", 1, 2);
    v2_tlv(&h, 0x04, pad, GH_PROXY_V2_MAX - 16 - 12 - 3);
    v2_end(&h);
    assert_int_equal(h.n, GH_PROXY_V2_MAX);
    struct parsed p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.need, GH_PROXY_V2_MAX);
    assert_int_equal(parse(h.b, h.n - 1).r, GH_PROXY_NEED_MORE);
}

static void v2_tlv_ssl(void **state)
{
    struct v2 h;
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    /* client = SSL | CERT_CONN, verify = 0, sub-TLV version "TLSv1.3" */
    uint8_t ssl[5 + 3 + 7] = {0x03, 0, 0, 0, 0, 0x21, 0, 7};
    memcpy(ssl + 8, "TLSv1.3", 7);
    v2_tlv(&h, 0x20, ssl, sizeof ssl);
    v2_end(&h);
    struct parsed p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_true(p.h.ssl);
    assert_prefixes_need_more(h.b, h.n);

    /* The TLV without the client-SSL bit: the client did not use TLS. */
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x20, "\x02\0\0\0\0", 5);
    v2_end(&h);
    p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_false(p.h.ssl);

    /* Too short for client and verify. */
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x20, "\x01\0\0\0", 4);
    v2_end(&h);
    assert_invalid(h.b, h.n, "SSL TLV of 4 bytes is shorter than 5");

    /* A sub-TLV that claims more than the SSL TLV holds. */
    uint8_t bad[5 + 3 + 2] = {0x01, 0, 0, 0, 0, 0x21, 0, 7, 'T', 'L'};
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x20, bad, sizeof bad);
    v2_end(&h);
    assert_invalid(h.b, h.n, "SSL TLV has a malformed sub-TLV");

    /* Two SSL TLVs. */
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x20, "\x01\0\0\0\0", 5);
    v2_tlv(&h, 0x20, "\x00\0\0\0\0", 5);
    v2_end(&h);
    assert_invalid(h.b, h.n, "TLV 0x20 appears twice");
}

static void v2_tlv_authority_and_unique_id(void **state)
{
    struct v2 h;
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x02, "mail.example.com", 16);
    v2_tlv(&h, 0x05, "\x00\x01\xab\xff", 4);
    v2_tlv(&h, 0x01, "h2", 2);     /* ALPN: skipped */
    v2_tlv(&h, 0x04, "", 0);       /* NOOP: skipped */
    v2_tlv(&h, 0xe0, "custom", 6); /* custom range: skipped */
    v2_end(&h);
    struct parsed p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_string_equal(p.h.authority, "mail.example.com");
    assert_string_equal(p.h.unique_id, "0001abff");

    /* The longest of each. */
    uint8_t big[300];
    memset(big, 'a', sizeof big);
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x02, big, 255);
    v2_tlv(&h, 0x05, big, 128);
    v2_end(&h);
    p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(strlen(p.h.authority), 255);
    assert_int_equal(strlen(p.h.unique_id), 256);

    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x02, big, 256);
    v2_end(&h);
    assert_invalid(h.b, h.n, "authority TLV of 256 bytes is longer than 255");

    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x05, big, 129);
    v2_end(&h);
    assert_invalid(h.b, h.n, "unique ID TLV of 129 bytes is longer than 128");

    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x02, "a\0b", 3);
    v2_end(&h);
    assert_invalid(h.b, h.n, "authority TLV contains control characters");

    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x02, "a\r\nb", 4);
    v2_end(&h);
    assert_invalid(h.b, h.n, "control characters");
}

static void v2_tlv_framing(void **state)
{
    struct v2 h;
    /* Two bytes left over after the addresses: not even a TLV header. */
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_put(&h, "\x04\x00", 2);
    v2_end(&h);
    assert_invalid(h.b, h.n, "TLV at byte 28 is cut short");

    /* A TLV whose length runs past the header's end. */
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_put(&h, "\x04\x00\x05xx", 5);
    v2_end(&h);
    assert_invalid(h.b, h.n, "TLV 0x04 of 5 bytes runs past the header");

    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_put(&h, "\x02\xff\xff", 3);
    v2_end(&h);
    assert_invalid(h.b, h.n, "runs past the header");
}

static void v2_tlv_crc32c(void **state)
{
    struct v2 h;
    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x02, "mx.example", 10);
    v2_crc(&h, true);
    struct parsed p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_string_equal(p.h.authority, "mx.example");

    /* The same header with one address byte changed no longer matches. */
    h.b[16] ^= 1;
    assert_invalid(h.b, h.n, "CRC32c checksum mismatch");
    h.b[16] ^= 1;

    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_crc(&h, false);
    assert_invalid(h.b, h.n, "CRC32c checksum mismatch");

    /* The CRC TLV before another one: the checksum still covers everything. */
    v2_start(&h, 0x21, 0x21);
    v2_inet6(&h, "2001:db8::7", "2001:db8::1", 1, 2);
    static const uint8_t zero[4];
    v2_tlv(&h, 0x03, zero, 4);
    v2_tlv(&h, 0x05, "\x10\x20", 2);
    v2_end(&h);
    uint32_t crc = gh_proxy_crc32c(0, h.b, h.n);
    size_t at = 16 + 36 + 3;
    h.b[at] = (uint8_t)(crc >> 24), h.b[at + 1] = (uint8_t)(crc >> 16);
    h.b[at + 2] = (uint8_t)(crc >> 8), h.b[at + 3] = (uint8_t)crc;
    p = parse(h.b, h.n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_string_equal(p.h.unique_id, "1020");
    h.b[h.n - 1] ^= 0x80;
    assert_invalid(h.b, h.n, "CRC32c checksum mismatch");

    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x03, "abc", 3);
    v2_end(&h);
    assert_invalid(h.b, h.n, "CRC32c TLV of 3 bytes (expected 4)");

    v2_start(&h, 0x21, 0x11);
    v2_inet(&h, "203.0.113.7", "192.0.2.1", 1, 2);
    v2_tlv(&h, 0x03, zero, 4);
    v2_tlv(&h, 0x03, zero, 4);
    v2_end(&h);
    assert_invalid(h.b, h.n, "TLV 0x03 appears twice");
}

static struct parsed parse_final(const void *buf, size_t len)
{
    struct parsed p;
    memset(&p, 0, sizeof p);
    p.r = gh_proxy_parse_final(buf, len, &p.need, &p.h, &p.err);
    return p;
}

/* After the peer's end of stream a prefix can never complete: refused at once, saying how
 * much arrived; whole headers and invalid bytes get the same answer as without the end. */
static void final_refuses_prefixes(void **state)
{
    (void)state;
    uint8_t v2buf[28];
    memcpy(v2buf, sig, sizeof sig);
    const uint8_t rest[16] = {0x21, 0x11, 0x00, 0x0c, 203,  0,    113, 7,
                              127,  0,    0,    1,    0x9c, 0x40, 0,   25};
    memcpy(v2buf + 12, rest, sizeof rest);

    struct parsed p = parse_final(v2buf, 20); /* truncated: 20 of 28 bytes */
    assert_int_equal(p.r, GH_PROXY_INVALID);
    assert_string_equal(p.err.msg, "PROXY v2 header: connection closed after 20 of 28 bytes");
    assert_int_equal(p.h.version, 0);

    p = parse_final(sig, sizeof sig); /* the bare signature */
    assert_int_equal(p.r, GH_PROXY_INVALID);
    assert_non_null(strstr(p.err.msg, "PROXY v2 header: connection closed after 12 of"));
    p = parse_final(sig, 5);
    assert_int_equal(p.r, GH_PROXY_INVALID);

    const char *v1 = "PROXY TCP4 203.0.113.7 12";
    p = parse_final(v1, strlen(v1));
    assert_int_equal(p.r, GH_PROXY_INVALID);
    assert_non_null(strstr(p.err.msg, "PROXY v1 header: connection closed after 25 of at least"));
    p = parse_final("PROX", 4);
    assert_int_equal(p.r, GH_PROXY_INVALID);
    p = parse_final("", 0);
    assert_int_equal(p.r, GH_PROXY_INVALID);

    /* Every shorter length of a valid header is refused; the whole one is parsed. */
    for (size_t n = 0; n < sizeof v2buf; n++)
        assert_int_equal(parse_final(v2buf, n).r, GH_PROXY_INVALID);
    p = parse_final(v2buf, sizeof v2buf);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_int_equal(p.need, 28);
    const char *whole = "PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n";
    p = parse_final(whole, strlen(whole));
    assert_int_equal(p.r, GH_PROXY_DONE);
    p = parse_final("EHLO x\r\n", 8);
    assert_int_equal(p.r, GH_PROXY_INVALID);
    assert_non_null(strstr(p.err.msg, "no PROXY protocol header"));
}

static void crc32c_vector(void **state)
{
    /* The check value of CRC-32C (RFC 3720 B.4 and the CRC catalogue). */
    assert_int_equal(gh_proxy_crc32c(0, "123456789", 9), 0xE3069283u);
    /* Chaining gives the same result as one call. */
    uint32_t c = gh_proxy_crc32c(0, "1234", 4);
    assert_int_equal(gh_proxy_crc32c(c, "56789", 5), 0xE3069283u);
    assert_int_equal(gh_proxy_crc32c(0, "", 0), 0);
}

/* ---- writers ---- */

static struct gh_sockaddr sa(const char *text)
{
    struct gh_sockaddr a;
    gh_err err;
    if (!gh_sockaddr_parse(text, &a, &err))
        fail_msg("%s", err.msg);
    return a;
}

static void write_v1(void **state)
{
    char buf[GH_PROXY_V1_MAX + 1];
    struct gh_sockaddr s = sa("203.0.113.7:51234"), d = sa("192.0.2.1:25");
    size_t n = gh_proxy_write_v1(&s, &d, buf, sizeof buf);
    assert_string_equal(buf, "PROXY TCP4 203.0.113.7 192.0.2.1 51234 25\r\n");
    assert_int_equal(n, strlen(buf));

    s = sa("[2001:db8::7]:1");
    d = sa("[::1]:25");
    n = gh_proxy_write_v1(&s, &d, buf, sizeof buf);
    assert_string_equal(buf, "PROXY TCP6 2001:db8::7 ::1 1 25\r\n");

    /* Mixed families go as IPv6, and read back as what they were. */
    s = sa("203.0.113.7:5");
    n = gh_proxy_write_v1(&s, &d, buf, sizeof buf);
    assert_string_equal(buf, "PROXY TCP6 ::ffff:203.0.113.7 ::1 5 25\r\n");
    struct parsed p = parse(buf, n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_addr(&p.h.src, "203.0.113.7:5");

    struct gh_sockaddr un;
    memset(&un, 0, sizeof un);
    un.u.sa.sa_family = AF_UNIX;
    n = gh_proxy_write_v1(&un, &d, buf, sizeof buf);
    assert_string_equal(buf, "PROXY UNKNOWN\r\n");

    assert_int_equal(gh_proxy_write_v1(&s, &d, buf, 10), 0);
}

static void write_v2(void **state)
{
    uint8_t buf[GH_PROXY_V2_WRITE_MAX];
    const char *pairs[][2] = {{"203.0.113.7:51234", "192.0.2.1:25"},
                              {"[2001:db8::7]:1", "[::1]:25"},
                              {"203.0.113.7:5", "[::1]:25"}};
    for (int i = 0; i < 3; i++) {
        for (int ssl = 0; ssl < 2; ssl++) {
            struct gh_sockaddr s = sa(pairs[i][0]), d = sa(pairs[i][1]);
            size_t n = gh_proxy_write_v2(&s, &d, ssl, buf, sizeof buf);
            assert_true(n > 16 && n <= sizeof buf);
            struct parsed p = parse(buf, n); /* also checks the CRC32c TLV */
            assert_int_equal(p.r, GH_PROXY_DONE);
            assert_int_equal(p.need, n);
            assert_int_equal(p.h.ssl, ssl);
            assert_addr(&p.h.src, pairs[i][0]);
            if (i < 2)
                assert_addr(&p.h.dst, pairs[i][1]);
        }
    }
    struct gh_sockaddr un, d = sa("[::1]:25");
    memset(&un, 0, sizeof un);
    un.u.sa.sa_family = AF_UNIX;
    size_t n = gh_proxy_write_v2(&un, &d, true, buf, sizeof buf);
    assert_int_equal(n, 16);
    struct parsed p = parse(buf, n);
    assert_int_equal(p.r, GH_PROXY_DONE);
    assert_true(p.h.local);
    assert_int_equal(gh_proxy_write_v2(&d, &d, false, buf, 20), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_tcp4),
        cmocka_unit_test(v1_tcp6),
        cmocka_unit_test(v1_tcp6_longest),
        cmocka_unit_test(v1_tcp6_v4_mapped),
        cmocka_unit_test(v1_unknown),
        cmocka_unit_test(v1_length_limit),
        cmocka_unit_test(v1_grammar_errors),
        cmocka_unit_test(v1_nul_byte),
        cmocka_unit_test(v1_rejects_early),
        cmocka_unit_test(v2_tcp4),
        cmocka_unit_test(v2_tcp6),
        cmocka_unit_test(v2_local),
        cmocka_unit_test(v2_other_families_are_local),
        cmocka_unit_test(v2_preamble_errors),
        cmocka_unit_test(v2_length_errors),
        cmocka_unit_test(v2_tlv_ssl),
        cmocka_unit_test(v2_tlv_authority_and_unique_id),
        cmocka_unit_test(v2_tlv_framing),
        cmocka_unit_test(v2_tlv_crc32c),
        cmocka_unit_test(final_refuses_prefixes),
        cmocka_unit_test(crc32c_vector),
        cmocka_unit_test(write_v1),
        cmocka_unit_test(write_v2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
