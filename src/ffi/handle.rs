//! Which handles are live: every opaque pointer qm hands out (`qm_machine`, `qm_cancel`,
//! `qm_error`, `qm_patterns`, `qm_console_match`, `qm_exec_result`) is recorded here when it is
//! made and forgotten when it is freed, so that a call can tell a live handle from one it
//! never made or already freed *without reading the memory it points to* (reading a freed
//! object is undefined behaviour; a magic number inside it could not be checked safely).
//!
//! What is detected: a handle used or freed after its `_free` (a second `qm_free` used to hang
//! forever on the freed machine's lock), a pointer qm never returned, and a handle of another
//! type (a `qm_cancel *` cast to `qm_machine *`). A call that takes `err_out` fails with
//! `QM_ERR_INVALID` naming the parameter and what it is not; a call without one (the `_free`
//! functions, `qm_cancel_fire`, the accessors) does nothing, returns its NULL-case value and
//! logs a warning (on by default, to stderr or the log callback).
//!
//! What cannot be detected: a freed handle whose address a later `_new` reused (it names the
//! new object, and the call acts on that one), and a `_free` racing with another thread's
//! call on the same handle (the header forbids it: `_free` must be the last call; the check
//! and the use are not one step).
//!
//! The cost is one lookup under a read lock per call; handles are made and freed far less
//! often than they are used.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::boundary::{null, Result};
use crate::log::warning;
use crate::Error;

/// A type of handle: its C name and the function that makes it (for messages).
pub(crate) struct Kind {
    /// The C type, e.g. `"qm_machine"`.
    pub(crate) name: &'static str,
    /// Where live ones come from, e.g. `"qm_new"`.
    pub(crate) made_by: &'static str,
}

pub(crate) const MACHINE: Kind = Kind {
    name: "qm_machine",
    made_by: "qm_new",
};
pub(crate) const CANCEL: Kind = Kind {
    name: "qm_cancel",
    made_by: "qm_cancel_new",
};
pub(crate) const ERROR: Kind = Kind {
    name: "qm_error",
    made_by: "a failed call's err_out",
};
pub(crate) const PATTERNS: Kind = Kind {
    name: "qm_patterns",
    made_by: "qm_patterns_new",
};
pub(crate) const CONSOLE_MATCH: Kind = Kind {
    name: "qm_console_match",
    made_by: "a console wait",
};
pub(crate) const EXEC_RESULT: Kind = Kind {
    name: "qm_exec_result",
    made_by: "qm_agent_exec",
};

/// Address → the C name of the live handle there. A lock of its own, taken last (no other
/// lock is taken while it is held).
static LIVE: RwLock<BTreeMap<usize, &'static str>> = RwLock::new(BTreeMap::new());

fn is_live(addr: usize, kind: &Kind) -> bool {
    let live = LIVE.read().unwrap_or_else(|e| e.into_inner());
    live.get(&addr).is_some_and(|name| *name == kind.name)
}

fn not_live(kind: &Kind, addr: usize) -> String {
    format!(
        "{addr:#x} is not a live {name} (freed already, or not from {made_by})",
        name = kind.name,
        made_by = kind.made_by
    )
}

/// Moves `value` to the heap and records it as a live handle of `kind`; the caller owns it
/// and gives it back to [`free`].
pub(crate) fn new<T>(value: T, kind: &Kind) -> *mut T {
    let ptr = Box::into_raw(Box::new(value));
    let mut live = LIVE.write().unwrap_or_else(|e| e.into_inner());
    live.insert(ptr as usize, kind.name);
    ptr
}

/// Borrows a handle parameter called `name`: [`Error::Invalid`] for NULL and for a pointer
/// that is not a live handle of `kind`.
///
/// # Safety
/// A live handle must stay live for `'a` (the header's rule: `_free` is the last call).
pub(crate) unsafe fn borrow<'a, T>(ptr: *const T, kind: &Kind, name: &str) -> Result<&'a T> {
    if ptr.is_null() {
        return Err(null(name));
    }
    if !is_live(ptr as usize, kind) {
        return Err(Error::Invalid(format!(
            "{name}: {}",
            not_live(kind, ptr as usize)
        )));
    }
    // SAFETY: recorded by `new` and not freed since: a live Box allocation of a T.
    Ok(unsafe { &*ptr })
}

/// As [`borrow`], for a handle the call changes.
///
/// # Safety
/// As [`borrow`], and no other thread uses the handle during the call.
pub(crate) unsafe fn borrow_mut<'a, T>(ptr: *mut T, kind: &Kind, name: &str) -> Result<&'a mut T> {
    // SAFETY: the caller's contract; `borrow` checked that it is live.
    unsafe { borrow(ptr, kind, name) }?;
    // SAFETY: live (just checked), and the caller's contract makes the borrow exclusive.
    Ok(unsafe { &mut *ptr })
}

/// Borrows a handle for a call that has no `err_out`: None for NULL, and for a pointer that is
/// not live (then with a warning naming `function`).
///
/// # Safety
/// As [`borrow`].
pub(crate) unsafe fn get<'a, T>(ptr: *const T, kind: &Kind, function: &str) -> Option<&'a T> {
    if ptr.is_null() {
        return None;
    }
    if !is_live(ptr as usize, kind) {
        warning!("{function}: {}; ignored", not_live(kind, ptr as usize));
        return None;
    }
    // SAFETY: as in `borrow`.
    Some(unsafe { &*ptr })
}

/// Forgets a handle and drops what it owns. NULL is a no-op; a pointer that is not a live
/// handle of `kind` is left alone, with a warning naming `function`.
///
/// # Safety
/// No other thread may be using the handle (the header's rule for `_free`).
pub(crate) unsafe fn free<T>(ptr: *mut T, kind: &Kind, function: &str) {
    if ptr.is_null() {
        return;
    }
    let removed = {
        let mut live = LIVE.write().unwrap_or_else(|e| e.into_inner());
        match live.get(&(ptr as usize)) {
            Some(name) if *name == kind.name => live.remove(&(ptr as usize)).is_some(),
            _ => false,
        }
    };
    if !removed {
        warning!("{function}: {}; ignored", not_live(kind, ptr as usize));
        return;
    }
    // SAFETY: recorded by `new` (Box::into_raw) and now removed, so freed exactly once.
    drop(unsafe { Box::from_raw(ptr) });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_and_foreign_handles_are_refused() {
        let p = new(7u32, &PATTERNS);
        // SAFETY: p is live.
        assert_eq!(*unsafe { borrow(p, &PATTERNS, "p") }.unwrap(), 7);
        // Another kind at the same address is not this kind.
        // SAFETY: the check fails before any read.
        let e = unsafe { borrow(p, &MACHINE, "m") }.unwrap_err().to_string();
        assert!(
            e.contains("m: ") && e.contains("not a live qm_machine"),
            "{e}"
        );
        // SAFETY: p is live and unused elsewhere.
        unsafe { free(p, &PATTERNS, "test") };
        // SAFETY: the check fails before any read.
        let e = unsafe { borrow(p, &PATTERNS, "p") }
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a live qm_patterns (freed already"), "{e}");
        // SAFETY: p is not live, so it is neither read nor freed again.
        unsafe { free(p, &PATTERNS, "test") };
        // SAFETY: as above.
        assert!(unsafe { get(p, &PATTERNS, "test") }.is_none());
        let local = 0u32;
        // SAFETY: a pointer qm never made is refused before any read.
        assert!(unsafe { borrow(&local, &PATTERNS, "p") }.is_err());
        // SAFETY: NULL.
        let e = unsafe { borrow(std::ptr::null::<u32>(), &PATTERNS, "p") }.unwrap_err();
        assert!(e.to_string().contains("p is NULL"));
    }
}
