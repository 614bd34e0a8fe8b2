// A core module (WAT text, which the engine runs as it is) of 1 MiB that grows its memory by 1 MiB
// each time it is told to, for the tests of a live memory-limit Update: every 20 ms it sleeps
// (a sleep of ours, so its memory figure is current while it waits) and then looks at the
// size of the file "n" in its root (path_filestat_get on fd 3, the root's preopen): for each
// byte it has not acted on yet it tries memory.grow(16 pages) and writes "+" (grown) or "-"
// (refused) and a newline to stdout. So a test appends a byte and waits for the answer:
// nothing depends on how fast it runs.
export const GROW_STEPS_WAT = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $stat (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 16)
  ;; 0: the path "n"; 64: a filestat (its size at 96); 128: a clock subscription; 192: its
  ;; event; 240: nevents; 256: an iovec of 272 (2 bytes); 264: nwritten
  (data (i32.const 0) "n")
  (func (export "_start")
    (local $done i64)
    (i32.store (i32.const 144) (i32.const 1))
    (i64.store (i32.const 152) (i64.const 20000000))
    (i32.store (i32.const 256) (i32.const 272))
    (i32.store (i32.const 260) (i32.const 2))
    (i32.store8 (i32.const 273) (i32.const 10))
    (loop $forever
      (if (i32.eqz (call $stat (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 64)))
        (then
          (block $caught_up
            (loop $step
              (br_if $caught_up (i64.ge_u (local.get $done) (i64.load (i32.const 96))))
              (i32.store8 (i32.const 272)
                (select (i32.const 45) (i32.const 43) (i32.eq (memory.grow (i32.const 16)) (i32.const -1))))
              (drop (call $write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 264)))
              (local.set $done (i64.add (local.get $done) (i64.const 1)))
              (br $step)))))
      (drop (call $poll (i32.const 128) (i32.const 192) (i32.const 1) (i32.const 240)))
      (br $forever))))
`;
