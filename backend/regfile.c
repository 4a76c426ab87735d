/* regfile.c — see regfile.h. */
#include "regfile.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REGFILE_MAX_KEYS 8 /* the six fields and a little room */
#define TOO_BIG "bigger than 4096 bytes"
_Static_assert(REGFILE_MAX_BYTES == 4096, "update TOO_BIG");

int regfile_secret_valid(const char *v)
{
	size_t n = v ? strlen(v) : 0;
	if (n < 16 || n > REGFILE_MAX_SECRET)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (v[i] <= ' ' || v[i] > '~')
			return 0;
	return 1;
}

int regfile_id_valid(const char *v)
{
	size_t n = v ? strlen(v) : 0;
	if (n < 1 || n > REGFILE_MAX_ID)
		return 0;
	return strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

void regfile_fingerprint(const char *text, char out[REGFILE_FINGERPRINT_HEX + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA256_DIGEST_LENGTH];
	_Static_assert(2 * SHA256_DIGEST_LENGTH == REGFILE_FINGERPRINT_HEX, "SHA-256 in hex");
	SHA256((const unsigned char *)text, strlen(text), md);
	for (size_t i = 0; i < sizeof md; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[REGFILE_FINGERPRINT_HEX] = '\0';
}

static int fingerprint_valid(const char *v)
{
	return strlen(v) == REGFILE_FINGERPRINT_HEX && strspn(v, "0123456789abcdef") == REGFILE_FINGERPRINT_HEX;
}

/* Reads at most REGFILE_MAX_BYTES of a regular file into buf (caller frees).
 * Returns the length, -1 when absent, -2 when refused (why is set). */
static long read_bounded(const char *path, char **buf, const char **why)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		*why = strerror(errno);
		return errno == ENOENT ? -1 : -2;
	}
	struct stat st;
	long n = -2;
	*buf = NULL;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		goto done;
	}
	if (st.st_size > REGFILE_MAX_BYTES) {
		*why = TOO_BIG;
		goto done;
	}
	if (st.st_mode & 077)
		log_warn("registration file %s: readable by others (mode %03o); it should be 0600", path,
			 (unsigned)(st.st_mode & 0777));
	*buf = malloc(REGFILE_MAX_BYTES + 1);
	if (!*buf) {
		*why = "out of memory";
		goto done;
	}
	/* One byte more than allowed: a file that grew since fstat is refused. */
	ssize_t got = read(fd, *buf, REGFILE_MAX_BYTES + 1);
	if (got < 0 || got > REGFILE_MAX_BYTES) {
		*why = got < 0 ? strerror(errno) : TOO_BIG;
		goto done;
	}
	n = (long)got;
done:
	close(fd);
	return n;
}

/* Copies the string field key of j into out (size cap) if valid(), else
 * returns -1. */
static int take(json_t *j, const char *key, char *out, size_t cap, int (*valid)(const char *))
{
	const char *v = json_string_value(json_object_get(j, key));
	if (!v || strlen(v) >= cap || (valid && !valid(v)))
		return -1;
	snprintf(out, cap, "%s", v);
	return 0;
}

static int url_valid(const char *v)
{
	return (strncmp(v, "http://", 7) == 0 || strncmp(v, "https://", 8) == 0) && strcspn(v, " \t\r\n") == strlen(v);
}

/* Fills *out from the parsed file; NULL, or why it cannot. */
static const char *parse(json_t *j, struct regfile *out)
{
	if (!json_is_object(j) || json_object_size(j) > REGFILE_MAX_KEYS)
		return "not a JSON object with the registration's fields";
	if (take(j, "balancer", out->balancer, sizeof out->balancer, url_valid) != 0)
		return "no valid \"balancer\"";
	if (take(j, "id", out->id, sizeof out->id, regfile_id_valid) != 0)
		return "no valid \"id\"";
	if (take(j, "secret", out->secret, sizeof out->secret, regfile_secret_valid) != 0)
		return "no valid \"secret\"";
	if (take(j, "backend_token", out->backend_token, sizeof out->backend_token, regfile_secret_valid) != 0)
		return "no valid \"backend_token\"";
	if (take(j, "registered_as", out->registered_as, sizeof out->registered_as, fingerprint_valid) != 0)
		return "no valid \"registered_as\"";
	json_t *hb = json_object_get(j, "heartbeat_interval_s");
	if (hb && (!json_is_integer(hb) || json_integer_value(hb) < 1 || json_integer_value(hb) > 3600))
		return "\"heartbeat_interval_s\" is not 1..3600";
	out->heartbeat_interval_s = hb ? (long)json_integer_value(hb) : 0;
	return NULL;
}

enum regfile_result regfile_read(const char *path, struct regfile *out)
{
	memset(out, 0, sizeof *out);
	char *buf = NULL;
	const char *why = "";
	long n = read_bounded(path, &buf, &why);
	if (n == -1)
		return REGFILE_ABSENT;
	if (n >= 0) {
		json_error_t err;
		json_t *j = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &err);
		why = parse(j, out);
		json_decref(j);
	}
	free(buf);
	if (!why)
		return REGFILE_OK;
	log_warn("registration file %s ignored: %s", path, why);
	memset(out, 0, sizeof *out);
	return REGFILE_BAD;
}

/* fsync of the folder holding path, so that the rename survives a reboot. */
static void sync_folder(const char *path)
{
	char copy[4096];
	snprintf(copy, sizeof copy, "%s", path);
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

int regfile_write(const char *path, const struct regfile *rf)
{
	json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:I,s:s}", "balancer", rf->balancer, "id", rf->id, "secret", rf->secret,
			      "backend_token", rf->backend_token, "heartbeat_interval_s",
			      (json_int_t)rf->heartbeat_interval_s, "registered_as", rf->registered_as);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	char tmp[4096];
	int fd = -1;
	if (!text || snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp)
		goto fail;
	fd = mkstemp(tmp); /* mode 0600 */
	if (fd < 0)
		goto fail;
	size_t len = strlen(text), off = 0;
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto fail_unlink;
		off += (size_t)w;
	}
	if (fchmod(fd, 0600) != 0 || fsync(fd) != 0)
		goto fail_unlink;
	int rc = close(fd);
	fd = -1;
	if (rc != 0 || rename(tmp, path) != 0)
		goto fail_unlink;
	sync_folder(path);
	free(text);
	return 0;
fail_unlink:;
	int saved = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	errno = saved;
fail:
	log_warn("registration file %s: cannot write it: %s", path, strerror(errno));
	free(text);
	return -1;
}

void regfile_remove(const char *path)
{
	if (unlink(path) != 0 && errno != ENOENT)
		log_warn("registration file %s: cannot remove it: %s", path, strerror(errno));
	else
		sync_folder(path);
}
