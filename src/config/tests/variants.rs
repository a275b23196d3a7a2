//! The "path variants that skip a rule" warning.

use super::super::load_str_checked;
use super::{test_env, Fixture, MINIMAL};

/// [`MINIMAL`]'s route `chat` (`path`, with a `require`), then `more`.
fn config(path: &str, more: &str) -> String {
    MINIMAL.replace("/rooms/{room}", &format!("\"{path}\""))
        + "    require: [{ claim: rooms, any_of: [lobby] }]\n"
        + more
}

fn variant_warnings(yaml: &str) -> Vec<String> {
    let fx = Fixture::new();
    let checked = load_str_checked(yaml, &fx.source(), test_env).unwrap_or_else(|e| panic!("{e}"));
    checked
        .warnings
        .iter()
        .filter(|w| w.message.contains(" this route and reach"))
        .map(|w| format!("{}: {}", w.path, w.message))
        .collect()
}

const CATCH_ALL: &str = "  - { id: all, path: \"/*\", upstream: ws://127.0.0.1:9001 }\n";

#[test]
fn a_catch_all_to_the_same_upstream_is_reported_with_each_variant() {
    let found = variant_warnings(&config("/rooms/{room}", CATCH_ALL));
    assert_eq!(found.len(), 1, "{found:#?}");
    let w = &found[0];
    for needle in [
        "routes[0].path: ",
        "`/ROOMS/X` (letter case)",
        "`/rooms/x/` (trailing slash)",
        "`/rooms/x/x` (extra segment)",
        "reach routes[1] (`all`)",
        "a `/*` form of this path",
    ] {
        assert!(w.contains(needle), "{needle} not in {w}");
    }
}

#[test]
fn a_prefix_route_leaves_only_letter_case() {
    let found = variant_warnings(&config("/rooms/{room}/*", CATCH_ALL));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("`/ROOMS/X` (letter case)"),
        "{}",
        found[0]
    );
    assert!(!found[0].contains("(trailing slash)"), "{}", found[0]);
    assert!(!found[0].contains("a `/*` form"), "{}", found[0]);
}

#[test]
fn a_public_catch_all_counts_too() {
    let public = "  - { id: pub, path: \"/*\", upstream: ws://127.0.0.1:9001, auth: none }\n";
    assert_eq!(variant_warnings(&config("/rooms/{room}", public)).len(), 1);
}

#[test]
fn no_warning_without_a_gap() {
    // Another upstream.
    let other = "  - { id: all, path: \"/*\", upstream: ws://127.0.0.1:9002 }\n";
    assert!(variant_warnings(&config("/rooms/{room}", other)).is_empty());
    // A broader route with rules of its own (here a deny route).
    let deny = "  - { id: rest, path: \"/*\", upstream: ws://127.0.0.1:9001, require: [{ claim: wsgate_deny, equals: never }] }\n";
    assert!(variant_warnings(&config("/rooms/{room}", deny)).is_empty());
    // Nothing after the protected route.
    assert!(variant_warnings(&config("/rooms/{room}", "")).is_empty());
    // A route without `require` protects nothing.
    let yaml = MINIMAL.replace("/rooms/{room}", "/rooms") + CATCH_ALL;
    assert!(variant_warnings(&yaml).is_empty());
}

#[test]
fn hosts_are_taken_into_account() {
    let elsewhere =
        "  - { id: all, host: other.example.com, path: \"/*\", upstream: ws://127.0.0.1:9001 }\n";
    let yaml = config("/rooms/{room}", elsewhere).replace(
        "    path: \"/rooms/{room}\"\n",
        "    host: chat.example.com\n    path: \"/rooms/{room}\"\n",
    );
    assert!(variant_warnings(&yaml).is_empty());
    let wildcard =
        "  - { id: all, host: \"*.example.com\", path: \"/*\", upstream: ws://127.0.0.1:9001 }\n";
    let yaml = config("/rooms/{room}", wildcard).replace(
        "    path: \"/rooms/{room}\"\n",
        "    host: chat.example.com\n    path: \"/rooms/{room}\"\n",
    );
    assert_eq!(variant_warnings(&yaml).len(), 1);
}
