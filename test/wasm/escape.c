// Tries to read files by absolute and escaping paths and reports, one line each:
//   "<path>: ok <first line>" or "<path>: error <strerror>".
// Default paths probe the preopened root; pass others as arguments.
#include <errno.h>
#include <stdio.h>
#include <string.h>
static void probe(const char *p) {
  FILE *f = fopen(p, "r");
  if (!f) {
    printf("%s: error %s\n", p, strerror(errno));
    return;
  }
  char line[256] = {0};
  if (!fgets(line, sizeof line, f)) line[0] = 0;
  line[strcspn(line, "\n")] = 0;
  printf("%s: ok %s\n", p, line);
  fclose(f);
}
int main(int argc, char **argv) {
  if (argc > 1) {
    for (int i = 1; i < argc; i++) probe(argv[i]);
  } else {
    const char *d[] = {"/etc/passwd", "/../etc/passwd", "../../../../etc/passwd",
                       "/proc/self/environ", "/inside.txt"};
    for (unsigned i = 0; i < sizeof d / sizeof *d; i++) probe(d[i]);
  }
  return 0;
}
