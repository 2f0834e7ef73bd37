//! `retry_after::parse` on arbitrary header values and clocks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: (u64, Option<&str>, Option<&str>)| {
    detour_fuzz::retry_after(input.0, input.1, input.2);
});
