/* register.h — joining a balancer: a thread that registers this backend
 * (POST {balancer}/v1/backends with the provider token and /sdgate/v1/info's
 * identity), sends heartbeats (POST /v1/backends/{id}/heartbeat) at the
 * interval the balancer asks for, registers again when the balancer forgot
 * it, and unregisters (DELETE) on shutdown. Heartbeats and DELETE carry the
 * registration's "secret" from the balancer's answer; its "backend_token" is
 * what the balancer sends on its calls here (registration_allows). Both are
 * kept in memory only. Blocking HTTP on its own thread. */
#ifndef SDGATE_REGISTER_H
#define SDGATE_REGISTER_H

#include <stddef.h>

struct backend;
struct registration;

/* Returns NULL on failure to start (logged). token may be NULL. */
struct registration *registration_start(const char *balancer_url, const char *token, struct backend *b);
/* Loop thread: 1 if a request with this Authorization header value (not
 * NUL-terminated) comes from the balancer we registered with; 0 before we
 * are registered. 1 for r NULL (no --balancer: the operator's own). */
int registration_allows(struct registration *r, const char *authorization, size_t len);
/* Unregisters and joins; NULL is fine. */
void registration_stop(struct registration *r);

#endif
