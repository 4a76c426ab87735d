/* initimage.h — an img2img init image (base64 PNG or JPEG, as A1111's
 * decode_base64_to_image takes it) decoded to RGB8 for the engine, with
 * libpng and libjpeg-turbo (not stb_image: see initimage.c). The request
 * model (a1111/) has already checked the base64, the decoded size and the
 * magic bytes; this checks the dimensions from the header before decoding
 * anything else. Called on the jobs lane, never on the event loop (a large
 * PNG takes tens of milliseconds). Thread-safe. */
#ifndef SDGATE_INITIMAGE_H
#define SDGATE_INITIMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Each side of an init image at most this (the engine's own bound). */
#define INITIMAGE_MAX_SIDE 4096

/* Decodes text (base64, optionally after a data: URL prefix). Returns a
 * malloc'd width x height x 3 buffer (caller frees), or NULL with why (a
 * sentence for the client: not an image, WebP, too large, corrupt). */
uint8_t *initimage_decode(const char *text, size_t len, int *width, int *height, char *why, size_t why_len);

#endif
