//! Publishing the core's metric samples as proxy-wasm metrics.
//!
//! A metric is defined once per VM and name; the ids are cached here for the VM's life.
//! A thread-local is the natural home: one VM runs on one thread, and a reloaded VM starts
//! a fresh cache (the metrics themselves live in the host and keep their values).

use std::cell::RefCell;
use std::collections::HashMap;

use detour_core::telemetry::{Kind, Sample};
use proxy_wasm::types::MetricType;

use crate::abi;

thread_local! {
    static IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

/// Publishes samples; a metric the host refuses is skipped (logged at debug).
pub(crate) fn emit(samples: &[Sample]) {
    for sample in samples {
        let Some(id) = id_of(sample) else { continue };
        let result = match sample.kind {
            Kind::Counter if sample.value == 0 => Ok(()),
            Kind::Counter => {
                abi::increment_metric(id, i64::try_from(sample.value).unwrap_or(i64::MAX))
            }
            Kind::Gauge | Kind::Histogram => abi::record_metric(id, sample.value),
        };
        if let Err(status) = result {
            log::debug!("detour: metric {} not recorded: {status:?}", sample.name);
        }
    }
}

fn id_of(sample: &Sample) -> Option<u32> {
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        if let Some(id) = ids.get(&sample.name) {
            return Some(*id);
        }
        let kind = match sample.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        let id = abi::define_metric(kind, &sample.name).ok()?;
        ids.insert(sample.name.clone(), id);
        Some(id)
    })
}
