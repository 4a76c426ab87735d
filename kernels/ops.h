/* ops.h — the device-ops interface the samplers are written against: memory,
 * noise, linear combinations, the denoiser's two passes (distances to the
 * scene means, posterior mix) and the decoder. Two implementations with the
 * same semantics: ops_cpu.c (the reference) and ops_cuda.cu (CUDA kernels);
 * tests/kernels_check compares them.
 *
 * Plain C on purpose: ops_cuda.cu includes it (engine.h uses <stdatomic.h>,
 * which nvcc's C++ does not take). Vectors are device pointers (host memory
 * for the CPU ops). Errors are sticky, like cudaGetLastError: an op that
 * fails records a message and later ops do nothing; callers check
 * ops->error() once per step. One ops object belongs to one thread. */
#ifndef SDGATE_OPS_H
#define SDGATE_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OPS_MAX_TERMS 6 /* lincomb: up to this many source vectors */
#define OPS_MAX_MIX 64  /* mix: up to this many weighted means */

/* The decoder: rgb = clamp(0.5 + 0.5 * (M z + bias)) with z the 4 latent
 * channels, after upsampling; M rows are R, G, B. Close in spirit to the
 * linear latent->RGB approximation A1111 uses for SD 1.x previews. */
struct ops_decoder {
	float m[3][4];
	float bias[3];
};
extern const struct ops_decoder OPS_DECODER;

/* mix's weights: only the components that matter, chosen by the host, so the
 * CPU and GPU sum the same terms in the same order. */
struct ops_mix {
	int count;
	int index[OPS_MAX_MIX];
	float weight[OPS_MAX_MIX];
};

struct ops {
	const char *name; /* "cpu" or the CUDA device name */
	void *ctx;
	float *(*alloc)(void *ctx, size_t n); /* n floats, zeroed; NULL on failure */
	void (*free)(void *ctx, float *p);
	void (*upload)(void *ctx, float *dst, const float *src, size_t n);
	void (*download)(void *ctx, float *dst, const float *src, size_t n);
	/* dst[i] = standard normal i of (seed, stream): see philox.h. */
	void (*noise)(void *ctx, float *dst, size_t n, uint64_t seed, uint32_t stream);
	/* dst = sum_j coef[j] * src[j], j < count <= OPS_MAX_TERMS; dst may be one
	 * of the sources. */
	void (*lincomb)(void *ctx, float *dst, size_t n, int count, const float *const *src, const float *coef);
	/* sum a[i]*b[i] in double, returned to the host. */
	double (*dot)(void *ctx, const float *a, const float *b, size_t n);
	/* out[k] = ||x - means[k]||^2 for k < K (means is K*n, contiguous),
	 * accumulated in double; out is host memory. */
	void (*dist2)(void *ctx, double *out, const float *x, const float *means, int K, size_t n);
	/* dst = a*x + b * sum_j mix.weight[j] * means[mix.index[j]] */
	void (*mix)(void *ctx, float *dst, const float *x, const float *means, const struct ops_mix *mix, size_t n,
		    float a, float b);
	/* Decodes a 4-channel planar latent (lw x lh) to RGB8 (host memory,
	 * (lw*scale) x (lh*scale) x 3, row-major). scale 1 (preview) or 8. */
	void (*decode)(void *ctx, uint8_t *rgb, const float *latent, int lw, int lh, int scale);
	/* NULL while all is well, else the first failure's message. */
	const char *(*error)(void *ctx);
	void (*destroy)(struct ops *o);
};

/* The CPU reference. Returns NULL on allocation failure; o->destroy frees. */
struct ops *ops_cpu_new(void);

/* CUDA, compiled only with SDGATE_HAVE_CUDA. Returns NULL and writes why when
 * no usable device (cudaGetDeviceCount's message, a failed probe kernel...). */
struct ops *ops_cuda_new(int device, char *why, size_t why_len);

/* Catmull-Rom weights for the x8 upsampler: phase p of 8, taps at
 * floor(src)-1 .. floor(src)+2. Shared by both implementations. */
void ops_upsample_weights(float w[8][4], int off[8]);

#ifdef __cplusplus
}
#endif
#endif
