//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric` (semantics in [`crate::metrics`]).

use wasmtime::{Linker, Result};

use super::{read_text, status, write_u32, write_u64, Ctx};
use crate::context::Embedding;
use crate::types::{MetricType, Status};
use crate::vm::HostState;

fn name_of<E>(caller: &Ctx<'_, E>, id: i32) -> Option<String> {
    caller
        .data()
        .abi
        .metric_ids
        .name(id as u32)
        .map(str::to_string)
}

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Ctx<'_, E>,
         kind: i32,
         name_ptr: i32,
         name_len: i32,
         id_out: i32|
         -> Result<i32> {
            let Some(kind) = MetricType::from_abi(kind) else {
                return status(Status::BadArgument);
            };
            let name = read_text(&caller, name_ptr, name_len)?;
            let state = caller.data_mut();
            state.shared.metrics.define(kind, &name);
            let id = state.abi.metric_ids.id_for(kind, &name);
            write_u32(&mut caller, id_out, id)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |caller: Ctx<'_, E>, id: i32, delta: i64| -> Result<i32> {
            let Some(name) = name_of(&caller, id) else {
                return status(Status::NotFound);
            };
            match caller.data().shared.metrics.increment(&name, delta) {
                Ok(()) => status(Status::Ok),
                Err(s) => status(s),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |caller: Ctx<'_, E>, id: i32, value: i64| -> Result<i32> {
            let Some(name) = name_of(&caller, id) else {
                return status(Status::NotFound);
            };
            match caller.data().shared.metrics.record(&name, value as u64) {
                Ok(()) => status(Status::Ok),
                Err(s) => status(s),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Ctx<'_, E>, id: i32, value_out: i32| -> Result<i32> {
            let Some(name) = name_of(&caller, id) else {
                return status(Status::NotFound);
            };
            let value = caller.data().shared.metrics.get(&name);
            match value {
                Ok(value) => {
                    write_u64(&mut caller, value_out, value)?;
                    status(Status::Ok)
                }
                Err(s) => status(s),
            }
        },
    )?;
    Ok(())
}
