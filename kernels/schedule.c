/* schedule.c — k-diffusion / A1111 sigma schedules for SD's discrete model.
 *
 * uniform     k-diffusion DiscreteSchedule.get_sigmas: timesteps evenly spaced
 *             from 999 to 0, sigma by log-sigma interpolation.
 * normal      A1111 normal_scheduler: timesteps evenly spaced between
 *             sigma_to_t(sigma_max) and sigma_to_t(sigma_min) (all n points).
 * sgm_uniform the same over n+1 points, the last dropped (SGM's spacing).
 * karras      Karras et al. 2022, rho = 7, between the model's sigma_min/max.
 * exponential log-sigma evenly spaced between sigma_max and sigma_min.
 * DDIM's own  timesteps 1 + i*(1000/steps) (integer division), the DDPM
 *             "uniform" discretization of the original DDIM code, descending.
 * All end with sigma 0 (the last step returns the denoised estimate). */
#include "schedule.h"

#include <math.h>

/* log sigma at integer timestep t; betas in double, as the reference. */
static void log_sigmas(double ls[SCHEDULE_T])
{
	double a = sqrt(0.00085), b = sqrt(0.012), ac = 1.0;
	for (int t = 0; t < SCHEDULE_T; t++) {
		double r = a + (b - a) * (double)t / (SCHEDULE_T - 1);
		ac *= 1.0 - r * r;
		ls[t] = 0.5 * log((1.0 - ac) / ac);
	}
}

double schedule_t_to_sigma(double t)
{
	double ls[SCHEDULE_T];
	log_sigmas(ls);
	if (t <= 0)
		return exp(ls[0]);
	if (t >= SCHEDULE_T - 1)
		return exp(ls[SCHEDULE_T - 1]);
	int lo = (int)floor(t);
	double w = t - lo;
	return exp((1.0 - w) * ls[lo] + w * ls[lo + 1]);
}

double schedule_sigma_to_t(double sigma)
{
	double ls[SCHEDULE_T];
	log_sigmas(ls);
	double l = log(sigma);
	if (l <= ls[0])
		return 0.0;
	if (l >= ls[SCHEDULE_T - 1])
		return SCHEDULE_T - 1;
	int i = 0;
	while (i < SCHEDULE_T - 2 && ls[i + 1] <= l)
		i++;
	double w = (ls[i] - l) / (ls[i] - ls[i + 1]);
	return i + w;
}

double schedule_sigma_min(void) { return schedule_t_to_sigma(0); }

double schedule_sigma_max(void) { return schedule_t_to_sigma(SCHEDULE_T - 1); }

enum engine_schedule schedule_default(enum engine_sampler sampler)
{
	switch (sampler) {
	case ENGINE_SAMPLER_DPMPP_2M:
	case ENGINE_SAMPLER_DPMPP_SDE:
		return ENGINE_SCHEDULE_KARRAS;
	case ENGINE_SAMPLER_DPMPP_2M_SDE:
		return ENGINE_SCHEDULE_EXPONENTIAL;
	case ENGINE_SAMPLER_DDIM:
		return ENGINE_SCHEDULE_AUTOMATIC;
	default:
		return ENGINE_SCHEDULE_UNIFORM;
	}
}

static double lerp_n(double a, double b, int i, int n)
{
	return n <= 1 ? a : a + (b - a) * (double)i / (double)(n - 1);
}

int schedule_sigmas(enum engine_sampler sampler, enum engine_schedule s, int steps, double *out)
{
	if (steps < 1 || (int)s < 0 || s >= ENGINE_SCHEDULE_COUNT)
		return -1;
	if (s == ENGINE_SCHEDULE_AUTOMATIC)
		s = schedule_default(sampler);
	double smin = schedule_sigma_min(), smax = schedule_sigma_max();
	double tmax = schedule_sigma_to_t(smax), tmin = schedule_sigma_to_t(smin);
	for (int i = 0; i < steps; i++) {
		switch (s) {
		case ENGINE_SCHEDULE_UNIFORM:
			out[i] = schedule_t_to_sigma(lerp_n(SCHEDULE_T - 1, 0, i, steps));
			break;
		case ENGINE_SCHEDULE_NORMAL:
			out[i] = schedule_t_to_sigma(lerp_n(tmax, tmin, i, steps));
			break;
		case ENGINE_SCHEDULE_SGM_UNIFORM:
			out[i] = schedule_t_to_sigma(lerp_n(tmax, tmin, i, steps + 1));
			break;
		case ENGINE_SCHEDULE_KARRAS: {
			double rho = 7.0, lo = pow(smin, 1.0 / rho), hi = pow(smax, 1.0 / rho);
			out[i] = pow(lerp_n(hi, lo, i, steps), rho);
			break;
		}
		case ENGINE_SCHEDULE_EXPONENTIAL:
			out[i] = exp(lerp_n(log(smax), log(smin), i, steps));
			break;
		default: { /* DDIM's timesteps */
			int c = SCHEDULE_T / steps;
			int t = 1 + (steps - 1 - i) * c;
			out[i] = schedule_t_to_sigma(t > SCHEDULE_T - 1 ? SCHEDULE_T - 1 : t);
			break;
		}
		}
	}
	out[steps] = 0.0;
	return 0;
}
