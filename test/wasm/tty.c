// A module for terminal tests: says which of its stdio are terminals (isatty: WASI's
// fd_fdstat_get answers CHARACTER_DEVICE for a tty), then echoes each line of stdin until EOF,
// or until a line "exit N" (its exit status N).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
  printf("tty stdin=%d stdout=%d stderr=%d\n", isatty(0), isatty(1), isatty(2));
  fflush(stdout);
  fprintf(stderr, "to stderr\n");
  char line[512];
  while (fgets(line, sizeof line, stdin)) {
    if (strncmp(line, "exit ", 5) == 0) return atoi(line + 5);
    printf("echo: %s", line);
    fflush(stdout);
  }
  printf("eof\n");
  return 0;
}
