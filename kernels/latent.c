/* latent.c — see latent.h. */
#include "latent.h"

#include "scene.h"

#include <math.h>
#include <stdlib.h>

/* The source rectangle (in source pixels) a target of tw x th maps from, per
 * resize mode: x = ox + tx * scale_x (target pixel units). Mode 2 maps past
 * the image's edges; sampling clamps them to the edge pixels. */
struct mapping {
	double ox, oy, kx, ky;
};

static struct mapping map_for(int sw, int sh, int tw, int th, int mode)
{
	double rx = (double)sw / tw, ry = (double)sh / th;
	struct mapping m = {0, 0, rx, ry};
	if (mode == 1 || mode == 2) {
		/* 1: cover (the smaller ratio: more of the image is cut); 2: fit. */
		double k = mode == 1 ? fmin(rx, ry) : fmax(rx, ry);
		m.kx = m.ky = k;
		m.ox = (sw - tw * k) / 2;
		m.oy = (sh - th * k) / 2;
	}
	return m;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Mean RGB (0..1) of the source pixels under target rectangle [x0,x1) x
 * [y0,y1) (source units), at least the one pixel under its centre. */
static void area_mean(const uint8_t *rgb, int sw, int sh, double x0, double x1, double y0, double y1, float out[3])
{
	int ia = clampi((int)floor(x0 + 1e-9), 0, sw - 1), ib = clampi((int)ceil(x1 - 1e-9) - 1, 0, sw - 1);
	int ja = clampi((int)floor(y0 + 1e-9), 0, sh - 1), jb = clampi((int)ceil(y1 - 1e-9) - 1, 0, sh - 1);
	if (ib < ia)
		ia = ib = clampi((int)floor((x0 + x1) / 2), 0, sw - 1);
	if (jb < ja)
		ja = jb = clampi((int)floor((y0 + y1) / 2), 0, sh - 1);
	double sum[3] = {0, 0, 0};
	for (int y = ja; y <= jb; y++)
		for (int x = ia; x <= ib; x++)
			for (int c = 0; c < 3; c++)
				sum[c] += rgb[((size_t)y * sw + x) * 3 + c];
	double n = (double)(ib - ia + 1) * (jb - ja + 1) * 255.0;
	for (int c = 0; c < 3; c++)
		out[c] = (float)(sum[c] / n);
}

/* Encodes the image to an lw x lh latent through mapping m (one latent cell
 * = ENGINE_LATENT_FACTOR target pixels). */
static void encode_cells(const uint8_t *rgb, int sw, int sh, struct mapping m, int lw, int lh, float *latent)
{
	const int f = ENGINE_LATENT_FACTOR;
	size_t plane = (size_t)lw * lh;
	for (int y = 0; y < lh; y++)
		for (int x = 0; x < lw; x++) {
			float c[3], z[4];
			area_mean(rgb, sw, sh, m.ox + x * f * m.kx, m.ox + (x + 1) * f * m.kx, m.oy + y * f * m.ky,
				  m.oy + (y + 1) * f * m.ky, c);
			scene_encode(c, z);
			for (int k = 0; k < 4; k++)
				latent[k * plane + (size_t)y * lw + x] = z[k];
		}
}

int latent_encode_image(const uint8_t *rgb, int sw, int sh, int resize_mode, int lw, int lh, float *latent)
{
	const int f = ENGINE_LATENT_FACTOR;
	if (resize_mode != 3) {
		encode_cells(rgb, sw, sh, map_for(sw, sh, lw * f, lh * f, resize_mode), lw, lh, latent);
		return 0;
	}
	int ow = sw / f > 0 ? sw / f : 1, oh = sh / f > 0 ? sh / f : 1;
	float *own = malloc((size_t)4 * ow * oh * sizeof *own);
	if (!own)
		return -1;
	encode_cells(rgb, sw, sh, map_for(sw, sh, ow * f, oh * f, 0), ow, oh, own);
	latent_resample(own, ow, oh, latent, lw, lh, ENGINE_UPSCALE_BILINEAR);
	free(own);
	return 0;
}

/* Keys' cubic convolution, a = -0.75 (torch's bicubic). */
static double cubic(double t)
{
	const double a = -0.75;
	t = fabs(t);
	if (t <= 1)
		return ((a + 2) * t - (a + 3)) * t * t + 1;
	if (t < 2)
		return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
	return 0;
}

/* Taps and weights along one axis for destination index d. */
static int taps(int d, int sn, int dn, enum engine_upscale mode, int idx[4], double w[4])
{
	double s = ((double)d + 0.5) * sn / dn - 0.5;
	if (mode == ENGINE_UPSCALE_NEAREST) {
		idx[0] = clampi((int)floor((double)d * sn / dn), 0, sn - 1);
		w[0] = 1;
		return 1;
	}
	if (mode == ENGINE_UPSCALE_NEAREST_EXACT) {
		idx[0] = clampi((int)floor(((double)d + 0.5) * sn / dn), 0, sn - 1);
		w[0] = 1;
		return 1;
	}
	int i0 = (int)floor(s);
	double t = s - i0;
	if (mode == ENGINE_UPSCALE_BILINEAR) {
		if (s < 0)
			i0 = 0, t = 0;
		idx[0] = clampi(i0, 0, sn - 1);
		idx[1] = clampi(i0 + 1, 0, sn - 1);
		w[0] = 1 - t;
		w[1] = t;
		return 2;
	}
	for (int k = 0; k < 4; k++) {
		idx[k] = clampi(i0 - 1 + k, 0, sn - 1);
		w[k] = cubic(t - (k - 1));
	}
	return 4;
}

void latent_resample(const float *src, int sw, int sh, float *dst, int dw, int dh, enum engine_upscale mode)
{
	size_t sp = (size_t)sw * sh, dp = (size_t)dw * dh;
	for (int y = 0; y < dh; y++) {
		int iy[4], ix[4];
		double wy[4], wx[4];
		int ny = taps(y, sh, dh, mode, iy, wy);
		for (int x = 0; x < dw; x++) {
			int nx = taps(x, sw, dw, mode, ix, wx);
			for (int c = 0; c < 4; c++) {
				const float *s = src + c * sp;
				double v = 0;
				for (int a = 0; a < ny; a++)
					for (int b = 0; b < nx; b++)
						v += wy[a] * wx[b] * s[(size_t)iy[a] * sw + ix[b]];
				dst[c * dp + (size_t)y * dw + x] = (float)v;
			}
		}
	}
}
