//! The WASI preview1 subset proxies implement (cpp-host's list), under both
//! `wasi_snapshot_preview1` and `wasi_unstable`, written by hand rather than taken from
//! `wasmtime-wasi`: a filter gets no files, no sockets and no host environment.
//!
//! - `fd_write` to 1/2 becomes a log line (INFO/ERROR, trailing newline stripped);
//! - `environ_*` show only the plugin's configured environment;
//! - `clock_time_get` reads the injected clock (0 wall, 1 monotonic);
//! - `random_get` (≤ 64 KiB), `args_*` (none), `sched_yield`, `poll_oneoff` (no events);
//! - `proc_exit` traps the guest (the VM is replaced; the process lives on);
//! - file-system calls are stubs: `fd_prestat_get` BADF, `path_open` NOENT, `fd_read`
//!   NOSYS, `fd_close`/`fd_seek` succeed doing nothing.

use wasmtime::{Linker, Result};

use super::{read_bytes, write_bytes, write_u32, write_u64, Ctx};
use crate::context::Embedding;
use crate::types::LogLevel;
use crate::vm::HostState;

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const INVAL: i32 = 28;
const NOENT: i32 = 44;
const NOSYS: i32 = 52;
const NOTSUP: i32 = 58;

/// The most bytes one `random_get` may ask for (cpp-host's limit).
const MAX_RANDOM: usize = 64 * 1024;

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        add_module(linker, module)?;
    }
    Ok(())
}

fn add_module<E: Embedding>(linker: &mut Linker<HostState<E>>, module: &str) -> Result<()> {
    linker.func_wrap(
        module,
        "fd_write",
        |mut caller: Ctx<'_, E>,
         fd: i32,
         iovs: i32,
         iovs_len: i32,
         written_out: i32|
         -> Result<i32> {
            let level = match fd {
                1 => LogLevel::Info,
                2 => LogLevel::Error,
                _ => return Ok(BADF),
            };
            let mut text = Vec::new();
            for idx in 0..iovs_len.max(0) {
                let entry = read_bytes(&caller, iovs.wrapping_add(idx.wrapping_mul(8)), 8)?;
                let word = |at: usize| -> i32 {
                    entry
                        .get(at..at + 4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, i32::from_le_bytes)
                };
                text.extend(read_bytes(&caller, word(0), word(4))?);
            }
            let written = u32::try_from(text.len()).unwrap_or(u32::MAX);
            let message = String::from_utf8_lossy(&text);
            let message = message.strip_suffix('\n').unwrap_or(&message);
            let state = caller.data_mut();
            let context = state.abi.effective();
            state.embedding.log(level, context, message);
            write_u32(&mut caller, written_out, written)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        module,
        "fd_read",
        |_c: Ctx<'_, E>, _fd: i32, _iovs: i32, _len: i32, _out: i32| -> i32 { NOSYS },
    )?;
    linker.func_wrap(module, "fd_close", |_c: Ctx<'_, E>, _fd: i32| -> i32 {
        SUCCESS
    })?;
    linker.func_wrap(
        module,
        "fd_seek",
        |_c: Ctx<'_, E>, _fd: i32, _offset: i64, _whence: i32, _out: i32| -> i32 { SUCCESS },
    )?;
    linker.func_wrap(
        module,
        "fd_fdstat_get",
        |mut caller: Ctx<'_, E>, fd: i32, out: i32| -> Result<i32> {
            if !(1..=2).contains(&fd) {
                return Ok(BADF);
            }
            // filetype CHARACTER_DEVICE (2), no flags, rights FD_WRITE (1 << 6).
            let mut stat = [0_u8; 24];
            stat[0] = 2;
            stat[8..16].copy_from_slice(&64_u64.to_le_bytes());
            write_bytes(&mut caller, out, &stat)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        module,
        "fd_fdstat_set_flags",
        |_c: Ctx<'_, E>, fd: i32, _flags: i32| -> i32 {
            if (0..=2).contains(&fd) {
                SUCCESS
            } else {
                BADF
            }
        },
    )?;
    linker.func_wrap(
        module,
        "fd_prestat_get",
        |_c: Ctx<'_, E>, _fd: i32, _out: i32| -> i32 { BADF },
    )?;
    linker.func_wrap(
        module,
        "fd_prestat_dir_name",
        |_c: Ctx<'_, E>, _fd: i32, _path: i32, _len: i32| -> i32 { NOTSUP },
    )?;
    linker.func_wrap(
        module,
        "path_open",
        |_c: Ctx<'_, E>,
         _fd: i32,
         _dirflags: i32,
         _path: i32,
         _path_len: i32,
         _oflags: i32,
         _rights: i64,
         _inheriting: i64,
         _fdflags: i32,
         _fd_out: i32|
         -> i32 { NOENT },
    )?;
    linker.func_wrap(
        module,
        "environ_sizes_get",
        |mut caller: Ctx<'_, E>, count_out: i32, size_out: i32| -> Result<i32> {
            let env = &caller.data().abi.plugin.environment;
            let count = env.len();
            let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            write_u32(&mut caller, count_out, u32::try_from(count)?)?;
            write_u32(&mut caller, size_out, u32::try_from(size)?)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        module,
        "environ_get",
        |mut caller: Ctx<'_, E>, pointers: i32, buffer: i32| -> Result<i32> {
            let env = caller.data().abi.plugin.environment.clone();
            let mut offset = 0_i32;
            for (idx, (key, value)) in env.iter().enumerate() {
                let entry = format!("{key}={value}\0");
                let at = buffer.wrapping_add(offset);
                write_bytes(&mut caller, at, entry.as_bytes())?;
                write_u32(
                    &mut caller,
                    pointers.wrapping_add(i32::try_from(idx * 4)?),
                    at as u32,
                )?;
                offset = offset.wrapping_add(i32::try_from(entry.len())?);
            }
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        module,
        "args_sizes_get",
        |mut caller: Ctx<'_, E>, count_out: i32, size_out: i32| -> Result<i32> {
            write_u32(&mut caller, count_out, 0)?;
            write_u32(&mut caller, size_out, 0)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        module,
        "args_get",
        |_c: Ctx<'_, E>, _argv: i32, _buf: i32| -> i32 { SUCCESS },
    )?;
    linker.func_wrap(
        module,
        "clock_time_get",
        |mut caller: Ctx<'_, E>, clock: i32, _precision: i64, time_out: i32| -> Result<i32> {
            let now = match clock {
                0 => caller.data().embedding.wall_time_nanos(),
                1 => caller.data().embedding.monotonic_nanos(),
                _ => return Ok(NOTSUP),
            };
            write_u64(&mut caller, time_out, now)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        module,
        "clock_res_get",
        |mut caller: Ctx<'_, E>, clock: i32, out: i32| -> Result<i32> {
            if !(0..=1).contains(&clock) {
                return Ok(NOTSUP);
            }
            write_u64(&mut caller, out, 1_000)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        module,
        "random_get",
        |mut caller: Ctx<'_, E>, ptr: i32, len: i32| -> Result<i32> {
            let len = usize::try_from(len as u32)?;
            if len > MAX_RANDOM {
                return Ok(INVAL);
            }
            let mut bytes = vec![0_u8; len];
            if getrandom::fill(&mut bytes).is_err() {
                return Ok(NOSYS);
            }
            write_bytes(&mut caller, ptr, &bytes)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        module,
        "proc_exit",
        |mut caller: Ctx<'_, E>, code: i32| -> Result<()> {
            let state = caller.data_mut();
            let context = state.abi.effective();
            state.embedding.log(
                LogLevel::Error,
                context,
                &format!("proc_exit({code}) called"),
            );
            Err(wasmtime::Error::msg(format!(
                "the guest called proc_exit({code})"
            )))
        },
    )?;
    linker.func_wrap(module, "sched_yield", |_c: Ctx<'_, E>| -> i32 { SUCCESS })?;
    linker.func_wrap(
        module,
        "poll_oneoff",
        |mut caller: Ctx<'_, E>, _in: i32, _out: i32, _n: i32, events_out: i32| -> Result<i32> {
            write_u32(&mut caller, events_out, 0)?;
            Ok(SUCCESS)
        },
    )?;
    Ok(())
}
