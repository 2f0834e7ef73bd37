//! `config::load` on arbitrary text: never panics; a loaded config is self-consistent.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    detour_fuzz::config(text);
});
