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
