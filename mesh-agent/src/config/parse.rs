//! One YAML document to one typed resource.
//!
//! **Unknown fields are errors**, not warnings: a misspelt field (`weigth:`) that
//! was silently ignored would leave the mesh doing something other than what the
//! file says, and `kubectl` (strict field validation) rejects the same input. The
//! error names the unknown field with its full path and position.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    errors::{ConfigError, ResourceRef},
    resources::{
        AuthorizationPolicy, DEFAULT_NAMESPACE, GRPCRoute, HTTPRoute, Namespace, Pod,
        ReferenceGrant, Resource, Service, TrafficPolicy,
    },
    yaml::{Positions, YamlDoc},
};

/// The kinds a file may hold, with their `apiVersion`.
pub const KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "Pod"),
    ("v1", "Service"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"),
    ("weft.dev/v1alpha1", "AuthorizationPolicy"),
    ("weft.dev/v1alpha1", "TrafficPolicy"),
];

/// Where a resource was written, to point errors at it: a document of a file
/// (with the positions of its fields), or an object of the cluster (`file: None`,
/// no positions: errors name the resource and the field).
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: Option<std::sync::Arc<Path>>,
    pub document: usize,
    pub positions: std::sync::Arc<Positions>,
    pub resource: ResourceRef,
}

impl Origin {
    /// An error about `field` of this resource (`None`: the whole resource).
    pub fn error(&self, field: Option<&str>, reason: impl Into<String>) -> ConfigError {
        let pos = match field {
            Some(f) => self.positions.lookup(f),
            None => self
                .positions
                .lookup("metadata.name")
                .or_else(|| self.positions.lookup("kind")),
        };
        ConfigError {
            file: self.file.as_deref().map(Path::to_path_buf),
            document: self.file.as_ref().map(|_| self.document),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            resource: Some(self.resource.clone()),
            field: field.map(str::to_owned),
            reason: reason.into(),
        }
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// A typed resource (if the document could be typed) and the errors found. A
/// resource with only unknown-field errors is still returned, so that the other
/// checks run on it too.
pub type Parsed = (Option<(Resource, Origin)>, Vec<ConfigError>);

/// Types a document. Errors name the resource as far as it can be read.
pub fn parse_document(file: &Option<std::sync::Arc<Path>>, doc: YamlDoc) -> Parsed {
    match parse_inner(file, doc) {
        Ok((r, o, unknown)) => (Some((r, o)), unknown),
        Err(e) => (None, e),
    }
}

/// Types an object read from the API server, with the same rules as a file's
/// document (unknown fields are errors). What the server owns and the mesh does
/// not read (`status`, `metadata.managedFields`) is dropped first.
pub fn parse_object(mut value: Value) -> Parsed {
    if let Some(obj) = value.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    let doc = YamlDoc {
        index: 0,
        start: super::yaml::Pos { line: 1, column: 1 },
        value,
        positions: Positions::default(),
    };
    parse_document(&None, doc)
}

type Typed<T> = Result<(T, Vec<ConfigError>), Vec<ConfigError>>;

fn parse_inner(
    file: &Option<std::sync::Arc<Path>>,
    doc: YamlDoc,
) -> Result<(Resource, Origin, Vec<ConfigError>), Vec<ConfigError>> {
    let positions = std::sync::Arc::new(doc.positions);
    let kind = str_at(&doc.value, &["kind"]).unwrap_or("").to_owned();
    let api_version = str_at(&doc.value, &["apiVersion"]).unwrap_or("").to_owned();
    let name = str_at(&doc.value, &["metadata", "name"])
        .unwrap_or("<unnamed>")
        .to_owned();
    let namespaced = kind != "Namespace";
    let namespace = namespaced.then(|| {
        str_at(&doc.value, &["metadata", "namespace"])
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_owned()
    });
    let origin = Origin {
        file: file.clone(),
        document: doc.index,
        positions,
        resource: ResourceRef {
            kind: if kind.is_empty() {
                "<no kind>".into()
            } else {
                kind.clone()
            },
            namespace,
            name,
        },
    };
    if !doc.value.is_object() {
        let e = origin.error(
            None,
            format!(
                "a document must be a mapping with apiVersion, kind, metadata (got {})",
                type_name(&doc.value)
            ),
        );
        return Err(vec![ConfigError {
            resource: None,
            ..e
        }]);
    }
    let mut errors = Vec::new();
    if kind.is_empty() {
        errors.push(origin.error(Some("kind"), format!("required: one of {}", kind_list())));
    }
    if api_version.is_empty() {
        errors.push(origin.error(
            Some("apiVersion"),
            "required: e.g. v1, gateway.networking.k8s.io/v1 or weft.dev/v1alpha1",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let want = KINDS.iter().find(|(_, k)| *k == kind).map(|(v, _)| *v);
    match want {
        None => {
            return Err(vec![origin.error(
                Some("kind"),
                format!("unknown kind {kind:?}: valid kinds are {}", kind_list()),
            )]);
        }
        Some(v) if v != api_version => {
            return Err(vec![origin.error(
                Some("apiVersion"),
                format!("{kind} needs apiVersion {v} (got {api_version:?})"),
            )]);
        }
        Some(_) => {}
    }
    let value = doc.value;
    fn wrap<T>(t: Typed<T>, f: fn(T) -> Resource) -> Typed<Resource> {
        t.map(|(x, e)| (f(x), e))
    }
    let (r, unknown) = match kind.as_str() {
        "Namespace" => wrap(typed::<Namespace>(value, &origin), Resource::Namespace),
        "Pod" => wrap(typed::<Pod>(value, &origin), Resource::Pod),
        "Service" => wrap(typed::<Service>(value, &origin), Resource::Service),
        "HTTPRoute" => wrap(typed::<HTTPRoute>(value, &origin), Resource::HttpRoute),
        "GRPCRoute" => wrap(typed::<GRPCRoute>(value, &origin), Resource::GrpcRoute),
        "ReferenceGrant" => wrap(
            typed::<ReferenceGrant>(value, &origin),
            Resource::ReferenceGrant,
        ),
        "AuthorizationPolicy" => wrap(
            typed::<AuthorizationPolicy>(value, &origin),
            Resource::AuthorizationPolicy,
        ),
        _ => wrap(
            typed::<TrafficPolicy>(value, &origin),
            Resource::TrafficPolicy,
        ),
    }?;
    Ok((r, origin, unknown))
}

fn kind_list() -> String {
    KINDS
        .iter()
        .map(|(v, k)| format!("{k} ({v})"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Deserializes with field paths for type errors, and reports unknown fields.
fn typed<T: DeserializeOwned>(value: Value, origin: &Origin) -> Typed<T> {
    let mut unknown: Vec<String> = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let result: Result<T, _> = serde_ignored::deserialize(de, |path| {
        let p = ignored_path(&path);
        if p != "apiVersion" && p != "kind" {
            unknown.push(p);
        }
    });
    match result {
        Ok(t) => Ok((
            t,
            unknown
                .into_iter()
                .map(|f| {
                    let (_, last) = split_last(&f);
                    origin.error(
                        Some(&f),
                        format!(
                            "unknown field `{last}`: check the spelling; unknown fields are errors"
                        ),
                    )
                })
                .collect(),
        )),
        Err(e) => {
            let path = track.path().to_string();
            let msg = e.to_string();
            let (field, reason) = match missing_field(&msg) {
                Some(m) if path == "." => {
                    (m.to_owned(), format!("required field `{m}` is missing"))
                }
                Some(m) => (
                    format!("{path}.{m}"),
                    format!("required field `{m}` is missing"),
                ),
                None => (path, explain(&msg)),
            };
            let field = if field == "." { None } else { Some(field) };
            Err(vec![origin.error(field.as_deref(), reason)])
        }
    }
}

fn missing_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("missing field `")?.split('`').next()
}

/// serde's wording, with the Rust type names turned into what a YAML writer knows.
fn explain(msg: &str) -> String {
    msg.replace("invalid type: ", "wrong type: got ")
        .replace("i32", "an integer")
        .replace("u32", "a non-negative integer")
        .replace("f64", "a number")
        .replace(", expected a sequence", ", expected a list")
        .replace(", expected a map", ", expected a mapping")
}

fn split_last(path: &str) -> (&str, &str) {
    match path.rfind('.') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// `serde_ignored`'s path in our `a.b[0].c` form.
fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let base = ignored_path(parent);
            if base.is_empty() {
                key.clone()
            } else {
                format!("{base}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}
