/* proxy_protocol: placeholder until the parser lands; refuses every header. */
#include "net/proxy_protocol.h"

enum gh_proxy_result gh_proxy_parse(const uint8_t *buf, size_t len, size_t *need,
                                    struct gh_proxy_header *out, gh_err *err)
{
    gh_fail(err, "PROXY protocol is not available yet");
    return GH_PROXY_INVALID;
}
