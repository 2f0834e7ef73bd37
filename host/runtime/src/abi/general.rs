//! Logging, time, ticks, contexts and status: `proxy_log`, `proxy_get_log_level`,
//! `proxy_get_current_time_nanoseconds`, `proxy_set_tick_period_milliseconds`,
//! `proxy_set_effective_context`, `proxy_done`, `proxy_get_status`,
//! `proxy_call_foreign_function`, and the Emscripten helpers cpp-host provides.

use wasmtime::{Linker, Result};

use super::{copy_out, read_text, status, write_u32, write_u64, Ctx};
use crate::context::Embedding;
use crate::types::{LogLevel, Status};
use crate::vm::{tick_period, HostState};

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Ctx<'_, E>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(level) = LogLevel::from_abi(level) else {
                return status(Status::BadArgument);
            };
            let message = read_text(&caller, ptr, len)?;
            let state = caller.data_mut();
            let context = state.abi.effective();
            state.embedding.log(level, context, &message);
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Ctx<'_, E>, level_out: i32| -> Result<i32> {
            let level = caller.data().embedding.log_level().to_abi();
            write_u32(&mut caller, level_out, level as u32)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Ctx<'_, E>, time_out: i32| -> Result<i32> {
            let now = caller.data().embedding.wall_time_nanos();
            write_u64(&mut caller, time_out, now)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Ctx<'_, E>, period_ms: i32| -> Result<i32> {
            let state = caller.data_mut();
            let root = state.abi.root_of(state.abi.effective());
            if root != 0 {
                state
                    .embedding
                    .set_tick_period(root, tick_period(period_ms as u32));
            }
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Ctx<'_, E>, context_id: i32| -> Result<i32> {
            let abi = &mut caller.data_mut().abi;
            let id = context_id as u32;
            if abi.contexts.contains_key(&id) {
                abi.effective_context = Some(id);
                status(Status::Ok)
            } else {
                status(Status::BadArgument)
            }
        },
    )?;
    linker.func_wrap("env", "proxy_done", |caller: Ctx<'_, E>| -> Result<i32> {
        // Contexts here always finish synchronously (`proxy_on_done` is not waited on),
        // so there is never a pending context to complete.
        let abi = &caller.data().abi;
        if abi.contexts.contains_key(&abi.effective()) {
            status(Status::Ok)
        } else {
            status(Status::NotFound)
        }
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut caller: Ctx<'_, E>,
         code_out: i32,
         msg_ptr_out: i32,
         msg_len_out: i32|
         -> Result<i32> {
            let (code, message) = caller.data().abi.status.clone();
            write_u32(&mut caller, code_out, code)?;
            copy_out(&mut caller, message.as_bytes(), msg_ptr_out, msg_len_out)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_caller: Ctx<'_, E>,
         _name_ptr: i32,
         _name_len: i32,
         _args_ptr: i32,
         _args_len: i32,
         _ret_ptr: i32,
         _ret_len: i32|
         -> Result<i32> {
            // No foreign functions are offered: "no such function".
            status(Status::NotFound)
        },
    )?;
    // Emscripten-built (C++ SDK) modules may import these; cpp-host provides them.
    linker.func_wrap(
        "env",
        "emscripten_notify_memory_growth",
        |_caller: Ctx<'_, E>, _index: i32| {},
    )?;
    linker.func_wrap(
        "env",
        "pthread_equal",
        |_caller: Ctx<'_, E>, a: i32, b: i32| -> i32 { i32::from(a == b) },
    )?;
    Ok(())
}
