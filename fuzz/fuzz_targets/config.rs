//! The config loader on arbitrary YAML text.
//!
//! `load_str_checked(text, "/nonexistent/wsgate-fuzz/gateway.yaml", |_| None)`
//! (what `wsgate check` runs: validation builds every part of the runtime
//! that can fail on a config, without binding or reaching the network):
//! relative file references resolve into a folder that does not exist,
//! `${VAR}` without default is unset. Oracles: no panic, no hang; every error
//! and every warning names the file, and a reported line/column lies inside
//! the text.
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
    // Nor through a double-quoted scalar's escapes (`"\x2Fdev\x2Fzero"`, an
    // escaped line break inside `/dev/`).
    if text.contains('"') && text.contains('\\') {
        return;
    }
    let source = Path::new("/nonexistent/wsgate-fuzz/gateway.yaml");
    // YAML counts a lone CR as a line break too (the first run of this
    // target flagged `text.lines()` undercounting them).
    let lines = text.replace("\r\n", "\n").replace('\r', "\n").split('\n').count() + 1;
    let named_and_inside = |e: &wsgate::config::ConfigError| {
        let shown = e.to_string();
        assert!(shown.contains("gateway.yaml"), "{shown}");
        if let Some(loc) = e.location {
            assert!(loc.line <= lines, "line {} beyond {lines}: {shown}", loc.line);
        }
    };
    let checked = wsgate::config::load_str_checked(text, source, |_| None);
    match &checked {
        Ok(c) => {
            assert!(!c.config.listeners.is_empty());
            let _ = wsgate::config::summary(&c.config);
            c.warnings.iter().for_each(named_and_inside);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            errors.iter().for_each(named_and_inside);
        }
    }
});
