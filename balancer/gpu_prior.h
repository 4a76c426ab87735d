/* gpu_prior.h — what the router assumes about a GPU class before it has
 * measured anything: its relative Stable Diffusion throughput (A100 = 1.0),
 * from public benchmarks (sources in gpu_prior.c). Pure. */
#ifndef SDGATE_GPU_PRIOR_H
#define SDGATE_GPU_PRIOR_H

/* An unknown class is assumed a little slower than an RTX 3090: neither
 * first in line nor never tried (a mislabelled one is caught by the
 * router's re-tries, router.h). */
#define GPU_PRIOR_UNKNOWN 0.5

/* Seconds per unit of work (step x pixel x image, one model call a step) of a
 * 1.0 GPU: an A100 running SD 1.5 at 512x512 does about 20-25 steps a second
 * with A1111 (1 / (22 x 512 x 512) = 1.7e-7). Used only while no backend of
 * the pool has been measured: then only the ratios between classes matter,
 * and the checkpoint-switch penalty against it. */
#define GPU_PRIOR_BASE_SPP 1.7e-7

/* Relative throughput of a GPU class (a registration's gpu_class, such as
 * "h100", "A100-80GB", "rtx3090", "nvidia-l40s"): case, spaces, '-', '_'
 * and '.' and a leading nvidia/geforce/tesla/quadro are ignored; the
 * longest known name that starts the class wins ("a100-80gb" is an a100,
 * "h100sxm" an h100); GPU_PRIOR_UNKNOWN when none does (or cls is NULL). */
double gpu_prior(const char *cls);

/* The highest prior in the table: the fastest class there is. */
double gpu_prior_best(void);

#endif
