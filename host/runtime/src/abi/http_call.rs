//! `proxy_http_call`: checks the request as Envoy does, allocates the call id, and hands
//! the call to the embedding ([`crate::context::HttpCalls`]). The call is owned by the
//! root context of the effective context; its answer is delivered to that root.

use std::time::Duration;

use wasmtime::{Linker, Result};

use super::{read_bytes, status, write_u32, Ctx};
use crate::context::{Embedding, HttpCallRequest};
use crate::types::{parse_pairs, HeaderMap, Status};
use crate::vm::HostState;

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Ctx<'_, E>,
         upstream_ptr: i32,
         upstream_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         body_ptr: i32,
         body_len: i32,
         trailers_ptr: i32,
         trailers_len: i32,
         timeout_ms: i32,
         token_out: i32|
         -> Result<i32> {
            let upstream = read_bytes(&caller, upstream_ptr, upstream_len)?;
            let headers = parse_pairs(&read_bytes(&caller, headers_ptr, headers_len)?);
            let trailers = parse_pairs(&read_bytes(&caller, trailers_ptr, trailers_len)?);
            let body = read_bytes(&caller, body_ptr, body_len)?;
            let (Ok(upstream), Some(headers), Some(trailers)) =
                (String::from_utf8(upstream), headers, trailers)
            else {
                return status(Status::BadArgument);
            };
            let headers = HeaderMap::from_pairs(headers);
            // Envoy: `:path`, `:method` and `:authority` are required; a timeout that
            // is negative as a signed int is refused; 0 means none.
            if [":path", ":method", ":authority"]
                .iter()
                .any(|name| headers.get(name.as_bytes()).is_none_or(<[u8]>::is_empty))
                || timeout_ms < 0
            {
                return status(Status::BadArgument);
            }
            let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64));
            let state = caller.data_mut();
            let root = state.abi.root_of(state.abi.effective());
            let token = state.abi.next_call_token();
            let request = HttpCallRequest {
                upstream,
                headers,
                body,
                trailers: HeaderMap::from_pairs(trailers),
                timeout,
            };
            match state.embedding.http_call(root, token, request) {
                Ok(()) => {
                    state.abi.calls.insert(token, root);
                    write_u32(&mut caller, token_out, token)?;
                    status(Status::Ok)
                }
                Err(s) => status(s),
            }
        },
    )?;
    Ok(())
}
