;; Grows its memory by 1024 pages (64 MiB): exits 0 if that worked, 12 if refused.
(component
  (import "wasi:cli/exit@0.2.12" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $exit-with-code (canon lower (func $exit "exit-with-code")))
  (core instance $host (export "exit-with-code" (func $exit-with-code)))
  (core module $m
    (import "host" "exit-with-code" (func $exit (param i32)))
    (memory 1)
    (func (export "run") (result i32)
      (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1))
        (then (call $exit (i32.const 12))))
      (i32.const 0)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))
