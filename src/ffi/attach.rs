//! Attaching a `qm_machine` to a QEMU someone else started (`Machine::attach` in the core).

use std::path::Path;

use super::boundary::{guard, opt_string, string};
use super::cancel::{self, qm_cancel};
use super::error::{call, qm_error, qm_status};
use super::machine::{machine, qm_machine};
use crate::AttachAddress;

/// Attaches the machine to a QEMU someone else started, instead of launching one: connects to
/// its QMP monitor at `qmp_address` (borrowed UTF-8: `"unix:PATH"`, `"tcp:HOST:PORT"` or a bare
/// path; QEMU listening with e.g. `-qmp unix:PATH,server=on,wait=off`) and negotiates QMP,
/// and, when `agent_path` (borrowed; may be NULL) is given, connects to its guest agent's
/// chardev, a unix socket (`-chardev socket,path=PATH,server=on,wait=off` behind a
/// `virtserialport` named `org.qemu.guest_agent.0`).
///
/// Blocks at most `timeout_ms` (`QM_WAIT_DEFAULT`: the QMP timer; `QM_WAIT_FOREVER`) or until
/// `cancel` (may be NULL) fires. Then every QMP, event and `qm_agent_*` call works as on a
/// launched machine; there is no pid, exit code, console or QEMU log, and the QMP transcript
/// (`qm_set_qmp_transcript`) and event cap apply.
///
/// qm never kills or reaps a QEMU it did not start: `qm_shutdown` (hard or not), `qm_kill`,
/// `qm_wait` and `qm_free` *detach*, closing qm's connections and leaving QEMU running. To stop
/// it, send `quit` yourself; a `qm_shutdown` or `qm_wait` after it waits (bounded by its
/// timeout) for QEMU to close the monitor, and fails with `QM_ERR_TIMEOUT` if it does not
/// (detached all the same). `qm_is_running` is true while the QMP connection is up.
///
/// QEMU serves one monitor client at a time: while another is connected no greeting comes and
/// the call fails with `QM_ERR_TIMEOUT`. `QM_ERR_STATE` when launched, attached or prepared;
/// `QM_ERR_IO` when nothing listens; `QM_ERR_INVALID` for a malformed address. On failure
/// nothing stays connected.
#[no_mangle]
pub unsafe extern "C" fn qm_attach(
    m: *mut qm_machine,
    qmp_address: *const std::ffi::c_char,
    agent_path: *const std::ffi::c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_attach", err_out, || {
        // SAFETY: the handle, string and token contracts.
        let (m, address, agent, wait) = unsafe {
            (
                machine(m)?,
                string(qmp_address, "qmp_address")?,
                opt_string(agent_path, "agent_path")?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let address: AttachAddress = address.parse()?;
        m.vm.attach(&address, agent.map(Path::new), wait)
    })
}

/// True while the machine is attached by `qm_attach` (false for NULL), until it detaches.
/// Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_is_attached(m: *const qm_machine) -> bool {
    guard(false, || {
        // SAFETY: NULL, a live handle, or one refused (with a warning) before any read.
        unsafe { super::machine::machine_or_none(m, "qm_is_attached") }
            .is_some_and(|m| m.vm.is_attached())
    })
}
