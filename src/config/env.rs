//! `${VAR}` and `${VAR:-default}` in string values.
//!
//! Expansion runs on the parsed YAML tree, not on the file text: a value that
//! contains `:` or `#` (a secret, say) can then never change the document's
//! structure, `${...}` in a comment means nothing, and line numbers stay those
//! of the file. The variable lookup is injected so that tests never touch the
//! process environment.
//!
//! `$${` stands for a literal `${`. A `$` not followed by `{` is kept as is.

use serde_yaml::Value;

use super::error::FieldPath;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error(
        "environment variable `{0}` is not set; set it, or give a default with ${{{0}:-default}}"
    )]
    Unset(String),
    #[error("`${{` is not closed by `}}`; write `$${{` for a literal `${{`")]
    Unterminated,
    #[error("`${{...}}` must hold a variable name made of letters, digits and `_`, not starting with a digit")]
    BadName,
}

/// Expands every `${...}` in `text`. `:-` takes the default when the variable
/// is unset or empty, as in a POSIX shell.
pub fn expand_str(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let close = body_and_rest.find('}').ok_or(EnvError::Unterminated)?;
        let body = &body_and_rest[..close];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if !is_var_name(name) {
            return Err(EnvError::BadName);
        }
        match (lookup(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => return Err(EnvError::Unset(name.to_owned())),
        }
        rest = &body_and_rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands every string value (not keys) in the tree in place, returning one
/// error per string that could not be expanded, with its field path.
pub fn expand_tree(
    value: &mut Value,
    path: &FieldPath,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<(FieldPath, EnvError)> {
    let mut errors = Vec::new();
    walk(value, path, lookup, &mut errors);
    errors
}

fn walk(
    value: &mut Value,
    path: &FieldPath,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(FieldPath, EnvError)>,
) {
    match value {
        Value::String(s) => {
            // Only allocate when there is something to expand.
            if s.contains('$') {
                match expand_str(s, lookup) {
                    Ok(expanded) => *s = expanded,
                    Err(e) => errors.push((path.clone(), e)),
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &path.index(i), lookup, errors);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let child = match key {
                    Value::String(k) => path.key(k),
                    // Non-string keys are rejected later by the typed parse;
                    // the path only needs to be close enough to point there.
                    _ => path.clone(),
                };
                walk(item, &child, lookup, errors);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup, errors),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_unset_default_and_escape() {
        assert_eq!(expand_str("x-${HOST}-y", &env), Ok("x-db.local-y".into()));
        assert_eq!(expand_str("${NOPE:-fallback}", &env), Ok("fallback".into()));
        assert_eq!(expand_str("${EMPTY:-d}", &env), Ok("d".into()));
        assert_eq!(expand_str("${EMPTY}", &env), Ok(String::new()));
        assert_eq!(expand_str("${NOPE:-}", &env), Ok(String::new()));
        assert_eq!(expand_str("$${HOST} $5 $", &env), Ok("${HOST} $5 $".into()));
        assert_eq!(
            expand_str("a:-b ${HOST:-x:-y}", &env),
            Ok("a:-b db.local".into())
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            expand_str("${NOPE}", &env),
            Err(EnvError::Unset("NOPE".into()))
        );
        assert_eq!(expand_str("${HOST", &env), Err(EnvError::Unterminated));
        assert_eq!(expand_str("${1X}", &env), Err(EnvError::BadName));
        assert_eq!(expand_str("${}", &env), Err(EnvError::BadName));
        let msg = EnvError::Unset("JWT_SECRET".into()).to_string();
        assert!(msg.contains("`JWT_SECRET` is not set"), "{msg}");
        assert!(msg.contains("${JWT_SECRET:-default}"), "{msg}");
    }

    #[test]
    fn tree_reports_every_unset_variable_with_its_path() {
        let mut v: Value =
            serde_yaml::from_str("a: ${A}\nlist: [ok, '${HOST}', '${B}']\nn: 5\n").unwrap();
        let errs = expand_tree(&mut v, &FieldPath::root(), &env);
        let paths: Vec<String> = errs.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(paths, ["a", "list[2]"]);
        assert_eq!(v["list"][1], Value::String("db.local".into()));
    }
}
