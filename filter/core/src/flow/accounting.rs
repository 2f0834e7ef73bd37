//! The flow's money and rate side: the human gate and tag overrun on the first poll,
//! reserving budget and RPM/TPM before each attempt, settling after the answer.

use super::{chain, Flow, Reason, Step};
use crate::budget::{self, Refusal, Reservation};
use crate::config::{Config, DeploymentIdx, FallbackKind};
use crate::event::{Event, FallbackReason};
use crate::fleet::rates::{self as fleet_rates, RateRefusal, TokenHold};
use crate::fleet::sync as fleet_sync;
use crate::halt;
use crate::price;
use crate::rate;
use crate::respond;
use crate::store::Store;
use crate::usage::Usage;
use crate::UnixMillis;

/// How long a request that found no leased room waits before it looks again: one of the
/// root context's ticks, which lease `wanted` as soon as they see it.
const LEASE_WAIT_MS: u64 = 50;

/// The skip of an attempt the fleet ledger would have to cover while it is unreachable:
/// worth another look after one sync interval.
fn fleet_down(config: &Config, now: UnixMillis) -> NotAdmitted {
    let interval = config.fleet.as_ref().map_or(1_000, |f| f.sync_interval_ms);
    (
        Reason::FleetUnreachable,
        FallbackReason::Budget,
        Some(now.saturating_add(interval)),
    )
}

/// What an attempt holds until its answer is settled.
#[derive(Debug)]
pub(super) struct Pending {
    deployment: DeploymentIdx,
    reservation: Reservation,
    /// Tokens taken from the deployment's TPM window at their estimate.
    tokens: u64,
    /// Fleet mode: the same tokens held in the fleet's TPM account.
    fleet_tokens: TokenHold,
    /// The answer went to the client: settle it (with its usage, or at the estimate).
    delivered: bool,
}

/// Why an attempt was not admitted: the skip reason, the fallback reason for the event,
/// and when the deployment may have room again.
type NotAdmitted = (Reason, FallbackReason, Option<UnixMillis>);

impl Flow {
    /// The first poll's checks: a halt answers at once; a stage tag whose budget is used
    /// up sends the request to the tag's overrun group.
    pub(super) fn begin<S: Store + ?Sized>(
        &mut self,
        config: &Config,
        store: &mut S,
        now: UnixMillis,
    ) -> Option<Step> {
        if let Ok(Some(halt)) = halt::read(store) {
            if halt::holds(&halt, config) {
                self.finished = true;
                self.outcome = Some("halted");
                return Some(Step::Respond(respond::halted(&halt, config)));
            }
            // The budget that halted was raised by a reloaded config: traffic resumes.
            if halt::clear(store).unwrap_or(false) {
                self.events.push(Event::Resume {
                    ts: now,
                    by: "config".into(),
                });
            }
        }
        let tag = self.stage.clone()?;
        let limit = config.budgets.tag_limit(&tag)?;
        let account = budget::account(store, limit, now).ok()?;
        if !budget::reached(
            account.spent.saturating_add(account.reserved),
            limit.limit_nanos,
            100,
        ) {
            return None;
        }
        let (_, overrun) = config
            .budgets
            .tag_overrun
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(&tag))?;
        self.tag_overrun = true;
        self.events.push(Event::TagOverrun {
            ts: now,
            tag,
            from_group: self.group.clone(),
            to_group: overrun.clone(),
        });
        let mut groups = vec![overrun.clone()];
        groups.extend(
            config
                .fallbacks
                .targets(overrun, FallbackKind::General)
                .iter()
                .cloned(),
        );
        self.queue = chain(config, &groups, self.seed);
        None
    }

    /// Takes the attempt's request and tokens from the deployment's RPM/TPM window and
    /// reserves its estimated cost in every budget it touches; refuses when either is full.
    pub(super) fn admit<S: Store + ?Sized>(
        &mut self,
        config: &Config,
        store: &mut S,
        now: UnixMillis,
        idx: DeploymentIdx,
    ) -> Result<(), NotAdmitted> {
        let Some(deployment) = config.deployment(idx) else {
            return Ok(());
        };
        let input = self.request.estimated_input_tokens;
        let output = self
            .request
            .output_estimate(config.budgets.default_max_tokens);
        let tokens = input.saturating_add(output);
        let limits = rate::Limits {
            rpm: deployment.rpm,
            tpm: deployment.tpm,
        };
        let rate_limited = limits.rpm.is_some() || limits.tpm.is_some();
        if rate_limited {
            // A broken store fails open here: the provider still enforces its own limits.
            if let Ok(Err(at)) = rate::take(store, &deployment.id, now, limits, tokens) {
                return Err((
                    Reason::LocalRateLimit,
                    FallbackReason::RateLimitLocal,
                    Some(at),
                ));
            }
        }
        let applicable =
            config
                .budgets
                .applicable(deployment, self.stage.as_deref(), self.tag_overrun);
        let estimate = deployment
            .price
            .map(|p| {
                price::cost_nanos(
                    &p,
                    &Usage {
                        prompt_tokens: input,
                        completion_tokens: output,
                        cached_prompt_tokens: 0,
                        cache_write_tokens: 0,
                    },
                )
            })
            .unwrap_or(0);
        let reservation = if applicable.is_empty() {
            Reservation::default()
        } else {
            match budget::reserve_in(
                store,
                &config.budgets.limits,
                &applicable,
                now,
                estimate,
                config.fleet.is_some(),
            ) {
                Ok(reservation) => reservation,
                Err(refusal) => {
                    if rate_limited {
                        rate::untake(store, &deployment.id, now, tokens);
                    }
                    if matches!(refusal, Refusal::Uncovered(_)) {
                        // The ledger is down and this process's leases are spent: closed,
                        // at once.
                        if fleet_sync::unreachable(store) {
                            return Err(fleet_down(config, now));
                        }
                        // The fleet has room, this process's leases do not cover it yet:
                        // wait for the next lease (the tick asks for `wanted` at once),
                        // up to one call's time limit, instead of refusing what the fleet
                        // would allow. Past that limit it is refused like the rest.
                        self.wait_for_lease(config, now);
                    }
                    // Budgets fail closed: money is not spent on a guess.
                    return Err((Reason::BudgetExhausted, FallbackReason::Budget, None));
                }
            }
        };
        let mut fleet_tokens = TokenHold::default();
        if rate_limited && config.fleet.is_some() {
            // The fleet's RPM/TPM last, so a refusal gives back only local counts.
            match fleet_rates::take(store, deployment, now, tokens) {
                Ok(hold) => fleet_tokens = hold,
                Err(refusal) => {
                    budget::release(store, &reservation);
                    rate::untake(store, &deployment.id, now, tokens);
                    if refusal == RateRefusal::Uncovered && fleet_sync::unreachable(store) {
                        return Err(fleet_down(config, now));
                    }
                    if refusal == RateRefusal::Uncovered && self.wait_for_lease(config, now) {
                        return Err((Reason::LocalRateLimit, FallbackReason::RateLimitLocal, None));
                    }
                    let next_minute = now.saturating_add(60_000).saturating_sub(now % 60_000);
                    return Err((
                        Reason::LocalRateLimit,
                        FallbackReason::RateLimitLocal,
                        Some(next_minute),
                    ));
                }
            }
        }
        self.pending = Some(Pending {
            deployment: idx,
            reservation,
            tokens,
            fleet_tokens,
            delivered: false,
        });
        Ok(())
    }

    /// Fleet mode: whether an attempt without leased room waits for the next lease (the
    /// tick asks for it at once) rather than being refused: up to one call's time limit
    /// per request, so a request never waits on an unreachable ledger for long.
    fn wait_for_lease(&mut self, config: &Config, now: UnixMillis) -> bool {
        let Some(fleet) = &config.fleet else {
            return false;
        };
        let ends = *self
            .lease_wait_ends
            .get_or_insert(now.saturating_add(fleet.call_timeout_ms));
        if now >= ends {
            return false;
        }
        self.lease_wait = Some(now.saturating_add(LEASE_WAIT_MS));
        true
    }

    /// The attempt's answer goes to the client; its cost is settled when it completes.
    pub(super) fn mark_delivered(&mut self) {
        if let Some(pending) = &mut self.pending {
            pending.delivered = true;
        }
    }

    /// The attempt failed: give back its reservation (its request still counts for RPM:
    /// the provider saw it).
    pub(super) fn release_pending<S: Store + ?Sized>(&mut self, store: &mut S) {
        if let Some(pending) = self.pending.take() {
            budget::release(store, &pending.reservation);
            fleet_rates::release(store, &pending.fleet_tokens);
        }
    }

    /// The delivered answer is complete: settle its reservation to the cost of the usage
    /// the provider reported. Without a report (a stream cut short, a body without
    /// `usage`) the estimate is charged: detour never counts an answer as free.
    pub fn settle<S: Store + ?Sized>(
        &mut self,
        config: &Config,
        store: &mut S,
        now: UnixMillis,
        usage: Option<Usage>,
    ) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        if !pending.delivered {
            budget::release(store, &pending.reservation);
            fleet_rates::release(store, &pending.fleet_tokens);
            return;
        }
        let Some(deployment) = config.deployment(pending.deployment) else {
            return;
        };
        self.settled_usage = usage;
        let cost = match (usage, deployment.price) {
            (Some(usage), Some(price)) => price::cost_nanos(&price, &usage),
            _ => pending.reservation.estimate,
        };
        self.settled_cost = Some(cost);
        fleet_rates::settle(
            store,
            &pending.fleet_tokens,
            usage.map(|u| u.prompt_tokens.saturating_add(u.completion_tokens)),
        );
        if deployment.rpm.is_some() || deployment.tpm.is_some() {
            if let Some(usage) = usage {
                let actual = usage.prompt_tokens.saturating_add(usage.completion_tokens);
                let _ = rate::reconcile(store, &deployment.id, now, pending.tokens, actual);
            }
        }
        let crossings = budget::settle(store, &config.budgets.limits, &pending.reservation, cost);
        if config.fleet.is_some() {
            // Thresholds and the halt are judged on the fleet's spend, by the tick that
            // reports it (`fleet::sync::on_report`), not on this process's share.
            return;
        }
        for crossing in &crossings {
            let Some(limit) = config.budgets.limits.get(crossing.limit_idx) else {
                continue;
            };
            self.events.push(budget::alert(
                limit,
                limit.period.start(now),
                crossing.percent,
                crossing.spent,
                now,
            ));
        }
        for (idx, _, _) in &pending.reservation.held {
            let Some(limit) = config.budgets.limits.get(*idx) else {
                continue;
            };
            if let Ok(account) = budget::account(store, limit, now) {
                self.events
                    .extend(halt::halt_if_reached(store, limit, account.spent, now));
            }
        }
    }

    /// The request ended before its answer completed (the client went away, the host
    /// dropped the stream): a delivered answer is charged at its estimate, an undelivered
    /// reservation is released.
    pub fn abandon<S: Store + ?Sized>(&mut self, config: &Config, store: &mut S, now: UnixMillis) {
        self.settle(config, store, now, None);
    }

    /// Whether an answer is delivered and not yet settled (the glue then owes a `settle`).
    pub fn awaiting_settlement(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.delivered)
    }
}
