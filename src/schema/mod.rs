//! The QMP schema of the QEMU in use: what `query-qmp-schema` says, as an index.
//!
//! QEMU describes every command, event and type it knows as a flat list of `SchemaInfo`
//! entries (`docs/devel/qapi-code-gen.rst`, "Client JSON Protocol introspection"): a
//! `meta-type` of `builtin`, `enum`, `array`, `object`, `alternate`, `command` or `event`, and
//! names that are masked as numbers (`"1"`, `"2"` …) for everything but builtins, commands and
//! events. [`Schema::parse`] reads that list in full into an index, checking that every type
//! it names exists, so that nothing later has to guess.
//!
//! What the index answers:
//! - plain questions: [`has_command`](Schema::has_command), [`has_event`](Schema::has_event),
//!   [`command`](Schema::command) (its arguments, `allow-oob`, features);
//! - feature questions in libvirt's query-path syntax ([`query`](Schema::query), grammar in
//!   `query.rs` and the README);
//! - whether a command's arguments fit ([`check_command`](Schema::check_command), see `check.rs`).
//!
//! A machine loads its schema lazily, once per QEMU binary per process (`cache.rs`), and the
//! checks before send follow the machine's [`SchemaPolicy`] (`checker.rs`).

mod cache;
mod check;
mod checker;
mod query;

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{Error, Result};

pub use check::{Finding, Rule};
pub use checker::{Checker, Greeting, Level, SchemaPolicy};

/// The JSON type of a builtin (`json-type` in the schema).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonType {
    /// `"string"`.
    String,
    /// `"int"`: a JSON number without fraction.
    Int,
    /// `"number"`: any JSON number.
    Number,
    /// `"boolean"`.
    Boolean,
    /// `"null"`.
    Null,
    /// `"value"`: any JSON value (the `any` builtin).
    Value,
}

impl JsonType {
    fn parse(text: &str) -> Option<JsonType> {
        Some(match text {
            "string" => JsonType::String,
            "int" => JsonType::Int,
            "number" => JsonType::Number,
            "boolean" => JsonType::Boolean,
            "null" => JsonType::Null,
            "value" => JsonType::Value,
            _ => return None,
        })
    }

    /// The name the schema uses (`"string"`, `"int"` …).
    pub fn as_str(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Int => "int",
            JsonType::Number => "number",
            JsonType::Boolean => "boolean",
            JsonType::Null => "null",
            JsonType::Value => "value",
        }
    }
}

/// A member of an object type (or an argument of a command).
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) ty: String,
    /// The schema gives it a `default` (always `null` today): it may be left out.
    pub(crate) optional: bool,
    pub(crate) features: Vec<String>,
}

/// An enum's value, with its own features.
#[derive(Clone, Debug)]
pub(crate) struct EnumValue {
    pub(crate) name: String,
    pub(crate) features: Vec<String>,
}

/// One schema entry.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    Builtin(JsonType),
    Enum {
        values: Vec<EnumValue>,
    },
    Array {
        element: String,
    },
    Object {
        members: Vec<Member>,
        /// The discriminator of a union: one of `members`.
        tag: Option<String>,
        /// `(case, type)`: the members a tag value adds.
        variants: Vec<(String, String)>,
    },
    Alternate {
        /// The types of the branches (QEMU tells them apart by JSON type).
        branches: Vec<String>,
    },
    Command {
        arg_type: String,
        ret_type: String,
        allow_oob: bool,
    },
    Event {
        arg_type: String,
    },
}

impl Entry {
    fn meta_type(&self) -> &'static str {
        match self {
            Entry::Builtin(_) => "builtin",
            Entry::Enum { .. } => "enum",
            Entry::Array { .. } => "array",
            Entry::Object { .. } => "object",
            Entry::Alternate { .. } => "alternate",
            Entry::Command { .. } => "command",
            Entry::Event { .. } => "event",
        }
    }
}

/// An entry and the features the schema gives it.
#[derive(Clone, Debug)]
pub(crate) struct Info {
    pub(crate) entry: Entry,
    pub(crate) features: Vec<String>,
}

/// The parsed schema of one QEMU binary. Immutable, shared between machines (`Arc`).
#[derive(Debug)]
pub struct Schema {
    entries: HashMap<String, Info>,
    commands: usize,
    events: usize,
}

/// A command as the schema describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Its name.
    pub name: String,
    /// Its arguments, in the schema's order (a union's variant members are not listed: see
    /// [`Argument::variants`]).
    pub arguments: Vec<Argument>,
    /// QEMU runs it out-of-band when asked (`exec-oob`).
    pub allow_oob: bool,
    /// Its features, e.g. `deprecated`, `unstable`.
    pub features: Vec<String>,
}

/// One argument of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Argument {
    /// Its name.
    pub name: String,
    /// True when it may be left out.
    pub optional: bool,
    /// What it holds, in words: a builtin (`str`, `int`, `number`, `bool`, `null`, `any`),
    /// `enum (a, b, c)`, `object`, `array of …`, `alternate (… | …)`.
    pub kind: String,
    /// When it is a union's discriminator: the cases it selects.
    pub variants: Vec<String>,
    /// Its features, e.g. `deprecated`.
    pub features: Vec<String>,
}

impl Command {
    /// As JSON, the shape the C, Go and Python APIs hand out: `{"name", "allow-oob",
    /// "features": [...], "arguments": [{"name", "optional", "type", "variants", "features"}]}`.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "allow-oob": self.allow_oob,
            "features": self.features,
            "arguments": self.arguments.iter().map(|a| serde_json::json!({
                "name": a.name,
                "optional": a.optional,
                "type": a.kind,
                "variants": a.variants,
                "features": a.features,
            })).collect::<Vec<_>>(),
        })
    }
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("damaged QMP schema: {what}"))
}

/// Where in the schema an entry is, for error messages: formatted only when one is made (a
/// schema has ~1500 entries; building this text for each, with a second copy of each name,
/// took ~30 % of the index's build).
#[derive(Clone, Copy)]
struct At<'a> {
    index: usize,
    name: Option<&'a str>,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name {
            None => write!(f, "entry {}", self.index),
            Some(name) => write!(f, "entry {} ({name:?})", self.index),
        }
    }
}

fn string_field<'a>(v: &'a Value, key: &str, what: At<'_>) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{what}: no string \"{key}\"")))
}

fn features(v: &Value, what: At<'_>) -> Result<Vec<String>> {
    match v.get("features") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|f| {
                f.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("{what}: a feature that is not a string")))
            })
            .collect(),
        Some(_) => Err(bad(format!("{what}: \"features\" is not an array"))),
    }
}

fn array<'a>(v: &'a Value, key: &str, what: At<'_>) -> Result<&'a [Value]> {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| bad(format!("{what}: no array \"{key}\"")))
}

fn parse_entry(v: &Value, index: usize) -> Result<(String, Info)> {
    let here = At { index, name: None };
    if !v.is_object() {
        return Err(bad(format!("{here} is not an object")));
    }
    let name = string_field(v, "name", here)?;
    let what = At {
        index,
        name: Some(name),
    };
    let name = name.to_owned();
    let meta = string_field(v, "meta-type", what)?;
    let entry = match meta {
        "builtin" => {
            let t = string_field(v, "json-type", what)?;
            Entry::Builtin(
                JsonType::parse(t).ok_or_else(|| bad(format!("{what}: json-type {t:?}")))?,
            )
        }
        "enum" => {
            let names = array(v, "values", what)?;
            let mut values = Vec::with_capacity(names.len());
            for n in names {
                let n = n
                    .as_str()
                    .ok_or_else(|| bad(format!("{what}: a value that is not a string")))?;
                values.push(EnumValue {
                    name: n.to_owned(),
                    features: Vec::new(),
                });
            }
            // QEMU 6.2 and later: `members`, with per-value features.
            if let Some(members) = v.get("members") {
                let members = members
                    .as_array()
                    .ok_or_else(|| bad(format!("{what}: \"members\" is not an array")))?;
                for m in members {
                    let n = string_field(m, "name", what)?;
                    let f = features(m, what)?;
                    if let Some(value) = values.iter_mut().find(|e| e.name == n) {
                        value.features = f;
                    } else {
                        return Err(bad(format!("{what}: member {n:?} is not among its values")));
                    }
                }
            }
            Entry::Enum { values }
        }
        "array" => Entry::Array {
            element: string_field(v, "element-type", what)?.to_owned(),
        },
        "object" => {
            let mut members = Vec::new();
            for m in array(v, "members", what)? {
                members.push(Member {
                    name: string_field(m, "name", what)?.to_owned(),
                    ty: string_field(m, "type", what)?.to_owned(),
                    optional: m.get("default").is_some(),
                    features: features(m, what)?,
                });
            }
            let tag = match v.get("tag") {
                None => None,
                Some(t) => Some(
                    t.as_str()
                        .ok_or_else(|| bad(format!("{what}: \"tag\" is not a string")))?
                        .to_owned(),
                ),
            };
            let mut variants = Vec::new();
            if let Some(list) = v.get("variants") {
                let list = list
                    .as_array()
                    .ok_or_else(|| bad(format!("{what}: \"variants\" is not an array")))?;
                for c in list {
                    variants.push((
                        string_field(c, "case", what)?.to_owned(),
                        string_field(c, "type", what)?.to_owned(),
                    ));
                }
            }
            match &tag {
                Some(t) if !members.iter().any(|m| &m.name == t) => {
                    return Err(bad(format!("{what}: tag {t:?} is not a member")));
                }
                None if !variants.is_empty() => {
                    return Err(bad(format!("{what}: variants without a tag")));
                }
                _ => {}
            }
            Entry::Object {
                members,
                tag,
                variants,
            }
        }
        "alternate" => {
            let mut branches = Vec::new();
            for m in array(v, "members", what)? {
                branches.push(string_field(m, "type", what)?.to_owned());
            }
            Entry::Alternate { branches }
        }
        "command" => Entry::Command {
            arg_type: string_field(v, "arg-type", what)?.to_owned(),
            ret_type: string_field(v, "ret-type", what)?.to_owned(),
            allow_oob: match v.get("allow-oob") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad(format!("{what}: \"allow-oob\" is not a boolean"))),
            },
        },
        "event" => Entry::Event {
            arg_type: string_field(v, "arg-type", what)?.to_owned(),
        },
        other => return Err(bad(format!("{what}: unknown meta-type {other:?}"))),
    };
    Ok((
        name,
        Info {
            entry,
            features: features(v, what)?,
        },
    ))
}

impl Schema {
    /// Reads the `return` value of `query-qmp-schema` (the array of entries). Every entry is
    /// checked for the fields its meta-type needs, and every type an entry names must exist;
    /// otherwise [`Error::Protocol`] says which entry is damaged.
    pub fn parse(reply: &Value) -> Result<Schema> {
        let list = reply
            .as_array()
            .ok_or_else(|| bad("the reply is not an array"))?;
        let mut entries = HashMap::with_capacity(list.len());
        let (mut commands, mut events) = (0, 0);
        for (i, v) in list.iter().enumerate() {
            let (name, info) = parse_entry(v, i)?;
            match info.entry {
                Entry::Command { .. } => commands += 1,
                Entry::Event { .. } => events += 1,
                _ => {}
            }
            match entries.entry(name) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    return Err(bad(format!("{:?} is defined twice", e.key())));
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(info);
                }
            }
        }
        let schema = Schema {
            entries,
            commands,
            events,
        };
        schema.check_references()?;
        Ok(schema)
    }

    /// Every type named by an entry exists, and is a type (not a command or event); variant
    /// and argument types are objects.
    fn check_references(&self) -> Result<()> {
        for (name, info) in &self.entries {
            let is_type = |t: &str, object: bool| -> Result<()> {
                match self.entries.get(t).map(|i| &i.entry) {
                    None => Err(bad(format!("{name:?} names type {t:?}, which is missing"))),
                    Some(Entry::Command { .. } | Entry::Event { .. }) => Err(bad(format!(
                        "{name:?} names {t:?}, a command or event, as a type"
                    ))),
                    Some(e) if object && !matches!(e, Entry::Object { .. }) => Err(bad(format!(
                        "{name:?} needs an object type, {t:?} is {}",
                        e.meta_type()
                    ))),
                    Some(_) => Ok(()),
                }
            };
            match &info.entry {
                Entry::Builtin(_) | Entry::Enum { .. } => {}
                Entry::Array { element } => is_type(element, false)?,
                Entry::Object {
                    members, variants, ..
                } => {
                    for m in members {
                        is_type(&m.ty, false)?;
                    }
                    for (_, t) in variants {
                        is_type(t, true)?;
                    }
                }
                Entry::Alternate { branches } => {
                    for t in branches {
                        is_type(t, false)?;
                    }
                }
                Entry::Command {
                    arg_type, ret_type, ..
                } => {
                    is_type(arg_type, true)?;
                    is_type(ret_type, false)?;
                }
                Entry::Event { arg_type } => is_type(arg_type, true)?,
            }
        }
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Info> {
        self.entries.get(name)
    }

    /// How many entries the schema has (about 1,050 on QEMU 7.2).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for a schema without entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many commands and events it has.
    pub fn counts(&self) -> (usize, usize) {
        (self.commands, self.events)
    }

    /// True when QEMU has a command called `name`.
    pub fn has_command(&self, name: &str) -> bool {
        matches!(
            self.get(name).map(|i| &i.entry),
            Some(Entry::Command { .. })
        )
    }

    /// True when QEMU has an event called `name`.
    pub fn has_event(&self, name: &str) -> bool {
        matches!(self.get(name).map(|i| &i.entry), Some(Entry::Event { .. }))
    }

    /// The names of every command, sorted.
    pub fn command_names(&self) -> Vec<&str> {
        self.names_of(|e| matches!(e, Entry::Command { .. }))
    }

    /// The names of every event, sorted.
    pub fn event_names(&self) -> Vec<&str> {
        self.names_of(|e| matches!(e, Entry::Event { .. }))
    }

    fn names_of(&self, pick: impl Fn(&Entry) -> bool) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .entries
            .iter()
            .filter(|(_, i)| pick(&i.entry))
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// The command called `name`, with its arguments; `None` when QEMU has no such command.
    pub fn command(&self, name: &str) -> Option<Command> {
        let info = self.get(name)?;
        let Entry::Command {
            arg_type,
            allow_oob,
            ..
        } = &info.entry
        else {
            return None;
        };
        let arguments = match self.get(arg_type).map(|i| &i.entry) {
            Some(Entry::Object {
                members,
                tag,
                variants,
            }) => members
                .iter()
                .map(|m| Argument {
                    name: m.name.clone(),
                    optional: m.optional,
                    kind: self.describe(&m.ty, 2),
                    variants: if tag.as_deref() == Some(m.name.as_str()) {
                        variants.iter().map(|(c, _)| c.clone()).collect()
                    } else {
                        Vec::new()
                    },
                    features: m.features.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(Command {
            name: name.to_owned(),
            arguments,
            allow_oob: *allow_oob,
            features: info.features.clone(),
        })
    }

    /// A type in words, for messages: `str`, `enum (a, b)`, `array of int`, `object` …
    pub(crate) fn describe(&self, ty: &str, depth: u32) -> String {
        match self.get(ty).map(|i| &i.entry) {
            Some(Entry::Builtin(_)) => ty.to_owned(),
            Some(Entry::Enum { values }) => {
                let names: Vec<&str> = values.iter().map(|v| v.name.as_str()).collect();
                format!("enum ({})", names.join(", "))
            }
            Some(Entry::Array { element }) if depth > 0 => {
                format!("array of {}", self.describe(element, depth - 1))
            }
            Some(Entry::Array { .. }) => "array".to_owned(),
            Some(Entry::Object { .. }) => "object".to_owned(),
            Some(Entry::Alternate { branches }) if depth > 0 => {
                let kinds: Vec<String> = branches
                    .iter()
                    .map(|b| self.describe(b, depth - 1))
                    .collect();
                format!("alternate ({})", kinds.join(" | "))
            }
            Some(Entry::Alternate { .. }) => "alternate".to_owned(),
            Some(e) => e.meta_type().to_owned(),
            None => "?".to_owned(),
        }
    }

    /// Answers a feature question in libvirt's query-path syntax, e.g.
    /// `blockdev-add/arg-type/+file/aio/^io_uring`: true when the path exists in this schema,
    /// false when it does not. A path that is not well formed (an empty component, `arg-type`
    /// misspelt, something after a `^value` …) is [`Error::Invalid`], naming the component.
    ///
    /// The grammar: the first component names a command or event; then `arg-type` or
    /// `ret-type` (events: `arg-type`) selects its argument or return type; then, one
    /// component per step:
    /// - `name`: a member of the object at hand (optional or not); `*name`: an optional one;
    /// - `+case`: the union variant for that tag value (its members, then the base's);
    /// - `^value`: the enum at hand has that value (last, or followed by `$feature`);
    /// - `!type`: the type at hand has that JSON type (`string`, `int`, `number`, `boolean`,
    ///   `null`, `value`, `object`, `array`; enums are `string`), last;
    /// - `$feature`: what was selected last (the command or event, a member, an enum value, or
    ///   the type at hand) has that feature, last.
    ///
    /// Arrays are looked through (the path goes on in the element type). Alternates are
    /// entered: the path holds when it holds through any branch.
    pub fn query(&self, path: &str) -> Result<bool> {
        query::run(self, path)
    }

    /// Checks a command and its arguments against the schema; no finding means QEMU's input
    /// rules are met as far as the schema tells them. See [`Rule`] for what is checked.
    pub fn check_command(&self, name: &str, arguments: Option<&Value>) -> Vec<Finding> {
        check::command(self, name, arguments)
    }

    /// Checks that an event name exists: one [`Rule::UnknownEvent`] finding (with a
    /// did-you-mean) when it does not, one [`Rule::Deprecated`] / [`Rule::Unstable`] when the
    /// event has that feature.
    pub fn check_event(&self, name: &str) -> Vec<Finding> {
        check::event(self, name)
    }

    /// An estimate of the memory the index holds (bytes): its strings, vectors and table.
    pub fn heap_size(&self) -> usize {
        fn s(x: &str) -> usize {
            x.len() + std::mem::size_of::<String>()
        }
        fn fs(f: &[String]) -> usize {
            f.iter().map(|x| s(x)).sum::<usize>() + std::mem::size_of::<Vec<String>>()
        }
        let table = self.entries.capacity()
            * (std::mem::size_of::<String>() + std::mem::size_of::<Info>() + 8);
        let mut total = table;
        for (name, info) in &self.entries {
            total += name.len() + fs(&info.features);
            total += match &info.entry {
                Entry::Builtin(_) => 0,
                Entry::Enum { values } => values
                    .iter()
                    .map(|v| s(&v.name) + fs(&v.features))
                    .sum::<usize>(),
                Entry::Array { element } => element.len(),
                Entry::Object {
                    members,
                    tag,
                    variants,
                } => {
                    members
                        .iter()
                        .map(|m| s(&m.name) + s(&m.ty) + fs(&m.features) + 1)
                        .sum::<usize>()
                        + tag.as_deref().map_or(0, str::len)
                        + variants.iter().map(|(c, t)| s(c) + s(t)).sum::<usize>()
                }
                Entry::Alternate { branches } => branches.iter().map(|b| s(b)).sum(),
                Entry::Command {
                    arg_type, ret_type, ..
                } => arg_type.len() + ret_type.len(),
                Entry::Event { arg_type } => arg_type.len(),
            };
        }
        total
    }
}

pub(crate) use cache::{load_cached, BinaryKey};
