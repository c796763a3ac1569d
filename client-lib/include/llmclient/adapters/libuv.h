/* libllmclient on a libuv loop: a header-only adapter (the hiredis pattern: adapters/libuv.h).
 *
 *     llmc_uv_attach(client, loop);                      (after llmc_connect)
 *     llmc_generate_async(client, ...);                  (any number, any time)
 *     uv_run(loop, UV_RUN_DEFAULT);                      (returns when no request is left)
 *
 * The adapter watches the client's fd with a uv_poll_t and its deadlines with a uv_timer_t, both
 * active only while requests are in flight, so uv_run ends when the last one finished. Callbacks
 * run on the loop's thread, inside llmc_process. llmc_close detaches it: its handles are closed
 * (uv_close) and freed by the loop's next iteration, so run the loop once more before
 * uv_loop_close. The program links libuv itself (`pkg-config --libs libuv`, CMake: libuv's own
 * target); libllmclient does not depend on it. uv.h needs POSIX: with -std=c99 (not gnu99) define
 * _POSIX_C_SOURCE 200809L before the first #include.
 */
#ifndef LLMCLIENT_ADAPTERS_LIBUV_H
#define LLMCLIENT_ADAPTERS_LIBUV_H

#include <stdint.h>
#include <stdlib.h>

#include <uv.h>

#include "../llmclient.h"

typedef struct llmc_uv_adapter {
  uv_poll_t poll;
  uv_timer_t timer;
  llmc_client *client;
  int polling;
  int open_handles;
} llmc_uv_adapter;

static inline void llmc_uv__closed(uv_handle_t *handle) {
  llmc_uv_adapter *a = (llmc_uv_adapter *)handle->data;
  if (--a->open_handles == 0) free(a);
}

static inline void llmc_uv__on_poll(uv_poll_t *handle, int status, int events) {
  (void)status; /* an error shows as a failed request in llmc_process */
  (void)events;
  llmc_process(((llmc_uv_adapter *)handle->data)->client);
}

static inline void llmc_uv__on_timer(uv_timer_t *handle) {
  llmc_process(((llmc_uv_adapter *)handle->data)->client);
}

static inline void llmc_uv__watch(void *data, int fd, int events) {
  llmc_uv_adapter *a = (llmc_uv_adapter *)data;
  (void)fd; /* always llmc_fd(client), given to uv_poll_init */
  if (events != 0 && !a->polling) {
    uv_poll_start(&a->poll, UV_READABLE, llmc_uv__on_poll);
    a->polling = 1;
  } else if (events == 0 && a->polling) {
    uv_poll_stop(&a->poll);
    a->polling = 0;
  }
}

static inline void llmc_uv__set_timer(void *data, long ms) {
  llmc_uv_adapter *a = (llmc_uv_adapter *)data;
  if (ms < 0) uv_timer_stop(&a->timer);
  else uv_timer_start(&a->timer, llmc_uv__on_timer, (uint64_t)ms, 0);
}

static inline void llmc_uv__cleanup(void *data) {
  llmc_uv_adapter *a = (llmc_uv_adapter *)data;
  uv_poll_stop(&a->poll);
  uv_timer_stop(&a->timer);
  uv_close((uv_handle_t *)&a->poll, llmc_uv__closed);
  uv_close((uv_handle_t *)&a->timer, llmc_uv__closed);
}

/* Runs `client` on `loop` (replacing any hooks it had). LLMC_OK, LLMC_ERR_INVALID_ARGUMENT (NULL),
 * LLMC_ERR_NOMEM, or LLMC_ERR_IO if libuv refused the handles. */
static inline llmc_code llmc_uv_attach(llmc_client *client, uv_loop_t *loop) {
  llmc_uv_adapter *a;
  llmc_loop_hooks hooks;
  if (client == NULL || loop == NULL) return LLMC_ERR_INVALID_ARGUMENT;
  a = (llmc_uv_adapter *)calloc(1, sizeof *a);
  if (a == NULL) return LLMC_ERR_NOMEM;
  a->client = client;
  a->poll.data = a;
  a->timer.data = a;
  if (uv_poll_init(loop, &a->poll, llmc_fd(client)) != 0) {
    free(a);
    return LLMC_ERR_IO;
  }
  if (uv_timer_init(loop, &a->timer) != 0) {
    a->open_handles = 1;
    uv_close((uv_handle_t *)&a->poll, llmc_uv__closed);
    return LLMC_ERR_IO;
  }
  a->open_handles = 2;
  hooks.data = a;
  hooks.watch = llmc_uv__watch;
  hooks.set_timer = llmc_uv__set_timer;
  hooks.cleanup = llmc_uv__cleanup;
  return llmc_set_loop_hooks(client, &hooks);
}

#endif /* LLMCLIENT_ADAPTERS_LIBUV_H */
