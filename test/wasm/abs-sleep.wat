;; Polls an absolute realtime clock of 2^64-1 ns (the far future), so wasmtime's own poll_oneoff
;; waits for it. It imports sock_accept (never called), so that shared mode runs it on a thread
;; of its own, not on a run pool (test/e2e/attack-pool.test.ts).
(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; subscription at 0x1000: clock (tag 0), realtime (id 0), timeout 2^64-1, abstime (flags 1)
  (data (i32.const 0x1018) "\ff\ff\ff\ff\ff\ff\ff\ff")
  (data (i32.const 0x1028) "\01")
  (func (export "_start")
    (drop (call $poll (i32.const 0x1000) (i32.const 0x1100) (i32.const 1) (i32.const 0x10)))))
