/* error.h — sdgate's one list of error codes, each with its wire name, its
 * HTTP status and the JSON shapes of docs/jobs-api.md "Errors" (every code
 * here must appear in its table: tests/integration/test_docs_contracts.py):
 *   sdgate APIs:  {"detail": "<message>", "error": {"code", "message", "field"?}}
 *   A1111 API:    422 {"detail": [{"type", "loc": ["body", field], "msg", "input"}]}
 *                 (FastAPI/pydantic v2), other statuses {"detail": "<message>"}.
 * Pure functions; thread-safe. */
#ifndef SDGATE_ERROR_H
#define SDGATE_ERROR_H

#include <jansson.h>

enum sd_error {
	SDE_OK = 0,
	SDE_BAD_JSON,             /* 422 body is not JSON / not an object */
	SDE_INVALID,              /* 422 a field is out of range or of the wrong type */
	SDE_BODY_TOO_LARGE,       /* 413 */
	SDE_NOT_FOUND,            /* 404 */
	SDE_SAMPLER_NOT_FOUND,    /* 404 "Sampler not found", as A1111 */
	SDE_MODEL_NOT_FOUND,      /* 404 unknown checkpoint */
	SDE_UNAUTHORIZED,         /* 401 */
	SDE_FORBIDDEN,            /* 403 authenticated, but not allowed this (another provider's backend or name) */
	SDE_REGISTRATION_OFF,     /* 403 the balancer takes no registrations */
	SDE_NAME_TAKEN,           /* 409 a live registration holds this provider name */
	SDE_URL_TAKEN,            /* 409 a live registration or a static backend holds this URL */
	SDE_TOO_MANY_BACKENDS,    /* 429 the backend list is full */
	SDE_QUEUE_FULL,           /* 429 */
	SDE_RATE_LIMITED,         /* 429 */
	SDE_INTERRUPTED,          /* 409 the job was interrupted before any image */
	SDE_UPSTREAM,             /* 502 the upstream server failed or answered garbage */
	SDE_TIMEOUT,              /* 504 */
	SDE_NO_BACKEND,           /* 503 no live backend could ever serve the job */
	SDE_INTERNAL,             /* 500 */
	SDE_MEDIA_TYPE,           /* 415 a form or text/plain body: what a cross-site browser page can send */
	SDE_FORBIDDEN_ORIGIN,     /* 403 a browser request from an Origin not in --allowed-origin */
	SDE_NOT_READY,            /* 409 the job has not finished: its result is not there yet */
	SDE_RESULT_GONE,          /* 410 a finished job's images are no longer kept (caps, or a failed write) */
	SDE_NOT_RUNNABLE,         /* 422 no live backend can run this field's value (size, steps, hires fix, ...) */
	SDE_CLIENT_QUEUE_FULL,    /* 429 this client has --max-queue-per-client unfinished jobs */
	SDE_IDEMPOTENCY_REUSED,   /* 422 the same Idempotency-Key with another body */
	SDE_STORAGE_FAILED,       /* 503 the job could not be written to the store */
	SDE_ALREADY_FINISHED,     /* 409 cancelling a finished job */
	SDE_METHOD_NOT_ALLOWED,   /* 405 */
	SDE_SHUTTING_DOWN,        /* 503 the server is stopping */
	SDE_BACKEND_FAILED,       /* 502 a job: every attempt failed */
	SDE_REJECTED,             /* 422 a job: a backend refused the request itself */
	SDE_BALANCER_RESTARTED,   /* 503 a job: the balancer restarted while its client waited */
	SDE_RUNNING_ELSEWHERE,    /* 503 cancelling a job another balancer (same database) runs */
	SDE_REQUEST_IN_PROGRESS,  /* 409 a façade request's Idempotency-Key: another request waits for its job */
	SDE_TOO_LARGE,            /* websocket (gateway) */
	SDE_BAD_UTF8,             /* websocket (gateway) */
	SDE_BINARY_FRAME,         /* websocket (gateway) */
	SDE_NOT_OBJECT,           /* websocket (gateway) */
	SDE_UNKNOWN_TYPE,         /* websocket (gateway) */
	SDE_SCHEDULER_NOT_FOUND,  /* websocket (gateway) */
	SDE_UNKNOWN_GPU,          /* websocket (gateway) */
	SDE_DUPLICATE_ID,         /* websocket (gateway) */
	SDE_TOO_MANY_JOBS,        /* websocket (gateway) */
	SDE_UNKNOWN_JOB,          /* websocket (gateway) */
	SDE_CANCELLED,            /* websocket (gateway) */
	SDE_BALANCER_UNREACHABLE, /* websocket (gateway) */
	SDE_BALANCER_LOST,        /* websocket (gateway) */
	SDE_LOST,                 /* websocket (gateway) */
	SDE_BALANCER_ERROR,       /* websocket (gateway) */
	SDE_REFUSED,              /* websocket (gateway) */
	SDE_FAILED,               /* websocket (gateway) */
	SDE_NO_IMAGE,             /* websocket (gateway) */
	SDE_BAD_IMAGE,            /* websocket (gateway) */
	SDE_IMAGE_TOO_LARGE,      /* websocket (gateway) */
	SDE_BUSY,                 /* websocket (gateway) */
	SDE_COUNT
};

/* "bad_json", "invalid", ... */
const char *sd_error_code(enum sd_error e);
/* The HTTP status; 0 for the gateway's websocket-only codes (docs/websocket.md). */
/* The code named code ("no_backend", ...), SDE_INTERNAL when none is. */
enum sd_error sd_error_of(const char *code);
int sd_error_status(enum sd_error e);

/* {"detail": message, "error": {"code", "message", "field"}}; field may be NULL. New reference. */
json_t *sd_error_json(enum sd_error e, const char *message, const char *field);

/* Collects FastAPI-style validation items: call sd_validation_add for each
 * problem, then reply with the list as {"detail": [...]}. */
/* Adds {"type", "loc": ["body", field], "msg", "input"}; input is borrowed (may be NULL). */
void sd_validation_add(json_t *list, const char *field, const char *type, const char *msg, json_t *input);

#endif
