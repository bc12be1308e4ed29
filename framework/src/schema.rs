//! The catalogue generated from the Rust types: an event is defined once.
//!
//! Derive [`Event`] (type, topic, producer, consumers, saga end) and schemars' `JsonSchema` (the
//! data's shape) on the type, list the types in a [`Schemas`], and the catalogue follows:
//!
//! ```
//! use choreograph::{Event, Schemas};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, JsonSchema, Event)]
//! #[event(type = "orders.order.placed.v1", topic = "orders.order", producer = "orders",
//!         consumers = ["payments"])]
//! pub struct OrderPlaced { pub order_id: String, pub cents: u64 }
//!
//! #[derive(Serialize, Deserialize, JsonSchema, Event)]
//! #[event(type = "orders.order.paid.v1", topic = "orders.order", producer = "payments",
//!         ends_saga = "completed")]
//! pub struct OrderPaid { pub order_id: String }
//!
//! /// Every event of the choreography.
//! pub fn schemas() -> Schemas {
//!     Schemas::new().event::<OrderPlaced>().event::<OrderPaid>()
//! }
//!
//! // In process: no files needed (give it to `Service::catalogue` or `Publisher::with_catalogue`).
//! let catalogue = std::sync::Arc::new(schemas().catalogue().unwrap());
//! assert!(catalogue.validate(OrderPlaced::TYPE, br#"{"order_id":"o-1","cents":120}"#).is_ok());
//! assert!(catalogue.validate(OrderPlaced::TYPE, br#"{"order_id":"o-1"}"#).is_err());
//! ```
//!
//! The same documents as files, `<type>.json` in a directory, are the contract for what does
//! not read Rust: services in other languages, the `choreograph` CLI (`--schemas DIR`),
//! reviewers. Keep them current with a test in the crate that defines the events:
//!
//! ```no_run
//! # fn schemas() -> choreograph::Schemas { choreograph::Schemas::new() }
//! #[test]
//! fn schemas_are_current() {
//!     let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
//!     schemas().check_or_update_dir(dir).unwrap();
//! }
//! ```
//!
//! It fails, listing each file that differs from its type (with the JSON pointers where they
//! differ), is missing, or is an orphan (a `*.json` file no listed type produces); with
//! `CHOREOGRAPH_UPDATE_SCHEMAS=1` it rewrites the files from the types instead (orphans are
//! still reported: deleting a contract is left to you).
//!
//! A document is `schemars::schema_for!(E)` (JSON Schema 2020-12) plus the `x-choreograph`
//! block from [`Event::placement`]; files are pretty-printed JSON with a final newline.
//! schemars attributes (`#[schemars(email)]`, doc comments as descriptions, ...) shape it.
//!
//! schemars: add `schemars = "1"` to the crate (the simple way), or derive with
//! `#[schemars(crate = "choreograph::schemars")]` to use the framework's re-export:
//!
//! ```
//! use choreograph::schemars::JsonSchema;
//!
//! #[derive(serde::Serialize, serde::Deserialize, JsonSchema, choreograph::Event)]
//! #[schemars(crate = "choreograph::schemars")]
//! #[event(type = "orders.order.cancelled.v1", topic = "orders.order")]
//! pub struct OrderCancelled { pub order_id: String }
//!
//! let doc = choreograph::schema::document::<OrderCancelled>();
//! assert_eq!(doc["x-choreograph"]["producer"], serde_json::Value::Null);
//! ```
//!
//! Hand-written schemas still work: [`Catalogue::load_dir`] and [`Catalogue::from_documents`]
//! read any directory of documents, generated or not.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde_json::Value;

use crate::catalogue::{Catalogue, CatalogueError};
use crate::event::Event;

/// The environment variable that makes [`Schemas::check_or_update_dir`] rewrite the files:
/// set and not empty, `0` or `false`.
pub const UPDATE_ENV: &str = "CHOREOGRAPH_UPDATE_SCHEMAS";

/// The catalogue document of an event type: its JSON Schema (`schemars::schema_for!`) with the
/// `x-choreograph` block of [`Event::placement`].
pub fn document<E: Event + JsonSchema>() -> Value {
    let mut doc = serde_json::to_value(schemars::schema_for!(E))
        .expect("a schemars schema serializes to JSON");
    let placement = serde_json::to_value(E::placement()).expect("a placement serializes to JSON");
    doc.as_object_mut()
        .expect("a root schema is a JSON object (it has `$schema`)")
        .insert("x-choreograph".to_owned(), placement);
    doc
}

/// The file name of an event type's document: `<type>.json`.
pub fn file_name(event_type: &str) -> String {
    format!("{event_type}.json")
}

/// The text of a document as written to its file: pretty-printed JSON and a newline.
pub fn to_file_text(document: &Value) -> String {
    serde_json::to_string_pretty(document).expect("a JSON value serializes") + "\n"
}

/// The event types of a choreography (or of one crate's part of it), whose catalogue documents
/// it generates, writes and checks. Cheap to build: documents are generated when asked for.
#[derive(Clone, Default)]
pub struct Schemas {
    events: Vec<Listed>,
}

#[derive(Clone, Copy)]
struct Listed {
    event_type: &'static str,
    rust_type: &'static str,
    document: fn() -> Value,
}

impl fmt::Debug for Schemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.events.iter().map(|e| e.event_type))
            .finish()
    }
}

impl Schemas {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event type.
    ///
    /// # Panics
    /// When its CloudEvents type is already listed (by this Rust type or another one): a
    /// catalogue has one document per type, and a list that names a type twice is a mistake
    /// (usually one type listed in place of another). Also when the type is empty or holds a
    /// `/` or `\` (it names the file `<type>.json`), which `#[derive(Event)]` already refuses.
    #[track_caller]
    pub fn event<E: Event + JsonSchema>(mut self) -> Self {
        self.push(Listed {
            event_type: E::TYPE,
            rust_type: std::any::type_name::<E>(),
            document: document::<E>,
        });
        self
    }

    /// Adds every type of `other` (e.g. the events of another crate).
    ///
    /// # Panics
    /// When a type is in both, as [`event`](Self::event).
    #[track_caller]
    pub fn merge(mut self, other: Schemas) -> Self {
        for e in other.events {
            self.push(e);
        }
        self
    }

    #[track_caller]
    fn push(&mut self, e: Listed) {
        assert!(
            !e.event_type.is_empty() && !e.event_type.contains(['/', '\\']),
            "Schemas: the event type {:?} of `{}` cannot name a schema file",
            e.event_type,
            e.rust_type
        );
        if let Some(first) = self.events.iter().find(|f| f.event_type == e.event_type) {
            if first.rust_type == e.rust_type {
                panic!(
                    "Schemas: `{}` is listed twice (event type `{}`)",
                    e.rust_type, e.event_type
                );
            }
            panic!(
                "Schemas: `{}` and `{}` both declare the event type `{}`; each type needs its own",
                first.rust_type, e.rust_type, e.event_type
            );
        }
        self.events.push(e);
    }

    /// How many event types are listed.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The CloudEvents types, in the order they were listed.
    pub fn event_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.events.iter().map(|e| e.event_type)
    }

    /// Every document with its file name (`<type>.json`), in the order the types were listed.
    pub fn documents(&self) -> Vec<(String, Value)> {
        self.events
            .iter()
            .map(|e| (file_name(e.event_type), (e.document)()))
            .collect()
    }

    /// The catalogue of the listed types, generated in process (no files are read).
    pub fn catalogue(&self) -> Result<Catalogue, CatalogueError> {
        let texts: Vec<(String, String)> = self
            .documents()
            .into_iter()
            .map(|(name, doc)| (name, doc.to_string()))
            .collect();
        Catalogue::from_documents(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
    }

    /// Writes every document to `dir/<type>.json` (creating `dir`), pretty-printed with a final
    /// newline; files whose text is already right are not touched. Other files are left alone.
    pub fn write_dir(&self, dir: impl AsRef<Path>) -> io::Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| with_path(dir, e))?;
        for (name, doc) in self.documents() {
            write_file(&dir.join(name), &to_file_text(&doc))?;
        }
        Ok(())
    }

    /// Checks `dir` against the types: every document present and equal (as JSON values; the
    /// formatting is free), and no `*.json` file that no listed type produces.
    pub fn check_dir(&self, dir: impl AsRef<Path>) -> Result<(), SchemaDrift> {
        let dir = dir.as_ref();
        let mut files = Vec::new();
        let mut expected = BTreeSet::new();
        for (name, generated) in self.documents() {
            let path = dir.join(&name);
            expected.insert(name.clone());
            match std::fs::read_to_string(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    files.push(FileDrift::Missing { file: name });
                }
                Err(e) => files.push(FileDrift::Unreadable {
                    file: name,
                    reason: e.to_string(),
                }),
                Ok(text) => match serde_json::from_str::<Value>(&text) {
                    Err(e) => files.push(FileDrift::Unreadable {
                        file: name,
                        reason: format!("not JSON: {e}"),
                    }),
                    Ok(on_disk) if on_disk != generated => files.push(FileDrift::Differs {
                        file: name,
                        generated,
                        on_disk,
                    }),
                    Ok(_) => {}
                },
            }
        }
        match json_files(dir) {
            Ok(names) => files.extend(
                names
                    .into_iter()
                    .filter(|n| !expected.contains(n))
                    .map(|file| FileDrift::Orphan { file }),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => files.push(FileDrift::Unreadable {
                file: ".".into(),
                reason: e.to_string(),
            }),
        }
        if files.is_empty() {
            Ok(())
        } else {
            Err(SchemaDrift {
                dir: dir.to_owned(),
                files,
            })
        }
    }

    /// What a test calls: with [`CHOREOGRAPH_UPDATE_SCHEMAS`](UPDATE_ENV) set (not empty, `0`
    /// or `false`), writes the documents ([`write_dir`](Self::write_dir)) and then reports what
    /// is left (orphans, files it could not write); otherwise [`check_dir`](Self::check_dir).
    pub fn check_or_update_dir(&self, dir: impl AsRef<Path>) -> Result<(), SchemaDrift> {
        self.check_or_update(
            dir.as_ref(),
            update_requested(std::env::var(UPDATE_ENV).ok()),
        )
    }

    fn check_or_update(&self, dir: &Path, update: bool) -> Result<(), SchemaDrift> {
        if !update {
            return self.check_dir(dir);
        }
        let mut unwritable = Vec::new();
        if let Err(e) = std::fs::create_dir_all(dir) {
            unwritable.push(FileDrift::Unwritable {
                file: ".".into(),
                reason: e.to_string(),
            });
        } else {
            for (name, doc) in self.documents() {
                if let Err(e) = write_file(&dir.join(&name), &to_file_text(&doc)) {
                    unwritable.push(FileDrift::Unwritable {
                        file: name,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let mut files = unwritable;
        if let Err(drift) = self.check_dir(dir) {
            let failed: BTreeSet<String> = files.iter().map(|f| f.file().to_owned()).collect();
            files.extend(
                drift
                    .files
                    .into_iter()
                    .filter(|f| !failed.contains(f.file())),
            );
        }
        if files.is_empty() {
            Ok(())
        } else {
            Err(SchemaDrift {
                dir: dir.to_owned(),
                files,
            })
        }
    }
}

fn update_requested(value: Option<String>) -> bool {
    match value {
        None => false,
        Some(v) => {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
        }
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| with_path(path, e))
}

/// The names of the `*.json` files directly in `dir`, sorted.
fn json_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().map(|e| e == "json").unwrap_or(false) {
            if let Some(name) = path.file_name() {
                names.push(name.to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// A directory of schemas that does not match the Rust types. `Debug` prints the same text as
/// `Display`, so that `.unwrap()` in a test reads well.
#[derive(thiserror::Error)]
pub struct SchemaDrift {
    /// The directory checked.
    pub dir: PathBuf,
    /// What is wrong, file by file: the listed types' files first, in order, then orphans.
    pub files: Vec<FileDrift>,
}

/// One file of a [`SchemaDrift`] (names relative to its directory; `.` is the directory).
#[derive(Clone, Debug, PartialEq)]
pub enum FileDrift {
    /// The file's document is not the one the type generates.
    Differs {
        file: String,
        generated: Value,
        on_disk: Value,
    },
    /// No file for a listed type.
    Missing { file: String },
    /// A `*.json` file no listed type produces.
    Orphan { file: String },
    /// The file (or directory) cannot be read, or is not JSON.
    Unreadable { file: String, reason: String },
    /// The file (or directory) cannot be written (when updating).
    Unwritable { file: String, reason: String },
}

impl FileDrift {
    /// The file's name.
    pub fn file(&self) -> &str {
        match self {
            FileDrift::Differs { file, .. }
            | FileDrift::Missing { file }
            | FileDrift::Orphan { file }
            | FileDrift::Unreadable { file, .. }
            | FileDrift::Unwritable { file, .. } => file,
        }
    }
}

/// At most this many differing places are named per file.
const MAX_DIFFERENCES: usize = 8;

impl fmt::Display for SchemaDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the schemas in {} and the Rust types differ:",
            self.dir.display()
        )?;
        let mut rewritable = false;
        for file in &self.files {
            match file {
                FileDrift::Differs {
                    file,
                    generated,
                    on_disk,
                } => {
                    rewritable = true;
                    writeln!(f, "- {file} differs from its type:")?;
                    let mut places = Vec::new();
                    differences(generated, on_disk, &mut String::new(), &mut places);
                    let more = places.len().saturating_sub(MAX_DIFFERENCES);
                    for place in places.iter().take(MAX_DIFFERENCES) {
                        writeln!(f, "    {place}")?;
                    }
                    if more > 0 {
                        writeln!(f, "    ... and {more} more")?;
                    }
                    writeln!(f, "    the type generates: {generated}")?;
                    writeln!(f, "    the file holds:     {on_disk}")?;
                }
                FileDrift::Missing { file } => {
                    rewritable = true;
                    writeln!(f, "- {file} is missing")?;
                }
                FileDrift::Orphan { file } => writeln!(
                    f,
                    "- {file} is an orphan: no listed type produces it (delete it if its type \
                     is gone, or add the type to the `Schemas`)"
                )?,
                FileDrift::Unreadable { file, reason } => {
                    rewritable = true;
                    writeln!(f, "- {file} cannot be read: {reason}")?;
                }
                FileDrift::Unwritable { file, reason } => {
                    writeln!(f, "- {file} cannot be written: {reason}")?;
                }
            }
        }
        if rewritable {
            write!(
                f,
                "Fix the types, or run with {UPDATE_ENV}=1 to rewrite the files from the types."
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for SchemaDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where `generated` and `on_disk` differ, as `<JSON pointer>: ...` lines.
fn differences(generated: &Value, on_disk: &Value, at: &mut String, out: &mut Vec<String>) {
    let here = |at: &str| {
        if at.is_empty() {
            "/".to_owned()
        } else {
            at.to_owned()
        }
    };
    match (generated, on_disk) {
        (Value::Object(g), Value::Object(d)) => {
            let keys: BTreeSet<&String> = g.keys().chain(d.keys()).collect();
            for key in keys {
                let len = at.len();
                at.push('/');
                at.push_str(&key.replace('~', "~0").replace('/', "~1"));
                match (g.get(key), d.get(key)) {
                    (Some(gv), Some(dv)) => differences(gv, dv, at, out),
                    (Some(gv), None) => out.push(format!(
                        "{}: the type generates {}, the file has nothing",
                        at,
                        clip(gv)
                    )),
                    (None, Some(dv)) => out.push(format!(
                        "{}: the type generates nothing, the file has {}",
                        at,
                        clip(dv)
                    )),
                    (None, None) => {}
                }
                at.truncate(len);
            }
        }
        (Value::Array(g), Value::Array(d)) if g.len() == d.len() => {
            for (i, (gv, dv)) in g.iter().zip(d).enumerate() {
                let len = at.len();
                at.push('/');
                at.push_str(&i.to_string());
                differences(gv, dv, at, out);
                at.truncate(len);
            }
        }
        (g, d) if g != d => out.push(format!(
            "{}: the type generates {}, the file has {}",
            here(at),
            clip(g),
            clip(d)
        )),
        _ => {}
    }
}

fn clip(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 80 {
        return text;
    }
    let head: String = text.chars().take(77).collect();
    head + "..."
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Placement, SagaOutcome};
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    /// A newcomer to the club.
    #[derive(Serialize, Deserialize, JsonSchema, crate::Event)]
    #[serde(deny_unknown_fields)]
    #[event(type = "club.member.joined.v1", topic = "club.member", producer = "members",
            consumers = ["mail", "billing"])]
    struct Joined {
        member_id: String,
        #[schemars(email)]
        email: String,
    }

    #[derive(Serialize, Deserialize, JsonSchema, crate::Event)]
    #[event(type = "club.member.left.v1", topic = TOPIC, ends_saga = "failed")]
    struct Left {
        member_id: String,
    }
    const TOPIC: &str = "club.member";

    /// Implemented by hand: the placement constants default.
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Manual {
        n: u8,
    }
    impl Event for Manual {
        const TYPE: &'static str = "club.manual.v1";
        const TOPIC: &'static str = "club.manual";
    }

    #[derive(Serialize, Deserialize, JsonSchema, crate::Event)]
    #[event(type = "club.member.joined.v1", topic = "club.other")]
    struct Impostor {}

    fn schemas() -> Schemas {
        Schemas::new().event::<Joined>().event::<Left>()
    }

    /// A fresh directory under the system's temporary one.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "choreograph-schema-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_document_is_the_schema_plus_the_placement() {
        let doc = document::<Joined>();
        let mut expected = serde_json::to_value(schemars::schema_for!(Joined)).unwrap();
        expected["x-choreograph"] = json!({
            "type": "club.member.joined.v1", "topic": "club.member", "producer": "members",
            "consumers": ["mail", "billing"], "ends-saga": null,
        });
        assert_eq!(doc, expected);
        assert_eq!(doc["title"], "Joined");
        assert_eq!(doc["description"], "A newcomer to the club.");
        assert_eq!(doc["properties"]["email"]["format"], "email");
        assert_eq!(
            doc["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(
            document::<Manual>()["x-choreograph"],
            json!({ "type": "club.manual.v1", "topic": "club.manual", "producer": null,
                    "consumers": [], "ends-saga": null })
        );
        assert_eq!(document::<Left>()["x-choreograph"]["ends-saga"], "failed");
    }

    #[test]
    fn the_catalogue_is_generated_in_process() {
        let s = schemas().event::<Manual>();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.event_types().collect::<Vec<_>>(),
            [
                "club.member.joined.v1",
                "club.member.left.v1",
                "club.manual.v1"
            ]
        );
        let names: Vec<String> = s.documents().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "club.member.joined.v1.json",
                "club.member.left.v1.json",
                "club.manual.v1.json"
            ]
        );
        let c = s.catalogue().unwrap();
        assert_eq!(c.get(Joined::TYPE).unwrap().placement, Joined::placement());
        assert_eq!(
            c.get(Left::TYPE).unwrap().placement,
            Placement {
                event_type: "club.member.left.v1".into(),
                topic: "club.member".into(),
                producer: None,
                consumers: vec![],
                ends_saga: Some(SagaOutcome::Failed),
            }
        );
        assert_eq!(c.topics(), ["club.manual", "club.member"]);
        c.validate(
            Joined::TYPE,
            br#"{"member_id":"m","email":"a@example.com"}"#,
        )
        .unwrap();
        let err = c
            .validate(Joined::TYPE, br#"{"member_id":"m","email":"nope","x":1}"#)
            .unwrap_err();
        assert_eq!(err.errors.len(), 2, "{err}");
        assert!(Schemas::new().catalogue().unwrap().is_empty());
        assert_eq!(
            format!("{:?}", schemas()),
            r#"["club.member.joined.v1", "club.member.left.v1"]"#
        );
    }

    #[test]
    #[should_panic(expected = "both declare the event type `club.member.joined.v1`")]
    fn two_types_with_one_event_type_panic() {
        let _ = schemas().event::<Impostor>();
    }

    #[test]
    #[should_panic(expected = "is listed twice (event type `club.member.left.v1`)")]
    fn a_type_listed_twice_panics() {
        let _ = Schemas::new().merge(schemas()).event::<Left>();
    }

    #[test]
    fn written_files_check_and_drift_is_reported() {
        let dir = temp_dir("drift");
        let s = schemas();
        assert!(matches!(s.check_dir(&dir), Err(d) if d.files.len() == 2));
        s.write_dir(&dir).unwrap();
        s.check_dir(&dir).unwrap();
        let joined = dir.join("club.member.joined.v1.json");
        let text = std::fs::read_to_string(&joined).unwrap();
        assert_eq!(text, to_file_text(&document::<Joined>()));
        assert!(text.ends_with("}\n") && text.contains("\n  \"x-choreograph\": {\n"));
        // Formatting is free; content is not.
        std::fs::write(&joined, document::<Joined>().to_string()).unwrap();
        s.check_dir(&dir).unwrap();
        // Other files than *.json are not the catalogue's business.
        std::fs::write(dir.join("README.md"), "# schemas\n").unwrap();
        s.check_dir(&dir).unwrap();

        let mut changed = document::<Joined>();
        changed["properties"]["email"]["format"] = json!("hostname");
        changed["x-choreograph"]["consumers"] = json!(["mail"]);
        std::fs::write(&joined, to_file_text(&changed)).unwrap();
        std::fs::remove_file(dir.join("club.member.left.v1.json")).unwrap();
        std::fs::write(dir.join("club.member.renamed.v1.json"), "{}").unwrap();
        let drift = s.check_dir(&dir).unwrap_err();
        assert_eq!(
            drift.files.iter().map(FileDrift::file).collect::<Vec<_>>(),
            [
                "club.member.joined.v1.json",
                "club.member.left.v1.json",
                "club.member.renamed.v1.json"
            ]
        );
        assert!(
            matches!(&drift.files[0], FileDrift::Differs { on_disk, .. } if *on_disk == changed)
        );
        assert!(matches!(&drift.files[1], FileDrift::Missing { .. }));
        assert!(matches!(&drift.files[2], FileDrift::Orphan { .. }));
        let text = format!("{drift:?}");
        assert_eq!(text, drift.to_string());
        for part in [
            "club.member.joined.v1.json differs from its type",
            r#"/properties/email/format: the type generates "email", the file has "hostname""#,
            r#"/x-choreograph/consumers: the type generates ["mail","billing"], the file has ["mail"]"#,
            "club.member.left.v1.json is missing",
            "club.member.renamed.v1.json is an orphan",
            "run with CHOREOGRAPH_UPDATE_SCHEMAS=1 to rewrite the files from the types",
        ] {
            assert!(text.contains(part), "{part:?} not in:\n{text}");
        }

        std::fs::write(&joined, "{ not json").unwrap();
        let drift = s.check_dir(&dir).unwrap_err();
        assert!(
            matches!(&drift.files[0], FileDrift::Unreadable { reason, .. } if reason.starts_with("not JSON"))
        );

        // Updating rewrites what the types generate and still reports the orphan.
        let drift = s.check_or_update(&dir, true).unwrap_err();
        assert_eq!(
            drift.files,
            [FileDrift::Orphan {
                file: "club.member.renamed.v1.json".into()
            }]
        );
        assert!(!drift.to_string().contains(UPDATE_ENV), "{drift}");
        std::fs::remove_file(dir.join("club.member.renamed.v1.json")).unwrap();
        s.check_or_update(&dir, false).unwrap();
        s.check_or_update(&dir, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn update_into_a_new_directory() {
        let dir = temp_dir("new").join("nested");
        schemas().check_or_update(&dir, true).unwrap();
        schemas().check_dir(&dir).unwrap();
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_update_variable() {
        for (value, update) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("false"), false),
            (Some("FALSE"), false),
            (Some("1"), true),
            (Some("true"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(
                update_requested(value.map(String::from)),
                update,
                "{value:?}"
            );
        }
    }
}
