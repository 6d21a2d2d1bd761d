//! JSON built from a printf-style format, in the spirit of QEMU's `qtest_qmp()`:
//! `{'execute': 'device_add', 'arguments': {'driver': %s, 'id': %s}}`.
//!
//! The C API's `qm_qmpf` / `qm_jsonf` use it; the rules are decided here, once:
//! - The format is JSON text, where strings may also be written in single quotes (`'a'`;
//!   inside them `\'` is a quote and `"` needs no escape).
//! - Outside strings, `%` starts a conversion that takes the next argument:
//!   `%s` a string, written as a JSON string (every quote, backslash and control character
//!   escaped); `%d` `%i` `%ld` `%li` `%lld` `%lli` a signed integer and `%u` `%lu` `%llu` an
//!   unsigned one (either kind is taken when its value fits); `%f` `%g` `%e` a double (finite:
//!   JSON has no NaN or infinity); `%b` a bool (or an integer: non-zero is true); `%j` a
//!   string that holds JSON text, spliced in after it is checked to be one JSON value.
//! - Inside a string `%` is an ordinary character.
//! - Every argument must be used, and none may be missing; the result must be JSON.
//!
//! Anything else is [`Error::Invalid`] saying where (a byte offset in the format, the
//! conversion's number and text).

use serde_json::Value;

use crate::error::{Error, Result};

/// One argument of a format, with the type the caller gave it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg<'a> {
    /// A string (`%s`, or JSON text for `%j`).
    Str(&'a str),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    Uint(u64),
    /// A double.
    Double(f64),
    /// A bool.
    Bool(bool),
}

impl Arg<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Arg::Str(_) => "a string",
            Arg::Int(_) => "a signed integer",
            Arg::Uint(_) => "an unsigned integer",
            Arg::Double(_) => "a double",
            Arg::Bool(_) => "a bool",
        }
    }
}

/// The conversions, longest first (so `%lld` is not read as `%l` + `ld`).
const CONVERSIONS: &[&str] = &[
    "lld", "lli", "llu", "ld", "li", "lu", "s", "d", "i", "u", "f", "g", "e", "b", "j",
];

/// Builds the JSON value `format` describes with `args` (see the module documentation).
pub fn json(format: &str, args: &[Arg<'_>]) -> Result<Value> {
    let text = render(format, args)?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "the format, with its conversions filled in, is not JSON ({e}): {}",
            crate::qmp::preview(&text)
        ))
    })
}

/// The format as JSON text, conversions filled in and single-quoted strings rewritten.
fn render(format: &str, args: &[Arg<'_>]) -> Result<String> {
    let invalid = |at: usize, why: String| {
        Error::Invalid(format!("format {:?}, at byte {at}: {why}", preview(format)))
    };
    let bytes = format.as_bytes();
    let mut out = String::with_capacity(format.len() + 16 * args.len());
    let mut next = 0usize; // the next argument
    let mut i = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'"' | b'\'') => {
                let start = i;
                i += 1;
                out.push('"');
                loop {
                    let Some(&b) = bytes.get(i) else {
                        return Err(invalid(start, "a string that is never closed".into()));
                    };
                    if b == q {
                        i += 1;
                        break;
                    }
                    match b {
                        b'\\' => {
                            let Some(&e) = bytes.get(i + 1) else {
                                return Err(invalid(i, "a backslash at the end".into()));
                            };
                            // The escaped character may be more than one byte.
                            let len = utf8_len(e);
                            match e {
                                b'\'' => out.push('\''),
                                _ => {
                                    out.push('\\');
                                    out.push_str(&format[i + 1..i + 1 + len]);
                                }
                            }
                            i += 1 + len;
                        }
                        b'"' => {
                            // Only in a single-quoted string.
                            out.push_str("\\\"");
                            i += 1;
                        }
                        _ => {
                            // Copy one whole UTF-8 character.
                            let len = utf8_len(b);
                            out.push_str(&format[i..i + len]);
                            i += len;
                        }
                    }
                }
                out.push('"');
            }
            b'%' => {
                let at = i;
                let rest = &format[i + 1..];
                let Some(conv) = CONVERSIONS.iter().find(|c| rest.starts_with(**c)) else {
                    let shown: String = rest.chars().take(3).collect();
                    return Err(invalid(
                        at,
                        format!(
                            "unknown conversion '%{shown}' (known: %s %d %i %u %ld %li %lu \
                             %lld %lli %llu %f %g %e %b %j)"
                        ),
                    ));
                };
                i += 1 + conv.len();
                let n = next + 1;
                let Some(arg) = args.get(next) else {
                    return Err(invalid(
                        at,
                        format!(
                            "conversion {n} ('%{conv}') has no argument: {} given",
                            args.len()
                        ),
                    ));
                };
                next += 1;
                let mismatch = || {
                    invalid(
                        at,
                        format!("conversion {n} ('%{conv}') was given {}", arg.kind()),
                    )
                };
                let out_of_range = |v: &dyn std::fmt::Display| {
                    invalid(
                        at,
                        format!("conversion {n} ('%{conv}'): {v} does not fit its type"),
                    )
                };
                match (*conv, arg) {
                    ("s", Arg::Str(s)) => out.push_str(&Value::from(*s).to_string()),
                    ("j", Arg::Str(s)) => {
                        let v: Value = serde_json::from_str(s).map_err(|e| {
                            invalid(
                                at,
                                format!(
                                    "conversion {n} ('%j'): the argument is not JSON ({e}): {}",
                                    preview(s)
                                ),
                            )
                        })?;
                        out.push_str(&v.to_string());
                    }
                    ("d" | "i" | "ld" | "li" | "lld" | "lli", Arg::Int(v)) => {
                        out.push_str(&v.to_string())
                    }
                    ("d" | "i" | "ld" | "li" | "lld" | "lli", Arg::Uint(v)) => {
                        if i64::try_from(*v).is_err() {
                            return Err(out_of_range(v));
                        }
                        out.push_str(&v.to_string());
                    }
                    ("u" | "lu" | "llu", Arg::Uint(v)) => out.push_str(&v.to_string()),
                    ("u" | "lu" | "llu", Arg::Int(v)) => {
                        if *v < 0 {
                            return Err(out_of_range(v));
                        }
                        out.push_str(&v.to_string());
                    }
                    ("f" | "g" | "e", Arg::Double(v)) => {
                        let Some(num) = serde_json::Number::from_f64(*v) else {
                            return Err(invalid(
                                at,
                                format!("conversion {n} ('%{conv}'): {v} is not a JSON number"),
                            ));
                        };
                        out.push_str(&num.to_string());
                    }
                    ("b", Arg::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                    ("b", Arg::Int(v)) => out.push_str(if *v != 0 { "true" } else { "false" }),
                    ("b", Arg::Uint(v)) => out.push_str(if *v != 0 { "true" } else { "false" }),
                    _ => return Err(mismatch()),
                }
            }
            b => {
                let len = utf8_len(b);
                out.push_str(&format[i..i + len]);
                i += len;
            }
        }
    }
    if next < args.len() {
        return Err(Error::Invalid(format!(
            "format {:?}: {} arguments given, its conversions take {next}",
            preview(format),
            args.len()
        )));
    }
    Ok(out)
}

/// The length of the UTF-8 character that starts with byte `b` (the text is a `&str`).
fn utf8_len(b: u8) -> usize {
    match b {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn preview(s: &str) -> String {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn qtest_style_formats() {
        let v = json(
            "{'execute': 'device_add', 'arguments': {'driver': %s, 'id': %s}}",
            &[Arg::Str("virtio-net"), Arg::Str("n'\"0\\")],
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"execute": "device_add", "arguments": {"driver": "virtio-net", "id": "n'\"0\\"}})
        );
        let v = json(
            "{'a': %d, 'b': %lld, 'c': %u, 'd': %g, 'e': %b, 'f': %j, 'g': '100%', \"h\": 'it\\'s \"x\"'}",
            &[
                Arg::Int(-5),
                Arg::Int(i64::MIN),
                Arg::Uint(u64::MAX),
                Arg::Double(0.5),
                Arg::Bool(true),
                Arg::Str("[1, {\"x\": null}]"),
            ],
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"a": -5, "b": i64::MIN, "c": u64::MAX, "d": 0.5, "e": true,
                   "f": [1, {"x": null}], "g": "100%", "h": "it's \"x\""})
        );
    }

    #[test]
    fn bad_formats_and_arguments_say_where() {
        let cases: &[(&str, &[Arg<'_>], &str)] = &[
            (
                "{'a': %d}",
                &[Arg::Str("x")],
                "conversion 1 ('%d') was given a string",
            ),
            (
                "{'a': %s}",
                &[],
                "conversion 1 ('%s') has no argument: 0 given",
            ),
            (
                "{'a': %s}",
                &[Arg::Str("x"), Arg::Int(1)],
                "2 arguments given, its conversions take 1",
            ),
            ("{'a': %q}", &[Arg::Int(1)], "unknown conversion '%q}'"),
            ("{'a': 'x}", &[], "at byte 6: a string that is never closed"),
            ("{'a': %u}", &[Arg::Int(-1)], "-1 does not fit"),
            ("{'a': %d}", &[Arg::Uint(u64::MAX)], "does not fit"),
            ("{'a': %f}", &[Arg::Double(f64::NAN)], "not a JSON number"),
            ("{'a': %j}", &[Arg::Str("{")], "the argument is not JSON"),
            (
                "{'a': %s %s}",
                &[Arg::Str("x"), Arg::Str("y")],
                "is not JSON",
            ),
            ("{'a': %f}", &[Arg::Int(1)], "was given a signed integer"),
            // Found by fuzz/format_json: an escaped multi-byte character.
            ("{'a': '\\\u{65c}'}", &[], "is not JSON"),
        ];
        for (format, args, wanted) in cases {
            match json(format, args) {
                Err(Error::Invalid(why)) => assert!(why.contains(wanted), "{format}: {why}"),
                other => panic!("{format}: {other:?}"),
            }
        }
    }
}
