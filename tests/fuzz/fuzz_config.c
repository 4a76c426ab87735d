/* libFuzzer target: a `--config FILE` JSON file as every program reads it
 * (common/config.c), against an option table with every option type. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *s_opt;
static long i_opt;
static double d_opt;
static int b_opt;
static char **l_opt;

static const struct config_option OPTIONS[] = {
	{"listen", CONFIG_STRING, &s_opt, "HOST:PORT", "a string", 0, 0},
	{"max-queue", CONFIG_INT, &i_opt, "N", "an int", 1, 1000},
	{"factor", CONFIG_DOUBLE, &d_opt, "F", "a double", 0.5, 100},
	{"cpu", CONFIG_BOOL, &b_opt, NULL, "a bool", 0, 0},
	{"backend", CONFIG_LIST, &l_opt, "URL", "a list", 0, 0},
};
static const struct config_program PROGRAM = {"fuzz", "fuzz", OPTIONS, sizeof OPTIONS / sizeof OPTIONS[0], NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	if (!path[0]) /* config_parse explains each refusal on stderr: run with -close_fd_mask=2 */
		snprintf(path, sizeof path, "/tmp/sdgate-fuzz-config-%d.json", (int)getpid());
	FILE *f = fopen(path, "wb");
	if (!f)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	char *argv[] = {"fuzz", "--config", path, NULL};
	config_parse(&PROGRAM, 3, argv);
	config_free(&PROGRAM);
	return 0;
}
