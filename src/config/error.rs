//! Config errors as `wsgate check` prints them:
//! `gateway.yaml:14:7: routes[2].require[0].any_of: expected a list of strings`.
//!
//! A message says what is wrong and how to fix it. It never quotes a value from
//! the file: values may be secrets (`keys.secret`, `admin.token`, a redis URL
//! with a password), and `${VAR}` expansion may have put them there.

use std::fmt;
use std::path::{Path, PathBuf};

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key: `routes`, `any_of`.
    Key(String),
    /// A list index: `[2]`.
    Index(usize),
}

/// Where in the document a problem is, as a user would write it:
/// `routes[2].require[0].any_of`. Kept structured (not a string) so that the
/// line/column can be looked up from the segments, even for keys that contain
/// dots, such as a header name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document root (an empty path).
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        FieldPath(segments)
    }

    /// This path extended by a list index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        FieldPath(segments)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, segment: Segment) {
        self.0.push(segment);
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem with the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file, as the user named it.
    pub file: PathBuf,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// Which field; empty for whole-file problems (unreadable, bad YAML).
    pub path: FieldPath,
    /// What is wrong and how to fix it. Never contains a value from the file.
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, path: FieldPath, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            location: None,
            path,
            message: message.into(),
        }
    }

    pub fn with_location(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(loc) = self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        if !self.path.is_root() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one config file; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_renders_like_a_user_writes_it() {
        let p = FieldPath::root()
            .key("routes")
            .index(2)
            .key("require")
            .index(0)
            .key("any_of");
        assert_eq!(p.to_string(), "routes[2].require[0].any_of");
    }

    #[test]
    fn display_has_file_line_column_path_message() {
        let p = FieldPath::root().key("routes").index(2);
        let e =
            ConfigError::new(Path::new("gateway.yaml"), p, "bad").with_location(Some(Location {
                line: 14,
                column: 7,
            }));
        assert_eq!(e.to_string(), "gateway.yaml:14:7: routes[2]: bad");
        let e2 = ConfigError::new(Path::new("g.yaml"), FieldPath::root(), "unreadable");
        assert_eq!(e2.to_string(), "g.yaml: unreadable");
        let all = ConfigErrors(vec![e, e2]);
        assert_eq!(
            all.to_string(),
            "gateway.yaml:14:7: routes[2]: bad\ng.yaml: unreadable"
        );
    }
}
