;; A neighbour's cadence: writes "t\n" to stdout every 10 ms (a relative clock poll), for ever.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; subscription at 0: clock (tag 0 at 8), monotonic (id 1 at 16), 10 ms relative (timeout at 24)
  (data (i32.const 16) "\01")
  (data (i32.const 24) "\80\96\98\00")
  ;; iovec at 128: "t\n" at 160
  (data (i32.const 128) "\a0\00\00\00\02\00\00\00")
  (data (i32.const 160) "t\n")
  (func (export "_start")
    (loop $tick
      (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 96)))
      (drop (call $write (i32.const 1) (i32.const 128) (i32.const 1) (i32.const 100)))
      (br $tick))))
