;; A purpose-built proxy-wasm guest that makes one `proxy_http_call` per request to the
;; cluster named by the request header `x-probe-cluster` (GET /, timeout 1000 ms) and
;; answers with what the host said:
;;   "dispatch=N"                   when proxy_http_call itself returned status N;
;;   "<headers>;<:status>;<body>"   from proxy_on_http_call_response otherwise
;;                                  (headers = the number of response headers, 0-9).
;; Run on Envoy and on detour serve, the answers must be the same.
(module
  (import "env" "proxy_get_header_map_value"
    (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes"
    (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_effective (param i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x10000))
  (global $stream (mut i32) (i32.const 0))
  (data (i32.const 0x100) "x-probe-cluster")
  ;; Request headers as serialized pairs: :method GET, :path /, :authority probe (65 bytes).
  (data (i32.const 0x400)
    "\03\00\00\00"
    "\07\00\00\00\03\00\00\00" "\05\00\00\00\01\00\00\00" "\0a\00\00\00\05\00\00\00"
    ":method\00GET\00:path\00/\00:authority\00probe\00")
  (data (i32.const 0x500) ":status")
  (data (i32.const 0x600) "dispatch=")
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
    (local $status i32)
    (global.set $stream (local.get $ctx))
    (drop (call $get_header (i32.const 0) (i32.const 0x100) (i32.const 15) (i32.const 0x200) (i32.const 0x204)))
    (local.set $status
      (call $http_call (i32.load (i32.const 0x200)) (i32.load (i32.const 0x204))
                       (i32.const 0x400) (i32.const 65) (i32.const 0) (i32.const 0)
                       (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 0x210)))
    (if (local.get $status)
      (then
        (i32.store8 (i32.const 0x609) (i32.add (i32.const 48) (local.get $status)))
        (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0x600) (i32.const 10)
                           (i32.const 0) (i32.const 0) (i32.const -1)))))
    (i32.const 1))
  (func (export "proxy_on_http_call_response")
        (param $root i32) (param $token i32) (param $headers i32) (param $body i32) (param $trailers i32)
    (local $at i32)
    (drop (call $set_effective (global.get $stream)))
    (i32.store8 (i32.const 0x800) (i32.add (i32.const 48) (local.get $headers)))
    (i32.store8 (i32.const 0x801) (i32.const 59))
    (local.set $at (i32.const 0x802))
    (if (i32.gt_u (local.get $headers) (i32.const 0))
      (then
        (if (i32.eqz (call $get_header (i32.const 6) (i32.const 0x500) (i32.const 7) (i32.const 0x200) (i32.const 0x204)))
          (then
            (memory.copy (local.get $at) (i32.load (i32.const 0x200)) (i32.load (i32.const 0x204)))
            (local.set $at (i32.add (local.get $at) (i32.load (i32.const 0x204))))))))
    (i32.store8 (local.get $at) (i32.const 59))
    (local.set $at (i32.add (local.get $at) (i32.const 1)))
    (i32.store (i32.const 0x204) (i32.const 0))
    (if (i32.gt_u (local.get $body) (i32.const 0))
      (then
        (drop (call $get_buffer (i32.const 4) (i32.const 0) (local.get $body) (i32.const 0x200) (i32.const 0x204)))
        (memory.copy (local.get $at) (i32.load (i32.const 0x200)) (i32.load (i32.const 0x204)))
        (local.set $at (i32.add (local.get $at) (i32.load (i32.const 0x204))))))
    (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0x800)
                       (i32.sub (local.get $at) (i32.const 0x800)) (i32.const 0) (i32.const 0) (i32.const -1))))
)
