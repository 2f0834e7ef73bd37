//! A provider's answer, stream or error in any protocol, translated for any client
//! protocol, whole and in arbitrary chunk splits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detour_fuzz::protocol(data);
});
