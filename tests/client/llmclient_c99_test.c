/* llmclient.h and the libuv adapter as a C99 program sees them: compiled with -std=c99 -Wall
 * -Wextra -pedantic -Werror (tests/CMakeLists.txt), then run: the calls that need no daemon. */
#define _POSIX_C_SOURCE 200809L /* libuv's uv.h needs POSIX types (strict C99 hides them) */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "llmclient/adapters/libuv.h"
#include "llmclient/llmclient.h"

static int failures = 0;

#define CHECK(cond)                                                    \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

int main(int argc, char **argv) {
  llmc_client *client = NULL;
  llmc_gen_params params;
  llmc_error_info info;
  const char *missing = argc > 1 ? argv[1] : "/nonexistent/llmd.sock";

  CHECK(strcmp(llmc_strerror(LLMC_OK), "success") == 0);
  CHECK(strlen(llmc_strerror(LLMC_ERR_QUOTA)) > 0);
  CHECK(strcmp(llmc_strerror(LLMC_ERR_NO_SPACE), "unknown error") != 0);
  CHECK(strlen(llmc_version()) > 0);

  CHECK(llmc_gen_params_init(&params) == &params);
  CHECK(params.struct_size == sizeof params);
  CHECK(params.max_tokens == -1 && isnan(params.temperature) && params.stream == 1);

  CHECK(llmc_connect(missing, &client) == LLMC_ERR_UNAVAILABLE);
  CHECK(client == NULL);
  CHECK(strstr(llmc_last_error(NULL), missing) != NULL);
  llmc_last_error_info(NULL, &info);
  CHECK(info.code == LLMC_ERR_UNAVAILABLE && info.http_status == 0 && info.retry_after_s == -1);

  CHECK(llmc_generate(NULL, "x", &params, NULL, NULL, NULL) == LLMC_ERR_INVALID_ARGUMENT);
  CHECK(llmc_connect(NULL, NULL) == LLMC_ERR_INVALID_ARGUMENT);
  CHECK(llmc_uv_attach(NULL, NULL) == LLMC_ERR_INVALID_ARGUMENT);
  llmc_close(NULL);
  llmc_free(NULL);

  if (failures == 0) printf("ok\n");
  return failures == 0 ? 0 : 1;
}
