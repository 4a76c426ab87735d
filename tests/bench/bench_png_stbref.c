/* The reference for bench_png: stb_image_write exactly as shipped (its own
 * deflate at level 8, adaptive per-row filters), in its own translation unit
 * so that its settings cannot leak into backend/png.c. */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#include <stb_image_write.h>

#include <stdlib.h>

unsigned char *bench_stb_default_png(const unsigned char *rgb, int w, int h, int *len);

unsigned char *bench_stb_default_png(const unsigned char *rgb, int w, int h, int *len)
{
	return stbi_write_png_to_mem(rgb, w * 3, w, h, 3, len);
}
