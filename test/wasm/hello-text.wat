;; Prints "hello from wat" and exits 0. Shipped in the tools image as WAT text
;; (/hello.wat, not compiled), so the shim must recognise and compile text modules.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wat\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) ;; iov.buf
    (i32.store (i32.const 4) (i32.const 15)) ;; iov.len
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
