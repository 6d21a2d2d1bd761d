//! `qm_machine`: one QEMU virtual machine, from configuration to cleanup.
//!
//! This file holds the handle (its type, `qm_new`, `qm_free`, how other files borrow it) and the
//! helpers its calls share; the calls themselves are split by concern, in the order of the
//! header's sections: [`config`] (what the next launch runs), [`launch`], [`qmp`] (commands and
//! descriptors), [`events`], [`shutdown`], [`state`] (what the machine reports). The console's
//! calls, including its descriptor, are in `super::console`.

use std::ffi::{c_char, c_int};
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;

use super::boundary::{guard, out, string, Result};
use super::error::{call, qm_error, qm_status};
use super::handle;
use crate::{Error, Machine};

/// A QEMU virtual machine: its configuration, and while launched the QEMU process, its QMP
/// connection, its event queue and its console.
///
/// Thread-safety: every function that takes a `qm_machine *` may be called from any number of
/// threads at once on the same handle, except `qm_free`, which must be the last call. Commands
/// from several threads run concurrently, each getting its own reply; a shutdown in the middle
/// fails the others with `QM_ERR_DISCONNECTED` (or `QM_ERR_STATE` once it is over).
/// Configuration calls apply to the next launch.
pub struct qm_machine {
    pub(crate) vm: Machine,
    /// Private, so that a handle is only made by [`qm_machine::into_handle`] (which records it
    /// as live: `super::handle`).
    _made_by_into_handle: (),
}

impl qm_machine {
    /// A new handle owning `vm`, recorded as live; the caller owns it (`qm_free`). Every
    /// function that returns a `qm_machine *` makes it here.
    pub(crate) fn into_handle(vm: Machine) -> *mut qm_machine {
        handle::new(
            qm_machine {
                vm,
                _made_by_into_handle: (),
            },
            &handle::MACHINE,
        )
    }
}

/// Borrows the machine behind a handle: `QM_ERR_INVALID` for NULL, and for a pointer that is
/// not a live handle (freed already, or never returned by qm).
///
/// # Safety
/// A live `m` stays live for `'a` (`qm_free` is the last call on a handle).
pub(crate) unsafe fn machine<'a>(m: *const qm_machine) -> Result<&'a qm_machine> {
    // SAFETY: the caller's contract.
    unsafe { handle::borrow(m, &handle::MACHINE, "m") }
}

/// Borrows the machine behind a handle for a call without `err_out`: None for NULL and (with a
/// warning naming `function`) for a handle that is not live.
///
/// # Safety
/// As [`machine`].
pub(crate) unsafe fn machine_or_none<'a>(
    m: *const qm_machine,
    function: &str,
) -> Option<&'a qm_machine> {
    // SAFETY: the caller's contract.
    unsafe { handle::get(m, &handle::MACHINE, function) }
}

/// Checks that `fd` is an open descriptor, and borrows it for the call.
fn open_fd<'a>(fd: c_int, name: &str) -> Result<BorrowedFd<'a>> {
    // SAFETY: F_GETFD only reads the descriptor's flags; any int is a valid argument.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::Invalid(format!(
            "{name} ({fd}) is not an open file descriptor"
        )));
    }
    // SAFETY: fd is open; the caller keeps it open for the duration of the call.
    Ok(unsafe { BorrowedFd::borrow_raw(fd as RawFd) })
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Creates a machine that will run `binary` (e.g. `"qemu-system-x86_64"`, looked up in `PATH`;
/// borrowed, non-empty UTF-8). Nothing starts until `qm_launch`. On success `*machine_out`
/// receives a handle the caller owns and frees with `qm_free`.
///
/// Defaults: a QMP monitor on a socketpair, a 30 s QMP timer, no console, temporary files under
/// `/var/tmp`, `-display none -vga none`.
#[no_mangle]
pub unsafe extern "C" fn qm_new(
    binary: *const c_char,
    machine_out: *mut *mut qm_machine,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_new", err_out, || {
        let out = out(machine_out, "machine_out")?;
        // SAFETY: a NUL-terminated string (the caller's contract).
        let binary = unsafe { string(binary, "binary") }?;
        if binary.is_empty() {
            return Err(Error::Invalid("binary is empty".into()));
        }
        out.write(qm_machine::into_handle(Machine::new(binary)));
        Ok(())
    })
}

/// Frees a machine. A launched machine is shut down first, gracefully (`quit`, up to 30 s, then
/// SIGKILL), so this may block. NULL is a no-op.
///
/// Must be the last call on the handle: no other thread may be using it or start to (fire the
/// `qm_cancel` of blocked calls and wait for them to return first). Borrowed descriptors (the
/// console) and strings borrowed from the handle are invalid afterwards; owned strings and
/// `qm_error` objects stay valid.
///
/// A handle that is not live (freed already, or never returned by qm) is left alone with a
/// warning in the log, so freeing twice is reported instead of undefined; a freed handle whose
/// address a later `qm_new` reused cannot be told apart from that new machine.
#[no_mangle]
pub unsafe extern "C" fn qm_free(m: *mut qm_machine) {
    guard((), || {
        // SAFETY: NULL, not live (refused before any read) or live and unused by other
        // threads (the caller's contract).
        unsafe { handle::free(m, &handle::MACHINE, "qm_free") }
    })
}

pub mod config;

pub mod launch;

pub mod qmp;

pub mod events;

pub mod shutdown;

pub mod state;
