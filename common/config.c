/* config.c — see config.h. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Strings we allocated, so that defaults given as literals are never freed. */
#define CONFIG_MAX_OWNED 256
static void *owned[CONFIG_MAX_OWNED];
static size_t n_owned;

static char *own(char *p)
{
	if (p && n_owned < CONFIG_MAX_OWNED)
		owned[n_owned++] = p;
	return p;
}

static int names_equal(const char *a, const char *b)
{
	for (; *a && *b; a++, b++) {
		char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
		if (x != y)
			return 0;
	}
	return *a == *b;
}

static const struct config_option *find_option(const struct config_program *prog, const char *name)
{
	for (size_t i = 0; i < prog->n_options; i++)
		if (names_equal(prog->options[i].name, name))
			return &prog->options[i];
	return NULL;
}

/* "provider-token-file" -> the SECRET option "provider-token", else NULL. */
static const struct config_option *find_secret_file(const struct config_program *prog, const char *name)
{
	static const char suffix[] = "-file";
	size_t n = strlen(name), s = sizeof suffix - 1;
	char base[64];
	if (n <= s || n - s >= sizeof base || !names_equal(name + n - s, suffix))
		return NULL;
	memcpy(base, name, n - s);
	base[n - s] = '\0';
	const struct config_option *o = find_option(prog, base);
	return o && o->type == CONFIG_SECRET ? o : NULL;
}

/* Sets a secret from the first line of a file (at most CONFIG_MAX_SECRET bytes). */
static int set_secret_from_file(const struct config_option *o, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "--%s-file %s: %s\n", o->name, path, strerror(errno));
		return -1;
	}
	char buf[CONFIG_MAX_SECRET + 2];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (strlen(buf) > CONFIG_MAX_SECRET) {
		fprintf(stderr, "--%s-file %s: longer than %d bytes\n", o->name, path, CONFIG_MAX_SECRET);
		return -1;
	}
	*(const char **)o->dest = own(strdup(buf));
	return 0;
}

/* SDGATE_<NAME>: "admin-token" -> "SDGATE_ADMIN_TOKEN". */
static void secret_env_name(const struct config_option *o, char *out, size_t len)
{
	snprintf(out, len, "SDGATE_%s", o->name);
	for (char *p = out; *p; p++)
		*p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
}

static void secrets_from_env(const struct config_program *prog)
{
	for (size_t i = 0; i < prog->n_options; i++) {
		const struct config_option *o = &prog->options[i];
		char env[80];
		if (o->type != CONFIG_SECRET)
			continue;
		secret_env_name(o, env, sizeof env);
		const char *v = getenv(env);
		if (v && *v)
			*(const char **)o->dest = own(strdup(v));
	}
}

/* The shipped placeholder, short tokens and tokens that cannot travel in a
 * header are refused; an empty one means "not set". */
static int check_secrets(const struct config_program *prog)
{
	for (size_t i = 0; i < prog->n_options; i++) {
		const struct config_option *o = &prog->options[i];
		const char **v = o->dest;
		if (o->type != CONFIG_SECRET || !*v)
			continue;
		if (!**v) {
			*v = NULL;
			continue;
		}
		const char *why = NULL;
		if (!strcasecmp(*v, "CHANGE_ME"))
			why = "is the placeholder CHANGE_ME; generate one with `openssl rand -hex 32`";
		else if (strlen(*v) < CONFIG_MIN_SECRET)
			why = "is shorter than 16 bytes; generate one with `openssl rand -hex 32`";
		else if (strlen(*v) > CONFIG_MAX_SECRET)
			why = "is longer than 1024 bytes";
		for (const unsigned char *p = (const unsigned char *)*v; !why && *p; p++)
			if (*p <= ' ' || *p >= 127)
				why = "has a space, a control or a non-ASCII character";
		if (why) {
			fprintf(stderr, "--%s: refused: the token %s\n", o->name, why);
			return -1;
		}
	}
	return 0;
}

static int check_range(const struct config_option *o, double v)
{
	if (o->min < o->max && (v < o->min || v > o->max)) {
		fprintf(stderr, "--%s: %g is out of range [%g, %g]\n", o->name, v, o->min, o->max);
		return -1;
	}
	return 0;
}

static int list_append(const struct config_option *o, const char *value)
{
	char ***list = o->dest;
	size_t n = 0;
	while (*list && (*list)[n])
		n++;
	if (n >= 64) {
		fprintf(stderr, "--%s: at most 64 values\n", o->name);
		return -1;
	}
	char **grown = realloc(*list, (n + 2) * sizeof **list);
	if (!grown)
		return -1;
	/* The list array itself is owned; register it only once. */
	if (n == 0)
		own((char *)grown);
	else
		for (size_t i = 0; i < n_owned; i++)
			if (owned[i] == *list)
				owned[i] = grown;
	grown[n] = own(strdup(value));
	grown[n + 1] = NULL;
	*list = grown;
	return grown[n] ? 0 : -1;
}

/* Sets one option from text (a flag or a JSON scalar turned into text). */
static int set_from_text(const struct config_option *o, const char *value)
{
	char *end;
	errno = 0;
	switch (o->type) {
	case CONFIG_STRING:
	case CONFIG_SECRET:
		*(const char **)o->dest = own(strdup(value));
		return 0;
	case CONFIG_LIST:
		return list_append(o, value);
	case CONFIG_INT: {
		long v = strtol(value, &end, 10);
		if (errno || end == value || *end) {
			fprintf(stderr, "--%s: '%s' is not an integer\n", o->name, value);
			return -1;
		}
		if (check_range(o, (double)v))
			return -1;
		*(long *)o->dest = v;
		return 0;
	}
	case CONFIG_DOUBLE: {
		double v = strtod(value, &end);
		if (errno || end == value || *end || !isfinite(v)) {
			fprintf(stderr, "--%s: '%s' is not a number\n", o->name, value);
			return -1;
		}
		if (check_range(o, v))
			return -1;
		*(double *)o->dest = v;
		return 0;
	}
	case CONFIG_BOOL:
		if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "yes")) {
			*(int *)o->dest = 1;
			return 0;
		}
		if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "no")) {
			*(int *)o->dest = 0;
			return 0;
		}
		fprintf(stderr, "--%s: '%s' is not a boolean\n", o->name, value);
		return -1;
	}
	return -1;
}

static int set_from_json(const struct config_option *o, json_t *v)
{
	char buf[64];
	if (json_is_string(v))
		return set_from_text(o, json_string_value(v));
	if (json_is_integer(v)) {
		snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return set_from_text(o, buf);
	}
	if (json_is_real(v)) {
		snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
		return set_from_text(o, buf);
	}
	if (json_is_boolean(v))
		return set_from_text(o, json_is_true(v) ? "true" : "false");
	if (json_is_array(v) && o->type == CONFIG_LIST) {
		size_t i;
		json_t *item;
		json_array_foreach(v, i, item)
		{
			if (!json_is_string(item) || set_from_text(o, json_string_value(item)))
				return -1;
		}
		return 0;
	}
	fprintf(stderr, "config: \"%s\" has the wrong type\n", o->name);
	return -1;
}

static int load_file(const struct config_program *prog, const char *path)
{
	json_error_t err;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
	if (!root) {
		fprintf(stderr, "%s: line %d: %s\n", path, err.line, err.text);
		return -1;
	}
	int rc = 0;
	if (!json_is_object(root)) {
		fprintf(stderr, "%s: the config must be a JSON object\n", path);
		rc = -1;
	}
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v)
	{
		if (rc)
			break;
		const struct config_option *o = find_option(prog, key);
		const struct config_option *file = o ? NULL : find_secret_file(prog, key);
		if (file) {
			rc = json_is_string(v) ? set_secret_from_file(file, json_string_value(v)) : -1;
			if (!json_is_string(v))
				fprintf(stderr, "config: \"%s\" must be a file name\n", key);
			continue;
		}
		if (!o) {
			/* Keys other modules read from the same file (e.g. "backends"
			 * objects) are left to them; a typo still deserves a word. */
			if (!json_is_object(v) && !json_is_array(v))
				fprintf(stderr, "%s: unknown key \"%s\" ignored\n", path, key);
			continue;
		}
		rc = set_from_json(o, v);
	}
	json_decref(root);
	return rc;
}

static void print_help(const struct config_program *prog)
{
	printf("%s %s — %s\n\nUsage: %s [options]\n\nOptions:\n", prog->name, SDGATE_VERSION, prog->summary,
	       prog->name);
	printf("  %-28s %s\n", "--help", "print this help and exit");
	printf("  %-28s %s\n", "--version", "print the version and exit");
	printf("  %-28s %s\n", "--config FILE", "JSON object of options; flags override it");
	for (size_t i = 0; i < prog->n_options; i++) {
		const struct config_option *o = &prog->options[i];
		char flag[64];
		snprintf(flag, sizeof flag, "--%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
		printf("  %-28s %s", flag, o->help);
		if (o->type == CONFIG_SECRET) {
			char env[80];
			secret_env_name(o, env, sizeof env);
			printf(" (or --%s-file FILE, or $%s; at least %d bytes)", o->name, env, CONFIG_MIN_SECRET);
		} else if (o->type == CONFIG_STRING && *(const char **)o->dest)
			printf(" (default %s)", *(const char **)o->dest);
		else if (o->type == CONFIG_INT)
			printf(" (default %ld)", *(long *)o->dest);
		else if (o->type == CONFIG_DOUBLE)
			printf(" (default %g)", *(double *)o->dest);
		else if (o->type == CONFIG_LIST)
			printf(" (repeatable)");
		printf("\n");
	}
	if (prog->epilog)
		printf("\n%s", prog->epilog);
}

enum config_result config_parse(const struct config_program *prog, int argc, char **argv)
{
	/* The file first, wherever --config stands, so that flags override it. */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			print_help(prog);
			return CONFIG_EXIT;
		}
		if (!strcmp(argv[i], "--version")) {
			printf("%s %s\n", prog->name, SDGATE_VERSION);
			return CONFIG_EXIT;
		}
	}
	secrets_from_env(prog);
	for (int i = 1; i < argc; i++) {
		const char *path = NULL;
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			path = argv[i + 1];
		else if (!strncmp(argv[i], "--config=", 9))
			path = argv[i] + 9;
		if (path && load_file(prog, path))
			return CONFIG_ERROR;
	}
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strncmp(arg, "--", 2) != 0) {
			fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog->name, arg);
			return CONFIG_ERROR;
		}
		char name[64];
		const char *eq = strchr(arg + 2, '=');
		size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
		if (len >= sizeof name) {
			fprintf(stderr, "%s: unknown option '%s'\n", prog->name, arg);
			return CONFIG_ERROR;
		}
		memcpy(name, arg + 2, len);
		name[len] = '\0';
		if (!strcmp(name, "config")) {
			if (!eq)
				i++;
			continue;
		}
		const struct config_option *o = find_option(prog, name);
		const struct config_option *file = o ? NULL : find_secret_file(prog, name);
		if (!o && !file) {
			fprintf(stderr, "%s: unknown option '--%s' (see --help)\n", prog->name, name);
			return CONFIG_ERROR;
		}
		if (file) {
			if (!eq && i + 1 >= argc) {
				fprintf(stderr, "%s: --%s needs a value\n", prog->name, name);
				return CONFIG_ERROR;
			}
			if (set_secret_from_file(file, eq ? eq + 1 : argv[++i]))
				return CONFIG_ERROR;
			continue;
		}
		const char *value;
		if (eq)
			value = eq + 1;
		else if (o->type == CONFIG_BOOL)
			value = "true";
		else if (i + 1 < argc)
			value = argv[++i];
		else {
			fprintf(stderr, "%s: --%s needs a value\n", prog->name, name);
			return CONFIG_ERROR;
		}
		if (set_from_text(o, value))
			return CONFIG_ERROR;
		if (o->type == CONFIG_SECRET)
			fprintf(stderr,
				"%s: warning: --%s on the command line is visible to every local user (ps); "
				"use --%s-file or the environment\n",
				prog->name, name, name);
	}
	return check_secrets(prog) ? CONFIG_ERROR : CONFIG_OK;
}

static int is_owned(const void *p)
{
	for (size_t i = 0; i < n_owned; i++)
		if (owned[i] == p)
			return 1;
	return 0;
}

void config_free(const struct config_program *prog)
{
	/* No option may keep pointing at what is freed here (a later
	 * config_parse would append to a freed list: found by fuzz_config). */
	for (size_t i = 0; prog && i < prog->n_options; i++) {
		const struct config_option *o = &prog->options[i];
		if ((o->type == CONFIG_STRING || o->type == CONFIG_SECRET) && is_owned(*(const char **)o->dest))
			*(const char **)o->dest = NULL;
		else if (o->type == CONFIG_LIST && is_owned(*(char ***)o->dest))
			*(char ***)o->dest = NULL;
	}
	for (size_t i = 0; i < n_owned; i++)
		free(owned[i]);
	n_owned = 0;
}

int config_split_listen(const char *spec, char *host, size_t host_len, int *port)
{
	const char *colon;
	const char *h = spec;
	size_t hlen;
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':')
			return -1;
		h = spec + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon) {
			colon = spec - 1; /* "7860" alone */
			hlen = 0;
		} else {
			hlen = (size_t)(colon - spec);
		}
	}
	char *end;
	errno = 0;
	long p = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
		return -1;
	if (hlen == 0) {
		h = "127.0.0.1";
		hlen = strlen(h);
	}
	if (hlen >= host_len)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (int)p;
	return 0;
}
