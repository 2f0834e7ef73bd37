//! gRPC calls and streams: not offered. Each import exists (every Rust SDK module links
//! them) and answers the status Envoy gives for an upstream or call that does not
//! exist: `ParseFailure` for an unknown gRPC service, `NotFound` for an unknown call.

use wasmtime::{Linker, Result};

use super::{status, Ctx};
use crate::context::Embedding;
use crate::types::Status;
use crate::vm::HostState;

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |_c: Ctx<'_, E>,
         _a: i32,
         _b: i32,
         _c2: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _timeout: i32,
         _token_out: i32|
         -> Result<i32> { status(Status::ParseFailure) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_c: Ctx<'_, E>,
         _a: i32,
         _b: i32,
         _c2: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _token_out: i32|
         -> Result<i32> { status(Status::ParseFailure) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_c: Ctx<'_, E>, _token: i32, _ptr: i32, _len: i32, _end: i32| -> Result<i32> {
            status(Status::NotFound)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_c: Ctx<'_, E>, _token: i32| -> Result<i32> { status(Status::NotFound) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_close",
        |_c: Ctx<'_, E>, _token: i32| -> Result<i32> { status(Status::NotFound) },
    )?;
    Ok(())
}
