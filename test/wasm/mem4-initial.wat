;; Four linear memories of 960 pages (60 MiB) each from the start: 240 MiB before any code
;; runs. Exits 0 if it was instantiated at all.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory $m0 (export "memory") 960)
  (memory $m1 960)
  (memory $m2 960)
  (memory $m3 960)
  (func (export "_start")
    (call $exit (i32.const 0))))
