;; Two entry points: _start exits with 1, `other` exits with 7, `ret` returns.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 1)))
  (func (export "other") (call $exit (i32.const 7)))
  (func (export "ret")))
