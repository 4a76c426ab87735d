/* register.h — joining a balancer: a thread that registers this backend
 * (POST {balancer}/v1/backends with the provider token and /sdgate/v1/info's
 * identity), sends heartbeats (POST /v1/backends/{id}/heartbeat) at the
 * interval the balancer asks for, registers again when the balancer forgot
 * it, and unregisters (DELETE) on shutdown. Blocking HTTP on its own thread. */
#ifndef SDGATE_REGISTER_H
#define SDGATE_REGISTER_H

struct backend;
struct registration;

/* Returns NULL on failure to start (logged). token may be NULL. */
struct registration *registration_start(const char *balancer_url, const char *token, struct backend *b);
/* Unregisters and joins; NULL is fine. */
void registration_stop(struct registration *r);

#endif
