// A wasi:http/incoming-handler (0.2.12) test service, written against the canonical ABI by
// hand: no libc, no wit-bindgen (scripts/build-http-components.sh embeds the WIT of the
// wasmtime-wasi-http crate with `wasm-tools component embed` and makes the component with
// `wasm-tools component new`, which checks every import's core signature below).
//
// Routes (by path):
//   /              200 "hello from wasi:http\n"
//   /echo          200, the request body streamed back
//   /log           writes a line to stdout and one to stderr, 200 "logged\n"
//   /sleep/<ms>    says "guest sleeping" on stderr, waits <ms> milliseconds, then 200 "slept <ms>\n"
//   /trap          traps (unreachable) before answering
//   /spin          says "guest spinning" on stderr, then loops in wasm for ever (no answer)
//   /fetch/<host:port><path>   GET http://<host:port><path> through wasi:http/outgoing-handler,
//                  200 "upstream <status>: <body>"
//   /env/<NAME>    200 with the value of env NAME through wasi:cli/environment (or "unset")
//   /count         bumps a zero-initialised and a seeded (7) static, 200 "count <a> <b>\n": a fresh
//                  instance answers "count 1 8" every time

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef int i32;
typedef long long i64;
typedef unsigned long size_t;

// The WASI 0.2 minor version the imports name (-DWASI_V='"0.2.6"' for an older host's WIT).
#ifndef WASI_V
#define WASI_V "0.2.12"
#endif
#define IMPORT(mod, name) __attribute__((import_module(mod), import_name(name)))
#define TYPES "wasi:http/types@" WASI_V
#define STREAMS "wasi:io/streams@" WASI_V
#define POLL "wasi:io/poll@" WASI_V

// ---- a bump allocator (each request has a fresh instance, so nothing is ever freed) ----
extern u8 __heap_base;
static u32 heap_top = 0;
static u32 heap_end = 0;

__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
  if (!heap_top) {
    heap_top = (u32)&__heap_base;
    heap_end = __builtin_wasm_memory_size(0) * 65536;
  }
  u32 p = (heap_top + (u32)align - 1) & ~((u32)align - 1);
  if (p + new_size > heap_end) {
    u32 pages = (u32)((p + new_size - heap_end + 65535) / 65536);
    if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) __builtin_trap();
    heap_end += pages * 65536;
  }
  heap_top = p + (u32)new_size;
  u8 *d = (u8 *)p, *s = (u8 *)old;
  for (size_t i = 0; old && i < old_size && i < new_size; i++) d[i] = s[i];
  return (void *)p;
}

static void *memcpy_(void *dst, const void *src, size_t n) {
  u8 *d = dst;
  const u8 *s = src;
  while (n--) *d++ = *s++;
  return dst;
}
void *memcpy(void *dst, const void *src, size_t n) { return memcpy_(dst, src, n); }
void *memset(void *dst, int c, size_t n) {
  u8 *d = dst;
  while (n--) *d++ = (u8)c;
  return dst;
}

static size_t slen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}
static int starts(const u8 *p, u32 n, const char *pre) {
  size_t k = slen(pre);
  if (n < k) return 0;
  for (size_t i = 0; i < k; i++)
    if (p[i] != (u8)pre[i]) return 0;
  return 1;
}
static u32 utoa(u64 v, char *out) {
  char tmp[24];
  u32 n = 0;
  do tmp[n++] = (char)('0' + v % 10);
  while (v /= 10);
  for (u32 i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

// ---- imports ----
IMPORT(TYPES, "[constructor]fields") i32 fields_new(void);
IMPORT(TYPES, "[method]incoming-request.path-with-query") void req_path(i32 self, void *ret);
IMPORT(TYPES, "[method]incoming-request.consume") void req_consume(i32 self, void *ret);
IMPORT(TYPES, "[resource-drop]incoming-request") void req_drop(i32);
IMPORT(TYPES, "[method]incoming-body.stream") void inbody_stream(i32 self, void *ret);
IMPORT(TYPES, "[resource-drop]incoming-body") void inbody_drop(i32);
IMPORT(TYPES, "[constructor]outgoing-response") i32 resp_new(i32 headers);
IMPORT(TYPES, "[method]outgoing-response.set-status-code") i32 resp_set_status(i32 self, i32 code);
IMPORT(TYPES, "[method]outgoing-response.body") void resp_body(i32 self, void *ret);
IMPORT(TYPES, "[method]outgoing-body.write") void outbody_write(i32 self, void *ret);
IMPORT(TYPES, "[static]outgoing-body.finish") void outbody_finish(i32 self, i32 has_trailers, i32 trailers, void *ret);
IMPORT(TYPES, "[static]response-outparam.set")
void outparam_set(i32 param, i32 is_err, i32 a, i32 b, i64 c, i32 d, i32 e, i32 f, i32 g);
IMPORT(TYPES, "[constructor]outgoing-request") i32 oreq_new(i32 headers);
IMPORT(TYPES, "[method]outgoing-request.set-method") i32 oreq_set_method(i32 self, i32 disc, i32 p, i32 n);
IMPORT(TYPES, "[method]outgoing-request.set-scheme") i32 oreq_set_scheme(i32 self, i32 some, i32 disc, i32 p, i32 n);
IMPORT(TYPES, "[method]outgoing-request.set-authority") i32 oreq_set_authority(i32 self, i32 some, i32 p, i32 n);
IMPORT(TYPES, "[method]outgoing-request.set-path-with-query") i32 oreq_set_path(i32 self, i32 some, i32 p, i32 n);
IMPORT(TYPES, "[method]future-incoming-response.subscribe") i32 fut_subscribe(i32 self);
IMPORT(TYPES, "[method]future-incoming-response.get") void fut_get(i32 self, void *ret);
IMPORT(TYPES, "[resource-drop]future-incoming-response") void fut_drop(i32);
IMPORT(TYPES, "[method]incoming-response.status") i32 iresp_status(i32 self);
IMPORT(TYPES, "[method]incoming-response.consume") void iresp_consume(i32 self, void *ret);
IMPORT(TYPES, "[resource-drop]incoming-response") void iresp_drop(i32);
IMPORT("wasi:http/outgoing-handler@" WASI_V, "handle") void http_send(i32 req, i32 has_opts, i32 opts, void *ret);
IMPORT(STREAMS, "[method]input-stream.blocking-read") void in_read(i32 self, i64 len, void *ret);
IMPORT(STREAMS, "[resource-drop]input-stream") void in_drop(i32);
IMPORT(STREAMS, "[method]output-stream.blocking-write-and-flush") void out_write(i32 self, const void *p, i32 n, void *ret);
IMPORT(STREAMS, "[resource-drop]output-stream") void out_drop(i32);
IMPORT(POLL, "[method]pollable.block") void poll_block(i32 self);
IMPORT(POLL, "[resource-drop]pollable") void poll_drop(i32);
IMPORT("wasi:clocks/monotonic-clock@" WASI_V, "subscribe-duration") i32 sleep_for(i64 ns);
IMPORT("wasi:cli/stdout@" WASI_V, "get-stdout") i32 get_stdout(void);
IMPORT("wasi:cli/stderr@" WASI_V, "get-stderr") i32 get_stderr(void);
IMPORT("wasi:cli/environment@" WASI_V, "get-environment") void get_env(void *ret);

// Return areas, laid out as the canonical ABI stores them.
static u32 ret[32] __attribute__((aligned(8)));

static void write_all(i32 stream, const u8 *p, u32 n) {
  while (n) {
    u32 k = n > 4096 ? 4096 : n;  // blocking-write-and-flush takes at most 4096 bytes
    out_write(stream, p, (i32)k, ret);
    if (((u8 *)ret)[0]) __builtin_trap();  // the client went away: nothing sensible to do
    p += k;
    n -= k;
  }
}
static void write_str(i32 stream, const char *s) { write_all(stream, (const u8 *)s, (u32)slen(s)); }

// Reads a chunk: returns its length (0 = end of stream) and its bytes in *out.
static u32 read_chunk(i32 stream, u8 **out) {
  in_read(stream, 65536, ret);
  if (((u8 *)ret)[0]) return 0;  // err: closed (or failed)
  *out = (u8 *)ret[1];
  return ret[2];
}

// Starts a 200/`status` response and returns its body's output stream; *body = the outgoing-body.
static i32 respond(i32 outparam, int status, i32 *body) {
  i32 resp = resp_new(fields_new());
  resp_set_status(resp, status);
  resp_body(resp, ret);
  *body = (i32)ret[1];
  outbody_write(*body, ret);
  i32 stream = (i32)ret[1];
  outparam_set(outparam, 0, resp, 0, 0, 0, 0, 0, 0);
  return stream;
}
static void finish(i32 body, i32 stream) {
  out_drop(stream);
  outbody_finish(body, 0, 0, ret);
}

static void sleep_ms(u64 ms) {
  i32 p = sleep_for((i64)(ms * 1000000ull));
  poll_block(p);
  poll_drop(p);
}

static void fetch(const u8 *target, u32 n, i32 outparam) {
  u32 slash = 0;
  while (slash < n && target[slash] != '/') slash++;
  i32 req = oreq_new(fields_new());
  oreq_set_method(req, 0, 0, 0);                          // GET
  oreq_set_scheme(req, 1, 0, 0, 0);                       // some(HTTP)
  oreq_set_authority(req, 1, (i32)target, (i32)slash);   // host:port
  if (slash < n) oreq_set_path(req, 1, (i32)(target + slash), (i32)(n - slash));
  else oreq_set_path(req, 1, (i32) "/", 1);
  http_send(req, 0, 0, ret);
  if (((u8 *)ret)[0]) {
    i32 body, s = respond(outparam, 502, &body);
    write_str(s, "outgoing-handler refused the request\n");
    finish(body, s);
    return;
  }
  i32 fut = (i32)ret[2];
  i32 pollable = fut_subscribe(fut);
  poll_block(pollable);
  poll_drop(pollable);
  fut_get(fut, ret);
  // option<result<result<incoming-response, error-code>>>: some@0, outer ok@8, inner ok@16, handle@24
  u8 *r = (u8 *)ret;
  i32 body, s;
  if (!r[0] || r[8] || r[16]) {
    s = respond(outparam, 502, &body);
    write_str(s, "upstream request failed\n");
    finish(body, s);
    return;
  }
  i32 iresp = (i32)ret[6];
  fut_drop(fut);
  i32 status = iresp_status(iresp);
  iresp_consume(iresp, ret);
  i32 ibody = (i32)ret[1];
  inbody_stream(ibody, ret);
  i32 in = (i32)ret[1];
  s = respond(outparam, 200, &body);
  char line[40] = "upstream ";
  u32 k = 9 + utoa((u64)status, line + 9);
  line[k++] = ':';
  line[k++] = ' ';
  write_all(s, (const u8 *)line, k);
  u8 *chunk;
  u32 got;
  while ((got = read_chunk(in, &chunk))) write_all(s, chunk, got);
  in_drop(in);
  inbody_drop(ibody);
  iresp_drop(iresp);
  finish(body, s);
}

static int same(const u8 *a, u32 an, const u8 *b, u32 bn) {
  if (an != bn) return 0;
  for (u32 i = 0; i < an; i++)
    if (a[i] != b[i]) return 0;
  return 1;
}

static void env(const u8 *name, u32 n, i32 outparam) {
  get_env(ret);
  // list<tuple<string, string>>: each element 16 bytes (key ptr, key len, value ptr, value len)
  u32 *e = (u32 *)ret[0], count = ret[1];
  i32 body, s = respond(outparam, 200, &body);
  for (u32 i = 0; i < count; i++) {
    u32 *kv = e + 4 * i;
    if (same((const u8 *)kv[0], kv[1], name, n)) {
      write_all(s, (const u8 *)kv[2], kv[3]);
      finish(body, s);
      return;
    }
  }
  write_str(s, "unset");
  finish(body, s);
}

#ifdef MISSING_IMPORT
// An import no host defines (the bad-input test: the service must not start).
IMPORT("bunwasi:test/missing", "nothing") void missing_nothing(void);
#endif

// State a request leaves in linear memory (bss and data): a reused instance, or a pooled memory
// not reset to its image, would show it to the next request.
static u32 count_zero;
static u32 count_seeded = 7;

__attribute__((export_name("wasi:http/incoming-handler@" WASI_V "#handle"))) void handle(i32 request, i32 outparam) {
  req_path(request, ret);
  const u8 *path = (const u8 *)"/";
  u32 n = 1;
  if (((u8 *)ret)[0]) {
    path = (const u8 *)ret[1];
    n = ret[2];
  }
  i32 body, s;
  if (starts(path, n, "/trap")) {
    __builtin_trap();
  } else if (starts(path, n, "/echo")) {
    req_consume(request, ret);
    i32 ibody = (i32)ret[1];
    inbody_stream(ibody, ret);
    i32 in = (i32)ret[1];
    s = respond(outparam, 200, &body);
    u8 *chunk;
    u32 got;
    u32 mark = heap_top;
    while ((got = read_chunk(in, &chunk))) {
      write_all(s, chunk, got);
      heap_top = mark;  // the chunk is written: its bytes can be reused
    }
    in_drop(in);
    inbody_drop(ibody);
    finish(body, s);
  } else if (starts(path, n, "/log")) {
    i32 out = get_stdout(), err = get_stderr();
    write_str(out, "guest says hello on stdout\n");
    write_str(err, "guest says hello on stderr\n");
    out_drop(out);
    out_drop(err);
    s = respond(outparam, 200, &body);
    write_str(s, "logged\n");
    finish(body, s);
  } else if (starts(path, n, "/sleep/")) {
    u64 ms = 0;
    for (u32 i = 7; i < n && path[i] >= '0' && path[i] <= '9'; i++) ms = ms * 10 + (u64)(path[i] - '0');
    // Said before the wait, so a test knows the request is in the guest.
    i32 err = get_stderr();
    write_str(err, "guest sleeping\n");
    out_drop(err);
    sleep_ms(ms);
    s = respond(outparam, 200, &body);
    char msg[40] = "slept ";
    u32 k = 6 + utoa(ms, msg + 6);
    msg[k++] = '\n';
    write_all(s, (const u8 *)msg, k);
    finish(body, s);
  } else if (starts(path, n, "/spin")) {
    // Busy in wasm, never in a host call: only an interrupt (the host's epoch) ends it.
    i32 err = get_stderr();
    write_str(err, "guest spinning\n");
    out_drop(err);
    volatile u32 spins = 0;
    for (;;) spins++;
  } else if (starts(path, n, "/fetch/")) {
    fetch(path + 7, n - 7, outparam);
  } else if (starts(path, n, "/env/")) {
    env(path + 5, n - 5, outparam);
  } else if (starts(path, n, "/count")) {
    count_zero++;
    count_seeded++;
    s = respond(outparam, 200, &body);
    char msg[40] = "count ";
    u32 k = 6 + utoa(count_zero, msg + 6);
    msg[k++] = ' ';
    k += utoa(count_seeded, msg + k);
    msg[k++] = '\n';
    write_all(s, (const u8 *)msg, k);
    finish(body, s);
  } else {
#ifdef MISSING_IMPORT
    missing_nothing();
#endif
    s = respond(outparam, 200, &body);
    write_str(s, "hello from wasi:http\n");
    finish(body, s);
  }
  req_drop(request);
}
