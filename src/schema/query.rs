//! Feature questions in libvirt's query-path syntax (the grammar is in [`Schema::query`]'s
//! documentation and the README).
//!
//! The walk keeps a set of places: usually one, more after an alternate (each branch is a
//! place; the path holds when it holds from any of them). What a component may be depends only
//! on what came before it, so a malformed path is reported even where the schema has nothing.

use super::{Entry, EnumValue, Info, Member, Schema};
use crate::error::{Error, Result};

/// Where the walk is.
#[derive(Clone, Copy)]
enum Place<'a> {
    /// At a command or event.
    Top(&'a Info),
    /// At a type; `base` is the union whose variant this is; `member` the member that led here.
    Type {
        ty: &'a str,
        base: Option<&'a str>,
        member: Option<&'a Member>,
    },
    /// At an enum value.
    Value(&'a EnumValue),
}

/// What a component may be, whatever the places.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Top,
    Type,
    Value,
    /// A boolean component was the last one allowed.
    End,
}

/// Types that arrays and alternates stand for: the concrete types a component looks into.
///
/// Each array or alternate is looked through once: a schema from outside may make them name
/// each other in a cycle, or branch so that following every path would take exponential time.
fn concrete<'a>(schema: &'a Schema, ty: &'a str, out: &mut Vec<&'a str>) {
    let mut seen: Vec<&str> = Vec::new();
    let mut todo = vec![ty];
    while let Some(ty) = todo.pop() {
        match schema.get(ty).map(|i| &i.entry) {
            Some(Entry::Array { .. } | Entry::Alternate { .. }) if seen.contains(&ty) => {}
            Some(Entry::Array { element }) => {
                seen.push(ty);
                todo.push(element);
            }
            Some(Entry::Alternate { branches }) => {
                seen.push(ty);
                // Reversed so that branches are looked into in the schema's order.
                todo.extend(branches.iter().rev().map(String::as_str));
            }
            Some(_) => out.push(ty),
            None => {}
        }
    }
}

fn member<'a>(schema: &'a Schema, ty: &str, name: &str) -> Option<&'a Member> {
    match schema.get(ty).map(|i| &i.entry) {
        Some(Entry::Object { members, .. }) => members.iter().find(|m| m.name == name),
        _ => None,
    }
}

fn json_type_of(schema: &Schema, ty: &str) -> Option<&'static str> {
    Some(match &schema.get(ty)?.entry {
        Entry::Builtin(t) => t.as_str(),
        Entry::Enum { .. } => "string",
        Entry::Array { .. } => "array",
        Entry::Object { .. } => "object",
        _ => return None,
    })
}

const JSON_TYPES: &[&str] = &[
    "string", "int", "number", "boolean", "null", "value", "object", "array",
];

pub(super) fn run(schema: &Schema, path: &str) -> Result<bool> {
    let invalid = |i: usize, comp: &str, why: &str| {
        Error::Invalid(format!(
            "query path {path:?}, component {} ({comp:?}): {why}",
            i + 1
        ))
    };
    let mut comps = path.split('/');
    let first = comps.next().unwrap_or_default();
    if first.is_empty() {
        return Err(invalid(
            0,
            first,
            "the path starts with a command or event name",
        ));
    }
    let mut places: Vec<Place<'_>> = match schema.get(first) {
        Some(
            info @ Info {
                entry: Entry::Command { .. } | Entry::Event { .. },
                ..
            },
        ) => vec![Place::Top(info)],
        _ => Vec::new(),
    };
    let mut stage = Stage::Top;
    let mut answer = true;
    for (i, comp) in comps.enumerate() {
        let i = i + 1;
        if comp.is_empty() {
            return Err(invalid(i, comp, "empty component"));
        }
        if stage == Stage::End {
            return Err(invalid(
                i,
                comp,
                "nothing may follow a ^value (but a $feature), a !type or a $feature",
            ));
        }
        let (sigil, name) = match comp.as_bytes()[0] {
            b @ (b'*' | b'+' | b'^' | b'!' | b'$') => (b, &comp[1..]),
            b' ' => (b' ', &comp[1..]),
            _ => (b' ', comp),
        };
        if name.is_empty() {
            return Err(invalid(i, comp, "a prefix without a name"));
        }
        match (stage, sigil) {
            (Stage::Top, b'$') => {
                answer = places.iter().any(|p| match p {
                    Place::Top(info) => info.features.iter().any(|f| f == name),
                    _ => false,
                });
                stage = Stage::End;
                places.clear();
            }
            (Stage::Top, b' ') if name == "arg-type" || name == "ret-type" => {
                let mut next = Vec::new();
                for p in &places {
                    let Place::Top(info) = p else { continue };
                    let ty = match (&info.entry, name) {
                        (Entry::Command { arg_type, .. }, "arg-type") => arg_type,
                        (Entry::Command { ret_type, .. }, _) => ret_type,
                        (Entry::Event { arg_type }, "arg-type") => arg_type,
                        _ => {
                            return Err(invalid(i, comp, "an event has an arg-type only"));
                        }
                    };
                    next.push(Place::Type {
                        ty,
                        base: None,
                        member: None,
                    });
                }
                places = next;
                stage = Stage::Type;
            }
            (Stage::Top, _) => {
                return Err(invalid(
                    i,
                    comp,
                    "a command is followed by arg-type, ret-type or $feature (an event by \
                     arg-type or $feature)",
                ));
            }
            (Stage::Type, b' ' | b'*') => {
                let mut next = Vec::new();
                for p in &places {
                    let Place::Type { ty, base, .. } = *p else {
                        continue;
                    };
                    let mut types = Vec::new();
                    concrete(schema, ty, &mut types);
                    for t in types {
                        let found = member(schema, t, name)
                            .or_else(|| base.and_then(|b| member(schema, b, name)));
                        if let Some(m) = found.filter(|m| sigil == b' ' || m.optional) {
                            next.push(Place::Type {
                                ty: &m.ty,
                                base: None,
                                member: Some(m),
                            });
                        }
                    }
                }
                places = next;
            }
            (Stage::Type, b'+') => {
                let mut next = Vec::new();
                for p in &places {
                    let Place::Type { ty, .. } = *p else { continue };
                    let mut types = Vec::new();
                    concrete(schema, ty, &mut types);
                    for t in types {
                        if let Some(Entry::Object { variants, .. }) =
                            schema.get(t).map(|i| &i.entry)
                        {
                            if let Some((_, vt)) = variants.iter().find(|(c, _)| c == name) {
                                next.push(Place::Type {
                                    ty: vt,
                                    base: Some(t),
                                    member: None,
                                });
                            }
                        }
                    }
                }
                places = next;
            }
            (Stage::Type, b'^') => {
                let mut next = Vec::new();
                for p in &places {
                    let Place::Type { ty, .. } = *p else { continue };
                    let mut types = Vec::new();
                    concrete(schema, ty, &mut types);
                    for t in types {
                        if let Some(Entry::Enum { values }) = schema.get(t).map(|i| &i.entry) {
                            if let Some(v) = values.iter().find(|v| v.name == name) {
                                next.push(Place::Value(v));
                            }
                        }
                    }
                }
                places = next;
                stage = Stage::Value;
            }
            (Stage::Type, b'!') => {
                if !JSON_TYPES.contains(&name) {
                    return Err(invalid(
                        i,
                        comp,
                        &format!("not a JSON type (one of {})", JSON_TYPES.join(", ")),
                    ));
                }
                answer = places.iter().any(|p| {
                    let Place::Type { ty, .. } = *p else {
                        return false;
                    };
                    let mut types = vec![ty];
                    concrete(schema, ty, &mut types);
                    types.iter().any(|t| json_type_of(schema, t) == Some(name))
                });
                places.clear();
                stage = Stage::End;
            }
            (Stage::Type, b'$') => {
                answer = places.iter().any(|p| {
                    let Place::Type { ty, member, .. } = *p else {
                        return false;
                    };
                    let has = |f: &[String]| f.iter().any(|f| f == name);
                    let mut types = vec![ty];
                    concrete(schema, ty, &mut types);
                    member.is_some_and(|m| has(&m.features))
                        || types
                            .iter()
                            .any(|t| schema.get(t).is_some_and(|i| has(&i.features)))
                });
                places.clear();
                stage = Stage::End;
            }
            (Stage::Value, b'$') => {
                answer = places.iter().any(|p| match p {
                    Place::Value(v) => v.features.iter().any(|f| f == name),
                    _ => false,
                });
                places.clear();
                stage = Stage::End;
            }
            (Stage::Value, _) => {
                return Err(invalid(i, comp, "only a $feature may follow a ^value"));
            }
            (Stage::Type, _) | (Stage::End, _) => unreachable!("every prefix is handled"),
        }
    }
    Ok(match stage {
        Stage::End => answer,
        _ => !places.is_empty(),
    })
}
