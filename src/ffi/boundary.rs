//! The plumbing every export shares: the panic boundary, argument checks (NULL, UTF-8, JSON),
//! timeouts, and writing results through `*_out` pointers.
//!
//! Every export runs its body through [`call`](super::error::call) (status-returning functions)
//! or [`guard`] (functions returning a plain value), so no Rust panic ever unwinds into C.
//! Argument checks return [`Error::Invalid`] naming the parameter; `call` prefixes the
//! function's name. This module depends on no other part of the FFI: `error` and `cancel`
//! build on it.

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use serde_json::Value;

use crate::{Error, Wait};

/// What the body of an export returns; the error becomes a `qm_error`.
pub(crate) type Result<T = ()> = std::result::Result<T, Error>;

/// Runs the body of an export that returns a plain value: a panic yields `fallback`.
pub(crate) fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The "is NULL" error for parameter `name`.
pub(crate) fn null(name: &str) -> Error {
    Error::Invalid(format!("{name} is NULL"))
}

/// Borrows `*ptr`, or fails with [`Error::Invalid`] naming `name` when it is NULL. For a
/// handle type that `super::handle` does not record; the ones it records are borrowed with
/// `handle::borrow`, which also refuses freed and foreign pointers.
///
/// # Safety
/// A non-NULL `ptr` must point to a live `T` for `'a`.
#[allow(dead_code)] // for handle types added elsewhere
pub(crate) unsafe fn reference<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: the caller's contract; as_ref handles NULL.
    unsafe { ptr.as_ref() }.ok_or_else(|| null(name))
}

/// Checks that an output pointer is not NULL, so a call fails before doing anything.
pub(crate) fn out<T>(ptr: *mut T, name: &str) -> Result<Out<T>> {
    if ptr.is_null() {
        Err(null(name))
    } else {
        Ok(Out(ptr))
    }
}

/// An output pointer known not to be NULL; written at most once, after the work succeeded.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    /// Stores `value` in the caller's variable.
    pub(crate) fn write(self, value: T) {
        // SAFETY: checked non-NULL by `out`; the caller promises it points to a writable T.
        // `write` does not drop what was there (a C caller's uninitialised variable).
        unsafe { self.0.write(value) }
    }
}

impl Out<*mut c_char> {
    /// Stores an owned copy of `text` (freed by the caller with `qm_string_free`).
    pub(crate) fn write_string(self, text: impl Into<Vec<u8>>) {
        self.write(owned_c_string(text).into_raw());
    }

    /// Stores `value` serialised as JSON, or NULL for `None`.
    pub(crate) fn write_json(self, value: Option<&Value>) {
        match value {
            // Straight into bytes (not through `Display`'s formatter, which costs twice as much
            // on the path of every reply and event); JSON escapes NUL, so none is inside.
            Some(v) => {
                let mut text = Vec::with_capacity(128);
                serde_json::to_writer(&mut text, v).expect("a JSON value always serialises");
                self.write_string(text)
            }
            None => self.write(std::ptr::null_mut()),
        }
    }
}

/// A C string from arbitrary bytes: NUL bytes (which C strings cannot hold) become U+FFFD.
pub(crate) fn owned_c_string(text: impl Into<Vec<u8>>) -> CString {
    let bytes = text.into();
    match CString::new(bytes) {
        Ok(s) => s,
        Err(e) => {
            let mut clean = Vec::new();
            for b in e.into_vec() {
                if b == 0 {
                    clean.extend_from_slice("\u{fffd}".as_bytes());
                } else {
                    clean.push(b);
                }
            }
            CString::new(clean).expect("every NUL byte was replaced")
        }
    }
}

/// Borrows a NUL-terminated UTF-8 string.
///
/// # Safety
/// A non-NULL `ptr` must point to a NUL-terminated string that stays valid for `'a`.
pub(crate) unsafe fn string<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string alive for 'a.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str()
        .map_err(|e| Error::Invalid(format!("{name} is not valid UTF-8 ({e})")))
}

/// Like [`string`], but NULL is `None`.
///
/// # Safety
/// As for [`string`].
pub(crate) unsafe fn opt_string<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { string(ptr, name) }.map(Some)
    }
}

/// Copies an array of `n` strings; `ptr` may be NULL only when `n` is 0.
///
/// # Safety
/// A non-NULL `ptr` must point to `n` pointers, each a NUL-terminated string (checked for
/// NULL).
pub(crate) unsafe fn strings(
    ptr: *const *const c_char,
    n: usize,
    name: &str,
) -> Result<Vec<String>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(Error::Invalid(format!(
            "{name} is NULL but its length is {n}"
        )));
    }
    // SAFETY: the caller promises `n` readable pointers at `ptr`.
    let items = unsafe { std::slice::from_raw_parts(ptr, n) };
    items
        .iter()
        .enumerate()
        // SAFETY: each element is NULL (rejected) or a NUL-terminated string.
        .map(|(i, &p)| unsafe { string(p, &format!("{name}[{i}]")) }.map(str::to_owned))
        .collect()
}

/// Borrows `len` bytes at `ptr` (NULL only when `len` is 0) as the parameter `name`.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` readable bytes that stay valid for `'a`.
pub(crate) unsafe fn byte_slice<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Error::Invalid(format!(
            "{name} is NULL but its length is {len}"
        )));
    }
    // SAFETY: not NULL; the caller promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Lends `data` (`None`: empty) to C as a pointer and a length written to `*len_out` when
/// that is not NULL; the pointer is NULL when there are no bytes. The bytes stay owned by the
/// handle they came from.
///
/// # Safety
/// A non-NULL `len_out` must point to a writable `size_t`.
pub(crate) unsafe fn lend_bytes(data: Option<&[u8]>, len_out: *mut usize) -> *const u8 {
    let data = data.unwrap_or_default();
    if !len_out.is_null() {
        // SAFETY: not NULL, and writable by the caller's contract.
        unsafe { len_out.write(data.len()) };
    }
    if data.is_empty() {
        std::ptr::null()
    } else {
        data.as_ptr()
    }
}

/// Parses a JSON text.
pub(crate) fn json(text: &str, name: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Invalid(format!("{name} is not valid JSON: {e}")))
}

/// Parses an optional JSON object: NULL and the JSON text `null` are `None`; anything but an
/// object is rejected.
///
/// # Safety
/// As for [`string`].
pub(crate) unsafe fn opt_json_object(ptr: *const c_char, name: &str) -> Result<Option<Value>> {
    // SAFETY: forwarded contract.
    let Some(text) = (unsafe { opt_string(ptr, name) })? else {
        return Ok(None);
    };
    match json(text, name)? {
        Value::Null => Ok(None),
        v @ Value::Object(_) => Ok(Some(v)),
        other => Err(Error::Invalid(format!(
            "{name} must be a JSON object or null, got {}",
            kind(&other)
        ))),
    }
}

/// A JSON value's kind, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Wait forever (`QM_WAIT_FOREVER`).
pub(crate) const FOREVER: i64 = -1;
/// The call's default wait (`QM_WAIT_DEFAULT`).
pub(crate) const DEFAULT: i64 = -2;

/// A duration in milliseconds, or `None` for [`FOREVER`] (a setting such as the QMP timer,
/// which has no default of its own). Other negative values are invalid.
pub(crate) fn millis(timeout_ms: i64, name: &str) -> Result<Option<Duration>> {
    match timeout_ms {
        FOREVER => Ok(None),
        ms if ms >= 0 => Ok(Some(Duration::from_millis(ms as u64))),
        ms => Err(Error::Invalid(format!(
            "{name} is {ms}: use a number of milliseconds >= 0 or QM_WAIT_FOREVER (-1)"
        ))),
    }
}

/// Converts a `timeout_ms` parameter: milliseconds, [`FOREVER`] or [`DEFAULT`]. What those
/// mean for each call (its default, a fired token) is the core's [`Wait`] to decide.
pub(crate) fn timeout(timeout_ms: i64, name: &str) -> Result<Wait> {
    match timeout_ms {
        FOREVER => Ok(Wait::forever()),
        DEFAULT => Ok(Wait::call_default()),
        ms if ms >= 0 => Ok(Wait::timeout(Duration::from_millis(ms as u64))),
        ms => Err(Error::Invalid(format!(
            "{name} is {ms}: use a number of milliseconds >= 0, QM_WAIT_FOREVER (-1) or \
             QM_WAIT_DEFAULT (-2)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ffi::error::{call, qm_error, qm_status};

    #[test]
    fn a_panic_becomes_a_status_and_an_error() {
        let mut err: *mut qm_error = std::ptr::null_mut();
        let status = call("qm_test", &mut err, || panic!("boom {}", 42));
        assert_eq!(status, qm_status::QM_ERR_PANIC);
        assert!(!err.is_null());
        // SAFETY: err was just created by `call`.
        let e = unsafe { &*err };
        assert_eq!(e.status(), qm_status::QM_ERR_PANIC);
        assert!(e.message().contains("boom 42"), "{}", e.message());
        assert!(e.message().starts_with("qm_test: "), "{}", e.message());
        // SAFETY: err is live and no longer used.
        unsafe { super::super::error::qm_error_free(err) };
    }

    #[test]
    fn a_panic_with_a_null_err_out_still_returns_the_status() {
        let status = call("qm_test", std::ptr::null_mut(), || {
            std::panic::panic_any(17u8)
        });
        assert_eq!(status, qm_status::QM_ERR_PANIC);
    }

    #[test]
    fn guard_returns_the_fallback_on_panic() {
        assert_eq!(guard(-1i64, || panic!("no")), -1);
        assert_eq!(guard(-1i64, || 5), 5);
    }

    #[test]
    fn success_leaves_err_out_untouched() {
        let sentinel = 0x10 as *mut qm_error;
        let mut err = sentinel;
        assert_eq!(call("qm_test", &mut err, || Ok(())), qm_status::QM_OK);
        assert_eq!(err, sentinel);
    }

    #[test]
    fn nul_bytes_become_replacement_characters() {
        assert_eq!(
            owned_c_string(b"a\0b".to_vec()).to_str().unwrap(),
            "a\u{fffd}b"
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(millis(-1, "t").unwrap(), None);
        assert_eq!(millis(0, "t").unwrap(), Some(Duration::ZERO));
        assert_eq!(
            millis(1500, "t").unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(matches!(millis(-3, "t"), Err(Error::Invalid(_))));
        assert!(matches!(millis(-2, "t"), Err(Error::Invalid(_))));
        let debug = |ms| format!("{:?}", timeout(ms, "t").unwrap());
        assert_eq!(debug(-1), format!("{:?}", Wait::forever()));
        assert_eq!(debug(-2), format!("{:?}", Wait::call_default()));
        assert_eq!(
            debug(7),
            format!("{:?}", Wait::timeout(Duration::from_millis(7)))
        );
        assert!(matches!(timeout(-3, "t"), Err(Error::Invalid(_))));
    }
}
