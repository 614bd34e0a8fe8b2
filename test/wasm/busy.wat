;; Spins forever without calling the host: only an engine interrupt stops it.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $l (br $l))))
