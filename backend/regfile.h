/* regfile.h — the registration file (--registration-file): what a backend
 * needs to resume its registration with a balancer after a crash or a
 * restart, without waiting for the old one to expire: the balancer's URL,
 * the registration's id, its secret (our Bearer for heartbeat and DELETE),
 * the backend_token (the balancer's Bearer on its calls here), the
 * heartbeat interval and a fingerprint of what was registered. A JSON object of at most REGFILE_MAX_BYTES, written
 * atomically (temporary file in the same folder, fsync, rename, fsync of
 * the folder) with mode 0600; read with every field checked, so that a
 * damaged or foreign file is refused rather than trusted. Blocking file I/O:
 * the registration thread and main() only. */
#ifndef SDGATE_REGFILE_H
#define SDGATE_REGFILE_H

#define REGFILE_MAX_BYTES 4096 /* a bigger file is not ours */
#define REGFILE_MAX_SECRET 128 /* bytes of a secret or token */
#define REGFILE_MAX_ID 64      /* bytes of a registration id */
#define REGFILE_MAX_URL 511    /* bytes of the balancer's URL */
#define REGFILE_FINGERPRINT_HEX 64

struct regfile {
	char balancer[REGFILE_MAX_URL + 1];
	char id[REGFILE_MAX_ID + 1];
	char secret[REGFILE_MAX_SECRET + 1];
	char backend_token[REGFILE_MAX_SECRET + 1];
	long heartbeat_interval_s;
	/* regfile_fingerprint of the registration request: a file made for
	 * another identity, URL, model list or version is not taken up. */
	char registered_as[REGFILE_FINGERPRINT_HEX + 1];
};

enum regfile_result { REGFILE_OK = 0, REGFILE_ABSENT = 1, REGFILE_BAD = -1 };

/* 1 if v can be a secret or token: 16..REGFILE_MAX_SECRET bytes of printable
 * ASCII without spaces. */
int regfile_secret_valid(const char *v);
/* 1 if v can be a registration id: 1..REGFILE_MAX_ID bytes of [A-Za-z0-9_-]
 * (it goes into a URL path). */
int regfile_id_valid(const char *v);
/* The SHA-256 of text, in lowercase hex. */
void regfile_fingerprint(const char *text, char out[REGFILE_FINGERPRINT_HEX + 1]);
/* Reads path into *out. REGFILE_ABSENT when there is no file (silently),
 * REGFILE_BAD (with the reason in a warning) when it is not a regular file,
 * too big, not JSON, or a field is missing or out of bounds. */
enum regfile_result regfile_read(const char *path, struct regfile *out);
/* Replaces path atomically with *rf, mode 0600. 0, or -1 (logged). */
int regfile_write(const char *path, const struct regfile *rf);
/* Removes path; a missing file is fine. */
void regfile_remove(const char *path);

#endif
