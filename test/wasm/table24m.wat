;; A funcref table grown to 24 million elements (192 MiB of table in wasmtime, whose elements
;; are pointers). Exits 12 if the grow is refused, 0 if it got them.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "_start")
    (if (i32.eq (table.grow $t (ref.null func) (i32.const 23999999)) (i32.const -1))
      (then (call $exit (i32.const 12))))
    (call $exit (i32.const 0))))
