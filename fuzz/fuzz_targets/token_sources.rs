//! Token extraction and stripping on a request head built from bytes.
//!
//! Input: first byte picks the source order; then lines: the request target
//! (`/path?query`), then `name: value` header lines. Lines that `http` refuses
//! are skipped. The whole text after the first byte is also fed to
//! `parse_first_message`.
//!
//! Oracles: no panic; a token found by one source is a non-empty string;
//! after `strip_carriers` (`token: strip`) no source of the route yields any
//! token from the forwarded request, and the upstream's subprotocol offer
//! never holds the token (no token may reach the upstream); with `keep`, the
//! only token left is the verified one. `WSGATE_FUZZ_STRICT=1` also checks
//! the cases of a token offered twice, of a token from another source
//! also offered as a bare subprotocol, and of an untrimmed first-message
//! token or one read from a JSON array (see README, findings 1, 6 and 7).
#![no_main]

use http::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use wsgate::auth::sources::{extract, parse_first_message, split_subprotocols, strip_carriers};
use wsgate::config::TokenSource;

fn sources(sel: u8) -> Vec<TokenSource> {
    let all = [
        TokenSource::Header,
        TokenSource::Subprotocol,
        TokenSource::Query("access_token".into()),
        TokenSource::Cookie("access_token".into()),
        TokenSource::FirstMessage(Default::default()),
    ];
    // Rotate by sel, and drop some with the high bits.
    let n = all.len();
    (0..n)
        .map(|i| all[(i + sel as usize) % n].clone())
        .enumerate()
        .filter(|(i, _)| sel & (0x80 >> i) == 0 || *i == 0)
        .map(|(_, s)| s)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        let pointer = wsgate::config::FirstMessage {
            pointer: Some("/payload/token".into()),
            forward: true,
        };
        let strict = std::env::var_os("WSGATE_FUZZ_STRICT").is_some();
        for spec in [wsgate::config::FirstMessage::default(), pointer] {
            if let Some(t) = parse_first_message(text, &spec) {
                assert!(!t.is_empty());
                // Known (README, finding 7): without a pointer, the `token`
                // or `jwt` member is taken untrimmed, and a JSON array is
                // read as the members in order (`[" x", "y"]`). Checked only
                // in strict mode.
                if spec.pointer.is_some() || strict {
                    assert!(!t.starts_with(' ') && !t.ends_with(' '), "untrimmed {t:?}");
                    let doc: serde_json::Value = serde_json::from_str(text).expect("JSON");
                    assert!(doc.is_object(), "a first message that is no JSON object");
                }
            }
        }
    }
    let mut lines = rest.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or(b"/");
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    let mut req = http::Request::get("/");
    if let Ok(uri) = target.parse::<http::Uri>() {
        req = req.uri(uri);
    }
    let Ok(req) = req.body(()) else {
        return;
    };
    let (mut parts, ()) = req.into_parts();
    for line in lines.take(64) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(value.trim_ascii()),
        ) else {
            continue;
        };
        parts.headers.append(name, value);
    }

    let _ = split_subprotocols(&parts.headers);
    let order = sources(sel);
    let Some(found) = extract(&order, &parts) else {
        return;
    };
    assert!(!found.token.is_empty());
    // Known (README, finding 1): a token offered twice as a subprotocol,
    // `bearer, T, bearer, T`, survives the strip. Checked only in strict mode
    // so the run keeps looking for anything else.
    let offered_twice = found.source == TokenSource::Subprotocol
        && split_subprotocols(&parts.headers).1.contains(&found.token);
    if offered_twice && std::env::var_os("WSGATE_FUZZ_STRICT").is_none() {
        return;
    }
    assert!(order.contains(&found.source));
    // The header carriers a request forwards (the subprotocol header is
    // rebuilt from the application protocols, checked below).
    let carried: Vec<TokenSource> = order
        .iter()
        .filter(|s| !matches!(s, TokenSource::Subprotocol | TokenSource::FirstMessage(_)))
        .cloned()
        .collect();
    let mut kept = parts.clone();
    strip_carriers(&mut parts, &order, None);
    for source in &carried {
        let again = extract(std::slice::from_ref(source), &parts);
        assert!(again.is_none(), "a token is still extractable from {source:?} after strip");
    }
    // Known (README, finding 6): the verified token, found in another
    // source, offered again as a bare subprotocol (`Sec-WebSocket-Protocol:
    // T`, no `bearer` before it) stays in the upstream's offer. Checked only
    // in strict mode.
    let offered_bare = found.source != TokenSource::Subprotocol;
    if !offered_bare || std::env::var_os("WSGATE_FUZZ_STRICT").is_some() {
        assert!(
            !split_subprotocols(&parts.headers).1.contains(&found.token),
            "the token stays in the upstream's subprotocol offer"
        );
    }
    strip_carriers(&mut kept, &order, Some(&found));
    for source in &carried {
        if let Some(again) = extract(std::slice::from_ref(source), &kept) {
            assert_eq!(again.token, found.token, "an unverified token rides along with keep");
        }
    }
});
