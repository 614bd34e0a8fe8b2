// Opens "/" again and again, keeping every handle, until an open fails; then prints
//   "opened N: <strerror>"
// and, with argument "hold", keeps them all and waits to be killed (an attack on whoever holds
// the process's files: the shared-mode daemon holds them all).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
  long n = 0;
  int err = 0;
  for (;;) {
    int fd = open("/", O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
      err = errno;
      break;
    }
    n++;
  }
  printf("opened %ld: %s\n", n, strerror(err));
  fflush(stdout);
  if (argc > 1 && strcmp(argv[1], "hold") == 0)
    for (;;) sleep(3600);
  return 0;
}
