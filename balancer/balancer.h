/* balancer.h — the state of one sdgate-balancer process, shared by its
 * modules: the registry of backends (registry.c), the jobs and their events
 * (jobs.c, sse.c), routing (router.c) and dispatch (dispatch.c), the HTTP APIs
 * (api_*.c) and main.c.
 *
 * Thread rules: everything here lives on the h2o loop thread. Other threads
 * (curl in fetch.c, SQLite in store.c) only hand results back through
 * httpd_post, so nothing below needs a lock. */
#ifndef SDGATE_BALANCER_H
#define SDGATE_BALANCER_H

#include "caps.h"
#include "error.h"
#include "events.h"
#include "fetch.h"
#include "httpd.h"
#include "image.h"
#include "router.h"
#include "store.h"

#include <jansson.h>

/* Limits, printed by --help. */
#define BAL_MAX_BODY (1u << 20)         /* request bodies */
#define BAL_MAX_ANSWER (256u << 20)     /* a backend's txt2img answer */
#define BAL_MAX_SMALL_ANSWER (4u << 20) /* info, models, progress (with preview) */
#define BAL_MAX_SLOTS 8
#define BAL_MAX_BACKENDS 1024
#define BAL_MAX_GPUS 16             /* classes in one job's accepted set */
#define BAL_MAX_FIELD 256           /* identity strings */
#define BAL_ID_LEN 32               /* hex chars of job and backend ids */
#define BAL_MAX_IDEMPOTENCY_KEY 128 /* bytes of an Idempotency-Key (printable ASCII) */
#define BAL_HEARTBEAT_MISSES 3
#define BAL_SSE_KEEPALIVE_S 15
#define BAL_MAX_BACKOFF_S 60.0           /* a backend failing job after job is checked at most this rarely */
#define BAL_MAX_REGISTRATION (16u << 10) /* a POST /v1/backends body (413 past it) */
#define BAL_MAX_URL 512                  /* a backend's base URL */
#define BAL_MAX_PROVIDERS 4096           /* lines of --provider-tokens */
#define BAL_SECRET_HEX 64                /* hex chars of a registration's secret and call token */
#define BAL_MAX_INFO (64u << 10)         /* a kept result's info (JSON text) */
#define BAL_IMAGE_CHUNK (256u << 10)     /* GET /v1/jobs/{id}/images/{n}: bytes read from the store at a time */
#define BAL_MAX_UNSTORED (256u << 20)    /* images held in memory while the database is away (results.c) */
#define BAL_CAPS_REFRESH_MIN_S 2.0       /* an up backend's capabilities are read again: 10 health intervals, >= this */

struct bal_config {
	const char *listen;
	const char *db;              /* a SQLite file or a postgresql:// URL (store.h) */
	double db_wait_s;            /* PostgreSQL down at start: retried this long */
	char **backends;             /* static, from --backend */
	char **trusted_proxies;      /* --trusted-proxy: peers whose X-Real-IP / X-Forwarded-For name the client */
	char **allowed_origins;      /* --allowed-origin: web origins whose browser requests are let through */
	const char *provider_token;  /* shared: a name is held by the live registration that took it */
	const char *provider_tokens; /* FILE of "<name>\t<token>" lines: each token bound to its name */
	const char *admin_token;
	const char *api_auth;       /* "user:pass[,user2:pass2]": Basic auth on the façade (A1111's --api-auth) */
	int allow_private_backends; /* registrations may point at loopback/private addresses */
	long max_queue, max_queue_per_client, max_attempts;
	long heartbeat_interval_s, health_interval_ms, progress_interval_ms, preview_interval_ms;
	double job_timeout_factor, min_job_timeout_s, max_job_timeout_s;
	double retry_after_s; /* a backend unused this long is re-tried (router.h) */
	double lease_s;       /* shared database: a balancer silent this long is taken for dead (cluster.c) */
	long prefetch_ms;     /* a job planned on a busy slot that frees within this is sent now, behind */
	long result_ttl_s;
	long result_max_bytes, result_max_bytes_per_client; /* kept images, decoded bytes */
	long max_connections;
};

enum bk_state { BK_PROBING, BK_UP, BK_DOWN };

struct job;

/* One backend: a static one from the flags, or a registered provider. */
struct balancer;

/* A registered backend's credentials (kept in the store). The registration
 * secret itself is never kept: only its hash, to check heartbeats,
 * deregistration and re-registration. */
struct bk_auth {
	char owner[BAL_MAX_FIELD + 1];          /* the provider name it registered under */
	char secret_sha256[BAL_SECRET_HEX + 1]; /* hex SHA-256 of the registration secret */
	char call_token[BAL_SECRET_HEX + 1];    /* sent to the backend as Bearer on every call */
};

/* A --provider-tokens entry. */
struct provider_token {
	char *name, *token;
};

struct bk {
	struct balancer *b;
	char id[BAL_ID_LEN + 1];
	char *url;           /* base URL, no trailing '/', no fragment */
	char *key;           /* its bal_url base: what two backends may not share */
	int registered;      /* 0 = static */
	struct bk_auth auth; /* registered ones only */
	json_t *identity;   /* provider, location, country, lat, lon, gpu, gpu_class, simulated, price_per_hour, engine,
			       version */
	json_t *fixed;      /* identity given by the operator (fragment/registration): wins over /sdgate/v1/info */
	json_t *models;     /* checkpoint titles and model_names offered (array of strings) */
	json_t *titles;     /* the titles alone, for GET /sdapi/v1/sd-models */
	char *loaded_model; /* the checkpoint it last ran, or NULL */
	int slots, running;
	struct job *jobs[BAL_MAX_SLOTS];   /* running in each slot */
	struct job *behind[BAL_MAX_SLOTS]; /* sent behind it, waiting in the backend's own queue (--prefetch-ms) */
	/* A shared database (docs/cluster.md): each slot is leased before a
	 * job is sent to it, and given back once it is empty. */
	struct job *leasing[BAL_MAX_SLOTS]; /* waiting for the slot's lease, out of the queue */
	int leased[BAL_MAX_SLOTS];          /* this balancer holds the slot's lease */
	double leased_since[BAL_MAX_SLOTS]; /* ... since then, without a break */
	double freed_at[BAL_MAX_SLOTS];     /* when its last job left it */
	double held_until[BAL_MAX_SLOTS];   /* another balancer held it when last asked: not before then */
	enum bk_state state;
	double spp;       /* measured seconds per unit of work (router_learn); 0 = not yet */
	double last_used; /* monotonic time it was last given a job (router.h: re-tries) */
	long samples;     /* jobs measured since its estimate was last (re)calibrated */
	long jobs_done, jobs_failed;
	double inference_sum;
	double last_heartbeat, next_check;
	double added;        /* when it came into this balancer's registry */
	int strikes;         /* jobs failed in a row: each doubles the wait before the next health check */
	struct fetch *check; /* probe or health check in flight */
	/* After a cancel: interrupt, then poll progress until the backend is
	 * idle (A1111 does not stop when its client hangs up), re-interrupting. */
	int draining, drain_step;
	double drain_next, drain_deadline;
	struct fetch *drain_call;
	int probe_step;
	struct caps caps; /* what it can run (caps.h), read by the probe and refreshed */
	int refreshing;   /* the probe is re-reading an up backend's capabilities */
	double next_refresh;
	struct bk *next;
};

enum job_status { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED };

struct sse;
struct waiter;

struct job {
	char id[BAL_ID_LEN + 1];
	char client[64];
	int facade;        /* submitted through /sdapi/v1/txt2img */
	json_t *request;   /* what is sent to backends (seeds fixed, hints removed) */
	json_t *gpus;      /* accepted GPU classes (array, may be empty) */
	double max_price;  /* 0 = any */
	const char *model; /* checkpoint asked for (in request), or NULL */
	const char *refiner;
	struct caps_need need; /* what a backend must be able to run (caps.h) */
	double work;           /* model calls x pixels of all its passes (router_work) */
	double switch_s;       /* checkpoint loading expected on its current backend */
	int prefer;            /* enum router_prefer: "sdgate": {"prefer": "fastest" | "cheapest"} */
	double pixels;         /* width x height x images */
	double n_images;       /* batch_size x n_iter */
	long long seed;
	enum job_status status;
	int attempt;
	struct bk *bk;                      /* while running */
	json_t *placed;                     /* {backend, provider, location, gpu} of the last dispatch */
	double created;                     /* unix seconds */
	double enqueued, started, finished; /* monotonic seconds */
	double finished_unix;
	int last_position; /* the position its last queued event gave */
	long queue_ms, inference_ms;
	double inference_s;
	json_t *result; /* when done: A1111's {"images", "parameters", "info"} until the images are handed to
			   the store (results_keep), then {"info"} */
	json_t *reply;  /* a façade job's whole A1111 answer, held while its images are being stored */
	json_t *images; /* once stored: [{type, bytes, width, height}] (results.c) */
	int storing;    /* done, its images on their way to the store: readers see it running */
	int gone;       /* its images were dropped (caps) or could not be stored: they answer 410 */
	int unsaved;    /* its last state could not be written (the database was away): written again later */
	json_t *error;  /* {"code", "message"} when failed */
	/* Bytes of its images that the store could not take: held (files) and
	 * stored again with its state (counted in balancer.unstored). */
	long long unstored;
	/* When done: its images, decoded and checked (answer.c), until results_keep hands them to the store;
	 * again while the store could not take them (unstored). */
	struct image_files files;
	int step, steps;
	double progress, progress_at; /* the backend's last progress (0..1) and when it was read (router) */
	char *preview;                /* the latest preview: bare base64 of an image checked by image_check */
	const char *preview_type;     /* its MIME type (static), NULL with it */
	struct fetch *call, *poll;
	double next_poll, deadline;
	double next_preview; /* polls ask for a preview from then on (until one comes) */
	struct sse *subs;
	struct job_events events; /* its event ids and what a resuming reader is replayed (events.h) */
	struct waiter *waiter;
	int interrupted;           /* its façade client interrupted it while it ran (1 + the step it was at then): the
				      backend's answer is what was made */
	struct job *qprev, *qnext; /* the queue */
	int in_queue;
	struct job *hnext;                          /* the id table */
	char idem_key[BAL_MAX_IDEMPOTENCY_KEY + 1]; /* the client's Idempotency-Key, or "" */
	char idem_hash[17];                         /* hex FNV-1a of the request body it came with */
	struct job *inext;                          /* the (client, Idempotency-Key) table */
	struct job *all_prev, *all_next;
	struct job *act_prev, *act_next; /* the unfinished jobs */
	int shadow;           /* a copy of another balancer's job (remote.c): its events are that one's */
	double watched_until; /* other balancers read its events until then (notices.c) */
};

struct bal_metrics {
	long accepted, done, failed, cancelled, retries, backend_failures;
	double dispatch_latency_sum;
	long dispatch_latency_count;
	json_t *inference_by_class; /* {"a100": [sum, count], ...} */
};

#define BAL_JOB_BUCKETS 4096

struct balancer {
	struct bal_config cfg;
	struct httpd *httpd;
	struct fetcher *fetcher;
	struct store *store;
	struct bk *backends;
	int n_backends;
	struct job *qhead, *qtail;
	int queued, running;
	struct job *table[BAL_JOB_BUCKETS];
	struct job *idem_table[BAL_JOB_BUCKETS];
	struct job *all;    /* every job kept (until --result-ttl) */
	struct job *active; /* unfinished ones only: what per-client and per-tick work walks */
	int n_jobs;
	struct bal_metrics m;
	int reschedule;
	struct router_rate arrivals; /* new jobs a second (the router's look-ahead) */
	int stopping;                /* shutting down: hung-up clients no longer cancel jobs */
	double next_slow_tick, last_schedule;
	char instance[BAL_ID_LEN + 1];  /* random per process: X-Sdgate-Instance on every answer */
	struct provider_token *ptokens; /* --provider-tokens */
	size_t n_ptokens;
	struct prefs *prefs;      /* façade clients' options (prefs.h) */
	struct apiauth *api_auth; /* --api-auth, or NULL (apiauth.h) */
	double next_beat;         /* cluster.c */
	int beating;              /* a heartbeat (and its claim) in flight */
	int fenced;               /* the others ended its membership: it stops */
	long taken_over;          /* jobs claimed from dead balancers */
	int unsaved;              /* jobs whose last state is not in the store yet (jobs_save_again) */
	long long unstored;       /* bytes of images held until the store takes them (results.c) */
};

struct balancer *balancer_of(struct httpd *h);
double bal_now(void);      /* monotonic seconds */
double bal_unix_now(void); /* wall clock */
/* 32 random hex chars + NUL. */
void bal_random_id(char out[BAL_ID_LEN + 1]);
/* Constant-time check of "Authorization: Bearer <token>". */
int bal_bearer_ok(h2o_req_t *req, const char *token);
/* The Bearer token of the request (in req->pool), or NULL. */
const char *bal_bearer(h2o_req_t *req);
/* out = hex SHA-256 of text. */
void bal_sha256_hex(const char *text, char out[BAL_SECRET_HEX + 1]);
/* An http(s) URL taken apart (curl's URL parser). */
struct bal_url {
	char base[BAL_MAX_URL + 64]; /* scheme://host:port/path: no userinfo, query, fragment or trailing '/' */
	char host[256];              /* as in the URL; IPv6 in brackets */
	long port;                   /* explicit or the scheme's default */
	int userinfo, query, fragment;
};
/* 0 if url is an http:// or https:// URL with a host, else -1. */
int bal_url_parse(const char *url, struct bal_url *out);
/* BAL_SECRET_HEX random hex chars + NUL. */
void bal_random_secret(char out[BAL_SECRET_HEX + 1]);
/* sdgate's error reply: {"detail", "error": {code, message, field?}}. */
void bal_reply_error(h2o_req_t *req, enum sd_error e, const char *message, const char *field);

/* client.c: who calls, and from where (see its header comment). */
enum bal_client_kind {
	BAL_CLIENT_ADDRESS, /* no key: the (real) address, IPv6 by its /64 */
	BAL_CLIENT_KEY,     /* "key:<hex>": the hash of its API key */
	BAL_CLIENT_NAMED    /* X-Sdgate-Client, from the admin (the gateway) */
};
/* The calling client, for queue limits and Idempotency-Keys (at most 63
 * characters in out). */
enum bal_client_kind bal_client_of(struct balancer *b, h2o_req_t *req, char *out, size_t len);
/* 1 if text is an IPv4 or IPv6 address (for --trusted-proxy). */
int bal_valid_address(const char *text);
/* 1 if the request comes straight from a --trusted-proxy. */
int bal_from_trusted_proxy(struct balancer *b, h2o_req_t *req);
/* httpd's guard: answers 401 (X-Sdgate-Client with a wrong admin token),
 * 403 (foreign Origin) or 415 (a form or text/plain body) and returns 0, or
 * returns -1 to let the request through. */
int bal_guard(struct httpd *h, h2o_req_t *req, const char *rest);

/* registry.c */
/* auth: a registered backend's credentials, NULL for a static one. */
struct bk *registry_add(struct balancer *b, const char *url, json_t *fixed, const struct bk_auth *auth, const char *id);
/* Calls a backend: url = its base + path, with its call token and, for a
 * registered one, only to a public address (unless --allow-private-backends).
 * Arguments as fetch_start's. */
struct fetch *registry_call(struct balancer *b, const struct bk *k, const char *method, const char *path, char *body,
			    size_t body_len, long timeout_ms, size_t max_answer, fetch_done_fn done, void *user);
/* The registered backend this provider name holds, or NULL. */
struct bk *registry_find_owner(struct balancer *b, const char *owner);
void registry_remove(struct balancer *b, struct bk *k, const char *why);
/* A registered backend's stored document (registration, owner, secret's
 * hash, call token) taken in; NULL (and its row deleted) when it is not
 * one, or when its URL is taken here. */
struct bk *registry_load_doc(struct balancer *b, json_t *doc);
struct bk *registry_find(struct balancer *b, const char *id);
struct bk *registry_find_url(struct balancer *b, const char *url);
/* Passive check: a failed call marks it down until a health check passes. */
void registry_mark_down(struct balancer *b, struct bk *k, const char *why);
void registry_tick(struct balancer *b, double now);
/* Shutdown: frees every entry, with no side effects. */
void registry_free_all(struct balancer *b);
const char *registry_state_name(const struct bk *k);
int registry_offers(const struct bk *k, const char *model);
json_t *registry_board(struct balancer *b);
const char *bk_str(const struct bk *k, const char *key); /* identity field, "" if absent */
double bk_price(const struct bk *k);

/* jobs.c */
struct job *jobs_find(struct balancer *b, const char *id);
/* The kept job this client created with this Idempotency-Key, or NULL. */
struct job *jobs_find_idempotent(struct balancer *b, const char *client, const char *key);
/* Records j's Idempotency-Key and the hash of the body it came with (kept
 * in its document, so that a retry after a restart finds it too). */
void jobs_set_idempotency(struct balancer *b, struct job *j, const char *key, const char *body_hash);
/* Takes over request and gpus. Adds the job to the table (not the queue). */
struct job *jobs_new(struct balancer *b, json_t *request, json_t *gpus, double max_price, const char *client,
		     int facade);
void jobs_enqueue(struct balancer *b, struct job *j, int front);
void jobs_dequeue(struct balancer *b, struct job *j);
int jobs_position(struct balancer *b, const struct job *j); /* 1-based, 0 if not queued */
int jobs_count_client(struct balancer *b, const char *client);
/* Persists the job's current state; done as in store_save_job. */
void jobs_save(struct balancer *b, struct job *j, store_done_fn done, void *user);
/* Writes again, a few at a time, the jobs whose last state could not be
 * written (a database that was down or unreachable): so that a job that
 * finished meanwhile is not run again after a restart or a takeover. */
void jobs_save_again(struct balancer *b);
/* j is to be written again (jobs_save_again), unless the balancer stops. */
void jobs_mark_unsaved(struct balancer *b, struct job *j);
/* Terminal transitions: set status, timings, emit the final event, answer
 * the waiter, persist. */
void jobs_finish_done(struct balancer *b, struct job *j, json_t *result);
void jobs_finish_failed(struct balancer *b, struct job *j, enum sd_error code, const char *message);
void jobs_finish_cancelled(struct balancer *b, struct job *j);
/* The stored document (the store's copy of the job): everything needed to
 * resume or to answer GET. New reference. */
json_t *jobs_doc(const struct job *j);
/* Emits a final job's last event and ends its event streams. */
void jobs_announce_final(struct balancer *b, struct job *j);
/* GET /v1/jobs/{id} document. */
json_t *jobs_view(struct balancer *b, const struct job *j);
/* Events to subscribers, under the job's next id (events.h): a state event
 * (kept for readers that resume) or an update (only the latest is kept).
 * name: a static string; data is stolen. */
/* A shadow's event as its owner numbered it (events_put); data stolen. */
void jobs_emit_copy(struct job *j, long long id, const char *event, json_t *data, int state);
/* Someone reads its events: a stream here, or another balancer (notices.c). */
int jobs_has_readers(const struct job *j);
void jobs_emit_state(struct balancer *b, struct job *j, const char *event, json_t *data);
void jobs_emit_update(struct balancer *b, struct job *j, const char *event, json_t *data);
/* progress {step, steps, progress, preview?} from the job's last progress;
 * with_preview: its preview too. New reference. */
json_t *jobs_progress_data(const struct job *j, int with_preview);
/* Before a new reader is replayed the kept events: a queued position or
 * progress that moved while nobody listened (no event was made) is emitted
 * now. */
void jobs_refresh_events(struct balancer *b, struct job *j);
/* A finished job's final event (its id: j->events.last_id). New reference in *data. */
void jobs_final_event(struct balancer *b, const struct job *j, const char **event, json_t **data);
void jobs_expire(struct balancer *b, double unix_now);
void jobs_load(struct balancer *b);
/* A job document read from the store (cluster.c, api_jobs.c), taken in as
 * jobs_load takes each: a finished one kept to be read, an unfinished one
 * queued again. Nothing if a job of that id is here already. */
void jobs_adopt(struct balancer *b, json_t *doc, int has_images);
/* A job document read as a job of no balancer's (not in any table, not
 * queued): to be viewed (jobs_view) and freed with jobs_free_unlinked. NULL
 * when the document is not a job's. */
struct job *jobs_from_doc(json_t *doc, int has_images);
void jobs_free_unlinked(struct job *j);

/* cluster.c: several balancers on one shared database (store.h). Every
 * lease_s / 4 the member beats, then claims up to 64 unfinished jobs of
 * balancers silent for lease_s; a balancer whose membership the others
 * ended stops (exit code 3) so that it never runs a job twice with them. */
void cluster_tick(struct balancer *b, double now);

/* remote.c: GET (document, events, images) or DELETE of a job not held
 * here, on a shared database: 1 when it took the request (answered now or
 * once the store answers), 0 on a database of one balancer's. */
int remote_job_request(struct balancer *b, h2o_req_t *req, const char *id, const char *tail);
/* api_jobs.c: a held job's GET (document, "/events", "/images/N") or
 * DELETE, tail being what follows its id in the path. */
void api_jobs_serve(struct balancer *b, h2o_req_t *req, struct job *j, const char *tail);
/* A façade request waits for another balancer's unfinished job (seen: a
 * copy from its row, taken) until the job is here: finished there and
 * taken in, or taken over by this balancer. fn then runs with it while req
 * lives (j NULL: its row is gone). 0 when no more jobs can be waited on
 * (nothing will run). */
typedef void (*remote_here_fn)(struct balancer *b, h2o_req_t *req, struct job *j, void *user);
int remote_when_here(struct balancer *b, h2o_req_t *req, struct job *seen, remote_here_fn fn, void *user);
void remote_tick(struct balancer *b, double now);
void remote_free_all(void);
/* notices.c hands remote.c the owner's events of a job: a "history" (its
 * kept events) or one "event" notice, parsed; NULL: notices may have been
 * missed (the listener reconnected). */
void remote_on_notice(struct balancer *b, const char *kind, json_t *notice);

/* notices.c: what balancers sharing a database tell each other (store.h
 * notices; docs/cluster.md "Notices"). */
void notices_start(struct balancer *b);
/* Publishes {"k": kind, "from": this member, ...fields}; fields stolen. */
void notices_send(struct balancer *b, const char *kind, json_t *fields);
/* That notice's text (caller frees), for a store task that publishes it
 * itself; NULL when the store is not shared. fields stolen. */
char *notices_text(struct balancer *b, const char *kind, json_t *fields);
/* A job's event, published when other balancers watch the job. */
enum notice_event { NOTICE_UPDATE, NOTICE_STATE, NOTICE_FINAL };
void notices_job_event(struct balancer *b, const struct job *j, long long id, const char *event, const json_t *data,
		       enum notice_event kind);
/* The events a watcher needs first: the job's kept ones, as one notice. */
void notices_job_history(struct balancer *b, struct job *j);

/* options.c: the façade clients' options, in memory (b->prefs), the store
 * and the "options" notices. Sets client's default checkpoint here, saves
 * it and tells the other balancers: 0, -1 when prefs refuses it. */
int options_set_checkpoint(struct balancer *b, const char *client, const char *name);
/* An "options" notice, any balancer's (this one's too); NULL: the
 * listener (re)connected, notices may have been missed. */
void options_on_notice(struct balancer *b, json_t *notice);
/* Startup, main thread: the choices saved in the store. */
void options_load(struct balancer *b);
/* With the jobs' expiry: the choices past PREFS_TTL_S deleted from the store. */
void options_expire(struct balancer *b);
void jobs_free_all(struct balancer *b);
int jobs_is_final(const struct job *j);

/* dispatch.c */
void dispatch_schedule(struct balancer *b);
void dispatch_cancel(struct balancer *b, struct job *j);
/* Another balancer gave back backend `key`'s slot (notices.c). */
void dispatch_slot_freed(struct balancer *b, const char *key, int slot);
/* A façade client's interrupt (skip 0) or skip (1), as A1111's: see dispatch.c. */
void dispatch_interrupt(struct balancer *b, struct job *j, int skip);
void dispatch_tick(struct balancer *b, double now);
/* Fails at once a job that no live backend could ever serve; returns 1 if so. */
int dispatch_reject_unservable(struct balancer *b, struct job *j);
/* Ends a backend's running jobs (requeued) when it is removed or marked down. */
void dispatch_backend_lost(struct balancer *b, struct bk *k, const char *why);
/* Shutdown: cancels every call to a backend still in flight (their done()
 * never runs) and forgets them, so that the fetcher can be freed. The jobs
 * stay as they are in the store, to run again after a restart. */
void dispatch_drop_fetches(struct balancer *b);

/* results.c: a done job's images, kept in the store and read back from it;
 * held in memory (within BAL_MAX_UNSTORED and the result caps) while the
 * store cannot take them. */
/* Hands j's images to the store; once stored (or held), announces the job
 * done. */
void results_keep(struct balancer *b, struct job *j);
/* Hands the images j holds (j->unstored) to the store again, with its
 * document (jobs_save_again). */
void results_keep_again(struct balancer *b, struct job *j);
/* [{url, type, bytes, width, height}] for j's images. New reference. */
json_t *results_view(const struct job *j);
/* Restart: j's result and image metadata from its stored document. */
void results_load(struct job *j, const json_t *result, int has_images);
/* GET /v1/jobs/{id}/images/{n}: index is the text after "images/" ("n", or
 * "n" + the extension of its type, "0.png"). */
void results_serve(struct balancer *b, h2o_req_t *req, struct job *j, const char *index);
/* readback.c: a done job's images as base64 (A1111's "images"), for a
 * replayed answer: from its reply or memory, else read back from the store.
 * done runs while req lives, with j found again (NULL: expired meanwhile)
 * and images (borrowed; NULL: not kept any more, or too large). */
typedef void (*results_b64_fn)(struct balancer *b, h2o_req_t *req, struct job *j, json_t *images, void *user);
void results_read_b64(struct balancer *b, h2o_req_t *req, struct job *j, results_b64_fn done, void *user);
/* ".png", ".jpg" or ".webp" for a kept image's MIME type; "" for another. */
const char *results_extension(const char *mime);

/* sse.c: a Server-Sent Events stream bound to a job. */
void sse_open(struct balancer *b, h2o_req_t *req, struct job *j);
void sse_send(struct sse *s, long long id, const char *event, const json_t *data);
struct sse *sse_next(struct sse *s);
void sse_close_all(struct job *j); /* after the final event */
/* from's streams go on from to (a shadow's, when its job came here or
 * finished): each from the last event it got, as a resuming reader. */
void sse_move_all(struct balancer *b, struct job *from, struct job *to);
void sse_keepalive(struct job *j);

/* intake.c: a txt2img body (+ hints) → a new job, or the error to answer. */
struct intake_error {
	int status; /* code's, or the A1111 reply's */
	enum sd_error code;
	const char *field;
	char message[512];
	char field_buf[64];
	json_t *a1111; /* A1111's own reply (422 list, 404 detail), when there is one */
};
struct job *intake_job(struct balancer *b, h2o_req_t *req, int facade, struct intake_error *e);
/* The same for a body built by the balancer (the OpenAI endpoint's A1111 request). */
struct job *intake_job_from(struct balancer *b, h2o_req_t *req, const char *body, size_t len, int facade,
			    struct intake_error *e);
/* The same for an img2img body (the façade's /sdapi/v1/img2img): at most
 * BAL_MAX_IMG2IMG_JOBS unfinished at once (429 queue_full past it),
 * each holding up to A1111_MAX_IMG2IMG_BODY of init images. */
#define BAL_MAX_IMG2IMG_JOBS 16
struct job *intake_img2img(struct balancer *b, h2o_req_t *req, struct intake_error *e);
/* POST /v1/jobs: a txt2img, or an img2img when the body sets init_images
 * (the same bounds as the façade's img2img). A txt2img body over
 * BAL_MAX_BODY gets 413 body_too_large: only img2img bodies may be larger. */
struct job *intake_jobs_api(struct balancer *b, h2o_req_t *req, struct intake_error *e);
/* The paths whose bodies may reach A1111_MAX_IMG2IMG_BODY (img2img's init
 * images): the façade's /sdapi/v1/img2img and the jobs API's POST /v1/jobs.
 * NULL-terminated; every other path keeps BAL_MAX_BODY. */
extern const char *const BAL_LARGE_BODY_PATHS[];
/* Whether j is an img2img (its request carries init_images). */
int job_is_img2img(const struct job *j);
void intake_reply_error(h2o_req_t *req, const struct intake_error *e, int a1111_shape);
void intake_error_free(struct intake_error *e);

/* idem.c: the Idempotency-Key of a POST that makes a job (POST /v1/jobs
 * and the façade's POSTs; see its header comment). */
struct idem;
struct idem_ops {
	/* No job holds the key (or the request has none): make the job, call
	 * idem_set, and end c (idem_end) or, when a shared database refused
	 * its row, idem_look_again. */
	void (*create)(struct idem *c);
	/* The key's job, for a retry with the same body: held here, or
	 * (elsewhere) a copy of another balancer's unfinished job from its row
	 * (jobs_from_doc), which found takes. c ends after it. */
	void (*found)(struct idem *c, struct job *j, int elsewhere);
	/* An error to answer, in the API's shape (c->req is live). */
	void (*error)(struct idem *c, enum sd_error e, const char *message, const char *field);
	/* 1: when the database cannot be read (an outage), go on without the
	 * key (create, as for a request without one) rather than refuse: the
	 * façade, whose key is mostly NGINX's for its own retries, keeps
	 * serving through an outage as it did without keys. */
	int keyless_when_down;
};
struct idem {
	struct balancer *b;
	h2o_req_t *req; /* NULL once the request ended */
	const struct idem_ops *ops;
	void *user; /* the API's; in req's pool, so read only while req lives */
	char key[BAL_MAX_IDEMPOTENCY_KEY + 1], hash[17], client[64];
	char id[BAL_ID_LEN + 1]; /* the job create made (idem_set) */
	int shared_key;          /* a shared database: the job is queued once its row is in */
	int after_save;
	struct idem_guard *guard;
};
/* Reads req's Idempotency-Key (malformed: error 422 invalid) and finds its
 * job, then calls found, create or error. salt tells the routes apart in
 * the body's hash ("" for POST /v1/jobs). */
void idem_start(struct balancer *b, h2o_req_t *req, const char *salt, const struct idem_ops *ops, void *user);
/* create made j: c->id, and the key and hash on j when there is a key. */
void idem_set(struct idem *c, struct job *j);
/* j's row was refused (another balancer may have taken the key first):
 * looks the key up again; found or error follow. */
void idem_look_again(struct idem *c);
void idem_end(struct idem *c);

/* api_*.c route tables. */
extern const struct httpd_route API_A1111_ROUTES[];
extern const size_t API_A1111_N;
extern const struct httpd_route API_JOBS_ROUTES[];
extern const size_t API_JOBS_N;
extern const struct httpd_route API_BACKENDS_ROUTES[];
extern const size_t API_BACKENDS_N;
extern const struct httpd_route API_OPS_ROUTES[];
extern const size_t API_OPS_N;
extern const struct httpd_route API_OPENAI_ROUTES[];
extern const size_t API_OPENAI_N;

/* listings.c: GET /sdapi/v1/samplers, /sd-models, ... (the route table's
 * lines in api_a1111.c): the union over the live backends' capabilities. */
int listings_get(struct httpd *h, h2o_req_t *req, const char *rest);

/* waiter.c: the façade's waiting request (see its header comment). */
/* How a waiting client is answered once its job ends, or (the job not
 * final) when the balancer shuts down. */
typedef void (*waiter_answer_fn)(struct balancer *b, h2o_req_t *req, struct job *j);
/* A façade route. */
struct waiter_api {
	const char *route; /* salts its Idempotency-Key's body hash */
	/* The job for req (intake.c), or NULL with why in *e. */
	struct job *(*make)(struct balancer *b, h2o_req_t *req, void *user, struct intake_error *e);
	void (*refuse)(h2o_req_t *req, const struct intake_error *e); /* intake's refusal, in its shape */
	void (*error)(h2o_req_t *req, enum sd_error e, const char *message, const char *field);
	waiter_answer_fn answer; /* NULL: A1111's answer */
};
/* req waits for its job: made by api->make and queued (or failed at once
 * when no live backend could serve it), or, with an Idempotency-Key, the
 * key's job (waiter.c). api->answer replies when it ends. user goes to
 * make: in req's pool. A client that hangs up cancels its job. */
void waiter_start(struct balancer *b, h2o_req_t *req, const struct waiter_api *api, void *user);
void waiter_finish(struct balancer *b, struct job *j);
/* Shutdown: answers a waiting façade client with 503 (the job stays in the file). */
void waiter_shutdown(struct job *j);
/* Cancels the jobs of façade clients that hung up (called periodically). */
void waiters_check(struct balancer *b);

#endif
