/* internal.h — what the files of a1111/ share among themselves; private to
 * the library (callers include a1111.h only). */
#ifndef SDGATE_A1111_INTERNAL_H
#define SDGATE_A1111_INTERNAL_H

#include "a1111.h"

/* Checks one init image: base64 with or without a data: URL prefix, at
 * most A1111_MAX_INIT_IMAGE_BYTES decoded, PNG/JPEG/WebP by its magic bytes
 * (only the first bytes are decoded). Returns 0, or -1 with *type and *msg
 * set to the validation error (static strings). */
int a1111_image_check(const char *text, size_t len, struct a1111_init_image *out, const char **type, const char **msg);

#endif
