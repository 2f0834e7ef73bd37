//! Fleet mode's calls: the root context's tick keeps this process's leases topped up and
//! reports its spend to the fleet ledger (`detour state`, or Redis inside `detour serve`).
//! Every decision is `detour_core::fleet::sync`'s; this file only reads records, makes
//! the calls and hands back the answers.

use std::collections::HashMap;

use detour_core::config::Config;
use detour_core::fleet::sync::{self, Answer, Call, Pass, SlotSpec};
use detour_core::fleet::Fleet;
use detour_core::probe;
use detour_core::store::Store;
use detour_core::UnixMillis;
use proxy_wasm::types::{BufferType, MapType};

use crate::host::{self, SharedData};
use crate::run::log_event;

/// The shared round record: one worker per sync interval makes the full round.
const ROUND_KEY: &str = "detour/v1/fleet/round";

/// The largest answer read from the state service (its answers are under 1 KiB).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// This worker's fleet calls.
#[derive(Default)]
pub(crate) struct FleetSync {
    /// Calls in flight: token → the slot and the call.
    calls: HashMap<u32, (SlotSpec, Call)>,
    /// This worker looks for a due round at most this often.
    next_round_check: UnixMillis,
    /// The process's holder id, read once.
    holder: Option<String>,
}

/// Creates what the tick writes before workers take traffic: the holder id (one per
/// process, first writer wins) and the lease records.
pub(crate) fn prepare(config: &Config, now: UnixMillis) {
    if config.fleet.is_none() {
        return;
    }
    if let Ok(None) = SharedData.get(sync::HOLDER_KEY) {
        // Unique enough across a fleet: the process's start, to the nanosecond.
        let id = format!("{:x}", host::now_nanos());
        let _ = SharedData.set(sync::HOLDER_KEY, id.as_bytes(), None);
    }
    sync::ensure_slots(&mut SharedData, config, now);
}

impl FleetSync {
    /// Once per tick: the full round when this worker claims it, else only the current
    /// slots a request waits on or whose room runs low (`sync::plan`'s urgent pass).
    pub(crate) fn tick(&mut self, config: &Config, now: UnixMillis) {
        let Some(fleet) = &config.fleet else {
            return;
        };
        let mut pass = Pass::Urgent;
        if now >= self.next_round_check {
            self.next_round_check = now.saturating_add(fleet.sync_interval_ms / 2);
            if probe::claim_round_at(&mut SharedData, ROUND_KEY, now, fleet.sync_interval_ms)
                .unwrap_or(false)
            {
                pass = Pass::Round;
                sync::ensure_slots(&mut SharedData, config, now);
            }
        }
        // Between rounds, an unreachable ledger is left alone: the round retries it.
        if pass == Pass::Urgent && sync::unreachable(&SharedData) {
            return;
        }
        for spec in sync::slots(config, now) {
            if pass == Pass::Urgent && !spec.current {
                continue;
            }
            self.look_at(fleet, &spec, now, pass);
        }
    }

    fn look_at(&mut self, fleet: &Fleet, spec: &SlotSpec, now: UnixMillis, pass: Pass) {
        let (slot, account) = if pass == Pass::Round {
            match sync::refresh(&mut SharedData, fleet, spec, now) {
                Ok(both) => both,
                Err(_) => return,
            }
        } else {
            (
                sync::read_slot(&SharedData, spec),
                sync::read_account(&SharedData, spec),
            )
        };
        let Some(call) = sync::plan(fleet, spec, &slot, &account, now, pass) else {
            return;
        };
        self.send(fleet, spec, call, now);
    }

    fn send(&mut self, fleet: &Fleet, spec: &SlotSpec, call: Call, now: UnixMillis) {
        if !sync::begin(&mut SharedData, fleet, spec, &call, now).unwrap_or(false) {
            return;
        }
        let holder = self.holder();
        let (path, body) = call.request(spec, fleet, &holder);
        let headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), path),
            (":authority".to_string(), fleet.state.authority()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        match host::dispatch(&fleet.state.cluster, &headers, &body, fleet.call_timeout_ms) {
            Ok(token) => {
                self.calls.insert(token, (spec.clone(), call));
            }
            Err(status) => {
                // No such cluster, or a thread that cannot call out: as unreachable.
                log::debug!("detour: fleet call not sent ({status:?})");
                self.answered(fleet, spec, &call, &Answer::Failed, now);
            }
        }
    }

    fn holder(&mut self) -> String {
        if let Some(holder) = &self.holder {
            return holder.clone();
        }
        let holder = SharedData
            .get(sync::HOLDER_KEY)
            .ok()
            .flatten()
            .and_then(|(b, _)| String::from_utf8(b).ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("{:x}", host::now_nanos()));
        self.holder = Some(holder.clone());
        holder
    }

    /// The answer to one of this worker's calls; false when the token is not a fleet call.
    pub(crate) fn on_answer(
        &mut self,
        config: &Config,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) -> bool {
        let Some((spec, call)) = self.calls.remove(&token) else {
            return false;
        };
        let Some(fleet) = &config.fleet else {
            return true;
        };
        let status = if num_headers > 0 {
            host::header(MapType::HttpCallResponseHeaders, ":status")
                .and_then(|s| s.trim().parse::<u16>().ok())
        } else {
            None
        };
        let body = if body_size > 0 {
            host::buffer(
                BufferType::HttpCallResponseBody,
                body_size,
                MAX_ANSWER_BYTES,
            )
        } else {
            Vec::new()
        };
        let answer = sync::parse_answer(&call, status, &body);
        let now = host::now_ms();
        if answer == Answer::Failed {
            log::debug!(
                "detour: the fleet ledger did not answer a {} (status {status:?})",
                match call {
                    Call::Lease { .. } => "lease",
                    Call::Return(_) => "return",
                }
            );
        }
        let ok = answer != Answer::Failed;
        self.answered(fleet, &spec, &call, &answer, now);
        for event in sync::on_report(&mut SharedData, config, &spec, &call, &answer, now) {
            log_event(&event);
        }
        if ok {
            // A new lease lets the old one go now rather than a round later.
            self.look_at(fleet, &spec, now, Pass::Round);
        }
        true
    }

    fn answered(
        &mut self,
        fleet: &Fleet,
        spec: &SlotSpec,
        call: &Call,
        answer: &Answer,
        now: UnixMillis,
    ) {
        match sync::on_answer(&mut SharedData, fleet, spec, call, answer, now) {
            Ok(reach) => {
                if let Some(event) = sync::note_reach(&mut SharedData, fleet, reach, now) {
                    log_event(&event);
                }
            }
            Err(err) => log::warn!("detour: fleet slot not updated: {err:?}"),
        }
    }
}
