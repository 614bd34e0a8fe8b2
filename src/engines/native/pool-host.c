// The host side of a run pool's stores that must not be JavaScript (src/engines/wasmtime/pool-worker.ts).
//
// A pool thread drives many stores through wasmtime's async C API: each store's wasm runs on a
// fiber, a stack of wasmtime's own, until it yields. JavaScriptCore cannot run on such a stack
// (a JSCallback called there aborts Bun: its stack checks and its conservative scan of the
// stack assume the thread's own), so everything wasmtime calls during a poll is here:
//
//  - the host functions the pool serves itself (poll_oneoff, fd_read, fd_write, proc_exit and
//    the file guard's) are one async function: it notes which was called, its arguments and
//    where the guest's memory is in the store's slot, and parks (its continuation says "not
//    yet"), so the poll returns. The pool then does the work in JavaScript, on its own stack,
//    on that memory (which cannot move or grow while its guest waits), writes the result into
//    the slot and polls again: the continuation hands the result to wasmtime.
//  - a parked call may have several results (the file guard's `ask`, pool-guard.ts: what to do
//    next and its arguments): the first is the i32 `result`, the rest the i64 `answers`.
//  - the epoch deadline: kill (an error: the store unwinds), else publish the memory figure
//    and yield, so that one busy module leaves the thread to the others at each tick.
//
// The libwasmtime functions come in as pointers (bunwasi_pool_init): the library is the one
// the process already loaded, whichever path it came from. Built by scripts/build-native.sh.

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// wasmtime_extern_t and wasmtime_val_t are 32 bytes each (kind, 7 bytes of padding, union at 8).
typedef struct {
  uint8_t kind;
  uint8_t pad[7];
  union {
    int32_t i32;
    int64_t i64;
    uint8_t raw[24];
  } of;
} val32;

typedef val32 extern32;

typedef bool (*caller_export_get_fn)(void *caller, const char *name, size_t len, extern32 *out);
typedef void *(*caller_context_fn)(void *caller);
typedef uint8_t *(*memory_data_fn)(void *cx, const void *mem);
typedef size_t (*memory_data_size_fn)(void *cx, const void *mem);
typedef void *(*error_new_fn)(const char *msg);
typedef void *(*trap_new_fn)(const char *msg, size_t len);

static struct {
  caller_export_get_fn caller_export_get;
  caller_context_fn caller_context;
  memory_data_fn memory_data;
  memory_data_size_fn memory_data_size;
  error_new_fn error_new;
  trap_new_fn trap_new;
} wt;

/** Sets the libwasmtime functions this library calls. */
void bunwasi_pool_init(void *caller_export_get, void *caller_context, void *memory_data, void *memory_data_size,
                       void *error_new, void *trap_new) {
  wt.caller_export_get = (caller_export_get_fn)caller_export_get;
  wt.caller_context = (caller_context_fn)caller_context;
  wt.memory_data = (memory_data_fn)memory_data;
  wt.memory_data_size = (memory_data_size_fn)memory_data_size;
  wt.error_new = (error_new_fn)error_new;
  trap_new_fn t = (trap_new_fn)trap_new;
  wt.trap_new = t;
}

#define MAX_ARGS 12
#define TRAP_MAX 200

// What `state` says (the pool writes it to move a parked call on).
enum { PARKED = 0, ANSWERED = 1 };

/**
 * One store's slot, shared with the pool's JavaScript (its offsets are in pool-worker.ts,
 * POOL_SLOT). Only the pool thread touches it: JavaScript between polls, this code during one.
 */
typedef struct {
  int32_t op;       // the parked host function's id (its env), 0 when none
  int32_t state;    // PARKED, ANSWERED (result set)
  int32_t result;   // the first (i32) result to return once ANSWERED
  int32_t trap;     // with ANSWERED: 1 = trap with `trap_msg` instead of returning
  int32_t nresults; // how many results the parked call returns
  int32_t pad[5];
  int64_t args[MAX_ARGS];    // the parked call's arguments (i32 or i64 each)
  int64_t answers[MAX_ARGS]; // its results after the first (i64 each)
  uint64_t mem_base;         // the caller's memory when it parked
  uint64_t mem_len;
  void *caller;     // the parked call's caller (valid until its continuation says done)
  val32 *results;   // where its results go
  void **trap_ret;  // where a trap goes
  int32_t *words;   // the run's words (src/engines/wasmtime/run-atomics.ts)
  extern32 *memory; // the instance's exported memory, once instantiated (for the figure)
  char trap_msg[TRAP_MAX];
} slot_t;

/** The env of one defined function: its slot and its id. */
typedef struct {
  slot_t *slot;
  int32_t op;
} func_env;

void *bunwasi_pool_env(slot_t *slot, int32_t op) {
  func_env *e = malloc(sizeof *e);
  if (!e) return NULL;
  e->slot = slot;
  e->op = op;
  return e;
}

void bunwasi_pool_env_free(void *e) { free(e); }

size_t bunwasi_pool_slot_size(void) { return sizeof(slot_t); }

static void capture_memory(slot_t *s, void *caller) {
  extern32 ext;
  s->mem_base = 0;
  s->mem_len = 0;
  if (!wt.caller_export_get(caller, "memory", 6, &ext) || ext.kind != 3) return;
  void *cx = wt.caller_context(caller);
  s->mem_base = (uint64_t)(uintptr_t)wt.memory_data(cx, &ext.of);
  s->mem_len = wt.memory_data_size(cx, &ext.of);
}

static bool continue_call(void *env) {
  slot_t *s = (slot_t *)env;
  if (s->state != ANSWERED) return false;
  if (s->trap) {
    *s->trap_ret = wt.trap_new(s->trap_msg, strnlen(s->trap_msg, TRAP_MAX));
  } else {
    for (int i = 0; i < s->nresults && i <= MAX_ARGS; i++) {
      memset(&s->results[i], 0, sizeof s->results[i]);
      if (i == 0) {
        s->results[0].kind = 0; // i32
        s->results[0].of.i32 = s->result;
      } else {
        s->results[i].kind = 1; // i64
        s->results[i].of.i64 = s->answers[i - 1];
      }
    }
  }
  s->op = 0;
  s->state = PARKED;
  s->trap = 0;
  s->caller = NULL;
  return true;
}

/** The one async host function (wasmtime_func_async_callback_t) of every parked call. */
void bunwasi_pool_host(void *env, void *caller, const val32 *args, size_t nargs, val32 *results, size_t nresults,
                       void **trap_ret, void **continuation) {
  func_env *e = (func_env *)env;
  slot_t *s = e->slot;
  s->op = e->op;
  s->nresults = (int32_t)nresults;
  s->state = PARKED;
  s->trap = 0;
  for (size_t i = 0; i < nargs && i < MAX_ARGS; i++) s->args[i] = args[i].kind == 1 ? args[i].of.i64 : (int64_t)args[i].of.i32;
  s->caller = caller;
  s->results = results;
  s->trap_ret = trap_ret;
  capture_memory(s, caller);
  // wasmtime_async_continuation_t: callback, env, finalizer.
  continuation[0] = (void *)continue_call;
  continuation[1] = s;
  continuation[2] = NULL;
}

/** The pointer of bunwasi_pool_host (for wasmtime_linker_define_async_func). */
void *bunwasi_pool_host_ptr(void) { return (void *)bunwasi_pool_host; }
void *bunwasi_pool_env_free_ptr(void) { return (void *)bunwasi_pool_env_free; }

enum { KILL = 0, MEM_PAGES = 2, MEM_ASK = 3, MEM_ANSWER = 4 };

/** The epoch deadline callback of a pooled store (wasmtime_store_epoch_deadline_callback); `data` is its slot. */
static void *deadline(void *cx, void *data, uint64_t *delta, uint8_t *kind) {
  slot_t *s = (slot_t *)data;
  int32_t *w = s->words;
  if (s->memory) {
    size_t bytes = wt.memory_data_size(cx, &s->memory->of);
    __atomic_store_n(&w[MEM_PAGES], (int32_t)((bytes + 65535) / 65536), __ATOMIC_SEQ_CST);
    int32_t asked = __atomic_load_n(&w[MEM_ASK], __ATOMIC_SEQ_CST);
    __atomic_store_n(&w[MEM_ANSWER], asked, __ATOMIC_SEQ_CST);
  }
  int32_t sig = __atomic_load_n(&w[KILL], __ATOMIC_SEQ_CST);
  if (sig != 0) {
    char msg[64];
    static const char prefix[] = "interrupted by signal ";
    memcpy(msg, prefix, sizeof prefix - 1);
    int n = sizeof prefix - 1, v = sig, len = 0;
    char digits[12];
    do {
      digits[len++] = (char)('0' + v % 10);
      v /= 10;
    } while (v > 0 && len < 11);
    while (len > 0) msg[n++] = digits[--len];
    msg[n] = 0;
    return wt.error_new(msg);
  }
  *delta = 1;
  *kind = 1; // WASMTIME_UPDATE_DEADLINE_YIELD
  return NULL;
}

void *bunwasi_pool_deadline_ptr(void) { return (void *)deadline; }
