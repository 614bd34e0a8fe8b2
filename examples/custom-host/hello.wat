;; Calls the custom host's log function with a string from its memory, then returns (exit 0).
;; The wasmtime shim has no such import and refuses to link it (exit 125).
(module
  (import "bunwasi:example/host" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from the guest")
  (func (export "_start")
    (call $log (i32.const 16) (i32.const 20))))
