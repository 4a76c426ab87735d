#!/bin/sh
# Container entry point: turns SDGATE_* environment variables (what Akash SDL,
# Kubernetes and systemd EnvironmentFiles set) into the program's flags.
# Usage: sdgate-entrypoint gateway|balancer|backend [extra flags...]
# Empty variables are skipped. Tokens are NOT turned into flags: the programs
# read SDGATE_ADMIN_TOKEN, SDGATE_PROVIDER_TOKEN and SDGATE_TOKEN from the
# environment themselves, so no token shows in the process list.
set -eu
prog=${1:?usage: sdgate-entrypoint gateway|balancer|backend [flags]}
shift
add() { # add FLAG VALUE: appends --FLAG VALUE when VALUE is not empty
	if [ -n "$2" ]; then set_args="$set_args --$1"; eval "arg_$n=\$2"; set_args="$set_args \"\$arg_$n\""; n=$((n + 1)); fi
}
n=0
set_args=""
case "$prog" in
gateway)
	add listen "${SDGATE_LISTEN:-0.0.0.0:8080}"
	for b in ${SDGATE_BALANCER:-http://127.0.0.1:7860}; do add balancer "$b"; done
	for p in ${SDGATE_TRUSTED_PROXIES:-}; do add trusted-proxy "$p"; done
	add web "${SDGATE_WEB:-/usr/local/share/sdgate/web}"
	exe=/usr/local/bin/sdgate-gateway
	;;
balancer)
	add listen "${SDGATE_LISTEN:-0.0.0.0:7860}"
	add db "${SDGATE_DB:-/var/lib/sdgate/balancer.db}"
	add db-wait-s "${SDGATE_DB_WAIT_S:-}"
	add lease-s "${SDGATE_LEASE_S:-}"
	# libpq reads PGPASSWORD itself; the shipped placeholder is no password.
	if [ "${PGPASSWORD:-}" = CHANGE_ME ]; then
		echo "sdgate-entrypoint: PGPASSWORD is the placeholder CHANGE_ME: set the database's real password" >&2
		exit 2
	fi
	add provider-tokens "${SDGATE_PROVIDER_TOKENS:-}"
	case "${SDGATE_ALLOW_PRIVATE_BACKENDS:-}" in 1 | true | yes) set_args="$set_args --allow-private-backends" ;; esac
	for b in ${SDGATE_BACKENDS:-}; do add backend "$b"; done
	for p in ${SDGATE_TRUSTED_PROXIES:-}; do add trusted-proxy "$p"; done
	for o in ${SDGATE_ALLOWED_ORIGINS:-}; do add allowed-origin "$o"; done
	exe=/usr/local/bin/sdgate-balancer
	;;
backend)
	add listen "${SDGATE_LISTEN:-0.0.0.0:7861}"
	add provider "${SDGATE_PROVIDER:-}"
	add location "${SDGATE_LOCATION:-}"
	add country "${SDGATE_COUNTRY:-}"
	add price-per-hour "${SDGATE_PRICE_PER_HOUR:-}"
	add gpu-class "${SDGATE_GPU_CLASS:-}"
	add upstream "${SDGATE_UPSTREAM:-}"
	add balancer "${SDGATE_BALANCER:-}"
	add public-url "${SDGATE_PUBLIC_URL:-}"
	add registration-file "${SDGATE_REGISTRATION_FILE:-}"
	exe=/usr/local/bin/sdgate-backend
	;;
*)
	echo "sdgate-entrypoint: unknown program '$prog' (gateway, balancer or backend)" >&2
	exit 2
	;;
esac
exe=${SDGATE_EXE:-$exe} # tests point this at a build tree
eval "exec \"\$exe\" $set_args \"\$@\""
