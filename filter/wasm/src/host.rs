//! Thin, panic-free wrappers over the hostcalls the glue uses, on the glue's own ABI
//! bindings ([`crate::abi`]).
//!
//! Each wrapper turns an unexpected status into an `Err` or `None` and logs it, so a host
//! that answers oddly costs one request, not the worker's VM.

use detour_core::store::{Store, StoreError};
use detour_core::UnixMillis;
use proxy_wasm::types::{BufferType, MapType};

use crate::abi::{self, Status};

/// The host's wall clock in Unix milliseconds (0 if the host cannot tell).
pub(crate) fn now_ms() -> UnixMillis {
    now_nanos() / 1_000_000
}

/// The host's clock in nanoseconds, for seeding per-request randomness (0 if the host
/// cannot tell).
pub(crate) fn now_nanos() -> u64 {
    abi::current_time_nanos().unwrap_or(0)
}

/// One header of a map, as text (lossy for non-UTF-8 bytes).
pub(crate) fn header(map: MapType, name: &str) -> Option<String> {
    match abi::get_map_value(map, name) {
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
    match abi::get_map(map) {
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
    match abi::get_property(path) {
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
    let result = match value {
        Some(value) => abi::replace_map_value(map, name, value.as_bytes()),
        None => abi::remove_map_value(map, name),
    };
    if let Err(status) = result {
        log::warn!("detour: setting header {name} failed: {status:?}");
    }
}

/// The first `max` bytes of a buffer.
pub(crate) fn buffer(kind: BufferType, size: usize, max: usize) -> Vec<u8> {
    match abi::get_buffer(kind, 0, size.min(max)) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => Vec::new(),
        Err(status) => {
            log::warn!("detour: reading a body failed: {status:?}");
            Vec::new()
        }
    }
}

/// The whole plugin configuration; `None` (logged) when the host cannot give it.
pub(crate) fn plugin_configuration(size: usize) -> Option<Vec<u8>> {
    match abi::get_buffer(BufferType::PluginConfiguration, 0, size) {
        Ok(bytes) => Some(bytes.unwrap_or_default()),
        Err(status) => {
            log::error!("detour: cannot read the plugin configuration: {status:?}");
            None
        }
    }
}

/// Replaces the first `size` bytes of a buffer with `value`.
pub(crate) fn set_buffer(kind: BufferType, size: usize, value: &[u8]) {
    if let Err(status) = abi::set_buffer(kind, 0, size, value) {
        log::warn!("detour: replacing a body failed: {status:?}");
    }
}

/// Sends a local response on the effective HTTP context.
pub(crate) fn send_response(status: u16, headers: &[(String, String)], body: &[u8]) {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(err) = abi::send_local_response(u32::from(status), &pairs, body) {
        log::warn!("detour: sending a local response failed: {err:?}");
    }
}

/// Starts an HTTP call; the answer arrives in `on_http_call_response` with the token.
/// A timeout beyond `u32::MAX` ms (49 days) is clamped, never truncated.
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
    let timeout_ms = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
    abi::http_call(cluster, &pairs, body, timeout_ms)
}

/// Makes `context_id` the context later hostcalls act on.
pub(crate) fn set_effective_context(context_id: u32) -> bool {
    match abi::set_effective_context(context_id) {
        Ok(()) => true,
        Err(status) => {
            log::debug!("detour: context {context_id} is gone: {status:?}");
            false
        }
    }
}

/// Starts (or changes) the root context's tick.
pub(crate) fn set_tick_period_ms(period_ms: u32) -> Result<(), Status> {
    abi::set_tick_period_ms(period_ms)
}

/// proxy-wasm shared data as the core's [`Store`]: one namespace per `vm_id`, shared by
/// every worker, CAS on every write.
pub(crate) struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        // ABI 0.2.1 has no delete: a "removed" key reads as empty bytes with a CAS.
        match abi::get_shared_data(key) {
            Ok(found) => Ok(found),
            Err(status) => Err(StoreError::Backend {
                message: format!("get_shared_data: {status:?}"),
                transient: true,
            }),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match abi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(status) => Err(StoreError::Backend {
                message: format!("set_shared_data: {status:?}"),
                transient: true,
            }),
        }
    }
}
