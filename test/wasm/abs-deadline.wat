;; Waits (poll_oneoff) for absolute deadlines: on the realtime clock, 1 s after the time it reads
;; there; then on the monotonic clock, 1 s after the time it reads there. After each it reads
;; that clock again: if every deadline was there, it prints "deadline reached" and exits 0,
;; else "deadline early" and exits 1 (test/e2e/attack-pool.test.ts). abs-deadline-own.wat is
;; the same module importing path_open too, which shared mode runs on a thread of its own.
(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  ;; 0x20 the clock's time, 0x100 an iovec, 0x200 the lines, 0x1000 the subscription, 0x1100 its event
  (memory (export "memory") 1)
  (data (i32.const 0x200) "deadline reached\n")
  (data (i32.const 0x220) "deadline early\n")
  (func $print (param $at i32) (param $len i32)
    (i32.store (i32.const 0x100) (local.get $at))
    (i32.store (i32.const 0x104) (local.get $len))
    (drop (call $write (i32.const 1) (i32.const 0x100) (i32.const 1) (i32.const 0x10))))
  (func $now (param $id i32) (result i64)
    (if (call $clock (local.get $id) (i64.const 1) (i32.const 0x20)) (then (call $exit (i32.const 2))))
    (i64.load (i32.const 0x20)))
  ;; Waits for the absolute deadline 1 s after now on clock `id`; 1 if that clock is there then.
  (func $wait_second (param $id i32) (result i32)
    (local $deadline i64)
    (local.set $deadline (i64.add (call $now (local.get $id)) (i64.const 1000000000)))
    ;; subscription: userdata 7, tag clock (0), clock `id`, the deadline, abstime (flags 1)
    (memory.fill (i32.const 0x1000) (i32.const 0) (i32.const 48))
    (i64.store (i32.const 0x1000) (i64.const 7))
    (i32.store (i32.const 0x1010) (local.get $id))
    (i64.store (i32.const 0x1018) (local.get $deadline))
    (i32.store16 (i32.const 0x1028) (i32.const 1))
    (if (call $poll (i32.const 0x1000) (i32.const 0x1100) (i32.const 1) (i32.const 0x10)) (then (call $exit (i32.const 3))))
    (i64.ge_u (call $now (local.get $id)) (local.get $deadline)))
  (func (export "_start")
    (if (i32.and (call $wait_second (i32.const 0)) (call $wait_second (i32.const 1)))
      (then (call $print (i32.const 0x200) (i32.const 17)))
      (else
        (call $print (i32.const 0x220) (i32.const 15))
        (call $exit (i32.const 1))))))
