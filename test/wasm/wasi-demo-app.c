// wasi-demo-app: the same commands as runwasi's demo app, written in C for
// wasm32-wasi (preview 1).
//   (no args) | daemon   print a verse every second, forever
//   echo ARGS...         print ARGS joined by one space
//   sleep N              sleep N seconds
//   exit CODE            exit with CODE (no "exiting" line)
//   write FILE TEXT      write TEXT to FILE (created/truncated)
// Every command but `exit` and `daemon` ends by printing "exiting".
// argv[0] is the module name and is skipped.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *VERSE =
    "This is a song that never ends.\n"
    "Yes, it goes on and on my friends.\n"
    "Some people started singing it not knowing what it was,\n"
    "So they'll continue singing it forever just because...\n";

static void sleep_seconds(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
}

static int daemon_loop(void) {
  for (;;) {
    fputs(VERSE, stdout);
    fflush(stdout);
    sleep_seconds(1);
  }
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "daemon") == 0) return daemon_loop();
  const char *cmd = argv[1];
  if (strcmp(cmd, "echo") == 0) {
    for (int i = 2; i < argc; i++) {
      if (i > 2) fputc(' ', stdout);
      fputs(argv[i], stdout);
    }
    fputc('\n', stdout);
  } else if (strcmp(cmd, "sleep") == 0) {
    double s = argc > 2 ? atof(argv[2]) : 1.0;
    sleep_seconds(s);
  } else if (strcmp(cmd, "exit") == 0) {
    int code = argc > 2 ? atoi(argv[2]) : 0;
    fflush(stdout);
    exit(code);
  } else if (strcmp(cmd, "write") == 0) {
    if (argc < 4) {
      fprintf(stderr, "usage: write FILE TEXT\n");
      return 2;
    }
    FILE *f = fopen(argv[2], "w");
    if (!f) {
      fprintf(stderr, "open %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    fputs(argv[3], f);
    fclose(f);
  } else {
    fprintf(stderr, "unknown command: %s\n", cmd);
    return 2;
  }
  puts("exiting");
  return 0;
}
