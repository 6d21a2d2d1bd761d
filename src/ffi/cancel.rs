//! `qm_cancel`: a token that interrupts blocked calls from another thread.

use super::boundary::{guard, timeout, Result};
use super::handle::{self, CANCEL};
use crate::{Cancel, Wait};

/// A cancellation token. Pass it to blocking calls (`qm_qmp`, `qm_event_wait`, `qm_shutdown` ...);
/// `qm_cancel_fire` from any thread makes every call waiting with it return
/// `QM_ERR_INTERRUPTED` at once. Firing is sticky: a call that starts after the token fired
/// returns `QM_ERR_INTERRUPTED` before doing anything — except `qm_shutdown` and `qm_wait`,
/// for which a fired token means "do not wait: kill QEMU" (`QM_ERR_ABNORMAL_SHUTDOWN`, QEMU
/// gone, cleanup done). A token is not tied to one machine and
/// may be shared by many calls and threads; make a new one to start over.
pub struct qm_cancel {
    token: Cancel,
}

/// Converts the `(timeout_ms, cancel)` pair every blocking call takes into the core's [`Wait`],
/// which alone decides what the call's default is and what a fired token does.
///
/// `QM_ERR_INVALID` for a `cancel` that is not NULL and not a live token.
///
/// # Safety
/// A live `cancel` stays live for the call.
pub(crate) unsafe fn wait(timeout_ms: i64, cancel: *const qm_cancel) -> Result<Wait> {
    let wait = timeout(timeout_ms, "timeout_ms")?;
    if cancel.is_null() {
        return Ok(wait);
    }
    // SAFETY: the caller's contract; a token that is not live is refused before any read.
    let cancel = unsafe { handle::borrow(cancel, &CANCEL, "cancel") }?;
    Ok(wait.cancel(&cancel.token))
}

/// A new token that has not fired; NULL only if memory runs out. Free it with `qm_cancel_free`.
#[no_mangle]
pub extern "C" fn qm_cancel_new() -> *mut qm_cancel {
    guard(std::ptr::null_mut(), || {
        handle::new(
            qm_cancel {
                token: Cancel::new(),
            },
            &CANCEL,
        )
    })
}

/// Fires the token: every call waiting with it returns `QM_ERR_INTERRUPTED`, now and later.
/// Thread-safe and non-blocking (safe from any thread, also while other threads wait on the
/// token); firing twice is harmless. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn qm_cancel_fire(cancel: *const qm_cancel) {
    guard((), || {
        // SAFETY: NULL, a live token, or one refused (with a warning) before any read.
        if let Some(c) = unsafe { handle::get(cancel, &CANCEL, "qm_cancel_fire") } {
            c.token.cancel();
        }
    })
}

/// True once the token has fired. False for NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_cancel_is_fired(cancel: *const qm_cancel) -> bool {
    guard(false, || {
        // SAFETY: NULL, a live token, or one refused (with a warning) before any read.
        unsafe { handle::get(cancel, &CANCEL, "qm_cancel_is_fired") }
            .is_some_and(|c| c.token.is_cancelled())
    })
}

/// Frees a token. NULL is a no-op. No call that was passed the token may still be running
/// (fire it and wait for those calls to return first).
#[no_mangle]
pub unsafe extern "C" fn qm_cancel_free(cancel: *mut qm_cancel) {
    guard((), || {
        // SAFETY: NULL, not live (left alone, with a warning), or live and unused elsewhere.
        unsafe { handle::free(cancel, &CANCEL, "qm_cancel_free") }
    })
}
