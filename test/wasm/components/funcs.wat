;; Entry points for "component.wasm#name": run exits 1 (err), `other` exits with 7,
;; `ret` returns, `add` takes parameters (not callable from an entrypoint).
(component
  (import "wasi:cli/exit@0.2.12" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $exit-with-code (canon lower (func $exit "exit-with-code")))
  (core instance $host (export "exit-with-code" (func $exit-with-code)))
  (core module $m
    (import "host" "exit-with-code" (func $exit (param i32)))
    (func (export "run") (result i32) (i32.const 1))
    (func (export "other") (call $exit (i32.const 7)))
    (func (export "ret"))
    (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli))
  (func (export "other") (canon lift (core func $i "other")))
  (func (export "ret") (canon lift (core func $i "ret")))
  (func (export "add") (param "a" u32) (param "b" u32) (result u32) (canon lift (core func $i "add"))))
