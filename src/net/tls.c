/* tls: placeholder until the OpenSSL layer lands; every entry point refuses. */
#include "net/tls.h"

#include <stdlib.h>

bool gh_tls_init(gh_err *err)
{
    (void)err;
    return true;
}
SSL_CTX *gh_tls_ctx_new(const struct gh_listener_conf *conf, gh_err *err)
{
    gh_fail(err, "TLS is not available yet");
    return NULL;
}
bool gh_tls_check_conf(const struct gh_listener_conf *conf, gh_err *err)
{
    return true;
}
bool gh_tls_certs_set(const struct gh_cert_input *certs, unsigned n, gh_err *err)
{
    return true;
}
bool gh_tls_cert_inspect(const char *pem_chain, const char *pem_key, struct gh_cert_info *info,
                         gh_err *err)
{
    return gh_fail(err, "TLS is not available yet");
}
void gh_cert_info_free(struct gh_cert_info *info)
{
}
bool gh_tls_selfsigned(const char *hostname, char **pem_chain, char **pem_key, gh_err *err)
{
    return gh_fail(err, "TLS is not available yet");
}
