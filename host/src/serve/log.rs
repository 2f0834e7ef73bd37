//! Log lines in Envoy's default format, so one parser reads both hosts:
//! `[2026-01-02 03:04:05.678][worker_0][info][wasm] wasm log detour detour: message`.
//!
//! The second bracket names the thread (Envoy prints its thread id there): each worker
//! is `worker_N`, the main thread `main`. Lines go to stderr, unbuffered, one `write`
//! per line, so lines from different threads never interleave and a reader sees each
//! line as soon as it is written.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use detour_host::LogLevel;

/// The event file (`--events`): every `detour-event` JSON line, appended as it is logged.
pub type EventSink = Arc<Mutex<File>>;

/// Where log lines go, and the least level written.
#[derive(Debug, Clone)]
pub struct Logger {
    thread: String,
    level: LogLevel,
    events: Option<EventSink>,
}

impl Logger {
    /// A logger for `thread` (`main`, `worker_0`, …).
    pub fn new(thread: impl Into<String>, level: LogLevel) -> Self {
        Logger {
            thread: thread.into(),
            level,
            events: None,
        }
    }

    /// Also appends the filter's events (`detour-event {json}` lines) to `sink`, one JSON
    /// object per line: the event log `detour report` reads.
    pub fn with_events(mut self, sink: Option<EventSink>) -> Self {
        self.events = sink;
        self
    }

    /// Writes the event in a filter log message, if it carries one, to the event file.
    pub fn record_event(&self, message: &str) {
        const MARKER: &str = "detour-event ";
        let Some(sink) = &self.events else { return };
        let Some(json) = message
            .find(MARKER)
            .and_then(|at| message.get(at + MARKER.len()..))
        else {
            return;
        };
        let line = format!("{}\n", json.trim_end());
        // One write per line under the lock: lines from workers never interleave. A
        // poisoned lock (a writer panicked) still holds a usable file.
        let mut file = match sink.lock() {
            Ok(file) => file,
            Err(poisoned) => poisoned.into_inner(),
        };
        let _ = file.write_all(line.as_bytes());
    }

    /// The least level written.
    pub fn level(&self) -> LogLevel {
        self.level
    }

    /// The thread name in the second bracket.
    pub fn thread(&self) -> &str {
        &self.thread
    }

    /// Writes one line for `component` (`wasm`, `main`, `upstream`, …).
    pub fn log(&self, level: LogLevel, component: &str, message: &str) {
        if level < self.level {
            return;
        }
        let line = format!(
            "[{}][{}][{}][{}] {}\n",
            timestamp(wall_clock_millis()),
            self.thread,
            level.name(),
            component,
            message.replace('\n', "\\n")
        );
        // Nobody is left to tell if stderr is gone.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// `info` for `main`.
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, "main", message);
    }

    /// `warning` for `main`.
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, "main", message);
    }

    /// `error` for `main`.
    pub fn error(&self, message: &str) {
        self.log(LogLevel::Error, "main", message);
    }
}

/// The wall clock in Unix milliseconds. The one place `detour serve` reads the system
/// clock for display; the VM's clock is [`crate::serve::host::wall_time_nanos`].
pub fn wall_clock_millis() -> u64 {
    #[expect(
        clippy::disallowed_methods,
        reason = "log timestamps are wall-clock time by definition"
    )]
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DD hh:mm:ss.mmm` (UTC) for Unix milliseconds.
pub fn timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (y, mo, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    format!(
        "{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}.{:03}",
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(timestamp(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(timestamp(1_790_000_000_000), "2026-09-21 14:13:20.000");
    }
}
