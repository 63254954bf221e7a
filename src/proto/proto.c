/*
 * proto: maps a listener's protocol to its front door.
 */
#include "proto/proto.h"

const struct gh_proto *gh_proto_for(enum gh_protocol p)
{
    switch (p) {
    case GH_PROTO_SMTP:
        return &gh_proto_smtp;
    case GH_PROTO_LMTP:
        return &gh_proto_lmtp;
    case GH_PROTO_HTTP:
        return &gh_proto_http;
    case GH_PROTO_IMAP:
        return &gh_proto_imap;
    case GH_PROTO_POP3:
        return &gh_proto_pop3;
    case GH_PROTO_MANAGESIEVE:
        return &gh_proto_managesieve;
    case GH_PROTO_COUNT:
        break;
    }
    return &gh_proto_smtp;
}
