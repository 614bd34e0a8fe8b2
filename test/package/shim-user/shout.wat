;; Asks the host to upper-case its greeting, prints it, and exits with the host's count.
(module
  (import "example:shout" "upper" (func $upper (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from the guest\n")
  (func (export "_start")
    (local $count i32)
    (local.set $count (call $upper (i32.const 16) (i32.const 21)))
    (i32.store (i32.const 0) (i32.const 16)) ;; iovec: base
    (i32.store (i32.const 4) (i32.const 21)) ;; iovec: length
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (local.get $count))))
