//! `ParsedRequest::parse` on arbitrary bytes against a fixed config.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    detour_fuzz::request(body);
});
