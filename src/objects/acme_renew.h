/*
 * acme_renew: the renewal thread — orders ACME-managed x:Certificate objects that have no
 * certificate yet or are due, writes the result (or the error) back as a server change,
 * retries failures with back-off. All its network work is off the workers.
 */
#ifndef GH_ACME_RENEW_H
#define GH_ACME_RENEW_H

/* Where a provider's account key (PEM) is kept in the stored object: outside the schema,
 * so no method ever returns or accepts it. */
#define GH_ACME_ACCOUNT_KEY "accountKeyPem"

void gh_acme_renew_start(void);
void gh_acme_renew_stop(void);
/* Something changed (a certificate or provider): look again now. Any thread. */
void gh_acme_renew_kick(void);

#endif
