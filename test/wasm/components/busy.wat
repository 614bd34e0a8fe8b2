;; A command component that says "spinning" on stdout, then spins forever without calling
;; the host: only an engine interrupt (epoch) stops it. The line tells a test that the run
;; is inside wasi:cli/run (so a kill then is the epoch's, not the pre-run check's).
(component
  (import "wasi:io/error@0.2.0" (instance $error-i
    (export "error" (type (sub resource)))))
  (alias export $error-i "error" (type $error))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer 1 $error (type $e))
    (export "error" (type $err (eq $e)))
    (export "output-stream" (type $os (sub resource)))
    (type $own-err (own $err))
    (type $se (variant (case "last-operation-failed" $own-err) (case "closed")))
    (export "stream-error" (type $stream-error (eq $se)))
    (type $borrow-os (borrow $os))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" $borrow-os) (param "contents" (list u8)) (result (result (error $stream-error)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer 1 $output-stream (type $o))
    (export "output-stream" (type $os (eq $o)))
    (type $own-os (own $os))
    (export "get-stdout" (func (result $own-os)))))

  (core module $mem (memory (export "memory") 1))
  (core instance $mem-i (instantiate $mem))
  (alias core export $mem-i "memory" (core memory $memory))
  (core func $get-stdout (canon lower (func $stdout "get-stdout")))
  (core func $write (canon lower (func $streams "[method]output-stream.blocking-write-and-flush") (memory $memory)))
  (core instance $host
    (export "get-stdout" (func $get-stdout))
    (export "write" (func $write)))
  (core module $m
    (import "mem" "memory" (memory 1))
    (import "host" "get-stdout" (func $get-stdout (result i32)))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (data (i32.const 16) "spinning\n")
    (func (export "run") (result i32)
      ;; contents at 16 (9 bytes); the result<_, stream-error> is written at 32
      (call $write (call $get-stdout) (i32.const 16) (i32.const 9) (i32.const 32))
      (loop $l (br $l))
      unreachable))
  (core instance $i (instantiate $m (with "mem" (instance $mem-i)) (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))
