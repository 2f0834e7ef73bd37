//! Shared data and shared queues: `proxy_get_shared_data`, `proxy_set_shared_data`,
//! `proxy_register_shared_queue`, `proxy_resolve_shared_queue`,
//! `proxy_enqueue_shared_queue`, `proxy_dequeue_shared_queue`. The semantics are in
//! [`crate::shared_data`]; the namespace is the plugin's `vm_id`.

use wasmtime::{Linker, Result};

use super::{copy_out, read_bytes, status, write_u32, Ctx};
use crate::context::Embedding;
use crate::types::Status;
use crate::vm::HostState;

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Ctx<'_, E>,
         key_ptr: i32,
         key_len: i32,
         ptr_out: i32,
         len_out: i32,
         cas_out: i32|
         -> Result<i32> {
            let key = read_bytes(&caller, key_ptr, key_len)?;
            let state = caller.data();
            let found = state.shared.data.get(&state.abi.plugin.vm_id, &key);
            match found {
                None => status(Status::NotFound),
                Some((value, cas)) => {
                    copy_out(&mut caller, &value, ptr_out, len_out)?;
                    write_u32(&mut caller, cas_out, cas)?;
                    status(Status::Ok)
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |caller: Ctx<'_, E>,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32,
         cas: i32|
         -> Result<i32> {
            let key = read_bytes(&caller, key_ptr, key_len)?;
            let value = read_bytes(&caller, value_ptr, value_len)?;
            let state = caller.data();
            match state
                .shared
                .data
                .set(&state.abi.plugin.vm_id, &key, &value, cas as u32)
            {
                Ok(()) => status(Status::Ok),
                Err(s) => status(s),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut caller: Ctx<'_, E>, name_ptr: i32, name_len: i32, token_out: i32| -> Result<i32> {
            let name = read_bytes(&caller, name_ptr, name_len)?;
            let state = caller.data_mut();
            let root = state.abi.root_of(state.abi.effective());
            let notify = state.embedding.queue_notifier(root);
            let token = state
                .shared
                .queues
                .register(&state.abi.plugin.vm_id, &name, notify);
            write_u32(&mut caller, token_out, token)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut caller: Ctx<'_, E>,
         vm_id_ptr: i32,
         vm_id_len: i32,
         name_ptr: i32,
         name_len: i32,
         token_out: i32|
         -> Result<i32> {
            let vm_id =
                String::from_utf8_lossy(&read_bytes(&caller, vm_id_ptr, vm_id_len)?).into_owned();
            let name = read_bytes(&caller, name_ptr, name_len)?;
            let state = caller.data();
            let vm_id = if vm_id.is_empty() {
                state.abi.plugin.vm_id.clone()
            } else {
                vm_id
            };
            match state.shared.queues.resolve(&vm_id, &name) {
                None => status(Status::NotFound),
                Some(token) => {
                    write_u32(&mut caller, token_out, token)?;
                    status(Status::Ok)
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |caller: Ctx<'_, E>, token: i32, value_ptr: i32, value_len: i32| -> Result<i32> {
            let value = read_bytes(&caller, value_ptr, value_len)?;
            match caller.data().shared.queues.enqueue(token as u32, &value) {
                Ok(()) => status(Status::Ok),
                Err(s) => status(s),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut caller: Ctx<'_, E>, token: i32, ptr_out: i32, len_out: i32| -> Result<i32> {
            let item = caller.data().shared.queues.dequeue(token as u32);
            match item {
                Ok(value) => {
                    copy_out(&mut caller, &value, ptr_out, len_out)?;
                    status(Status::Ok)
                }
                Err(s) => status(s),
            }
        },
    )?;
    Ok(())
}
