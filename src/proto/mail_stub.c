/* placeholder front doors until the protocol files land: greet nothing, close. */
#include "proto/proto.h"

static void stub_open(struct gh_conn *c)
{
    gh_conn_close(c);
}

#define STUB(sym, nm)                                                                              \
    const struct gh_proto sym = {.name = nm, .open = stub_open};
STUB(gh_proto_managesieve, "manageSieve")
