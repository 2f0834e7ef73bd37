//! Thin, panic-free wrappers over the hostcalls the glue uses.
//!
//! Each wrapper turns an unexpected status into an `Err` or `None` and logs it, so a host
//! that answers oddly costs one request, not the worker's VM.

use std::time::{Duration, UNIX_EPOCH};

use detour_core::store::{Store, StoreError};
use detour_core::UnixMillis;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

/// The host's wall clock in Unix milliseconds (0 if the host cannot tell).
pub(crate) fn now_ms() -> UnixMillis {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The host's clock in nanoseconds, for seeding per-request randomness.
pub(crate) fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One header of a map, as text (lossy for non-UTF-8 bytes).
pub(crate) fn header(map: MapType, name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(map, name) {
        Ok(Some(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(None) => None,
        Err(status) => {
            log::debug!("detour: reading header {name} failed: {status:?}");
            None
        }
    }
}

/// Every header of a map, values as text (lossy for non-UTF-8 bytes).
pub(crate) fn headers(map: MapType) -> Vec<(String, String)> {
    match hostcalls::get_map_bytes(map) {
        Ok(pairs) => pairs
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
        Err(status) => {
            log::debug!("detour: reading headers failed: {status:?}");
            Vec::new()
        }
    }
}

/// A property as text (`response.code_details`, …), `None` when absent or unreadable.
pub(crate) fn property(path: &[&str]) -> Option<String> {
    match hostcalls::get_property(path.to_vec()) {
        Ok(Some(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(None) => None,
        Err(status) => {
            log::debug!("detour: reading property {path:?} failed: {status:?}");
            None
        }
    }
}

/// Sets (or with `None` removes) one header.
pub(crate) fn set_header(map: MapType, name: &str, value: Option<&str>) {
    if let Err(status) = hostcalls::set_map_value(map, name, value) {
        log::warn!("detour: setting header {name} failed: {status:?}");
    }
}

/// The first `max` bytes of a buffer.
pub(crate) fn buffer(kind: BufferType, size: usize, max: usize) -> Vec<u8> {
    match hostcalls::get_buffer(kind, 0, size.min(max)) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => Vec::new(),
        Err(status) => {
            log::warn!("detour: reading a body failed: {status:?}");
            Vec::new()
        }
    }
}

/// Replaces the first `size` bytes of a buffer with `value`.
pub(crate) fn set_buffer(kind: BufferType, size: usize, value: &[u8]) {
    if let Err(status) = hostcalls::set_buffer(kind, 0, size, value) {
        log::warn!("detour: replacing a body failed: {status:?}");
    }
}

/// Sends a local response on the effective HTTP context.
pub(crate) fn send_response(status: u16, headers: &[(String, String)], body: &[u8]) {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(err) = hostcalls::send_http_response(u32::from(status), pairs, Some(body)) {
        log::warn!("detour: sending a local response failed: {err:?}");
    }
}

/// Starts an HTTP call; the answer arrives in `on_http_call_response` with the token.
pub(crate) fn dispatch(
    cluster: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout_ms: u64,
) -> Result<u32, Status> {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hostcalls::dispatch_http_call(
        cluster,
        pairs,
        Some(body),
        Vec::new(),
        Duration::from_millis(timeout_ms),
    )
}

/// Makes `context_id` the context later hostcalls act on.
pub(crate) fn set_effective_context(context_id: u32) -> bool {
    match hostcalls::set_effective_context(context_id) {
        Ok(()) => true,
        Err(status) => {
            log::debug!("detour: context {context_id} is gone: {status:?}");
            false
        }
    }
}

/// proxy-wasm shared data as the core's [`Store`]: one namespace per `vm_id`, shared by
/// every worker, CAS on every write.
pub(crate) struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(bytes), Some(cas))) => Ok(Some((bytes, cas))),
            // ABI 0.2.1 has no delete: a "removed" key reads as empty bytes with a CAS.
            Ok((None, Some(cas))) => Ok(Some((Vec::new(), cas))),
            Ok((_, None)) => Ok(None),
            Err(status) => Err(StoreError::Backend {
                message: format!("get_shared_data: {status:?}"),
                transient: true,
            }),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(status) => Err(StoreError::Backend {
                message: format!("set_shared_data: {status:?}"),
                transient: true,
            }),
        }
    }
}
