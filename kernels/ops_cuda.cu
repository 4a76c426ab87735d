// ops_cuda.cu — ops.h on a CUDA device: the same semantics as ops_cpu.c,
// operation for operation (compiled with --fmad=false so that products and
// sums round as on the CPU; what still differs is logf/sinf/cosf in the noise
// and the order of the double reductions). tests/kernels_check compares the
// two. Every call runs on the default stream; errors are sticky (ops.h).
#include "ops.h"
#include "philox.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace
{

struct cuda {
	struct ops ops;
	char name[256];
	char err[256];
	float *rgbf; // decode scratch: lw*lh*3
	uint8_t *rgb8;
	double *partial;
	size_t rgbf_cap, rgb8_cap, partial_cap;
	double *host_partial;
	size_t host_partial_cap;
};

const int TPB = 256;

bool failed(cuda *c, cudaError_t e, const char *what)
{
	if (e == cudaSuccess)
		return c->err[0] != 0;
	if (!c->err[0])
		snprintf(c->err, sizeof c->err, "%s: %s", what, cudaGetErrorString(e));
	return true;
}

bool launched(cuda *c, const char *what) { return !failed(c, cudaGetLastError(), what); }

unsigned blocks(size_t n) { return (unsigned)((n + TPB - 1) / TPB); }

template <typename T> bool grow(cuda *c, T **p, size_t *cap, size_t n)
{
	if (*cap >= n)
		return true;
	if (*p)
		cudaFree(*p);
	*p = NULL;
	*cap = 0;
	if (failed(c, cudaMalloc((void **)p, n * sizeof(T)), "cudaMalloc"))
		return false;
	*cap = n;
	return true;
}

__global__ void k_noise(float *dst, size_t n, uint64_t seed, uint32_t stream)
{
	size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x, i = b * 4;
	if (i >= n)
		return;
	float r[4];
	philox_normal4(seed, stream, (uint32_t)b, r);
	for (int j = 0; j < 4 && i + j < n; j++)
		dst[i + j] = r[j];
}

struct terms {
	const float *src[OPS_MAX_TERMS];
	float coef[OPS_MAX_TERMS];
	int count;
};

__global__ void k_lincomb(float *dst, size_t n, terms t)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	float acc = t.coef[0] * t.src[0][i];
	for (int j = 1; j < t.count; j++)
		acc += t.coef[j] * t.src[j][i];
	dst[i] = acc;
}

// Block sums in double of f(i); grid.y picks the mean for dist2.
__device__ double block_sum(double v)
{
	__shared__ double sh[TPB];
	sh[threadIdx.x] = v;
	__syncthreads();
	for (int s = TPB / 2; s > 0; s >>= 1) {
		if ((int)threadIdx.x < s)
			sh[threadIdx.x] += sh[threadIdx.x + s];
		__syncthreads();
	}
	return sh[0];
}

__global__ void k_dot(double *partial, const float *a, const float *b, size_t n)
{
	double s = 0;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		s += (double)a[i] * (double)b[i];
	s = block_sum(s);
	if (threadIdx.x == 0)
		partial[blockIdx.x] = s;
}

__global__ void k_dist2(double *partial, const float *x, const float *means, size_t n)
{
	const float *m = means + (size_t)blockIdx.y * n;
	double s = 0;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		float d = x[i] - m[i];
		s += (double)(d * d);
	}
	s = block_sum(s);
	if (threadIdx.x == 0)
		partial[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
}

__global__ void k_mix(float *dst, const float *x, const float *means, ops_mix mx, size_t n, float a, float b)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	float acc = 0.0f;
	for (int j = 0; j < mx.count; j++)
		acc += mx.weight[j] * means[(size_t)mx.index[j] * n + i];
	dst[i] = a * x[i] + b * acc;
}

__device__ uint8_t to_u8(float v)
{
	float s = 0.5f + 0.5f * v;
	s = s < 0.0f ? 0.0f : s > 1.0f ? 1.0f : s;
	return (uint8_t)(s * 255.0f + 0.5f);
}

__global__ void k_latent_rgb(float *rgbf, uint8_t *rgb8, const float *z, int np, ops_decoder D)
{
	int p = blockIdx.x * blockDim.x + threadIdx.x;
	if (p >= np)
		return;
	for (int ch = 0; ch < 3; ch++) {
		float v = D.m[ch][0] * z[p] + D.m[ch][1] * z[np + p] + D.m[ch][2] * z[2 * np + p] +
			  D.m[ch][3] * z[3 * np + p] + D.bias[ch];
		rgbf[p * 3 + ch] = v;
		if (rgb8)
			rgb8[p * 3 + ch] = to_u8(v);
	}
}

struct upw {
	float w[8][4];
	int off[8];
};

__device__ int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// One output pixel: the four rows' horizontal sums, then the vertical one,
// in ops_cpu.c's order.
__global__ void k_upsample(uint8_t *rgb8, const float *rgbf, int lw, int lh, upw u)
{
	int X = blockIdx.x * blockDim.x + threadIdx.x, Y = blockIdx.y;
	int W = lw * 8;
	if (X >= W)
		return;
	int px = X & 7, bx = (X >> 3) + u.off[px], py = Y & 7, by = (Y >> 3) + u.off[py];
	for (int ch = 0; ch < 3; ch++) {
		float h[4];
		for (int t = 0; t < 4; t++) {
			const float *row = rgbf + (size_t)clampi(by - 1 + t, 0, lh - 1) * lw * 3;
			float acc = u.w[px][0] * row[clampi(bx - 1, 0, lw - 1) * 3 + ch];
			for (int k = 1; k < 4; k++)
				acc += u.w[px][k] * row[clampi(bx - 1 + k, 0, lw - 1) * 3 + ch];
			h[t] = acc;
		}
		float acc = u.w[py][0] * h[0];
		acc += u.w[py][1] * h[1];
		acc += u.w[py][2] * h[2];
		acc += u.w[py][3] * h[3];
		rgb8[((size_t)Y * W + X) * 3 + ch] = to_u8(acc);
	}
}

float *c_alloc(void *ctx, size_t n)
{
	cuda *c = (cuda *)ctx;
	float *p = NULL;
	if (c->err[0] || failed(c, cudaMalloc((void **)&p, (n ? n : 1) * sizeof(float)), "cudaMalloc"))
		return NULL;
	if (failed(c, cudaMemset(p, 0, (n ? n : 1) * sizeof(float)), "cudaMemset")) {
		cudaFree(p);
		return NULL;
	}
	return p;
}

void c_free(void *ctx, float *p) { cudaFree(p); }

void c_upload(void *ctx, float *dst, const float *src, size_t n)
{
	cuda *c = (cuda *)ctx;
	if (!c->err[0])
		failed(c, cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy to device");
}

void c_download(void *ctx, float *dst, const float *src, size_t n)
{
	cuda *c = (cuda *)ctx;
	if (!c->err[0])
		failed(c, cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
}

void c_noise(void *ctx, float *dst, size_t n, uint64_t seed, uint32_t stream)
{
	cuda *c = (cuda *)ctx;
	if (c->err[0] || n == 0)
		return;
	k_noise<<<blocks((n + 3) / 4), TPB>>>(dst, n, seed, stream);
	launched(c, "noise kernel");
}

void c_lincomb(void *ctx, float *dst, size_t n, int count, const float *const *src, const float *coef)
{
	cuda *c = (cuda *)ctx;
	if (c->err[0] || n == 0)
		return;
	terms t;
	memset(&t, 0, sizeof t);
	t.count = count;
	for (int j = 0; j < count; j++) {
		t.src[j] = src[j];
		t.coef[j] = coef[j];
	}
	k_lincomb<<<blocks(n), TPB>>>(dst, n, t);
	launched(c, "lincomb kernel");
}

// Runs a partial-sum kernel's results home and adds them up in double.
bool fetch_partials(cuda *c, size_t count)
{
	if (c->host_partial_cap < count) {
		double *p = (double *)realloc(c->host_partial, count * sizeof(double));
		if (!p) {
			snprintf(c->err, sizeof c->err, "out of host memory");
			return false;
		}
		c->host_partial = p;
		c->host_partial_cap = count;
	}
	return !failed(c, cudaMemcpy(c->host_partial, c->partial, count * sizeof(double), cudaMemcpyDeviceToHost),
		       "cudaMemcpy partial sums");
}

unsigned reduce_blocks(size_t n)
{
	unsigned b = blocks(n);
	return b > 64 ? 64 : b < 1 ? 1 : b;
}

double c_dot(void *ctx, const float *a, const float *b, size_t n)
{
	cuda *c = (cuda *)ctx;
	unsigned nb = reduce_blocks(n);
	if (c->err[0] || !grow(c, &c->partial, &c->partial_cap, nb))
		return 0;
	k_dot<<<nb, TPB>>>(c->partial, a, b, n);
	if (!launched(c, "dot kernel") || !fetch_partials(c, nb))
		return 0;
	double s = 0;
	for (unsigned i = 0; i < nb; i++)
		s += c->host_partial[i];
	return s;
}

void c_dist2(void *ctx, double *out, const float *x, const float *means, int K, size_t n)
{
	cuda *c = (cuda *)ctx;
	unsigned nb = reduce_blocks(n);
	for (int k = 0; k < K; k++)
		out[k] = 0;
	if (c->err[0] || K <= 0 || !grow(c, &c->partial, &c->partial_cap, (size_t)nb * K))
		return;
	k_dist2<<<dim3(nb, (unsigned)K), TPB>>>(c->partial, x, means, n);
	if (!launched(c, "dist2 kernel") || !fetch_partials(c, (size_t)nb * K))
		return;
	for (int k = 0; k < K; k++)
		for (unsigned i = 0; i < nb; i++)
			out[k] += c->host_partial[(size_t)k * nb + i];
}

void c_mix(void *ctx, float *dst, const float *x, const float *means, const struct ops_mix *mx, size_t n, float a,
	   float b)
{
	cuda *c = (cuda *)ctx;
	if (c->err[0] || n == 0)
		return;
	k_mix<<<blocks(n), TPB>>>(dst, x, means, *mx, n, a, b);
	launched(c, "mix kernel");
}

void c_decode(void *ctx, uint8_t *rgb, const float *z, int lw, int lh, int scale)
{
	cuda *c = (cuda *)ctx;
	int np = lw * lh;
	size_t out = (size_t)np * scale * scale * 3;
	if (c->err[0] || !grow(c, &c->rgbf, &c->rgbf_cap, (size_t)np * 3) || !grow(c, &c->rgb8, &c->rgb8_cap, out))
		return;
	k_latent_rgb<<<blocks((size_t)np), TPB>>>(c->rgbf, scale == 1 ? c->rgb8 : NULL, z, np, OPS_DECODER);
	if (!launched(c, "decode kernel"))
		return;
	if (scale != 1) {
		upw u;
		ops_upsample_weights(u.w, u.off);
		k_upsample<<<dim3(blocks((size_t)lw * 8), (unsigned)(lh * 8)), TPB>>>(c->rgb8, c->rgbf, lw, lh, u);
		if (!launched(c, "upsample kernel"))
			return;
	}
	failed(c, cudaMemcpy(rgb, c->rgb8, out, cudaMemcpyDeviceToHost), "cudaMemcpy image");
}

const char *c_error(void *ctx)
{
	cuda *c = (cuda *)ctx;
	return c->err[0] ? c->err : NULL;
}

void c_destroy(struct ops *o)
{
	cuda *c = (cuda *)o;
	cudaFree(c->rgbf);
	cudaFree(c->rgb8);
	cudaFree(c->partial);
	free(c->host_partial);
	free(c);
}

} // namespace

extern "C" struct ops *ops_cuda_new(int device, char *why, size_t why_len)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess) {
		snprintf(why, why_len, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
		return NULL;
	}
	if (device < 0 || device >= n) {
		snprintf(why, why_len, "CUDA device %d not present (%d device%s)", device, n, n == 1 ? "" : "s");
		return NULL;
	}
	cudaDeviceProp prop;
	if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
		snprintf(why, why_len, "CUDA device %d: %s", device, cudaGetErrorString(e));
		return NULL;
	}
	cuda *c = (cuda *)calloc(1, sizeof *c);
	if (!c) {
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	snprintf(c->name, sizeof c->name, "%s", prop.name);
	c->ops.name = c->name;
	c->ops.ctx = c;
	c->ops.alloc = c_alloc;
	c->ops.free = c_free;
	c->ops.upload = c_upload;
	c->ops.download = c_download;
	c->ops.noise = c_noise;
	c->ops.lincomb = c_lincomb;
	c->ops.dot = c_dot;
	c->ops.dist2 = c_dist2;
	c->ops.mix = c_mix;
	c->ops.decode = c_decode;
	c->ops.error = c_error;
	c->ops.destroy = c_destroy;
	// Probe: a kernel must run and agree with the host (catches a missing
	// kernel image for this architecture, a broken driver...).
	float *d = c_alloc(c, 4), h[4] = {0}, ref[4];
	c_noise(c, d, 4, 12345, 1);
	c_download(c, h, d, 4);
	if (d)
		cudaFree(d);
	philox_normal4(12345, 1, 0, ref);
	if (c->err[0] || h[0] != h[0] || fabsf(h[0] - ref[0]) > 1e-4f) {
		snprintf(why, why_len, "CUDA device %d (%s) failed its probe: %s", device, c->name,
			 c->err[0] ? c->err : "wrong noise");
		c_destroy(&c->ops);
		return NULL;
	}
	return &c->ops;
}
