/* libllmclient: the C client library of llmd, the system LLM service.
 *
 * A first answer:
 *
 *     llmc_client *c;
 *     llmc_result *r;
 *     if (llmc_connect(NULL, &c) != LLMC_OK) { fprintf(stderr, "%s\n", llmc_last_error(NULL)); return 1; }
 *     if (llmc_generate(c, "Tell me a story", NULL, NULL, NULL, &r) == LLMC_OK) puts(r->text);
 *     else fprintf(stderr, "%s\n", llmc_last_error(c));
 *     llmc_free(r);
 *     llmc_close(c);
 *
 * Build with `pkg-config --cflags --libs llmclient` or CMake `find_package(llmclient)` and the
 * target `llmclient::llmclient`. C++ programs may use llmclient.hpp (RAII, exceptions, a range of
 * tokens); libuv programs llmclient/adapters/libuv.h.
 *
 * ---- Conventions -------------------------------------------------------------------------------
 *
 * Transport. The library speaks llmd's HTTP API (HTTP/1.1 + Server-Sent Events) over its Unix
 * socket; no D-Bus. The socket is the path given to llmc_connect, else $LLMD_SOCKET, else
 * /run/llmd/llmd.sock if it exists, else $XDG_RUNTIME_DIR/llmd/llmd.sock if it exists, else
 * /run/llmd/llmd.sock.
 *
 * Clients and requests. An llmc_client is a handle on the daemon, not one socket: every request
 * opens its own connection (HTTP/1.1 cannot interleave two streamed answers on one connection, and
 * llmd cancels a request when its connection closes, which is how cancelling works). So any number
 * of generations may be in flight on one client, and a daemon that restarted between two calls is
 * simply reached again by the next one. All of a client's connections are watched through ONE file
 * descriptor (an epoll set, llmc_fd), which an application's event loop watches for readability.
 *
 * Blocking and asynchronous calls. Every call that talks to llmd exists as a blocking call. Text
 * generation also exists asynchronously (llmc_generate_async): callbacks deliver tokens and then
 * the result. The blocking calls are built on the asynchronous core (they poll the client's fd
 * themselves), so a blocking call also serves the client's asynchronous requests in flight: their
 * callbacks may run inside it.
 *
 * Event loops. An app's loop watches llmc_fd for readability and calls llmc_process when it is
 * readable or when llmc_timeout_ms has passed. Or it installs llmc_loop_hooks, through which the
 * library says when to watch the fd and when to set a timer (llmclient/adapters/libuv.h is such
 * hooks). One fd per client, whatever the number of requests, and one entry point for I/O and
 * timeouts alike: the library checks its own deadlines (the idle timeout) on every call.
 *
 * Callbacks run only inside llmc_process, llmc_wait or a blocking call on the same client (and in
 * llmc_close, for requests it cancels): never inside llmc_generate_async or llmc_cancel, and never
 * on another thread. A callback may start and cancel requests and may call llmc_close (the client
 * is then freed when the call that ran the callback returns); it must not make a blocking call on
 * its own client (LLMC_ERR_INVALID_ARGUMENT).
 *
 * Error reporting. Functions return an llmc_code: LLMC_OK (0) or an LLMC_ERR_* value.
 * llmc_strerror names a code; llmc_last_error(client) is the message of the client's last failed
 * call (llmc_last_error(NULL): of the calling thread's last failed call that had no client, such as
 * llmc_connect). Messages are llmd's own where llmd answered (for LLMC_ERR_QUOTA they name the
 * limit). llmc_last_error_info adds the HTTP status, llmd's error.param and Retry-After. Results
 * of generations carry their own code and message (llmc_result). Bad arguments (NULL pointers,
 * absurd sizes, text that is not UTF-8, a struct_size the library does not know) return
 * LLMC_ERR_INVALID_ARGUMENT; the library never aborts on them. The library never prints.
 *
 * Ownership. The library never keeps a pointer the caller passed in beyond the call (strings and
 * parameters are copied). What it returns through an out-parameter (a result, a list, a string) is
 * one allocation the caller releases with llmc_free; pointers inside it live as long as it does.
 * Pointers passed to callbacks (token text, the result) are valid during the callback only.
 * Returned strings from llmc_strerror, llmc_last_error and llmc_version are owned by the library
 * (llmc_last_error's until the next call on the same client, or on the same thread for NULL).
 *
 * Strings. Every string in and out is UTF-8 and NUL-terminated; text that is not valid UTF-8 is
 * refused with LLMC_ERR_INVALID_ARGUMENT. Token texts are whole characters (llmd never splits a
 * character between tokens), and also come with their length.
 *
 * Thread-safety. A client must be used by one thread at a time (the library takes no locks).
 * Different clients are independent and may be used from different threads. llmc_interrupt is
 * the exception: it may be called from any thread and from a signal handler (it is
 * async-signal-safe). llmc_strerror, llmc_version, llmc_gen_params_init and llmc_free are
 * thread-safe.
 *
 * ABI. Only llmc_* symbols are exported; the soname is libllmclient.so.1 (LLMC_ABI_VERSION).
 * llmc_gen_params grows only at its end and carries its struct_size: the library takes the
 * struct of any earlier header (the fields it lacks keep their defaults) and a later header's
 * whose fields beyond its own are zero; result structs grow only at their end and are read only up
 * to the fields the caller's header knows.
 */
#ifndef LLMCLIENT_H
#define LLMCLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LLMC_ABI_VERSION 1

/* The library is built with hidden visibility; what is declared with LLMC_API is its interface. */
#if defined(__GNUC__) || defined(__clang__)
#define LLMC_API __attribute__((visibility("default")))
#else
#define LLMC_API
#endif

typedef struct llmc_client llmc_client;

/* ---- Errors ----------------------------------------------------------------------------------- */

typedef enum llmc_code {
  LLMC_OK = 0,
  LLMC_ERR_INVALID_ARGUMENT = 1, /* a bad argument, or llmd refused the request's content (HTTP 400) */
  LLMC_ERR_UNAVAILABLE = 2,      /* llmd is not running (nothing listens on the socket) or is stopping */
  LLMC_ERR_PERMISSION = 3,       /* no permission to reach the socket, or llmd refused (HTTP 403) */
  LLMC_ERR_NOT_FOUND = 4,        /* no such session (HTTP 404), or no such request id */
  LLMC_ERR_QUOTA = 5,            /* over a per-user limit (HTTP 429): the message names it */
  LLMC_ERR_BUSY = 6,             /* the session is answering another request (HTTP 409) */
  LLMC_ERR_CANCELLED = 7,        /* cancelled: llmc_cancel, llmc_interrupt or llmc_close */
  LLMC_ERR_TIMEOUT = 8,          /* llmd sent nothing for the client's timeout */
  LLMC_ERR_IO = 9,               /* the connection failed or llmd closed it mid-answer */
  LLMC_ERR_PROTOCOL = 10,        /* llmd's answer could not be understood */
  LLMC_ERR_NOMEM = 11,           /* out of memory */
  LLMC_ERR_SERVER = 12,          /* llmd failed (HTTP 5xx) */
  LLMC_ERR_NO_SPACE = 13         /* llmd's storage is full (HTTP 507): nothing was saved; the message
                                    says where (an administrator must free space) */
} llmc_code;

/* The name of a code ("invalid argument", ...); "unknown error" for values not listed. */
LLMC_API const char *llmc_strerror(llmc_code code);

/* The message of the last failed call on `client`, or with NULL of the calling thread's last failed
 * call without a client (llmc_connect). "" when there was none. Valid until the next call. */
LLMC_API const char *llmc_last_error(const llmc_client *client);

/* Details of the same last failure. Pointers are valid until the next call on `client`. */
typedef struct llmc_error_info {
  llmc_code code;
  int http_status;      /* llmd's HTTP status, 0 if it did not answer */
  const char *message;  /* as llmc_last_error */
  const char *param;    /* llmd's error.param: the limit for LLMC_ERR_QUOTA and LLMC_ERR_NO_SPACE, a field
                           name; "" if none */
  long retry_after_s;   /* llmd's Retry-After in seconds, -1 if none */
} llmc_error_info;
LLMC_API void llmc_last_error_info(const llmc_client *client, llmc_error_info *out);

/* ---- Library ---------------------------------------------------------------------------------- */

/* libllmclient's version ("0.1.0"), the version of llmd it was built with. */
LLMC_API const char *llmc_version(void);

/* Frees anything the library returned through an out-parameter. NULL is ignored. */
LLMC_API void llmc_free(void *ptr);

/* ---- Clients ---------------------------------------------------------------------------------- */

/* Creates a client for the daemon at `socket_path` (NULL: the default path, see above) and checks
 * that something listens there. Errors: LLMC_ERR_UNAVAILABLE (the message names the socket and
 * says how to start llmd), LLMC_ERR_PERMISSION, LLMC_ERR_NOMEM, LLMC_ERR_INVALID_ARGUMENT (NULL
 * out, a path too long for a Unix socket). On error *out is NULL and llmc_last_error(NULL) says why. */
LLMC_API llmc_code llmc_connect(const char *socket_path, llmc_client **out);

/* Cancels the client's requests in flight (each done callback runs, with LLMC_ERR_CANCELLED),
 * detaches the event loop (its hooks' `cleanup` runs) and frees the client. NULL is ignored.
 * From inside a callback of this client, the client is freed when the call that ran the callback
 * returns. */
LLMC_API void llmc_close(llmc_client *client);

/* The socket path this client uses (owned by the client). */
LLMC_API const char *llmc_socket_path(const llmc_client *client);

/* Idle timeout: a request fails with LLMC_ERR_TIMEOUT when llmd sends nothing for `ms`
 * milliseconds while it is pending (default 600000: 10 minutes; a generation waiting in llmd's
 * queue sends nothing). 1 <= ms <= 2^31-1. Applies to requests started afterwards. */
LLMC_API llmc_code llmc_set_timeout(llmc_client *client, long ms);

/* Makes the blocking call in progress on `client` return LLMC_ERR_CANCELLED (its request is
 * cancelled: llmd stops the generation within one decode step), or, if none is in progress, the
 * next one (blocking call or llmc_wait) that starts. Async-signal-safe; any thread. */
LLMC_API void llmc_interrupt(llmc_client *client);
/* Forgets an interrupt that no call has consumed yet. */
LLMC_API void llmc_interrupt_clear(llmc_client *client);

/* ---- Generation ------------------------------------------------------------------------------- */

typedef uint64_t llmc_req_id; /* never 0; never reused within a client */

enum { LLMC_MODE_CHAT = 0, LLMC_MODE_COMPLETION = 1 };
enum { LLMC_PRIORITY_INTERACTIVE = 0, LLMC_PRIORITY_BACKGROUND = 1 };

/* How to generate. Always start from llmc_gen_params_init, then set what you need; passing NULL
 * instead of params means all defaults. Unset numbers leave the choice to llmd (its configured
 * defaults); llmd checks ranges and its message names the field. */
typedef struct llmc_gen_params {
  size_t struct_size;        /* sizeof(llmc_gen_params), set by llmc_gen_params_init */
  const char *session_id;    /* continue a stored session (the prompt is its next user message);
                                NULL: a one-off answer */
  int mode;                  /* LLMC_MODE_CHAT (the model's chat template) or LLMC_MODE_COMPLETION
                                (raw text continuation; not with a session) */
  const char *system_prompt; /* one-off chats only; NULL: none */
  int32_t max_tokens;        /* -1: llmd's default-max-tokens */
  double temperature;        /* NaN: llmd's default; 0: greedy */
  double top_p;              /* NaN: llmd's default */
  int32_t top_k;             /* -1: llmd's default; 0: off */
  int64_t seed;              /* -1: a random seed; else 0 .. 2^32-1, for repeatable sampling */
  const char *const *stop;   /* n_stop stop strings (the answer ends before any of them) */
  size_t n_stop;             /* at most 64 */
  int priority;              /* LLMC_PRIORITY_INTERACTIVE or LLMC_PRIORITY_BACKGROUND */
  const char *app;           /* the app name llmd's fair scheduler serves this request as
                                (1-64 of A-Z a-z 0-9 . _ -); NULL: the uid alone */
  int stream;                /* 1 (default): tokens as they are generated; 0: llmd answers once,
                                on_token then runs once with the whole text */
  int ignore_eos;            /* 1: go on past the model's end of text, up to max_tokens */
  /* Added in libllmclient.so.1.1 (a caller built with an earlier header passes a smaller
   * struct_size; these are then NULL). Structured output, one-off chats only (not with session_id or LLMC_MODE_COMPLETION),
   * at most one of the two: */
  const char *json_schema;   /* a JSON Schema object as text ("{}": any JSON object): the answer is
                                JSON valid against it, unless cut by max_tokens (finish_reason
                                "length"); text that is not a JSON object is refused before anything
                                is sent. NULL: none */
  const char *grammar;       /* a GBNF grammar (llama.cpp's): the answer follows it; llmd refuses one
                                it cannot parse (LLMC_ERR_INVALID_ARGUMENT, param "grammar"). NULL: none */
} llmc_gen_params;

/* Sets struct_size and every field to its default. Returns `params`. */
LLMC_API llmc_gen_params *llmc_gen_params_init(llmc_gen_params *params);

/* The outcome of one generation. Pointers are valid as long as the result (or, in a done
 * callback, during the callback). */
typedef struct llmc_result {
  llmc_req_id id;
  llmc_code code;            /* LLMC_OK, or why it failed (the partial text is still here) */
  int http_status;           /* llmd's HTTP status, 0 if it did not answer */
  const char *message;       /* the error message; "" when code is LLMC_OK */
  const char *error_param;   /* llmd's error.param (the limit for LLMC_ERR_QUOTA); "" if none */
  long retry_after_s;        /* llmd's Retry-After in seconds, -1 if none */
  const char *text;          /* the answer: every token's text, concatenated */
  const char *finish_reason; /* "stop", "length", "cancelled", "error"; "" if unknown */
  const char *session_id;    /* the session for session turns; "" otherwise */
  int32_t prompt_tokens;     /* usage as llmd counted it (0 if unknown): every token the answer
                                was conditioned on, a session's history included */
  int32_t completion_tokens;
  int32_t cached_tokens;     /* of prompt_tokens, those reused rather than computed (resident in a
                                slot or loaded from KV chunks); never more than prompt_tokens */
  const char *json;          /* llmd's last event (stream) or whole answer, as JSON; "" if none */
  /* The model's window over the conversation (a session that outgrew the context, a chat
   * request that did not fit): 1 if its oldest turns were dropped before this answer. */
  int window_moved;
  int64_t window_dropped_tokens;   /* tokens dropped from the window before this answer */
  int32_t window_dropped_messages; /* messages dropped from it before this answer */
  int64_t window_first_message;    /* first non-system message the window holds: a session's message
                                      number (0 based), or the index in a chat request's messages */
} llmc_result;

/* Called for each piece of generated text (`text` is NUL-terminated, `len` bytes). */
typedef void (*llmc_token_fn)(void *user, llmc_req_id id, const char *text, size_t len);
/* Called exactly once per request that llmc_generate_async accepted, last. */
typedef void (*llmc_done_fn)(void *user, const llmc_result *result);

/* Starts a generation and returns at once; *id_out (may be NULL) is its id. `on_token` may be
 * NULL, `on_done` may be NULL (then nothing reports the outcome). Returns LLMC_OK, or
 * LLMC_ERR_INVALID_ARGUMENT / LLMC_ERR_NOMEM and then no callback runs. Everything else (llmd not
 * running included) arrives through on_done. */
LLMC_API llmc_code llmc_generate_async(llmc_client *client, const char *prompt, const llmc_gen_params *params,
                              llmc_token_fn on_token, llmc_done_fn on_done, void *user, llmc_req_id *id_out);

/* Cancels a request in flight: its connection is closed (llmd stops the generation within one
 * decode step) and its done callback runs once, with LLMC_ERR_CANCELLED, from the next
 * llmc_process. LLMC_ERR_NOT_FOUND if it already finished (its done callback ran or is queued). */
LLMC_API llmc_code llmc_cancel(llmc_client *client, llmc_req_id id);

/* Blocking generation: returns when the answer is complete. `on_token` (may be NULL) sees each
 * piece as it arrives. *result_out (may be NULL; free with llmc_free) receives the result, also
 * on failure when llmd answered something. Returns result->code. */
LLMC_API llmc_code llmc_generate(llmc_client *client, const char *prompt, const llmc_gen_params *params,
                        llmc_token_fn on_token, void *user, llmc_result **result_out);

/* ---- Event loop integration ------------------------------------------------------------------- */

/* The one file descriptor to watch for readability (level-triggered: poll, select, epoll without
 * EPOLLET, libuv, GLib all are). It lives as long as the client. */
LLMC_API int llmc_fd(const llmc_client *client);

/* Milliseconds until llmc_process must run even if the fd stays quiet (timeouts), -1 for never. */
LLMC_API long llmc_timeout_ms(const llmc_client *client);

/* Does whatever is ready: reads and writes on the client's connections, delivers tokens and
 * results, fails requests whose timeout passed. Never blocks. Call it when llmc_fd is readable
 * and when llmc_timeout_ms has passed (calling it more often is harmless). */
LLMC_API llmc_code llmc_process(llmc_client *client);

/* Blocks until the fd is readable, `timeout_ms` passed (-1: no limit) or the client's next
 * deadline, then runs llmc_process. LLMC_ERR_CANCELLED if an interrupt was pending or arrived
 * (it is consumed; the requests in flight are not cancelled). For programs without a loop. */
LLMC_API llmc_code llmc_wait(llmc_client *client, long timeout_ms);

/* The number of requests whose done callback has not run yet. */
LLMC_API size_t llmc_pending(const llmc_client *client);

/* Events for llmc_loop_hooks.watch. This version only ever asks for LLMC_EV_READ (its connections'
 * writability shows up inside the epoll set as readability); LLMC_EV_WRITE is reserved. */
enum { LLMC_EV_READ = 1, LLMC_EV_WRITE = 2 };

/* How the library tells an event loop what to watch. `watch` is called with (fd, LLMC_EV_READ)
 * when requests are in flight and (fd, 0) when none are (so a loop with nothing else to do can
 * end); `set_timer` with the milliseconds after which llmc_process must run (-1: no timer);
 * `cleanup` once when the hooks are replaced or the client is closed. Each may be NULL. */
typedef struct llmc_loop_hooks {
  void *data;
  void (*watch)(void *data, int fd, int events);
  void (*set_timer)(void *data, long ms);
  void (*cleanup)(void *data);
} llmc_loop_hooks;

/* Installs (a copy of) `hooks`, NULL removes them; the previous hooks' cleanup runs. The new
 * hooks are told the current state at once. */
LLMC_API llmc_code llmc_set_loop_hooks(llmc_client *client, const llmc_loop_hooks *hooks);

/* ---- Sessions --------------------------------------------------------------------------------- */

/* A stored conversation, owned by the uid that created it. */
typedef struct llmc_session {
  const char *id;            /* "ses_..." */
  const char *app;           /* "" if none */
  const char *system_prompt; /* NULL if none */
  uint32_t owner_uid;
  int64_t created;           /* Unix seconds */
  int64_t updated;
  int32_t n_tokens;
  int32_t n_messages;
  int busy;                  /* answering a request now */
  int resident;              /* its KV is in one of llmd's slots */
  /* The model's window over its transcript (the transcript itself is whole): */
  const char *overflow;          /* its overflow policy: "error", "drop_oldest" */
  int64_t window_first_message;  /* messages from this number on (and system ones) are in the window */
  int32_t dropped_messages;      /* messages outside the window */
  int64_t dropped_tokens;        /* tokens dropped from the window over the session's life */
} llmc_session;

typedef struct llmc_sessions {
  size_t count;
  const llmc_session *const *items; /* count pointers */
  const char *json;                 /* llmd's answer as is */
} llmc_sessions;

typedef struct llmc_message {
  const char *role;   /* "system", "user", "assistant" */
  const char *content;
  int64_t created;    /* Unix seconds */
} llmc_message;

typedef struct llmc_session_detail {
  const llmc_session *session;
  size_t n_messages;
  const llmc_message *const *messages; /* n_messages pointers, oldest first */
  const char *json;                    /* llmd's answer as is (also "kv": where its KV is stored) */
} llmc_session_detail;

/* Creates a session. `system_prompt` and `app` may be NULL. *id_out: llmc_free it. */
LLMC_API llmc_code llmc_session_create(llmc_client *client, const char *system_prompt, const char *app, char **id_out);
/* The same with its overflow policy: what happens when the conversation outgrows llmd's context.
 * "drop_oldest" (the oldest whole turns leave the model's window), "sliding" (the same turns leave,
 * the kept ones' KV is shifted instead of recomputed), "error" (the turn that does not fit fails,
 * LLMC_ERR_INVALID_ARGUMENT), or NULL: llmd's context-overflow. */
LLMC_API llmc_code llmc_session_create_ex(llmc_client *client, const char *system_prompt, const char *app,
                                          const char *overflow, char **id_out);
/* The caller's sessions (every user's for llmd's admins). *out: llmc_free it. */
LLMC_API llmc_code llmc_session_list(llmc_client *client, llmc_sessions **out);
/* One session with its messages. LLMC_ERR_NOT_FOUND if there is none (or another uid's). */
LLMC_API llmc_code llmc_session_get(llmc_client *client, const char *id, llmc_session_detail **out);
LLMC_API llmc_code llmc_session_delete(llmc_client *client, const char *id);

/* Forks a session: a new session of the caller's with the source's app, system prompt, messages
 * and tokens, under a new id (*new_id_out: llmc_free it). llmd copies no KV: the fork's first turn
 * reuses what llmd has stored for the same tokens. Each branch then goes its own way; deleting the
 * source leaves the fork whole. Errors: LLMC_ERR_NOT_FOUND (no such session, or another uid's),
 * LLMC_ERR_BUSY (a request runs on it), LLMC_ERR_QUOTA (the caller's session count or stored
 * bytes; the param names the limit), LLMC_ERR_NO_SPACE. */
LLMC_API llmc_code llmc_session_fork(llmc_client *client, const char *id, char **new_id_out);

/* Prewarms a session: llmd brings its KV into a slot ahead of its next message (background work of
 * the caller's), and answers once it is there, so that the next llmc_generate on it computes only
 * the new message. The out parameters (each may be NULL) get the session's tokens and how many of
 * them were loaded from stored KV chunks and recomputed (the rest were in a slot already).
 * Errors: LLMC_ERR_NOT_FOUND, LLMC_ERR_BUSY (a request runs on it), LLMC_ERR_QUOTA. */
LLMC_API llmc_code llmc_session_prewarm(llmc_client *client, const char *id, uint32_t *tokens_out,
                                        uint32_t *loaded_out, uint32_t *restored_out);

/* How llmc_session_rewind counts. */
enum { LLMC_REWIND_DROP_LAST = 0, /* drop the last `count` messages */
       LLMC_REWIND_KEEP = 1 };    /* keep the first `count` messages (the system message counted) */

/* Rewinds a session so that a turn can be edited or regenerated: drops messages from its end, whole
 * turns only (what is left ends with the system message or an answer; the system message always
 * stays), and cuts its tokens exactly where the kept turns ended, so sending the same message
 * again gets the same answer as the first time (greedy sampling). *out (may be NULL; llmc_free it)
 * receives the session with the messages left. Errors: LLMC_ERR_INVALID_ARGUMENT (an unknown
 * `how`, nothing or too much dropped, half a turn: the param says "drop_last" or "keep"),
 * LLMC_ERR_NOT_FOUND, LLMC_ERR_BUSY. */
LLMC_API llmc_code llmc_session_rewind(llmc_client *client, const char *id, int how, uint32_t count,
                                       llmc_session_detail **out);

/* ---- Daemon status ---------------------------------------------------------------------------- */

typedef struct llmc_daemon_status {
  const char *version;  /* llmd's version */
  const char *state;    /* "ok" or "stopping" */
  const char *model;    /* the model's id */
  int32_t slots;        /* sessions resident at once */
  int32_t slots_busy;
  int32_t running;      /* generations running */
  int32_t queued;       /* generations waiting for a slot */
  int32_t in_flight;    /* requests accepted and not finished (all users) */
  int64_t sessions;     /* stored sessions (all users) */
  double uptime_s;
  const char *json;     /* llmd's whole answer (GET /v1/status) as is */
} llmc_daemon_status;

LLMC_API llmc_code llmc_status_get(llmc_client *client, llmc_daemon_status **out);

/* Any other request of llmd's HTTP API (see llmd's documentation; e.g. "GET", "/v1/models"):
 * `body` is JSON or NULL. *http_status and *body_out (llmc_free it; may be NULL) receive llmd's
 * answer, also when it is an error, which is mapped to a code as for every other call. A streamed
 * answer arrives whole, as its event-stream text ("data: ...\n\n" per event). */
LLMC_API llmc_code llmc_call(llmc_client *client, const char *method, const char *path, const char *body, int *http_status,
                    char **body_out);

#ifdef __cplusplus
}
#endif

#endif /* LLMCLIENT_H */
