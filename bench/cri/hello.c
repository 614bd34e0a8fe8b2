// The runc row's container in bench/cri/pod-start.ts: a static native program that prints one
// line and exits, the native counterpart of the wasm rows' `wasi-demo-app.wasm echo hello`.
#include <unistd.h>

int main(void) {
  static const char line[] = "hello\n";
  return write(1, line, sizeof line - 1) == sizeof line - 1 ? 0 : 1;
}
