/* prompt.h — A1111 attention syntax to weighted words, and the word classes
 * the procedural prior understands (colours, shapes, scene words). Pure and
 * thread-safe; used by scene.c and the unit tests. */
#ifndef SDGATE_PROMPT_H
#define SDGATE_PROMPT_H

#include <stdint.h>

#define PROMPT_MAX_WORDS 128
#define PROMPT_WORD_LEN 32

struct prompt_word {
	char text[PROMPT_WORD_LEN]; /* lower case, [a-z0-9'] only */
	float weight;               /* product of the enclosing brackets' factors */
};

struct prompt {
	int count;
	struct prompt_word words[PROMPT_MAX_WORDS];
};

/* Parses text the way A1111's parse_prompt_attention does: (x) x1.1,
 * ((x)) x1.21, [x] /1.1, (x:1.3), escapes \( \) \[ \] \\, unbalanced
 * brackets apply to the end of the text, BREAK is dropped. Words beyond
 * PROMPT_MAX_WORDS are ignored. text may be NULL. Returns out->count. */
int prompt_parse(const char *text, struct prompt *out);

enum prompt_shape {
	SHAPE_CIRCLE,
	SHAPE_SPHERE,
	SHAPE_SQUARE,
	SHAPE_TRIANGLE,
	SHAPE_MOUNTAIN,
	SHAPE_STAR,
	SHAPE_RING,
	SHAPE_STRIPES,
	SHAPE_CHECKER,
	SHAPE_CITY,
	SHAPE_SUN,
	SHAPE_MOON,
	SHAPE_COUNT
};

enum prompt_scene {
	SCENE_SKY,
	SCENE_SEA,
	SCENE_NIGHT,
	SCENE_SUNSET,
	SCENE_FOREST,
	SCENE_RAIN,
	SCENE_SNOW,
	SCENE_DESERT,
	SCENE_SPACE,
	SCENE_FIRE,
	SCENE_GRASS,
	SCENE_COUNT
};

/* 1 and the colour (linear-ish RGB in 0..1) for a colour word, else 0. */
int prompt_colour(const char *word, float rgb[3]);
/* The shape a word names, or -1. Plurals ("circles") count. */
int prompt_shape(const char *word);
/* The scene a word names, or -1. */
int prompt_scene(const char *word);
/* Articles and prepositions ("a", "of", "with"...): ignored by the prior. */
int prompt_is_stopword(const char *word);

/* FNV-1a 64 of a string, continuing from h (start with PROMPT_HASH_INIT). */
#define PROMPT_HASH_INIT 0xcbf29ce484222325ULL
uint64_t prompt_hash(uint64_t h, const char *s);

#endif
