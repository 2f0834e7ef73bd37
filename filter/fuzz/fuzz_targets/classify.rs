//! `classify::classify` on an arbitrary status and body.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: (Option<u16>, &[u8])| {
    detour_fuzz::classify(input.0, input.1);
});
