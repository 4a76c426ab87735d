/* error.c — see error.h. */
#include "error.h"

#include <string.h>

static const struct {
	const char *code;
	int status;
	const char *message;
} ERRORS[SDE_COUNT] = {
	[SDE_OK] = {"ok", 200, "OK"},
	[SDE_BAD_JSON] = {"bad_json", 422, "The body is not a JSON object"},
	[SDE_INVALID] = {"invalid", 422, "Invalid value"},
	[SDE_BODY_TOO_LARGE] = {"body_too_large", 413, "Request body too large"},
	[SDE_NOT_FOUND] = {"not_found", 404, "Not Found"},
	[SDE_SAMPLER_NOT_FOUND] = {"sampler_not_found", 404, "Sampler not found"},
	[SDE_MODEL_NOT_FOUND] = {"model_not_found", 404, "Checkpoint not found"},
	[SDE_UNAUTHORIZED] = {"unauthorized", 401, "Unauthorized"},
	[SDE_FORBIDDEN] = {"forbidden", 403, "Forbidden"},
	[SDE_REGISTRATION_OFF] = {"registration_disabled", 403, "This balancer takes no registrations"},
	[SDE_NAME_TAKEN] = {"name_taken", 409, "A live registration holds this provider name"},
	[SDE_URL_TAKEN] = {"url_taken", 409, "A live registration or a static backend holds this URL"},
	[SDE_TOO_MANY_BACKENDS] = {"too_many_backends", 429, "The balancer's backend list is full"},
	[SDE_QUEUE_FULL] = {"queue_full", 429, "The queue is full"},
	[SDE_RATE_LIMITED] = {"rate_limited", 429, "Too many requests"},
	[SDE_INTERRUPTED] = {"interrupted", 409, "Interrupted"},
	[SDE_UPSTREAM] = {"upstream_error", 502, "The upstream server failed"},
	[SDE_TIMEOUT] = {"timeout", 504, "Timed out"},
	[SDE_NO_BACKEND] = {"no_backend", 503, "No backend can serve this job"},
	[SDE_INTERNAL] = {"internal", 500, "Internal Server Error"},
	[SDE_MEDIA_TYPE] = {"unsupported_media_type", 415, "Send the body as application/json"},
	[SDE_FORBIDDEN_ORIGIN] = {"forbidden_origin", 403, "Requests from this web origin are not allowed"},
	[SDE_NOT_READY] = {"not_ready", 409, "The job has not finished yet"},
	[SDE_RESULT_GONE] = {"result_gone", 410, "The result is no longer kept"},
	[SDE_NOT_RUNNABLE] = {"not_runnable", 422, "No live backend can run this"},
	[SDE_CLIENT_QUEUE_FULL] = {"client_queue_full", 429, "Too many unfinished jobs from this client"},
	[SDE_IDEMPOTENCY_REUSED] = {"idempotency_key_reused", 422, "This Idempotency-Key came with another body"},
	[SDE_STORAGE_FAILED] = {"storage_failed", 503, "The job could not be stored"},
	[SDE_ALREADY_FINISHED] = {"already_finished", 409, "The job has already finished"},
	[SDE_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405, "Method Not Allowed"},
	[SDE_SHUTTING_DOWN] = {"shutting_down", 503, "Shutting down"},
	[SDE_BACKEND_FAILED] = {"backend_failed", 502, "Every attempt failed"},
	[SDE_REJECTED] = {"rejected", 422, "A backend refused the request"},
	[SDE_BALANCER_RESTARTED] = {"balancer_restarted", 503, "The balancer restarted"},
	[SDE_RUNNING_ELSEWHERE] = {"running_elsewhere", 503, "The job runs on another balancer"},
	[SDE_REQUEST_IN_PROGRESS] = {"request_in_progress", 409, "A request with this Idempotency-Key is waiting"},
	[SDE_TOO_LARGE] = {"too_large", 0, "A message is too large"},
	[SDE_BAD_UTF8] = {"bad_utf8", 0, "A text message must be valid UTF-8"},
	[SDE_BINARY_FRAME] = {"binary_frame", 0, "Binary frames are not taken"},
	[SDE_NOT_OBJECT] = {"not_object", 0, "A message is a JSON object"},
	[SDE_UNKNOWN_TYPE] = {"unknown_type", 0, "Unknown message type"},
	[SDE_SCHEDULER_NOT_FOUND] = {"scheduler_not_found", 0, "Scheduler not found"},
	[SDE_UNKNOWN_GPU] = {"unknown_gpu", 0, "No such GPU class"},
	[SDE_DUPLICATE_ID] = {"duplicate_id", 0, "A job with this id is unfinished"},
	[SDE_TOO_MANY_JOBS] = {"too_many_jobs", 0, "Too many unfinished jobs on this connection"},
	[SDE_UNKNOWN_JOB] = {"unknown_job", 0, "No unfinished job with this id"},
	[SDE_CANCELLED] = {"cancelled", 0, "Cancelled"},
	[SDE_BALANCER_UNREACHABLE] = {"balancer_unreachable", 0, "No balancer could be reached"},
	[SDE_BALANCER_LOST] = {"balancer_lost", 0, "Contact with the balancer was lost"},
	[SDE_LOST] = {"lost", 0, "The balancer no longer knows the job"},
	[SDE_BALANCER_ERROR] = {"balancer_error", 0, "The balancer answered an error"},
	[SDE_REFUSED] = {"refused", 0, "The balancer refused the job"},
	[SDE_FAILED] = {"failed", 0, "The job failed"},
	[SDE_NO_IMAGE] = {"no_image", 0, "The job ended without an image"},
	[SDE_BAD_IMAGE] = {"bad_image", 0, "Not a PNG, JPEG or WebP image"},
	[SDE_IMAGE_TOO_LARGE] = {"image_too_large", 0, "The image is too large"},
	[SDE_BUSY] = {"busy", 0, "Busy; try again"},
};

const char *sd_error_code(enum sd_error e) { return e < SDE_COUNT ? ERRORS[e].code : "internal"; }

int sd_error_status(enum sd_error e) { return e < SDE_COUNT ? ERRORS[e].status : 500; }

enum sd_error sd_error_of(const char *code)
{
	for (int e = 0; code && e < SDE_COUNT; e++)
		if (!strcmp(ERRORS[e].code, code))
			return (enum sd_error)e;
	return SDE_INTERNAL;
}

json_t *sd_error_json(enum sd_error e, const char *message, const char *field)
{
	if (!message)
		message = e < SDE_COUNT ? ERRORS[e].message : "Internal Server Error";
	json_t *err = json_pack("{s:s,s:s}", "code", sd_error_code(e), "message", message);
	if (field)
		json_object_set_new(err, "field", json_string(field));
	return json_pack("{s:s,s:o}", "detail", message, "error", err);
}

void sd_validation_add(json_t *list, const char *field, const char *type, const char *msg, json_t *input)
{
	json_t *loc = json_pack("[s]", "body");
	if (field)
		json_array_append_new(loc, json_string(field));
	json_t *item = json_pack("{s:s,s:o,s:s}", "type", type, "loc", loc, "msg", msg);
	if (input)
		json_object_set(item, "input", input);
	json_array_append_new(list, item);
}
