;; A purpose-built proxy-wasm guest for the host's failure tests.
;;
;; Every request is answered with a local reply "requests on this VM: N" (N counts the
;; requests this instance saw, so a fresh VM starts again at 1), unless the request
;; header `x-probe` asks the guest to misbehave first:
;;   x-probe: trap   -> `unreachable` (what a Rust panic becomes)
;;   x-probe: loop   -> spins forever (stopped by the host's epoch deadline)
;;   x-probe: memory -> grows memory by 128 MiB; past the host's cap the grow fails and
;;                      the guest aborts (`unreachable`), as a Rust allocator would
(module
  (import "env" "proxy_get_header_map_value"
    (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x10000))
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 0x100) "x-probe")
  (data (i32.const 0x120) "requests on this VM: 0")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $mode i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    ;; The first byte of x-probe, 0 if absent.
    (if (i32.eqz (call $get_header (i32.const 0) (i32.const 0x100) (i32.const 7) (i32.const 0x200) (i32.const 0x204)))
      (then
        (if (i32.gt_u (i32.load (i32.const 0x204)) (i32.const 0))
          (then (local.set $mode (i32.load8_u (i32.load (i32.const 0x200))))))))
    (if (i32.eq (local.get $mode) (i32.const 116)) (then unreachable))
    (if (i32.eq (local.get $mode) (i32.const 108)) (then (loop $spin (br $spin))))
    (if (i32.eq (local.get $mode) (i32.const 109))
      (then
        (if (i32.eq (memory.grow (i32.const 2048)) (i32.const -1)) (then unreachable))))
    (i32.store8 (i32.const 0x135) (i32.add (i32.const 48) (i32.rem_u (global.get $count) (i32.const 10))))
    (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0x120) (i32.const 22)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
)
