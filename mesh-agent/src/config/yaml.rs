//! Multi-document YAML to JSON values, remembering where every field is written so
//! that errors point at a line and column. YAML 1.2 core schema (as serde_yaml):
//! `yes`/`no` are strings; duplicate keys and non-scalar keys are errors.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::{Marker, TScalarStyle},
};

/// 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// Field path (`spec.ports[0].port`) → where its key (or sequence item) is written.
#[derive(Clone, Debug, Default)]
pub struct Positions(HashMap<String, Pos>);

impl Positions {
    /// The position of `path`, or of its nearest ancestor that is written (at
    /// worst, the document's top mapping).
    pub fn lookup(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.0.get(p) {
                return Some(*pos);
            }
            if p.is_empty() {
                return None;
            }
            p = &p[..p.rfind(['.', '[']).unwrap_or(0)];
        }
    }
}

/// One document of a file.
#[derive(Clone, Debug)]
pub struct YamlDoc {
    /// 1-based.
    pub index: usize,
    pub start: Pos,
    pub value: Value,
    pub positions: Positions,
}

/// A YAML error with its place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub message: String,
    pub pos: Pos,
    /// 1-based document index.
    pub document: usize,
}

/// Parses every document; empty documents are skipped.
pub fn parse_documents(src: &str) -> Result<Vec<YamlDoc>, YamlError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut b, true) {
        return Err(YamlError {
            message: e.info().to_owned(),
            pos: Pos::from(*e.marker()),
            document: b.doc_index.max(1),
        });
    }
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.docs)
}

enum Frame {
    Seq {
        path: String,
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        path: String,
        map: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<YamlDoc>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    positions: HashMap<String, Pos>,
    doc_index: usize,
    doc_start: Option<Pos>,
    root: Option<Value>,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, message: String, pos: Pos) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                message,
                pos,
                document: self.doc_index.max(1),
            });
        }
    }

    /// The path of the next value in the innermost collection; `None` when the next
    /// scalar is a mapping key.
    fn child_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq { path, items, .. }) => Some(format!("{path}[{}]", items.len())),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                path, key: Some(k), ..
            }) => Some(join(path, k)),
        }
    }

    fn push_value(&mut self, v: Value, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, v.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq { items, .. }) => items.push(v),
            Some(Frame::Map { map, key, .. }) => {
                if let Some(k) = key.take() {
                    map.insert(k, v);
                }
            }
        }
    }

    /// A scalar or collection is about to start at `pos`: if it is a mapping key,
    /// returns `false` after handling it.
    fn begin(&mut self, pos: Pos, is_scalar_key: Option<&str>) -> bool {
        if let Some(Frame::Map {
            path,
            map,
            key: key @ None,
            ..
        }) = self.stack.last_mut()
        {
            let failure = match is_scalar_key {
                Some(k) => {
                    let p = join(path, k);
                    let dup = map
                        .contains_key(k)
                        .then(|| format!("duplicate key `{k}` (at {p})"));
                    *key = Some(k.to_owned());
                    self.positions.insert(p, pos);
                    dup
                }
                None => {
                    *key = Some(String::new());
                    Some("mapping keys must be plain strings".to_owned())
                }
            };
            if let Some(msg) = failure {
                self.fail(msg, pos);
            }
            return false;
        }
        if let Some(p) = self.child_path() {
            self.positions.entry(p).or_insert(pos);
        }
        true
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::DocumentStart => {
                self.doc_index += 1;
                self.doc_start = Some(pos);
                self.positions.clear();
                self.anchors.clear();
                self.root = None;
            }
            Event::DocumentEnd => {
                if let Some(value) = self.root.take().filter(|v| !v.is_null()) {
                    self.docs.push(YamlDoc {
                        index: self.doc_index,
                        start: self.doc_start.unwrap_or(pos),
                        value,
                        positions: Positions(std::mem::take(&mut self.positions)),
                    });
                }
            }
            Event::Scalar(s, style, anchor, tag) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                if is_key {
                    self.begin(pos, Some(&s));
                    return;
                }
                self.begin(pos, None);
                let forced_string = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let v = if style == TScalarStyle::Plain && !forced_string {
                    resolve_plain(&s)
                } else {
                    Value::String(s)
                };
                self.push_value(v, anchor);
            }
            Event::Alias(id) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                if !self.begin(pos, None) || is_key {
                    return;
                }
                match self.anchors.get(&id).cloned() {
                    Some(v) => self.push_value(v, 0),
                    None => self.fail("unknown alias".into(), pos),
                }
            }
            Event::SequenceStart(anchor, _) => {
                if !self.begin(pos, None) {
                    // A sequence as a mapping key: keep parsing, the error is recorded.
                }
                let path = self.child_path().unwrap_or_default();
                self.stack.push(Frame::Seq {
                    path,
                    items: Vec::new(),
                    anchor,
                });
            }
            Event::MappingStart(anchor, _) => {
                self.begin(pos, None);
                let path = self.child_path().unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    map: Map::new(),
                    key: None,
                    anchor,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { items, anchor, .. }) => {
                    self.push_value(Value::Array(items), anchor)
                }
                Some(Frame::Map { map, anchor, .. }) => self.push_value(Value::Object(map), anchor),
                None => {}
            },
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// YAML 1.2 core schema for plain scalars.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = s.parse::<i64>() {
            return Value::Number(n.into());
        }
        if let Ok(n) = s.parse::<u64>() {
            return Value::Number(n.into());
        }
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(n.into());
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(n) = i64::from_str_radix(oct, 8)
    {
        return Value::Number(n.into());
    }
    let floaty = body.bytes().any(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if floaty && let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_values() {
        let src = "a: 1\nb:\n  - x: true\n    y: \"2\"\n---\n---\nc: ~\n";
        let docs = parse_documents(src).expect("valid");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["b"][0]["x"], Value::Bool(true));
        assert_eq!(docs[0].value["b"][0]["y"], Value::String("2".into()));
        assert_eq!(
            docs[0].positions.lookup("b[0].y"),
            Some(Pos { line: 4, column: 5 })
        );
        // The parser marks a block mapping after its first key: check the line only.
        assert_eq!(docs[0].positions.lookup("b[0].zz").map(|p| p.line), Some(3));
        assert_eq!(docs[1].index, 3);
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse_documents("a: 1\n---\nb: [1, 2\n").expect_err("invalid");
        assert_eq!(e.document, 2);
        assert!(e.pos.line >= 3, "{e:?}");
    }

    #[test]
    fn duplicate_key() {
        let e = parse_documents("a: 1\na: 2\n").expect_err("dup");
        assert!(e.message.contains("duplicate key `a`"));
        assert_eq!(e.pos.line, 2);
    }
}
