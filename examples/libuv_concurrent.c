/* libllmclient on a libuv loop: three generations at once on one client, their tokens printed as
 * they arrive, tagged A, B, C. llmd batches them, so the tags interleave.
 *
 *   cc -std=c99 libuv_concurrent.c $(pkg-config --cflags --libs llmclient libuv) -o libuv_concurrent
 *   ./libuv_concurrent
 */
#define _POSIX_C_SOURCE 200809L /* libuv's uv.h needs POSIX types, which strict C99 hides */

#include <stdio.h>

#include <llmclient/adapters/libuv.h>
#include <llmclient/llmclient.h>
#include <uv.h>

struct job {
  char tag;
  const char *prompt;
  int ok;
};

/* Runs inside uv_run (the adapter calls llmc_process when the client's fd is readable). */
static void on_token(void *user, llmc_req_id id, const char *text, size_t len) {
  const struct job *job = user;
  size_t i;
  (void)id;
  printf("[%c] ", job->tag);
  for (i = 0; i < len; ++i) {
    if (text[i] == '\n') fputs("\\n", stdout); /* one line per token */
    else putchar(text[i]);
  }
  putchar('\n');
}

/* Runs once per request, last. */
static void on_done(void *user, const llmc_result *result) {
  struct job *job = user;
  if (result->code == LLMC_OK) {
    printf("[%c] finished: %s, %d tokens\n", job->tag, result->finish_reason, (int)result->completion_tokens);
    job->ok = 1;
  } else {
    printf("[%c] failed: %s\n", job->tag, result->message);
  }
}

int main(void) {
  struct job jobs[3] = {{'A', "Tell me a story about a dog.", 0},
                        {'B', "Tell me a story about a bird.", 0},
                        {'C', "Tell me a story about a fish.", 0}};
  uv_loop_t *loop = uv_default_loop();
  llmc_client *client;
  llmc_gen_params params;
  int i;

  if (llmc_connect(NULL, &client) != LLMC_OK) {
    fprintf(stderr, "%s\n", llmc_last_error(NULL));
    return 1;
  }
  if (llmc_uv_attach(client, loop) != LLMC_OK) { /* the loop now watches the client */
    llmc_close(client);
    return 1;
  }

  llmc_gen_params_init(&params);
  params.max_tokens = 32;
  for (i = 0; i < 3; ++i) {
    if (llmc_generate_async(client, jobs[i].prompt, &params, on_token, on_done, &jobs[i], NULL) != LLMC_OK) {
      fprintf(stderr, "%s\n", llmc_last_error(client));
    }
  }

  uv_run(loop, UV_RUN_DEFAULT); /* returns when all three are done */

  llmc_close(client);           /* detaches from the loop... */
  uv_run(loop, UV_RUN_DEFAULT); /* ...whose next run frees the adapter's handles */
  uv_loop_close(loop);
  return jobs[0].ok && jobs[1].ok && jobs[2].ok ? 0 : 1;
}
