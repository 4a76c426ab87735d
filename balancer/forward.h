/* forward.h — the txt2img body a provider is sent, rebuilt from a client's
 * validated request: only the generation fields a backend needs, never what
 * steers the provider's A1111 beyond one image (output folders, filename
 * patterns, settings kept afterwards, saving to its disk, scripts and
 * extension arguments unless that backend allows them) and never unknown
 * keys or a client's credentials (SillyTavern's "auth" and "url").
 *
 * intake.c keeps the rebuild with scripts (allow_scripts 1) as the job's
 * request, so credentials never reach the SQLite file; dispatch.c rebuilds
 * it again for the chosen backend, without scripts unless it allows them.
 * Rebuilding a rebuild changes nothing. Pure; thread-safe. */
#ifndef SDGATE_BALANCER_FORWARD_H
#define SDGATE_BALANCER_FORWARD_H

#include <jansson.h>

#define FORWARD_MAX_INIT_IMAGES 4 /* img2img's init_images (a1111.h's A1111_MAX_INIT_IMAGES) */
#define FORWARD_MAX_STRING 8192   /* bytes of a forwarded string field (the prompt's bound at the backend) */
#define FORWARD_MAX_STYLES 64     /* names in "styles" */

/* The body to POST to a backend's /sdapi/v1/txt2img. request is borrowed
 * and not modified; allow_scripts: the backend declared "allow_scripts":
 * true (its /sdgate/v1/info or the operator's --backend fragment), so
 * script_name, script_args and alwayson_scripts go through. New reference
 * (NULL only when out of memory). */
json_t *forward_request(const json_t *request, int allow_scripts);

#endif
