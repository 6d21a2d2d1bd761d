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

use super::boundary::{guard, out, reference, string, Result};
use super::error::{call, qm_error, qm_status};
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
}

/// Borrows the machine behind a handle.
///
/// # Safety
/// A non-NULL `m` must be a live handle from `qm_new`.
pub(crate) unsafe fn machine<'a>(m: *const qm_machine) -> Result<&'a qm_machine> {
    // SAFETY: the caller's contract.
    unsafe { reference(m, "m") }
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
        let m = qm_machine {
            vm: Machine::new(binary),
        };
        out.write(Box::into_raw(Box::new(m)));
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
#[no_mangle]
pub unsafe extern "C" fn qm_free(m: *mut qm_machine) {
    guard((), || {
        if !m.is_null() {
            // SAFETY: a non-NULL m came from qm_new (Box::into_raw) and is freed only once.
            drop(unsafe { Box::from_raw(m) });
        }
    })
}

pub mod config;

pub mod launch;

pub mod qmp;

pub mod events;

pub mod shutdown;

pub mod state;
