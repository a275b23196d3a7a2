//! Templates such as `"{claims.sub}"`, `"user-{claims.sub}@{room}"` or
//! `"/ws/{room}"`: literal text with placeholders filled from the verified
//! claims (`{claims.dotted.path}`) or the path parameters (`{name}`).
//!
//! Every brace belongs to a placeholder. `{{` and `}}` are errors rather than
//! escapes for a literal brace: `{{claims.sub}}` is how Mustache, Jinja and
//! Envoy's access-log formats write a placeholder, and reading it as the
//! literal text `{claims.sub}` would forward or compare that text without a
//! word of warning. Config validation parses every template with
//! [`Template::parse`], so such a value fails at load time. Parameter names
//! follow [`is_param_name`], claim paths [`is_claim_path`].
//!
//! [`Template::render`] builds header values; it does not judge them, the
//! caller checks the result with [`is_safe_header_value`] (a claim may hold
//! a CR or LF). [`Template::render_path`] builds upstream paths and encodes
//! what it substitutes, so a value can never add a segment.

use std::fmt::Write as _;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use thiserror::Error;

use super::pattern::is_param_name;
use super::require::{is_claim_path, lookup_claim};
use super::Params;

/// Everything but RFC 3986 unreserved characters. Reserved characters are
/// encoded too: a decoded `;` or `:` written back raw could mean something
/// else to the upstream (a `;` starts path parameters in servlet containers).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// Dotted path into the claims, after `claims.`.
    Claim(String),
    Param(String),
}

/// A placeholder of a template, so config validation can check that every
/// `{name}` is a parameter of the route's path pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder<'a> {
    /// `{claims.realm_access.roles}` gives `realm_access.roles`.
    Claim(&'a str),
    Param(&'a str),
}

/// Why a template could not be parsed; `at` is a byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("'{{' at byte {at} is never closed")]
    Unclosed { at: usize },
    #[error("'}}' at byte {at} closes nothing")]
    Unopened { at: usize },
    #[error("doubled brace at byte {at}: a placeholder takes single braces, as in {{claims.sub}} or {{room}}, and a template cannot hold a literal brace")]
    DoubleBrace { at: usize },
    #[error("empty placeholder '{{}}' at byte {at}")]
    EmptyName { at: usize },
    #[error("placeholder {{{name}}} at byte {at}: a parameter name is letters, digits, '_' or '-' starting with a letter or '_'; a claim is written {{claims.dotted.path}}")]
    BadName { at: usize, name: String },
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' | '}' if chars.next_if(|&(_, next)| next == c).is_some() => {
                    return Err(TemplateError::DoubleBrace { at })
                }
                '}' => return Err(TemplateError::Unopened { at }),
                '{' => {
                    let start = at + 1;
                    let end = loop {
                        match chars.next() {
                            Some((end, '}')) => break end,
                            Some((_, '{')) | None => return Err(TemplateError::Unclosed { at }),
                            Some(_) => {}
                        }
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(&source[start..end], at)?);
                }
                _ => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// The placeholders, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder<'_>> {
        self.parts.iter().filter_map(|p| match p {
            Part::Literal(_) => None,
            Part::Claim(path) => Some(Placeholder::Claim(path)),
            Part::Param(name) => Some(Placeholder::Param(name)),
        })
    }

    /// True when there is no placeholder at all.
    pub fn is_literal(&self) -> bool {
        self.placeholders().next().is_none()
    }

    /// Fills the placeholders: a claim string as is, numbers and bools as
    /// text, arrays joined with `,`, objects as compact JSON; a missing claim
    /// or parameter (or a `null` claim) renders as nothing.
    pub fn render(&self, claims: &Value, params: &Params) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Param(name) => out.push_str(params.get(name).unwrap_or("")),
                Part::Claim(path) => {
                    if let Some(value) = lookup_claim(claims, path) {
                        write_claim(&mut out, value);
                    }
                }
            }
        }
        out
    }

    /// Fills `{param}`s percent-encoded for a path (`a/b` becomes `a%2Fb`),
    /// literal text as written. Claim placeholders have no place in a path
    /// and render as nothing: config validation should refuse them.
    pub fn render_path(&self, params: &Params) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Param(name) => {
                    let value = params.get(name).unwrap_or("");
                    // Dots are unreserved and stay raw, except where they
                    // would form a dot segment of their own.
                    match value {
                        "." => out.push_str("%2E"),
                        ".." => out.push_str("%2E%2E"),
                        _ => out.extend(utf8_percent_encode(value, SEGMENT)),
                    }
                }
                Part::Claim(_) => {}
            }
        }
        out
    }

    /// Fills `{param}`s as they are; the name of the first placeholder that
    /// cannot be filled (a missing parameter, or any claim) is the error.
    /// Used for `require` values, which must never silently become empty.
    pub(crate) fn fill_params(&self, params: &Params) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Param(name) => out.push_str(params.get(name).ok_or_else(|| name.clone())?),
                Part::Claim(path) => return Err(format!("claims.{path}")),
            }
        }
        Ok(out)
    }
}

fn placeholder(name: &str, at: usize) -> Result<Part, TemplateError> {
    if name.is_empty() {
        return Err(TemplateError::EmptyName { at });
    }
    if let Some(path) = name.strip_prefix("claims.") {
        if is_claim_path(path) {
            return Ok(Part::Claim(path.to_owned()));
        }
    } else if is_param_name(name) {
        return Ok(Part::Param(name.to_owned()));
    }
    Err(TemplateError::BadName {
        at,
        name: name.to_owned(),
    })
}

fn write_claim(out: &mut String, value: &Value) {
    match value {
        Value::Null => {}
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Value::String(s) => out.push_str(s),
                    Value::Null => {}
                    // Numbers, bools, nested arrays and objects: JSON text.
                    other => {
                        let _ = write!(out, "{other}");
                    }
                }
            }
        }
        // Value's Display is compact JSON.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Whether `value` can go into an HTTP header as is: no CR, LF, NUL or any
/// other control character, tab excepted.
pub fn is_safe_header_value(value: &str) -> bool {
    !value.chars().any(|c| c.is_control() && c != '\t')
}

#[cfg(test)]
mod tests;
