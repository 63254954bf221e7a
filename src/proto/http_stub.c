/* placeholder HTTP front door until http.c lands. */
#include "proto/proto.h"

static void stub_open(struct gh_conn *c)
{
    gh_conn_close(c);
}
const struct gh_proto gh_proto_http = {.name = "http", .open = stub_open};
