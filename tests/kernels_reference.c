/* kernels_reference.c — the half of tests/kernels_check that needs no GPU:
 * every sampler's test image on the CPU reference against the one stored in
 * tests/data/kernels/<sampler>.ppm, so that a change to the noise, the
 * scenes, a sampler, a schedule or the decoder fails on every machine, not
 * only where a GPU is there to compare with.
 *
 * What is stored: the exact sums of the image's 8x8 blocks (32x32 x RGB for
 * the 256x256 test image: the latent's own resolution, so nearly all of the
 * sampler's result), as a 16-bit binary PPM of the block means (value = 256
 * x mean, so it views as a small picture), with the FNV-1a hash of the full
 * image in a comment. The images are not bit-identical everywhere: builds
 * differ in libm and in fused multiply-adds (clang -march=native contracts
 * a*b+c, gcc with -std=c11 does not), which moves a few pixels by one level.
 * So the check is a tolerance and the hash is a figure ("bit-identical to
 * the stored build: yes/no"), not a condition.
 *
 * Tolerance, per sampler: at most 1% of the 3072 block values differ at all,
 * and none by more than 2 levels of 255. Measured: gcc and clang at -O0..-O3
 * and with ASan+UBSan: none differs (bit-identical images); clang -O3
 * -march=native: at most 8 differ, by 1/64 of a level. Small regressions move
 * far more: Karras' rho 7 -> 6.5 changes 385 (DPM++ 2M) and 2429 (DPM++ SDE)
 * block values, DPM++ 2M SDE's second-order term x0.9 changes 2296; a
 * different noise stream, scene or decoder changes nearly all of them. The
 * final images barely depend on the sampler's details (the model's posterior
 * collapses onto one scene early), so a 1-level change in many pixels is
 * what a regression looks like, and what this counts. */
#include "kernels_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KC_BLOCK ENGINE_LATENT_FACTOR
#define KC_THUMB (KC_SIZE / KC_BLOCK)
#define KC_THUMB_VALUES ((size_t)KC_THUMB * KC_THUMB * 3)
#define KC_THUMB_BYTES (KC_THUMB_VALUES * 2) /* 16-bit PPM */
#define KC_MAX_LEVELS 2                      /* on every block mean, levels of 255 */
#define KC_MAX_CHANGED_PCT 1                 /* block values that differ at all */

int kc_generate(struct engine *e, enum engine_sampler s, struct engine_result *r)
{
	struct engine_params p;
	char err[256];
	engine_params_default(&p);
	p.prompt = "a (red:1.2) circle and a yellow star over the sea at sunset";
	p.negative_prompt = "blurry, gray";
	p.sampler = s;
	p.width = p.height = KC_SIZE;
	p.steps = 25;
	p.seed = 4242;
	int rc = engine_generate(e, &p, NULL, NULL, NULL, NULL, r, err, sizeof err);
	if (rc)
		printf("  %s: engine_generate failed: %s\n", engine_sampler_name(s), err);
	return rc;
}

/* "DPM++ 2M SDE" -> "dpmpp_2m_sde": the file name of a sampler's image. */
static void sampler_slug(enum engine_sampler s, char *out, size_t len)
{
	size_t o = 0;
	for (const char *c = engine_sampler_name(s); *c && o + 3 < len; c++) {
		if (*c == '+')
			out[o++] = 'p';
		else if (*c == ' ')
			out[o++] = '_';
		else
			out[o++] = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
	}
	out[o] = 0;
}

static void ref_path(const char *dir, enum engine_sampler s, char *out, size_t len)
{
	char slug[64];
	sampler_slug(s, slug, sizeof slug);
	snprintf(out, len, "%s/%s.ppm", dir, slug);
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

/* The exact sums of the image's KC_BLOCK x KC_BLOCK blocks. */
static void block_sums(const struct engine_image *im, unsigned *sums)
{
	for (int ty = 0; ty < KC_THUMB; ty++)
		for (int tx = 0; tx < KC_THUMB; tx++)
			for (int c = 0; c < 3; c++) {
				unsigned sum = 0;
				for (int y = 0; y < KC_BLOCK; y++)
					for (int x = 0; x < KC_BLOCK; x++)
						sum += im->rgb[((size_t)(ty * KC_BLOCK + y) * KC_SIZE +
								(size_t)(tx * KC_BLOCK + x)) *
								       3 +
							       (size_t)c];
				sums[((size_t)ty * KC_THUMB + (size_t)tx) * 3 + (size_t)c] = sum;
			}
}

/* A block sum as a 16-bit PPM value (256 x the mean) and back. */
#define KC_SCALE (65536 / (KC_BLOCK * KC_BLOCK * 256))

/* Reads a 16-bit binary PPM written by write_ppm (KC_THUMB x KC_THUMB,
 * maxval 65535; comments allowed between the header's fields) into block
 * sums; *hash from its "fnv1a64" comment (0 if none). Returns 0, or -1 with
 * why. */
static int read_ppm(const char *path, unsigned *sums, uint64_t *hash, char *why, size_t why_len)
{
	char buf[KC_THUMB_BYTES + 1024];
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(why, why_len, "cannot open %s", path);
		return -1;
	}
	size_t n = fread(buf, 1, sizeof buf - 1, f), i = 2;
	fclose(f);
	buf[n] = 0;
	long field[3];
	int nf = 0;
	*hash = 0;
	if (n < 2 || memcmp(buf, "P6", 2) != 0)
		goto bad;
	while (nf < 3 && i < n) {
		if (buf[i] == '#') {
			const char *h = strstr(buf + i, "fnv1a64 "), *eol = strchr(buf + i, '\n');
			if (!eol)
				goto bad;
			if (h && h < eol)
				*hash = strtoull(h + 8, NULL, 16);
			i = (size_t)(eol - buf) + 1;
		} else if (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t') {
			i++;
		} else if (buf[i] >= '0' && buf[i] <= '9') {
			char *end;
			field[nf++] = strtol(buf + i, &end, 10);
			i = (size_t)(end - buf);
		} else {
			goto bad;
		}
	}
	/* one whitespace byte after maxval, then exactly the pixels */
	if (nf != 3 || field[0] != KC_THUMB || field[1] != KC_THUMB || field[2] != 65535 || i + 1 + KC_THUMB_BYTES != n)
		goto bad;
	const unsigned char *px = (const unsigned char *)buf + i + 1;
	for (size_t v = 0; v < KC_THUMB_VALUES; v++)
		sums[v] = (((unsigned)px[2 * v] << 8) | px[2 * v + 1]) / KC_SCALE;
	return 0;
bad:
	snprintf(why, why_len, "%s is not a %dx%d 16-bit binary PPM (P6, maxval 65535)", path, KC_THUMB, KC_THUMB);
	return -1;
}

static int write_ppm(const char *path, enum engine_sampler s, const unsigned *sums, uint64_t hash)
{
	unsigned char px[KC_THUMB_BYTES];
	for (size_t v = 0; v < KC_THUMB_VALUES; v++) {
		px[2 * v] = (unsigned char)((sums[v] * KC_SCALE) >> 8);
		px[2 * v + 1] = (unsigned char)(sums[v] * KC_SCALE);
	}
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	fprintf(f,
		"P6\n# sdgate kernels_check reference: %s, the %dx%d test image of tests/kernels_reference.c "
		"as %dx%d block means\n# fnv1a64 %016llx (the full RGB8 image)\n%d %d\n65535\n",
		engine_sampler_name(s), KC_SIZE, KC_SIZE, KC_BLOCK, KC_BLOCK, (unsigned long long)hash, KC_THUMB,
		KC_THUMB);
	size_t w = fwrite(px, 1, KC_THUMB_BYTES, f);
	return fclose(f) != 0 || w != KC_THUMB_BYTES ? -1 : 0;
}

static uint64_t image_hash(const struct engine_result *r)
{
	return fnv1a64(r->images[0].rgb, (size_t)KC_SIZE * KC_SIZE * 3);
}

int kc_reference_check(struct engine *cpu, const char *dir)
{
	int failures = 0;
	printf("CPU images against the stored reference (%s), %dx%d block means; tol: <= %d%% of them differ, "
	       "none by > %d levels:\n",
	       dir, KC_BLOCK, KC_BLOCK, KC_MAX_CHANGED_PCT, KC_MAX_LEVELS);
	for (int s = 0; s < ENGINE_SAMPLER_COUNT; s++) {
		char path[4096], why[4200];
		unsigned want[KC_THUMB_VALUES], got[KC_THUMB_VALUES];
		uint64_t want_hash;
		struct engine_result r;
		ref_path(dir, s, path, sizeof path);
		if (read_ppm(path, want, &want_hash, why, sizeof why)) {
			printf("  %-14s FAIL: %s\n", engine_sampler_name(s), why);
			failures++;
			continue;
		}
		if (kc_generate(cpu, s, &r)) {
			failures++;
			continue;
		}
		block_sums(&r.images[0], got);
		size_t changed = 0;
		unsigned mx = 0;
		for (size_t i = 0; i < KC_THUMB_VALUES; i++) {
			unsigned d = got[i] > want[i] ? got[i] - want[i] : want[i] - got[i];
			mx = d > mx ? d : mx;
			changed += d != 0;
		}
		int ok = changed * 100 <= KC_MAX_CHANGED_PCT * KC_THUMB_VALUES &&
			 mx <= KC_MAX_LEVELS * KC_BLOCK * KC_BLOCK;
		failures += !ok;
		printf("  %-14s %4zu of %zu block means differ, max by %.3f levels; image bit-identical to the "
		       "stored build: %-3s %.3f s %s\n",
		       engine_sampler_name(s), changed, KC_THUMB_VALUES, (double)mx / (KC_BLOCK * KC_BLOCK),
		       image_hash(&r) == want_hash ? "yes" : "no", r.seconds, ok ? "ok" : "FAIL");
		engine_result_free(&r);
	}
	return failures;
}

int kc_reference_write(struct engine *cpu, const char *dir)
{
	int failures = 0;
	for (int s = 0; s < ENGINE_SAMPLER_COUNT; s++) {
		char path[4096];
		unsigned sums[KC_THUMB_VALUES];
		struct engine_result r;
		if (kc_generate(cpu, s, &r)) {
			failures++;
			continue;
		}
		block_sums(&r.images[0], sums);
		ref_path(dir, s, path, sizeof path);
		int rc = write_ppm(path, s, sums, image_hash(&r));
		printf("  %-14s %s %s\n", engine_sampler_name(s), path, rc ? "FAILED to write" : "written");
		failures += rc != 0;
		engine_result_free(&r);
	}
	return failures;
}
