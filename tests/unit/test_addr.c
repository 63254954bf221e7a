/*
 * Unit tests for addr: socket address and IP mask parsing, their canonical text, bind
 * conflicts as Linux sees them, and mask matching including v4-mapped IPv6 peers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/un.h>

#include "net/addr.h"

static struct gh_sockaddr sa(const char *text)
{
    struct gh_sockaddr a;
    gh_err err;
    if (!gh_sockaddr_parse(text, &a, &err))
        fail_msg("\"%s\" refused: %s", text, err.msg);
    return a;
}

static struct gh_ipmask mask(const char *text)
{
    struct gh_ipmask m;
    gh_err err;
    if (!gh_ipmask_parse(text, &m, &err))
        fail_msg("\"%s\" refused: %s", text, err.msg);
    return m;
}

static void assert_format(const char *in, const char *canonical)
{
    struct gh_sockaddr a = sa(in);
    char out[GH_ADDR_TEXT];
    gh_sockaddr_format(&a, out);
    assert_string_equal(out, canonical);
}

static void sockaddr_parse_valid(void **state)
{
    struct gh_sockaddr a = sa("127.0.0.1:25");
    assert_int_equal(a.u.sa.sa_family, AF_INET);
    assert_int_equal(a.len, sizeof(struct sockaddr_in));
    assert_int_equal(gh_sockaddr_port(&a), 25);
    assert_int_equal(ntohl(a.u.v4.sin_addr.s_addr), 0x7f000001);

    a = sa("[::1]:65535");
    assert_int_equal(a.u.sa.sa_family, AF_INET6);
    assert_int_equal(a.len, sizeof(struct sockaddr_in6));
    assert_int_equal(gh_sockaddr_port(&a), 65535);
    assert_true(IN6_IS_ADDR_LOOPBACK(&a.u.v6.sin6_addr));

    a = sa("0.0.0.0:1");
    assert_int_equal(gh_sockaddr_port(&a), 1);
    a = sa("[::]:587");
    assert_true(IN6_IS_ADDR_UNSPECIFIED(&a.u.v6.sin6_addr));
    a = sa("[::ffff:192.0.2.1]:25");
    assert_true(IN6_IS_ADDR_V4MAPPED(&a.u.v6.sin6_addr));
}

static void sockaddr_parse_invalid(void **state)
{
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"", "is not an address"},
        {"127.0.0.1", "expected IPv4:port"},
        {"127.0.0.1:", "port must be a number from 1 to 65535"},
        {"127.0.0.1:0", "port must be a number from 1 to 65535"},
        {"127.0.0.1:65536", "port must be a number from 1 to 65535"},
        {"127.0.0.1:123456", "port must be a number from 1 to 65535"},
        {"127.0.0.1:-1", "port must be a number"},
        {"127.0.0.1:2 5", "port must be a number"},
        {"127.0.0.1:25 ", "port must be a number"},
        {"127.0.0.1:x", "port must be a number"},
        {" 127.0.0.1:25", "is not an IPv4 address"},
        {"localhost:25", "is not an IPv4 address"},
        {"127.0.0.256:25", "is not an IPv4 address"},
        {"127.1:25", "is not an IPv4 address"},
        {"::1:25", "expected IPv4:port or [IPv6]:port"},
        {"[::1]25", "expected [IPv6]:port"},
        {"[::1]", "expected [IPv6]:port"},
        {"[::1:25", "expected [IPv6]:port"},
        {"[::1]:", "port must be a number"},
        {"[::1]:0", "port must be a number from 1 to 65535"},
        {"[::1]:25:26", "port must be a number"},
        {"[127.0.0.1]:25", "is not an IPv6 address"},
        {"[fe80::1%eth0]:25", "is not an IPv6 address"},
        {"[]:25", "is not an IPv6 address"},
        {"[::1]]:25", "expected [IPv6]:port"},
        {"1.2.3.4:25:26", "expected IPv4:port"},
        {"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535xxxxxxxxxxxxxxxxxxxxxx", "not an address"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct gh_sockaddr a;
        gh_err err = {0};
        if (gh_sockaddr_parse(cases[i].text, &a, &err))
            fail_msg("\"%s\" was accepted", cases[i].text);
        if (!strstr(err.msg, cases[i].why))
            fail_msg("\"%s\": error \"%s\" does not say \"%s\"", cases[i].text, err.msg,
                     cases[i].why);
    }
}

static void sockaddr_format_canonical(void **state)
{
    assert_format("127.0.0.1:25", "127.0.0.1:25");
    assert_format("[::1]:25", "[::1]:25");
    assert_format("[2001:0DB8:0000::0001]:443", "[2001:db8::1]:443");
    assert_format("[::]:25", "[::]:25");
    assert_format("0.0.0.0:65535", "0.0.0.0:65535");
    /* The longest form fits the buffer. */
    assert_format("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                  "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
}

static void ip_format(void **state)
{
    char out[GH_ADDR_TEXT];
    struct gh_sockaddr a = sa("192.0.2.7:25");
    gh_ip_format(&a.u.sa, out);
    assert_string_equal(out, "192.0.2.7");
    a = sa("[2001:db8::7]:25");
    gh_ip_format(&a.u.sa, out);
    assert_string_equal(out, "2001:db8::7");
    a = sa("[::ffff:192.0.2.7]:25");
    gh_ip_format(&a.u.sa, out);
    assert_string_equal(out, "192.0.2.7");

    struct sockaddr_un un = {.sun_family = AF_UNIX};
    gh_ip_format((struct sockaddr *)&un, out);
    assert_string_equal(out, "unix");
}

static void unmap_v4(void **state)
{
    struct gh_sockaddr a = sa("[::ffff:192.0.2.7]:2525");
    gh_sockaddr_unmap_v4(&a);
    assert_int_equal(a.u.sa.sa_family, AF_INET);
    assert_int_equal(a.len, sizeof(struct sockaddr_in));
    assert_int_equal(gh_sockaddr_port(&a), 2525);
    char out[GH_ADDR_TEXT];
    gh_sockaddr_format(&a, out);
    assert_string_equal(out, "192.0.2.7:2525");
    struct gh_sockaddr v4 = sa("192.0.2.7:2525");
    assert_true(gh_sockaddr_equal(&a, &v4));

    /* Plain IPv6 and IPv4 are left alone. */
    struct gh_sockaddr b = sa("[::1]:25"), before = b;
    gh_sockaddr_unmap_v4(&b);
    assert_memory_equal(&b, &before, sizeof b);
    b = sa("10.0.0.1:25");
    before = b;
    gh_sockaddr_unmap_v4(&b);
    assert_memory_equal(&b, &before, sizeof b);
}

static void equal(void **state)
{
    struct gh_sockaddr a = sa("127.0.0.1:25"), b = sa("127.0.0.1:25");
    assert_true(gh_sockaddr_equal(&a, &b));
    b = sa("127.0.0.1:26");
    assert_false(gh_sockaddr_equal(&a, &b));
    b = sa("127.0.0.2:25");
    assert_false(gh_sockaddr_equal(&a, &b));
    b = sa("[::1]:25");
    assert_false(gh_sockaddr_equal(&a, &b));
    a = sa("[2001:db8::1]:25");
    b = sa("[2001:DB8:0::1]:25");
    assert_true(gh_sockaddr_equal(&a, &b));
}

static void assert_conflict(const char *x, const char *y, bool want)
{
    struct gh_sockaddr a = sa(x), b = sa(y);
    if (gh_sockaddr_conflict(&a, &b) != want || gh_sockaddr_conflict(&b, &a) != want)
        fail_msg("%s vs %s: expected %s", x, y, want ? "a conflict" : "no conflict");
}

static void conflict(void **state)
{
    assert_conflict("127.0.0.1:25", "127.0.0.1:25", true);
    assert_conflict("127.0.0.1:25", "127.0.0.1:26", false);
    assert_conflict("127.0.0.1:25", "127.0.0.2:25", false);
    assert_conflict("0.0.0.0:25", "127.0.0.1:25", true);
    assert_conflict("0.0.0.0:25", "0.0.0.0:25", true);
    assert_conflict("0.0.0.0:25", "0.0.0.0:26", false);
    /* [::] binds dual-stack: it covers every IPv4 address of its port. */
    assert_conflict("[::]:25", "0.0.0.0:25", true);
    assert_conflict("[::]:25", "127.0.0.1:25", true);
    assert_conflict("[::]:25", "[::1]:25", true);
    assert_conflict("[::]:25", "[::]:26", false);
    assert_conflict("[::1]:25", "[::1]:25", true);
    assert_conflict("[::1]:25", "[::2]:25", false);
    assert_conflict("[::1]:25", "127.0.0.1:25", false);
    assert_conflict("0.0.0.0:25", "[::1]:25", false);
    /* A v4-mapped IPv6 address is the IPv4 address to the kernel (EADDRINUSE). */
    assert_conflict("[::ffff:127.0.0.1]:25", "127.0.0.1:25", true);
    assert_conflict("[::ffff:127.0.0.1]:25", "0.0.0.0:25", true);
    assert_conflict("[::ffff:0.0.0.0]:25", "127.0.0.1:25", true);
    assert_conflict("[::ffff:127.0.0.1]:25", "127.0.0.2:25", false);
}

static void ipmask_parse_valid(void **state)
{
    struct gh_ipmask m = mask("10.0.0.0/8");
    assert_int_equal(m.family, AF_INET);
    assert_int_equal(m.prefix, 8);
    assert_int_equal(m.addr[0], 10);

    m = mask("192.0.2.1");
    assert_int_equal(m.prefix, 32);
    m = mask("0.0.0.0/0");
    assert_int_equal(m.prefix, 0);
    m = mask("::1");
    assert_int_equal(m.family, AF_INET6);
    assert_int_equal(m.prefix, 128);
    m = mask("::/0");
    assert_int_equal(m.prefix, 0);
    m = mask("2001:db8::/32");
    assert_int_equal(m.prefix, 32);
    m = mask("2001:db8:8000::/33");
    assert_int_equal(m.prefix, 33);
    m = mask("10.128.0.0/9");
    assert_int_equal(m.prefix, 9);
}

static void ipmask_parse_invalid(void **state)
{
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"", "is not an IP address or CIDR mask"},
        {"/8", "is not an IP address or CIDR mask"},
        {"10.0.0.0/", "prefix length must be 0-32"},
        {"10.0.0.0/33", "prefix length must be 0-32"},
        {"10.0.0.0/-1", "prefix length must be 0-32"},
        {"10.0.0.0/8/8", "prefix length must be 0-32"},
        {"10.0.0.0/1000", "prefix length must be 0-32"},
        {"10.0.0.0/ 8", "prefix length must be 0-32"},
        {"::/129", "prefix length must be 0-128"},
        {"10.0.0.0 /8", "is not an IP address"},
        {"10.0.0/8", "is not an IP address"},
        {"example.com/8", "is not an IP address"},
        {"10.0.0.1/8", "has host bits set; did you mean \"10.0.0.0/8\"?"},
        {"10.255.0.0/9", "did you mean \"10.128.0.0/9\"?"},
        {"192.0.2.1/0", "did you mean \"0.0.0.0/0\"?"},
        {"2001:db8::1/32", "did you mean \"2001:db8::/32\"?"},
        {"::1/127", "did you mean \"::/127\"?"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct gh_ipmask m;
        gh_err err = {0};
        if (gh_ipmask_parse(cases[i].text, &m, &err))
            fail_msg("\"%s\" was accepted", cases[i].text);
        if (!strstr(err.msg, cases[i].why))
            fail_msg("\"%s\": error \"%s\" does not say \"%s\"", cases[i].text, err.msg,
                     cases[i].why);
    }
}

static void ipmask_format(void **state)
{
    static const char *const same[] = {"10.0.0.0/8", "192.0.2.1",     "0.0.0.0/0",   "::/0",
                                       "::1",        "2001:db8::/32", "10.128.0.0/9"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        struct gh_ipmask m = mask(same[i]);
        char out[GH_ADDR_TEXT];
        gh_ipmask_format(&m, out);
        assert_string_equal(out, same[i]);
    }
    struct gh_ipmask m = mask("192.0.2.1/32");
    char out[GH_ADDR_TEXT];
    gh_ipmask_format(&m, out);
    assert_string_equal(out, "192.0.2.1");
    m = mask("2001:0DB8::/32");
    gh_ipmask_format(&m, out);
    assert_string_equal(out, "2001:db8::/32");
}

static bool matches(const char *m_text, const char *peer)
{
    struct gh_ipmask m = mask(m_text);
    struct gh_sockaddr a = sa(peer);
    return gh_ipmask_match(&m, &a.u.sa);
}

static void ipmask_match(void **state)
{
    assert_true(matches("127.0.0.0/8", "127.0.0.1:1"));
    assert_true(matches("127.0.0.0/8", "127.255.255.255:1"));
    assert_false(matches("127.0.0.0/8", "128.0.0.1:1"));
    assert_true(matches("192.0.2.1", "192.0.2.1:1"));
    assert_false(matches("192.0.2.1", "192.0.2.2:1"));
    /* A prefix that does not end on a byte. */
    assert_true(matches("10.128.0.0/9", "10.128.0.1:1"));
    assert_true(matches("10.128.0.0/9", "10.255.255.255:1"));
    assert_false(matches("10.128.0.0/9", "10.127.255.255:1"));
    assert_true(matches("2001:db8:8000::/33", "[2001:db8:8000::1]:1"));
    assert_false(matches("2001:db8:8000::/33", "[2001:db8:7fff::1]:1"));
    /* /0 matches its own family only. */
    assert_true(matches("0.0.0.0/0", "203.0.113.9:1"));
    assert_false(matches("0.0.0.0/0", "[2001:db8::1]:1"));
    assert_true(matches("::/0", "[2001:db8::1]:1"));
    assert_false(matches("::/0", "203.0.113.9:1"));
    assert_true(matches("::1", "[::1]:1"));
    assert_false(matches("::1", "127.0.0.1:1"));
    assert_false(matches("127.0.0.1", "[::1]:1"));
}

static void ipmask_match_v4_mapped(void **state)
{
    /* A dual-stack [::] listener sees IPv4 clients as ::ffff:a.b.c.d. */
    assert_true(matches("127.0.0.0/8", "[::ffff:127.0.0.1]:1"));
    assert_true(matches("192.0.2.1", "[::ffff:192.0.2.1]:1"));
    assert_false(matches("192.0.2.1", "[::ffff:192.0.2.2]:1"));
    assert_true(matches("0.0.0.0/0", "[::ffff:203.0.113.9]:1"));
    /* An IPv6 mask that covers the mapped range matches it as IPv6 too. */
    assert_true(matches("::ffff:0:0/96", "[::ffff:203.0.113.9]:1"));
    assert_true(matches("::/0", "[::ffff:203.0.113.9]:1"));
    assert_false(matches("2001:db8::/32", "[::ffff:203.0.113.9]:1"));
    /* A mask written v4-mapped does not match plain IPv4 (it is an IPv6 mask). */
    assert_false(matches("::1", "[::ffff:0.0.0.1]:1"));
}

static void ipmask_match_other(void **state)
{
    struct gh_ipmask any[2] = {mask("0.0.0.0/0"), mask("::/0")};
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    assert_false(gh_ipmask_match(&any[0], (struct sockaddr *)&un));
    assert_false(gh_ipmask_match_any(any, 2, (struct sockaddr *)&un));

    struct gh_ipmask list[3] = {mask("10.0.0.0/8"), mask("2001:db8::/32"), mask("192.0.2.7")};
    struct gh_sockaddr a = sa("192.0.2.7:25");
    assert_true(gh_ipmask_match_any(list, 3, &a.u.sa));
    assert_false(gh_ipmask_match_any(list, 2, &a.u.sa));
    assert_false(gh_ipmask_match_any(list, 0, &a.u.sa));
    a = sa("[2001:db8::9]:25");
    assert_true(gh_ipmask_match_any(list, 3, &a.u.sa));
    a = sa("[::ffff:10.1.2.3]:25");
    assert_true(gh_ipmask_match_any(list, 3, &a.u.sa));
}

/* The hand-written dotted quad agrees with inet_ntop on every byte value and position. */
static void ip_format_matches_inet_ntop(void **state)
{
    static const uint8_t values[] = {0, 1, 9, 10, 42, 99, 100, 109, 110, 199, 200, 250, 255};
    for (size_t k = 0; k < sizeof values; k++) {
        for (int pos = 0; pos < 4; pos++) {
            struct sockaddr_in v4 = {.sin_family = AF_INET};
            uint8_t *b = (uint8_t *)&v4.sin_addr;
            b[0] = 192, b[1] = 0, b[2] = 2, b[3] = 1;
            b[pos] = values[k];
            char ours[GH_ADDR_TEXT], libc[INET_ADDRSTRLEN];
            gh_ip_format((struct sockaddr *)&v4, ours);
            inet_ntop(AF_INET, &v4.sin_addr, libc, sizeof libc);
            assert_string_equal(ours, libc);
            struct sockaddr_in6 m = {.sin6_family = AF_INET6};
            m.sin6_addr.s6_addr[10] = m.sin6_addr.s6_addr[11] = 0xff;
            memcpy(&m.sin6_addr.s6_addr[12], b, 4);
            gh_ip_format((struct sockaddr *)&m, ours);
            assert_string_equal(ours, libc);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ip_format_matches_inet_ntop),
        cmocka_unit_test(sockaddr_parse_valid),
        cmocka_unit_test(sockaddr_parse_invalid),
        cmocka_unit_test(sockaddr_format_canonical),
        cmocka_unit_test(ip_format),
        cmocka_unit_test(unmap_v4),
        cmocka_unit_test(equal),
        cmocka_unit_test(conflict),
        cmocka_unit_test(ipmask_parse_valid),
        cmocka_unit_test(ipmask_parse_invalid),
        cmocka_unit_test(ipmask_format),
        cmocka_unit_test(ipmask_match),
        cmocka_unit_test(ipmask_match_v4_mapped),
        cmocka_unit_test(ipmask_match_other),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
