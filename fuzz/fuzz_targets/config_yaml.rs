//! Bytes → the file source's path: YAML → typed, validated resources → a
//! snapshot. Must never panic, hang, or allocate without bound (the limits of
//! docs/config.md, "Limits").
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file source refuses a file that is not UTF-8 before parsing it.
    if let Ok(src) = std::str::from_utf8(data) {
        let _ = mesh_agent::config::file::load_str("fuzz.yaml", src);
    }
});
