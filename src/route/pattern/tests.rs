use super::*;

fn segs(raw: &str) -> Vec<String> {
    parse_request_path(raw)
        .expect("valid path")
        .segments()
        .to_vec()
}

fn err(raw: &str) -> PathError {
    parse_request_path(raw).expect_err("path must be refused")
}

fn path(pattern: &str, raw: &str) -> Option<Vec<(String, String)>> {
    let pattern = PathPattern::parse(pattern).expect("valid pattern");
    let request = parse_request_path(raw).expect("valid path");
    pattern.matches(&request).map(|p| {
        p.iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    })
}

fn host(pattern: &str, authority: &str) -> bool {
    let pattern = HostPattern::parse(pattern).expect("valid pattern");
    normalize_host(authority).is_some_and(|h| pattern.matches(&h))
}

fn path_problem(pattern: &str) -> PatternProblem {
    PathPattern::parse(pattern).expect_err("invalid").problem
}

fn host_problem(pattern: &str) -> PatternProblem {
    HostPattern::parse(pattern).expect_err("invalid").problem
}

// === request paths ===

#[test]
fn root_has_no_segments() {
    assert!(segs("/").is_empty());
}

#[test]
fn segments_are_percent_decoded() {
    assert_eq!(segs("/rooms/caf%C3%A9/a%20b"), ["rooms", "café", "a b"]);
}

#[test]
fn raw_path_is_kept_for_the_upstream() {
    let p = parse_request_path("/a%20b/c").expect("valid");
    assert_eq!(p.raw(), "/a%20b/c");
}

#[test]
fn encoded_slash_is_refused() {
    // One segment here, two to a backend that decodes before resolving.
    assert_eq!(err("/rooms/a%2Fb"), PathError::EncodedSlash);
    assert_eq!(err("/rooms/a%2fb"), PathError::EncodedSlash);
    assert_eq!(err("/x%2F..%2Fadmin"), PathError::EncodedSlash);
    assert_eq!(err("/admin%2Fusers"), PathError::EncodedSlash);
}

#[test]
fn path_parameters_are_refused() {
    // `/admin;x=1/y` is `/admin/y` to servlet containers.
    assert_eq!(err("/admin;jsessionid=1/x"), PathError::Parameter);
    assert_eq!(err("/a/;../b"), PathError::Parameter);
    assert_eq!(err("/a/%3Bx"), PathError::Parameter);
}

#[test]
fn trailing_slash_is_a_final_empty_segment() {
    assert_eq!(segs("/a/"), ["a", ""]);
}

#[test]
fn path_must_be_origin_form() {
    assert_eq!(err(""), PathError::NotOriginForm);
    assert_eq!(err("rooms/a"), PathError::NotOriginForm);
    assert_eq!(err("*"), PathError::NotOriginForm);
    assert_eq!(err("http://example.com/a"), PathError::NotOriginForm);
}

#[test]
fn dot_segments_are_rejected() {
    for raw in [
        "/.", "/..", "/a/./b", "/a/../b", "/a/..", "/a/.", "/../a", "/./",
    ] {
        assert_eq!(err(raw), PathError::DotSegment, "{raw}");
    }
}

#[test]
fn percent_encoded_dot_segment_is_rejected() {
    for raw in [
        "/a/%2e%2e/b",
        "/a/%2E%2e",
        "/%2e",
        "/a/.%2E/b",
        "/a/%2E./b",
        "/%2E",
    ] {
        assert_eq!(err(raw), PathError::DotSegment, "{raw}");
    }
}

#[test]
fn dot_segment_with_path_parameter_is_rejected() {
    assert_eq!(err("/a/..;x=1/b"), PathError::DotSegment);
    assert_eq!(err("/a/.;/b"), PathError::DotSegment);
    assert_eq!(err("/a/%2e%2e%3b/b"), PathError::DotSegment);
}

#[test]
fn dot_and_space_only_segments_are_rejected() {
    assert_eq!(err("/a/..."), PathError::DotSegment);
    assert_eq!(err("/a/..%20"), PathError::DotSegment);
}

#[test]
fn names_with_dots_are_fine() {
    assert_eq!(
        segs("/.well-known/x..y/..a/a.."),
        [".well-known", "x..y", "..a", "a.."]
    );
}

#[test]
fn double_encoded_dots_decode_once_and_are_not_a_dot_segment() {
    assert_eq!(segs("/a/%252e%252e/b"), ["a", "%2e%2e", "b"]);
}

#[test]
fn invalid_percent_escapes_are_rejected() {
    for raw in ["/%", "/a%", "/a%4", "/%zz", "/%4g", "/%%41", "/%é9", "/%+1"] {
        assert_eq!(err(raw), PathError::BadEscape, "{raw}");
    }
}

#[test]
fn escapes_that_are_not_utf8_are_rejected() {
    assert_eq!(err("/%ff"), PathError::NotUtf8);
    assert_eq!(err("/%C3"), PathError::NotUtf8);
    assert_eq!(err("/%ED%A0%80"), PathError::NotUtf8);
}

#[test]
fn control_characters_are_rejected_raw_or_decoded() {
    for raw in [
        "/a%00",
        "/%0d%0aX-Evil:1",
        "/a%09",
        "/a%7F",
        "/a%C2%85",
        "/a\0b",
        "/a\u{1}",
    ] {
        assert_eq!(err(raw), PathError::ControlChar, "{raw:?}");
    }
}

#[test]
fn backslashes_are_rejected_raw_or_decoded() {
    assert_eq!(err("/a\\..\\b"), PathError::Backslash);
    assert_eq!(err("/a/%5c"), PathError::Backslash);
    assert_eq!(err("/a/%5C..%5Cadmin"), PathError::Backslash);
}

#[test]
fn empty_segments_are_rejected() {
    for raw in ["//", "//admin", "/a//b", "/a//", "///"] {
        assert_eq!(err(raw), PathError::EmptySegment, "{raw}");
    }
}

#[test]
fn query_fragment_and_space_are_not_path_characters() {
    assert_eq!(err("/a?b"), PathError::IllegalChar);
    assert_eq!(err("/a#b"), PathError::IllegalChar);
    assert_eq!(err("/a b"), PathError::IllegalChar);
}

#[test]
fn over_long_paths_are_rejected() {
    let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
    assert_eq!(err(&long), PathError::TooLong);
    let ok = format!("/{}", "a/".repeat((MAX_PATH_LEN - 2) / 2));
    assert!(parse_request_path(&ok).is_ok());
}

#[test]
fn raw_non_ascii_is_taken_literally() {
    assert_eq!(segs("/caf\u{e9}/\u{1F600}"), ["caf\u{e9}", "\u{1F600}"]);
}

// === path patterns ===

#[test]
fn exact_pattern_matches_only_itself() {
    assert!(path("/ws", "/ws").is_some());
    assert!(path("/ws", "/ws/").is_none());
    assert!(path("/ws", "/ws/x").is_none());
    assert!(path("/ws", "/wss").is_none());
    assert!(path("/ws", "/").is_none());
}

#[test]
fn root_pattern_matches_only_root() {
    assert!(path("/", "/").is_some());
    assert!(path("/", "/a").is_none());
}

#[test]
fn prefix_matches_itself_and_below() {
    for raw in ["/chat", "/chat/", "/chat/a", "/chat/a/b/c"] {
        assert!(path("/chat/*", raw).is_some(), "{raw}");
    }
}

#[test]
fn prefix_is_segment_aware() {
    assert!(path("/chat/*", "/chatroom").is_none());
    assert!(path("/chat/*", "/cha").is_none());
    assert!(path("/chat/*", "/").is_none());
}

#[test]
fn root_prefix_matches_everything() {
    for raw in ["/", "/a", "/a/b/"] {
        assert!(path("/*", raw).is_some(), "{raw}");
    }
}

#[test]
fn literal_segments_are_case_sensitive() {
    assert!(path("/Chat", "/chat").is_none());
    assert!(path("/chat/*", "/CHAT/x").is_none());
}

#[test]
fn literal_segments_compare_decoded() {
    assert!(path("/caf%C3%A9", "/caf%c3%a9").is_some());
    assert!(path("/caf\u{e9}", "/caf%C3%A9").is_some());
}

#[test]
fn param_binds_one_decoded_segment() {
    assert_eq!(
        path("/rooms/{room}", "/rooms/caf%C3%A9"),
        Some(vec![("room".into(), "café".into())])
    );
}

#[test]
fn param_does_not_match_zero_or_two_segments() {
    assert!(path("/rooms/{room}", "/rooms").is_none());
    assert!(path("/rooms/{room}", "/rooms/").is_none());
    assert!(path("/rooms/{room}", "/rooms/a/b").is_none());
}

#[test]
fn params_before_a_prefix_are_bound() {
    assert_eq!(
        path("/t/{tenant}/rooms/{room}/*", "/t/acme/rooms/42/x/y"),
        Some(vec![
            ("tenant".into(), "acme".into()),
            ("room".into(), "42".into())
        ])
    );
}

#[test]
fn pattern_with_trailing_slash_matches_only_trailing_slash() {
    assert!(path("/a/", "/a/").is_some());
    assert!(path("/a/", "/a").is_none());
}

#[test]
fn malformed_path_patterns_are_errors() {
    assert_eq!(path_problem(""), PatternProblem::NotAbsolute);
    assert_eq!(path_problem("rooms"), PatternProblem::NotAbsolute);
    assert_eq!(path_problem("//a"), PatternProblem::EmptySegment);
    assert_eq!(path_problem("/a//b"), PatternProblem::EmptySegment);
    assert_eq!(path_problem("/a//*"), PatternProblem::EmptySegment);
    assert_eq!(path_problem("/a*"), PatternProblem::MisplacedPathWildcard);
    assert_eq!(path_problem("/*/a"), PatternProblem::MisplacedPathWildcard);
    assert_eq!(path_problem("/a/**"), PatternProblem::MisplacedPathWildcard);
    assert_eq!(path_problem("/{room"), PatternProblem::BadParam);
    assert_eq!(path_problem("/room-{id}"), PatternProblem::BadParam);
    assert_eq!(path_problem("/{}"), PatternProblem::BadParam);
    assert_eq!(path_problem("/{a b}"), PatternProblem::BadParam);
    assert_eq!(path_problem("/{claims}"), PatternProblem::BadParam);
    assert_eq!(path_problem("/{1a}"), PatternProblem::BadParam);
    assert_eq!(path_problem("/{-a}"), PatternProblem::BadParam);
    assert_eq!(path_problem("/{{a}}"), PatternProblem::BadParam);
    assert_eq!(path_problem("/{a}}"), PatternProblem::BadParam);
    assert_eq!(path_problem("/a{"), PatternProblem::BadParam);
    assert_eq!(
        path_problem("/{a}/{a}"),
        PatternProblem::DuplicateParam("a".into())
    );
    assert_eq!(
        path_problem("/a/../b"),
        PatternProblem::Segment(PathError::DotSegment)
    );
    assert_eq!(
        path_problem("/a%zz"),
        PatternProblem::Segment(PathError::BadEscape)
    );
}

#[test]
fn param_names_may_hold_letters_digits_underscore_and_hyphen() {
    for name in ["room", "room_id", "room-id", "_x", "R2", "a-"] {
        let p = PathPattern::parse(&format!("/r/{{{name}}}")).expect(name);
        assert_eq!(p.param_names().collect::<Vec<_>>(), [name]);
    }
}

#[test]
fn literal_braces_are_written_percent_encoded() {
    assert!(path("/a%7Bb%7D", "/a%7bb%7d").is_some());
}

#[test]
fn param_names_are_listed_in_order() {
    let p = PathPattern::parse("/t/{tenant}/r/{room_id}/*").expect("valid");
    assert_eq!(p.param_names().collect::<Vec<_>>(), ["tenant", "room_id"]);
}

#[test]
fn pattern_error_names_the_pattern_and_problem() {
    let e = PathPattern::parse("/a*").expect_err("invalid");
    assert_eq!(e.target, PatternTarget::Path);
    assert_eq!(e.entry, None);
    assert!(e
        .to_string()
        .starts_with("path pattern \"/a*\" may only use `*`"));
}

// === hosts ===

#[test]
fn exact_host_is_case_insensitive() {
    assert!(host("chat.example.com", "Chat.EXAMPLE.com"));
    assert!(host("Chat.Example.COM", "chat.example.com"));
    assert!(!host("chat.example.com", "chat.example.org"));
}

#[test]
fn request_port_is_ignored() {
    assert!(host("chat.example.com", "chat.example.com:8443"));
    assert!(host("chat.example.com", "chat.example.com:"));
}

#[test]
fn trailing_dot_is_ignored() {
    assert!(host("chat.example.com", "chat.example.com."));
    assert!(host("chat.example.com.", "chat.example.com"));
    assert!(host("chat.example.com", "chat.example.com.:80"));
}

#[test]
fn wildcard_host_matches_any_depth_of_subdomain() {
    assert!(host("*.example.com", "a.example.com"));
    assert!(host("*.example.com", "a.b.example.com:443"));
    assert!(host("*.Example.com", "A.EXAMPLE.COM"));
}

#[test]
fn wildcard_host_does_not_match_apex() {
    assert!(!host("*.example.com", "example.com"));
    assert!(!host("*.example.com", ".example.com"));
    assert!(!host("*.example.com", "badexample.com"));
    assert!(!host("*.example.com", "example.com.evil.org"));
}

#[test]
fn ipv6_literal_hosts_match_with_or_without_brackets() {
    assert!(host("[::1]", "[::1]:8080"));
    assert!(host("::1", "[::1]"));
    assert!(host("[2001:DB8::1]", "[2001:db8::1]:443"));
    assert!(!host("[::1]", "[::2]"));
}

#[test]
fn ipv4_hosts_match_exactly() {
    assert!(host("127.0.0.1", "127.0.0.1:9000"));
    assert!(!host("127.0.0.1", "127.0.0.10"));
}

#[test]
fn unreadable_hosts_normalise_to_none() {
    for raw in [
        "",
        ":80",
        "a.example.com:80:90",
        "a.example.com:8x",
        "::1",
        "[::1",
        "[::1]x",
        "[zz]",
        "user@example.com",
        "a..example.com",
        ".example.com",
        "ex ample.com",
        "\u{e9}xample.com",
        "example.com/x",
    ] {
        assert_eq!(normalize_host(raw), None, "{raw:?}");
    }
}

#[test]
fn malformed_host_patterns_are_errors() {
    assert_eq!(host_problem(""), PatternProblem::Empty);
    assert_eq!(host_problem("*"), PatternProblem::MisplacedHostWildcard);
    assert_eq!(host_problem("*."), PatternProblem::MisplacedHostWildcard);
    assert_eq!(
        host_problem("a.*.com"),
        PatternProblem::MisplacedHostWildcard
    );
    assert_eq!(
        host_problem("*example.com"),
        PatternProblem::MisplacedHostWildcard
    );
    assert_eq!(
        host_problem("*.*.com"),
        PatternProblem::MisplacedHostWildcard
    );
    assert_eq!(
        host_problem("example.com:8443"),
        PatternProblem::HostWithPort
    );
    assert_eq!(host_problem("[::1]:8443"), PatternProblem::HostWithPort);
    assert_eq!(host_problem("ex ample.com"), PatternProblem::HostChar);
    assert_eq!(host_problem("b\u{fc}cher.de"), PatternProblem::HostChar);
    assert_eq!(host_problem("a..com"), PatternProblem::EmptyLabel);
    assert_eq!(host_problem("*..com"), PatternProblem::EmptyLabel);
}

#[test]
fn host_pattern_with_one_colon_is_a_port_not_ipv6() {
    assert_eq!(host_problem("cafe:80"), PatternProblem::HostWithPort);
    assert_eq!(normalize_host("cafe:80").as_deref(), Some("cafe"));
}

#[test]
fn example_paths_match_their_pattern() {
    for pattern in [
        "/",
        "/*",
        "/ws",
        "/rooms/{room}",
        "/t/{t}/r/*",
        "/caf%C3%A9 x/{a}",
        "/a/",
    ] {
        let p = PathPattern::parse(pattern).expect("valid");
        let example = parse_request_path(&p.example("x")).expect("valid request");
        assert!(
            p.matches(&example).is_some(),
            "{pattern}: {}",
            example.raw()
        );
    }
    let p = PathPattern::parse("/rooms/{room}/*").expect("valid");
    assert_eq!(p.example("x"), "/rooms/x");
    assert!(p.is_prefix());
}
