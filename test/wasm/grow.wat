;; Grows memory by 1024 pages (64 MiB): exits 0 if that worked, 12 if refused.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1))
      (then (call $exit (i32.const 12)))
      (else (call $exit (i32.const 0))))))
