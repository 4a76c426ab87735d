/* png.h — RGB8 images to PNG bytes (stb_image_write, deflate by zlib at its
 * fastest level) with A1111's "parameters" text chunk, and to base64.
 * Thread-safe after png_init() (which sets stb's process-wide options once);
 * called on the worker thread, never on the event loop. */
#ifndef SDGATE_PNG_H
#define SDGATE_PNG_H

#include <stddef.h>
#include <stdint.h>

/* Call once from main() before any thread encodes. */
void png_init(void);

/* Encodes width x height RGB8. parameters (may be NULL) becomes a tEXt chunk
 * "parameters" as A1111 writes it. Returns a malloc'd buffer (caller frees)
 * and its length, or NULL. */
unsigned char *png_encode(const uint8_t *rgb, int width, int height, const char *parameters, size_t *out_len);

/* png_encode + base64 in one: a malloc'd NUL-terminated string or NULL. */
char *png_encode_b64(const uint8_t *rgb, int width, int height, const char *parameters);

#endif
