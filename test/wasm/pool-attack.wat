;; A hostile tenant of a run pool (test/e2e/attack-pool.test.ts): what it does is the first
;; letter of its first argument. Each result it prints is one line "<letter> <number>...".
;;   a  sleeps 50 ms (poll_oneoff) with its events' pointer past its memory; prints the errno
;;   b  the same with its nevents pointer past its memory
;;   c  fd_write(1) with 2^32-1 iovecs; prints the errno
;;   d  one fd_write(1) of 4096 iovecs, each the whole first page (256 MiB asked from a 128 KiB
;;      memory); prints "d <errno> <nwritten>" on stderr
;;   e  fd_write(1) of one iovec past its memory; prints the errno
;;   f  poll_oneoff with 2^32-1 subscriptions; prints the errno
;;   g  sleeps 2^64-1 ns (relative): for ever
;;   h  recurses without end (stack overflow)
;;   i  sleeps 0 ns in a loop, for ever (a host call that answers at once)
;;   j  fd_read(0) whose nread pointer is past its memory, once input comes; prints the errno
;;   k  clock_time_get and sched_yield in a loop, for ever (host calls that never park)
;;   l  fd_write to every fd from 3 to 1023; prints how many did not fail
;;   m  grows its memory a page at a time until refused; prints its pages then; exits 0
;;   n  prints "n <i>" for i = 1..50, 5 ms apart, and exits 0 (a neighbour that finishes)
;;   o  polls an absolute realtime clock of 2^64-1 ns (the far future); prints the errno
;; Anything else: exit 2.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $yield (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  ;; Page 0: 0x10 nevents, 0x14 nwritten, 0x18 nread, 0x20 a clock's time, 0x100 the print
  ;; iovec, 0x200 the line being printed, 0x300 a read's buffer, 0x400 argv, 0x500 argv's
  ;; bytes, 0x1000 a subscription, 0x1100 events. Page 1: the iovecs of mode d.
  (memory (export "memory") 2)
  (global $at (mut i32) (i32.const 0x200))

  ;; The line being built: a byte, a number in decimal.
  (func $byte (param $b i32)
    (i32.store8 (global.get $at) (local.get $b))
    (global.set $at (i32.add (global.get $at) (i32.const 1))))
  (func $num (param $n i32)
    (if (i32.ge_u (local.get $n) (i32.const 10))
      (then (call $num (i32.div_u (local.get $n) (i32.const 10)))))
    (call $byte (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10)))))
  ;; Writes the line (with a newline) to `fd` and starts a new one.
  (func $flush (param $fd i32)
    (call $byte (i32.const 10))
    (i32.store (i32.const 0x100) (i32.const 0x200))
    (i32.store (i32.const 0x104) (i32.sub (global.get $at) (i32.const 0x200)))
    (drop (call $write (local.get $fd) (i32.const 0x100) (i32.const 1) (i32.const 0x14)))
    (global.set $at (i32.const 0x200)))
  (func $say (param $letter i32) (param $n i32)
    (call $byte (local.get $letter))
    (call $byte (i32.const 32))
    (call $num (local.get $n))
    (call $flush (i32.const 1)))

  ;; A relative clock subscription of `ns` at 0x1000.
  (func $clock_sub (param $ns i64)
    (memory.fill (i32.const 0x1000) (i32.const 0) (i32.const 48))
    (i32.store (i32.const 0x1010) (i32.const 1)) ;; monotonic
    (i64.store (i32.const 0x1018) (local.get $ns)))

  (func $recurse (param $n i32) (result i32)
    (i32.add (i32.const 1) (call $recurse (i32.add (local.get $n) (i32.const 1)))))

  (func $mode (result i32)
    (drop (call $args_sizes (i32.const 0x10) (i32.const 0x14)))
    (if (i32.lt_u (i32.load (i32.const 0x10)) (i32.const 2)) (then (return (i32.const 0))))
    (drop (call $args_get (i32.const 0x400) (i32.const 0x500)))
    (i32.load8_u (i32.load (i32.const 0x404))))

  (func (export "_start")
    (local $m i32) (local $i i32) (local $n i32)
    (local.set $m (call $mode))
    (if (i32.eq (local.get $m) (i32.const 97)) ;; a
      (then
        (call $clock_sub (i64.const 50000000))
        (call $say (i32.const 97) (call $poll (i32.const 0x1000) (i32.const 0x7ffffff0) (i32.const 1) (i32.const 0x10)))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 98)) ;; b
      (then
        (call $clock_sub (i64.const 50000000))
        (call $say (i32.const 98) (call $poll (i32.const 0x1000) (i32.const 0x1100) (i32.const 1) (i32.const 0x7ffffff0)))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 99)) ;; c
      (then
        (call $say (i32.const 99) (call $write (i32.const 1) (i32.const 0x10000) (i32.const -1) (i32.const 0x14)))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 100)) ;; d
      (then
        (loop $fill
          (i32.store (i32.add (i32.const 0x10000) (i32.shl (local.get $i) (i32.const 3))) (i32.const 0))
          (i32.store (i32.add (i32.const 0x10004) (i32.shl (local.get $i) (i32.const 3))) (i32.const 0x10000))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $fill (i32.lt_u (local.get $i) (i32.const 4096))))
        (local.set $n (call $write (i32.const 1) (i32.const 0x10000) (i32.const 4096) (i32.const 0x14)))
        (call $byte (i32.const 100))
        (call $byte (i32.const 32))
        (call $num (local.get $n))
        (call $byte (i32.const 32))
        (call $num (i32.load (i32.const 0x14)))
        (call $flush (i32.const 2))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 101)) ;; e
      (then
        (i32.store (i32.const 0x20) (i32.const 0xffffff00))
        (i32.store (i32.const 0x24) (i32.const 0x1000))
        (call $say (i32.const 101) (call $write (i32.const 1) (i32.const 0x20) (i32.const 1) (i32.const 0x14)))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 102)) ;; f
      (then
        (call $clock_sub (i64.const 1000000))
        (call $say (i32.const 102) (call $poll (i32.const 0x1000) (i32.const 0x1100) (i32.const -1) (i32.const 0x10)))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 103)) ;; g
      (then
        (call $clock_sub (i64.const -1))
        (call $say (i32.const 103) (call $poll (i32.const 0x1000) (i32.const 0x1100) (i32.const 1) (i32.const 0x10)))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 104)) ;; h
      (then
        (call $say (i32.const 104) (call $recurse (i32.const 0)))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 105)) ;; i
      (then
        (call $clock_sub (i64.const 0))
        (loop $spin
          (drop (call $poll (i32.const 0x1000) (i32.const 0x1100) (i32.const 1) (i32.const 0x10)))
          (br $spin))))
    (if (i32.eq (local.get $m) (i32.const 106)) ;; j
      (then
        (i32.store (i32.const 0x20) (i32.const 0x300))
        (i32.store (i32.const 0x24) (i32.const 16))
        (call $say (i32.const 106) (call $read (i32.const 0) (i32.const 0x20) (i32.const 1) (i32.const 0x7ffffff0)))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 107)) ;; k
      (then
        (loop $spin
          (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 0x20)))
          (drop (call $yield))
          (br $spin))))
    (if (i32.eq (local.get $m) (i32.const 108)) ;; l
      (then
        (i32.store (i32.const 0x20) (i32.const 0x200))
        (i32.store (i32.const 0x24) (i32.const 1))
        (local.set $i (i32.const 3))
        (loop $fds
          (if (i32.eqz (call $write (local.get $i) (i32.const 0x20) (i32.const 1) (i32.const 0x14)))
            (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $fds (i32.lt_u (local.get $i) (i32.const 1024))))
        (call $say (i32.const 108) (local.get $n))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 109)) ;; m
      (then
        (loop $grow
          (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        (call $say (i32.const 109) (memory.size))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 110)) ;; n
      (then
        (call $clock_sub (i64.const 5000000))
        (local.set $i (i32.const 1))
        (loop $lines
          (drop (call $poll (i32.const 0x1000) (i32.const 0x1100) (i32.const 1) (i32.const 0x10)))
          (call $say (i32.const 110) (local.get $i))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $lines (i32.le_u (local.get $i) (i32.const 50))))
        (return)))
    (if (i32.eq (local.get $m) (i32.const 111)) ;; o
      (then
        (call $clock_sub (i64.const -1))
        (i32.store (i32.const 0x1010) (i32.const 0)) ;; realtime
        (i32.store16 (i32.const 0x1028) (i32.const 1)) ;; subclockflags: abstime
        (call $say (i32.const 111) (call $poll (i32.const 0x1000) (i32.const 0x1100) (i32.const 1) (i32.const 0x10)))
        (return)))
    (call $exit (i32.const 2))))
