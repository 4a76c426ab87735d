/* image.h — an image file from a backend (a txt2img result or a live
 * preview), checked as hostile input: the format's signature and header are
 * read fully, and the MIME type clients see is the one determined here, never
 * one the provider chose. Pure functions, thread-safe; answer.c, jobs.c and
 * the results store call them; fuzzed through fuzz_balancer_answer. */
#ifndef SDGATE_IMAGE_H
#define SDGATE_IMAGE_H

#include <stddef.h>

#define IMAGE_MAX_SIDE 16384 /* pixels, width and height each */

enum image_type { IMAGE_NONE = 0, IMAGE_PNG, IMAGE_JPEG, IMAGE_WEBP };

struct image_facts {
	enum image_type type;
	int width, height; /* from the header; 0 when not read */
};

/* The type of the file p[0..len) when it is one well-formed PNG, JPEG or
 * WebP file from its first byte to its last, with a width and height of
 * 1..IMAGE_MAX_SIDE (IMAGE_NONE otherwise; p may be NULL). PNG: signature,
 * IHDR first (13 bytes, valid depth and colour type), every chunk's CRC,
 * an IDAT, IEND at the very end. JPEG: SOI, marker segments up to the first
 * SOS, a frame header (SOF0..15) before it, EOI at the end. WebP: RIFF size
 * equal to the length, "WEBP", chunks ending at the end, a first VP8, VP8L
 * or VP8X chunk with a valid header. Fills *out when not NULL. */
enum image_type image_check(const unsigned char *p, size_t len, struct image_facts *out);

/* "image/png", "image/jpeg", "image/webp"; NULL for IMAGE_NONE. */
const char *image_mime(enum image_type t);

/* Image files that passed image_check, with what it found: decoded once
 * (answer.c) and handed on as they are (the results store keeps them). */
struct image_file {
	unsigned char *data; /* malloc'd */
	size_t len;
	struct image_facts facts;
};
struct image_files {
	struct image_file *v; /* malloc'd, n of them */
	size_t n;
};
/* Frees every file and the list; *f is empty afterwards. */
void image_files_free(struct image_files *f);

#endif
