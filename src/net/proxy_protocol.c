/*
 * proxy_protocol: reads the PROXY protocol header (HAProxy's proxy-protocol.txt, v1 text
 * and v2 binary) a trusted load balancer puts before the client's bytes, and writes the one
 * sent on to a destination. Parsing is strict and works on any prefix of the input, so the
 * engine can peek, call again as bytes arrive, and consume exactly the header.
 */
#include "net/proxy_protocol.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";
#define V1_SIG_LEN  6
#define V1_MIN      15 /* "PROXY UNKNOWN\r\n" */
#define V2_PREAMBLE 16

/* v2 command, family and transport nibbles, and the TLV types read here. */
#define PP2_CMD_LOCAL      0x0
#define PP2_CMD_PROXY      0x1
#define PP2_FAM_UNSPEC     0x0
#define PP2_FAM_INET       0x1
#define PP2_FAM_INET6      0x2
#define PP2_FAM_UNIX       0x3
#define PP2_TRANS_STREAM   0x1
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_CRC32C    0x03
#define PP2_TYPE_UNIQUE_ID 0x05
#define PP2_TYPE_SSL       0x20
#define PP2_CLIENT_SSL     0x01

/* gh_fail for the parser's result type: fills err, returns INVALID. */
static enum gh_proxy_result invalid(gh_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static enum gh_proxy_result invalid(gh_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->sys = 0;
    }
    return GH_PROXY_INVALID;
}

static enum gh_proxy_result not_a_header(gh_err *err)
{
    return invalid(err, "no PROXY protocol header: the data starts with neither \"PROXY \" "
                        "(v1) nor the v2 signature");
}

uint32_t gh_proxy_crc32c(uint32_t crc, const void *data, size_t len)
{
    /* Bit by bit: headers are at most a few kilobytes and arrive once per connection, so a
     * table would buy nothing measurable. 0x82F63B78 is the reflected Castagnoli polynomial. */
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* ---- v1 ---------------------------------------------------------------------------- */

/* One space-separated field of the v1 line; cut when the line's end has not arrived yet,
 * so the field may still grow. */
struct v1_field {
    const char *s;
    size_t n;
    bool cut;
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Exactly four decimal numbers 0-255 separated by single dots, without leading zeroes
 * (the spec forbids them so that nobody reads them as octal). */
static bool v4_parse(const char *s, size_t n, uint8_t out[4])
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part) {
            if (i >= n || s[i] != '.')
                return false;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < n && is_digit(s[i]) && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        if (i == start || v > 255 || (i - start > 1 && s[start] == '0'))
            return false;
        out[part] = (uint8_t)v;
    }
    return i == n;
}

static bool v6_parse(const char *s, size_t n, uint8_t out[16])
{
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof text)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_hex(s[i]) && s[i] != ':' && s[i] != '.')
            return false;
    memcpy(text, s, n);
    text[n] = 0;
    return inet_pton(AF_INET6, text, out) == 1;
}

/* Could a cut field still become an address of the family? Only its characters and
 * length can be judged before it ends. */
static bool addr_viable(const struct v1_field *f, bool v6)
{
    if (f->n > (v6 ? INET6_ADDRSTRLEN - 1 : 15))
        return false;
    for (size_t i = 0; i < f->n; i++) {
        char c = f->s[i];
        if (!(is_digit(c) || c == '.' || (v6 && (is_hex(c) || c == ':'))))
            return false;
    }
    return true;
}

static enum gh_proxy_result v1_addr(const struct v1_field *f, bool v6, const char *what,
                                    struct gh_sockaddr *out, gh_err *err)
{
    if (f->cut)
        return addr_viable(f, v6) ? GH_PROXY_NEED_MORE
                                  : invalid(err,
                                            v6 ? "PROXY v1: %s is not an IPv6 address"
                                               : "PROXY v1: %s is not an IPv4 address",
                                            what);
    if (f->n == 0)
        return invalid(err, "PROXY v1: %s is missing", what);
    if (v6) {
        if (!v6_parse(f->s, f->n, out->u.v6.sin6_addr.s6_addr))
            return invalid(err, "PROXY v1: %s is not an IPv6 address", what);
        out->u.v6.sin6_family = AF_INET6;
        out->len = sizeof out->u.v6;
    } else {
        if (!v4_parse(f->s, f->n, (uint8_t *)&out->u.v4.sin_addr))
            return invalid(err, "PROXY v1: %s is not an IPv4 address", what);
        out->u.v4.sin_family = AF_INET;
        out->len = sizeof out->u.v4;
    }
    return GH_PROXY_DONE;
}

static enum gh_proxy_result v1_port(const struct v1_field *f, const char *what,
                                    struct gh_sockaddr *out, gh_err *err)
{
    if (f->n == 0 && !f->cut)
        return invalid(err, "PROXY v1: %s is missing", what);
    unsigned v = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (!is_digit(f->s[i]))
            return invalid(err, "PROXY v1: %s is not a number", what);
        if (i >= 5)
            return invalid(err, "PROXY v1: %s out of range", what);
        v = v * 10 + (unsigned)(f->s[i] - '0');
    }
    if (v > 65535)
        return invalid(err, "PROXY v1: %s out of range", what);
    if (f->n > 1 && f->s[0] == '0')
        return invalid(err, "PROXY v1: %s has a leading zero", what);
    if (f->cut)
        return GH_PROXY_NEED_MORE;
    if (out->u.sa.sa_family == AF_INET)
        out->u.v4.sin_port = htons((uint16_t)v);
    else
        out->u.v6.sin6_port = htons((uint16_t)v);
    return GH_PROXY_DONE;
}

/* Takes the field starting at *pos up to the next space or the line's end. */
static struct v1_field v1_next(const uint8_t *buf, size_t *pos, size_t eol, bool complete)
{
    size_t start = *pos;
    while (*pos < eol && buf[*pos] != ' ')
        (*pos)++;
    return (struct v1_field){(const char *)buf + start, *pos - start, !complete && *pos == eol};
}

static bool prefix_of(const struct v1_field *f, const char *word)
{
    return f->n <= strlen(word) && memcmp(f->s, word, f->n) == 0;
}

static bool equals(const struct v1_field *f, const char *word)
{
    return f->n == strlen(word) && memcmp(f->s, word, f->n) == 0;
}

/* Finds the CRLF within the first 107 bytes. Sets *eol to the CR (or to how far the line
 * has come) and *complete when the CRLF is there. */
static bool v1_line(const uint8_t *buf, size_t len, size_t *eol, bool *complete, gh_err *err)
{
    size_t avail = len < GH_PROXY_V1_MAX ? len : GH_PROXY_V1_MAX;
    *complete = false;
    *eol = avail;
    for (size_t i = 0; i < avail; i++) {
        if (buf[i] == '\n')
            return gh_fail(err, "PROXY v1: line feed without carriage return");
        if (buf[i] != '\r')
            continue;
        *eol = i;
        if (i + 1 == avail)
            break;
        if (buf[i + 1] != '\n')
            return gh_fail(err, "PROXY v1: carriage return without line feed");
        *complete = true;
        return true;
    }
    if (len >= GH_PROXY_V1_MAX)
        return gh_fail(err, "PROXY v1: no CRLF within %d bytes", GH_PROXY_V1_MAX);
    return true;
}

static enum gh_proxy_result parse_v1(const uint8_t *buf, size_t len, size_t *need,
                                     struct gh_proxy_header *out, gh_err *err)
{
    size_t eol;
    bool complete;
    *need = len + 1 < V1_MIN ? V1_MIN : len + 1;
    if (len < V1_SIG_LEN)
        return GH_PROXY_NEED_MORE; /* the caller checked the bytes so far */
    if (!v1_line(buf, len, &eol, &complete, err))
        return GH_PROXY_INVALID;
    out->version = 1;

    size_t pos = V1_SIG_LEN;
    struct v1_field proto = v1_next(buf, &pos, eol, complete);
    if (proto.cut) {
        if (prefix_of(&proto, "TCP4") || prefix_of(&proto, "TCP6") || prefix_of(&proto, "UNKNOWN"))
            return GH_PROXY_NEED_MORE;
        return invalid(err, "PROXY v1: unknown protocol (expected TCP4, TCP6 or UNKNOWN)");
    }
    if (equals(&proto, "UNKNOWN")) {
        /* The sender may say anything after UNKNOWN; the receiver ignores it. */
        if (!complete)
            return GH_PROXY_NEED_MORE;
        out->local = true;
        *need = eol + 2;
        return GH_PROXY_DONE;
    }
    bool v6 = equals(&proto, "TCP6");
    if (!v6 && !equals(&proto, "TCP4"))
        return invalid(err, "PROXY v1: unknown protocol (expected TCP4, TCP6 or UNKNOWN)");

    static const char *const names[4] = {"source address", "destination address", "source port",
                                         "destination port"};
    struct gh_sockaddr *ends[2] = {&out->src, &out->dst};
    for (int i = 0; i < 4; i++) {
        if (pos == eol) {
            if (!complete)
                return GH_PROXY_NEED_MORE;
            return invalid(err, "PROXY v1: %s is missing", names[i]);
        }
        pos++; /* the single space that ended the previous field */
        struct v1_field f = v1_next(buf, &pos, eol, complete);
        enum gh_proxy_result r = i < 2 ? v1_addr(&f, v6, names[i], ends[i], err)
                                       : v1_port(&f, names[i], ends[i - 2], err);
        if (r != GH_PROXY_DONE)
            return r;
    }
    if (pos != eol)
        return invalid(err, "PROXY v1: unexpected data after the %s", names[3]);
    if (!complete)
        return GH_PROXY_NEED_MORE;
    gh_sockaddr_unmap_v4(&out->src);
    gh_sockaddr_unmap_v4(&out->dst);
    *need = eol + 2;
    return GH_PROXY_DONE;
}

/* ---- v2 ---------------------------------------------------------------------------- */

static size_t v2_addr_len(unsigned family)
{
    switch (family) {
    case PP2_FAM_INET:
        return 12;
    case PP2_FAM_INET6:
        return 36;
    case PP2_FAM_UNIX:
        return 216;
    default:
        return 0;
    }
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void v2_addrs(const uint8_t *a, unsigned family, struct gh_proxy_header *out)
{
    if (family == PP2_FAM_INET) {
        out->src.u.v4.sin_family = out->dst.u.v4.sin_family = AF_INET;
        memcpy(&out->src.u.v4.sin_addr, a, 4);
        memcpy(&out->dst.u.v4.sin_addr, a + 4, 4);
        memcpy(&out->src.u.v4.sin_port, a + 8, 2);
        memcpy(&out->dst.u.v4.sin_port, a + 10, 2);
        out->src.len = out->dst.len = sizeof out->src.u.v4;
    } else {
        out->src.u.v6.sin6_family = out->dst.u.v6.sin6_family = AF_INET6;
        memcpy(&out->src.u.v6.sin6_addr, a, 16);
        memcpy(&out->dst.u.v6.sin6_addr, a + 16, 16);
        memcpy(&out->src.u.v6.sin6_port, a + 32, 2);
        memcpy(&out->dst.u.v6.sin6_port, a + 34, 2);
        out->src.len = out->dst.len = sizeof out->src.u.v6;
        gh_sockaddr_unmap_v4(&out->src);
        gh_sockaddr_unmap_v4(&out->dst);
    }
}

/* Walks a TLV list and checks that each length stays inside it. */
static bool tlv_walk_ok(const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        if (n - off < 3 || be16(p + off + 1) > n - off - 3)
            return false;
        off += 3 + be16(p + off + 1);
    }
    return true;
}

static bool tlv_ssl(const uint8_t *v, size_t n, struct gh_proxy_header *out, gh_err *err)
{
    /* client bit field (1), verify result (4), then sub-TLVs (version, CN, cipher...). */
    if (n < 5)
        return gh_fail(err, "PROXY v2: SSL TLV of %zu bytes is shorter than 5", n);
    if (!tlv_walk_ok(v + 5, n - 5))
        return gh_fail(err, "PROXY v2: SSL TLV has a malformed sub-TLV");
    out->ssl = (v[0] & PP2_CLIENT_SSL) != 0;
    return true;
}

static bool tlv_authority(const uint8_t *v, size_t n, struct gh_proxy_header *out, gh_err *err)
{
    if (n > GH_PROXY_AUTHORITY_MAX)
        return gh_fail(err, "PROXY v2: authority TLV of %zu bytes is longer than %d", n,
                       GH_PROXY_AUTHORITY_MAX);
    /* It ends up in logs: control characters (and NUL) are refused, UTF-8 is kept. */
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x20 || v[i] == 0x7f)
            return gh_fail(err, "PROXY v2: authority TLV contains control characters");
    memcpy(out->authority, v, n);
    out->authority[n] = 0;
    return true;
}

static bool tlv_unique_id(const uint8_t *v, size_t n, struct gh_proxy_header *out, gh_err *err)
{
    static const char hex[] = "0123456789abcdef";
    if (n > GH_PROXY_UNIQUE_ID_MAX)
        return gh_fail(err, "PROXY v2: unique ID TLV of %zu bytes is longer than %d", n,
                       GH_PROXY_UNIQUE_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        out->unique_id[2 * i] = hex[v[i] >> 4];
        out->unique_id[2 * i + 1] = hex[v[i] & 15];
    }
    out->unique_id[2 * n] = 0;
    return true;
}

static bool crc_matches(const uint8_t *buf, size_t total, size_t at)
{
    static const uint8_t zero[4];
    uint32_t want = (uint32_t)buf[at] << 24 | (uint32_t)buf[at + 1] << 16 |
                    (uint32_t)buf[at + 2] << 8 | buf[at + 3];
    uint32_t crc = gh_proxy_crc32c(0, buf, at);
    crc = gh_proxy_crc32c(crc, zero, 4);
    crc = gh_proxy_crc32c(crc, buf + at + 4, total - at - 4);
    return crc == want;
}

static bool v2_tlvs(const uint8_t *buf, size_t off, size_t total, struct gh_proxy_header *out,
                    gh_err *err)
{
    size_t crc_at = 0;
    unsigned seen = 0; /* bit per TLV type read here: each may appear once */
    while (off < total) {
        if (total - off < 3)
            return gh_fail(err, "PROXY v2: TLV at byte %zu is cut short", off);
        unsigned type = buf[off];
        size_t n = be16(buf + off + 1);
        const uint8_t *v = buf + off + 3;
        if (n > total - off - 3)
            return gh_fail(err, "PROXY v2: TLV 0x%02x of %zu bytes runs past the header", type, n);
        unsigned bit = type == PP2_TYPE_SSL         ? 1
                       : type == PP2_TYPE_AUTHORITY ? 2
                       : type == PP2_TYPE_UNIQUE_ID ? 4
                       : type == PP2_TYPE_CRC32C    ? 8
                                                    : 0;
        if (seen & bit)
            return gh_fail(err, "PROXY v2: TLV 0x%02x appears twice", type);
        seen |= bit;
        bool ok = true;
        if (type == PP2_TYPE_SSL)
            ok = tlv_ssl(v, n, out, err);
        else if (type == PP2_TYPE_AUTHORITY)
            ok = tlv_authority(v, n, out, err);
        else if (type == PP2_TYPE_UNIQUE_ID)
            ok = tlv_unique_id(v, n, out, err);
        else if (type == PP2_TYPE_CRC32C && n != 4)
            ok = gh_fail(err, "PROXY v2: CRC32c TLV of %zu bytes (expected 4)", n);
        else if (type == PP2_TYPE_CRC32C)
            crc_at = off + 3;
        if (!ok)
            return false;
        off += 3 + n; /* ALPN, NOOP, NETNS and custom types are skipped */
    }
    if (crc_at && !crc_matches(buf, total, crc_at))
        return gh_fail(err, "PROXY v2: CRC32c checksum mismatch");
    return true;
}

static enum gh_proxy_result parse_v2(const uint8_t *buf, size_t len, size_t *need,
                                     struct gh_proxy_header *out, gh_err *err)
{
    *need = V2_PREAMBLE;
    if (len > 12) {
        unsigned version = buf[12] >> 4, cmd = buf[12] & 15;
        if (version != 2) {
            return invalid(err, "PROXY v2: version %u is not supported", version);
        }
        if (cmd != PP2_CMD_LOCAL && cmd != PP2_CMD_PROXY) {
            return invalid(err, "PROXY v2: unknown command 0x%x", cmd);
        }
    }
    /* The family byte matters only for PROXY; LOCAL's address block is discarded. */
    bool proxy = len > 12 && (buf[12] & 15) == PP2_CMD_PROXY;
    if (len > 13 && proxy && ((buf[13] >> 4) > PP2_FAM_UNIX || (buf[13] & 15) > 2)) {
        return invalid(err, "PROXY v2: unknown address family or transport 0x%02x", buf[13]);
    }
    if (len < V2_PREAMBLE)
        return GH_PROXY_NEED_MORE;

    size_t total = V2_PREAMBLE + be16(buf + 14);
    unsigned family = buf[13] >> 4, transport = buf[13] & 15;
    if (total > GH_PROXY_V2_MAX) {
        return invalid(err, "PROXY v2: a header of %zu bytes is longer than the %d accepted", total,
                       GH_PROXY_V2_MAX);
    }
    size_t alen = proxy ? v2_addr_len(family) : 0;
    if (total - V2_PREAMBLE < alen) {
        return invalid(err, "PROXY v2: %zu address bytes are too few for family %u (%zu needed)",
                       total - V2_PREAMBLE, family, alen);
    }
    *need = total;
    if (len < total)
        return GH_PROXY_NEED_MORE;

    out->version = 2;
    if (!proxy) {
        out->local = true; /* health checks and the balancer's own connections */
        return GH_PROXY_DONE;
    }
    bool tcp = (family == PP2_FAM_INET || family == PP2_FAM_INET6) && transport == PP2_TRANS_STREAM;
    if (tcp)
        v2_addrs(buf + V2_PREAMBLE, family, out);
    else
        out->local = true; /* UNSPEC, UNIX or datagram: no TCP client to stand for */
    /* With UNSPEC the layout after the preamble is unknown, so there are no TLVs to read. */
    if (family != PP2_FAM_UNSPEC && !v2_tlvs(buf, V2_PREAMBLE + alen, total, out, err))
        return GH_PROXY_INVALID;
    return GH_PROXY_DONE;
}

enum gh_proxy_result gh_proxy_parse(const uint8_t *buf, size_t len, size_t *need,
                                    struct gh_proxy_header *out, gh_err *err)
{
    memset(out, 0, sizeof *out);
    *need = V1_MIN;
    if (len == 0)
        return GH_PROXY_NEED_MORE;
    size_t n = len < V1_SIG_LEN ? len : V1_SIG_LEN;
    if (memcmp(buf, v1_sig, n) == 0)
        return parse_v1(buf, len, need, out, err);
    n = len < sizeof v2_sig ? len : sizeof v2_sig;
    if (memcmp(buf, v2_sig, n) == 0)
        return parse_v2(buf, len, need, out, err);
    if (len >= V1_SIG_LEN && memcmp(buf, v1_sig, V1_SIG_LEN - 1) == 0)
        return invalid(err, "PROXY v1: expected a single space after PROXY");
    return not_a_header(err);
}

enum gh_proxy_result gh_proxy_parse_final(const uint8_t *buf, size_t len, size_t *need,
                                          struct gh_proxy_header *out, gh_err *err)
{
    enum gh_proxy_result r = gh_proxy_parse(buf, len, need, out, err);
    if (r != GH_PROXY_NEED_MORE)
        return r;
    memset(out, 0, sizeof *out);
    if (len == 0)
        return invalid(err, "PROXY header: connection closed before any byte");
    /* *need is the fewest bytes a header could have had; v1's end is only known at CRLF. */
    bool v1 = buf[0] == 'P';
    return invalid(err, "PROXY %s header: connection closed after %zu of %s%zu bytes",
                   v1 ? "v1" : "v2", len, v1 ? "at least " : "", *need);
}

/* ---- writers ------------------------------------------------------------------------ */

/* Brings both ends to one family: unmapped IPv4 when both are IPv4, else both IPv6. Returns
 * the family, or 0 when either end is not an IP address. */
static int same_family(const struct gh_sockaddr *src, const struct gh_sockaddr *dst,
                       struct gh_sockaddr *s, struct gh_sockaddr *d)
{
    *s = *src;
    *d = *dst;
    gh_sockaddr_unmap_v4(s);
    gh_sockaddr_unmap_v4(d);
    int fs = s->u.sa.sa_family, fd = d->u.sa.sa_family;
    if ((fs != AF_INET && fs != AF_INET6) || (fd != AF_INET && fd != AF_INET6))
        return 0;
    if (fs == fd)
        return fs;
    struct gh_sockaddr *ends[2] = {s, d};
    for (int i = 0; i < 2; i++) {
        if (ends[i]->u.sa.sa_family != AF_INET)
            continue;
        struct sockaddr_in v4 = ends[i]->u.v4;
        struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = v4.sin_port};
        v6.sin6_addr.s6_addr[10] = v6.sin6_addr.s6_addr[11] = 0xff;
        memcpy(&v6.sin6_addr.s6_addr[12], &v4.sin_addr, 4);
        memset(&ends[i]->u, 0, sizeof ends[i]->u);
        ends[i]->u.v6 = v6;
        ends[i]->len = sizeof v6;
    }
    return AF_INET6;
}

static void ip_text(const struct gh_sockaddr *a, char out[INET6_ADDRSTRLEN])
{
    if (a->u.sa.sa_family == AF_INET)
        inet_ntop(AF_INET, &a->u.v4.sin_addr, out, INET6_ADDRSTRLEN);
    else
        inet_ntop(AF_INET6, &a->u.v6.sin6_addr, out, INET6_ADDRSTRLEN);
}

size_t gh_proxy_write_v1(const struct gh_sockaddr *src, const struct gh_sockaddr *dst, char *buf,
                         size_t cap)
{
    struct gh_sockaddr s, d;
    int family = same_family(src, dst, &s, &d);
    int n;
    if (!family) {
        n = snprintf(buf, cap, "PROXY UNKNOWN\r\n");
    } else {
        char st[INET6_ADDRSTRLEN], dt[INET6_ADDRSTRLEN];
        ip_text(&s, st);
        ip_text(&d, dt);
        n = snprintf(buf, cap, "PROXY %s %s %s %u %u\r\n", family == AF_INET ? "TCP4" : "TCP6", st,
                     dt, gh_sockaddr_port(&s), gh_sockaddr_port(&d));
    }
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t gh_proxy_write_v2(const struct gh_sockaddr *src, const struct gh_sockaddr *dst, bool ssl,
                         uint8_t *buf, size_t cap)
{
    if (cap < GH_PROXY_V2_WRITE_MAX)
        return 0;
    struct gh_sockaddr s, d;
    int family = same_family(src, dst, &s, &d);
    memcpy(buf, v2_sig, sizeof v2_sig);
    size_t off = V2_PREAMBLE;
    if (!family) {
        buf[12] = 0x20 | PP2_CMD_LOCAL;
        buf[13] = 0;
    } else if (family == AF_INET) {
        buf[12] = 0x20 | PP2_CMD_PROXY;
        buf[13] = PP2_FAM_INET << 4 | PP2_TRANS_STREAM;
        memcpy(buf + off, &s.u.v4.sin_addr, 4);
        memcpy(buf + off + 4, &d.u.v4.sin_addr, 4);
        memcpy(buf + off + 8, &s.u.v4.sin_port, 2);
        memcpy(buf + off + 10, &d.u.v4.sin_port, 2);
        off += 12;
    } else {
        buf[12] = 0x20 | PP2_CMD_PROXY;
        buf[13] = PP2_FAM_INET6 << 4 | PP2_TRANS_STREAM;
        memcpy(buf + off, &s.u.v6.sin6_addr, 16);
        memcpy(buf + off + 16, &d.u.v6.sin6_addr, 16);
        memcpy(buf + off + 32, &s.u.v6.sin6_port, 2);
        memcpy(buf + off + 34, &d.u.v6.sin6_port, 2);
        off += 36;
    }
    if (family && ssl) {
        /* client = SSL, verify = 0 (as HAProxy sends when no client certificate was asked). */
        static const uint8_t tlv[8] = {PP2_TYPE_SSL, 0, 5, PP2_CLIENT_SSL, 0, 0, 0, 0};
        memcpy(buf + off, tlv, sizeof tlv);
        off += sizeof tlv;
    }
    size_t crc_at = off + 3;
    if (family) {
        static const uint8_t tlv[7] = {PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0};
        memcpy(buf + off, tlv, sizeof tlv);
        off += sizeof tlv;
    }
    buf[14] = (uint8_t)((off - V2_PREAMBLE) >> 8);
    buf[15] = (uint8_t)(off - V2_PREAMBLE);
    if (family) {
        uint32_t crc = gh_proxy_crc32c(0, buf, off);
        buf[crc_at] = (uint8_t)(crc >> 24);
        buf[crc_at + 1] = (uint8_t)(crc >> 16);
        buf[crc_at + 2] = (uint8_t)(crc >> 8);
        buf[crc_at + 3] = (uint8_t)crc;
    }
    return off;
}
