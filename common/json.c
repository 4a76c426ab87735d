/* json.c — see json.h. */
#include "json.h"

#include <math.h>
#include <string.h>

enum json_get json_get_int(const json_t *obj, const char *key, long long *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return JSON_GET_ABSENT;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return JSON_GET_OK;
	}
	/* pydantic accepts 20.0 for an int field, not 20.5 */
	if (json_is_real(v)) {
		double d = json_real_value(v);
		if (isfinite(d) && d == floor(d) && fabs(d) < 9e15) {
			*out = (long long)d;
			return JSON_GET_OK;
		}
	}
	return JSON_GET_WRONG_TYPE;
}

enum json_get json_get_number(const json_t *obj, const char *key, double *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return JSON_GET_ABSENT;
	if (!json_is_number(v))
		return JSON_GET_WRONG_TYPE;
	*out = json_number_value(v);
	return isfinite(*out) ? JSON_GET_OK : JSON_GET_WRONG_TYPE;
}

enum json_get json_get_bool(const json_t *obj, const char *key, int *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return JSON_GET_ABSENT;
	if (!json_is_boolean(v))
		return JSON_GET_WRONG_TYPE;
	*out = json_is_true(v);
	return JSON_GET_OK;
}

enum json_get json_get_string(const json_t *obj, const char *key, const char **out)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return JSON_GET_ABSENT;
	if (!json_is_string(v))
		return JSON_GET_WRONG_TYPE;
	*out = json_string_value(v);
	return JSON_GET_OK;
}

json_t *json_parse_object(const char *buf, size_t len, json_error_t *err)
{
	json_t *j = json_loadb(buf ? buf : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, err);
	if (j && !json_is_object(j)) {
		json_decref(j);
		snprintf(err->text, sizeof err->text, "Input should be a valid dictionary");
		err->position = 0;
		return NULL;
	}
	return j;
}

char *json_dump_compact(const json_t *j, size_t *len)
{
	char *s = json_dumps(j, JSON_COMPACT);
	if (s && len)
		*len = strlen(s);
	return s;
}
