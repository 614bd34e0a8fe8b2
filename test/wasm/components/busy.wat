;; A command component that spins forever without calling the host: only an engine
;; interrupt (epoch) stops it.
(component
  (core module $m
    (func (export "run") (result i32)
      (loop $l (br $l))
      unreachable))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))
