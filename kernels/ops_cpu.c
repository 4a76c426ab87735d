/* ops_cpu.c — the reference implementation of ops.h on the CPU, one thread.
 * Written for clarity first and for speed where it is cheap (the denoiser is
 * two passes over K means per model call). ops_cuda.cu mirrors each function. */
#include "ops.h"
#include "philox.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const struct ops_decoder OPS_DECODER = {
	.m = {{0.298f, 0.187f, -0.158f, -0.184f}, {0.207f, 0.286f, 0.189f, -0.271f}, {0.208f, 0.173f, 0.264f, -0.473f}},
	.bias = {0.0f, 0.0f, 0.0f},
};

void ops_upsample_weights(float w[8][4], int off[8])
{
	for (int p = 0; p < 8; p++) {
		float f = ((float)p + 0.5f) / 8.0f - 0.5f;
		int o = f < 0.0f ? -1 : 0;
		float t = f - (float)o, t2 = t * t, t3 = t2 * t;
		off[p] = o;
		w[p][0] = 0.5f * (-t3 + 2.0f * t2 - t);
		w[p][1] = 0.5f * (3.0f * t3 - 5.0f * t2 + 2.0f);
		w[p][2] = 0.5f * (-3.0f * t3 + 4.0f * t2 + t);
		w[p][3] = 0.5f * (t3 - t2);
	}
}

struct cpu {
	struct ops ops;
	float *rgbf;   /* decode scratch: lw*lh*3 linear RGB */
	float *rowbuf; /* decode scratch: lh * W * 3 after the horizontal pass */
	size_t rgbf_cap, rowbuf_cap;
	int failed;
};

static float *cpu_alloc(void *ctx, size_t n)
{
	struct cpu *c = ctx;
	float *p = calloc(n ? n : 1, sizeof *p);
	if (!p)
		c->failed = 1;
	return p;
}

static void cpu_free(void *ctx, float *p) { free(p); }

static void cpu_copy(void *ctx, float *dst, const float *src, size_t n) { memcpy(dst, src, n * sizeof *dst); }

static void cpu_noise(void *ctx, float *dst, size_t n, uint64_t seed, uint32_t stream)
{
	float r[4];
	for (size_t i = 0; i < n; i += 4) {
		philox_normal4(seed, stream, (uint32_t)(i / 4), r);
		size_t m = n - i < 4 ? n - i : 4;
		for (size_t j = 0; j < m; j++)
			dst[i + j] = r[j];
	}
}

static void cpu_lincomb(void *ctx, float *dst, size_t n, int count, const float *const *src, const float *coef)
{
	/* Same order of operations as the CUDA kernel: acc = c0*s0; acc += cj*sj. */
	for (size_t i = 0; i < n; i++) {
		float acc = coef[0] * src[0][i];
		for (int j = 1; j < count; j++)
			acc += coef[j] * src[j][i];
		dst[i] = acc;
	}
}

static double cpu_dot(void *ctx, const float *a, const float *b, size_t n)
{
	double s = 0.0;
	for (size_t i = 0; i < n; i++)
		s += (double)a[i] * (double)b[i];
	return s;
}

static void cpu_dist2(void *ctx, double *out, const float *x, const float *means, int K, size_t n)
{
	for (int k = 0; k < K; k++) {
		const float *m = means + (size_t)k * n;
		double s = 0.0;
		size_t i = 0;
		/* Chunks of 64 summed in float (8 independent lanes), chunk sums in
		 * double: fast, and far more accurate than the posterior needs. */
		for (; i + 64 <= n; i += 64) {
			float lane[8] = {0};
			for (size_t j = 0; j < 64; j += 8)
				for (int l = 0; l < 8; l++) {
					float d = x[i + j + (size_t)l] - m[i + j + (size_t)l];
					lane[l] += d * d;
				}
			s += (double)((lane[0] + lane[1]) + (lane[2] + lane[3])) +
			     (double)((lane[4] + lane[5]) + (lane[6] + lane[7]));
		}
		for (; i < n; i++) {
			double d = (double)x[i] - (double)m[i];
			s += d * d;
		}
		out[k] = s;
	}
}

static void cpu_mix(void *ctx, float *dst, const float *x, const float *means, const struct ops_mix *mx, size_t n,
		    float a, float b)
{
	/* dst may alias x: each element reads x[i] before writing dst[i]. */
	for (size_t i = 0; i < n; i++) {
		float acc = 0.0f;
		for (int j = 0; j < mx->count; j++)
			acc += mx->weight[j] * means[(size_t)mx->index[j] * n + i];
		dst[i] = a * x[i] + b * acc;
	}
}

static uint8_t to_u8(float v)
{
	float s = 0.5f + 0.5f * v;
	s = s < 0.0f ? 0.0f : s > 1.0f ? 1.0f : s;
	return (uint8_t)(s * 255.0f + 0.5f);
}

static int grow(float **buf, size_t *cap, size_t n)
{
	if (*cap >= n)
		return 0;
	float *p = realloc(*buf, n * sizeof *p);
	if (!p)
		return -1;
	*buf = p;
	*cap = n;
	return 0;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Linear map at latent resolution first (it commutes with the linear
 * upsampler; the clamp comes last), then separable Catmull-Rom x8. */
static void cpu_decode(void *ctx, uint8_t *rgb, const float *z, int lw, int lh, int scale)
{
	struct cpu *c = ctx;
	size_t np = (size_t)lw * (size_t)lh;
	if (c->failed || grow(&c->rgbf, &c->rgbf_cap, np * 3)) {
		c->failed = 1;
		return;
	}
	const struct ops_decoder *D = &OPS_DECODER;
	for (size_t p = 0; p < np; p++)
		for (int ch = 0; ch < 3; ch++)
			c->rgbf[p * 3 + (size_t)ch] = D->m[ch][0] * z[p] + D->m[ch][1] * z[np + p] +
						      D->m[ch][2] * z[2 * np + p] + D->m[ch][3] * z[3 * np + p] +
						      D->bias[ch];
	if (scale == 1) {
		for (size_t i = 0; i < np * 3; i++)
			rgb[i] = to_u8(c->rgbf[i]);
		return;
	}
	int W = lw * 8, H = lh * 8;
	float w[8][4];
	int off[8];
	ops_upsample_weights(w, off);
	if (grow(&c->rowbuf, &c->rowbuf_cap, (size_t)lh * (size_t)W * 3)) {
		c->failed = 1;
		return;
	}
	for (int y = 0; y < lh; y++)
		for (int X = 0; X < W; X++) {
			int p = X & 7, b = (X >> 3) + off[p];
			for (int ch = 0; ch < 3; ch++) {
				float acc = w[p][0] * c->rgbf[((size_t)y * lw + clampi(b - 1, 0, lw - 1)) * 3 + ch];
				for (int t = 1; t < 4; t++)
					acc += w[p][t] *
					       c->rgbf[((size_t)y * lw + clampi(b - 1 + t, 0, lw - 1)) * 3 + ch];
				c->rowbuf[((size_t)y * W + X) * 3 + ch] = acc;
			}
		}
	for (int Y = 0; Y < H; Y++) {
		int p = Y & 7, b = (Y >> 3) + off[p];
		const float *r[4];
		for (int t = 0; t < 4; t++)
			r[t] = c->rowbuf + (size_t)clampi(b - 1 + t, 0, lh - 1) * W * 3;
		uint8_t *o = rgb + (size_t)Y * W * 3;
		for (int i = 0; i < W * 3; i++) {
			float acc = w[p][0] * r[0][i];
			acc += w[p][1] * r[1][i];
			acc += w[p][2] * r[2][i];
			acc += w[p][3] * r[3][i];
			o[i] = to_u8(acc);
		}
	}
}

static const char *cpu_error(void *ctx)
{
	struct cpu *c = ctx;
	return c->failed ? "out of memory" : NULL;
}

static void cpu_destroy(struct ops *o)
{
	struct cpu *c = (struct cpu *)o;
	free(c->rgbf);
	free(c->rowbuf);
	free(c);
}

struct ops *ops_cpu_new(void)
{
	struct cpu *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->ops = (struct ops){
		.name = "cpu",
		.ctx = c,
		.alloc = cpu_alloc,
		.free = cpu_free,
		.upload = cpu_copy,
		.download = cpu_copy,
		.noise = cpu_noise,
		.lincomb = cpu_lincomb,
		.dot = cpu_dot,
		.dist2 = cpu_dist2,
		.mix = cpu_mix,
		.decode = cpu_decode,
		.error = cpu_error,
		.destroy = cpu_destroy,
	};
	return &c->ops;
}
