//! `forward.headers` / `upstream.path` templates.
//!
//! Input: `template \n claims JSON [\n param value]`. The route parameter is
//! `room`.
//!
//! Oracles: no panic; a template without placeholders renders as its
//! literal text; in `render_path`, parameter values are percent-encoded
//! (a value never adds a `/`, `?`, `#`, `%`-less escape or a control byte).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wsgate::route::{is_safe_header_value, Params, Template};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let source = lines.next().unwrap_or("");
    let claims = lines
        .next()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .unwrap_or(Value::Null);
    let room = lines.next().unwrap_or("lobby");
    let mut params = Params::new();
    params.push("room", room);

    let Ok(t) = Template::parse(source) else {
        return;
    };
    let _ = t.placeholders().count();
    let rendered = t.render(&claims, &params);
    let _ = is_safe_header_value(&rendered);
    let path = t.render_path(&params);
    if t.is_literal() {
        let unescaped = source.replace("{{", "{").replace("}}", "}");
        assert_eq!(rendered, unescaped);
        assert_eq!(path, unescaped);
    }
    // A template made of just `{room}`: the path form is one segment.
    if let Ok(only) = Template::parse("{room}") {
        let p = only.render_path(&params);
        assert!(
            p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
            "{room:?} rendered into a path as {p:?}"
        );
    }
});
