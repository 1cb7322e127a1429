//! The file source: multi-document YAML files of Kubernetes-shaped resources.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    errors::{ConfigError, ConfigErrors},
    parse::{Origin, parse_document},
    resources::{Resource, ResourceSet},
    validate::validate,
    yaml::{YamlErrorKind, parse_documents},
};
use crate::state::{self, Snapshot};

pub use super::watch::watch;

/// Largest configuration file read: more is refused before it is parsed
/// (docs/config.md, "Limits"; aliases are bounded in [`super::yaml`]).
pub const MAX_FILE_BYTES: usize = 4 << 20;

fn too_large() -> String {
    format!(
        "larger than {} MiB: split the resources over several files (each file is limited on its own)",
        MAX_FILE_BYTES >> 20
    )
}

/// The first `MAX_FILE_BYTES + 1` bytes of `path`: enough to tell a file is too
/// large without reading all of it.
pub(super) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_config(path: &Path) -> Result<String, String> {
    let bytes = read_bounded(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| format!("cannot read: not UTF-8 ({e})"))
}

/// Reads, parses and validates `paths` (in order, as one set of resources) and
/// builds the snapshot. Every error found is returned, not only the first.
pub fn load(paths: &[PathBuf]) -> Result<Snapshot, ConfigErrors> {
    let set = load_resources(paths)?;
    Ok(state::build(&set))
}

/// Like [`load`], without building the snapshot.
pub fn load_resources(paths: &[PathBuf]) -> Result<ResourceSet, ConfigErrors> {
    let mut errors = Vec::new();
    let mut items = Vec::new();
    for path in paths {
        match read_config(path) {
            Ok(src) => parse_source(path, &src, &mut items, &mut errors),
            Err(reason) => errors.push(ConfigError::file(path, reason)),
        }
    }
    errors.extend(validate(&items));
    if !errors.is_empty() {
        // File order, then document, then line (a stable sort keeps check order within).
        let file_index = |e: &ConfigError| {
            paths
                .iter()
                .position(|p| e.file.as_deref() == Some(p.as_path()))
                .unwrap_or(usize::MAX)
        };
        errors.sort_by_key(|e| (file_index(e), e.document, e.line));
        return Err(ConfigErrors(errors));
    }
    let mut set = ResourceSet::default();
    for (r, _) in items {
        set.push(r);
    }
    Ok(set)
}

/// Like [`load`] for text already in memory; `name` stands for the file in errors.
pub fn load_str(name: &str, src: &str) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Vec::new();
    let mut items = Vec::new();
    parse_source(Path::new(name), src, &mut items, &mut errors);
    errors.extend(validate(&items));
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.document, e.line));
        return Err(ConfigErrors(errors));
    }
    let mut set = ResourceSet::default();
    for (r, _) in items {
        set.push(r);
    }
    Ok(state::build(&set))
}

/// Parses one file's text into typed resources, collecting errors.
pub fn parse_source(
    path: &Path,
    src: &str,
    items: &mut Vec<(Resource, Origin)>,
    errors: &mut Vec<ConfigError>,
) {
    if src.len() > MAX_FILE_BYTES {
        errors.push(ConfigError::file(path, too_large()));
        return;
    }
    let file: Option<Arc<Path>> = Some(Arc::from(path));
    match parse_documents(src) {
        Err(e) => errors.push(ConfigError {
            file: Some(path.to_path_buf()),
            document: Some(e.document),
            line: Some(e.pos.line),
            column: Some(e.pos.column),
            resource: None,
            field: None,
            reason: match e.kind {
                YamlErrorKind::Syntax => format!("YAML syntax: {}", e.message),
                YamlErrorKind::TooLarge => format!("YAML too large: {}", e.message),
            },
        }),
        Ok(docs) => {
            for doc in docs {
                let (item, errs) = parse_document(&file, doc);
                items.extend(item);
                errors.extend(errs);
            }
        }
    }
}
