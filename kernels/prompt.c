/* prompt.c — attention parser and word classes for the procedural prior.
 * The parser follows A1111's parse_prompt_attention (modules/prompt_parser.py)
 * token for token, but emits words instead of text runs: brackets remember
 * the index of the first word they cover and multiply to the end. */
#include "prompt.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

struct parser {
	struct prompt *out;
	int round[PROMPT_MAX_WORDS + 64], nround;
	int square[PROMPT_MAX_WORDS + 64], nsquare;
	char word[PROMPT_WORD_LEN];
	int wlen;
	int truncated; /* the current word is longer than PROMPT_WORD_LEN-1 */
};

static void multiply_from(struct prompt *p, int start, float f)
{
	for (int i = start; i < p->count; i++)
		p->words[i].weight *= f;
}

static void end_word(struct parser *ps)
{
	if (ps->wlen == 0)
		return;
	ps->word[ps->wlen] = '\0';
	ps->wlen = 0;
	ps->truncated = 0;
	if (strcmp(ps->word, "BREAK") == 0 || ps->out->count >= PROMPT_MAX_WORDS)
		return;
	struct prompt_word *w = &ps->out->words[ps->out->count++];
	for (int i = 0; ps->word[i]; i++)
		w->text[i] = (char)tolower((unsigned char)ps->word[i]);
	w->text[strlen(ps->word)] = '\0';
	w->weight = 1.0f;
}

static void add_char(struct parser *ps, char c)
{
	if (isalnum((unsigned char)c) || c == '\'') {
		if (ps->wlen < PROMPT_WORD_LEN - 1)
			ps->word[ps->wlen++] = c;
		else
			ps->truncated = 1;
	} else {
		end_word(ps);
	}
}

/* Matches ":\s*([+-]?[.\d]+)\s*\)" at s; returns the length and the number. */
static int match_weight(const char *s, float *value)
{
	const char *p = s + 1;
	while (*p == ' ' || *p == '\t' || *p == '\n')
		p++;
	const char *num = p;
	if (*p == '+' || *p == '-')
		p++;
	const char *digits = p;
	while (isdigit((unsigned char)*p) || *p == '.')
		p++;
	if (p == digits)
		return 0;
	char buf[32];
	size_t n = (size_t)(p - num);
	if (n >= sizeof buf)
		return 0;
	memcpy(buf, num, n);
	buf[n] = '\0';
	while (*p == ' ' || *p == '\t' || *p == '\n')
		p++;
	if (*p != ')')
		return 0;
	char *end;
	double v = strtod(buf, &end);
	if (*end) /* "1.2.3": A1111's float() raises; treat as text */
		return 0;
	*value = (float)v;
	return (int)(p - s + 1);
}

int prompt_parse(const char *text, struct prompt *out)
{
	struct parser *ps = calloc(1, sizeof *ps);
	out->count = 0;
	if (!ps || !text) {
		free(ps);
		return 0;
	}
	ps->out = out;
	const int cap = (int)(sizeof ps->round / sizeof ps->round[0]);
	for (const char *s = text; *s;) {
		float v;
		int n;
		if (*s == '\\' && s[1] && strchr("()[]\\", s[1])) {
			end_word(ps); /* an escaped bracket is punctuation in a word list */
			s += 2;
		} else if (*s == '(' || *s == '[') {
			end_word(ps);
			int *stack = *s == '(' ? ps->round : ps->square;
			int *depth = *s == '(' ? &ps->nround : &ps->nsquare;
			if (*depth < cap)
				stack[(*depth)++] = out->count;
			s++;
		} else if (*s == ':' && ps->nround > 0 && (n = match_weight(s, &v)) > 0) {
			end_word(ps);
			multiply_from(out, ps->round[--ps->nround], v);
			s += n;
		} else if (*s == ')' && ps->nround > 0) {
			end_word(ps);
			multiply_from(out, ps->round[--ps->nround], 1.1f);
			s++;
		} else if (*s == ']' && ps->nsquare > 0) {
			end_word(ps);
			multiply_from(out, ps->square[--ps->nsquare], 1.0f / 1.1f);
			s++;
		} else {
			add_char(ps, *s);
			s++;
		}
	}
	end_word(ps);
	for (int i = 0; i < ps->nround; i++)
		multiply_from(out, ps->round[i], 1.1f);
	for (int i = 0; i < ps->nsquare; i++)
		multiply_from(out, ps->square[i], 1.0f / 1.1f);
	free(ps);
	return out->count;
}

uint64_t prompt_hash(uint64_t h, const char *s)
{
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

struct colour_word {
	const char *name;
	float rgb[3];
};

static const struct colour_word COLOURS[] = {
	{"red", {0.86f, 0.08f, 0.08f}},     {"crimson", {0.75f, 0.05f, 0.18f}}, {"scarlet", {0.95f, 0.15f, 0.05f}},
	{"maroon", {0.45f, 0.05f, 0.08f}},  {"green", {0.10f, 0.70f, 0.18f}},   {"lime", {0.55f, 0.95f, 0.15f}},
	{"emerald", {0.05f, 0.60f, 0.35f}}, {"blue", {0.10f, 0.22f, 0.90f}},    {"navy", {0.04f, 0.07f, 0.40f}},
	{"azure", {0.20f, 0.55f, 0.98f}},   {"yellow", {0.96f, 0.86f, 0.08f}},  {"orange", {1.00f, 0.52f, 0.05f}},
	{"purple", {0.52f, 0.12f, 0.68f}},  {"violet", {0.58f, 0.30f, 0.90f}},  {"indigo", {0.28f, 0.10f, 0.60f}},
	{"pink", {1.00f, 0.50f, 0.70f}},    {"cyan", {0.08f, 0.85f, 0.90f}},    {"turquoise", {0.15f, 0.80f, 0.75f}},
	{"magenta", {0.90f, 0.08f, 0.80f}}, {"white", {0.97f, 0.97f, 0.97f}},   {"black", {0.03f, 0.03f, 0.03f}},
	{"gray", {0.50f, 0.50f, 0.50f}},    {"grey", {0.50f, 0.50f, 0.50f}},    {"brown", {0.45f, 0.27f, 0.10f}},
	{"beige", {0.90f, 0.83f, 0.65f}},   {"gold", {0.92f, 0.72f, 0.15f}},    {"golden", {0.92f, 0.72f, 0.15f}},
	{"silver", {0.75f, 0.76f, 0.80f}},  {"teal", {0.00f, 0.50f, 0.50f}},    {"neon", {0.25f, 1.00f, 0.35f}},
};

static const struct {
	const char *name;
	int shape;
} SHAPES[] = {
	{"circle", SHAPE_CIRCLE},    {"disc", SHAPE_CIRCLE},       {"disk", SHAPE_CIRCLE},
	{"dot", SHAPE_CIRCLE},       {"sphere", SHAPE_SPHERE},     {"ball", SHAPE_SPHERE},
	{"orb", SHAPE_SPHERE},       {"planet", SHAPE_SPHERE},     {"bubble", SHAPE_SPHERE},
	{"apple", SHAPE_SPHERE},     {"square", SHAPE_SQUARE},     {"box", SHAPE_SQUARE},
	{"cube", SHAPE_SQUARE},      {"rectangle", SHAPE_SQUARE},  {"block", SHAPE_SQUARE},
	{"house", SHAPE_SQUARE},     {"window", SHAPE_SQUARE},     {"triangle", SHAPE_TRIANGLE},
	{"pyramid", SHAPE_TRIANGLE}, {"mountain", SHAPE_MOUNTAIN}, {"hill", SHAPE_MOUNTAIN},
	{"volcano", SHAPE_MOUNTAIN}, {"peak", SHAPE_MOUNTAIN},     {"star", SHAPE_STAR},
	{"ring", SHAPE_RING},        {"donut", SHAPE_RING},        {"halo", SHAPE_RING},
	{"stripes", SHAPE_STRIPES},  {"striped", SHAPE_STRIPES},   {"stripe", SHAPE_STRIPES},
	{"lines", SHAPE_STRIPES},    {"grid", SHAPE_CHECKER},      {"checkerboard", SHAPE_CHECKER},
	{"checker", SHAPE_CHECKER},  {"checkered", SHAPE_CHECKER}, {"chess", SHAPE_CHECKER},
	{"tiles", SHAPE_CHECKER},    {"building", SHAPE_CITY},     {"city", SHAPE_CITY},
	{"skyline", SHAPE_CITY},     {"tower", SHAPE_CITY},        {"skyscraper", SHAPE_CITY},
	{"sun", SHAPE_SUN},          {"moon", SHAPE_MOON},
};

static const struct {
	const char *name;
	int scene;
} SCENES[] = {
	{"sky", SCENE_SKY},       {"clouds", SCENE_SKY},    {"sea", SCENE_SEA},        {"ocean", SCENE_SEA},
	{"water", SCENE_SEA},     {"lake", SCENE_SEA},      {"beach", SCENE_SEA},      {"night", SCENE_NIGHT},
	{"dark", SCENE_NIGHT},    {"sunset", SCENE_SUNSET}, {"sunrise", SCENE_SUNSET}, {"dusk", SCENE_SUNSET},
	{"forest", SCENE_FOREST}, {"jungle", SCENE_FOREST}, {"trees", SCENE_FOREST},   {"tree", SCENE_FOREST},
	{"rain", SCENE_RAIN},     {"rainy", SCENE_RAIN},    {"storm", SCENE_RAIN},     {"snow", SCENE_SNOW},
	{"winter", SCENE_SNOW},   {"desert", SCENE_DESERT}, {"sand", SCENE_DESERT},    {"space", SCENE_SPACE},
	{"galaxy", SCENE_SPACE},  {"cosmos", SCENE_SPACE},  {"fire", SCENE_FIRE},      {"lava", SCENE_FIRE},
	{"flames", SCENE_FIRE},   {"grass", SCENE_GRASS},   {"field", SCENE_GRASS},    {"meadow", SCENE_GRASS},
};

static const char *const STOPWORDS[] = {"a",  "an",   "the", "of",   "with",  "and",  "in",   "on",
					"at", "to",   "by",  "for",  "from",  "its",  "is",   "are",
					"as", "very", "it",  "over", "under", "some", "into", "or"};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Exact match, else the singular of a simple plural ("circles", "boxes"). */
static int word_is(const char *word, const char *name)
{
	if (strcmp(word, name) == 0)
		return 1;
	size_t n = strlen(name), w = strlen(word);
	if (w == n + 1 && word[n] == 's' && strncmp(word, name, n) == 0)
		return 1;
	return w == n + 2 && strcmp(word + n, "es") == 0 && strncmp(word, name, n) == 0;
}

int prompt_colour(const char *word, float rgb[3])
{
	for (int i = 0; i < COUNT(COLOURS); i++)
		if (strcmp(word, COLOURS[i].name) == 0) {
			memcpy(rgb, COLOURS[i].rgb, sizeof COLOURS[i].rgb);
			return 1;
		}
	return 0;
}

int prompt_shape(const char *word)
{
	for (int i = 0; i < COUNT(SHAPES); i++)
		if (word_is(word, SHAPES[i].name))
			return SHAPES[i].shape;
	return -1;
}

int prompt_scene(const char *word)
{
	for (int i = 0; i < COUNT(SCENES); i++)
		if (word_is(word, SCENES[i].name))
			return SCENES[i].scene;
	return -1;
}

int prompt_is_stopword(const char *word)
{
	for (int i = 0; i < COUNT(STOPWORDS); i++)
		if (strcmp(word, STOPWORDS[i]) == 0)
			return 1;
	return 0;
}
