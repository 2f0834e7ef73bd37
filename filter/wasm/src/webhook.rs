//! The events webhook: events wait in a per-VM queue and the root context's tick posts
//! them in batches, so no request ever waits for the webhook.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use detour_core::event::Event;
use detour_core::webhook::{self, Webhook};

/// A hard cap on queued events per VM, whatever the config says: memory stays bounded
/// even before the config is read.
const HARD_MAX: usize = 100_000;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static QUEUE: RefCell<VecDeque<Event>> = const { RefCell::new(VecDeque::new()) };
    static DROPPED: Cell<u64> = const { Cell::new(0) };
}

/// Turns queueing on (a webhook is configured) or off.
pub(crate) fn enable(on: bool) {
    ENABLED.with(|e| e.set(on));
    if !on {
        QUEUE.with(|q| q.borrow_mut().clear());
    }
}

/// Queues an event for the next post.
pub(crate) fn push(event: &Event) {
    if !ENABLED.with(Cell::get) {
        return;
    }
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        if q.len() >= HARD_MAX {
            q.pop_front();
            DROPPED.with(|d| d.set(d.get().saturating_add(1)));
        }
        q.push_back(event.clone());
    });
}

/// The next post's body, if any events wait: at most `batch_max` of them, after dropping
/// the oldest beyond `buffer_max`.
pub(crate) fn next_batch(hook: &Webhook) -> Option<Vec<u8>> {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        while q.len() > hook.buffer_max {
            q.pop_front();
            DROPPED.with(|d| d.set(d.get().saturating_add(1)));
        }
        if q.is_empty() {
            return None;
        }
        let n = q.len().min(hook.batch_max);
        let batch: Vec<Event> = q.drain(..n).collect();
        let dropped = DROPPED.with(|d| d.replace(0));
        Some(webhook::body(hook.format, &batch, dropped))
    })
}
