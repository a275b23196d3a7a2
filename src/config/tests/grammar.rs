//! One grammar for route patterns and templates: every case goes through the
//! config loader and through the router's own parser and matcher, and the two
//! must agree. (They once disagreed: the config refused `{room-id}`, which
//! the router accepted.)

use crate::route::{parse_request_path, PathPattern, RouteTable, Template};

use super::{Fixture, MINIMAL};

/// Loads [`MINIMAL`] with its route's path replaced.
fn load_path(fx: &Fixture, pattern: &str) -> Result<super::Config, super::ConfigErrors> {
    // Quoted, so YAML reads `{...}` and `*` as text.
    let quoted = serde_json::to_string(pattern).expect("json string");
    fx.load(&MINIMAL.replace("/rooms/{room}", &quoted))
}

/// A valid pattern, a request it must match, and the parameters it binds.
type Valid = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const VALID: &[Valid] = &[
    ("/rooms/{room}", "/rooms/a", &[("room", "a")]),
    ("/rooms/{room-id}", "/rooms/a", &[("room-id", "a")]),
    ("/rooms/{room_id}", "/rooms/a", &[("room_id", "a")]),
    ("/rooms/{_x}", "/rooms/a", &[("_x", "a")]),
    ("/t/{t}/r/{r}/*", "/t/1/r/2/x/y", &[("t", "1"), ("r", "2")]),
    ("/*", "/anything/at/all", &[]),
    ("/", "/", &[]),
    ("/caf%C3%A9", "/caf\u{e9}", &[]),
    ("/a%7Bb%7D", "/a%7Bb%7D", &[]),
];

/// Invalid patterns: the config and the router both refuse them.
const INVALID: &[&str] = &[
    "rooms",
    "/{1room}",
    "/{-room}",
    "/{claims}",
    "/{}",
    "/{{room}}",
    "/{room}}",
    "/a{",
    "/r-{room}",
    "/{a}/{a}",
    "/a/*/b",
    "/a*",
    "/a//b",
    "/a/../b",
    "/a%zz",
];

#[test]
fn valid_patterns_load_and_match_the_same_way() {
    let fx = Fixture::new();
    for (pattern, request, params) in VALID {
        let config =
            load_path(&fx, pattern).unwrap_or_else(|e| panic!("config refused {pattern}:\n{e}"));
        let table = RouteTable::build(
            config
                .routes
                .iter()
                .map(|r| (r.host.as_deref(), r.path.as_str(), r.id.clone())),
        )
        .unwrap_or_else(|e| panic!("router refused {pattern} the config accepted: {e}"));
        let request = parse_request_path(request).expect("valid request path");
        let found = table
            .find(None, &request)
            .unwrap_or_else(|| panic!("{pattern} did not match {}", request.raw()));
        let bound: Vec<(&str, &str)> = found.params.iter().collect();
        assert_eq!(bound, *params, "{pattern}");
    }
}

#[test]
fn invalid_patterns_fail_in_both() {
    let fx = Fixture::new();
    for pattern in INVALID {
        assert!(
            PathPattern::parse(pattern).is_err(),
            "router accepts {pattern}"
        );
        let errors = match load_path(&fx, pattern) {
            Ok(_) => panic!("config accepts {pattern}"),
            Err(e) => e,
        };
        assert!(
            errors
                .iter()
                .any(|e| e.path.to_string() == "routes[0].path"
                    && e.message.starts_with("the pattern ")),
            "{pattern}: {errors}"
        );
    }
}

/// (template, valid) for a header on a route with `{room}` and `{room-id}`.
const TEMPLATES: &[(&str, bool)] = &[
    ("{claims.sub}", true),
    ("user-{claims.sub}@{room}", true),
    ("{room-id}", true),
    ("{claims.realm_access.roles}", true),
    ("{claims.https://example.com/roles}", true),
    ("plain", true),
    ("{{claims.sub}}", false),
    ("a}}b", false),
    ("{claims.}", false),
    ("{claims.a..b}", false),
    ("{1x}", false),
    ("{room", false),
    ("room}", false),
    ("{}", false),
];

#[test]
fn templates_are_judged_the_same_way() {
    let fx = Fixture::new();
    for (template, valid) in TEMPLATES {
        assert_eq!(
            Template::parse(template).is_ok(),
            *valid,
            "router on {template}"
        );
        let yaml = MINIMAL.replace("/rooms/{room}", "\"/rooms/{room}/{room-id}\"")
            + &format!(
                "    forward: {{ headers: {{ X-A: {} }} }}\n",
                serde_json::to_string(template).expect("json string")
            );
        let loaded = fx.load(&yaml);
        assert_eq!(
            loaded.is_ok(),
            *valid,
            "config on {template}: {:?}",
            loaded.as_ref().err()
        );
    }
}
