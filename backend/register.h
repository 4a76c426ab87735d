/* register.h — joining a balancer: a thread that registers this backend
 * (POST {balancer}/v1/backends with the provider token and /sdgate/v1/info's
 * identity), sends heartbeats (POST /v1/backends/{id}/heartbeat) at the
 * interval the balancer asks for, registers again when the balancer forgot
 * it, and unregisters (DELETE) on shutdown. Heartbeats and DELETE carry the
 * registration's "secret" from the balancer's answer; its "backend_token" is
 * what the balancer sends on its calls here (registration_allows). Both are
 * kept in memory and, with --registration-file (regfile.h), in a file: a
 * backend restarted after a crash takes its registration up again at once
 * (heartbeats with that secret, trusts that token) instead of waiting for
 * the old one to expire; when the balancer answers 404, 401 or 403 to that
 * heartbeat it registers anew and rewrites the file. A clean shutdown that
 * deregisters removes the file. Blocking HTTP and file I/O on its own
 * thread. */
#ifndef SDGATE_REGISTER_H
#define SDGATE_REGISTER_H

#include <stddef.h>

struct backend;
struct registration;

/* Returns NULL on failure to start (logged). token and file may be NULL. */
struct registration *registration_start(const char *balancer_url, const char *token, const char *file,
					struct backend *b);
/* Loop thread: 1 if a request with this Authorization header value (not
 * NUL-terminated) comes from the balancer we registered with; 0 before we
 * are registered. 1 for r NULL (no --balancer: the operator's own). */
int registration_allows(struct registration *r, const char *authorization, size_t len);
/* Unregisters and joins; NULL is fine. */
void registration_stop(struct registration *r);

#endif
