//! Arbitrary sequences of requests, answers, clock moves, settles and abandons against
//! one shared store, checked against the budget and termination invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|ops: Vec<detour_fuzz::Op>| {
    detour_fuzz::flow(&ops);
});
