//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`,
//! `proxy_get_buffer_status`.
//!
//! Configuration buffers and the HTTP-call answer are the runtime's; request and
//! response bodies are the embedding's ([`crate::context::HttpStreams::with_body`]).

use wasmtime::{Linker, Result};

use super::{copy_out, read_bytes, status, write_u32, Ctx};
use crate::context::Embedding;
use crate::types::{BufferType, Status};
use crate::vm::HostState;

/// The bytes of a buffer the runtime owns, or the embedding's body, cloned.
fn buffer_bytes<E: Embedding>(state: &mut HostState<E>, buffer: BufferType) -> Option<Vec<u8>> {
    match buffer {
        BufferType::VmConfiguration => Some(state.abi.plugin.vm_configuration.clone()),
        BufferType::PluginConfiguration => state
            .abi
            .configuring
            .then(|| state.abi.plugin.configuration.clone()),
        BufferType::HttpCallResponseBody => {
            state.abi.call_response.as_ref().map(|r| r.body.clone())
        }
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
            let context = state.abi.effective();
            state
                .embedding
                .with_body(context, buffer, |body| body.clone())
        }
        BufferType::DownstreamData
        | BufferType::UpstreamData
        | BufferType::GrpcReceiveBuffer
        | BufferType::ForeignFunctionArguments => None,
    }
}

/// Envoy's body edit: `start == 0` drops `size` bytes and prepends `data` (replace a
/// prefix, or prepend); `start >= len` appends; anything else is `BadArgument`.
pub(crate) fn edit_body(body: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) -> Status {
    if start == 0 {
        let drop = size.min(body.len());
        body.splice(..drop, data.iter().copied());
        Status::Ok
    } else if start >= body.len() {
        body.extend_from_slice(data);
        Status::Ok
    } else {
        Status::BadArgument
    }
}

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Ctx<'_, E>,
         buffer: i32,
         start: i32,
         max_size: i32,
         ptr_out: i32,
         len_out: i32|
         -> Result<i32> {
            let Some(buffer) = BufferType::from_abi(buffer) else {
                return status(Status::BadArgument);
            };
            let (start, max_size) = (start as u32, max_size as u32);
            if start.checked_add(max_size).is_none() {
                return status(Status::BadArgument);
            }
            let Some(bytes) = buffer_bytes(caller.data_mut(), buffer) else {
                return status(Status::NotFound);
            };
            let begin = usize::try_from(start)?.min(bytes.len());
            let end = begin
                .saturating_add(usize::try_from(max_size)?)
                .min(bytes.len());
            let slice = bytes.get(begin..end).unwrap_or_default();
            copy_out(&mut caller, slice, ptr_out, len_out)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Ctx<'_, E>,
         buffer: i32,
         start: i32,
         size: i32,
         data_ptr: i32,
         data_len: i32|
         -> Result<i32> {
            let Some(buffer) = BufferType::from_abi(buffer) else {
                return status(Status::BadArgument);
            };
            let data = read_bytes(&caller, data_ptr, data_len)?;
            let (start, size) = (
                usize::try_from(start as u32)?,
                usize::try_from(size as u32)?,
            );
            let state = caller.data_mut();
            let result = match buffer {
                BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
                    let context = state.abi.effective();
                    state
                        .embedding
                        .with_body(context, buffer, |body| edit_body(body, start, size, &data))
                }
                BufferType::HttpCallResponseBody => state
                    .abi
                    .call_response
                    .as_mut()
                    .map(|r| edit_body(&mut r.body, start, size, &data)),
                _ => None,
            };
            status(result.unwrap_or(Status::NotFound))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Ctx<'_, E>, buffer: i32, len_out: i32, flags_out: i32| -> Result<i32> {
            let Some(buffer) = BufferType::from_abi(buffer) else {
                return status(Status::BadArgument);
            };
            let Some(bytes) = buffer_bytes(caller.data_mut(), buffer) else {
                return status(Status::NotFound);
            };
            write_u32(
                &mut caller,
                len_out,
                u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            )?;
            write_u32(&mut caller, flags_out, 0)?;
            status(Status::Ok)
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_edits_follow_envoy() {
        let mut body = b"hello world".to_vec();
        assert_eq!(edit_body(&mut body, 0, 5, b"HOWDY"), Status::Ok);
        assert_eq!(body, b"HOWDY world");
        assert_eq!(edit_body(&mut body, 0, 0, b">"), Status::Ok);
        assert_eq!(body, b">HOWDY world");
        assert_eq!(edit_body(&mut body, 99, 0, b"!"), Status::Ok);
        assert_eq!(body, b">HOWDY world!");
        assert_eq!(edit_body(&mut body, 3, 1, b"x"), Status::BadArgument);
        assert_eq!(edit_body(&mut body, 0, usize::MAX, b""), Status::Ok);
        assert!(body.is_empty());
    }
}
