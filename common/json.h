/* json.h — small helpers on jansson used by every program: typed field reads
 * that tell "absent" from "wrong type", and dumping to a malloc'd string.
 * Thread-safe as jansson is (no object shared between threads is mutated). */
#ifndef SDGATE_JSON_H
#define SDGATE_JSON_H

#include <jansson.h>
#include <stddef.h>

enum json_get { JSON_GET_ABSENT = 0, JSON_GET_OK = 1, JSON_GET_WRONG_TYPE = -1 };

/* A missing key and an explicit null are both ABSENT (as pydantic's Optional). */
enum json_get json_get_int(const json_t *obj, const char *key, long long *out);
/* Accepts integers and reals. */
enum json_get json_get_number(const json_t *obj, const char *key, double *out);
enum json_get json_get_bool(const json_t *obj, const char *key, int *out);
/* Borrowed pointer into obj. */
enum json_get json_get_string(const json_t *obj, const char *key, const char **out);

/* Parses a request body: NULL (with err->text) unless it is a JSON object.
 * Rejects NUL bytes and duplicate keys. */
json_t *json_parse_object(const char *buf, size_t len, json_error_t *err);

/* json_dumps(JSON_COMPACT) with its length; caller frees. */
char *json_dump_compact(const json_t *j, size_t *len);

#endif
