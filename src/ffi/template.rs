//! Fast start: `qm_template` (boot once, clone many running machines), saving and restoring a
//! machine's state, live migration between two machines, and block jobs run to their end.
//! The policy (keys, checks, waits, defaults) is the core's: `qm::template`, `qm::snapshot`.

use std::ffi::{c_char, c_int};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use super::boundary::{guard, opt_string, out, string, strings, Result};
use super::cancel::{qm_cancel, wait};
use super::error::{call, qm_error, qm_status};
use super::handle::{self, Kind};
use super::machine::{machine, qm_machine};
use crate::console::Patterns;
use crate::{Error, Machine, Ready, Template};

/// When a restored machine (or a template's first boot) counts as ready.
pub type qm_ready = c_int;

/// As soon as the guest runs (`cont` answered). For `qm_template_prepare`: at once after launch.
pub const QM_READY_RUNNING: qm_ready = 0;
/// When the guest agent answers `guest-sync` (the machine needs a guest agent channel).
pub const QM_READY_AGENT: qm_ready = 1;
/// When the literal text `console_text` shows on the console, after sending `console_send`
/// (may be NULL; e.g. `"\n"` brings back the prompt of a guest saved at a shell prompt).
pub const QM_READY_CONSOLE: qm_ready = 2;

/// A template: a machine description and the directory its saved state lives in (see
/// `qm_template_new`). Owned by the caller, freed with `qm_template_free`. Thread-safe: clones
/// may be started from many threads at once.
pub struct qm_template {
    t: Mutex<Template>,
}

impl qm_template {
    fn lock(&self) -> MutexGuard<'_, Template> {
        self.t.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `qm_template` handles, recorded as live as the others (`super::handle`).
const TEMPLATE: Kind = Kind {
    name: "qm_template",
    made_by: "qm_template_new",
};

/// Borrows the template behind a handle: `QM_ERR_INVALID` for NULL or a handle not live.
///
/// # Safety
/// A live `t` stays live for `'a` (`qm_template_free` is the last call on a handle).
unsafe fn template<'a>(t: *const qm_template) -> Result<&'a qm_template> {
    // SAFETY: the caller's contract.
    unsafe { handle::borrow(t, &TEMPLATE, "t") }
}

/// The core's `Ready` from the C arguments.
///
/// # Safety
/// Non-NULL strings must be NUL-terminated.
unsafe fn ready(
    kind: qm_ready,
    console_send: *const c_char,
    console_text: *const c_char,
) -> Result<Ready> {
    Ok(match kind {
        QM_READY_RUNNING => Ready::Running,
        QM_READY_AGENT => Ready::Agent,
        QM_READY_CONSOLE => {
            // SAFETY: the caller's contract.
            let (send, text) = unsafe {
                (
                    opt_string(console_send, "console_send")?,
                    string(console_text, "console_text")?,
                )
            };
            Ready::Console {
                send: send.map(str::to_owned),
                patterns: Patterns::new().success(text),
            }
        }
        other => {
            return Err(Error::Invalid(format!(
                "ready is {other}: not a QM_READY_* value"
            )))
        }
    })
}

/// Creates a template of machines running `binary`, whose saved state lives under `dir` (both
/// borrowed; `dir` is created when needed, one subdirectory per key). On success
/// `*template_out` receives a handle the caller owns and frees with `qm_template_free`.
///
/// The key covers what the state depends on: the QEMU binary (path, size, modification time),
/// the settings and arguments, every file the arguments name and the disks' base images. A
/// second process with the same description finds the state and boots nothing.
#[no_mangle]
pub unsafe extern "C" fn qm_template_new(
    binary: *const c_char,
    dir: *const c_char,
    template_out: *mut *mut qm_template,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_new", err_out, || {
        let out = out(template_out, "template_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let (binary, dir) = unsafe { (string(binary, "binary")?, string(dir, "dir")?) };
        if binary.is_empty() || dir.is_empty() {
            return Err(Error::Invalid("binary and dir must not be empty".into()));
        }
        let t = qm_template {
            t: Mutex::new(Template::new(binary, dir)),
        };
        out.write(handle::new(t, &TEMPLATE));
        Ok(())
    })
}

/// Frees a template (never its saved state, nor the machines cloned from it). NULL is a no-op;
/// a handle that is not live is left alone with a warning. Must be the last call on the handle.
#[no_mangle]
pub unsafe extern "C" fn qm_template_free(t: *mut qm_template) {
    guard((), || {
        // SAFETY: `free` checks that t is a live template handle before taking it back.
        unsafe { handle::free(t, &TEMPLATE, "qm_template_free") }
    })
}

/// Appends `n` QEMU arguments (`args`: `n` borrowed UTF-8 strings, NULL when `n` is 0), as
/// `qm_add_args`.
#[no_mangle]
pub unsafe extern "C" fn qm_template_add_args(
    t: *mut qm_template,
    args: *const *const c_char,
    n: usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_add_args", err_out, || {
        // SAFETY: the handle and array contracts.
        let (t, args) = unsafe { (template(t)?, strings(args, n, "args")?) };
        t.lock().add_args(args);
        Ok(())
    })
}

/// `-machine TYPE` (borrowed), as `qm_set_machine`.
#[no_mangle]
pub unsafe extern "C" fn qm_template_set_machine(
    t: *mut qm_template,
    machine_type: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_set_machine", err_out, || {
        // SAFETY: the handle and string contracts.
        let (t, ty) = unsafe { (template(t)?, string(machine_type, "machine_type")?) };
        t.lock().set_machine(ty);
        Ok(())
    })
}

/// A console on every machine, as `qm_set_console` (`device_type` borrowed, may be NULL).
#[no_mangle]
pub unsafe extern "C" fn qm_template_set_console(
    t: *mut qm_template,
    device_type: *const c_char,
    index: usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_set_console", err_out, || {
        // SAFETY: the handle and string contracts.
        let (t, dev) = unsafe { (template(t)?, opt_string(device_type, "device_type")?) };
        t.lock().set_console(dev, index);
        Ok(())
    })
}

/// A guest agent channel (a socketpair) on every machine, or none, as `qm_set_guest_agent`.
#[no_mangle]
pub unsafe extern "C" fn qm_template_set_guest_agent(
    t: *mut qm_template,
    enabled: bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_set_guest_agent", err_out, || {
        // SAFETY: the handle contract.
        let t = unsafe { template(t) }?;
        t.lock().set_guest_agent(enabled);
        Ok(())
    })
}

/// Adds a disk: `-drive file=OVERLAY,format=qcow2,OPTS` on a qcow2 overlay of `base` (format
/// `format`, e.g. `"raw"`), so `base` is only ever read; each clone writes an overlay of its
/// own, removed at its shutdown. Strings borrowed; `opts` may be NULL. Needs `qemu-img`.
#[no_mangle]
pub unsafe extern "C" fn qm_template_add_disk(
    t: *mut qm_template,
    base: *const c_char,
    format: *const c_char,
    opts: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_add_disk", err_out, || {
        // SAFETY: the handle and string contracts.
        let (t, base, format, opts) = unsafe {
            (
                template(t)?,
                string(base, "base")?,
                string(format, "format")?,
                opt_string(opts, "opts")?,
            )
        };
        t.lock().add_disk(base, format, opts.unwrap_or_default());
        Ok(())
    })
}

/// What `qm_template_clone` waits for (`QM_READY_*`; strings borrowed, used only by
/// `QM_READY_CONSOLE`). Default: the agent when the template has one, else the guest running.
#[no_mangle]
pub unsafe extern "C" fn qm_template_set_clone_ready(
    t: *mut qm_template,
    ready_kind: qm_ready,
    console_send: *const c_char,
    console_text: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_set_clone_ready", err_out, || {
        // SAFETY: the handle and string contracts.
        let (t, r) = unsafe { (template(t)?, ready(ready_kind, console_send, console_text)?) };
        t.lock().set_clone_ready(r);
        Ok(())
    })
}

/// Makes sure the template's state is saved: when it is not, boots a machine, waits until
/// `ready_kind` (strings borrowed, as `qm_template_set_clone_ready`), saves it and shuts it
/// down. `*booted_out` is true when it booted, false when the state was found (made by this
/// process or another). `QM_WAIT_DEFAULT` is 120 s for all of it.
#[no_mangle]
pub unsafe extern "C" fn qm_template_prepare(
    t: *mut qm_template,
    ready_kind: qm_ready,
    console_send: *const c_char,
    console_text: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    booted_out: *mut bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_prepare", err_out, || {
        let out = out(booted_out, "booted_out")?;
        // SAFETY: the handle, string and token contracts.
        let (t, r, wait) = unsafe {
            (
                template(t)?,
                ready(ready_kind, console_send, console_text)?,
                wait(timeout_ms, cancel)?,
            )
        };
        let template = t.lock().clone();
        out.write(template.prepare(&r, wait)?);
        Ok(())
    })
}

/// Whether the template's state is saved (`*saved_out`). Never blocks on QEMU.
#[no_mangle]
pub unsafe extern "C" fn qm_template_is_saved(
    t: *mut qm_template,
    saved_out: *mut bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_is_saved", err_out, || {
        let out = out(saved_out, "saved_out")?;
        // SAFETY: the handle contract.
        let t = unsafe { template(t) }?;
        let template = t.lock().clone();
        out.write(template.is_saved()?);
        Ok(())
    })
}

/// The directory of the template's state (`<dir>/<key>`) in `*path_out` (owned: free with
/// `qm_string_free`), whether or not it is saved yet.
#[no_mangle]
pub unsafe extern "C" fn qm_template_state_dir(
    t: *mut qm_template,
    path_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_state_dir", err_out, || {
        let out = out(path_out, "path_out")?;
        // SAFETY: the handle contract.
        let t = unsafe { template(t) }?;
        let template = t.lock().clone();
        out.write_string(template.state_dir()?.to_string_lossy().into_owned());
        Ok(())
    })
}

/// Starts a running machine from the template's saved state (`QM_ERR_STATE` when it was not
/// prepared), with its own sockets, console, agent channel and disk overlays, and waits until
/// it is ready (`qm_template_set_clone_ready`). On success `*machine_out` receives a launched
/// machine the caller owns and frees with `qm_free` (a clone is for one run: its overlays go
/// at its shutdown). On failure nothing is left running. Safe to call from many threads at
/// once. `QM_WAIT_DEFAULT` is 120 s.
#[no_mangle]
pub unsafe extern "C" fn qm_template_clone(
    t: *mut qm_template,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    machine_out: *mut *mut qm_machine,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_template_clone", err_out, || {
        let out = out(machine_out, "machine_out")?;
        // SAFETY: the handle and token contracts.
        let (t, wait) = unsafe { (template(t)?, wait(timeout_ms, cancel)?) };
        let template = t.lock().clone();
        let vm = template.clone_machine(wait)?;
        out.write(qm_machine::into_handle(vm));
        Ok(())
    })
}

// ---- state, migration, jobs on a qm_machine --------------------------------------------------

/// Saves the running machine's state to `path` (borrowed; created mode 0600, replaced) and
/// stores what was recorded with it, as a JSON object, in `*info_out` (owned: free with
/// `qm_string_free`): `stream_bytes`, `qemu_version`, `binary`, `settings`. The guest is paused
/// and stays paused (QEMU's `postmigrate`: `cont` resumes it). On failure no file is left at
/// `path`; a failed migration is `QM_ERR_QMP` with QEMU's reason. `QM_WAIT_DEFAULT` is 120 s.
/// Do not pass descriptors (`qm_send_fd_scm`) from another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn qm_save_state(
    m: *mut qm_machine,
    path: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    info_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_save_state", err_out, || {
        let out = out(info_out, "info_out")?;
        // SAFETY: the handle, string and token contracts.
        let (m, path, wait) = unsafe {
            (
                machine(m)?,
                string(path, "path")?,
                wait(timeout_ms, cancel)?,
            )
        };
        let info = m.vm.save_state(Path::new(path), wait)?;
        out.write_json(Some(&serde_json::json!({
            "stream_bytes": info.stream_bytes,
            "qemu_version": info.qemu_version,
            "binary": info.binary,
            "settings": info.settings,
        })));
        Ok(())
    })
}

/// Launches the (configured, not launched) machine from a state saved by `qm_save_state` at
/// `path` (borrowed), resumes the guest and waits until `ready_kind` (strings borrowed, as
/// `qm_template_set_clone_ready`). The machine must be configured as the saved one was:
/// otherwise `QM_ERR_INVALID` naming what differs, before anything is launched; so is a
/// truncated file or one that is not a qm state file (`QM_ERR_IO` when it cannot be opened).
/// A stream QEMU cannot load is `QM_ERR_LAUNCH` with QEMU's output; no QEMU is left running.
/// `QM_WAIT_DEFAULT` is 120 s.
#[no_mangle]
pub unsafe extern "C" fn qm_restore_state(
    m: *mut qm_machine,
    path: *const c_char,
    ready_kind: qm_ready,
    console_send: *const c_char,
    console_text: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_restore_state", err_out, || {
        // SAFETY: the handle, string and token contracts.
        let (m, path, r, wait) = unsafe {
            (
                machine(m)?,
                string(path, "path")?,
                ready(ready_kind, console_send, console_text)?,
                wait(timeout_ms, cancel)?,
            )
        };
        m.vm.restore_state(Path::new(path), &r, wait)
    })
}

/// Launches the machine waiting for an incoming migration (`-incoming defer`), for
/// `qm_migrate_to`. Otherwise as `qm_launch_with`.
#[no_mangle]
pub unsafe extern "C" fn qm_launch_incoming(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_launch_incoming", err_out, || {
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, wait(timeout_ms, cancel)?) };
        m.vm.launch_incoming(wait)
    })
}

/// Live-migrates the running machine `m` to `dest` (launched with `qm_launch_incoming`, same
/// devices) over a socketpair qm hands to both, and waits until both report it completed:
/// `dest` runs the guest, `m` is paused. A failure is `QM_ERR_QMP` with QEMU's reason; a
/// timeout or cancel cancels the migration. `QM_WAIT_DEFAULT` is 300 s.
#[no_mangle]
pub unsafe extern "C" fn qm_migrate_to(
    m: *mut qm_machine,
    dest: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_migrate_to", err_out, || {
        // SAFETY: the handle and token contracts.
        let (m, d, wait) = unsafe { (machine(m)?, machine(dest)?, wait(timeout_ms, cancel)?) };
        m.vm.migrate_to(&d.vm, wait)
    })
}

/// Waits for the machine's migration (outgoing, or incoming) to end; on completion stores the
/// last `query-migrate` reply (JSON, owned: `qm_string_free`) in `*info_out`. A failed or
/// cancelled migration is `QM_ERR_QMP` with QEMU's reason. No default wait: `QM_WAIT_DEFAULT`
/// is `QM_ERR_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn qm_wait_migration(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    info_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_wait_migration", err_out, || {
        let out = out(info_out, "info_out")?;
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, wait(timeout_ms, cancel)?) };
        out.write_json(Some(&m.vm.wait_migration(wait)?));
        Ok(())
    })
}

/// Runs job `id` (borrowed; a block job the caller started) to its end: completes it when
/// ready, finalizes and dismisses it as needed, and stores its last `query-jobs` entry (JSON,
/// owned: `qm_string_free`; `null` when QEMU dismissed it itself) in `*job_out`. A job that
/// ends with an error is `QM_ERR_QMP` holding it; on a timeout or cancel the job is cancelled.
/// `QM_WAIT_DEFAULT` is 300 s.
#[no_mangle]
pub unsafe extern "C" fn qm_run_job(
    m: *mut qm_machine,
    id: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    job_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_run_job", err_out, || {
        let out = out(job_out, "job_out")?;
        // SAFETY: the handle, string and token contracts.
        let (m, id, wait) = unsafe { (machine(m)?, string(id, "id")?, wait(timeout_ms, cancel)?) };
        out.write_json(Some(&m.vm.run_job(id, wait)?));
        Ok(())
    })
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<qm_template>();
    is::<Machine>();
}
