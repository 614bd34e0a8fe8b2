// The pod sandbox ("pause") container for the CRI suite: there is no registry to pull
// registry.k8s.io/pause from, so test/support/cri.ts builds this statically and puts it
// in a local image. Like the real one it holds the pod's namespaces open and does
// nothing else: as PID 1 of the pod it reaps orphans, and SIGINT/SIGTERM end it (PID 1
// ignores signals it has no handler for).
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void leave(int sig) { _exit(128 + sig); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction term = {.sa_handler = leave};
  struct sigaction chld = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  if (sigaction(SIGINT, &term, NULL) || sigaction(SIGTERM, &term, NULL) || sigaction(SIGCHLD, &chld, NULL)) return 1;
  for (;;) pause();
}
