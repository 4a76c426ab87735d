/* gpu_prior.c — see gpu_prior.h. The table of relative Stable Diffusion
 * throughput per GPU class (A100 = 1.0), batch-1 A1111/diffusers-style
 * inference at 512-1024 px. Public benchmarks disagree by tens of percent
 * (software stack, xformers/TensorRT, batch size), so these are priors: the
 * router replaces them with measurements after a backend's first job, and
 * what matters here is the order and rough ratio. Sources (what was read):
 *  [S3]  Stability AI's SD3 benchmark as reported by TechPowerUp/ScreenHacker
 *        ("Intel Gaudi2 ... beats NVIDIA H100 at Stable Diffusion 3"):
 *        16 accelerators, batch 16 each, base PyTorch: H100 595 images/s,
 *        A100 381 images/s -> H100 = 1.56 x A100.
 *  [BT]  Baseten, "Unlocking the full power of NVIDIA H100 GPUs for ML
 *        inference with TensorRT" (SDXL): H100 "two to three times better
 *        throughput than A100s" with TensorRT.
 *  [LB]  Lambda, "All You Need Is One GPU: Inference Benchmark for Stable
 *        Diffusion" (A100 80GB PCIe, RTX 3090, RTX A5500, RTX A6000,
 *        RTX 3080, RTX 8000): single image, the A100 is "only faster than
 *        3080 by 33%"; at the largest batch "2.5x" the 3080's throughput.
 *  [TH]  Tom's Hardware, "Stable Diffusion Benchmarks: 45 Nvidia, AMD, and
 *        Intel GPUs Compared" (A1111, consumer cards: RTX 4090, 4080, 3090,
 *        3080, ...).
 *  [SA]  SaladCloud, "Stable Diffusion v1.4 Inference Benchmark - GPUs &
 *        Clouds Compared" (RTX 3060, RTX 3090, A100, V100, T4, RTX A5000)
 *        and "Benchmarking Stable Diffusion v1.5 across 23 consumer GPUs".
 *  [GA]  gpuadvisor.com "Best GPU for Stable Diffusion" (L40S: best
 *        images per dollar; H100 vs A100 for SDXL).
 *  [SP]  NVIDIA data sheets, dense FP16 tensor TFLOPS, used to place a
 *        class between two measured ones where no benchmark above gives it
 *        (A100 312, L40S 362, L40 181, A10 125, T4 65, V100 125, L4 121).
 * The papers' own pages were read through a search index (openings and the
 * quoted figures); figures marked "~" are placed from the rankings and the
 * spec ratios rather than read off a table. Pure. */
#include "gpu_prior.h"

#include <ctype.h>
#include <stddef.h>
#include <string.h>

struct prior {
	const char *name; /* normalized: lower case letters and digits */
	double speed;     /* A100 = 1.0 */
};

static const struct prior PRIORS[] = {
	/* H100: 1.56x in PyTorch [S3], 2-3x with TensorRT [BT]; SXM above PCIe. */
	{"h200", 2.0},
	{"h100", 1.8},
	{"h100sxm", 1.9},
	{"h100pcie", 1.6},
	{"gh200", 2.0},
	/* A100 80 GB / 40 GB: the reference [LB][S3]; the 40 GB part has the
	 * same compute and less bandwidth (~). */
	{"a100", 1.0},
	{"a10080gb", 1.0},
	{"a10040gb", 0.95},
	/* Ada data-centre cards: L40S ~ A100 for SD ([GA], [SP] 362 vs 312
	 * dense FP16 but GDDR6), L40 half the L40S's tensor rate (~, [SP]), L4
	 * small (~, [SP], 72 W). */
	{"l40s", 1.05},
	{"l40", 0.8},
	{"l4", 0.3},
	/* Consumer cards [TH][LB]: the 4090 about an A100 at batch 1, the
	 * 3090 about half (Lambda: A100 1.33x a 3080 single, 2.5x batched; the
	 * 3090 ~15% above the 3080). */
	{"rtx5090", 1.3},
	{"rtx4090", 1.0},
	{"rtx4080", 0.75},
	{"rtx4070", 0.5},
	{"rtx3090", 0.55},
	{"rtx3090ti", 0.6},
	{"rtx3080", 0.47},
	{"rtx3070", 0.35},
	{"rtx3060", 0.25},
	/* Workstation Ampere/Turing [LB]: A6000 ~ 3090, A5000 a bit below,
	 * RTX 8000 (Turing) ~ 0.6 x A6000. */
	{"rtxa6000", 0.55},
	{"a6000", 0.55},
	{"rtx6000ada", 1.0},
	{"rtxa5000", 0.45},
	{"a5000", 0.45},
	{"rtxa4000", 0.3},
	{"a4000", 0.3},
	{"rtx8000", 0.35},
	/* Cloud inference cards [SA][SP]: A10/A10G ~0.4, V100 ~0.45, T4 ~0.15. */
	{"a10", 0.4},
	{"a10g", 0.4},
	{"v100", 0.45},
	{"t4", 0.15},
	/* Pascal, no tensor cores: below a T4 in FP16 (~, [SP] 21 TFLOPS FP16). */
	{"p100", 0.12},
	/* A CPU: about two orders of magnitude below a mid GPU (~[LB], which
	 * also ran CPUs). */
	{"cpu", 0.005},
};

/* Lower-case letters and digits of cls, without a vendor/brand prefix. */
static void normalize(const char *cls, char *out, size_t cap)
{
	size_t n = 0;
	for (; *cls && n + 1 < cap; cls++)
		if (isalnum((unsigned char)*cls))
			out[n++] = (char)tolower((unsigned char)*cls);
	out[n] = '\0';
	static const char *const PREFIXES[] = {"nvidia", "geforce", "tesla", "quadro"};
	for (int again = 1; again;) {
		again = 0;
		for (size_t i = 0; i < sizeof PREFIXES / sizeof PREFIXES[0]; i++) {
			size_t p = strlen(PREFIXES[i]);
			if (strncmp(out, PREFIXES[i], p) == 0) {
				memmove(out, out + p, strlen(out + p) + 1);
				again = 1;
			}
		}
	}
}

double gpu_prior(const char *cls)
{
	if (!cls)
		return GPU_PRIOR_UNKNOWN;
	char name[64];
	normalize(cls, name, sizeof name);
	const struct prior *best = NULL;
	size_t best_len = 0;
	for (size_t i = 0; i < sizeof PRIORS / sizeof PRIORS[0]; i++) {
		size_t n = strlen(PRIORS[i].name);
		if (n > best_len && strncmp(name, PRIORS[i].name, n) == 0) {
			best = &PRIORS[i];
			best_len = n;
		}
	}
	return best ? best->speed : GPU_PRIOR_UNKNOWN;
}

double gpu_prior_best(void)
{
	double best = 0;
	for (size_t i = 0; i < sizeof PRIORS / sizeof PRIORS[0]; i++)
		if (PRIORS[i].speed > best)
			best = PRIORS[i].speed;
	return best;
}
