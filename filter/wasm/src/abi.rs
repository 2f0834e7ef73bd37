//! The glue's own proxy-wasm ABI 0.2.1 bindings: `extern "C"` imports from module `env`
//! and a safe wrapper for each that never panics.
//!
//! Why not `proxy_wasm::hostcalls`: the SDK's wrappers `panic!("unexpected status")` on
//! most statuses they do not expect (Envoy answers `BAD_ARGUMENT` when a header map is not
//! available in the current phase, for instance), and they declare the status as a Rust
//! enum that has no value for 6 or 12, so a host returning those is undefined behaviour
//! before any `match` runs. Here every import returns a plain `u32`, every status has a
//! value ([`Status::Other`] for codes the ABI does not name), and data the host returns is
//! parsed with bounds checks ([`Status::Malformed`] instead of a slice panic).
//!
//! Memory handling mirrors the SDK exactly: the host allocates returned data through the
//! guest's exported allocator (`proxy_on_memory_allocate`, exported by the SDK, which hands
//! out a boxed slice of exactly the requested size), and the guest takes ownership with
//! `Vec::from_raw_parts(ptr, len, len)`. Maps use the ABI's serialization (little-endian
//! `u32` count, `count` pairs of `u32` lengths, then each key and value followed by NUL).
//!
//! One call stays on the SDK: `proxy_http_call`. The SDK's dispatcher must learn every
//! call token (`register_callout`, which is crate-private) or it panics with "invalid
//! token_id" when the answer arrives, so [`http_call`] goes through
//! `proxy_wasm::hostcalls::dispatch_http_call`. That wrapper accepts `OK`, `BAD_ARGUMENT`
//! and `INTERNAL_FAILURE` (the statuses the spec allows and Envoy returns); any other
//! status still panics inside the SDK. That residual risk is documented in
//! `ARCHITECTURE.md` ("Panics").
//!
//! This is the only module of the glue with `unsafe` code or `proxy_wasm::hostcalls`
//! calls (a tidy test in `lib.rs` checks it).

#![expect(
    unsafe_code,
    reason = "calling the host's imported functions is FFI; each unsafe block says why it is sound"
)]

use std::ptr::{null, null_mut};
use std::time::Duration;

use proxy_wasm::types::{BufferType, MapType, MetricType};

/// Why a hostcall did not succeed. `OK` is never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    InvalidMemoryAccess,
    Empty,
    CasMismatch,
    InternalFailure,
    Unimplemented,
    /// A status code the ABI does not name.
    Other(u32),
    /// The host said `OK` but returned data that does not parse (a map whose lengths run
    /// past its end, say).
    Malformed,
}

const OK: u32 = 0;

impl Status {
    /// The ABI status code as a result: `Ok(())` for 0, the named error otherwise.
    fn check(code: u32) -> Result<(), Status> {
        match code {
            OK => Ok(()),
            1 => Err(Status::NotFound),
            2 => Err(Status::BadArgument),
            3 => Err(Status::SerializationFailure),
            4 => Err(Status::ParseFailure),
            6 => Err(Status::InvalidMemoryAccess),
            7 => Err(Status::Empty),
            8 => Err(Status::CasMismatch),
            10 => Err(Status::InternalFailure),
            12 => Err(Status::Unimplemented),
            other => Err(Status::Other(other)),
        }
    }

    /// The SDK's status, for errors of the one call still made through the SDK.
    fn from_sdk(status: proxy_wasm::types::Status) -> Status {
        Status::check(status as u32)
            .err()
            .unwrap_or(Status::Other(0))
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period_ms: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

/// Takes ownership of bytes the host returned through the guest allocator.
///
/// `None` for a null pointer (the host had nothing to return). A zero length gives an
/// empty vector without touching the pointer (cpp-host writes 0/0 then, and a zero-size
/// allocation owns no memory, so leaving it costs nothing).
///
/// # Safety
///
/// A non-null `ptr` with a non-zero `len` must come from `proxy_on_memory_allocate(len)`
/// (the SDK's allocator, which returns a boxed `[u8]` of exactly `len` bytes) and must not
/// be owned by anything else: the contract of every ABI call that returns data.
unsafe fn take_returned(ptr: *mut u8, len: usize) -> Option<Vec<u8>> {
    if ptr.is_null() {
        return None;
    }
    if len == 0 {
        return Some(Vec::new());
    }
    // SAFETY: by this function's contract `ptr` is the start of an allocation of exactly
    // `len` bytes made by the global allocator for a `[u8]` (align 1), initialised by the
    // host, and owned by nobody else; that is what `from_raw_parts(ptr, len, len)` needs,
    // and it is exactly what the SDK does with the same memory.
    Some(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// The host's wall clock, in nanoseconds since the Unix epoch.
pub(crate) fn current_time_nanos() -> Result<u64, Status> {
    let mut nanos: u64 = 0;
    // SAFETY: the out-pointer is a live, aligned, writable u64 for the whole call.
    let code = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    Status::check(code).map(|()| nanos)
}

/// Sets the root context's tick period (0 stops the tick).
pub(crate) fn set_tick_period_ms(period_ms: u32) -> Result<(), Status> {
    // SAFETY: no pointers; the host only reads the integer.
    Status::check(unsafe { proxy_set_tick_period_milliseconds(period_ms) })
}

/// Up to `max_size` bytes of a buffer from `start`; `None` when the buffer is absent.
pub(crate) fn get_buffer(
    kind: BufferType,
    start: usize,
    max_size: usize,
) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: both out-pointers are live, aligned and writable for the whole call.
    let code =
        unsafe { proxy_get_buffer_bytes(kind as u32, start, max_size, &mut data, &mut size) };
    match Status::check(code) {
        // SAFETY: on OK the host returned `data`/`size` through the guest allocator and
        // handed ownership to us (ABI contract); nothing else holds the pointer.
        Ok(()) => Ok(unsafe { take_returned(data, size) }),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Replaces `size` bytes of a buffer from `start` with `value`.
pub(crate) fn set_buffer(
    kind: BufferType,
    start: usize,
    size: usize,
    value: &[u8],
) -> Result<(), Status> {
    // SAFETY: `value` is a live slice; the host only reads `value.len()` bytes from it
    // during the call.
    Status::check(unsafe {
        proxy_set_buffer_bytes(kind as u32, start, size, value.as_ptr(), value.len())
    })
}

/// Every pair of a header map (names lossily decoded, values as bytes).
pub(crate) fn get_map(map: MapType) -> Result<Vec<(String, Vec<u8>)>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: both out-pointers are live, aligned and writable for the whole call.
    let code = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    Status::check(code)?;
    // SAFETY: on OK the host returned the serialized map through the guest allocator and
    // handed ownership to us (ABI contract).
    match unsafe { take_returned(data, size) } {
        Some(bytes) => deserialize_map(&bytes),
        None => Ok(Vec::new()),
    }
}

/// One header's value; `None` when absent.
pub(crate) fn get_map_value(map: MapType, key: &str) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: `key` is a live slice the host only reads during the call; both
    // out-pointers are live, aligned and writable.
    let code = unsafe {
        proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut data, &mut size)
    };
    match Status::check(code) {
        // SAFETY: on OK the host returned the value through the guest allocator and handed
        // ownership to us. A null pointer with OK is an empty value (as the SDK reads it).
        Ok(()) => Ok(Some(
            unsafe { take_returned(data, size) }.unwrap_or_default(),
        )),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Sets one header, replacing any value it had.
pub(crate) fn replace_map_value(map: MapType, key: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: `key` and `value` are live slices the host only reads during the call.
    Status::check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes one header (OK when it was absent).
pub(crate) fn remove_map_value(map: MapType, key: &str) -> Result<(), Status> {
    // SAFETY: `key` is a live slice the host only reads during the call.
    Status::check(unsafe { proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()) })
}

/// Sends a local response on the effective HTTP context (no details, no gRPC status).
pub(crate) fn send_local_response(
    status_code: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Status> {
    let serialized = serialize_map(headers)?;
    // SAFETY: `body` and `serialized` are live slices the host only reads during the
    // call; a null details pointer with length 0 is what the SDK sends too.
    Status::check(unsafe {
        proxy_send_local_response(
            status_code,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    })
}

/// Starts an HTTP call and registers its token with the SDK's dispatcher (see the module
/// doc for why this one goes through the SDK, and what can still panic there).
pub(crate) fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> Result<u32, Status> {
    proxy_wasm::hostcalls::dispatch_http_call(
        cluster,
        headers.to_vec(),
        Some(body),
        Vec::new(),
        Duration::from_millis(u64::from(timeout_ms)),
    )
    .map_err(Status::from_sdk)
}

/// Makes `context_id` the context later hostcalls act on.
pub(crate) fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no pointers; the host only reads the integer.
    Status::check(unsafe { proxy_set_effective_context(context_id) })
}

/// A property by path (`["response", "code_details"]`); `None` when absent.
pub(crate) fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let serialized = path.join("\0");
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: `serialized` is a live string the host only reads during the call; both
    // out-pointers are live, aligned and writable.
    let code =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    match Status::check(code) {
        // SAFETY: on OK the host returned the value through the guest allocator and handed
        // ownership to us (ABI contract).
        Ok(()) => Ok(unsafe { take_returned(data, size) }),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// A shared-data value and its CAS token; `None` when the key does not exist.
///
/// A key whose value was set to nothing reads as empty bytes with its CAS (ABI 0.2.1 has
/// no delete).
pub(crate) fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: `key` is a live slice the host only reads during the call; the three
    // out-pointers are live, aligned and writable.
    let code =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match Status::check(code) {
        Ok(()) => {
            // SAFETY: on OK the host returned the value through the guest allocator and
            // handed ownership to us (ABI contract). Taken before looking at `cas` so it
            // is freed on every path.
            let bytes = unsafe { take_returned(data, size) }.unwrap_or_default();
            Ok((cas != 0).then_some((bytes, cas)))
        }
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Sets a shared-data value; with `Some(cas)` only if the key's CAS still matches
/// ([`Status::CasMismatch`] otherwise).
pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: `key` and `value` are live slices the host only reads during the call.
    Status::check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Defines (or finds) a metric; its id.
pub(crate) fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id: u32 = 0;
    // SAFETY: `name` is a live slice the host only reads during the call; the
    // out-pointer is live, aligned and writable.
    let code = unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
    Status::check(code).map(|()| id)
}

/// Adds `offset` to a counter or gauge.
pub(crate) fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: no pointers; the host only reads the integers.
    Status::check(unsafe { proxy_increment_metric(id, offset) })
}

/// Sets a gauge or records a histogram value.
pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no pointers; the host only reads the integers.
    Status::check(unsafe { proxy_record_metric(id, value) })
}

/// Serializes header pairs in the ABI's map format. [`Status::BadArgument`] if a count or
/// length does not fit the format's `u32` (impossible on wasm32, checked anyway).
fn serialize_map(pairs: &[(&str, &str)]) -> Result<Vec<u8>, Status> {
    let len_u32 = |n: usize| u32::try_from(n).map_err(|_| Status::BadArgument);
    let capacity = pairs.iter().fold(4usize, |size, (k, v)| {
        size.saturating_add(k.len())
            .saturating_add(v.len())
            .saturating_add(10)
    });
    let mut bytes = Vec::with_capacity(capacity);
    bytes.extend_from_slice(&len_u32(pairs.len())?.to_le_bytes());
    for (key, value) in pairs {
        bytes.extend_from_slice(&len_u32(key.len())?.to_le_bytes());
        bytes.extend_from_slice(&len_u32(value.len())?.to_le_bytes());
    }
    for (key, value) in pairs {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    Ok(bytes)
}

/// Parses a serialized map, bounds-checked: any length that runs past the end, or a
/// missing NUL terminator, is [`Status::Malformed`]. Empty input is an empty map. Names
/// are decoded lossily (a non-UTF-8 name cannot panic the filter).
fn deserialize_map(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Status> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let u32_at = |at: usize| -> Result<usize, Status> {
        let end = at.checked_add(4).ok_or(Status::Malformed)?;
        let word = bytes
            .get(at..end)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .ok_or(Status::Malformed)?;
        usize::try_from(u32::from_le_bytes(word)).map_err(|_| Status::Malformed)
    };
    let count = u32_at(0)?;
    // Each pair needs 8 bytes of lengths and 2 NULs: a count the input cannot hold is
    // malformed, and never sizes an allocation.
    let mut data_at = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .filter(|&n| n <= bytes.len())
        .ok_or(Status::Malformed)?;
    let mut pairs = Vec::with_capacity(count.min(bytes.len() / 10));
    let mut take = |len: usize| -> Result<&[u8], Status> {
        let end = data_at.checked_add(len).ok_or(Status::Malformed)?;
        let field = bytes.get(data_at..end).ok_or(Status::Malformed)?;
        if bytes.get(end) != Some(&0) {
            return Err(Status::Malformed);
        }
        data_at = end.checked_add(1).ok_or(Status::Malformed)?;
        Ok(field)
    };
    for n in 0..count {
        let lengths_at = n
            .checked_mul(8)
            .and_then(|o| o.checked_add(4))
            .ok_or(Status::Malformed)?;
        let key_len = u32_at(lengths_at)?;
        let value_len = u32_at(lengths_at.checked_add(4).ok_or(Status::Malformed)?)?;
        let key = String::from_utf8_lossy(take(key_len)?).into_owned();
        let value = take(value_len)?.to_vec();
        pairs.push((key, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip() {
        let pairs = [(":status", "200"), ("x-a", ""), ("", "v")];
        let bytes = serialize_map(&pairs).unwrap();
        let back = deserialize_map(&bytes).unwrap();
        let expected: Vec<(String, Vec<u8>)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(back, expected);
        assert_eq!(serialize_map(&[]).unwrap(), vec![0, 0, 0, 0]);
        assert_eq!(deserialize_map(&[]).unwrap(), vec![]);
        assert_eq!(deserialize_map(&[0, 0, 0, 0]).unwrap(), vec![]);
    }

    #[test]
    fn the_sdks_reference_map_parses() {
        // proxy-wasm-rust-sdk's SERIALIZED_MAP test vector.
        let mut bytes = vec![2, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0];
        bytes.extend_from_slice(b":method\0GET\0:path\0/bytes/1\0");
        let map = deserialize_map(&bytes).unwrap();
        assert_eq!(map[0], (":method".to_string(), b"GET".to_vec()));
        assert_eq!(map[1], (":path".to_string(), b"/bytes/1".to_vec()));
    }

    #[test]
    fn malformed_maps_are_errors_not_panics() {
        let good = serialize_map(&[("a", "b"), ("key", "value")]).unwrap();
        // Every truncation, and a few corruptions, of a good map.
        for cut in 1..good.len() {
            assert_eq!(
                deserialize_map(&good[..cut]),
                Err(Status::Malformed),
                "cut {cut}"
            );
        }
        for bad in [
            vec![1],
            vec![255, 255, 255, 255],
            vec![1, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 0],
            vec![1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'a', 1, b'b', 0],
        ] {
            assert_eq!(deserialize_map(&bad), Err(Status::Malformed), "{bad:?}");
        }
        // Non-UTF-8 names decode lossily.
        let raw = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0, 0xfe, 0];
        assert_eq!(
            deserialize_map(&raw).unwrap(),
            vec![("\u{fffd}".to_string(), vec![0xfe])]
        );
    }

    #[test]
    fn every_status_code_has_a_value() {
        assert_eq!(Status::check(0), Ok(()));
        assert_eq!(Status::check(8), Err(Status::CasMismatch));
        assert_eq!(Status::check(6), Err(Status::InvalidMemoryAccess));
        assert_eq!(Status::check(12), Err(Status::Unimplemented));
        assert_eq!(Status::check(5), Err(Status::Other(5)));
        assert_eq!(Status::check(u32::MAX), Err(Status::Other(u32::MAX)));
    }
}
