//! Configuration errors, printed compiler-style:
//! `error: mesh.yaml:12:7: HTTPRoute shop/reviews: spec.rules[0].backendRefs[1].weight: must be >= 0 (got -1) [document 4]`;
//! for an object of the cluster, without the file part:
//! `error: HTTPRoute shop/reviews: spec.rules[0].backendRefs[1].weight: must be >= 0 (got -1)`.

use std::{fmt, path::PathBuf};

/// The resource an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRef {
    pub kind: String,
    /// `None` for cluster-scoped kinds (Namespace).
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One problem in the configuration. `reason` says what is wrong and what would be valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the resource was read from; `None` for an object of the cluster.
    pub file: Option<PathBuf>,
    /// 1-based index of the YAML document in the file.
    pub document: Option<usize>,
    /// 1-based line and column.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub resource: Option<ResourceRef>,
    /// Field path such as `spec.rules[0].backendRefs[1].weight`.
    pub field: Option<String>,
    pub reason: String,
}

impl ConfigError {
    /// An error about a whole file (unreadable, ...).
    pub fn file(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: Some(file.into()),
            document: None,
            line: None,
            column: None,
            resource: None,
            field: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("error: ")?;
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}:{}", self.column.unwrap_or(1))?;
            }
            f.write_str(": ")?;
        }
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)?;
        if let Some(d) = self.document {
            write!(f, " [document {d}]")?;
        }
        Ok(())
    }
}

/// Every error found in one load, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            e.fmt(f)?;
        }
        if self.0.len() > 1 {
            write!(f, "\n{} errors", self.0.len())?;
        }
        Ok(())
    }
}
