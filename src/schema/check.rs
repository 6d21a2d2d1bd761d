//! Checks a command's arguments against the schema, the way QEMU's QMP input visitor will
//! judge them: unknown members, missing mandatory ones, JSON types, enum values, union
//! discriminators and their branch members, alternates, arrays and nested objects to any depth,
//! and the use of `deprecated` / `unstable` things.

use std::fmt;

use serde_json::Value;

use super::{Entry, JsonType, Schema};

/// Which rule a [`Finding`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// QEMU has no such command.
    UnknownCommand,
    /// QEMU has no such event.
    UnknownEvent,
    /// A member the type does not have (for a union, in the branch its tag selects).
    UnknownMember,
    /// A mandatory member is missing.
    MissingMember,
    /// The value has the wrong JSON type.
    WrongType,
    /// A string outside the enum's values (for a union's tag: no such branch).
    EnumValue,
    /// Something marked `deprecated` is used (QEMU's `-compat deprecated-input=`).
    Deprecated,
    /// Something marked `unstable` is used (QEMU's `-compat unstable-input=`).
    Unstable,
}

impl Rule {
    /// A short stable name: `unknown-command`, `unknown-event`, `unknown-member`,
    /// `missing-member`, `wrong-type`, `enum-value`, `deprecated`, `unstable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::UnknownCommand => "unknown-command",
            Rule::UnknownEvent => "unknown-event",
            Rule::UnknownMember => "unknown-member",
            Rule::MissingMember => "missing-member",
            Rule::WrongType => "wrong-type",
            Rule::EnumValue => "enum-value",
            Rule::Deprecated => "deprecated",
            Rule::Unstable => "unstable",
        }
    }

    /// True for [`Deprecated`](Rule::Deprecated) and [`Unstable`](Rule::Unstable): QEMU
    /// accepts these by default; the other rules are what QEMU would refuse.
    pub fn is_feature(self) -> bool {
        matches!(self, Rule::Deprecated | Rule::Unstable)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Where: `execute` for the command's name, `arguments` for its arguments object,
    /// `arguments.file.filename`, `arguments.children[1].child` …; for an event, `event`.
    pub path: String,
    /// The rule broken.
    pub rule: Rule,
    /// What is wrong, in words (with a did-you-mean, or the allowed values, when there are).
    pub message: String,
}

impl Finding {
    /// As JSON, the shape the C, Go and Python APIs hand out: `{"path", "rule", "message"}`.
    pub fn to_value(&self) -> Value {
        serde_json::json!({"path": self.path, "rule": self.rule.as_str(), "message": self.message})
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.path, self.message, self.rule)
    }
}

/// Edit distance counting a swap of two neighbours as one edit (optimal string alignment),
/// for did-you-mean: `statsu` is one edit from `status`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1)
                    .min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * w + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest of `candidates` to `name`: the same with `_` and `-` swapped (and case
/// ignored), or within a small edit distance (a third of the name, at least 1, at most 3);
/// between equally close ones, the one nearest in length.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| s.replace('_', "-").to_ascii_lowercase();
    let wanted = norm(name);
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let mut best: Option<((usize, usize), &str)> = None;
    for c in candidates {
        let n = norm(c);
        let d = if n == wanted {
            0
        } else if n.len().abs_diff(wanted.len()) > limit {
            continue;
        } else {
            distance(&wanted, &n)
        };
        let score = (d, n.len().abs_diff(wanted.len()));
        if d <= limit && best.map_or(true, |(b, _)| score < b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

fn did_you_mean(s: Option<&str>) -> String {
    s.map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

/// Commands whose arguments QEMU takes beyond what the schema lists (`'gen': false` in the
/// QAPI schema): `device_add` takes the device's own properties.
const OPEN_ARGUMENTS: &[&str] = &["device_add"];

/// Past this depth a value is not looked into (the schema's recursive types allow any depth;
/// the stack does not).
const MAX_DEPTH: usize = 64;

struct Checker<'a> {
    schema: &'a Schema,
    findings: Vec<Finding>,
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a value's JSON type could be taken by a type, for picking an alternate's branch.
///
/// Each alternate is looked through once: QAPI nests none, but a schema from outside may name
/// alternates among each other's branches in a cycle, and neither the stack nor the time taken
/// may follow it.
fn fits_shape(schema: &Schema, ty: &str, v: &Value) -> bool {
    let mut seen: Vec<&str> = Vec::new();
    let mut todo = vec![ty];
    while let Some(ty) = todo.pop() {
        let fits = match schema.get(ty).map(|i| &i.entry) {
            Some(Entry::Builtin(t)) => builtin_ok(*t, v),
            Some(Entry::Enum { .. }) => v.is_string(),
            Some(Entry::Array { .. }) => v.is_array(),
            Some(Entry::Object { .. }) => v.is_object(),
            Some(Entry::Alternate { branches }) if !seen.contains(&ty) => {
                seen.push(ty);
                todo.extend(branches.iter().map(String::as_str));
                false
            }
            _ => false,
        };
        if fits {
            return true;
        }
    }
    false
}

fn builtin_ok(t: JsonType, v: &Value) -> bool {
    match t {
        JsonType::String => v.is_string(),
        JsonType::Int => v.is_i64() || v.is_u64(),
        JsonType::Number => v.is_number(),
        JsonType::Boolean => v.is_boolean(),
        JsonType::Null => v.is_null(),
        JsonType::Value => true,
    }
}

fn join(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

impl Checker<'_> {
    fn add(&mut self, path: &str, rule: Rule, message: String) {
        self.findings.push(Finding {
            path: path.to_owned(),
            rule,
            message,
        });
    }

    fn features(&mut self, path: &str, what: &str, features: &[String]) {
        for f in features {
            match f.as_str() {
                "deprecated" => self.add(path, Rule::Deprecated, format!("{what} is deprecated")),
                "unstable" => self.add(path, Rule::Unstable, format!("{what} is unstable")),
                _ => {}
            }
        }
    }

    fn value(&mut self, ty: &str, v: &Value, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let schema = self.schema;
        let Some(info) = schema.get(ty) else { return };
        match &info.entry {
            Entry::Builtin(t) => {
                if !builtin_ok(*t, v) {
                    let want = match t {
                        JsonType::Boolean => "bool",
                        other => other.as_str(),
                    };
                    self.add(
                        path,
                        Rule::WrongType,
                        format!("expected {want}, got {}", kind_of(v)),
                    );
                }
            }
            Entry::Enum { values } => {
                let Some(s) = v.as_str() else {
                    self.add(
                        path,
                        Rule::WrongType,
                        format!("expected a string (enum), got {}", kind_of(v)),
                    );
                    return;
                };
                match values.iter().find(|e| e.name == s) {
                    Some(e) => {
                        let features = e.features.clone();
                        self.features(path, &format!("value '{s}'"), &features);
                    }
                    None => {
                        let names: Vec<&str> = values.iter().map(|e| e.name.as_str()).collect();
                        let hint = did_you_mean(suggest(s, names.iter().copied()));
                        self.add(
                            path,
                            Rule::EnumValue,
                            format!(
                                "'{s}' is not one of the allowed values{hint}: {}",
                                names.join(", ")
                            ),
                        );
                    }
                }
            }
            Entry::Array { element } => match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.value(element, item, &format!("{path}[{i}]"), depth + 1);
                    }
                }
                None => self.add(
                    path,
                    Rule::WrongType,
                    format!("expected an array, got {}", kind_of(v)),
                ),
            },
            Entry::Object { .. } => self.object(ty, v, path, depth, false),
            Entry::Alternate { branches } => {
                // QEMU picks the branch by the value's JSON type (an int may go to a number).
                let pick = branches
                    .iter()
                    .find(|b| {
                        fits_shape(schema, b, v)
                            && !matches!(
                                schema.get(b).map(|i| &i.entry),
                                Some(Entry::Builtin(JsonType::Number))
                            )
                    })
                    .or_else(|| branches.iter().find(|b| fits_shape(schema, b, v)));
                match pick {
                    Some(b) => self.value(b, v, path, depth + 1),
                    None => {
                        let kinds: Vec<String> =
                            branches.iter().map(|b| schema.describe(b, 1)).collect();
                        self.add(
                            path,
                            Rule::WrongType,
                            format!("expected one of {}, got {}", kinds.join(" | "), kind_of(v)),
                        );
                    }
                }
            }
            Entry::Command { .. } | Entry::Event { .. } => {}
        }
    }

    /// Checks an object against object type `ty`: its members, and for a union the members of
    /// the branch its tag selects. `open`: members beyond the schema's are allowed.
    fn object(&mut self, ty: &str, v: &Value, path: &str, depth: usize, open: bool) {
        let schema = self.schema;
        let Some(Entry::Object {
            members,
            tag,
            variants,
        }) = schema.get(ty).map(|i| &i.entry)
        else {
            return;
        };
        let Some(map) = v.as_object() else {
            self.add(
                path,
                Rule::WrongType,
                format!("expected an object, got {}", kind_of(v)),
            );
            return;
        };
        let mut all: Vec<&super::Member> = members.iter().collect();
        if let Some(tag) = tag {
            if let Some(Value::String(case)) = map.get(tag) {
                if let Some((_, vt)) = variants.iter().find(|(c, _)| c == case) {
                    if let Some(Entry::Object { members, .. }) = schema.get(vt).map(|i| &i.entry) {
                        all.extend(members.iter());
                    }
                }
            }
        }
        for m in &all {
            let here = join(path, &m.name);
            match map.get(&m.name) {
                Some(value) => {
                    let features = m.features.clone();
                    self.features(&here, &format!("member '{}'", m.name), &features);
                    self.value(&m.ty, value, &here, depth + 1);
                }
                None if !m.optional => self.add(
                    &here,
                    Rule::MissingMember,
                    format!("mandatory member '{}' is missing", m.name),
                ),
                None => {}
            }
        }
        if open {
            return;
        }
        for key in map.keys() {
            if all.iter().any(|m| &m.name == key) {
                continue;
            }
            let hint = did_you_mean(suggest(key, all.iter().map(|m| m.name.as_str())));
            let what = if all.is_empty() {
                " (it takes none)".to_owned()
            } else {
                String::new()
            };
            self.add(
                &join(path, key),
                Rule::UnknownMember,
                format!("unexpected member '{key}'{hint}{what}"),
            );
        }
    }
}

pub(super) fn command(schema: &Schema, name: &str, arguments: Option<&Value>) -> Vec<Finding> {
    let mut c = Checker {
        schema,
        findings: Vec::new(),
    };
    let info = match schema.get(name) {
        Some(
            info @ super::Info {
                entry: Entry::Command { .. },
                ..
            },
        ) => info,
        _ => {
            let hint = did_you_mean(suggest(name, schema.command_names().into_iter()));
            c.add(
                "execute",
                Rule::UnknownCommand,
                format!("QEMU has no command '{name}'{hint}"),
            );
            return c.findings;
        }
    };
    let Entry::Command { arg_type, .. } = &info.entry else {
        unreachable!("matched above")
    };
    c.features("execute", &format!("command '{name}'"), &info.features);
    let empty = Value::Object(Default::default());
    let args = arguments.unwrap_or(&empty);
    c.object(
        arg_type,
        args,
        "arguments",
        0,
        OPEN_ARGUMENTS.contains(&name),
    );
    c.findings
}

pub(super) fn event(schema: &Schema, name: &str) -> Vec<Finding> {
    let mut c = Checker {
        schema,
        findings: Vec::new(),
    };
    match schema.get(name) {
        Some(
            info @ super::Info {
                entry: Entry::Event { .. },
                ..
            },
        ) => c.features("event", &format!("event '{name}'"), &info.features),
        _ => {
            let hint = did_you_mean(suggest(name, schema.event_names().into_iter()));
            c.add(
                "event",
                Rule::UnknownEvent,
                format!("QEMU has no event '{name}'{hint}"),
            );
        }
    }
    c.findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let names = ["node-name", "driver", "filename", "read-only"];
        assert_eq!(suggest("node_name", names.into_iter()), Some("node-name"));
        assert_eq!(suggest("drivr", names.into_iter()), Some("driver"));
        assert_eq!(suggest("filenmae", names.into_iter()), Some("filename"));
        assert_eq!(suggest("xyz", names.into_iter()), None);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("statsu", "status"), 1);
        let cmds = ["query-stats", "query-status"];
        assert_eq!(
            suggest("query-statsu", cmds.into_iter()),
            Some("query-status")
        );
    }

    /// A damaged schema is refused with the entry named: its place, and its name once read.
    #[test]
    fn damaged_entries_are_named() {
        let str_entry =
            serde_json::json!({"name": "str", "meta-type": "builtin", "json-type": "string"});
        let err = |entries: Vec<Value>| {
            Schema::parse(&Value::Array(entries))
                .unwrap_err()
                .to_string()
        };
        assert!(
            err(vec![str_entry.clone(), serde_json::json!(5)]).contains("entry 1 is not an object"),
        );
        assert!(err(vec![serde_json::json!({"meta-type": "enum"})])
            .contains("entry 0: no string \"name\""));
        let e = err(vec![
            str_entry.clone(),
            serde_json::json!({"name": "e", "meta-type": "enum"}),
        ]);
        assert!(e.contains("entry 1 (\"e\"): no array \"values\""), "{e}");
        let e = err(vec![str_entry.clone(), str_entry]);
        assert!(e.contains("\"str\" is defined twice"), "{e}");
    }

    /// A schema from outside whose alternates name each other (QAPI nests none) is checked
    /// and queried in bounded time and stack: it used to overflow the stack (found by the
    /// `schema_parse` fuzz target).
    #[test]
    fn alternates_in_a_cycle_end() {
        let mut entries = vec![
            serde_json::json!({"name": "c", "meta-type": "command", "arg-type": "o", "ret-type": "a0"}),
            serde_json::json!({"name": "o", "meta-type": "object", "members": [{"name": "m", "type": "a0"}]}),
            serde_json::json!({"name": "[a0]", "meta-type": "array", "element-type": "a0"}),
            serde_json::json!({"name": "str", "meta-type": "builtin", "json-type": "string"}),
        ];
        // Twenty alternates, each with two branches to the next (and the last back to the
        // first): following every path would take 2^20 steps per look.
        for i in 0..20 {
            let next = format!("a{}", (i + 1) % 20);
            entries.push(
                serde_json::json!({"name": format!("a{i}"), "meta-type": "alternate",
                "members": [{"type": next}, {"type": next}, {"type": "[a0]"}]}),
            );
        }
        let schema = Schema::parse(&Value::Array(entries)).unwrap();
        let findings = command(&schema, "c", Some(&serde_json::json!({"m": 5})));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].rule, Rule::WrongType);
        assert!(command(&schema, "c", Some(&serde_json::json!({"m": [[[]]]}))).is_empty());
        assert!(!schema.query("c/arg-type/m/x").unwrap());
    }
}
