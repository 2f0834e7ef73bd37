//! The hostcalls: one module per group, each with an `add_to_linker`.
//!
//! **Architecture invariant:** this layer only translates. It reads arguments out of
//! guest memory, turns ABI numbers into [`crate::types`] enums, asks the
//! [`crate::context`] traits (or the runtime's own state for configuration buffers,
//! HTTP-call answers, shared data, queues and metrics) and writes results back through
//! the guest's allocator. It knows nothing about HTTP servers or sockets.
//!
//! Every pointer the guest passes is bounds-checked; an out-of-bounds pointer **traps**
//! the guest (its VM is then replaced) instead of answering `INVALID_MEMORY_ACCESS`,
//! which the Rust SDK cannot represent (its `Status` enum lacks 6, so that answer would
//! be undefined behaviour inside the guest).

mod buffers;
mod general;
mod grpc;
mod headers;
mod http_call;
mod metrics;
mod properties;
mod shared;
mod stream;
mod wasi;

use wasmtime::{Caller, Linker, Result};

use crate::context::Embedding;
use crate::types::Status;
use crate::vm::HostState;

/// Registers every hostcall a proxy-wasm 0.2.0/0.2.1 module may import: all `env`
/// functions of the spec (plus the two Emscripten helpers cpp-host provides) and the
/// WASI preview1 subset proxies implement, under both `wasi_snapshot_preview1` and
/// `wasi_unstable`.
pub fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    general::add_to_linker(linker)?;
    buffers::add_to_linker(linker)?;
    headers::add_to_linker(linker)?;
    stream::add_to_linker(linker)?;
    http_call::add_to_linker(linker)?;
    grpc::add_to_linker(linker)?;
    shared::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    properties::add_to_linker(linker)?;
    wasi::add_to_linker(linker)?;
    Ok(())
}

type Ctx<'a, E> = Caller<'a, HostState<E>>;

/// A status as the hostcall's return value.
fn status(status: Status) -> Result<i32> {
    Ok(status.code())
}

/// A guest (pointer, length) as a byte range, or a trap.
fn range(ptr: i32, len: i32) -> Result<std::ops::Range<usize>> {
    let start = usize::try_from(ptr as u32)?;
    let len = usize::try_from(len as u32)?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| wasmtime::Error::msg("guest pointer + length overflows"))?;
    Ok(start..end)
}

fn memory<E>(caller: &Ctx<'_, E>) -> Result<wasmtime::Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))
}

/// Copies `len` bytes at `ptr` out of guest memory (traps when out of bounds).
fn read_bytes<E>(caller: &Ctx<'_, E>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let memory = memory(caller)?;
    let range = range(ptr, len)?;
    memory
        .data(caller)
        .get(range)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg("guest memory access out of bounds"))
}

/// Writes `bytes` at `ptr` in guest memory (traps when out of bounds).
fn write_bytes<E>(caller: &mut Ctx<'_, E>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let memory = memory(caller)?;
    let range = range(ptr, i32::try_from(bytes.len())?)?;
    let slot = memory
        .data_mut(&mut *caller)
        .get_mut(range)
        .ok_or_else(|| wasmtime::Error::msg("guest memory access out of bounds"))?;
    slot.copy_from_slice(bytes);
    Ok(())
}

fn write_u32<E>(caller: &mut Ctx<'_, E>, ptr: i32, value: u32) -> Result<()> {
    write_bytes(caller, ptr, &value.to_le_bytes())
}

fn write_u64<E>(caller: &mut Ctx<'_, E>, ptr: i32, value: u64) -> Result<()> {
    write_bytes(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest: allocates with the guest's own allocator, copies, and
/// writes the pointer and length to `ptr_out`/`len_out`. Nothing is allocated for an
/// empty result (pointer 0, length 0), as cpp-host does.
fn copy_out<E>(caller: &mut Ctx<'_, E>, bytes: &[u8], ptr_out: i32, len_out: i32) -> Result<()> {
    if bytes.is_empty() {
        write_u32(caller, ptr_out, 0)?;
        return write_u32(caller, len_out, 0);
    }
    let len = i32::try_from(bytes.len())
        .map_err(|_| wasmtime::Error::msg("result too large for a 32-bit guest"))?;
    let alloc = caller
        .data()
        .alloc
        .clone()
        .ok_or_else(|| wasmtime::Error::msg("the module exports no allocator"))?;
    let ptr = alloc.call(&mut *caller, len)?;
    if ptr == 0 {
        return Err(wasmtime::Error::msg(format!(
            "the guest allocator returned null for {len} bytes"
        )));
    }
    // The allocator may have grown memory: write through a fresh view.
    write_bytes(caller, ptr, bytes)?;
    write_u32(caller, ptr_out, ptr as u32)?;
    write_u32(caller, len_out, len as u32)
}

/// Reads guest text (lossy: invalid UTF-8 becomes U+FFFD).
fn read_text<E>(caller: &Ctx<'_, E>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read_bytes(caller, ptr, len)?).into_owned())
}
