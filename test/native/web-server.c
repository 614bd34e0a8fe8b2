// The web server of critest's web images (test/support/critest-images.ts), in place of the
// nginx and httpd images it pulls from registry.k8s.io: installed as /usr/sbin/nginx or
// /usr/local/bin/httpd, it answers every HTTP request with 200 and a small page on the port
// given, writes its pid to the pid file given (nginx's /var/run/nginx.pid, which the hostPID
// spec reads), logs "<name>: listening on <port>" (the multi-container spec greps the
// log for its name), and shows "<name>: master process" in its command line as nginx does
// (the PID-namespace specs look for that string in /proc/1/cmdline). It re-executes itself
// once to get that command line: the kernel names the process after the file run, so
// `pidof nginx` still finds it.
//
//   web-server PORT [PIDFILE]
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char PAGE[] = "<html><body>bunwasi critest web server</body></html>\n";

static void leave(int sig) { _exit(128 + sig); }

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT [PIDFILE]\n", argv[0]);
    return 2;
  }
  const char *slash = strrchr(argv[0], '/');
  const char *name = slash ? slash + 1 : argv[0];
  if (!strstr(argv[0], "master process")) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
      self[n] = 0;
      char title[256];
      snprintf(title, sizeof title, "%s: master process %s", name, name);
      argv[0] = title;
      execv(self, argv);
    }
    // No re-exec (no /proc): serve under the plain name.
  } else {
    name = argv[0];
    const char *colon = strchr(name, ':');
    static char plain[256];
    snprintf(plain, sizeof plain, "%.*s", (int)(colon ? colon - name : (long)strlen(name)), name);
    name = plain;
  }
  struct sigaction term = {.sa_handler = leave};
  sigaction(SIGINT, &term, NULL);
  sigaction(SIGTERM, &term, NULL);
  signal(SIGPIPE, SIG_IGN);
  int port = atoi(argv[1]);
  if (argc > 2) {
    FILE *f = fopen(argv[2], "w");
    if (!f) {
      perror(argv[2]);
      return 1;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
  }
  int s = socket(AF_INET6, SOCK_STREAM, 0);
  int off = 0, on = 1;
  setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT};
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64)) {
    // A pod without IPv6: listen on IPv4 only.
    if (s >= 0) close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = {htonl(INADDR_ANY)}};
    if (s < 0 || bind(s, (struct sockaddr *)&a4, sizeof a4) || listen(s, 64)) {
      perror("listen");
      return 1;
    }
  }
  printf("%s: listening on %d\n", name, port);
  fflush(stdout);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    char buf[4096];
    // One read is enough for a GET from a test client; the answer closes the connection.
    if (read(c, buf, sizeof buf) > 0) {
      char head[256];
      int n = snprintf(head, sizeof head,
                       "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                       sizeof PAGE - 1);
      if (write(c, head, n) == n) (void)!write(c, PAGE, sizeof PAGE - 1);
    }
    close(c);
  }
}
