use serde_json::json;

use super::*;

fn t(source: &str) -> Template {
    Template::parse(source).expect("valid template")
}

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs.iter().copied().collect()
}

fn render(source: &str, claims: Value) -> String {
    t(source).render(&claims, &params(&[("room", "lobby")]))
}

// === parsing ===

#[test]
fn literal_text_has_no_placeholders() {
    let tpl = t("plain text");
    assert!(tpl.is_literal());
    assert_eq!(tpl.render(&json!({}), &Params::new()), "plain text");
}

#[test]
fn placeholders_are_listed_in_order() {
    let tpl = t("user-{claims.sub}@{room}/{claims.realm_access.roles}");
    assert_eq!(
        tpl.placeholders().collect::<Vec<_>>(),
        [
            Placeholder::Claim("sub"),
            Placeholder::Param("room"),
            Placeholder::Claim("realm_access.roles"),
        ]
    );
}

#[test]
fn claim_paths_may_contain_url_characters() {
    let tpl = t("{claims.https://example.com/roles}");
    assert_eq!(
        tpl.placeholders().collect::<Vec<_>>(),
        [Placeholder::Claim("https://example.com/roles")]
    );
}

#[test]
fn doubled_braces_are_errors_not_literal_braces() {
    // `{{claims.sub}}` is a placeholder in Mustache-style formats; reading
    // it as literal text would forward `{claims.sub}` without a warning.
    for (source, at) in [
        ("{{claims.sub}}", 0),
        ("x{{room}}", 1),
        ("{{", 0),
        ("a}}", 1),
        ("{room}}}", 6),
    ] {
        assert_eq!(
            Template::parse(source),
            Err(TemplateError::DoubleBrace { at }),
            "{source}"
        );
    }
}

#[test]
fn unbalanced_braces_are_errors() {
    assert_eq!(
        Template::parse("{room"),
        Err(TemplateError::Unclosed { at: 0 })
    );
    assert_eq!(
        Template::parse("a{b{c}"),
        Err(TemplateError::Unclosed { at: 1 })
    );
    assert_eq!(
        Template::parse("room}"),
        Err(TemplateError::Unopened { at: 4 })
    );
    assert_eq!(Template::parse("{"), Err(TemplateError::Unclosed { at: 0 }));
    assert_eq!(Template::parse("}"), Err(TemplateError::Unopened { at: 0 }));
}

#[test]
fn empty_or_malformed_names_are_errors() {
    assert_eq!(
        Template::parse("x{}"),
        Err(TemplateError::EmptyName { at: 1 })
    );
    for bad in [
        "{claims}",
        "{claims.}",
        "{claims.a..b}",
        "{claims.a b}",
        "{1room}",
        "{-room}",
        "{a b}",
        "{r\u{e9}}",
        "{.x}",
        "{room.x}",
    ] {
        assert!(
            matches!(Template::parse(bad), Err(TemplateError::BadName { .. })),
            "{bad}"
        );
    }
}

#[test]
fn error_offsets_are_byte_offsets_in_utf8_text() {
    assert_eq!(
        Template::parse("\u{e9}\u{e9}{x"),
        Err(TemplateError::Unclosed { at: 4 })
    );
}

// === render ===

#[test]
fn string_claim_renders_as_is() {
    assert_eq!(render("{claims.sub}", json!({"sub": "u-1"})), "u-1");
}

#[test]
fn literal_text_and_placeholders_combine() {
    assert_eq!(
        render("user-{claims.sub}@{room}", json!({"sub": "u1"})),
        "user-u1@lobby"
    );
}

#[test]
fn claim_arrays_are_joined_with_commas() {
    assert_eq!(
        render("{claims.roles}", json!({"roles": ["a", "b", 3, true]})),
        "a,b,3,true"
    );
}

#[test]
fn nested_values_in_arrays_render_as_json() {
    assert_eq!(
        render("{claims.x}", json!({"x": [["a"], {"k": 1}, null, "z"]})),
        "[\"a\"],{\"k\":1},,z"
    );
}

#[test]
fn numbers_and_bools_render_as_text() {
    assert_eq!(
        render(
            "{claims.n}/{claims.f}/{claims.b}",
            json!({"n": 42, "f": 1.5, "b": false})
        ),
        "42/1.5/false"
    );
}

#[test]
fn objects_render_as_compact_json() {
    assert_eq!(
        render("{claims.o}", json!({"o": {"a": [1, 2], "b": "c"}})),
        "{\"a\":[1,2],\"b\":\"c\"}"
    );
}

#[test]
fn missing_claims_and_params_render_empty() {
    let tpl = t("[{claims.nope}|{claims.null}|{other}]");
    assert_eq!(tpl.render(&json!({"null": null}), &Params::new()), "[||]");
    assert_eq!(tpl.render(&json!("not an object"), &Params::new()), "[||]");
}

#[test]
fn dotted_claim_paths_descend() {
    assert_eq!(
        render(
            "{claims.realm_access.roles}",
            json!({"realm_access": {"roles": ["x", "y"]}})
        ),
        "x,y"
    );
}

#[test]
fn render_does_not_sanitise_header_values() {
    let out = render("{claims.name}", json!({"name": "a\r\nX-Evil: 1"}));
    assert!(!is_safe_header_value(&out));
}

// === render_path ===

#[test]
fn path_params_are_encoded_as_one_segment() {
    let tpl = t("/ws/{room}");
    assert_eq!(tpl.render_path(&params(&[("room", "a/b")])), "/ws/a%2Fb");
    assert_eq!(
        tpl.render_path(&params(&[("room", "a b?#")])),
        "/ws/a%20b%3F%23"
    );
    assert_eq!(
        tpl.render_path(&params(&[("room", "caf\u{e9}")])),
        "/ws/caf%C3%A9"
    );
}

#[test]
fn path_params_keep_unreserved_characters() {
    let tpl = t("/ws/{room}");
    assert_eq!(
        tpl.render_path(&params(&[("room", "a-b_c.d~e")])),
        "/ws/a-b_c.d~e"
    );
}

#[test]
fn path_params_encode_percent_and_reserved_characters() {
    let tpl = t("/ws/{room}");
    assert_eq!(
        tpl.render_path(&params(&[("room", "%2e;x")])),
        "/ws/%252e%3Bx"
    );
    assert_eq!(tpl.render_path(&params(&[("room", "a\\b")])), "/ws/a%5Cb");
}

#[test]
fn path_param_cannot_become_a_dot_segment() {
    let tpl = t("/ws/{room}");
    assert_eq!(tpl.render_path(&params(&[("room", "..")])), "/ws/%2E%2E");
    assert_eq!(tpl.render_path(&params(&[("room", ".")])), "/ws/%2E");
    assert_eq!(tpl.render_path(&params(&[("room", "...")])), "/ws/...");
}

#[test]
fn path_literals_are_kept_and_claims_render_empty() {
    let tpl = t("/a%20b/{claims.sub}/x");
    assert_eq!(tpl.render_path(&Params::new()), "/a%20b//x");
}

// === header safety ===

#[test]
fn header_values_without_controls_are_safe() {
    assert!(is_safe_header_value(""));
    assert!(is_safe_header_value("admin,chat"));
    assert!(is_safe_header_value("tab\tok"));
    assert!(is_safe_header_value("caf\u{e9}"));
}

#[test]
fn cr_lf_nul_and_other_controls_are_unsafe() {
    for bad in ["a\rb", "a\nb", "a\0b", "a\u{7f}", "a\u{1b}[31m", "a\u{85}"] {
        assert!(!is_safe_header_value(bad), "{bad:?}");
    }
}

// === fill_params (require values) ===

#[test]
fn fill_params_reports_the_first_unfillable_placeholder() {
    let tpl = t("{a}-{b}");
    assert_eq!(tpl.fill_params(&params(&[("a", "1")])), Err("b".to_owned()));
    assert_eq!(
        tpl.fill_params(&params(&[("a", "1"), ("b", "2")])),
        Ok("1-2".to_owned())
    );
    assert_eq!(
        t("{claims.sub}").fill_params(&Params::new()),
        Err("claims.sub".to_owned())
    );
}

#[test]
fn large_templates_parse_in_linear_time() {
    let source = "{a}x".repeat(50_000);
    let tpl = t(&source);
    assert_eq!(tpl.placeholders().count(), 50_000);
    let unclosed = format!("{}{{", "x".repeat(100_000));
    assert!(Template::parse(&unclosed).is_err());
}
