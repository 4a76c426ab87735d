/* scene.h — the procedural prior: a prompt becomes K latent scenes (the
 * means of a Gaussian mixture). Rendered on the host in RGB at latent
 * resolution and encoded with the pseudo-inverse of the decoder matrix, so
 * decode(encode(rgb)) == rgb. Pure; used by engine.c. */
#ifndef SDGATE_SCENE_H
#define SDGATE_SCENE_H

#define SCENE_MAX 32

/* Renders scenes k0..k0+K-1 of `prompt` (NULL = "", the generic prior) into
 * means: K blocks of 4*lw*lh floats, planar [c][y][x]. refiner != 0 adds the
 * refiner's fine detail (texture, sharpened edges) to the same layouts.
 * Returns 0, or -1 when out of memory. */
int scene_render(const char *prompt, int k0, int K, int lw, int lh, int refiner, float *means);

/* RGB (0..1) -> 4 latent channels, the encoder matching OPS_DECODER. */
void scene_encode(const float rgb[3], float z[4]);

#endif
