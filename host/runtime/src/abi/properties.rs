//! Properties: `proxy_get_property`, `proxy_set_property`. Paths are NUL-separated
//! segments. The plugin's own names (`plugin_name`, `plugin_root_id`,
//! `plugin_vm_id`) are answered here; everything else by the embedding
//! ([`crate::context::Properties`]).

use wasmtime::{Linker, Result};

use super::{copy_out, read_bytes, status, Ctx};
use crate::context::Embedding;
use crate::types::Status;
use crate::vm::HostState;

pub(super) fn add_to_linker<E: Embedding>(linker: &mut Linker<HostState<E>>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Ctx<'_, E>,
         path_ptr: i32,
         path_len: i32,
         ptr_out: i32,
         len_out: i32|
         -> Result<i32> {
            let path = read_bytes(&caller, path_ptr, path_len)?;
            let segments: Vec<&[u8]> = path.split(|b| *b == 0).collect();
            let state = caller.data_mut();
            let plugin = &state.abi.plugin;
            let own = match segments.as_slice() {
                [b"plugin_name"] => Some(plugin.name.clone()),
                [b"plugin_root_id"] => Some(plugin.root_id.clone()),
                [b"plugin_vm_id"] => Some(plugin.vm_id.clone()),
                _ => None,
            };
            let value = match own {
                Some(text) => Ok((!text.is_empty()).then(|| text.into_bytes())),
                None => {
                    let context = state.abi.effective();
                    state.embedding.property(context, &segments)
                }
            };
            match value {
                Ok(Some(bytes)) => {
                    copy_out(&mut caller, &bytes, ptr_out, len_out)?;
                    status(Status::Ok)
                }
                Ok(None) => status(Status::NotFound),
                Err(s) => status(s),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Ctx<'_, E>,
         path_ptr: i32,
         path_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> Result<i32> {
            let path = read_bytes(&caller, path_ptr, path_len)?;
            let value = read_bytes(&caller, value_ptr, value_len)?;
            let segments: Vec<&[u8]> = path.split(|b| *b == 0).collect();
            let state = caller.data_mut();
            let context = state.abi.effective();
            if state.abi.is_root(context) {
                return status(Status::NotFound);
            }
            status(state.embedding.set_property(context, &segments, &value))
        },
    )?;
    Ok(())
}
