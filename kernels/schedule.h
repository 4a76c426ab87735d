/* schedule.h — sigma schedules over SD 1.x's discrete noise schedule
 * (scaled-linear betas 0.00085..0.012, 1000 steps). Pure functions. */
#ifndef SDGATE_SCHEDULE_H
#define SDGATE_SCHEDULE_H

#include "engine.h"

#define SCHEDULE_T 1000

/* The model's smallest and largest sigma (~0.0292 and ~14.6146). */
double schedule_sigma_min(void);
double schedule_sigma_max(void);
/* sigma at a fractional timestep (log-sigma interpolation) and back. */
double schedule_t_to_sigma(double t);
double schedule_sigma_to_t(double sigma);

/* Writes steps+1 sigmas (the last is 0) for schedule s; AUTOMATIC resolves
 * through schedule_default(sampler). Returns 0, or -1 for bad arguments. */
int schedule_sigmas(enum engine_sampler sampler, enum engine_schedule s, int steps, double *out);
/* The schedule "automatic" means for a sampler (as A1111 1.9+):
 * uniform for Euler/Euler a/Heun/LMS, karras for DPM++ 2M and DPM++ SDE,
 * exponential for DPM++ 2M SDE; DDIM uses its own timesteps (returns
 * ENGINE_SCHEDULE_AUTOMATIC, see schedule.c). */
enum engine_schedule schedule_default(enum engine_sampler sampler);

#endif
