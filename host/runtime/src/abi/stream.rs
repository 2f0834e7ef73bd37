//! Stream control: `proxy_continue_stream`, `proxy_close_stream`,
//! `proxy_send_local_response`. All three take effect after the current VM call
//! returns (the embedding defers them). From a root context there is no stream: `Ok`
//! and nothing happens, as in Envoy.

use wasmtime::{Linker, Result};

use super::{read_bytes, read_text, status, Ctx};
use crate::context::{Embedding, HttpStreams, LocalResponse};
use crate::types::{parse_pairs, Status, StreamType};
use crate::vm::HostState;

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Ctx<'_, E>, stream: i32| -> Result<i32> {
            let Some(stream) = StreamType::from_abi(stream) else {
                return status(Status::BadArgument);
            };
            let state = caller.data_mut();
            let context = state.abi.effective();
            if state.abi.is_root(context) {
                return status(Status::Ok);
            }
            status(state.embedding.continue_stream(context, stream))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Ctx<'_, E>, stream: i32| -> Result<i32> {
            let Some(stream) = StreamType::from_abi(stream) else {
                return status(Status::BadArgument);
            };
            let state = caller.data_mut();
            let context = state.abi.effective();
            if state.abi.is_root(context) {
                return status(Status::Ok);
            }
            status(state.embedding.close_stream(context, stream))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Ctx<'_, E>,
         code: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         grpc_status: i32|
         -> Result<i32> {
            let details: String = read_text(&caller, details_ptr, details_len)?
                .chars()
                .map(|c| if c.is_whitespace() { '_' } else { c })
                .collect();
            let body = read_bytes(&caller, body_ptr, body_len)?;
            let Some(headers) = parse_pairs(&read_bytes(&caller, headers_ptr, headers_len)?) else {
                return status(Status::BadArgument);
            };
            let Ok(code) = u16::try_from(code) else {
                return status(Status::BadArgument);
            };
            let response = LocalResponse {
                status: code,
                details,
                body,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect(),
                grpc_status: u32::try_from(grpc_status).ok().filter(|s| *s <= 16),
            };
            let state = caller.data_mut();
            let context = state.abi.effective();
            if state.abi.is_root(context) {
                return status(Status::Ok);
            }
            status(HttpStreams::send_local_response(
                &mut state.embedding,
                context,
                response,
            ))
        },
    )?;
    Ok(())
}
