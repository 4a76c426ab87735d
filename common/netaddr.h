/* netaddr.h — which IP addresses are "public": the balancer refuses to call
 * a registered backend at a loopback, private, link-local, shared (CGNAT),
 * unspecified, multicast or reserved address unless --allow-private-backends
 * (fetch.c checks the address curl actually connected to; api_backends.c the
 * literal host of a registration URL). Pure functions; thread-safe. */
#ifndef SDGATE_NETADDR_H
#define SDGATE_NETADDR_H

/* 1 if text is an IPv4 or IPv6 literal (brackets allowed) that is not public,
 * 0 if it is a public address, -1 if it is not an IP literal. */
int netaddr_is_private(const char *text);

#endif
