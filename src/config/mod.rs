//! `gateway.yaml`: loading, `${VAR}` expansion, validation.
//!
//! The pipeline is read → parse YAML into a tree → expand `${VAR}` in string
//! values → deserialize the tree into [`raw`] structs (unknown keys fail) →
//! [`validate`] into the [`model`] types. Each stage reports with a field path;
//! line and column are then looked up from the original text by that path
//! ([`locate`]), so they are right however `${VAR}` values changed lengths.

mod cluster;
mod env;
pub mod error;
mod files;
mod issuers;
mod listeners;
mod locate;
pub mod model;
mod raw;
mod risks;
mod routes;
mod tracing;
pub mod units;
mod upstream;
mod validate;
mod variants;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde_yaml::Value;

pub use cluster::{parse_redis_url, RedisEndpoint};
pub use error::{ConfigError, ConfigErrors, FieldPath, Location, Segment};
pub use model::*;
pub use units::{parse_duration, parse_size, UnitError};

/// A config that passed every check, and the risky settings in it that
/// `wsgate check` prints and `run` logs without refusing them.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    /// Located like errors (`file:line:column: path: message`).
    pub warnings: Vec<ConfigError>,
}

impl Checked {
    /// Logs each warning, located (start-up and reload both say them).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            // `::`: this module has a `tracing` of its own (the config key).
            ::tracing::warn!(
                file = %w.file.display(),
                line = w.location.map(|l| l.line),
                field = %w.path,
                "config: {}",
                w.message
            );
        }
    }
}

/// Reads, expands (from the process environment), parses and validates the
/// config at `path`. Relative paths inside it are resolved against its folder.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_checked(path).map(|c| c.config)
}

/// Like [`load`], with the warnings. This is `wsgate check`: validation
/// builds, without binding a socket or reaching the network, every part of
/// the runtime that can fail on a config (TLS certificates with their keys,
/// client CAs, trust anchors, issuer keys, route patterns and templates, the
/// Redis client), with the same code `run` uses.
pub fn load_checked(path: &Path) -> Result<Checked, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(ConfigError::new(
            path,
            FieldPath::root(),
            format!("cannot read the config file: {e}"),
        ))
    })?;
    load_str_checked(&text, path, |name| std::env::var(name).ok())
}

/// Like [`load`], for text already in memory. `source` names the file in
/// messages and anchors relative paths; `env` looks up `${VAR}`s.
pub fn load_str(
    text: &str,
    source: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    load_str_checked(text, source, env).map(|c| c.config)
}

/// Like [`load_str`], with the warnings.
pub fn load_str_checked(
    text: &str,
    source: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Checked, ConfigErrors> {
    let located = |errors: Vec<ConfigError>| {
        let mut errors: Vec<ConfigError> = errors
            .into_iter()
            .map(|e| match e.location {
                Some(_) => e,
                None => {
                    let location = locate::locate(text, &e.path);
                    e.with_location(location)
                }
            })
            .collect();
        // In file order, so the list reads alongside the file; problems with
        // no position (a missing top-level key) come first.
        errors.sort_by_key(|e| e.location.map(|l| (l.line, l.column)));
        errors
    };
    let with_locations = |errors: Vec<ConfigError>| ConfigErrors(located(errors));

    let mut tree: Value = serde_yaml::from_str(text).map_err(|e| {
        let location = e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        });
        let message = format!("invalid YAML: {}", strip_position(&e.to_string()));
        ConfigErrors::single(
            ConfigError::new(source, FieldPath::root(), message).with_location(location),
        )
    })?;
    // An empty file is an empty mapping: report what it lacks, not its type.
    if tree.is_null() {
        tree = Value::Mapping(Default::default());
    }

    let env_errors = env::expand_tree(&mut tree, &FieldPath::root(), &env);
    if !env_errors.is_empty() {
        // Stop here: values left unexpanded would only cause follow-up errors.
        let errors = env_errors
            .into_iter()
            .map(|(path, e)| ConfigError::new(source, path, e.to_string()))
            .collect();
        return Err(with_locations(errors));
    }

    let raw: raw::RawConfig = serde_path_to_error::deserialize(tree).map_err(|e| {
        let (path, message) = describe_serde_error(e.path(), &e.inner().to_string());
        with_locations(vec![ConfigError::new(source, path, message)])
    })?;

    let (config, warnings) =
        validate::validate(&raw, source, &config_dir(source)).map_err(with_locations)?;
    Ok(Checked {
        config,
        warnings: located(warnings),
    })
}

/// One line for `wsgate check`, e.g.
/// `gateway.yaml OK: 2 listeners (1 TLS), 3 routes, 2 issuers, revocation store file`.
pub fn summary(config: &Config) -> String {
    fn count(n: usize, what: &str) -> String {
        if n == 1 {
            format!("1 {what}")
        } else {
            format!("{n} {what}s")
        }
    }
    let tls = config.listeners.iter().filter(|l| l.tls.is_some()).count();
    let store = match config.revocation {
        RevocationConfig::Memory => "memory",
        RevocationConfig::File(_) => "file",
        RevocationConfig::Redis(_) => "redis",
    };
    let mut line = format!(
        "{} OK: {} ({tls} TLS), {}, {}, revocation store {store}",
        config.source.display(),
        count(config.listeners.len(), "listener"),
        count(config.routes.len(), "route"),
        count(config.issuers.len(), "issuer"),
    );
    if let Some(admin) = &config.admin {
        line.push_str(&format!(", admin on {}", admin.bind));
    }
    line
}

/// The folder relative paths in the config point from.
fn config_dir(source: &Path) -> PathBuf {
    let absolute = std::path::absolute(source).unwrap_or_else(|_| source.to_path_buf());
    absolute.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Turns a serde error into a field path and a message in the config's terms,
/// without the offending value (it may be a secret).
fn describe_serde_error(path: &serde_path_to_error::Path, message: &str) -> (FieldPath, String) {
    let mut field = FieldPath::root();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => field.push(Segment::Index(*index)),
            serde_path_to_error::Segment::Map { key } => field.push(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => {
                field.push(Segment::Key(variant.clone()))
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // Point at the misspelt key itself, so the line is the key's line.
        if let Some((key, expected)) = rest.split_once('`') {
            if field.segments().last() != Some(&Segment::Key(key.to_owned())) {
                field.push(Segment::Key(key.to_owned()));
            }
            let expected = expected.trim_start_matches(", ");
            return (field, format!("unknown key `{key}`; {expected}"));
        }
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
                return (field, type_mismatch(found, expected));
            }
        }
    }
    (field, strip_position(message))
}

fn type_mismatch(found: &str, expected: &str) -> String {
    let found = match found.split([' ', '`', '"']).next().unwrap_or_default() {
        "string" => "a string",
        "integer" | "floating" => "a number",
        "boolean" => "a boolean",
        "unit" => "an empty value",
        "map" => "a mapping",
        "sequence" => "a list",
        _ => "another kind of value",
    };
    let expected = match expected {
        "a sequence" => "a list",
        e if e.starts_with("struct ") => "a mapping",
        "a map" => "a mapping",
        e if e.starts_with("u64") || e.starts_with("u32") => "a whole number",
        e => e,
    };
    let hint = if expected.contains("string") && found != "a mapping" && found != "a list" {
        "; put the value in quotes"
    } else {
        ""
    };
    format!("expected {expected}, found {found}{hint}")
}

/// Removes serde_yaml's ` at line N column M` (the location is reported
/// separately, in the `file:line:column` prefix).
fn strip_position(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let skip = after
            .find(|c: char| !(c.is_ascii_digit() || c == ' ' || "column".contains(c)))
            .unwrap_or(after.len());
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}
