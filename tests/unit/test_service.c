/*
 * test_service: the service helpers — sd_notify datagrams to a path and to an abstract
 * socket, and the parsing and adoption of the listening sockets a binary upgrade passes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/engine.h"
#include "service/notify.h"
#include "service/upgrade.h"

/* ---- sd_notify ---- */

static int dgram_bound(const char *name, bool abstract)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    memcpy(a.sun_path + (abstract ? 1 : 0), name, len);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (abstract ? 1 : 0));
    assert_int_equal(bind(fd, (struct sockaddr *)&a, alen), 0);
    return fd;
}

static void receives(int fd, const char *want)
{
    char buf[256];
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = 0;
    assert_string_equal(buf, want);
}

static void notify_to_a_path(void **state)
{
    char path[] = "/tmp/gh-notify-XXXXXX";
    assert_non_null(mkdtemp(path));
    char sock[64];
    snprintf(sock, sizeof sock, "%s/n", path);
    int fd = dgram_bound(sock, false);
    setenv("NOTIFY_SOCKET", sock, 1);
    assert_true(gh_notify("READY=1"));
    receives(fd, "READY=1");
    assert_true(gh_notify_mainpid(4242));
    receives(fd, "MAINPID=4242\nREADY=1");
    close(fd);
    unlink(sock);
    rmdir(path);
}

static void notify_to_an_abstract_socket(void **state)
{
    char name[64], env[80];
    snprintf(name, sizeof name, "gh-notify-test-%d", (int)getpid());
    int fd = dgram_bound(name, true);
    snprintf(env, sizeof env, "@%s", name);
    setenv("NOTIFY_SOCKET", env, 1);
    assert_true(gh_notify("STOPPING=1"));
    receives(fd, "STOPPING=1");
    assert_true(gh_notify_reloading());
    char buf[128];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = 0;
    assert_true(!strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27));
    close(fd);
}

static void notify_without_a_socket_is_a_no_op(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    assert_false(gh_notify("READY=1"));
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_false(gh_notify("READY=1"));
    unsetenv("NOTIFY_SOCKET");
}

/* ---- inherited sockets ---- */

static int listening_socket(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

static struct gh_listener_conf *conf_for(int port)
{
    struct gh_listener_conf *c = gh_listener_conf_new(1, 0);
    snprintf(c->id, sizeof c->id, "l1");
    snprintf(c->name, sizeof c->name, "l1");
    c->protocol = GH_PROTO_SMTP;
    c->backlog = 16;
    c->reuseaddr = true;
    c->reuseport = false; /* one socket, which no second bind could share */
    c->nodelay = true;
    c->tls_timeout_ms = 60000;
    c->max_connections = 10;
    char text[32];
    snprintf(text, sizeof text, "127.0.0.1:%d", port);
    assert_true(gh_sockaddr_parse(text, &c->bind[0], NULL));
    return c;
}

static void adopts_an_inherited_socket_instead_of_binding(void **state)
{
    gh_err err = {0};
    struct gh_engine *e = gh_engine_new(1, &err);
    assert_non_null(e);
    assert_true(gh_engine_start(e, &err));
    int port, spare_port;
    int fd = listening_socket(&port), spare = listening_socket(&spare_port);
    char env[128];
    snprintf(env, sizeof env, "127.0.0.1:%d=%d 127.0.0.1:%d=%d", port, fd, spare_port, spare);
    setenv("GATEHOUSE_UPGRADE_FDS", env, 1);
    setenv("GATEHOUSE_UPGRADE_WORKERS", "3", 1);
    unsigned workers = 1;
    assert_true(gh_upgrade_inherited(&workers));
    assert_int_equal(workers, 3);
    assert_true(gh_upgrade_adopt(e, &err));
    assert_null(getenv("GATEHOUSE_UPGRADE_FDS")); /* not passed on to anything started later */
    /* without SO_REUSEPORT a fresh bind would fail: the address is taken by fd itself */
    assert_true(gh_engine_apply(e, conf_for(port), &err));
    assert_int_equal(gh_engine_inherit_done(e), 1); /* the spare one */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    close(c);
    gh_engine_stop(e, 0);
    gh_engine_wait(e);
    gh_engine_free(e);
}

static void refuses_a_malformed_list(void **state)
{
    /* descriptor 0 is not a listening socket either */
    const char *bad[] = {"nonsense",         "127.0.0.1:25=x",  "127.0.0.1:25=",
                         "not-an-address=3", "127.0.0.1:25=-1", "127.0.0.1:25=0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        gh_err err = {0};
        struct gh_engine *e = gh_engine_new(1, &err);
        setenv("GATEHOUSE_UPGRADE_FDS", bad[i], 1);
        assert_false(gh_upgrade_adopt(e, &err));
        assert_non_null(strstr(err.msg, "GATEHOUSE_UPGRADE_FDS"));
        gh_engine_free(e);
    }
    unsetenv("GATEHOUSE_UPGRADE_FDS");
    unsigned workers = 2;
    assert_false(gh_upgrade_inherited(&workers));
    assert_int_equal(workers, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(notify_to_a_path),
        cmocka_unit_test(notify_to_an_abstract_socket),
        cmocka_unit_test(notify_without_a_socket_is_a_no_op),
        cmocka_unit_test(adopts_an_inherited_socket_instead_of_binding),
        cmocka_unit_test(refuses_a_malformed_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
