/*
 * test_engine: the listener engine on real loopback sockets — apply binds before it
 * returns, updates keep sockets, a failed bind changes nothing, remove stops accepting,
 * and socket options reach the kernel.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/engine.h"
#include "net/fd_reserve.h"

static struct gh_engine *engine;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static struct gh_listener_conf *make_conf(const char *id, int nports, const int *ports)
{
    struct gh_listener_conf *c = gh_listener_conf_new((unsigned)nports, 0);
    snprintf(c->id, sizeof c->id, "%s", id);
    snprintf(c->name, sizeof c->name, "%s", id);
    c->protocol = GH_PROTO_HTTP;
    c->backlog = 16;
    c->reuseaddr = c->reuseport = true;
    c->nodelay = true;
    c->tls_timeout_ms = 60000;
    c->max_connections = 8192;
    for (int i = 0; i < nports; i++) {
        char text[32];
        snprintf(text, sizeof text, "127.0.0.1:%d", ports[i]);
        assert_true(gh_sockaddr_parse(text, &c->bind[i], NULL));
    }
    return c;
}

static bool can_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int setup(void **state)
{
    gh_err err = {0};
    engine = gh_engine_new(2, &err);
    assert_non_null(engine);
    assert_true(gh_engine_start(engine, &err));
    return 0;
}

static int teardown(void **state)
{
    gh_engine_stop(engine, 0);
    gh_engine_wait(engine);
    gh_engine_free(engine);
    return 0;
}

/* The reserve is the top sixteenth of the limit, 16 to 256 descriptors: a descriptor number
 * at or above limit - reserve is in it. */
static void descriptor_reserve_bounds(void **state)
{
    (void)state;
    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    static const unsigned limits[][2] = {{64, 16}, {1024, 64}, {8192, 256}};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        if (limits[i][0] > saved.rlim_max)
            continue;
        struct rlimit rl = {.rlim_cur = limits[i][0], .rlim_max = saved.rlim_max};
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
        gh_fd_reserve_init();
        unsigned edge = limits[i][0] - limits[i][1];
        assert_int_equal(gh_fd_limit(), limits[i][0]);
        assert_int_equal(gh_fd_reserve(), limits[i][1]);
        assert_false(gh_fd_in_reserve((int)edge - 1));
        assert_true(gh_fd_in_reserve((int)edge));
        assert_true(gh_fd_in_reserve((int)limits[i][0] - 1));
        assert_false(gh_fd_in_reserve(-1));
    }
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    gh_fd_reserve_init();
}

static void apply_binds_before_returning(void **state)
{
    int port = free_port();
    gh_err err = {0};
    assert_false(can_connect(port));
    assert_true(gh_engine_apply(engine, make_conf("a", 1, &port), &err));
    assert_true(can_connect(port));
    gh_engine_remove(engine, "a");
    assert_false(can_connect(port));
}

static void failed_bind_changes_nothing(void **state)
{
    int ports[2] = {free_port(), free_port()};
    gh_err err = {0};
    assert_true(gh_engine_apply(engine, make_conf("b", 1, &ports[0]), &err));
    /* a foreign socket holds the second port without SO_REUSEPORT */
    int blocker = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)ports[1]),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(blocker, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(blocker, 1), 0);
    struct gh_listener_conf *c = make_conf("b", 2, ports);
    assert_false(gh_engine_apply(engine, c, &err));
    assert_non_null(strstr(err.msg, "Address already in use"));
    assert_true(can_connect(ports[0])); /* the old address still accepts */
    close(blocker);
    gh_engine_remove(engine, "b");
}

static void reuse_port_never_joins_a_foreign_listener(void **state)
{
    int port = free_port();
    gh_err err = {0};
    /* another program listening with SO_REUSEPORT, as a second daemon would */
    int other = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(other, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(other, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(other, 1), 0);
    assert_false(gh_engine_apply(engine, make_conf("r", 1, &port), &err));
    assert_non_null(strstr(err.msg, "Address already in use"));
    close(other);
}

/* The engine sets TCP_NODELAY and IP_TTL once on the listening socket and relies on Linux
 * copying them to every accepted socket; this pins that behaviour of the kernel. */
static void accepted_sockets_inherit_listener_options(void **state)
{
    int port = free_port(), one = 1, ttl = 9;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(l, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(l, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 1), 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    int s = accept(l, NULL, NULL), v = 0;
    socklen_t len = sizeof v;
    getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &len);
    assert_int_equal(v, 1);
    getsockopt(s, IPPROTO_IP, IP_TTL, &v, &len);
    assert_int_equal(v, 9);
    close(s);
    close(c);
    close(l);
}

static void update_keeps_and_moves_addresses(void **state)
{
    int p1 = free_port(), p2 = free_port();
    gh_err err = {0};
    assert_true(gh_engine_apply(engine, make_conf("c", 1, &p1), &err));
    int both[2] = {p1, p2};
    assert_true(gh_engine_apply(engine, make_conf("c", 2, both), &err));
    assert_true(can_connect(p1));
    assert_true(can_connect(p2));
    assert_true(gh_engine_apply(engine, make_conf("c", 1, &p2), &err));
    assert_false(can_connect(p1));
    assert_true(can_connect(p2));
    gh_engine_remove(engine, "c");
}

static void other_listener_address_is_refused(void **state)
{
    int port = free_port();
    gh_err err = {0};
    assert_true(gh_engine_apply(engine, make_conf("d", 1, &port), &err));
    struct gh_listener_conf *c = make_conf("e", 1, &port);
    assert_false(gh_engine_apply(engine, c, &err));
    assert_non_null(strstr(err.msg, "already used by listener \"d\""));
    gh_engine_remove(engine, "d");
}

/* The inodes of this process's sockets listening on 127.0.0.1:port, from /proc/net/tcp,
 * summed (one socket per worker with SO_REUSEPORT): the same sum means the same sockets. */
static unsigned long listening_inodes(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    unsigned long sum = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned a, p, st;
        unsigned long inode;
        if (sscanf(line, " %*d: %x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu", &a, &p, &st,
                   &inode) == 4 &&
            a == htonl(INADDR_LOOPBACK) && p == (unsigned)port && st == 0x0A)
            sum += inode;
    }
    if (f)
        fclose(f);
    return sum;
}

static void set_swaps_addresses_keeping_sockets(void **state)
{
    int x = free_port(), y = free_port(), z = free_port();
    gh_err err = {0};
    assert_true(gh_engine_apply(engine, make_conf("s1", 1, &x), &err));
    assert_true(gh_engine_apply(engine, make_conf("s2", 1, &y), &err));
    unsigned long ix = listening_inodes(x), iy = listening_inodes(y);
    assert_true(ix && iy);
    /* a plain update cannot take an address another listener holds */
    assert_false(gh_engine_apply(engine, make_conf("s1", 1, &y), &err));
    /* as one change it can: the sockets change hands */
    struct gh_listener_conf *confs[] = {make_conf("s1", 1, &y), make_conf("s2", 1, &x)};
    assert_true(gh_engine_apply_set(engine, confs, 2, &err));
    assert_true(can_connect(x));
    assert_true(can_connect(y));
    assert_int_equal(listening_inodes(x), ix);
    assert_int_equal(listening_inodes(y), iy);
    /* and back, with a new address on one side */
    int yz[2] = {y, z};
    struct gh_listener_conf *back[] = {make_conf("s1", 1, &x), make_conf("s2", 2, yz)};
    assert_true(gh_engine_apply_set(engine, back, 2, &err));
    assert_true(can_connect(z));
    assert_int_equal(listening_inodes(x), ix);

    /* a member taking what the other keeps: nothing changes */
    struct gh_listener_conf *keep[] = {make_conf("s1", 1, &y), make_conf("s2", 2, yz)};
    assert_false(gh_engine_apply_set(engine, keep, 2, &err));
    assert_non_null(strstr(err.msg, "already used by listener \"s2\""));
    /* moving sockets keep their bind-time options: they must agree */
    struct gh_listener_conf *a = make_conf("s1", 1, &y), *b = make_conf("s2", 1, &x);
    a->reuseport = false;
    struct gh_listener_conf *mismatch[] = {a, b};
    assert_false(gh_engine_apply_set(engine, mismatch, 2, &err));
    assert_non_null(strstr(err.msg, "socketReusePort"));
    /* an unknown member: nothing changes either */
    struct gh_listener_conf *unknown[] = {make_conf("s1", 1, &y), make_conf("nope", 1, &x)};
    assert_false(gh_engine_apply_set(engine, unknown, 2, &err));
    assert_int_equal(listening_inodes(x), ix);
    assert_int_equal(listening_inodes(y), iy);
    assert_true(can_connect(z));
    gh_engine_remove(engine, "s1");
    gh_engine_remove(engine, "s2");
    assert_false(can_connect(x));
    assert_false(can_connect(y));
}

static void wildcard_v6_conflicts_with_v4(void **state)
{
    int port = free_port();
    gh_err err = {0};
    assert_true(gh_engine_apply(engine, make_conf("f", 1, &port), &err));
    struct gh_listener_conf *c = gh_listener_conf_new(1, 0);
    snprintf(c->id, sizeof c->id, "g");
    char text[32];
    snprintf(text, sizeof text, "[::]:%d", port);
    assert_true(gh_sockaddr_parse(text, &c->bind[0], NULL));
    c->backlog = 16;
    c->reuseport = c->reuseaddr = true;
    c->max_connections = 1;
    assert_false(gh_engine_apply(engine, c, &err));
    gh_engine_remove(engine, "f");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(descriptor_reserve_bounds),
        cmocka_unit_test(apply_binds_before_returning),
        cmocka_unit_test(failed_bind_changes_nothing),
        cmocka_unit_test(reuse_port_never_joins_a_foreign_listener),
        cmocka_unit_test(accepted_sockets_inherit_listener_options),
        cmocka_unit_test(update_keeps_and_moves_addresses),
        cmocka_unit_test(other_listener_address_is_refused),
        cmocka_unit_test(set_swaps_addresses_keeping_sockets),
        cmocka_unit_test(wildcard_v6_conflicts_with_v4),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
