/* scene.c — procedural scenes for the prompt-defined prior.
 *
 * Words steer the layout: colour words colour the objects and tint the
 * background, shape words choose the objects, scene words (sky, sea, night,
 * sunset, forest, ...) set the background, and every other word perturbs the
 * layout through its hash (and sometimes adds a small object of its own hue).
 * A word's attention weight scales its object's size or its tint. Scene k
 * draws its layout (positions, sizes, which colour where) from a hash of the
 * words and k, so different seeds settle on visibly different scenes.
 * Shapes are signed-distance functions with a one-pixel antialiased edge. */
#include "scene.h"
#include "ops.h"
#include "prompt.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OBJ 12

struct obj {
	int shape;
	float col[3];
	float cx, cy, r, rot, aspect;
};

struct layout {
	float top[3], mid[3], ground[3];
	float horizon; /* fraction of height where the ground starts */
	int has_ground;
	int night, rain, space, forest;
	int nobj;
	struct obj obj[MAX_OBJ];
};

struct words {
	int ncol, nshape, nscene, nother;
	float col[16][3], colw[16];
	int shape[16];
	float shapew[16];
	float scenew[SCENE_COUNT];
	uint64_t other[16];
	float otherw[16];
	uint64_t hash;
};

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static float rnd(uint64_t *s) { return (float)(splitmix(s) >> 40) * (1.0f / 16777216.0f); }

static float rnd_in(uint64_t *s, float a, float b) { return a + (b - a) * rnd(s); }

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

static void set3(float d[3], float r, float g, float b)
{
	d[0] = r;
	d[1] = g;
	d[2] = b;
}

static void mix3(float d[3], const float a[3], const float b[3], float t)
{
	for (int i = 0; i < 3; i++)
		d[i] = a[i] + (b[i] - a[i]) * t;
}

static void hsv(float out[3], float h, float s, float v)
{
	h = (h - floorf(h)) * 6.0f;
	int i = (int)h;
	float f = h - (float)i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
	switch (i % 6) {
	case 0:
		set3(out, v, t, p);
		break;
	case 1:
		set3(out, q, v, p);
		break;
	case 2:
		set3(out, p, v, t);
		break;
	case 3:
		set3(out, p, q, v);
		break;
	case 4:
		set3(out, t, p, v);
		break;
	default:
		set3(out, v, p, q);
		break;
	}
}

/* Saturation scaled by a word's weight: 1 keeps the colour, more pushes it
 * away from its grey, less pulls it towards grey. */
static void weighted_colour(float out[3], const float c[3], float w)
{
	float g = (c[0] + c[1] + c[2]) / 3.0f, k = clampf(0.55f + 0.45f * w, 0.2f, 1.4f);
	for (int i = 0; i < 3; i++)
		out[i] = clampf(g + (c[i] - g) * k, 0.0f, 1.0f);
}

static void classify(const char *prompt, struct words *w)
{
	struct prompt *p = malloc(sizeof *p);
	memset(w, 0, sizeof *w);
	w->hash = PROMPT_HASH_INIT;
	if (!p)
		return;
	prompt_parse(prompt, p);
	for (int i = 0; i < p->count; i++) {
		const char *t = p->words[i].text;
		float wt = p->words[i].weight, rgb[3];
		int s;
		if (prompt_is_stopword(t) || wt <= 0.0f)
			continue;
		w->hash = prompt_hash(w->hash, t) * 31 + 7;
		if (prompt_colour(t, rgb) && w->ncol < 16) {
			memcpy(w->col[w->ncol], rgb, sizeof rgb);
			w->colw[w->ncol++] = wt;
		} else if ((s = prompt_shape(t)) >= 0 && w->nshape < 16) {
			w->shape[w->nshape] = s;
			w->shapew[w->nshape++] = wt;
		} else if ((s = prompt_scene(t)) >= 0) {
			w->scenew[s] += wt;
			w->nscene++;
		} else if (w->nother < 16) {
			w->other[w->nother] = prompt_hash(PROMPT_HASH_INIT, t);
			w->otherw[w->nother++] = wt;
		}
	}
	free(p);
}

/* A colour drawn from rng: value, then saturation, then hue = h + a draw in
 * [dlo, dhi). The draws are sequenced here because C leaves the order of a
 * call's arguments unspecified: written as hsv(out, h + rnd_in(..),
 * rnd_in(..), rnd_in(..)), gcc drew them right to left and clang left to
 * right, so one seed made different images on differently built backends
 * (tests/kernels_check --reference caught it). This is the order gcc used:
 * images from gcc builds are unchanged. */
static void rnd_hsv(float out[3], uint64_t *rng, float h, float dlo, float dhi, float s0, float s1, float v0, float v1)
{
	float v = rnd_in(rng, v0, v1);
	float s = rnd_in(rng, s0, s1);
	hsv(out, h + rnd_in(rng, dlo, dhi), s, v);
}

static void background(const struct words *w, uint64_t *rng, struct layout *L)
{
	float h = rnd(rng);
	float v = rnd_in(rng, 0.65f, 0.85f); /* value before saturation, as rnd_hsv */
	hsv(L->top, h, rnd_in(rng, 0.05f, 0.25f), v);
	rnd_hsv(L->mid, rng, h, -0.1f, 0.1f, 0.08f, 0.25f, 0.5f, 0.7f);
	rnd_hsv(L->ground, rng, h, -0.15f, 0.15f, 0.1f, 0.3f, 0.3f, 0.5f);
	L->horizon = rnd_in(rng, 0.55f, 0.75f);
	L->has_ground = rnd(rng) < 0.5f;
	const float *sw = w->scenew;
	if (sw[SCENE_SKY] > 0) {
		set3(L->top, 0.35f, 0.58f, 0.95f);
		set3(L->mid, 0.72f, 0.84f, 0.97f);
	}
	if (sw[SCENE_SUNSET] > 0) {
		set3(L->top, 0.42f, 0.20f, 0.50f);
		set3(L->mid, 0.99f, 0.55f, 0.22f);
		set3(L->ground, 0.25f, 0.12f, 0.18f);
	}
	if (sw[SCENE_SEA] > 0) {
		set3(L->ground, 0.04f, 0.26f, 0.52f);
		L->has_ground = 1;
	}
	if (sw[SCENE_GRASS] > 0) {
		set3(L->ground, 0.22f, 0.58f, 0.16f);
		L->has_ground = 1;
	}
	if (sw[SCENE_FOREST] > 0) {
		set3(L->ground, 0.06f, 0.30f, 0.10f);
		L->has_ground = 1;
		L->forest = 1;
	}
	if (sw[SCENE_DESERT] > 0) {
		set3(L->ground, 0.87f, 0.72f, 0.45f);
		set3(L->mid, 0.95f, 0.88f, 0.70f);
		L->has_ground = 1;
	}
	if (sw[SCENE_SNOW] > 0) {
		set3(L->ground, 0.92f, 0.94f, 0.98f);
		set3(L->top, 0.70f, 0.74f, 0.80f);
		L->has_ground = 1;
	}
	if (sw[SCENE_FIRE] > 0) {
		set3(L->ground, 0.90f, 0.30f, 0.04f);
		set3(L->mid, 0.55f, 0.10f, 0.02f);
		L->has_ground = 1;
	}
	if (sw[SCENE_SPACE] > 0) {
		set3(L->top, 0.01f, 0.01f, 0.05f);
		set3(L->mid, 0.04f, 0.02f, 0.10f);
		L->has_ground = 0;
		L->space = 1;
	}
	L->night = sw[SCENE_NIGHT] > 0;
	L->rain = sw[SCENE_RAIN] > 0;
	/* Colour words tint the background, less when scene words set it. */
	if (w->ncol > 0) {
		int c = (int)(splitmix(rng) % (uint64_t)w->ncol);
		float t = clampf((w->nscene ? 0.2f : 0.45f) * w->colw[c], 0.0f, 0.8f), dark[3], col[3];
		weighted_colour(col, w->col[c], w->colw[c]);
		for (int i = 0; i < 3; i++)
			dark[i] = col[i] * 0.75f;
		mix3(L->top, L->top, col, t);
		mix3(L->mid, L->mid, col, t);
		mix3(L->ground, L->ground, dark, t);
	}
}

static void add_obj(struct layout *L, uint64_t *rng, int shape, const float col[3], float size)
{
	if (L->nobj >= MAX_OBJ)
		return;
	struct obj *o = &L->obj[L->nobj++];
	o->shape = shape;
	memcpy(o->col, col, sizeof o->col);
	o->r = size;
	o->rot = rnd(rng) < 0.5f ? 0.0f : rnd_in(rng, -0.5f, 0.5f);
	o->aspect = shape == SHAPE_SQUARE && rnd(rng) < 0.4f ? rnd_in(rng, 0.6f, 1.5f) : 1.0f;
	o->cx = rnd_in(rng, 0.15f + 0.5f * size, 0.85f - 0.5f * size);
	o->cy = rnd_in(rng, 0.15f + 0.5f * size, 0.85f - 0.5f * size);
	if (shape == SHAPE_SUN || shape == SHAPE_MOON)
		o->cy = rnd_in(rng, 0.15f, 0.35f);
	if (shape == SHAPE_MOUNTAIN || shape == SHAPE_CITY)
		o->cy = L->has_ground ? L->horizon + 0.05f : 1.0f;
}

static void objects(const struct words *w, uint64_t *rng, struct layout *L)
{
	static const float sun[3] = {1.0f, 0.85f, 0.25f}, moon[3] = {0.92f, 0.92f, 0.82f};
	int n = w->nshape, base = (int)(splitmix(rng) % 16);
	float col[3];
	if (n > 0) {
		for (int i = 0; i < n; i++) {
			float wt = w->shapew[i];
			if (w->ncol > 0) {
				int c = (base + i) % w->ncol;
				weighted_colour(col, w->col[c], w->colw[c]);
			} else if (w->shape[i] == SHAPE_SUN) {
				memcpy(col, sun, sizeof col);
			} else if (w->shape[i] == SHAPE_MOON) {
				memcpy(col, moon, sizeof col);
			} else {
				rnd_hsv(col, rng, 0.0f, 0.0f, 1.0f, 0.4f, 0.9f, 0.5f, 0.95f);
			}
			float size = rnd_in(rng, 0.26f, 0.36f) / sqrtf((float)n) * clampf(sqrtf(wt), 0.5f, 1.8f);
			add_obj(L, rng, w->shape[i], col, size);
			if (wt > 1.25f || rnd(rng) < 0.25f) /* a second one, smaller */
				add_obj(L, rng, w->shape[i], col, size * rnd_in(rng, 0.4f, 0.7f));
		}
	} else {
		int m = 1 + (int)(splitmix(rng) % 3);
		static const int pick[] = {SHAPE_CIRCLE, SHAPE_SQUARE, SHAPE_TRIANGLE,
					   SHAPE_RING,   SHAPE_SPHERE, SHAPE_STAR};
		for (int i = 0; i < m; i++) {
			if (w->ncol > 0) {
				int c = (base + i) % w->ncol;
				weighted_colour(col, w->col[c], w->colw[c]);
			} else {
				rnd_hsv(col, rng, 0.0f, 0.0f, 1.0f, 0.15f, 0.5f, 0.35f, 0.8f);
			}
			float size = rnd_in(rng, 0.2f, 0.34f) / sqrtf((float)m);
			if (w->ncol > 0)
				size *= clampf(sqrtf(w->colw[(base + i) % w->ncol]), 0.5f, 1.8f);
			add_obj(L, rng, pick[splitmix(rng) % 6], col, size);
		}
	}
	/* Unknown words: a small object of the word's own hue in some scenes. */
	for (int i = 0; i < w->nother; i++) {
		uint64_t h = w->other[i] ^ splitmix(rng);
		if (h & 1)
			continue;
		hsv(col, (float)(w->other[i] % 1000) / 1000.0f, 0.35f, 0.6f);
		add_obj(L, rng, (int)((w->other[i] >> 10) % SHAPE_STRIPES), col,
			rnd_in(rng, 0.06f, 0.14f) * clampf(w->otherw[i], 0.5f, 1.8f));
	}
	/* Big objects first so that small ones stay visible. */
	for (int i = 1; i < L->nobj; i++)
		for (int j = i; j > 0 && L->obj[j].r > L->obj[j - 1].r; j--) {
			struct obj t = L->obj[j];
			L->obj[j] = L->obj[j - 1];
			L->obj[j - 1] = t;
		}
}

/* iq's signed distance to a simple polygon. */
static float sd_polygon(float px, float py, const float (*v)[2], int n)
{
	float d = (px - v[0][0]) * (px - v[0][0]) + (py - v[0][1]) * (py - v[0][1]), s = 1.0f;
	for (int i = 0, j = n - 1; i < n; j = i, i++) {
		float ex = v[j][0] - v[i][0], ey = v[j][1] - v[i][1];
		float wx = px - v[i][0], wy = py - v[i][1];
		float t = clampf((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0f, 1.0f);
		float bx = wx - ex * t, by = wy - ey * t;
		float dd = bx * bx + by * by;
		if (dd < d)
			d = dd;
		int c1 = py >= v[i][1], c2 = py<v[j][1], c3 = ex * wy> ey * wx;
		if ((c1 && c2 && c3) || (!c1 && !c2 && !c3))
			s = -s;
	}
	return s * sqrtf(d);
}

static float sd_circle(float px, float py, float cx, float cy, float r)
{
	return sqrtf((px - cx) * (px - cx) + (py - cy) * (py - cy)) - r;
}

struct canvas {
	float *rgb; /* lw*lh*3 */
	int lw, lh;
	float unit;   /* pixels per layout unit (the shorter side = 1) */
	float ax, ay; /* canvas extent in layout units */
};

/* Signed distance of o at p (layout units); *shade gets a brightness factor. */
static float obj_sd(const struct obj *o, float px, float py, float *shade)
{
	float c = cosf(o->rot), s = sinf(o->rot);
	float qx = c * (px - o->cx) + s * (py - o->cy), qy = -s * (px - o->cx) + c * (py - o->cy);
	float r = o->r, v[10][2];
	*shade = 1.0f;
	switch (o->shape) {
	case SHAPE_SPHERE: {
		float d = sd_circle(px, py, o->cx, o->cy, r);
		float nx = (px - o->cx) / r, ny = (py - o->cy) / r, nz = sqrtf(fmaxf(0.0f, 1 - nx * nx - ny * ny));
		*shade = 0.35f + 0.75f * fmaxf(0.0f, -0.45f * nx - 0.55f * ny + 0.7f * nz);
		return d;
	}
	case SHAPE_RING:
		return fabsf(sd_circle(px, py, o->cx, o->cy, r * 0.8f)) - r * 0.2f;
	case SHAPE_SQUARE:
		return fmaxf(fabsf(qx) - r * 0.85f * o->aspect, fabsf(qy) - r * 0.85f / o->aspect);
	case SHAPE_TRIANGLE:
		v[0][0] = 0, v[0][1] = -r, v[1][0] = -0.95f * r, v[1][1] = 0.7f * r, v[2][0] = 0.95f * r,
		v[2][1] = 0.7f * r;
		return sd_polygon(qx, qy, (const float(*)[2])v, 3);
	case SHAPE_MOUNTAIN:
		v[0][0] = -1.8f * r, v[0][1] = 0, v[1][0] = 0, v[1][1] = -1.6f * r, v[2][0] = 1.8f * r, v[2][1] = 0;
		*shade = px < o->cx ? 1.0f : 0.8f;
		return sd_polygon(px - o->cx, py - o->cy, (const float(*)[2])v, 3);
	case SHAPE_STAR:
		for (int i = 0; i < 10; i++) {
			float a = o->rot * 0.3f + (float)i * 0.6283185f - 1.5707963f, rr = i & 1 ? 0.42f * r : r;
			v[i][0] = rr * cosf(a), v[i][1] = rr * sinf(a);
		}
		return sd_polygon(px - o->cx, py - o->cy, (const float(*)[2])v, 10);
	case SHAPE_MOON:
		return fmaxf(sd_circle(px, py, o->cx, o->cy, r),
			     -sd_circle(px, py, o->cx + 0.4f * r, o->cy - 0.2f * r, 0.85f * r));
	default: /* circle, sun */
		return sd_circle(px, py, o->cx, o->cy, r);
	}
}

static void paint(struct canvas *cv, int x, int y, const float col[3], float a)
{
	float *p = cv->rgb + ((size_t)y * cv->lw + x) * 3;
	for (int i = 0; i < 3; i++)
		p[i] += (col[i] - p[i]) * a;
}

static void draw_obj(struct canvas *cv, const struct obj *o, uint64_t seed)
{
	if (o->shape == SHAPE_STRIPES || o->shape == SHAPE_CHECKER) {
		/* Patterns cover the whole canvas, half transparent over the rest. */
		float period = 0.06f + o->r * 0.3f, ang = o->rot;
		for (int y = 0; y < cv->lh; y++)
			for (int x = 0; x < cv->lw; x++) {
				float px = ((float)x + 0.5f) / cv->unit, py = ((float)y + 0.5f) / cv->unit;
				float u = cosf(ang) * px + sinf(ang) * py, v = -sinf(ang) * px + cosf(ang) * py;
				float fu = u / period - floorf(u / period) - 0.5f, d = (fabsf(fu) - 0.25f) * period;
				if (o->shape == SHAPE_CHECKER) {
					/* inside the cells of one parity, by the distance to a cell edge */
					float fv = v / period - floorf(v / period) - 0.5f;
					int par = ((int)floorf(u / period) + (int)floorf(v / period)) & 1;
					float e = (0.5f - fmaxf(fabsf(fu), fabsf(fv))) * period;
					d = par ? -e : e;
				}
				paint(cv, x, y, o->col, 0.8f * clampf(0.5f - d * cv->unit, 0.0f, 1.0f));
			}
		return;
	}
	if (o->shape == SHAPE_CITY) {
		uint64_t r = seed ^ (uint64_t)(o->r * 1e6f);
		int n = 5 + (int)(splitmix(&r) % 5);
		float bw = cv->ax / (float)n;
		for (int b = 0; b < n; b++) {
			struct obj box = *o;
			float hgt = rnd_in(&r, 0.2f, 0.65f) * cv->ay, sh = rnd_in(&r, 0.6f, 1.1f);
			box.shape = SHAPE_SQUARE;
			box.rot = 0;
			box.aspect = 1;
			for (int i = 0; i < 3; i++)
				box.col[i] = clampf(o->col[i] * sh, 0.0f, 1.0f);
			float x0 = bw * (float)b + rnd_in(&r, 0.0f, 0.2f) * bw, x1 = bw * (float)(b + 1);
			float y0 = o->cy * cv->ay - hgt;
			for (int y = 0; y < cv->lh; y++)
				for (int x = 0; x < cv->lw; x++) {
					float px = ((float)x + 0.5f) / cv->unit, py = ((float)y + 0.5f) / cv->unit;
					float d = fmaxf(fmaxf(x0 - px, px - x1), fmaxf(y0 - py, py - o->cy * cv->ay));
					paint(cv, x, y, box.col, clampf(0.5f - d * cv->unit, 0.0f, 1.0f));
				}
		}
		return;
	}
	/* Object centres are in 0..1 of each axis; sizes in layout units. */
	struct obj q = *o;
	q.cx = o->cx * cv->ax;
	q.cy = o->cy * cv->ay;
	float ext = (o->shape == SHAPE_MOUNTAIN ? 2.0f : 1.3f) * o->r + 1.0f / cv->unit;
	if (o->shape == SHAPE_SUN)
		ext = 2.6f * o->r;
	int x0 = (int)floorf((q.cx - ext) * cv->unit), x1 = (int)ceilf((q.cx + ext) * cv->unit);
	int y0 = (int)floorf((q.cy - ext) * cv->unit), y1 = (int)ceilf((q.cy + ext) * cv->unit);
	x0 = x0 < 0 ? 0 : x0, y0 = y0 < 0 ? 0 : y0;
	x1 = x1 > cv->lw ? cv->lw : x1, y1 = y1 > cv->lh ? cv->lh : y1;
	for (int y = y0; y < y1; y++)
		for (int x = x0; x < x1; x++) {
			float px = ((float)x + 0.5f) / cv->unit, py = ((float)y + 0.5f) / cv->unit, shade, col[3];
			float d = obj_sd(&q, px, py, &shade);
			if (o->shape == SHAPE_SUN && d > 0) /* glow */
				paint(cv, x, y, o->col, 0.45f * expf(-d / (0.5f * o->r)));
			for (int i = 0; i < 3; i++)
				col[i] = clampf(o->col[i] * shade, 0.0f, 1.0f);
			paint(cv, x, y, col, clampf(0.5f - d * cv->unit, 0.0f, 1.0f));
		}
}

static float hash01(uint64_t a, uint64_t b)
{
	uint64_t s = a * 0x9E3779B97F4A7C15ULL ^ b;
	return rnd(&s);
}

static void render_layout(struct canvas *cv, const struct layout *L, uint64_t seed)
{
	int lw = cv->lw, lh = cv->lh;
	for (int y = 0; y < lh; y++) {
		float fy = ((float)y + 0.5f) / (float)lh, c[3];
		if (L->has_ground && fy >= L->horizon)
			memcpy(c, L->ground, sizeof c);
		else if (L->has_ground)
			mix3(c, L->top, L->mid, fy / L->horizon);
		else
			mix3(c, L->top, L->mid, fy);
		if (L->night)
			for (int i = 0; i < 3; i++)
				c[i] = c[i] * 0.3f + (i == 2 ? 0.06f : 0.02f);
		for (int x = 0; x < lw; x++)
			memcpy(cv->rgb + ((size_t)y * lw + x) * 3, c, sizeof c);
	}
	if (L->space || L->night) /* stars */
		for (int y = 0; y < lh; y++)
			for (int x = 0; x < lw; x++)
				if (hash01(seed + (uint64_t)y, (uint64_t)x) < 0.012f &&
				    (!L->has_ground || (float)y < L->horizon * (float)lh)) {
					static const float white[3] = {1, 1, 0.92f};
					paint(cv, x, y, white, 0.8f);
				}
	if (L->forest) { /* a row of dark trees on the horizon */
		uint64_t r = seed ^ 0xF0F0;
		int n = 6 + (int)(splitmix(&r) % 6);
		for (int i = 0; i < n; i++) {
			struct obj t = {.shape = SHAPE_TRIANGLE, .aspect = 1};
			set3(t.col, 0.04f, rnd_in(&r, 0.2f, 0.35f), 0.08f);
			t.r = rnd_in(&r, 0.08f, 0.16f);
			t.cx = rnd(&r);
			t.cy = L->horizon - 0.3f * t.r;
			draw_obj(cv, &t, seed);
		}
	}
	for (int i = 0; i < L->nobj; i++) {
		struct obj o = L->obj[i];
		if (L->night && o.shape != SHAPE_SUN && o.shape != SHAPE_MOON && o.shape != SHAPE_STAR)
			for (int c = 0; c < 3; c++)
				o.col[c] *= 0.55f;
		draw_obj(cv, &o, seed + (uint64_t)i);
	}
	if (L->rain) /* grey veil and diagonal streaks */
		for (int y = 0; y < lh; y++)
			for (int x = 0; x < lw; x++) {
				static const float grey[3] = {0.55f, 0.58f, 0.62f}, streak[3] = {0.8f, 0.82f, 0.86f};
				paint(cv, x, y, grey, 0.3f);
				if (((x + y / 2) % 7) == 0 && hash01(seed, (uint64_t)(x * 977 + y / 6)) < 0.5f)
					paint(cv, x, y, streak, 0.35f);
			}
}

/* The refiner's prior: the same scene, sharpened, with fine texture. */
static void add_detail(struct canvas *cv, uint64_t seed)
{
	int lw = cv->lw, lh = cv->lh;
	size_t n = (size_t)lw * lh * 3;
	float *blur = malloc(n * sizeof *blur);
	if (!blur)
		return;
	for (int y = 0; y < lh; y++)
		for (int x = 0; x < lw; x++)
			for (int c = 0; c < 3; c++) {
				float s = 0;
				for (int dy = -1; dy <= 1; dy++)
					for (int dx = -1; dx <= 1; dx++) {
						int xx = x + dx < 0 ? 0 : x + dx >= lw ? lw - 1 : x + dx;
						int yy = y + dy < 0 ? 0 : y + dy >= lh ? lh - 1 : y + dy;
						s += cv->rgb[((size_t)yy * lw + xx) * 3 + c];
					}
				blur[((size_t)y * lw + x) * 3 + c] = s / 9.0f;
			}
	for (int y = 0; y < lh; y++)
		for (int x = 0; x < lw; x++) {
			float tex = 0.07f * (hash01(seed ^ 0xDE7A11, (uint64_t)y * 65599u + (uint64_t)x) - 0.5f);
			for (int c = 0; c < 3; c++) {
				size_t i = ((size_t)y * lw + x) * 3 + (size_t)c;
				cv->rgb[i] = clampf(cv->rgb[i] + 0.8f * (cv->rgb[i] - blur[i]) + tex, 0.0f, 1.0f);
			}
		}
	free(blur);
}

/* E = M^T (M M^T)^-1: the right pseudo-inverse of the 3x4 decoder matrix. */
static void encoder(float E[4][3])
{
	double A[3][3], inv[3][3];
	const struct ops_decoder *D = &OPS_DECODER;
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++) {
			A[i][j] = 0;
			for (int k = 0; k < 4; k++)
				A[i][j] += (double)D->m[i][k] * D->m[j][k];
		}
	double det = A[0][0] * (A[1][1] * A[2][2] - A[1][2] * A[2][1]) -
		     A[0][1] * (A[1][0] * A[2][2] - A[1][2] * A[2][0]) +
		     A[0][2] * (A[1][0] * A[2][1] - A[1][1] * A[2][0]);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++) {
			int i1 = (j + 1) % 3, i2 = (j + 2) % 3, j1 = (i + 1) % 3, j2 = (i + 2) % 3;
			inv[i][j] = (A[i1][j1] * A[i2][j2] - A[i1][j2] * A[i2][j1]) / det;
		}
	for (int k = 0; k < 4; k++)
		for (int j = 0; j < 3; j++) {
			double s = 0;
			for (int i = 0; i < 3; i++)
				s += (double)D->m[i][k] * inv[i][j];
			E[k][j] = (float)s;
		}
}

void scene_encode(const float rgb[3], float z[4])
{
	float E[4][3];
	encoder(E);
	for (int k = 0; k < 4; k++) {
		z[k] = 0;
		for (int j = 0; j < 3; j++)
			z[k] += E[k][j] * (2.0f * rgb[j] - 1.0f - OPS_DECODER.bias[j]);
	}
}

int scene_render(const char *prompt, int k0, int K, int lw, int lh, int refiner, float *means)
{
	struct words *w = malloc(sizeof *w);
	struct canvas cv = {.lw = lw, .lh = lh};
	cv.rgb = malloc((size_t)lw * lh * 3 * sizeof *cv.rgb);
	if (!w || !cv.rgb) {
		free(w);
		free(cv.rgb);
		return -1;
	}
	classify(prompt, w);
	cv.unit = (float)(lw < lh ? lw : lh);
	cv.ax = (float)lw / cv.unit;
	cv.ay = (float)lh / cv.unit;
	float E[4][3];
	encoder(E);
	size_t np = (size_t)lw * lh;
	for (int k = k0; k < k0 + K; k++) {
		uint64_t rng = w->hash ^ ((uint64_t)(k + 1) * 0xD1B54A32D192ED03ULL);
		splitmix(&rng);
		struct layout L;
		memset(&L, 0, sizeof L);
		background(w, &rng, &L);
		objects(w, &rng, &L);
		uint64_t seed = splitmix(&rng);
		render_layout(&cv, &L, seed);
		if (refiner)
			add_detail(&cv, seed);
		float *m = means + (size_t)(k - k0) * 4 * np;
		for (size_t p = 0; p < np; p++) {
			const float *c = cv.rgb + p * 3;
			for (int ch = 0; ch < 4; ch++)
				m[(size_t)ch * np + p] = E[ch][0] * (2 * c[0] - 1 - OPS_DECODER.bias[0]) +
							 E[ch][1] * (2 * c[1] - 1 - OPS_DECODER.bias[1]) +
							 E[ch][2] * (2 * c[2] - 1 - OPS_DECODER.bias[2]);
		}
	}
	free(w);
	free(cv.rgb);
	return 0;
}
