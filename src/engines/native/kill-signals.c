// Kill signals for an executor that runs its module on its only JS thread
// (src/engines/kill-signals.ts loads this with bun:ffi; docs/ARCHITECTURE.md "Pitfalls").
//
// While the module runs, that thread is inside an FFI call and no JavaScript signal handler
// can run. So the handlers are C, and do only async-signal-safe things:
//  - the first kill signal is stored in the kill word, which the engine's interrupt checks
//    read (the epoch-deadline callback, the check before instantiation);
//  - the engine's interrupt function is called (wasmtime_engine_increment_epoch: an atomic
//    add), so running wasm traps at its next epoch check;
//  - a byte goes into a pipe, which ends a sleep in bunwasi_kill_sleep (the module's
//    poll_oneoff on clocks) at once, with no lost-wakeup race;
//  - a one-shot timer is armed: a module blocked in a host call that never returns to wasm
//    (a read on an empty fifo) is ended by the timer's handler with _exit(128 + signal),
//    the status the trap would have given.
//
// Built by scripts/build-native.sh; shipped in the executor directory (/.bunwasi).

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// The engine's run words (src/engines/wasmtime/run-atomics.ts), so the run code reads them as it
// does on a Worker: [0] = the first kill signal (0 = none yet); [1] = paused (always 0 here);
// [2] = linear memory pages published (-1 = none yet); [3..5] the memory request words, which
// only shared mode's Stats uses.
static _Atomic int32_t kill_word[6] = {0, 0, -1, 0, 0, 0};
static void (*_Atomic interrupt_fn)(void *);
static void *_Atomic interrupt_arg;
static int wake[2] = {-1, -1};
static timer_t grace_timer;
static int have_timer;
static struct itimerspec grace;

static void on_grace(int sig) {
  (void)sig;
  _exit(128 + atomic_load(&kill_word[0]));
}

static void on_kill(int sig) {
  int saved = errno;
  int32_t none = 0;
  if (atomic_compare_exchange_strong(&kill_word[0], &none, sig)) {
    if (have_timer) timer_settime(grace_timer, 0, &grace, NULL);
    ssize_t n = write(wake[1], "k", 1);
    (void)n;
  }
  void (*fn)(void *) = atomic_load(&interrupt_fn);
  if (fn) fn(atomic_load(&interrupt_arg));
  errno = saved;
}

// Installs the handlers for `n` signals and the grace timer (SIGALRM, `grace_ms` after the
// first kill). Returns 0, or -errno of the step that failed.
int bunwasi_kill_install(const int32_t *signals, int32_t n, int32_t grace_ms) {
  if (wake[0] < 0 && pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) return -errno;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_grace;
  if (sigaction(SIGALRM, &sa, NULL) != 0) return -errno;
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = SIGALRM;
  if (!have_timer) {
    if (timer_create(CLOCK_MONOTONIC, &ev, &grace_timer) != 0) return -errno;
    have_timer = 1;
  }
  memset(&grace, 0, sizeof grace);
  if (grace_ms <= 0) grace_ms = 1; // an all-zero it_value would disarm the timer
  grace.it_value.tv_sec = grace_ms / 1000;
  grace.it_value.tv_nsec = (long)(grace_ms % 1000) * 1000000L;
  // SA_RESTART: the executor's other threads (Bun's, wasmtime's) are not ours to interrupt;
  // what must end early ends through the epoch, the pipe or the timer.
  sa.sa_handler = on_kill;
  sa.sa_flags = SA_RESTART;
  // The other kill signals wait while a handler runs, so the first one delivered records its
  // number and arms the timer before a second can start.
  sigemptyset(&sa.sa_mask);
  for (int32_t i = 0; i < n; i++) sigaddset(&sa.sa_mask, signals[i]);
  for (int32_t i = 0; i < n; i++) {
    if (sigaction(signals[i], &sa, NULL) != 0) return -errno;
  }
  return 0;
}

// The function a kill calls to interrupt running code (with `arg`), from then on. Called
// at once too if a kill came first.
void bunwasi_kill_set_interrupt(void (*fn)(void *), void *arg) {
  atomic_store(&interrupt_arg, arg);
  atomic_store(&interrupt_fn, fn);
  if (fn && atomic_load(&kill_word[0]) != 0) fn(arg);
}

// The kill word, for the engine's checks to read.
int32_t *bunwasi_kill_word(void) { return (int32_t *)kill_word; }

// Sleeps `ns` nanoseconds unless a kill comes first. Returns the kill signal (0 = slept).
int32_t bunwasi_kill_sleep(uint64_t ns) {
  struct timespec now, end;
  clock_gettime(CLOCK_MONOTONIC, &now);
  uint64_t total = (uint64_t)now.tv_nsec + ns % 1000000000ULL;
  end.tv_sec = now.tv_sec + (time_t)(ns / 1000000000ULL) + (time_t)(total / 1000000000ULL);
  end.tv_nsec = (long)(total % 1000000000ULL);
  for (;;) {
    int32_t sig = atomic_load(&kill_word[0]);
    if (sig) return sig;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec)) return 0;
    struct timespec left = {end.tv_sec - now.tv_sec, end.tv_nsec - now.tv_nsec};
    if (left.tv_nsec < 0) {
      left.tv_sec -= 1;
      left.tv_nsec += 1000000000L;
    }
    struct pollfd p = {wake[0], POLLIN, 0};
    ppoll(&p, 1, &left, NULL); // EINTR or timeout: the loop looks again
  }
}
