/* initimage.c — see initimage.h. PNG through libpng's simplified API, JPEG
 * through libjpeg-turbo, both Debian's (fuzzed upstream, security-patched by
 * Debian): Debian's stb_image (2.27) overflows a Huffman table on a hostile
 * JPEG (stbi__build_huffman, fixed in 2.28), which
 * tests/unit/test_backend_initimage.c's mutations found. The width and
 * height are read from the header and checked before any pixel is decoded. */
#include "initimage.h"

#include "b64.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>      /* after stdio.h: it uses FILE */
#include <libpng16/png.h> /* not backend/png.h */

/* libjpeg stores its working memory in the decompressor, bounded here past
 * what a 4096 x 4096 progressive image needs. */
#define JPEG_MAX_MEMORY (256L << 20)

static int side_ok(long w, long h, char *why, size_t why_len)
{
	if (w >= 1 && h >= 1 && w <= INITIMAGE_MAX_SIDE && h <= INITIMAGE_MAX_SIDE)
		return 1;
	snprintf(why, why_len, "Image is %ldx%ld; each side should be at most %d pixels", w, h, INITIMAGE_MAX_SIDE);
	return 0;
}

static uint8_t *decode_png(const unsigned char *bytes, size_t n, int *width, int *height, char *why, size_t why_len)
{
	png_image img;
	memset(&img, 0, sizeof img);
	img.version = PNG_IMAGE_VERSION;
	if (!png_image_begin_read_from_memory(&img, bytes, n)) {
		snprintf(why, why_len, "Input should be a PNG image (%s)", img.message);
		png_image_free(&img);
		return NULL;
	}
	if (!side_ok((long)img.width, (long)img.height, why, why_len)) {
		png_image_free(&img);
		return NULL;
	}
	img.format = PNG_FORMAT_RGB;
	uint8_t *rgb = malloc(PNG_IMAGE_SIZE(img));
	if (!rgb || !png_image_finish_read(&img, NULL, rgb, 0, NULL)) {
		snprintf(why, why_len, "Image could not be decoded (corrupt or truncated PNG: %s)",
			 rgb ? img.message : "out of memory");
		free(rgb);
		png_image_free(&img);
		return NULL;
	}
	*width = (int)img.width;
	*height = (int)img.height;
	return rgb;
}

struct jpeg_fail {
	struct jpeg_error_mgr pub; /* first */
	jmp_buf jump;
	char message[JMSG_LENGTH_MAX];
};

static void jpeg_fail_exit(j_common_ptr c)
{
	struct jpeg_fail *f = (struct jpeg_fail *)c->err;
	f->pub.format_message(c, f->message);
	longjmp(f->jump, 1);
}

static void jpeg_quiet(j_common_ptr c, int level) { (void)c, (void)level; }

static uint8_t *decode_jpeg(const unsigned char *bytes, size_t n, int *width, int *height, char *why, size_t why_len)
{
	struct jpeg_decompress_struct cinfo;
	struct jpeg_fail fail;
	uint8_t *volatile rgb = NULL;
	memset(&cinfo, 0, sizeof cinfo);
	cinfo.err = jpeg_std_error(&fail.pub);
	fail.pub.error_exit = jpeg_fail_exit;
	fail.pub.emit_message = jpeg_quiet; /* warnings (corrupt data) go nowhere: the image is refused or decoded */
	fail.message[0] = '\0';
	if (setjmp(fail.jump)) {
		snprintf(why, why_len, "Image could not be decoded (corrupt or truncated JPEG: %s)", fail.message);
		free(rgb);
		jpeg_destroy_decompress(&cinfo);
		return NULL;
	}
	jpeg_create_decompress(&cinfo);
	cinfo.mem->max_memory_to_use = JPEG_MAX_MEMORY;
	jpeg_mem_src(&cinfo, bytes, (unsigned long)n);
	jpeg_read_header(&cinfo, TRUE);
	if (!side_ok((long)cinfo.image_width, (long)cinfo.image_height, why, why_len)) {
		jpeg_destroy_decompress(&cinfo);
		return NULL;
	}
	cinfo.out_color_space = JCS_RGB;
	jpeg_start_decompress(&cinfo);
	size_t stride = (size_t)cinfo.output_width * 3;
	rgb = malloc(stride * cinfo.output_height);
	if (!rgb || cinfo.output_components != 3) {
		snprintf(why, why_len, "Image could not be decoded (%s)", rgb ? "not an RGB JPEG" : "out of memory");
		free(rgb);
		jpeg_destroy_decompress(&cinfo);
		return NULL;
	}
	while (cinfo.output_scanline < cinfo.output_height) {
		JSAMPROW row = rgb + stride * cinfo.output_scanline;
		jpeg_read_scanlines(&cinfo, &row, 1);
	}
	jpeg_finish_decompress(&cinfo);
	*width = (int)cinfo.output_width;
	*height = (int)cinfo.output_height;
	jpeg_destroy_decompress(&cinfo);
	return rgb;
}

uint8_t *initimage_decode(const char *text, size_t len, int *width, int *height, char *why, size_t why_len)
{
	size_t n = 0;
	unsigned char *bytes = b64_decode_new(text, len, &n);
	uint8_t *rgb = NULL;
	if (!bytes || n < 8)
		snprintf(why, why_len, "Input should be a base64-encoded PNG or JPEG image");
	else if (!memcmp(bytes, "\x89PNG\r\n\x1a\n", 8))
		rgb = decode_png(bytes, n, width, height, why, why_len);
	else if (bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff)
		rgb = decode_jpeg(bytes, n, width, height, why, why_len);
	else if (n >= 12 && !memcmp(bytes, "RIFF", 4) && !memcmp(bytes + 8, "WEBP", 4))
		snprintf(why, why_len, "WebP init images are not supported by the native engine; send PNG or JPEG");
	else
		snprintf(why, why_len, "Input should be a PNG or JPEG image");
	free(bytes);
	return rgb;
}
