/* image.c — see image.h.
 *
 * Each format is walked as a structure, not matched on its first bytes: a
 * file must be one well-formed PNG, JPEG or WebP from its first byte to its
 * last, so a text (HTML, script) with an image's magic number in front, or an
 * image with something appended, is no image. The pixel data itself is not
 * decoded: what reaches clients is typed by its header, and its MIME type is
 * the one given here. */
#include "image.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static unsigned le16(const unsigned char *p) { return (unsigned)p[1] << 8 | p[0]; }

static unsigned le24(const unsigned char *p) { return (unsigned)p[2] << 16 | (unsigned)p[1] << 8 | p[0]; }

static int sane(unsigned long w, unsigned long h, struct image_facts *f)
{
	if (w < 1 || w > IMAGE_MAX_SIDE || h < 1 || h > IMAGE_MAX_SIDE)
		return 0;
	f->width = (int)w;
	f->height = (int)h;
	return 1;
}

/* PNG (ISO 15948): the signature, then chunks {length, type, data, CRC}, each
 * CRC right, IHDR first (13 bytes, a valid bit depth for its colour type), at
 * least one IDAT, and IEND (empty) ending the file exactly. */
static int png_ok(const unsigned char *p, size_t len, struct image_facts *f)
{
	if (len < 8 || memcmp(p, "\x89PNG\r\n\x1a\n", 8) != 0)
		return 0;
	size_t pos = 8;
	int idat = 0;
	while (len - pos >= 12) {
		uint32_t n = be32(p + pos);
		const unsigned char *type = p + pos + 4;
		if (n > 0x7fffffffu || n > len - pos - 12)
			return 0;
		for (int i = 0; i < 4; i++)
			if (!((type[i] >= 'A' && type[i] <= 'Z') || (type[i] >= 'a' && type[i] <= 'z')))
				return 0;
		if (crc32(0L, type, (uInt)n + 4) != be32(type + 4 + n))
			return 0;
		int ihdr = memcmp(type, "IHDR", 4) == 0;
		if ((pos == 8) != ihdr)
			return 0; /* IHDR first, and only first */
		if (ihdr) {
			const unsigned char *d = type + 4;
			unsigned depth = d[8], colour = d[9];
			int depth_ok = colour == 0 ? depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16
				       : colour == 3 ? depth == 1 || depth == 2 || depth == 4 || depth == 8
				       : colour == 2 || colour == 4 || colour == 6 ? depth == 8 || depth == 16
										   : 0;
			if (n != 13 || !depth_ok || d[10] != 0 || d[11] != 0 || d[12] > 1 ||
			    !sane(be32(d), be32(d + 4), f))
				return 0;
		}
		idat |= memcmp(type, "IDAT", 4) == 0;
		if (memcmp(type, "IEND", 4) == 0)
			return n == 0 && idat && pos + 12 == len;
		pos += 12 + (size_t)n;
	}
	return 0;
}

/* JPEG (ITU T.81): SOI, marker segments up to the first SOS with a frame
 * header (SOF0..15, which DHT C4, JPG C8 and DAC CC are not) before it, and
 * EOI as the last two bytes. The entropy-coded data is not walked. */
static int jpeg_ok(const unsigned char *p, size_t len, struct image_facts *f)
{
	if (len < 4 || p[0] != 0xff || p[1] != 0xd8 || p[len - 2] != 0xff || p[len - 1] != 0xd9)
		return 0;
	size_t pos = 2;
	int frame = 0;
	while (pos < len) {
		if (p[pos] != 0xff)
			return 0;
		while (pos < len && p[pos] == 0xff)
			pos++; /* fill bytes */
		if (pos >= len)
			return 0;
		unsigned m = p[pos++];
		if ((m >= 0xd0 && m <= 0xd7) || m == 0x01)
			continue; /* RSTn, TEM: no length */
		if (m == 0x00 || m == 0xd8 || m == 0xd9 || len - pos < 2)
			return 0;
		size_t seg = be16(p + pos);
		if (seg < 2 || seg > len - pos)
			return 0;
		if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc && !frame) {
			if (seg < 8 || !sane(be16(p + pos + 5), be16(p + pos + 3), f))
				return 0;
			frame = 1;
		}
		if (m == 0xda) /* SOS: the scan's data follows, up to EOI */
			return frame && len - (pos + seg) >= 2;
		pos += seg;
	}
	return 0;
}

/* WebP (RFC 9649): "RIFF", a size that is the file's length less 8, "WEBP",
 * then chunks (padded to even) that end exactly at the end; the first is
 * VP8 (a key frame with its start code), VP8L (signature 0x2f, version 0) or
 * VP8X, whose header gives the canvas size. */
static int webp_ok(const unsigned char *p, size_t len, struct image_facts *f)
{
	if (len < 20 || memcmp(p, "RIFF", 4) != 0 || memcmp(p + 8, "WEBP", 4) != 0 || le32(p + 4) != len - 8)
		return 0;
	size_t pos = 12;
	while (pos < len) {
		if (len - pos < 8)
			return 0;
		const unsigned char *id = p + pos, *d = p + pos + 8;
		size_t n = le32(p + pos + 4);
		if (n > len - pos - 8 || (n & 1 && n + 1 > len - pos - 8))
			return 0;
		if (pos == 12) {
			int ok = 0;
			if (memcmp(id, "VP8 ", 4) == 0)
				ok = n >= 10 && !(d[0] & 1) && memcmp(d + 3, "\x9d\x01\x2a", 3) == 0 &&
				     sane(le16(d + 6) & 0x3fff, le16(d + 8) & 0x3fff, f);
			else if (memcmp(id, "VP8L", 4) == 0)
				ok = n >= 5 && d[0] == 0x2f && le32(d + 1) >> 29 == 0 &&
				     sane((le32(d + 1) & 0x3fff) + 1, (le32(d + 1) >> 14 & 0x3fff) + 1, f);
			else if (memcmp(id, "VP8X", 4) == 0)
				ok = n >= 10 && sane(le24(d + 4) + 1ul, le24(d + 7) + 1ul, f);
			if (!ok)
				return 0;
		}
		pos += 8 + n + (n & 1);
	}
	return pos == len;
}

enum image_type image_check(const unsigned char *p, size_t len, struct image_facts *out)
{
	struct image_facts f = {IMAGE_NONE, 0, 0};
	if (p && png_ok(p, len, &f))
		f.type = IMAGE_PNG;
	else if (p && jpeg_ok(p, len, &f))
		f.type = IMAGE_JPEG;
	else if (p && webp_ok(p, len, &f))
		f.type = IMAGE_WEBP;
	if (f.type == IMAGE_NONE)
		f.width = f.height = 0;
	if (out)
		*out = f;
	return f.type;
}

const char *image_mime(enum image_type t)
{
	switch (t) {
	case IMAGE_PNG:
		return "image/png";
	case IMAGE_JPEG:
		return "image/jpeg";
	case IMAGE_WEBP:
		return "image/webp";
	default:
		return NULL;
	}
}

void image_files_free(struct image_files *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->v[i].data);
	free(f->v);
	f->v = NULL;
	f->n = 0;
}
