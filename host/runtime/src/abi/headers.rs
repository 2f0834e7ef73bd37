//! Header maps: `proxy_get_header_map_pairs`, `proxy_set_header_map_pairs`,
//! `proxy_get_header_map_value`, `proxy_add_header_map_value`,
//! `proxy_replace_header_map_value`, `proxy_remove_header_map_value`,
//! `proxy_get_header_map_size`.
//!
//! Maps 0–3 are the embedding's streams; 6–7 the HTTP-call answer being delivered;
//! gRPC metadata (4–5) never exists here. A map that is not available now answers as
//! Envoy does: an empty list for `get_header_map_pairs`, `BadArgument` for the rest.

use wasmtime::{Linker, Result};

use super::{copy_out, read_bytes, status, write_u32, Ctx};
use crate::context::Embedding;
use crate::types::{parse_pairs, HeaderMap, MapType, Status};
use crate::vm::HostState;

/// Runs `f` on the map, wherever it lives; `None` when it is not available now.
fn with_map<E: Embedding, R>(
    state: &mut HostState<E>,
    map: MapType,
    f: impl FnOnce(&mut HeaderMap) -> R,
) -> Option<R> {
    match map {
        MapType::HttpRequestHeaders
        | MapType::HttpRequestTrailers
        | MapType::HttpResponseHeaders
        | MapType::HttpResponseTrailers => {
            let context = state.abi.effective();
            state.embedding.with_header_map(context, map, f)
        }
        MapType::HttpCallResponseHeaders => {
            state.abi.call_response.as_mut().map(|r| f(&mut r.headers))
        }
        MapType::HttpCallResponseTrailers => {
            state.abi.call_response.as_mut().map(|r| f(&mut r.trailers))
        }
        MapType::GrpcInitialMetadata | MapType::GrpcTrailingMetadata => None,
    }
}

/// A mutation of one map; `BadArgument` for a bad map type or an unavailable map.
fn mutate<E: Embedding>(
    caller: &mut Ctx<'_, E>,
    map: i32,
    f: impl FnOnce(&mut HeaderMap),
) -> Result<i32> {
    let Some(map) = MapType::from_abi(map) else {
        return status(Status::BadArgument);
    };
    match with_map(caller.data_mut(), map, f) {
        Some(()) => status(Status::Ok),
        None => status(Status::BadArgument),
    }
}

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Ctx<'_, E>, map: i32, ptr_out: i32, len_out: i32| -> Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return status(Status::BadArgument);
            };
            let bytes = with_map(caller.data_mut(), map, |m| m.serialize())
                .unwrap_or_else(|| HeaderMap::new().serialize());
            copy_out(&mut caller, &bytes, ptr_out, len_out)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Ctx<'_, E>, map: i32, ptr: i32, len: i32| -> Result<i32> {
            let bytes = read_bytes(&caller, ptr, len)?;
            let Some(pairs) = parse_pairs(&bytes) else {
                return status(Status::BadArgument);
            };
            mutate(&mut caller, map, |m| {
                m.set_all(HeaderMap::from_pairs(pairs))
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Ctx<'_, E>,
         map: i32,
         key_ptr: i32,
         key_len: i32,
         ptr_out: i32,
         len_out: i32|
         -> Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return status(Status::BadArgument);
            };
            let key = read_bytes(&caller, key_ptr, key_len)?;
            match with_map(caller.data_mut(), map, |m| m.get(&key).map(<[u8]>::to_vec)) {
                None => status(Status::BadArgument),
                Some(None) => status(Status::NotFound),
                Some(Some(value)) => {
                    copy_out(&mut caller, &value, ptr_out, len_out)?;
                    status(Status::Ok)
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Ctx<'_, E>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
            let key = read_bytes(&caller, kp, kl)?;
            let value = read_bytes(&caller, vp, vl)?;
            mutate(&mut caller, map, |m| m.add(&key, &value))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Ctx<'_, E>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
            let key = read_bytes(&caller, kp, kl)?;
            let value = read_bytes(&caller, vp, vl)?;
            mutate(&mut caller, map, |m| m.replace(&key, &value))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Ctx<'_, E>, map: i32, kp: i32, kl: i32| -> Result<i32> {
            let key = read_bytes(&caller, kp, kl)?;
            mutate(&mut caller, map, |m| m.remove(&key))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Ctx<'_, E>, map: i32, size_out: i32| -> Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return status(Status::BadArgument);
            };
            match with_map(caller.data_mut(), map, |m| m.byte_size()) {
                None => status(Status::BadArgument),
                Some(size) => {
                    write_u32(
                        &mut caller,
                        size_out,
                        u32::try_from(size).unwrap_or(u32::MAX),
                    )?;
                    status(Status::Ok)
                }
            }
        },
    )?;
    Ok(())
}
