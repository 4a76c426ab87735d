/* philox.h — Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy
 * as 1, 2, 3", SC'11) and Box–Muller normals, one source for the C reference
 * and the CUDA kernels so that the same seed gives the same noise on both.
 *
 * Counter layout used by the engine: c0 = block of 4 elements (index / 4),
 * c1 = stream id (see noise_stream()), c2 = c3 = 0; key = the 64-bit seed.
 * One Philox call yields 4 uint32 -> 2 Box–Muller pairs -> 4 normals. */
#ifndef SDGATE_PHILOX_H
#define SDGATE_PHILOX_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define PHILOX_FN __host__ __device__ static inline
#else
#define PHILOX_FN static inline
#endif

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

PHILOX_FN void philox4x32_10(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4])
{
	uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
	uint32_t k0 = key_in[0], k1 = key_in[1];
	for (int r = 0; r < 10; r++) {
		uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
		uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
		uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
		c0 = hi1 ^ c1 ^ k0;
		c1 = lo1;
		c2 = hi0 ^ c3 ^ k1;
		c3 = lo0;
		k0 += PHILOX_W0;
		k1 += PHILOX_W1;
	}
	out[0] = c0;
	out[1] = c1;
	out[2] = c2;
	out[3] = c3;
}

/* Stream ids: what the noise is for. Distinct (kind, step, sub) never collide. */
#define NOISE_INITIAL 1u
#define NOISE_STEP 2u
#define NOISE_HIRES 3u /* hires fix's second-pass start noise */
PHILOX_FN uint32_t noise_stream(uint32_t kind, uint32_t step, uint32_t sub)
{
	return (kind << 24) | ((step & 0xFFFFu) << 8) | (sub & 0xFFu);
}

/* Four standard normals for block b of stream `stream` under `seed`. u1 is in
 * (0, 1] so log never sees 0. Float math on purpose: the GPU does the same. */
PHILOX_FN void philox_normal4(uint64_t seed, uint32_t stream, uint32_t block, float out[4])
{
	const uint32_t ctr[4] = {block, stream, 0u, 0u};
	const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
	uint32_t r[4];
	philox4x32_10(ctr, key, r);
	const float inv32 = 2.3283064365386963e-10f; /* 2^-32 */
	for (int i = 0; i < 4; i += 2) {
		float u1 = ((float)r[i] + 1.0f) * inv32; /* rounds into (0, 1] */
		float u2 = (float)r[i + 1] * inv32;
		float rad = sqrtf(-2.0f * logf(u1));
		float th = 6.2831853071795865f * u2;
		out[i] = rad * cosf(th);
		out[i + 1] = rad * sinf(th);
	}
}

#endif
