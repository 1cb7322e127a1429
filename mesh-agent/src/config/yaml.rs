//! Multi-document YAML to JSON values, remembering where every field is written so
//! that errors point at a line and column. YAML 1.2 core schema (as serde_yaml):
//! `yes`/`no` are strings; duplicate keys and non-scalar keys are errors.
//!
//! The input is untrusted (docs/security.md): aliases are expanded into copies, so
//! a few hundred bytes can stand for billions of nodes. Building stops with an
//! error past [`MAX_NODES`] nodes, [`MAX_TEXT_BYTES`] bytes of scalars or
//! [`MAX_DEPTH`] levels of nesting per file, counting every alias as the size of
//! what it stands for (docs/config.md, "Limits").

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::{Marker, TScalarStyle},
};

/// Most nodes (scalars, sequences, mappings, counting the copies aliases make) one
/// file may expand to. Far above what the size limit of a file lets anyone write
/// without aliases in practice (about 15 nodes per Pod), far below what would
/// strain the agent (about 100 bytes each).
pub const MAX_NODES: usize = 1_000_000;

/// Most bytes of text one file may expand to: scalars and keys (aliases counted
/// as copies) and the field paths kept to place errors. A file at the size limit
/// without aliases holds about a quarter of this.
pub const MAX_TEXT_BYTES: usize = 64 << 20;

/// Deepest nesting of sequences and mappings. Resources nest about ten levels;
/// the bound keeps recursive code downstream (typing, dropping) off the stack's
/// end.
pub const MAX_DEPTH: usize = 64;

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
    pub kind: YamlErrorKind,
    pub message: String,
    pub pos: Pos,
    /// 1-based document index.
    pub document: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YamlErrorKind {
    /// Not YAML, or YAML we do not accept (duplicate keys, ...).
    Syntax,
    /// Valid YAML that expands past [`MAX_NODES`], [`MAX_TEXT_BYTES`] or [`MAX_DEPTH`].
    TooLarge,
}

/// Parses every document; empty documents are skipped.
pub fn parse_documents(src: &str) -> Result<Vec<YamlDoc>, YamlError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(src);
    // Pull events one by one rather than `Parser::load`, which recurses once per
    // level of nesting and would go on after a limit is hit.
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, mark)) => b.on_event(ev, mark),
            Err(e) => {
                return Err(YamlError {
                    kind: YamlErrorKind::Syntax,
                    message: e.info().to_owned(),
                    pos: Pos::from(*e.marker()),
                    document: b.doc_index.max(1),
                });
            }
        }
        if b.error.is_some() {
            // The first error is the one reported: building on would be wasted.
            break;
        }
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
        start: Size,
    },
    Map {
        path: String,
        map: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
        start: Size,
    },
}

/// What a file has expanded to so far, or what one value stands for.
#[derive(Clone, Copy, Debug, Default)]
struct Size {
    nodes: usize,
    text: usize,
}

impl Size {
    fn add(self, o: Size) -> Size {
        Size {
            nodes: self.nodes.saturating_add(o.nodes),
            text: self.text.saturating_add(o.text),
        }
    }

    fn since(self, start: Size) -> Size {
        Size {
            nodes: self.nodes - start.nodes,
            text: self.text - start.text,
        }
    }
}

#[derive(Default)]
struct Builder {
    docs: Vec<YamlDoc>,
    stack: Vec<Frame>,
    /// Anchored values with their size, which every alias of them adds again.
    anchors: HashMap<usize, (Value, Size)>,
    /// Counted over the whole file: the anchors of one document cannot be used in
    /// the next, but many documents would otherwise multiply the limit.
    size: Size,
    /// What is kept besides the values: the copies in `anchors` and the paths in
    /// `positions`, counted against the limits with `size`.
    stored: Size,
    positions: HashMap<String, Pos>,
    doc_index: usize,
    doc_start: Option<Pos>,
    root: Option<Value>,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, message: String, pos: Pos) {
        self.fail_as(YamlErrorKind::Syntax, message, pos);
    }

    fn fail_as(&mut self, kind: YamlErrorKind, message: String, pos: Pos) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                kind,
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

    /// Counts `add` more (a node, or what an alias stands for); `false`, with the
    /// error recorded, once past a limit.
    fn grow(&mut self, add: Size, pos: Pos) -> bool {
        self.size = self.size.add(add);
        let total = self.size.add(self.stored);
        let depth = self.stack.len();
        let over = if total.nodes > MAX_NODES {
            format!(
                "expands to more than {MAX_NODES} nodes (each alias `*name` counts as a copy of what it names): \
                 use fewer aliases, or split the resources over several files"
            )
        } else if total.text > MAX_TEXT_BYTES {
            format!(
                "expands to more than {} MiB of text (each alias `*name` counts as a copy of what it names, \
                 and each field's path is kept): use fewer aliases of long values, shorter keys, \
                 or split the resources over several files",
                MAX_TEXT_BYTES >> 20
            )
        } else if depth > MAX_DEPTH {
            format!("nests deeper than {MAX_DEPTH} levels: resources never need that many")
        } else {
            return true;
        };
        self.fail_as(YamlErrorKind::TooLarge, over, pos);
        false
    }

    fn push_value(&mut self, v: Value, anchor: usize, size: Size, pos: Pos) {
        if anchor != 0 {
            self.stored = self.stored.add(size);
            if !self.grow(Size::default(), pos) {
                return;
            }
            self.anchors.insert(anchor, (v.clone(), size));
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
                    self.stored.text += p.len();
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
            self.stored.text += p.len();
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
                let size = Size {
                    nodes: 1,
                    text: s.len(),
                };
                if !self.grow(size, pos) {
                    return;
                }
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
                self.push_value(v, anchor, size, pos);
            }
            Event::Alias(id) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                if !self.begin(pos, None) || is_key {
                    return;
                }
                // Counted before the copy is made: that copy is what must not happen.
                let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                    self.fail("unknown alias".into(), pos);
                    return;
                };
                if !self.grow(size, pos) {
                    return;
                }
                if let Some((v, _)) = self.anchors.get(&id) {
                    let v = v.clone();
                    self.push_value(v, 0, size, pos);
                }
            }
            Event::SequenceStart(anchor, _) => {
                let start = self.size;
                if !self.grow(Size { nodes: 1, text: 0 }, pos) {
                    return;
                }
                if !self.begin(pos, None) {
                    // A sequence as a mapping key: keep parsing, the error is recorded.
                }
                let path = self.child_path().unwrap_or_default();
                self.stack.push(Frame::Seq {
                    path,
                    items: Vec::new(),
                    anchor,
                    start,
                });
                self.grow(Size::default(), pos);
            }
            Event::MappingStart(anchor, _) => {
                let start = self.size;
                if !self.grow(Size { nodes: 1, text: 0 }, pos) {
                    return;
                }
                self.begin(pos, None);
                let path = self.child_path().unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    map: Map::new(),
                    key: None,
                    anchor,
                    start,
                });
                self.grow(Size::default(), pos);
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    items,
                    anchor,
                    start,
                    ..
                }) => {
                    let size = self.size.since(start);
                    self.push_value(Value::Array(items), anchor, size, pos)
                }
                Some(Frame::Map {
                    map, anchor, start, ..
                }) => {
                    let size = self.size.since(start);
                    self.push_value(Value::Object(map), anchor, size, pos)
                }
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
pub(crate) mod tests {
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

    /// The "billion laughs": `levels` anchors, each a list of nine aliases of the
    /// previous one; 9^levels leaves from a few hundred bytes.
    pub(crate) fn billion_laughs(levels: usize) -> String {
        let mut s = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..=levels {
            let p = i - 1;
            s += &format!(
                "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
            );
        }
        s
    }

    #[test]
    fn billion_laughs_is_refused_quickly() {
        let src = billion_laughs(9);
        assert!(src.len() < 1024, "{} bytes", src.len());
        let start = std::time::Instant::now();
        let e = parse_documents(&src).expect_err("expands past the limit");
        assert!(e.message.contains("nodes"), "{e:?}");
        assert!(e.pos.line > 1, "{e:?}");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn deep_nesting_and_long_aliased_text_are_refused() {
        let deep = "- ".repeat(MAX_DEPTH + 1) + "x\n";
        let e = parse_documents(&deep).expect_err("too deep");
        assert_eq!(e.kind, YamlErrorKind::TooLarge);
        assert!(e.message.contains("nests deeper than"), "{e:?}");
        parse_documents(&("- ".repeat(MAX_DEPTH - 1) + "x\n")).expect("deep enough");

        let long = format!(
            "a: &a {}\nb: [{}]\n",
            "x".repeat(1 << 20),
            ["*a"; 65].join(", ")
        );
        let e = parse_documents(&long).expect_err("too much text");
        assert!(e.message.contains("MiB of text"), "{e:?}");
    }

    /// Every field's path is kept for error messages: a long key over many
    /// items would make a small file keep hundreds of MiB of paths.
    #[test]
    fn long_paths_count_against_the_limit() {
        // An explicit key (`? `): a plain one is limited to 1024 characters.
        let src = format!("? {}\n: [{}]\n", "k".repeat(1 << 20), ["1"; 300].join(","));
        let e = parse_documents(&src)
            .map(|d| d.len())
            .expect_err("too many path bytes");
        assert_eq!(e.kind, YamlErrorKind::TooLarge);
        assert!(e.message.contains("MiB of text"), "{e:?}");
    }

    /// The limits leave room for any real file up to the size limit.
    #[test]
    fn a_file_at_the_size_limit_without_aliases_is_accepted() {
        let mut src = String::new();
        let mut i = 0;
        while src.len() < crate::config::file::MAX_FILE_BYTES - 300 {
            i += 1;
            src += &format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-{i}\n  namespace: shop\n  labels:\n    app: web\nspec:\n  nodeName: node-a\n  containers:\n    - name: app\n      ports:\n        - containerPort: 8080\nstatus:\n  podIP: 10.88.1.1\n"
            );
        }
        let docs = parse_documents(&src)
            .map_err(|e| e.message)
            .expect("accepted");
        assert_eq!(docs.len(), i);
    }
}
