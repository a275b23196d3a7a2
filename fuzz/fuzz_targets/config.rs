//! The config loader on arbitrary YAML text.
//!
//! `load_str(text, "/nonexistent/wsgate-fuzz/gateway.yaml", |_| None)`: relative
//! file references resolve into a folder that does not exist, `${VAR}` without
//! default is unset. Oracles: no panic, no hang; every error names the file,
//! and a reported line/column lies inside the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Absolute paths in the input could name devices (`/dev/zero`): the
    // loader reads files the operator names, which is not untrusted input.
    if text.contains("/dev/") || text.contains("/proc/") || text.contains("/sys/") {
        return;
    }
    let source = Path::new("/nonexistent/wsgate-fuzz/gateway.yaml");
    match wsgate::config::load_str(text, source, |_| None) {
        Ok(cfg) => {
            assert!(!cfg.listeners.is_empty());
            let _ = wsgate::config::summary(&cfg);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            // YAML counts a lone CR as a line break too (the first run of
            // this target flagged `text.lines()` undercounting them).
            let lines = text.replace("\r\n", "\n").replace('\r', "\n").split('\n').count() + 1;
            for e in errors.iter() {
                let shown = e.to_string();
                assert!(shown.contains("gateway.yaml"), "{shown}");
                if let Some(loc) = e.location {
                    assert!(loc.line <= lines, "line {} beyond {lines}: {shown}", loc.line);
                }
            }
        }
    }
});
