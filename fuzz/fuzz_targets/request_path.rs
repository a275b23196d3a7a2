//! Request path parsing and route lookup.
//!
//! Input: `host \n path [\n extra path pattern]*`. The table always holds a
//! protected `/admin/*` route first and a public catch-all `/*` last; extra
//! patterns from the input sit in between (they must parse or are skipped).
//!
//! Oracles:
//! - an accepted path has no `.`/`..`, empty (except a trailing one), control
//!   or backslash segment after decoding;
//! - the route table's answer does not depend on case or port of the host;
//! - differential: the path as a plain upstream resolves it (percent-decode
//!   once, then RFC 3986 dot-segment removal) must reach `/admin` only when
//!   the gateway routed it to the admin route. With `WSGATE_FUZZ_STRICT=1`
//!   the upstream model also decodes `%2F` into a separator and drops `;`
//!   path parameters (nginx-style and servlet-style readings); see README.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::route::{normalize_host, parse_request_path, RouteTable};

fn strict() -> bool {
    static S: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *S.get_or_init(|| std::env::var_os("WSGATE_FUZZ_STRICT").is_some())
}

fn pct_decode(raw: &str) -> Vec<u8> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = (b[i + 1] as char).to_digit(16);
            let l = (b[i + 2] as char).to_digit(16);
            if let (Some(h), Some(l)) = (h, l) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// How an upstream reads the raw path: segments after resolution.
fn upstream_view(raw: &str, decode_slash: bool, servlet: bool) -> Vec<Vec<u8>> {
    // Split on raw '/' first (RFC reading) unless %2F counts as a separator.
    let pieces: Vec<Vec<u8>> = if decode_slash {
        pct_decode(raw).split(|&c| c == b'/').map(<[u8]>::to_vec).collect()
    } else {
        raw.split('/').map(pct_decode).collect()
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    for mut seg in pieces {
        if servlet {
            if let Some(p) = seg.iter().position(|&c| c == b';') {
                seg.truncate(p);
            }
        }
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let host = lines.next().unwrap_or("");
    let raw = lines.next().unwrap_or("/");
    let extra: Vec<&str> = lines.take(4).collect();

    let _ = normalize_host(host);

    let mut entries: Vec<(Option<&str>, &str, usize)> = vec![(None, "/admin/*", 0)];
    for (i, p) in extra.iter().enumerate() {
        if wsgate::route::PathPattern::parse(p).is_ok() {
            entries.push((None, p, i + 2));
        }
    }
    entries.push((Some("*.example.com"), "/hosted/{x}", 90));
    entries.push((None, "/*", 1));
    let Ok(table) = RouteTable::build(entries) else {
        return;
    };

    let Ok(path) = parse_request_path(raw) else {
        return;
    };
    assert_eq!(path.raw(), raw);
    let segs = path.segments();
    for (i, s) in segs.iter().enumerate() {
        assert!(s.as_str() != "." && s.as_str() != "..", "dot segment {raw:?}");
        assert!(!s.is_empty() || i + 1 == segs.len(), "empty segment {raw:?}");
        assert!(!s.contains('\\') && !s.chars().any(char::is_control));
    }

    let found = table.find(Some(host), &path);
    let upper = host.to_ascii_uppercase();
    let again = table.find(Some(&upper), &path);
    assert_eq!(
        found.as_ref().map(|m| *m.route),
        again.as_ref().map(|m| *m.route),
        "host case changed the route"
    );
    if let Some(m) = &found {
        for (name, value) in m.params.iter() {
            assert!(!name.is_empty() && !value.is_empty());
        }
    }
    let route = found.map(|m| *m.route);

    let models: &[(bool, bool)] = if strict() {
        &[(false, false), (true, false), (false, true)]
    } else {
        &[(false, false)]
    };
    for &(decode_slash, servlet) in models {
        let view = upstream_view(raw, decode_slash, servlet);
        if view.first().map(Vec::as_slice) == Some(b"admin".as_slice()) {
            assert_eq!(
                route,
                Some(0),
                "{raw:?} reaches /admin upstream (decode_slash={decode_slash}, servlet={servlet}) but routed to {route:?}"
            );
        }
    }
});
