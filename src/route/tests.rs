use super::*;

fn table(
    entries: &[(Option<&'static str>, &'static str, &'static str)],
) -> RouteTable<&'static str> {
    RouteTable::build(entries.iter().map(|&(h, p, id)| (h, p, id))).expect("valid table")
}

fn find<'t>(t: &'t RouteTable<&'static str>, host: Option<&str>, raw: &str) -> Option<&'t str> {
    let path = parse_request_path(raw).expect("valid path");
    t.find(host, &path).map(|m| *m.route)
}

#[test]
fn first_match_in_file_order_wins_over_more_specific() {
    let t = table(&[(None, "/*", "catch-all"), (None, "/rooms/{room}", "rooms")]);
    assert_eq!(find(&t, None, "/rooms/a"), Some("catch-all"));
}

#[test]
fn later_routes_match_when_earlier_ones_do_not() {
    let t = table(&[
        (None, "/admin/*", "admin"),
        (None, "/rooms/{room}", "rooms"),
        (None, "/*", "fallback"),
    ]);
    assert_eq!(find(&t, None, "/rooms/a"), Some("rooms"));
    assert_eq!(find(&t, None, "/admin"), Some("admin"));
    assert_eq!(find(&t, None, "/other"), Some("fallback"));
}

#[test]
fn no_route_matches_gives_none() {
    let t = table(&[(None, "/ws", "ws")]);
    assert_eq!(find(&t, None, "/nope"), None);
    let empty: RouteTable<()> = RouteTable::build(Vec::new()).expect("empty table");
    assert!(empty.is_empty());
}

#[test]
fn host_bound_route_needs_a_matching_host() {
    let t = table(&[
        (Some("chat.example.com"), "/*", "chat"),
        (Some("*.example.com"), "/*", "any-sub"),
        (None, "/*", "any-host"),
    ]);
    assert_eq!(find(&t, Some("chat.example.com:8443"), "/x"), Some("chat"));
    assert_eq!(find(&t, Some("CHAT.example.com."), "/x"), Some("chat"));
    assert_eq!(find(&t, Some("eu.example.com"), "/x"), Some("any-sub"));
    assert_eq!(find(&t, Some("example.com"), "/x"), Some("any-host"));
    assert_eq!(find(&t, Some("[::1]:8080"), "/x"), Some("any-host"));
}

#[test]
fn missing_or_unreadable_host_only_matches_hostless_routes() {
    let t = table(&[(Some("chat.example.com"), "/*", "chat")]);
    assert_eq!(find(&t, None, "/x"), None);
    assert_eq!(find(&t, Some("chat.example.com:x"), "/x"), None);
    assert_eq!(find(&t, Some("chat.example.com@evil"), "/x"), None);
}

#[test]
fn match_carries_decoded_params() {
    let t = table(&[(None, "/t/{tenant}/rooms/{room}", "rooms")]);
    let path = parse_request_path("/t/acme/rooms/a%20b").expect("valid path");
    let m = t.find(None, &path).expect("match");
    assert_eq!(*m.route, "rooms");
    assert_eq!(m.params.get("tenant"), Some("acme"));
    assert_eq!(m.params.get("room"), Some("a b"));
    assert_eq!(m.params.get("other"), None);
    assert_eq!(m.params.len(), 2);
}

#[test]
fn build_error_names_the_failing_entry() {
    let err =
        RouteTable::build([(None, "/ok", 0), (Some("a.*.com"), "/ok", 1)]).expect_err("bad host");
    assert_eq!(err.entry, Some(1));
    assert_eq!(err.target, PatternTarget::Host);

    let err = RouteTable::build([(None, "/ok", 0), (None, "/ok", 1), (None, "no-slash", 2)])
        .expect_err("bad path");
    assert_eq!(err.entry, Some(2));
    assert_eq!(err.target, PatternTarget::Path);
}

#[test]
fn routes_are_listed_in_file_order() {
    let t = table(&[(None, "/a", "a"), (None, "/b", "b")]);
    assert_eq!(t.routes().copied().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(t.len(), 2);
}

#[test]
fn params_collect_and_keep_order() {
    let p: Params = [("a", "1"), ("b", "2")].into_iter().collect();
    assert_eq!(p.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
    assert!(Params::new().is_empty());
}

#[test]
fn first_value_wins_for_a_repeated_param_name() {
    let mut p = Params::new();
    p.push("a", "1");
    p.push("a", "2");
    assert_eq!(p.get("a"), Some("1"));
}

/// xorshift: deterministic, no dependency, good enough to shake parsers.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn noise(state: &mut u64) -> String {
    const PIECES: &[&str] = &[
        "/",
        "/",
        "a",
        ".",
        "..",
        "%",
        "%2e",
        "%2E",
        "%2f",
        "%5c",
        "%00",
        "%c3",
        "%a9",
        "%ff",
        "{",
        "}",
        "{{",
        "x}",
        "claims.",
        ";",
        ":",
        "[",
        "]",
        "*",
        "\\",
        "\u{e9}",
        "\u{1F600}",
        "\r",
        "\n",
        " ",
        "?",
        "#",
        "%25",
        "9",
        "F",
        "-",
    ];
    let len = next(state) % 24;
    (0..len)
        .map(|_| PIECES[(next(state) % PIECES.len() as u64) as usize])
        .collect()
}

#[test]
fn arbitrary_input_never_panics_and_accepted_paths_are_clean() {
    let mut state = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..20_000 {
        let input = noise(&mut state);
        let _ = normalize_host(&input);
        let _ = HostPattern::parse(&input);
        let _ = PathPattern::parse(&input);
        if let Ok(tpl) = Template::parse(&input) {
            let p: Params = [("a", input.as_str())].into_iter().collect();
            let _ = tpl.render(&serde_json::json!({"a": [input.clone()]}), &p);
            let _ = tpl.render_path(&p);
        }
        if let Ok(path) = parse_request_path(&input) {
            let segments = path.segments();
            for (i, s) in segments.iter().enumerate() {
                assert!(s != "." && s != "..", "{input:?}");
                assert!(
                    !s.contains('\\') && !s.chars().any(char::is_control),
                    "{input:?}"
                );
                assert!(!s.is_empty() || i + 1 == segments.len(), "{input:?}");
            }
        }
    }
}

#[test]
fn rendered_path_param_reparses_as_the_same_single_segment() {
    let mut state = 0x2545_F491_4F6C_DD1D;
    let tpl = Template::parse("/ws/{v}").expect("valid template");
    for _ in 0..20_000 {
        let value = noise(&mut state);
        // Values a request path could have produced: non-empty, no controls.
        if value.is_empty() || value.chars().any(char::is_control) || value.contains('\\') {
            continue;
        }
        let p: Params = [("v", value.as_str())].into_iter().collect();
        let rendered = tpl.render_path(&p);
        let parsed = parse_request_path(&rendered);
        let Ok(parsed) = parsed else {
            // Only dot-like values, and values with `/` or `;` (refused in
            // any request path), may be refused.
            let head = value.split(';').next().unwrap_or("");
            assert!(
                head.chars().all(|c| c == '.' || c == ' ')
                    || value.contains('/')
                    || value.contains(';'),
                "{value:?} -> {rendered:?}"
            );
            continue;
        };
        assert_eq!(parsed.segments(), ["ws", value.as_str()], "{rendered:?}");
    }
}
