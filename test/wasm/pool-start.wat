;; A module whose start function (run while it is instantiated, before _start) does the
;; work (test/e2e/attack-pool.test.ts): it prints "s", then by the first letter of its first
;; argument calls proc_exit(7) ("x") or spins for ever ("y"). _start is never reached.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0x100) "\00\02\00\00\02\00\00\00")
  (data (i32.const 0x200) "s\n")
  (func $start
    (local $m i32)
    (drop (call $write (i32.const 1) (i32.const 0x100) (i32.const 1) (i32.const 0x14)))
    (drop (call $args_sizes (i32.const 0x10) (i32.const 0x14)))
    (if (i32.ge_u (i32.load (i32.const 0x10)) (i32.const 2))
      (then
        (drop (call $args_get (i32.const 0x400) (i32.const 0x500)))
        (local.set $m (i32.load8_u (i32.load (i32.const 0x404))))))
    (if (i32.eq (local.get $m) (i32.const 120)) (then (call $exit (i32.const 7))))
    (if (i32.eq (local.get $m) (i32.const 121)) (then (loop $spin (br $spin)))))
  (start $start)
  (func (export "_start") unreachable))
