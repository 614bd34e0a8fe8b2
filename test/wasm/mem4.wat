;; Four linear memories (multi-memory), each grown by 960 pages (60 MiB) and all of it touched
;; (a byte in every 4 KiB page of the host): 240 MiB resident in all. Exits 12 as soon as a grow is refused, 0 once it has it all.
;; (The attack of issue 16 on a container limited to 64 MiB.)
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory $m0 (export "memory") 1)
  (memory $m1 1)
  (memory $m2 1)
  (memory $m3 1)
  (func $refused (param $r i32)
    (if (i32.eq (local.get $r) (i32.const -1)) (then (call $exit (i32.const 12)))))
  (func (export "_start")
    (local $a i32)
    (call $refused (memory.grow $m0 (i32.const 960)))
    (call $refused (memory.grow $m1 (i32.const 960)))
    (call $refused (memory.grow $m2 (i32.const 960)))
    (call $refused (memory.grow $m3 (i32.const 960)))
    ;; One byte in each 4 KiB of the new pages of each memory.
    (local.set $a (i32.const 65536))
    (loop $pages
      (i32.store8 $m0 (local.get $a) (i32.const 1))
      (i32.store8 $m1 (local.get $a) (i32.const 1))
      (i32.store8 $m2 (local.get $a) (i32.const 1))
      (i32.store8 $m3 (local.get $a) (i32.const 1))
      (local.set $a (i32.add (local.get $a) (i32.const 4096)))
      (br_if $pages (i32.lt_u (local.get $a) (i32.const 62980096)))) ;; 961 pages
    (call $exit (i32.const 0))))
