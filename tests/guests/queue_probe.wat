;; A purpose-built proxy-wasm guest for shared queues: the root context registers queue
;; "probe-q" in on_configure; each request enqueues "item" and is answered "queued";
;; proxy_on_queue_ready dequeues and logs "queue-ready: item" (so the test sees the
;; notification reached the registrant).
(module
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x10000))
  (data (i32.const 0x100) "probe-q")
  (data (i32.const 0x110) "item")
  (data (i32.const 0x120) "queued")
  (data (i32.const 0x300) "queue-ready: ")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (i32.eqz (call $register (i32.const 0x100) (i32.const 7) (i32.const 0x200))))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $enqueue (i32.load (i32.const 0x200)) (i32.const 0x110) (i32.const 4)))
    (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0x120) (i32.const 6)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
  (func (export "proxy_on_queue_ready") (param $root i32) (param $token i32)
    (if (i32.eqz (call $dequeue (local.get $token) (i32.const 0x204) (i32.const 0x208)))
      (then
        (memory.copy (i32.const 0x30d) (i32.load (i32.const 0x204)) (i32.load (i32.const 0x208)))
        (drop (call $log (i32.const 2) (i32.const 0x300) (i32.add (i32.const 13) (i32.load (i32.const 0x208))))))))
)
