use serde_json::json;

use super::*;

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn any_of(claim: &str, values: &[&str]) -> RequireRule {
    RequireRule {
        claim: claim.into(),
        op: RuleOp::AnyOf(strings(values)),
    }
}

fn all_of(claim: &str, values: &[&str]) -> RequireRule {
    RequireRule {
        claim: claim.into(),
        op: RuleOp::AllOf(strings(values)),
    }
}

fn equals(claim: &str, value: Value) -> RequireRule {
    RequireRule {
        claim: claim.into(),
        op: RuleOp::Equals(value),
    }
}

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs.iter().copied().collect()
}

fn check(rule: RequireRule, claims: Value) -> Result<(), FailureReason> {
    check_with(rule, claims, &Params::new())
}

fn check_with(rule: RequireRule, claims: Value, params: &Params) -> Result<(), FailureReason> {
    Rules::compile(&[rule])
        .check(&claims, params)
        .map_err(|f| f.reason)
}

// === finding claims ===

#[test]
fn dotted_path_descends_into_objects() {
    let claims = json!({"realm_access": {"roles": ["chat"]}});
    assert!(check(any_of("realm_access.roles", &["chat"]), claims).is_ok());
}

#[test]
fn key_containing_dots_is_tried_whole_first() {
    let claims = json!({"https://example.com/roles": ["admin"]});
    assert!(check(any_of("https://example.com/roles", &["admin"]), claims).is_ok());
}

#[test]
fn key_containing_dots_can_be_descended_into() {
    let claims = json!({"https://example.com/app": {"roles": ["admin"]}});
    assert!(check(any_of("https://example.com/app.roles", &["admin"]), claims).is_ok());
}

#[test]
fn whole_key_wins_over_a_split_path() {
    let claims = json!({"a.b": "whole", "a": {"b": "split"}});
    assert_eq!(lookup_claim(&claims, "a.b"), Some(&json!("whole")));
}

#[test]
fn lookup_backtracks_when_the_longest_key_leads_nowhere() {
    let claims = json!({"a.b": {"x": 1}, "a": {"b": {"c": 2}}});
    assert_eq!(lookup_claim(&claims, "a.b.c"), Some(&json!(2)));
}

#[test]
fn arrays_are_not_indexed() {
    let claims = json!({"roles": ["a", "b"]});
    assert_eq!(lookup_claim(&claims, "roles.0"), None);
}

#[test]
fn long_dotted_path_over_many_dotted_keys_terminates() {
    // Every prefix of a long dotted path exists, and the leaf never does.
    let mut claims = json!({});
    let path = vec!["a"; 40].join(".");
    for i in 1..40 {
        let key = vec!["a"; i].join(".");
        claims[key] = json!({});
    }
    assert_eq!(lookup_claim(&claims, &path), None);
}

#[test]
fn missing_claim_fails() {
    let claims = json!({"sub": "u1"});
    assert_eq!(
        check(any_of("roles", &["chat"]), claims),
        Err(FailureReason::MissingClaim)
    );
}

#[test]
fn null_claim_counts_as_missing() {
    let claims = json!({"roles": null});
    assert_eq!(
        check(any_of("roles", &["chat"]), claims),
        Err(FailureReason::MissingClaim)
    );
}

#[test]
fn claims_that_are_not_an_object_fail_without_panicking() {
    for claims in [json!(null), json!([1, 2]), json!("roles"), json!(3)] {
        assert_eq!(
            check(any_of("roles", &["chat"]), claims),
            Err(FailureReason::MissingClaim)
        );
    }
}

// === any_of / all_of ===

#[test]
fn any_of_needs_one_expected_value() {
    let claims = json!({"roles": ["user", "chat"]});
    assert!(check(any_of("roles", &["admin", "chat"]), claims.clone()).is_ok());
    assert_eq!(
        check(any_of("roles", &["admin"]), claims),
        Err(FailureReason::NotSatisfied)
    );
}

#[test]
fn all_of_needs_every_expected_value() {
    let claims = json!({"roles": ["user", "chat"]});
    assert!(check(all_of("roles", &["chat", "user"]), claims.clone()).is_ok());
    assert_eq!(
        check(all_of("roles", &["chat", "admin"]), claims),
        Err(FailureReason::NotSatisfied)
    );
}

#[test]
fn single_string_claim_is_a_one_value_set() {
    let claims = json!({"role": "admin"});
    assert!(check(any_of("role", &["admin"]), claims.clone()).is_ok());
    assert!(check(any_of("role", &["adm"]), claims).is_err());
}

#[test]
fn space_separated_scope_counts_as_set() {
    let claims = json!({"scope": "openid chat:read chat:write"});
    assert!(check(
        all_of("scope", &["chat:read", "chat:write"]),
        claims.clone()
    )
    .is_ok());
    assert!(check(
        any_of("scope", &["chat:admin", "chat:read"]),
        claims.clone()
    )
    .is_ok());
    assert!(check(all_of("scope", &["chat:read", "chat:admin"]), claims).is_err());
}

#[test]
fn spaced_string_also_equals_itself_as_a_whole() {
    let claims = json!({"group": "Domain Admins"});
    assert!(check(any_of("group", &["Domain Admins"]), claims).is_ok());
}

#[test]
fn repeated_spaces_never_make_an_empty_word_match() {
    let claims = json!({"scope": "a  b "});
    assert!(check(any_of("scope", &[""]), claims.clone()).is_err());
    assert!(check(all_of("scope", &["a", "b"]), claims).is_ok());
}

#[test]
fn array_elements_are_not_word_split() {
    let claims = json!({"groups": ["Domain Admins"]});
    assert!(check(any_of("groups", &["Domain Admins"]), claims.clone()).is_ok());
    assert!(check(any_of("groups", &["Admins"]), claims).is_err());
}

#[test]
fn numbers_and_bools_in_sets_compare_by_json_text() {
    let claims = json!({"rooms": [1, 42, true], "level": 3, "ok": true});
    assert!(check(any_of("rooms", &["42"]), claims.clone()).is_ok());
    assert!(check(any_of("rooms", &["true"]), claims.clone()).is_ok());
    assert!(check(any_of("level", &["3"]), claims.clone()).is_ok());
    assert!(check(any_of("ok", &["true"]), claims.clone()).is_ok());
    assert!(check(any_of("rooms", &["042"]), claims).is_err());
}

#[test]
fn nested_values_in_arrays_are_not_members() {
    let claims = json!({"roles": [["admin"], {"admin": true}, null]});
    assert_eq!(
        check(any_of("roles", &["admin"]), claims),
        Err(FailureReason::NotSatisfied)
    );
}

#[test]
fn object_claim_cannot_be_compared() {
    let claims = json!({"roles": {"admin": true}});
    assert_eq!(
        check(any_of("roles", &["admin"]), claims),
        Err(FailureReason::Uncomparable)
    );
}

#[test]
fn empty_lists_never_hold() {
    let claims = json!({"roles": ["chat"]});
    assert_eq!(
        check(any_of("roles", &[]), claims.clone()),
        Err(FailureReason::InvalidRule)
    );
    assert_eq!(
        check(all_of("roles", &[]), claims),
        Err(FailureReason::InvalidRule)
    );
}

#[test]
fn empty_expected_value_never_matches() {
    let claims = json!({"roles": [""], "name": ""});
    assert!(check(any_of("roles", &[""]), claims.clone()).is_err());
    assert!(check(equals("name", json!("")), claims).is_err());
}

// === placeholders ===

#[test]
fn param_placeholder_is_filled_from_the_path() {
    let claims = json!({"rooms": ["a b", "c"]});
    let p = params(&[("room", "a b")]);
    assert!(check_with(any_of("rooms", &["{room}"]), claims.clone(), &p).is_ok());
    let p = params(&[("room", "d")]);
    assert!(check_with(any_of("rooms", &["{room}"]), claims, &p).is_err());
}

#[test]
fn placeholder_can_be_part_of_a_value() {
    let claims = json!({"scope": "room:42:read"});
    let p = params(&[("room", "42")]);
    assert!(check_with(all_of("scope", &["room:{room}:read"]), claims, &p).is_ok());
}

#[test]
fn missing_param_fails_the_rule_even_if_another_value_matches() {
    let claims = json!({"roles": ["admin", ""]});
    assert_eq!(
        check(any_of("roles", &["{room}", "admin"]), claims),
        Err(FailureReason::MissingParam("room".into()))
    );
}

#[test]
fn claim_placeholder_in_a_rule_never_fills() {
    let claims = json!({"sub": "u1", "owner": "u1"});
    assert_eq!(
        check(equals("owner", json!("{claims.sub}")), claims),
        Err(FailureReason::MissingParam("claims.sub".into()))
    );
}

#[test]
fn broken_template_makes_the_rule_fail() {
    let claims = json!({"roles": ["{room"]});
    assert_eq!(
        check(any_of("roles", &["{room"]), claims),
        Err(FailureReason::InvalidRule)
    );
}

#[test]
fn doubled_braces_make_the_rule_fail() {
    // `{{room}}` is not an escape (see route::template): config validation
    // refuses it, and a rule built around validation never matches.
    let claims = json!({"roles": ["{room}"]});
    assert_eq!(
        check(any_of("roles", &["{{room}}"]), claims),
        Err(FailureReason::InvalidRule)
    );
}

// === equals ===

#[test]
fn equals_compares_strings_exactly() {
    let claims = json!({"tenant": "acme", "scope": "a b"});
    assert!(check(equals("tenant", json!("acme")), claims.clone()).is_ok());
    assert!(check(equals("tenant", json!("ACME")), claims.clone()).is_err());
    assert!(check(equals("scope", json!("a")), claims.clone()).is_err());
    assert!(check(equals("scope", json!("a b")), claims).is_ok());
}

#[test]
fn equals_with_param_compares_the_decoded_value() {
    let claims = json!({"tenant": "a/b"});
    let p = params(&[("tenant", "a/b")]);
    assert!(check_with(equals("tenant", json!("{tenant}")), claims.clone(), &p).is_ok());
    let p = params(&[("tenant", "other")]);
    assert!(check_with(equals("tenant", json!("{tenant}")), claims, &p).is_err());
}

#[test]
fn equals_compares_numbers_numerically() {
    let claims = json!({"level": 3, "ratio": 1.0, "big": u64::MAX});
    assert!(check(equals("level", json!(3)), claims.clone()).is_ok());
    assert!(check(equals("level", json!(3.0)), claims.clone()).is_ok());
    assert!(check(equals("ratio", json!(1)), claims.clone()).is_ok());
    assert!(check(equals("big", json!(u64::MAX)), claims.clone()).is_ok());
    assert!(check(equals("level", json!(4)), claims.clone()).is_err());
    assert!(check(equals("level", json!(-3)), claims).is_err());
}

#[test]
fn number_claim_equals_a_string_only_when_it_is_its_exact_text() {
    let claims = json!({"tenant": 42});
    for (value, ok) in [
        ("42", true),
        ("042", false),
        ("42.0", false),
        (" 42", false),
    ] {
        let p = params(&[("tenant", value)]);
        let got = check_with(equals("tenant", json!("{tenant}")), claims.clone(), &p);
        assert_eq!(got.is_ok(), ok, "{value}");
    }
}

#[test]
fn string_claim_equals_a_number_only_when_it_is_its_exact_text() {
    assert!(check(equals("tenant", json!(42)), json!({"tenant": "42"})).is_ok());
    assert!(check(equals("tenant", json!(42)), json!({"tenant": "42.0"})).is_err());
}

#[test]
fn equals_compares_bools_and_their_text() {
    assert!(check(equals("ok", json!(true)), json!({"ok": true})).is_ok());
    assert!(check(equals("ok", json!(true)), json!({"ok": false})).is_err());
    assert!(check(equals("ok", json!(true)), json!({"ok": "true"})).is_ok());
    assert!(check(equals("ok", json!(true)), json!({"ok": "True"})).is_err());
    assert!(check(equals("ok", json!(true)), json!({"ok": 1})).is_err());
    assert!(check(equals("ok", json!("true")), json!({"ok": true})).is_ok());
}

#[test]
fn equals_never_matches_arrays_or_objects() {
    for claim in [json!(["acme"]), json!({"acme": true})] {
        let claims = json!({ "tenant": claim });
        assert_eq!(
            check(equals("tenant", json!("acme")), claims),
            Err(FailureReason::Uncomparable)
        );
    }
}

#[test]
fn equals_with_a_non_scalar_expected_value_never_holds() {
    for value in [json!(null), json!(["a"]), json!({"a": 1})] {
        let claims = json!({"tenant": "a"});
        assert_eq!(
            check(equals("tenant", value), claims),
            Err(FailureReason::InvalidRule)
        );
    }
}

// === the rule list ===

#[test]
fn every_rule_must_hold_and_the_first_failure_is_reported() {
    let rules = Rules::compile(&[
        any_of("roles", &["chat"]),
        all_of("scope", &["chat:write"]),
        equals("tenant", json!("acme")),
    ]);
    let claims = json!({"roles": ["chat"], "scope": "chat:read", "tenant": "other"});
    let failure = rules.check(&claims, &Params::new()).expect_err("must fail");
    assert_eq!(failure.index, 1);
    assert_eq!(failure.claim, "scope");
    assert_eq!(failure.reason, FailureReason::NotSatisfied);
    assert_eq!(
        failure.to_string(),
        "require[1] on claim \"scope\": the claim's value does not satisfy the rule"
    );
}

#[test]
fn no_rules_always_hold() {
    let rules = Rules::compile(&[]);
    assert!(rules.is_empty());
    assert!(rules.check(&json!(null), &Params::new()).is_ok());
}

#[test]
fn failure_message_never_contains_claim_values() {
    let claims = json!({"email": "secret@example.com"});
    let failure = Rules::compile(&[equals("email", json!("x@example.com"))])
        .check(&claims, &Params::new())
        .expect_err("must fail");
    assert!(!failure.to_string().contains("secret"));
}

#[test]
fn deeply_nested_claims_do_not_break_the_engine() {
    let mut deep = json!("leaf");
    for _ in 0..100 {
        deep = json!([deep, {"x": deep.clone()}]);
        if deep.to_string().len() > 100_000 {
            break;
        }
    }
    let claims = json!({ "roles": deep });
    assert!(check(any_of("roles", &["leaf"]), claims.clone()).is_err());
    assert!(check(equals("roles", json!("leaf")), claims).is_err());
}
