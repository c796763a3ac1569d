/* libllmclient, the simplest use: connect, ask, print the answer.
 *
 *   cc -std=c99 blocking.c $(pkg-config --cflags --libs llmclient) -o blocking
 *   ./blocking "Tell me a story about a robot"
 */
#include <stdio.h>

#include <llmclient/llmclient.h>

int main(int argc, char **argv) {
  const char *prompt = argc > 1 ? argv[1] : "Tell me a story.";
  llmc_client *client;
  llmc_gen_params params;
  llmc_result *result;

  /* NULL: the socket in $LLMD_SOCKET, else llmd's default socket. */
  if (llmc_connect(NULL, &client) != LLMC_OK) {
    fprintf(stderr, "%s\n", llmc_last_error(NULL)); /* says how to start llmd */
    return 1;
  }

  /* Parameters: start from the defaults (llmd's own), set what matters. */
  llmc_gen_params_init(&params);
  params.max_tokens = 64;

  /* Blocks until the whole answer is there. The result is one allocation: llmc_free it. */
  if (llmc_generate(client, prompt, &params, NULL, NULL, &result) != LLMC_OK) {
    fprintf(stderr, "llmd: %s\n", llmc_last_error(client));
    llmc_free(result); /* may hold a partial answer; NULL is fine */
    llmc_close(client);
    return 1;
  }
  printf("%s\n", result->text);
  printf("(%d prompt tokens, %d generated, finish: %s)\n", (int)result->prompt_tokens,
         (int)result->completion_tokens, result->finish_reason);

  llmc_free(result);
  llmc_close(client);
  return 0;
}
