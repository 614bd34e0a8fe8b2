// Writes N MiB (argv[1], default 10) of a repeating pattern to stdout.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 10;
  static char buf[1 << 20];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = "0123456789abcdef\n"[i % 17];
  for (long m = 0; m < mib; m++) {
    for (size_t off = 0; off < sizeof buf;) {
      ssize_t w = write(1, buf + off, sizeof buf - off);
      if (w <= 0) return 1;
      off += (size_t)w;
    }
  }
  return 0;
}
