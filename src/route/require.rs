//! The `require` rule engine: every rule of a route must hold for the
//! verified claims, or the handshake gets 403.
//!
//! # Finding a claim
//!
//! A rule's `claim` is a dotted path (`realm_access.roles`). Claim names may
//! themselves contain dots (`"https://example.com/roles"`), so at each object
//! level the whole remaining path is tried as a key first, then the longest
//! key prefix ending before a dot, then shorter ones, descending into each
//! candidate in turn. Arrays are not indexed. A `null` claim counts as
//! missing, and a missing claim fails the rule.
//!
//! # Comparing
//!
//! For `any_of` / `all_of` a claim is a set of strings:
//!
//! - a string is the set of its space-separated words *plus* the whole
//!   string, so an OAuth `scope: "chat:read chat:write"` holds `chat:read`,
//!   and a single group named `"Domain Admins"` still equals itself;
//! - an array is the set of its elements' string forms, elements not split
//!   (strings as is, numbers as JSON text, `true` / `false`); nested arrays,
//!   objects and nulls inside are not members;
//! - a number or bool is the one-element set of its JSON text;
//! - an object is no set: the rule fails.
//!
//! `equals` compares scalars: string to string exactly (no word split),
//! number to number numerically (`1` equals `1.0`), bool to bool. A string
//! against a number or bool is equal only when the string is exactly the
//! other's JSON text: `"42"` equals `42` (a `{tenant}` parameter is always a
//! string, and many tokens carry numeric ids), but `"042"`, `"42.0"` and
//! `" 42"` do not, because the upstream sees the path's text and may not read
//! those as `42`; `"true"` equals `true` (some identity providers emit bools
//! as strings).
//!
//! Expected values may hold `{param}` placeholders, filled with the decoded
//! path parameters. A placeholder that cannot be filled fails the rule, an
//! empty expected value never matches, an empty `any_of` / `all_of` list
//! never holds, and a value that is not a valid template (an unbalanced
//! brace) makes its rule always fail: a rule that cannot be evaluated denies.

use serde_json::{Number, Value};
use thiserror::Error;

use super::template::Template;
use super::Params;
pub use crate::auth::claims::lookup_claim;
use crate::config::{RequireRule, RuleOp};

/// Compiled `require` rules of one route.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    claim: String,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    AnyOf(Vec<Template>),
    AllOf(Vec<Template>),
    EqualsText(Template),
    EqualsNumber(Number),
    EqualsBool(bool),
    /// An expected value that can never be compared: a broken template, an
    /// empty list, or an `equals` that is not a scalar.
    Never,
}

/// Which rule failed and why; for the log line (the client only sees 403).
/// Claim values are left out on purpose: they may be personal data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("require[{index}] on claim {claim:?}: {reason}")]
pub struct RuleFailure {
    /// Position of the rule in the route's `require` list.
    pub index: usize,
    pub claim: String,
    pub reason: FailureReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FailureReason {
    #[error("the claim is missing")]
    MissingClaim,
    #[error("placeholder {{{0}}} has no value")]
    MissingParam(String),
    #[error("the claim is an object or another shape the rule cannot compare")]
    Uncomparable,
    #[error("the claim's value does not satisfy the rule")]
    NotSatisfied,
    #[error("the rule's expected value can never match")]
    InvalidRule,
}

impl Rules {
    pub fn compile(rules: &[RequireRule]) -> Rules {
        Rules {
            rules: rules
                .iter()
                .map(|r| Rule {
                    claim: r.claim.clone(),
                    op: compile_op(&r.op),
                })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `Ok` when every rule holds; otherwise the first failure.
    pub fn check(&self, claims: &Value, params: &Params) -> Result<(), RuleFailure> {
        for (index, rule) in self.rules.iter().enumerate() {
            rule.check(claims, params).map_err(|reason| RuleFailure {
                index,
                claim: rule.claim.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

fn compile_op(op: &RuleOp) -> Op {
    let list = |values: &[String]| -> Option<Vec<Template>> {
        if values.is_empty() {
            return None;
        }
        values.iter().map(|v| Template::parse(v).ok()).collect()
    };
    let compiled = match op {
        RuleOp::AnyOf(values) => list(values).map(Op::AnyOf),
        RuleOp::AllOf(values) => list(values).map(Op::AllOf),
        RuleOp::Equals(Value::String(s)) => Template::parse(s).ok().map(Op::EqualsText),
        RuleOp::Equals(Value::Number(n)) => Some(Op::EqualsNumber(n.clone())),
        RuleOp::Equals(Value::Bool(b)) => Some(Op::EqualsBool(*b)),
        RuleOp::Equals(_) => None,
    };
    compiled.unwrap_or(Op::Never)
}

impl Rule {
    fn check(&self, claims: &Value, params: &Params) -> Result<(), FailureReason> {
        let fill = |templates: &[Template]| -> Result<Vec<String>, FailureReason> {
            templates
                .iter()
                .map(|t| t.fill_params(params).map_err(FailureReason::MissingParam))
                .collect()
        };
        let claim = || {
            lookup_claim(claims, &self.claim)
                .filter(|v| !v.is_null())
                .ok_or(FailureReason::MissingClaim)
        };
        let holds = match &self.op {
            Op::Never => return Err(FailureReason::InvalidRule),
            Op::AnyOf(templates) => {
                let expected = fill(templates)?;
                let value = claim()?;
                check_set_shape(value)?;
                expected.iter().any(|e| set_contains(value, e))
            }
            Op::AllOf(templates) => {
                let expected = fill(templates)?;
                let value = claim()?;
                check_set_shape(value)?;
                expected.iter().all(|e| set_contains(value, e))
            }
            Op::EqualsText(template) => {
                let expected = template
                    .fill_params(params)
                    .map_err(FailureReason::MissingParam)?;
                !expected.is_empty() && text_equals(claim()?, &expected)?
            }
            Op::EqualsNumber(expected) => match claim()? {
                Value::Number(n) => numbers_equal(n, expected),
                Value::String(s) => *s == expected.to_string(),
                Value::Bool(_) => false,
                _ => return Err(FailureReason::Uncomparable),
            },
            Op::EqualsBool(expected) => match claim()? {
                Value::Bool(b) => b == expected,
                Value::String(s) => *s == expected.to_string(),
                Value::Number(_) => false,
                _ => return Err(FailureReason::Uncomparable),
            },
        };
        if holds {
            Ok(())
        } else {
            Err(FailureReason::NotSatisfied)
        }
    }
}

fn check_set_shape(value: &Value) -> Result<(), FailureReason> {
    match value {
        Value::Object(_) => Err(FailureReason::Uncomparable),
        _ => Ok(()),
    }
}

/// Membership in the claim's set of strings (see the module docs).
fn set_contains(claim: &Value, expected: &str) -> bool {
    if expected.is_empty() {
        return false;
    }
    match claim {
        Value::String(s) => s == expected || s.split(' ').any(|word| word == expected),
        Value::Array(items) => items.iter().any(|item| match item {
            Value::String(s) => s == expected,
            Value::Number(_) | Value::Bool(_) => scalar_text_equals(item, expected),
            _ => false,
        }),
        Value::Number(_) | Value::Bool(_) => scalar_text_equals(claim, expected),
        Value::Null | Value::Object(_) => false,
    }
}

/// `equals` with a string expected value.
fn text_equals(claim: &Value, expected: &str) -> Result<bool, FailureReason> {
    match claim {
        Value::String(s) => Ok(s == expected),
        Value::Number(_) | Value::Bool(_) => Ok(scalar_text_equals(claim, expected)),
        _ => Err(FailureReason::Uncomparable),
    }
}

/// A number or bool against text: only its exact JSON text is equal.
fn scalar_text_equals(scalar: &Value, text: &str) -> bool {
    match scalar {
        Value::Number(n) => n.to_string() == text,
        Value::Bool(b) => b.to_string() == text,
        _ => false,
    }
}

fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return a == b;
    }
    // Integers that fit neither i64 nor u64 together, or floats: compare as
    // f64. An integer and a float are equal when the float is integral.
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A claim path as `require[].claim` and `{claims.x}` take it: dot-separated,
/// non-empty parts without whitespace (`roles`, `realm_access.roles`,
/// `https://example.com/roles`). Config validation and templates both use
/// this, so they agree on what a claim path is.
pub fn is_claim_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('.')
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests;
