/* sampler.c — k-diffusion samplers over the exact posterior-mean denoiser.
 *
 * The model: x = x0 + sigma*eps with x0 ~ sum_k pi_k N(mu_k, s^2 I). Its
 * posterior mean is D = s^2/(s^2+sigma^2) x + sigma^2/(s^2+sigma^2) sum_k w_k mu_k
 * with w_k ∝ pi_k N(x; mu_k, (s^2+sigma^2) I) (log-sum-exp in double). CFG
 * mixes the conditional and unconditional weights: D_u + cfg (D_c - D_u) is
 * again a*x + b*sum_k w'_k mu_k, so one mix pass serves both.
 *
 * Samplers follow k-diffusion's sampling.py (Crowson), each update written
 * as linear combinations:
 *  Euler          (s_churn/s_tmin/s_tmax/s_noise as Karras et al.)
 *  Euler a        ancestral, eta
 *  Heun           2nd order, with churn; Euler on the last step
 *  LMS            order 4; coefficients integrate the Lagrange basis exactly
 *                 (4-point Gauss-Legendre, the integrand has degree <= 3)
 *  DPM++ 2M       multistep, Lu et al. 2022
 *  DPM++ SDE      r = 1/2, eta; per-step Philox noise (streams (step, 0) and
 *                 (step, 1)) instead of k-diffusion's Brownian tree, so the
 *                 noise is reproducible on CPU and GPU without the tree
 *  DPM++ 2M SDE   midpoint solver, eta
 *  DDIM           in the VE variables DDIM's update (Song et al. eq. 12) is
 *                 x' = D + sigma_down*eps_hat + sigma_up*z with exactly
 *                 k-diffusion's ancestral (sigma_down, sigma_up) for eta; eta 0
 *                 is the deterministic DDIM. Its default schedule is DDIM's
 *                 own timesteps (schedule.c). */
#include "sampler.h"
#include "philox.h"

#include <math.h>
#include <string.h>

float sampler_default_eta(enum engine_sampler s) { return s == ENGINE_SAMPLER_DDIM ? 0.0f : 1.0f; }

void sampler_ancestral_step(double sigma, double sigma_next, double eta, double *down, double *up)
{
	if (eta <= 0 || sigma_next <= 0) {
		*down = sigma_next;
		*up = 0;
		return;
	}
	double u = eta * sqrt(sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma));
	*up = u < sigma_next ? u : sigma_next;
	*down = sqrt(sigma_next * sigma_next - *up * *up);
}

/* Softmax of logits l[0..k) into w (double), in place safe. */
static void softmax(double *w, const double *l, int k)
{
	double mx = -INFINITY, sum = 0;
	for (int i = 0; i < k; i++)
		mx = l[i] > mx ? l[i] : mx;
	for (int i = 0; i < k; i++)
		sum += (w[i] = exp(l[i] - mx));
	for (int i = 0; i < k; i++)
		w[i] /= sum;
}

int sampler_denoise(const struct ops *ops, const struct sampler_model *m, float cfg, const float *x, double sigma,
		    size_t n, float *den)
{
	double dist[OPS_MAX_MIX], lc[OPS_MAX_MIX], lu[OPS_MAX_MIX] = {0}, wc[OPS_MAX_MIX], wu[OPS_MAX_MIX];
	int guided = cfg != 1.0f && m->ku > 0;
	int K = guided ? m->kc + m->ku : m->kc;
	double s2 = (double)m->s * m->s, var = s2 + sigma * sigma;
	if (m->kc < 1 || K > OPS_MAX_MIX)
		return -1;
	ops->dist2(ops->ctx, dist, x, m->means, K, n);
	if (ops->error(ops->ctx))
		return -1;
	for (int k = 0; k < m->kc; k++)
		lc[k] = -dist[k] / (2 * var); /* equal pi_k cancel */
	softmax(wc, lc, m->kc);
	struct ops_mix mx = {0};
	double wsum[OPS_MAX_MIX];
	if (guided) {
		double lpc = SAMPLER_UNCOND_SHARE > 0 ? log(SAMPLER_UNCOND_SHARE / m->kc) : -INFINITY;
		double lpu = log((1.0 - SAMPLER_UNCOND_SHARE) / m->ku);
		for (int k = 0; k < K; k++)
			lu[k] = (k < m->kc ? lpc : lpu) - dist[k] / (2 * var);
		softmax(wu, lu, K);
		for (int k = 0; k < K; k++)
			wsum[k] = wu[k] + cfg * ((k < m->kc ? wc[k] : 0.0) - wu[k]);
	} else {
		memcpy(wsum, wc, sizeof(double) * (size_t)K);
	}
	/* Terms below 1e-9 change no float of the result; dropping them makes the
	 * mix O(N * components that matter), usually one. */
	for (int k = 0; k < K; k++)
		if (fabs(wsum[k]) > 1e-9) {
			mx.index[mx.count] = k;
			mx.weight[mx.count++] = (float)wsum[k];
		}
	ops->mix(ops->ctx, den, x, m->means, &mx, n, (float)(s2 / var), (float)(sigma * sigma / var));
	return ops->error(ops->ctx) ? -1 : 0;
}

static void lin2(const struct sampler_job *j, float *dst, const float *a, double ca, const float *b, double cb)
{
	const float *src[2] = {a, b};
	const float coef[2] = {(float)ca, (float)cb};
	j->ops->lincomb(j->ops->ctx, dst, j->n, 2, src, coef);
}

static void noise(const struct sampler_job *j, float *dst, int step, int sub)
{
	j->ops->noise(j->ops->ctx, dst, j->n, j->seed, noise_stream(NOISE_STEP, (uint32_t)step, (uint32_t)sub));
}

/* x += sqrt(sigma_hat^2 - sigma^2)*s_noise*eps when churning; returns sigma_hat. */
static double churn(struct sampler_job *j, int i, float *eps)
{
	double sigma = j->sigmas[i];
	double tmax = j->s_tmax > 0 ? j->s_tmax : INFINITY;
	double gamma = 0;
	if (j->s_churn > 0 && sigma >= j->s_tmin && sigma <= tmax) {
		gamma = j->s_churn / j->steps;
		if (gamma > sqrt(2.0) - 1)
			gamma = sqrt(2.0) - 1;
	}
	double sh = sigma * (gamma + 1);
	if (gamma > 0) {
		noise(j, eps, i, 0);
		lin2(j, j->x, j->x, 1, eps, j->s_noise * sqrt(sh * sh - sigma * sigma));
	}
	return sh;
}

/* The LMS coefficient for history j at step i (k-diffusion's
 * linear_multistep_coeff), by 4-point Gauss-Legendre on [t_i, t_{i+1}]. */
static double lms_coeff(int order, const double *t, int i, int jj)
{
	static const double xg[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
	static const double wg[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};
	double a = t[i], b = t[i + 1], sum = 0;
	for (int g = 0; g < 4; g++) {
		double tau = 0.5 * (b - a) * xg[g] + 0.5 * (a + b), prod = 1;
		for (int k = 0; k < order; k++)
			if (k != jj)
				prod *= (tau - t[i - k]) / (t[i - jj] - t[i - k]);
		sum += wg[g] * prod;
	}
	return 0.5 * (b - a) * sum;
}

static int denoise(struct sampler_job *j, int i, const float *x, double sigma, float *den)
{
	const struct sampler_model *m = j->refiner && i >= j->switch_step ? j->refiner : j->base;
	j->model_calls++;
	return sampler_denoise(j->ops, m, j->cfg, x, sigma, j->n, den);
}

int sampler_run(struct sampler_job *j)
{
	const struct ops *o = j->ops;
	float *x = j->x, **w = j->work;
	/* Scratch roles: den/old ping-pong (0, 1), x2 (2), den2 (3), eps (4),
	 * LMS history (5..8). */
	float *den = w[0], *old = w[1], *x2 = w[2], *den2 = w[3], *eps = w[4];
	float *ds[4] = {w[5], w[6], w[7], w[8]};
	const double *sg = j->sigmas;
	const float *last_den = NULL;
	double h_last = 0;
	int have_old = 0;
	j->model_calls = 0;
	for (int i = 0; i < j->steps; i++) {
		if (j->stop && j->stop(j->user)) {
			if (last_den) {
				const float one = 1.0f;
				o->lincomb(o->ctx, x, j->n, 1, &last_den, &one);
			}
			return o->error(o->ctx) ? -1 : 1;
		}
		double s = sg[i], sn = sg[i + 1];
		switch (j->sampler) {
		case ENGINE_SAMPLER_EULER: {
			double sh = churn(j, i, eps);
			if (denoise(j, i, x, sh, den))
				return -1;
			lin2(j, x, x, sn / sh, den, 1 - sn / sh);
			break;
		}
		case ENGINE_SAMPLER_HEUN: {
			double sh = churn(j, i, eps);
			if (denoise(j, i, x, sh, den))
				return -1;
			if (sn == 0) {
				lin2(j, x, x, 0, den, 1);
				break;
			}
			double dt = sn - sh;
			lin2(j, x2, x, sn / sh, den, 1 - sn / sh);
			if (denoise(j, i, x2, sn, den2))
				return -1;
			const float *src[4] = {x, den, x2, den2};
			const float coef[4] = {(float)(1 + dt / (2 * sh)), (float)(-dt / (2 * sh)),
					       (float)(dt / (2 * sn)), (float)(-dt / (2 * sn))};
			o->lincomb(o->ctx, x, j->n, 4, src, coef);
			break;
		}
		case ENGINE_SAMPLER_EULER_A:
		case ENGINE_SAMPLER_DDIM: {
			if (denoise(j, i, x, s, den))
				return -1;
			double down, up;
			sampler_ancestral_step(s, sn, j->eta, &down, &up);
			lin2(j, x, x, down / s, den, 1 - down / s);
			if (sn > 0 && up > 0) {
				noise(j, eps, i, 0);
				float sn_ = j->sampler == ENGINE_SAMPLER_DDIM ? 1.0f : j->s_noise;
				lin2(j, x, x, 1, eps, sn_ * up);
			}
			break;
		}
		case ENGINE_SAMPLER_LMS: {
			if (denoise(j, i, x, s, den))
				return -1;
			lin2(j, ds[i % 4], x, 1 / s, den, -1 / s);
			int order = i + 1 < 4 ? i + 1 : 4;
			const float *src[5] = {x};
			float coef[5] = {1};
			for (int k = 0; k < order; k++) {
				src[k + 1] = ds[(i - k) % 4];
				coef[k + 1] = (float)lms_coeff(order, sg, i, k);
			}
			o->lincomb(o->ctx, x, j->n, order + 1, src, coef);
			break;
		}
		case ENGINE_SAMPLER_DPMPP_2M: {
			if (denoise(j, i, x, s, den))
				return -1;
			if (sn == 0) {
				lin2(j, x, x, 0, den, 1);
			} else {
				double h = log(s) - log(sn), e = -expm1(-h);
				if (!have_old) {
					lin2(j, x, x, sn / s, den, e);
				} else {
					double r = h_last / h;
					const float *src[3] = {x, den, old};
					const float coef[3] = {(float)(sn / s), (float)(e * (1 + 1 / (2 * r))),
							       (float)(-e / (2 * r))};
					o->lincomb(o->ctx, x, j->n, 3, src, coef);
				}
				h_last = h;
			}
			float *t = den;
			den = old, old = t, have_old = 1;
			break;
		}
		case ENGINE_SAMPLER_DPMPP_SDE: {
			if (denoise(j, i, x, s, den))
				return -1;
			if (sn == 0) {
				lin2(j, x, x, 0, den, 1);
				break;
			}
			const double r = 0.5, fac = 1 / (2 * r);
			double t = -log(s), tn = -log(sn), h = tn - t, smid = exp(-(t + h * r));
			double down, up;
			sampler_ancestral_step(s, smid, j->eta, &down, &up);
			double s_ = -log(down);
			lin2(j, x2, x, down / s, den, -expm1(t - s_));
			if (up > 0) {
				noise(j, eps, i, 0);
				lin2(j, x2, x2, 1, eps, j->s_noise * up);
			}
			if (denoise(j, i, x2, down, den2))
				return -1;
			sampler_ancestral_step(s, sn, j->eta, &down, &up);
			double tn_ = -log(down), e = -expm1(t - tn_);
			const float *src[3] = {x, den, den2};
			const float coef[3] = {(float)(down / s), (float)(e * (1 - fac)), (float)(e * fac)};
			o->lincomb(o->ctx, x, j->n, 3, src, coef);
			if (up > 0) {
				noise(j, eps, i, 1);
				lin2(j, x, x, 1, eps, j->s_noise * up);
			}
			break;
		}
		case ENGINE_SAMPLER_DPMPP_2M_SDE: {
			if (denoise(j, i, x, s, den))
				return -1;
			if (sn == 0) {
				lin2(j, x, x, 0, den, 1);
			} else {
				double h = log(s) - log(sn), eh = j->eta * h;
				double cx = sn / s * exp(-eh), cd = -expm1(-h - eh);
				const float *src[4] = {x, den, old, eps};
				float coef[4] = {(float)cx, (float)cd, 0, 0};
				int cnt = 2;
				if (have_old) {
					double r = h_last / h, c = 0.5 * cd / r;
					coef[1] += (float)c;
					coef[2] = (float)-c;
					cnt = 3;
				}
				if (j->eta > 0) {
					noise(j, eps, i, 0);
					coef[3] = (float)(sn * sqrt(-expm1(-2 * eh)) * j->s_noise);
					if (cnt == 2) /* keep the source order fixed: old with weight 0 */
						src[2] = den;
					cnt = 4;
				}
				o->lincomb(o->ctx, x, j->n, cnt, src, coef);
				h_last = h;
			}
			float *t = den;
			den = old, old = t, have_old = 1;
			break;
		}
		default:
			return -1;
		}
		if (o->error(o->ctx))
			return -1;
		last_den = j->sampler == ENGINE_SAMPLER_DPMPP_2M || j->sampler == ENGINE_SAMPLER_DPMPP_2M_SDE ? old
													      : den;
		if (j->progress)
			j->progress(j->user, i + 1, last_den);
	}
	return o->error(o->ctx) ? -1 : 0;
}
