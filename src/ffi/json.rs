//! Reading JSON results from C without a JSON library: RFC 6901 JSON Pointer lookups over a
//! JSON text, typed getters, and string arrays as `char **` vectors.
//!
//! Every function parses the whole text, so a program that reads many values out of a large
//! text can extract the part it needs first (`qm_json_get`) and read from that.

use std::ffi::{c_char, c_int, CString};

use serde_json::Value;

use super::boundary::{self, guard, kind, out, string, Result};
use super::error::{call, qm_error, qm_status};
use crate::Error;

/// What a JSON Pointer designates (`qm_json_type`).
pub type qm_json_kind = c_int;

/// The pointer designates nothing (a missing member, an index past the end).
pub const QM_JSON_MISSING: qm_json_kind = 0;
/// `null`.
pub const QM_JSON_NULL: qm_json_kind = 1;
/// `true` or `false`.
pub const QM_JSON_BOOL: qm_json_kind = 2;
/// A number.
pub const QM_JSON_NUMBER: qm_json_kind = 3;
/// A string.
pub const QM_JSON_STRING: qm_json_kind = 4;
/// An array.
pub const QM_JSON_ARRAY: qm_json_kind = 5;
/// An object.
pub const QM_JSON_OBJECT: qm_json_kind = 6;

/// Where a pointer lookup ended.
enum Lookup<'a> {
    Found(&'a Value),
    /// Why nothing is there, e.g. `no member "x" in the object at "/data"`.
    Missing(String),
}

/// Resolves an RFC 6901 JSON Pointer: `""` is the whole text, `"/a/0/b~1c"` is member `a`,
/// element 0, member `b/c` (`~1` stands for `/`, `~0` for `~`). A pointer that is not valid
/// syntax is an error; a valid one that designates nothing is [`Lookup::Missing`].
fn lookup<'a>(root: &'a Value, pointer: &str) -> Result<Lookup<'a>> {
    if pointer.is_empty() {
        return Ok(Lookup::Found(root));
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(Error::Invalid(format!(
            "pointer {pointer:?} is not a JSON Pointer: it must be \"\" or start with '/'"
        )));
    };
    let mut here = root;
    let mut path_len = 0; // bytes of `pointer` walked so far
    for raw in rest.split('/') {
        let at = &pointer[..path_len];
        path_len += 1 + raw.len();
        let token = unescape(raw).ok_or_else(|| {
            Error::Invalid(format!(
                "pointer {pointer:?} is not a JSON Pointer: '~' must be followed by 0 or 1 \
                 (in {raw:?})"
            ))
        })?;
        here = match here {
            Value::Object(map) => match map.get(&token) {
                Some(v) => v,
                None => {
                    return Ok(Lookup::Missing(format!(
                        "no member {token:?} in the object at {at:?}"
                    )))
                }
            },
            Value::Array(items) => match index(&token) {
                Some(i) if i < items.len() => &items[i],
                Some(_) => {
                    return Ok(Lookup::Missing(format!(
                        "index {token} is past the end of the array at {at:?} ({} elements)",
                        items.len()
                    )))
                }
                None if token == "-" => {
                    return Ok(Lookup::Missing(format!(
                        "\"-\" is past the end of the array at {at:?}"
                    )))
                }
                None => {
                    return Err(Error::Invalid(format!(
                        "pointer {pointer:?}: {token:?} is not an array index (the value at \
                         {at:?} is an array: use 0, 1, ... without leading zeros)"
                    )))
                }
            },
            scalar => {
                return Ok(Lookup::Missing(format!(
                    "the value at {at:?} is {}, which has no member {token:?}",
                    kind(scalar)
                )))
            }
        };
    }
    Ok(Lookup::Found(here))
}

/// A reference token with `~1` and `~0` decoded; `None` for any other `~` sequence.
fn unescape(raw: &str) -> Option<String> {
    if !raw.contains('~') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// An array index as RFC 6901 writes it: `0`, or digits without a leading zero. One too big
/// for `usize` is `usize::MAX`: past the end of any array.
fn index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    Some(token.parse().unwrap_or(usize::MAX))
}

/// Parses `json` and finds the value at `pointer`; a missing value is an error that says where
/// the lookup stopped.
///
/// # Safety
/// `json` and `pointer` are NULL or NUL-terminated strings (the caller's contract).
unsafe fn with_value<T>(
    json: *const c_char,
    pointer: *const c_char,
    read: impl FnOnce(&Value, &str) -> Result<T>,
) -> Result<T> {
    // SAFETY: forwarded contract.
    let text = unsafe { string(json, "json") }?;
    // SAFETY: forwarded contract.
    let pointer = unsafe { string(pointer, "pointer") }?;
    let root = boundary::json(text, "json")?;
    match lookup(&root, pointer)? {
        Lookup::Found(v) => read(v, pointer),
        Lookup::Missing(why) => Err(Error::Invalid(format!(
            "pointer {pointer:?} designates nothing: {why}"
        ))),
    }
}

/// The "wrong type" error.
fn wrong(pointer: &str, v: &Value, want: &str) -> Error {
    Error::Invalid(format!(
        "the value at {pointer:?} is {}, not {want}",
        kind(v)
    ))
}

/// A C string for a JSON string, refusing one that holds a NUL character.
fn c_string(s: &str, pointer: &str) -> Result<CString> {
    CString::new(s).map_err(|_| {
        Error::Invalid(format!(
            "the string at {pointer:?} contains a NUL character (\\u0000), which a C string \
             cannot hold; qm_json_get returns it as JSON text"
        ))
    })
}

/// Stores in `*kind_out` what the RFC 6901 JSON Pointer `pointer` designates in the JSON text
/// `json`: a `QM_JSON_*` kind, `QM_JSON_MISSING` when nothing is there (which is not an
/// error). A way to test for an optional member before reading it.
///
/// `json` and `pointer` are borrowed UTF-8 strings; `pointer` is `""` (the whole text) or
/// starts with `/` (`"/data/reason"`, `"/return/0/name"`; `~1` stands for `/` and `~0` for `~`
/// in a member name). `QM_ERR_INVALID` for NULL, bad UTF-8, a text that is not JSON or a
/// pointer that is not RFC 6901 syntax. Pure function: thread-safe, never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_json_type(
    json: *const c_char,
    pointer: *const c_char,
    kind_out: *mut qm_json_kind,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_json_type", err_out, || {
        let out = out(kind_out, "kind_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let text = unsafe { string(json, "json") }?;
        // SAFETY: as above.
        let pointer = unsafe { string(pointer, "pointer") }?;
        let root = boundary::json(text, "json")?;
        out.write(match lookup(&root, pointer)? {
            Lookup::Missing(_) => QM_JSON_MISSING,
            Lookup::Found(Value::Null) => QM_JSON_NULL,
            Lookup::Found(Value::Bool(_)) => QM_JSON_BOOL,
            Lookup::Found(Value::Number(_)) => QM_JSON_NUMBER,
            Lookup::Found(Value::String(_)) => QM_JSON_STRING,
            Lookup::Found(Value::Array(_)) => QM_JSON_ARRAY,
            Lookup::Found(Value::Object(_)) => QM_JSON_OBJECT,
        });
        Ok(())
    })
}

/// The value at the RFC 6901 JSON Pointer `pointer` in the JSON text `json`, as JSON text
/// (compact) in `*json_out` (owned: free with `qm_string_free`). For example the pointer
/// `"/data"` of an event gives its `data` object, `""` the whole text.
///
/// `json` and `pointer` are as for `qm_json_type`. `QM_ERR_INVALID` for NULL, bad UTF-8, a
/// text that is not JSON, a pointer that is not RFC 6901 syntax, or a pointer that designates
/// nothing (the message says where the lookup stopped). Pure function: thread-safe, never
/// blocks. The same holds for the other `qm_json_get_*` functions.
#[no_mangle]
pub unsafe extern "C" fn qm_json_get(
    json: *const c_char,
    pointer: *const c_char,
    json_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_json_get", err_out, || {
        let out = out(json_out, "json_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let text = unsafe { with_value(json, pointer, |v, _| Ok(v.to_string())) }?;
        out.write_string(text);
        Ok(())
    })
}

/// The string at `pointer` in `json`, unescaped (`"a\"b"` gives `a"b`), as a new UTF-8 string
/// in `*string_out` (owned: free with `qm_string_free`).
///
/// `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not a string or contains a NUL
/// character (`\u0000`), which a C string cannot hold.
#[no_mangle]
pub unsafe extern "C" fn qm_json_get_string(
    json: *const c_char,
    pointer: *const c_char,
    string_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_json_get_string", err_out, || {
        let out = out(string_out, "string_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let s = unsafe {
            with_value(json, pointer, |v, p| match v {
                Value::String(s) => c_string(s, p),
                other => Err(wrong(p, other, "a string")),
            })
        }?;
        out.write(s.into_raw());
        Ok(())
    })
}

/// The integer at `pointer` in `json`, in `*value_out`.
///
/// `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not a number, has a fraction
/// or an exponent (`1.5`, `1e3`: read those with `qm_json_get_double`) or is outside the range
/// of `int64_t`.
#[no_mangle]
pub unsafe extern "C" fn qm_json_get_int(
    json: *const c_char,
    pointer: *const c_char,
    value_out: *mut i64,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_json_get_int", err_out, || {
        let out = out(value_out, "value_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let n = unsafe {
            with_value(json, pointer, |v, p| match v {
                Value::Number(n) => n.as_i64().ok_or_else(|| {
                    let why = if n.is_u64() {
                        "is above the range of int64_t"
                    } else {
                        "has a fraction or an exponent: read it with qm_json_get_double"
                    };
                    Error::Invalid(format!("the number at {p:?} ({n}) {why}"))
                }),
                other => Err(wrong(p, other, "an integer")),
            })
        }?;
        out.write(n);
        Ok(())
    })
}

/// The number at `pointer` in `json`, as a `double` in `*value_out` (an integer beyond 2^53
/// is rounded to the nearest `double`).
///
/// `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not a number.
#[no_mangle]
pub unsafe extern "C" fn qm_json_get_double(
    json: *const c_char,
    pointer: *const c_char,
    value_out: *mut f64,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_json_get_double", err_out, || {
        let out = out(value_out, "value_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let n = unsafe {
            with_value(json, pointer, |v, p| match v {
                Value::Number(n) => n
                    .as_f64()
                    .ok_or_else(|| wrong(p, v, "a number that fits a double")),
                other => Err(wrong(p, other, "a number")),
            })
        }?;
        out.write(n);
        Ok(())
    })
}

/// The boolean at `pointer` in `json`, in `*value_out`.
///
/// `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not `true` or `false`.
#[no_mangle]
pub unsafe extern "C" fn qm_json_get_bool(
    json: *const c_char,
    pointer: *const c_char,
    value_out: *mut bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_json_get_bool", err_out, || {
        let out = out(value_out, "value_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let b = unsafe {
            with_value(json, pointer, |v, p| match v {
                Value::Bool(b) => Ok(*b),
                other => Err(wrong(p, other, "a boolean")),
            })
        }?;
        out.write(b);
        Ok(())
    })
}

/// The number of elements of the array at `pointer` in `json`, in `*len_out` (elements are
/// then read with the pointers `<pointer>/0` ... `<pointer>/<len - 1>`).
///
/// `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not an array.
#[no_mangle]
pub unsafe extern "C" fn qm_json_array_len(
    json: *const c_char,
    pointer: *const c_char,
    len_out: *mut usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_json_array_len", err_out, || {
        let out = out(len_out, "len_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let n = unsafe {
            with_value(json, pointer, |v, p| match v {
                Value::Array(items) => Ok(items.len()),
                other => Err(wrong(p, other, "an array")),
            })
        }?;
        out.write(n);
        Ok(())
    })
}

/// The array of strings at `pointer` in `json` as a vector C can use directly, e.g. the
/// result of `qm_guest_qemu_args` for `qm_add_args`: `*strings_out` receives a new array of
/// `n` new UTF-8 strings (unescaped) followed by a NULL pointer, and `*len_out` receives `n`
/// (`len_out` may be NULL: the array is NULL-terminated). The caller owns the array and its
/// strings and frees both with one `qm_strings_free(*strings_out)` (never `free()` or
/// `qm_string_free`).
///
/// `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not an array, an element is
/// not a string or a string contains a NUL character (the message names the element).
#[no_mangle]
pub unsafe extern "C" fn qm_json_get_strings(
    json: *const c_char,
    pointer: *const c_char,
    strings_out: *mut *mut *mut c_char,
    len_out: *mut usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_json_get_strings", err_out, || {
        let out = out(strings_out, "strings_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let strings = unsafe {
            with_value(json, pointer, |v, p| match v {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at = format!("{p}/{i}");
                        match item {
                            Value::String(s) => c_string(s, &at),
                            other => Err(wrong(&at, other, "a string")),
                        }
                    })
                    .collect::<Result<Vec<CString>>>(),
                other => Err(wrong(p, other, "an array of strings")),
            })
        }?;
        let n = strings.len();
        let mut vector: Vec<*mut c_char> = strings.into_iter().map(CString::into_raw).collect();
        vector.push(std::ptr::null_mut());
        // A boxed slice: qm_strings_free rebuilds it from the pointer and the NULL's position.
        let raw = Box::into_raw(vector.into_boxed_slice());
        if !len_out.is_null() {
            // SAFETY: not NULL; the caller promises a writable size_t.
            unsafe { len_out.write(n) };
        }
        out.write(raw.cast());
        Ok(())
    })
}

/// Frees an array returned by `qm_json_get_strings`, and every string in it. NULL is a no-op.
/// Only for such arrays, once each, unmodified (the NULL at its end tells its length).
#[no_mangle]
pub unsafe extern "C" fn qm_strings_free(strings: *mut *mut c_char) {
    guard((), || {
        if strings.is_null() {
            return;
        }
        let mut n = 0;
        // SAFETY: the array came from qm_json_get_strings: NULL-terminated, n + 1 pointers.
        while !unsafe { *strings.add(n) }.is_null() {
            n += 1;
        }
        // SAFETY: it was a Box<[*mut c_char]> of n + 1 elements, freed only once.
        let vector = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(strings, n + 1)) };
        for &s in &vector[..n] {
            // SAFETY: each came from CString::into_raw.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(root: &Value, p: &str) -> Value {
        match lookup(root, p).unwrap() {
            Lookup::Found(v) => v.clone(),
            Lookup::Missing(why) => panic!("{p}: {why}"),
        }
    }

    fn missing(root: &Value, p: &str) -> String {
        match lookup(root, p).unwrap() {
            Lookup::Found(v) => panic!("{p} found {v}"),
            Lookup::Missing(why) => why,
        }
    }

    #[test]
    fn the_examples_of_rfc_6901() {
        // The document of RFC 6901 section 5, and what each pointer designates.
        let doc = json!({
            "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4,
            "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8
        });
        assert_eq!(found(&doc, ""), doc);
        assert_eq!(found(&doc, "/foo"), json!(["bar", "baz"]));
        assert_eq!(found(&doc, "/foo/0"), json!("bar"));
        assert_eq!(found(&doc, "/"), json!(0));
        assert_eq!(found(&doc, "/a~1b"), json!(1));
        assert_eq!(found(&doc, "/c%d"), json!(2));
        assert_eq!(found(&doc, "/e^f"), json!(3));
        assert_eq!(found(&doc, "/g|h"), json!(4));
        assert_eq!(found(&doc, "/i\\j"), json!(5));
        assert_eq!(found(&doc, "/k\"l"), json!(6));
        assert_eq!(found(&doc, "/ "), json!(7));
        assert_eq!(found(&doc, "/m~0n"), json!(8));
    }

    #[test]
    fn missing_values_say_where_the_lookup_stopped() {
        let doc = json!({"data": {"n": [1, 2, 3], "s": "x"}});
        assert_eq!(
            missing(&doc, "/data/x"),
            "no member \"x\" in the object at \"/data\""
        );
        assert_eq!(
            missing(&doc, "/data/n/3"),
            "index 3 is past the end of the array at \"/data/n\" (3 elements)"
        );
        assert_eq!(
            missing(&doc, "/data/n/-"),
            "\"-\" is past the end of the array at \"/data/n\""
        );
        assert_eq!(
            missing(&doc, "/data/s/0"),
            "the value at \"/data/s\" is a string, which has no member \"0\""
        );
        // "~01" is "~1" (not "/"): decoding goes left to right once.
        assert_eq!(found(&json!({"~1": 1}), "/~01"), json!(1));
        assert!(missing(&json!({"/": 1}), "/~01").contains("no member \"~1\""));
        // An index too big for usize is past the end too.
        assert_eq!(
            missing(&doc, "/data/n/99999999999999999999999"),
            "index 99999999999999999999999 is past the end of the array at \"/data/n\" \
             (3 elements)"
        );
    }

    #[test]
    fn bad_syntax_is_an_error() {
        let doc = json!({"a": [1, 2]});
        for p in ["a", "/a~", "/a~2", "/a/01", "/a/+1", "/a/1.0", "/a/ 1"] {
            assert!(matches!(lookup(&doc, p), Err(Error::Invalid(_))), "{p}");
        }
    }
}
