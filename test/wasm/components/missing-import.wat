;; A command component importing an interface no host defines: it cannot be linked.
(component
  (import "example:missing/thing@1.0.0" (instance $thing
    (export "poke" (func))))
  (core func $poke (canon lower (func $thing "poke")))
  (core instance $host (export "poke" (func $poke)))
  (core module $m
    (import "host" "poke" (func $poke))
    (func (export "run") (result i32) (call $poke) (i32.const 0)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))
