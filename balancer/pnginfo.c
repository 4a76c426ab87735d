/* pnginfo.c — see pnginfo.h. */
#include "pnginfo.h"

#include "b64.h"
#include "image.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Latin-1 bytes (tEXt, zTXt) as a JSON string. */
static json_t *latin1(const unsigned char *p, size_t n)
{
	char *out = malloc(2 * n + 1);
	if (!out)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < 0x80) {
			out[k++] = (char)p[i];
		} else {
			out[k++] = (char)(0xC0 | p[i] >> 6);
			out[k++] = (char)(0x80 | (p[i] & 0x3F));
		}
	}
	json_t *s = json_stringn(out, k);
	free(out);
	return s;
}

/* zlib data inflated, or NULL when broken or longer than PNGINFO_MAX_TEXT. */
static unsigned char *inflated(const unsigned char *p, size_t n, size_t *out_len)
{
	z_stream z;
	memset(&z, 0, sizeof z);
	unsigned char *out = malloc(PNGINFO_MAX_TEXT + 1);
	if (!out || inflateInit(&z) != Z_OK) {
		free(out);
		return NULL;
	}
	z.next_in = (Bytef *)(uintptr_t)p;
	z.avail_in = (uInt)n;
	z.next_out = out;
	z.avail_out = PNGINFO_MAX_TEXT + 1;
	int rc = inflate(&z, Z_FINISH);
	size_t got = PNGINFO_MAX_TEXT + 1 - z.avail_out;
	inflateEnd(&z);
	if (rc != Z_STREAM_END || got > PNGINFO_MAX_TEXT) {
		free(out);
		return NULL;
	}
	*out_len = got;
	return out;
}

/* The text after "keyword\0" of an iTXt chunk (UTF-8; NULL if it is not). */
static json_t *itxt_text(const unsigned char *q, size_t n)
{
	if (n < 2)
		return NULL;
	int compressed = q[0], method = q[1];
	q += 2, n -= 2;
	for (int field = 0; field < 2; field++) { /* language tag, translated keyword */
		const unsigned char *z = memchr(q, 0, n);
		if (!z)
			return NULL;
		n -= (size_t)(z - q) + 1;
		q = z + 1;
	}
	if (!compressed)
		return n <= PNGINFO_MAX_TEXT ? json_stringn((const char *)q, n) : NULL;
	size_t len;
	unsigned char *text = method == 0 ? inflated(q, n, &len) : NULL;
	json_t *s = text ? json_stringn((const char *)text, len) : NULL;
	free(text);
	return s;
}

/* One text chunk into items (a later one of the same keyword wins, as PIL's). */
static void add_text(json_t *items, const char *type, const unsigned char *d, size_t n)
{
	const unsigned char *nul = memchr(d, 0, n < 80 ? n : 80); /* keywords are 1..79 bytes */
	if (!nul || nul == d)
		return;
	size_t klen = (size_t)(nul - d), rn = n - klen - 1;
	const unsigned char *rest = nul + 1;
	json_t *val = NULL;
	if (!memcmp(type, "tEXt", 4)) {
		val = rn <= PNGINFO_MAX_TEXT ? latin1(rest, rn) : NULL;
	} else if (!memcmp(type, "zTXt", 4)) {
		size_t len;
		unsigned char *text = rn >= 1 && rest[0] == 0 ? inflated(rest + 1, rn - 1, &len) : NULL;
		val = text ? latin1(text, len) : NULL;
		free(text);
	} else {
		val = itxt_text(rest, rn);
	}
	json_t *key = latin1(d, klen);
	if (key && val)
		json_object_set(items, json_string_value(key), val);
	json_decref(key);
	json_decref(val);
}

/* The text chunks of a PNG that image_check passed (so every length fits). */
static void png_texts(const unsigned char *p, size_t len, json_t *items)
{
	int seen = 0;
	for (size_t off = 8; off + 12 <= len && seen < PNGINFO_MAX_CHUNKS;) {
		size_t n = be32(p + off);
		const unsigned char *type = p + off + 4;
		if (n > len - off - 12 || !memcmp(type, "IEND", 4))
			break;
		if (!memcmp(type, "tEXt", 4) || !memcmp(type, "zTXt", 4) || !memcmp(type, "iTXt", 4)) {
			add_text(items, (const char *)type, p + off + 8, n);
			seen++;
		}
		off += 12 + n;
	}
}

/* ---- A1111's parse_generation_parameters ---------------------------- */

static int word(unsigned char c) { return isalnum(c) || c == '_' || c >= 0x80; }

static int key_char(unsigned char c) { return word(c) || c == ' ' || c == '-' || c == '/'; }

struct param {
	const char *key, *value;
	size_t key_len, value_len;
};

/* re_param = \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$), searched
 * from *at as re.findall does: the next match, or 0. */
static int next_param(const char *s, size_t n, size_t *at, struct param *out)
{
	for (size_t start = *at; start < n; start++) {
		size_t p = start;
		while (p < n && isspace((unsigned char)s[p]))
			p++;
		if (p >= n || !word((unsigned char)s[p]))
			continue;
		size_t k0 = p++;
		while (p < n && key_char((unsigned char)s[p]))
			p++;
		if (p - k0 < 2 || p >= n || s[p] != ':')
			continue;
		out->key = s + k0;
		out->key_len = p - k0;
		p++;
		while (p < n && isspace((unsigned char)s[p]))
			p++;
		out->value = s + p;
		if (p < n && s[p] == '"') { /* a quoted value, when it ends before a comma or the end */
			size_t q = p + 1;
			while (q < n && s[q] != '"')
				q += s[q] == '\\' && q + 1 < n ? 2 : 1;
			if (q < n && q > p + 1 && (q + 1 == n || s[q + 1] == ',')) {
				out->value_len = q + 1 - p;
				*at = q + 1 < n ? q + 2 : n;
				return 1;
			}
		}
		size_t v = p;
		while (v < n && s[v] != ',')
			v++;
		out->value_len = v - p;
		*at = v < n ? v + 1 : n;
		return 1;
	}
	*at = n;
	return 0;
}

static int count_params(const char *s, size_t n)
{
	struct param m;
	size_t at = 0;
	int count = 0;
	while (next_param(s, n, &at, &m))
		count++;
	return count;
}

/* One "Key: value": unquoted as JSON when quoted, "WxH" split into Key-1, Key-2. */
static void set_param(json_t *res, const struct param *m)
{
	char key[256];
	size_t kn = m->key_len < sizeof key - 3 ? m->key_len : sizeof key - 3;
	memcpy(key, m->key, kn);
	key[kn] = '\0';
	json_t *v = NULL;
	if (m->value_len >= 2 && m->value[0] == '"' && m->value[m->value_len - 1] == '"')
		v = json_loadb(m->value, m->value_len, JSON_DECODE_ANY, NULL);
	if (!json_is_string(v)) {
		json_decref(v);
		v = json_stringn(m->value, m->value_len);
	}
	const char *t = json_string_value(v);
	size_t w = t ? strspn(t, "0123456789") : 0;
	size_t h = w && t[w] == 'x' ? strspn(t + w + 1, "0123456789") : 0;
	if (h && !t[w + 1 + h]) {
		memcpy(key + kn, "-1", 3);
		json_object_set_new(res, key, json_stringn(t, w));
		memcpy(key + kn, "-2", 3);
		json_object_set_new(res, key, json_stringn(t + w + 1, h));
		json_decref(v);
	} else if (v) {
		json_object_set_new(res, key, v);
	}
}

/* Appends line to *text (a "\n" between), growing it. */
static void append_line(char **text, const char *line, size_t n)
{
	size_t have = *text ? strlen(*text) : 0;
	char *grown = realloc(*text, have + n + 2);
	if (!grown)
		return;
	if (have)
		grown[have++] = '\n';
	memcpy(grown + have, line, n);
	grown[have + n] = '\0';
	*text = grown;
}

static void trim(const char **s, size_t *n)
{
	while (*n && isspace((unsigned char)**s))
		(*s)++, (*n)--;
	while (*n && isspace((unsigned char)(*s)[*n - 1]))
		(*n)--;
}

/* The keys A1111 adds when the infotext lacks them (1.10). */
static void add_defaults(json_t *res)
{
	static const struct {
		const char *key, *text;
		int number;
	} D[] = {
		{"Clip skip", "1", -1},
		{"Hires sampler", "Use same sampler", -1},
		{"Hires checkpoint", "Use same checkpoint", -1},
		{"Hires prompt", "", -1},
		{"Hires negative prompt", "", -1},
		{"Mask mode", "Inpaint masked", -1},
		{"Masked content", "original", -1},
		{"Inpaint area", "Whole picture", -1},
		{"Masked area padding", NULL, 32},
		{"RNG", "GPU", -1},
		{"Schedule type", "Automatic", -1},
		{"Schedule max sigma", NULL, 0},
		{"Schedule min sigma", NULL, 0},
		{"Schedule rho", NULL, 0},
		{"VAE Encoder", "Full", -1},
		{"VAE Decoder", "Full", -1},
		{"FP8 weight", "Disable", -1},
	};
	if (!json_object_get(res, "Hires resize-1")) {
		json_object_set_new(res, "Hires resize-1", json_integer(0));
		json_object_set_new(res, "Hires resize-2", json_integer(0));
	}
	for (size_t i = 0; i < sizeof D / sizeof D[0]; i++)
		if (!json_object_get(res, D[i].key))
			json_object_set_new(res, D[i].key,
					    D[i].text ? json_string(D[i].text) : json_integer(D[i].number));
	const char *fp8 = json_string_value(json_object_get(res, "FP8 weight"));
	if (!json_object_get(res, "Cache FP16 weight for LoRA") && fp8 && strcmp(fp8, "Disable"))
		json_object_set_new(res, "Cache FP16 weight for LoRA", json_false());
}

json_t *pnginfo_parameters(const char *infotext)
{
	const char *x = infotext ? infotext : "";
	size_t n = strlen(x);
	trim(&x, &n);
	const char *nl = n ? memrchr(x, '\n', n) : NULL;
	const char *last = nl ? nl + 1 : x;
	size_t last_len = n - (size_t)(last - x), body_len = nl ? (size_t)(nl - x) : 0;
	if (count_params(last, last_len) < 3) { /* not a parameters line: part of the prompt */
		body_len = n;
		last_len = 0;
	}
	char *prompt = NULL, *negative = NULL;
	int negative_part = 0;
	for (const char *line = x, *end = x + body_len; line < end || (line == end && body_len);) {
		const char *stop = memchr(line, '\n', (size_t)(end - line));
		size_t len = stop ? (size_t)(stop - line) : (size_t)(end - line);
		const char *l = line;
		trim(&l, &len);
		if (len >= 16 && !memcmp(l, "Negative prompt:", 16)) {
			negative_part = 1;
			l += 16, len -= 16;
			trim(&l, &len);
		}
		if (negative_part ? negative != NULL || len : prompt != NULL || len)
			append_line(negative_part ? &negative : &prompt, l, len);
		if (!stop)
			break;
		line = stop + 1;
	}
	json_t *res = json_object(), *pr = json_string(prompt ? prompt : ""),
	       *ng = json_string(negative ? negative : "");
	/* (not UTF-8, which a PNG's text never is here: "") */
	json_object_set_new(res, "Prompt", pr ? pr : json_string(""));
	json_object_set_new(res, "Negative prompt", ng ? ng : json_string(""));
	free(prompt);
	free(negative);
	struct param m;
	size_t at = 0;
	while (last_len && next_param(last, last_len, &at, &m))
		set_param(res, &m);
	add_defaults(res);
	return res;
}

json_t *pnginfo_json(const char *image, size_t len, const char **why)
{
	*why = NULL;
	trim(&image, &len);
	if (!len) /* A1111: an empty image has no info */
		return json_pack("{s:s,s:{},s:{}}", "info", "", "items", "parameters");
	if ((len >= 7 && !strncmp(image, "http://", 7)) || (len >= 8 && !strncmp(image, "https://", 8))) {
		*why = "An image URL is not fetched here: send the image itself, base64-encoded";
		return NULL;
	}
	size_t n = 0;
	unsigned char *bytes = b64_decode_new(image, len, &n);
	enum image_type type = bytes ? image_check(bytes, n, NULL) : IMAGE_NONE;
	if (type == IMAGE_NONE) {
		free(bytes);
		*why = "Invalid encoded image";
		return NULL;
	}
	json_t *items = json_object();
	if (type == IMAGE_PNG)
		png_texts(bytes, n, items);
	free(bytes);
	json_t *geninfo = json_incref(json_object_get(items, "parameters"));
	json_object_del(items, "parameters");
	const char *text = json_string_value(geninfo);
	json_t *res = json_pack("{s:s,s:o,s:o}", "info", text ? text : "", "items", items, "parameters",
				pnginfo_parameters(text));
	json_decref(geninfo);
	return res;
}
