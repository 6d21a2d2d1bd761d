//! The C API's JSON accessors (`qm_json_type`, `qm_json_get`): arbitrary texts and RFC 6901
//! pointers, called as a C program calls them.
//!
//! Input layout: the bytes up to the first 0 are the pointer, the rest the JSON text (both made
//! NUL-free). Properties:
//! 1. never panics and never reports `QM_ERR_PANIC`; every status is `QM_OK` or
//!    `QM_ERR_INVALID`, and an error always comes with a message;
//! 2. for a valid text and pointer, `qm_json_get` agrees with serde_json's own pointer lookup:
//!    found means the same value, `QM_JSON_MISSING` from `qm_json_type` means serde finds
//!    nothing;
//! 3. `qm_json_type` and `qm_json_get` agree on whether something is there.
#![no_main]

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use libfuzzer_sys::fuzz_target;
use qm::ffi::error::{qm_error, qm_error_free, qm_status};
use qm::ffi::json::{qm_json_get, qm_json_type, QM_JSON_MISSING};
use qm::ffi::qm_string_free;
use serde_json::Value;

/// Takes the error (freeing it), checks it carries a message.
fn take_error(status: qm_status, err: *mut qm_error) {
    assert!(
        matches!(status, qm_status::QM_OK | qm_status::QM_ERR_INVALID),
        "[status] {status:?}"
    );
    if status == qm_status::QM_OK {
        assert!(err.is_null(), "[error-on-ok]");
    } else {
        assert!(!err.is_null(), "[no-error]");
        // SAFETY: an error qm returned, freed once.
        unsafe { qm_error_free(err) };
    }
}

fn check(data: &[u8]) {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (pointer, text) = data.split_at(split);
    let text = text.get(1..).unwrap_or_default();
    let pointer = CString::new(pointer).unwrap();
    let text_c =
        CString::new(text.iter().copied().filter(|&b| b != 0).collect::<Vec<_>>()).unwrap();

    let mut kind = -1;
    let mut err: *mut qm_error = ptr::null_mut();
    // SAFETY: NUL-terminated strings and valid out pointers, as the header asks.
    let st_type = unsafe { qm_json_type(text_c.as_ptr(), pointer.as_ptr(), &mut kind, &mut err) };
    take_error(st_type, err);

    let mut out: *mut c_char = ptr::null_mut();
    let mut err: *mut qm_error = ptr::null_mut();
    // SAFETY: as above.
    let st_get = unsafe { qm_json_get(text_c.as_ptr(), pointer.as_ptr(), &mut out, &mut err) };
    take_error(st_get, err);
    let got = (st_get == qm_status::QM_OK).then(|| {
        // SAFETY: a string qm returned, read then freed once.
        let s = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_owned();
        unsafe { qm_string_free(out) };
        s
    });

    if st_type == qm_status::QM_OK {
        // The text and pointer are valid: both calls see the same thing.
        assert_eq!(
            kind == QM_JSON_MISSING,
            got.is_none(),
            "[agree] kind {kind}"
        );
        let root: Value = serde_json::from_str(text_c.to_str().unwrap()).unwrap();
        let theirs = root.pointer(pointer.to_str().unwrap());
        match &got {
            Some(text) => {
                let ours: Value = serde_json::from_str(text).unwrap();
                assert_eq!(Some(&ours), theirs, "[value]");
            }
            // serde_json accepts array indices that RFC 6901 does not ("01"): only qm's "no"
            // on a pointer serde also resolves is checked where the index is canonical.
            None => {
                if let Some(v) = theirs {
                    let canonical = pointer.to_str().unwrap().split('/').all(|t| {
                        !(t.len() > 1
                            && t.starts_with('0')
                            && t.bytes().all(|b| b.is_ascii_digit()))
                    });
                    assert!(!canonical, "[missing] serde found {v}");
                }
            }
        }
    } else {
        assert!(got.is_none(), "[type-invalid-get-ok]");
    }
}

fuzz_target!(|data: &[u8]| check(data));
