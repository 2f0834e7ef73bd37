//! What the root context and the HTTP contexts of one VM share: the requests in flight,
//! which dispatched call belongs to which request, and the backoff deadlines.
//!
//! Why it exists: a wait is served by the root's tick, and an HTTP call started from the
//! tick answers on the root context (the SDK maps a token to the context that was running
//! when it was made). The root then needs the request's state, which the SDK keeps inside
//! the HTTP context object; so the state lives here, behind an `Rc`, and both hold it.
//! One registry per root context, so per VM and per worker thread: never shared across
//! threads, and nothing in it must survive a VM reload (shared data holds what must).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use detour_core::UnixMillis;

use crate::run::RequestState;

/// A request's state, shared by its HTTP context and the registry.
pub(crate) type SharedState = Rc<RefCell<RequestState>>;

/// The per-VM table of requests, calls and waits.
#[derive(Default)]
pub(crate) struct Registry {
    requests: HashMap<u32, SharedState>,
    calls: HashMap<u32, u32>,
    waits: Vec<(UnixMillis, u32)>,
}

impl Registry {
    pub(crate) fn add_request(&mut self, context_id: u32, state: SharedState) {
        self.requests.insert(context_id, state);
    }

    /// Forgets a finished or abandoned request with its calls and waits.
    pub(crate) fn remove_request(&mut self, context_id: u32) {
        self.requests.remove(&context_id);
        self.calls.retain(|_, ctx| *ctx != context_id);
        self.waits.retain(|(_, ctx)| *ctx != context_id);
    }

    pub(crate) fn request(&self, context_id: u32) -> Option<SharedState> {
        self.requests.get(&context_id).cloned()
    }

    pub(crate) fn add_call(&mut self, token: u32, context_id: u32) {
        self.calls.insert(token, context_id);
    }

    /// The request a call's answer belongs to.
    pub(crate) fn take_call(&mut self, token: u32) -> Option<u32> {
        self.calls.remove(&token)
    }

    pub(crate) fn add_wait(&mut self, at: UnixMillis, context_id: u32) {
        self.waits.retain(|(_, ctx)| *ctx != context_id);
        self.waits.push((at, context_id));
    }

    /// Requests whose wait is over at `now`, removed from the wait list, earliest first.
    pub(crate) fn take_due(&mut self, now: UnixMillis) -> Vec<u32> {
        let mut due: Vec<(UnixMillis, u32)> = Vec::new();
        self.waits.retain(|(at, ctx)| {
            if *at <= now {
                due.push((*at, *ctx));
                false
            } else {
                true
            }
        });
        due.sort_unstable();
        due.into_iter().map(|(_, ctx)| ctx).collect()
    }

    /// How many requests are tracked (for leak checks in tests and debug logs).
    #[cfg(test)]
    pub(crate) fn n_requests(&self) -> usize {
        self.requests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_come_due_in_order_and_once() {
        let mut registry = Registry::default();
        registry.add_wait(300, 3);
        registry.add_wait(100, 1);
        registry.add_wait(200, 2);
        assert_eq!(registry.take_due(250), vec![1, 2]);
        assert_eq!(registry.take_due(250), Vec::<u32>::new());
        assert_eq!(registry.take_due(300), vec![3]);
    }

    #[test]
    fn removing_a_request_drops_its_calls_and_waits() {
        let mut registry = Registry::default();
        registry.add_call(7, 1);
        registry.add_wait(10, 1);
        registry.remove_request(1);
        assert_eq!(registry.take_call(7), None);
        assert!(registry.take_due(u64::MAX).is_empty());
        assert_eq!(registry.n_requests(), 0);
    }
}
