//! `SseUsage` fed an arbitrary stream in arbitrary chunk splits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detour_fuzz::sse(data);
});
