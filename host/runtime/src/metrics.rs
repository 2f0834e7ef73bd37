//! `proxy_define_metric` and friends: process-wide values keyed by name, so every
//! worker's VM that defines the same name adds to the same metric (as Envoy's
//! `wasmcustom.<name>` stats do), and per-VM ids whose low bits encode the type
//! (counters 4, 8, …; gauges 5, 9, …; histograms 6, 10, …, as cpp-host numbers them).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::types::{MetricType, Status};

/// One metric's current value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// A monotonically increasing count.
    Counter(u64),
    /// A value that goes up and down.
    Gauge(i64),
    /// Recorded samples: count, sum and cumulative counts per bucket of
    /// [`HISTOGRAM_BUCKETS`] (Prometheus' `_bucket`/`_count`/`_sum`).
    Histogram {
        /// How many samples.
        count: u64,
        /// Their sum.
        sum: u64,
        /// Samples ≤ each bound of [`HISTOGRAM_BUCKETS`].
        buckets: Vec<u64>,
    },
}

/// Envoy's default histogram bucket bounds.
pub const HISTOGRAM_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The process-wide metric values.
#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<String, MetricValue>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Makes sure `name` exists with `kind`; a name already defined with another type
    /// keeps its first type.
    pub fn define(&self, kind: MetricType, name: &str) {
        let mut values = self.lock();
        values.entry(name.to_string()).or_insert(match kind {
            MetricType::Counter => MetricValue::Counter(0),
            MetricType::Gauge => MetricValue::Gauge(0),
            MetricType::Histogram => MetricValue::Histogram {
                count: 0,
                sum: 0,
                buckets: vec![0; HISTOGRAM_BUCKETS.len()],
            },
        });
    }

    /// `proxy_increment_metric`: a counter only goes up (delta ≤ 0 is `BadArgument`,
    /// as in Envoy); a gauge moves either way; a histogram cannot be incremented.
    pub fn increment(&self, name: &str, delta: i64) -> Result<(), Status> {
        let mut values = self.lock();
        match values.get_mut(name) {
            None => Err(Status::NotFound),
            Some(MetricValue::Counter(value)) => {
                if delta <= 0 {
                    return Err(Status::BadArgument);
                }
                *value = value.saturating_add(delta.unsigned_abs());
                Ok(())
            }
            Some(MetricValue::Gauge(value)) => {
                *value = value.saturating_add(delta);
                Ok(())
            }
            Some(MetricValue::Histogram { .. }) => Err(Status::BadArgument),
        }
    }

    /// `proxy_record_metric`: adds to a counter, sets a gauge, records a sample.
    pub fn record(&self, name: &str, value: u64) -> Result<(), Status> {
        let mut values = self.lock();
        match values.get_mut(name) {
            None => Err(Status::NotFound),
            Some(MetricValue::Counter(current)) => {
                *current = current.saturating_add(value);
                Ok(())
            }
            Some(MetricValue::Gauge(current)) => {
                *current = i64::try_from(value).unwrap_or(i64::MAX);
                Ok(())
            }
            Some(MetricValue::Histogram {
                count,
                sum,
                buckets,
            }) => {
                *count = count.saturating_add(1);
                *sum = sum.saturating_add(value);
                for (bound, bucket) in HISTOGRAM_BUCKETS.iter().zip(buckets.iter_mut()) {
                    if value as f64 <= *bound {
                        *bucket = bucket.saturating_add(1);
                    }
                }
                Ok(())
            }
        }
    }

    /// `proxy_get_metric`: a histogram has no single value (`BadArgument`).
    pub fn get(&self, name: &str) -> Result<u64, Status> {
        match self.lock().get(name) {
            None => Err(Status::NotFound),
            Some(MetricValue::Counter(value)) => Ok(*value),
            Some(MetricValue::Gauge(value)) => Ok(u64::try_from(*value).unwrap_or(0)),
            Some(MetricValue::Histogram { .. }) => Err(Status::BadArgument),
        }
    }

    /// Every metric, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, MetricValue)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MetricValue>> {
        self.values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A VM's table of the metric names it defined, by id.
#[derive(Debug, Default)]
pub(crate) struct MetricIds {
    next: u32,
    names: BTreeMap<u32, String>,
}

impl MetricIds {
    /// The id for `name` (the same name gets the same id again).
    pub(crate) fn id_for(&mut self, kind: MetricType, name: &str) -> u32 {
        if let Some((id, _)) = self.names.iter().find(|(_, n)| n.as_str() == name) {
            return *id;
        }
        self.next = self.next.saturating_add(1);
        let tag = match kind {
            MetricType::Counter => 0,
            MetricType::Gauge => 1,
            MetricType::Histogram => 2,
        };
        let id = (self.next << 2) | tag;
        self.names.insert(id, name.to_string());
        id
    }

    pub(crate) fn name(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_histograms() {
        let metrics = Metrics::new();
        let mut ids = MetricIds::default();
        let c = ids.id_for(MetricType::Counter, "c");
        let g = ids.id_for(MetricType::Gauge, "g");
        let h = ids.id_for(MetricType::Histogram, "h");
        assert_eq!((c, g, h), (4, 9, 14));
        assert_eq!(ids.id_for(MetricType::Counter, "c"), 4);
        metrics.define(MetricType::Counter, "c");
        metrics.define(MetricType::Gauge, "g");
        metrics.define(MetricType::Histogram, "h");
        assert_eq!(metrics.increment("c", 0), Err(Status::BadArgument));
        metrics.increment("c", 2).unwrap();
        metrics.record("c", 3).unwrap();
        assert_eq!(metrics.get("c"), Ok(5));
        metrics.increment("g", -1).unwrap();
        metrics.record("g", 7).unwrap();
        assert_eq!(metrics.get("g"), Ok(7));
        metrics.record("h", 10).unwrap();
        assert_eq!(metrics.get("h"), Err(Status::BadArgument));
        assert_eq!(metrics.get("nope"), Err(Status::NotFound));
    }
}
