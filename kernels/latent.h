/* latent.h — the host-side latent work of img2img and hires fix: an init
 * image resized as A1111's resize modes do and encoded to latents (the
 * decoder's pseudo-inverse, scene_encode), and a latent resampled to another
 * size (hires fix's "Latent" upscalers). Both run on the host for every
 * device: a latent is 1/64th of the image's pixels (64 K floats at 1024²),
 * so the CPU and the GPU engines start their second pass from bit-identical
 * latents and no CUDA op is needed. Pure; used by engine.c. */
#ifndef SDGATE_LATENT_H
#define SDGATE_LATENT_H

#include "engine.h"

/* Encodes rgb (sw x sh, RGB8, row-major) to a planar 4 x lw x lh latent for
 * an image of lw*8 x lh*8, as A1111's resize_mode: 0 stretches to the target,
 * 1 scales to cover and crops the centre, 2 scales to fit and fills the
 * borders with the image's edge pixels, 3 encodes at the image's own size
 * (rounded down to whole latent cells, at least one) and resamples the latent
 * bilinearly. Each latent cell is the mean of the source pixels under it.
 * Returns 0, or -1 when out of memory. */
int latent_encode_image(const uint8_t *rgb, int sw, int sh, int resize_mode, int lw, int lh, float *latent);

/* Resamples a planar 4-channel latent sw x sh to dw x dh, half-pixel centres
 * as torch's interpolate(align_corners=False); edges clamp. */
void latent_resample(const float *src, int sw, int sh, float *dst, int dw, int dh, enum engine_upscale mode);

#endif
