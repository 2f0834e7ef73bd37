;; A purpose-built proxy-wasm guest that exercises shared data exactly as detour's
;; filter relies on it, and answers the request with what the host said:
;;
;;   "cas-probe " then one character per check, in this order:
;;   1 get(k) of a missing key            -> status (1 = NOT_FOUND)
;;   2 set(k, "v1", cas 0)                -> status (0 = OK)
;;   3 get(k)                             -> status (0)
;;   4 ... its value is "v1"              -> 1
;;   5 set(k, "v2", cas c1 + 1)  (stale)  -> status (8 = CAS_MISMATCH)
;;   6 set(k, "v2", cas c1)               -> status (0)
;;   7 get(k)                             -> status (0)
;;   8 ... its CAS is c1 + 1 (one process-wide counter, no other writer) -> 1
;;   9 set(k2, "v1", cas 12345) on a missing key (CAS ignored) -> status (0)
;;  10 set(k, "", cas 0) ("remove")       -> status (0)
;;  11 get(k)                             -> status (0)
;;  12 ... its value is empty             -> 1
;;  13 c1 is not 0                        -> 1
;;
;; Expected on Envoy and on detour serve alike: "cas-probe 1001800100011". It is
;; meaningful once per process (the first request): later requests see the keys there.
(module
  (import "env" "proxy_get_shared_data"
    (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data"
    (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x10000))
  (data (i32.const 0x100) "cas-probe-k")
  (data (i32.const 0x110) "cas-probe-k2")
  (data (i32.const 0x120) "v1")
  (data (i32.const 0x130) "v2")
  (data (i32.const 0x300) "cas-probe ")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  ;; Writes check $i (0-based) as the character '0' + $v.
  (func $put (param $i i32) (param $v i32)
    (i32.store8 (i32.add (i32.const 0x30a) (local.get $i)) (i32.add (i32.const 48) (local.get $v))))
  (func $get_k (result i32)
    (call $get (i32.const 0x100) (i32.const 11) (i32.const 0x200) (i32.const 0x204) (i32.const 0x208)))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $c1 i32)
    (call $put (i32.const 0) (call $get_k))
    (call $put (i32.const 1)
      (call $set (i32.const 0x100) (i32.const 11) (i32.const 0x120) (i32.const 2) (i32.const 0)))
    (call $put (i32.const 2) (call $get_k))
    (local.set $c1 (i32.load (i32.const 0x208)))
    (call $put (i32.const 3)
      (i32.and (i32.eq (i32.load (i32.const 0x204)) (i32.const 2))
               (i32.eq (i32.load16_u (i32.load (i32.const 0x200))) (i32.const 0x3176))))
    (call $put (i32.const 4)
      (call $set (i32.const 0x100) (i32.const 11) (i32.const 0x130) (i32.const 2)
                 (i32.add (local.get $c1) (i32.const 1))))
    (call $put (i32.const 5)
      (call $set (i32.const 0x100) (i32.const 11) (i32.const 0x130) (i32.const 2) (local.get $c1)))
    (call $put (i32.const 6) (call $get_k))
    (call $put (i32.const 7)
      (i32.eq (i32.load (i32.const 0x208)) (i32.add (local.get $c1) (i32.const 1))))
    (call $put (i32.const 8)
      (call $set (i32.const 0x110) (i32.const 12) (i32.const 0x120) (i32.const 2) (i32.const 12345)))
    (call $put (i32.const 9)
      (call $set (i32.const 0x100) (i32.const 11) (i32.const 0x120) (i32.const 0) (i32.const 0)))
    (call $put (i32.const 10) (call $get_k))
    (call $put (i32.const 11) (i32.eqz (i32.load (i32.const 0x204))))
    (call $put (i32.const 12) (i32.ne (local.get $c1) (i32.const 0)))
    (drop (call $log (i32.const 2) (i32.const 0x300) (i32.const 23)))
    (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0x300) (i32.const 23)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
)
