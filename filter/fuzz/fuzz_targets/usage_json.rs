//! `usage::from_json_body` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    detour_fuzz::usage_json(body);
});
