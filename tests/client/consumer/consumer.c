/* A program built against an installed libllmclient (pkg-config). It checks what needs no daemon:
 * the version it was told to expect, error names, and a clear error when llmd is not running. */
#include <stdio.h>
#include <string.h>

#include <llmclient/llmclient.h>

int main(int argc, char **argv) {
  llmc_client *client = NULL;
  if (argc < 2 || strcmp(llmc_version(), argv[1]) != 0) {
    fprintf(stderr, "version %s, expected %s\n", llmc_version(), argc > 1 ? argv[1] : "?");
    return 1;
  }
  if (strcmp(llmc_strerror(LLMC_ERR_NOT_FOUND), "not found") != 0) return 2;
  if (llmc_connect("/nonexistent/llmd.sock", &client) != LLMC_ERR_UNAVAILABLE) return 3;
  printf("libllmclient %s: %s\n", llmc_version(), llmc_last_error(NULL));
  return 0;
}
