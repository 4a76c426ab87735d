/* config.h — flags and JSON config files, the same for every program.
 *
 * A program describes its options once, in a table; config_parse() then reads
 * `--config FILE` (a JSON object whose keys are the option names, '-' or '_'),
 * and the command-line flags override it. `--help` prints the table (with the
 * program's limits appended by the caller), `--version` the version.
 * Repeatable options (CONFIG_LIST) collect into a NULL-terminated array; a
 * JSON array in the file gives the same. Strings are owned by the config and
 * live until config_free().
 *
 * Secrets (CONFIG_SECRET: tokens) need not appear in `ps`: besides `--NAME T`
 * (which still works, with a warning on stderr) they are read from
 * `--NAME-file FILE` (the file's first line) or from the environment variable
 * SDGATE_<NAME> ("provider-token" -> SDGATE_PROVIDER_TOKEN); precedence is
 * flag, then config file, then environment. An empty value means "not set".
 * A value of CHANGE_ME (the shipped placeholder), one shorter than
 * CONFIG_MIN_SECRET bytes, or one with spaces or control characters is
 * refused (CONFIG_ERROR, with the reason on stderr). --help never prints a
 * secret. Single-threaded: call from main() only. */
#ifndef SDGATE_CONFIG_H
#define SDGATE_CONFIG_H

#include <stddef.h>

enum config_type { CONFIG_STRING, CONFIG_INT, CONFIG_DOUBLE, CONFIG_BOOL, CONFIG_LIST, CONFIG_SECRET };

#define CONFIG_MIN_SECRET 16   /* bytes */
#define CONFIG_MAX_SECRET 1024 /* bytes */

struct config_option {
	const char *name; /* "listen" -> --listen, JSON key "listen" */
	enum config_type type;
	void *dest;          /* const char ** (STRING, SECRET), long *, double *, int *, or char *** (LIST) */
	const char *metavar; /* "HOST:PORT"; NULL for BOOL */
	const char *help;
	double min, max; /* for INT and DOUBLE when min < max */
};

struct config_program {
	const char *name;    /* "sdgate-backend" */
	const char *summary; /* one line */
	const struct config_option *options;
	size_t n_options;
	const char *epilog; /* printed after the options (limits), may be NULL */
};

enum config_result { CONFIG_OK = 0, CONFIG_EXIT = 1, CONFIG_ERROR = -1 };

/* Parses argv. CONFIG_EXIT: --help/--version printed, exit 0. CONFIG_ERROR:
 * the reason was printed on stderr, exit 2. */
enum config_result config_parse(const struct config_program *prog, int argc, char **argv);
/* Frees every string and list config_parse() allocated. */
void config_free(const struct config_program *prog);

/* Splits "host:port", "[::1]:port" or ":port"/"port" (host = 127.0.0.1).
 * Returns 0, or -1 if malformed. host gets at most host_len-1 bytes. */
int config_split_listen(const char *spec, char *host, size_t host_len, int *port);

#endif
