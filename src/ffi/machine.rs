//! `qm_machine`: one QEMU virtual machine, from configuration to cleanup.

use std::ffi::{c_char, c_int};
use std::os::fd::{BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::boundary::{
    self, guard, kind, millis, opt_json_object, opt_string, out, reference, string, strings, Result,
};
use super::cancel::{self, qm_cancel};
use super::error::{call, qm_error, qm_status};
use crate::{Error, Machine, MonitorAddress};

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

// ---- lifetime ----------------------------------------------------------------------------------

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

// ---- configuration ------------------------------------------------------------------------------

/// Appends `n` arguments for QEMU after the ones qm builds. `args` points to `n` borrowed UTF-8
/// strings (it may be NULL when `n` is 0). Applies to the next launch.
#[no_mangle]
pub unsafe extern "C" fn qm_add_args(
    m: *mut qm_machine,
    args: *const *const c_char,
    n: usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_add_args", err_out, || {
        // SAFETY: the handle and array contracts.
        let (m, args) = unsafe { (machine(m)?, strings(args, n, "args")?) };
        m.vm.add_args(args);
        Ok(())
    })
}

/// Sets the argv prefix QEMU runs under, e.g. `{"strace", "-f"}` (never a shell), replacing
/// the previous one; `n` = 0 removes it. `argv` points to `n` borrowed UTF-8 strings (NULL is
/// allowed when `n` is 0).
#[no_mangle]
pub unsafe extern "C" fn qm_set_wrapper(
    m: *mut qm_machine,
    argv: *const *const c_char,
    n: usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_wrapper", err_out, || {
        // SAFETY: the handle and array contracts.
        let (m, argv) = unsafe { (machine(m)?, strings(argv, n, "argv")?) };
        m.vm.set_wrapper(argv);
        Ok(())
    })
}

/// Names the machine: the prefix of its log file (`<name>.log`) and socket files. Default
/// `qm-<pid>-<n>`. `QM_ERR_INVALID` only for a name that could leave the directory: empty,
/// `.` or `..` as the whole name, with `/` (or bad UTF-8).
#[no_mangle]
pub unsafe extern "C" fn qm_set_name(
    m: *mut qm_machine,
    name: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_name", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, name) = unsafe { (machine(m)?, string(name, "name")?) };
        m.vm.set_name(name)
    })
}

/// Sets the directory under which the machine's temporary directory is created (default
/// `/var/tmp`). Takes effect when the temporary directory is first created.
#[no_mangle]
pub unsafe extern "C" fn qm_set_base_temp_dir(
    m: *mut qm_machine,
    dir: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_base_temp_dir", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, dir) = unsafe { (machine(m)?, string(dir, "dir")?) };
        m.vm.set_base_temp_dir(dir);
        Ok(())
    })
}

/// Sets the directory for socket files qm names itself (default: the temporary directory).
#[no_mangle]
pub unsafe extern "C" fn qm_set_sock_dir(
    m: *mut qm_machine,
    dir: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_sock_dir", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, dir) = unsafe { (machine(m)?, string(dir, "dir")?) };
        m.vm.set_sock_dir(dir);
        Ok(())
    })
}

/// Sets the directory of `<name>.log`, QEMU's stdout and stderr, kept after shutdown (default:
/// none, the output is kept in an anonymous in-memory file). Either way `qm_get_log` returns
/// it after a shutdown or a failed launch.
#[no_mangle]
pub unsafe extern "C" fn qm_set_log_dir(
    m: *mut qm_machine,
    dir: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_log_dir", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, dir) = unsafe { (machine(m)?, string(dir, "dir")?) };
        m.vm.set_log_dir(dir);
        Ok(())
    })
}

/// Puts the QMP monitor on a socketpair (the default; no file is created).
#[no_mangle]
pub unsafe extern "C" fn qm_set_monitor_socketpair(
    m: *mut qm_machine,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_monitor_socketpair", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?
            .vm
            .set_monitor_address(MonitorAddress::SocketPair);
        Ok(())
    })
}

/// Puts the QMP monitor on a unix socket at `path` (borrowed; NULL: `<sock_dir>/<name>-monitor.sock`).
/// qm listens (mode 0600) and QEMU connects; the file is removed at shutdown. The path must be
/// shorter than 108 bytes (checked at launch).
#[no_mangle]
pub unsafe extern "C" fn qm_set_monitor_unix(
    m: *mut qm_machine,
    path: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_monitor_unix", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, path) = unsafe { (machine(m)?, opt_string(path, "path")?) };
        m.vm.set_monitor_address(MonitorAddress::Unix(path.map(PathBuf::from)));
        Ok(())
    })
}

/// Puts the QMP monitor on TCP: qm listens on `host` (borrowed, e.g. `"127.0.0.1"`) and `port`
/// (0: any free port) and QEMU connects.
#[no_mangle]
pub unsafe extern "C" fn qm_set_monitor_tcp(
    m: *mut qm_machine,
    host: *const c_char,
    port: u16,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_monitor_tcp", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, host) = unsafe { (machine(m)?, string(host, "host")?) };
        m.vm.set_monitor_address(MonitorAddress::Tcp {
            host: host.to_owned(),
            port,
        });
        Ok(())
    })
}

/// Kept for the seed's API; it changes nothing now: a reader thread owned by qm always reads
/// the console, so QEMU never blocks on a console nobody reads, and keeps the bytes for the
/// console waits (`qm_console_wait`), the transcript and readers of `qm_console_fd`.
#[no_mangle]
pub unsafe extern "C" fn qm_set_drain_console(
    m: *mut qm_machine,
    drain: bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_drain_console", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.set_drain_console(drain);
        Ok(())
    })
}

/// Writes every console byte to the file at `path` (borrowed; created mode 0600 if missing,
/// truncated at each launch); NULL turns the console log off.
#[no_mangle]
pub unsafe extern "C" fn qm_set_console_log(
    m: *mut qm_machine,
    path: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_console_log", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, path) = unsafe { (machine(m)?, opt_string(path, "path")?) };
        m.vm.set_console_log(path.map(PathBuf::from));
        Ok(())
    })
}

/// Writes every QMP message to and from QEMU to the file at `path` (borrowed), one JSON line
/// each: `{"t": <seconds since the Unix epoch, a float>, "dir": "out"|"in"|"event", "msg":
/// <the message>}` (`out`: sent by qm; `in`: the greeting and replies; `event`: QEMU's
/// events). NULL turns it off (the default). The file is opened at each launch (created mode
/// 0600, appended to; a launch fails with `QM_ERR_LAUNCH` if it cannot be opened).
#[no_mangle]
pub unsafe extern "C" fn qm_set_qmp_transcript(
    m: *mut qm_machine,
    path: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_qmp_transcript", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, path) = unsafe { (machine(m)?, opt_string(path, "path")?) };
        m.vm.set_qmp_transcript(path.map(PathBuf::from));
        Ok(())
    })
}

/// Sets the QMP timer, in milliseconds, or `QM_WAIT_FOREVER`: it bounds the QMP handshake at
/// launch and is what `QM_WAIT_DEFAULT` means for `qm_qmp` and `qm_cmd`. Default 30000.
#[no_mangle]
pub unsafe extern "C" fn qm_set_qmp_timer(
    m: *mut qm_machine,
    timeout_ms: i64,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_qmp_timer", err_out, || {
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        let timer = millis(timeout_ms, "timeout_ms")?;
        m.vm.set_qmp_timer(timer);
        Ok(())
    })
}

/// Stores the QMP timer (`qm_set_qmp_timer`) in `*timeout_ms_out`, in milliseconds (rounded
/// up), or `QM_WAIT_FOREVER` when it has no limit.
#[no_mangle]
pub unsafe extern "C" fn qm_get_qmp_timer(
    m: *const qm_machine,
    timeout_ms_out: *mut i64,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_get_qmp_timer", err_out, || {
        let out = out(timeout_ms_out, "timeout_ms_out")?;
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        out.write(match m.vm.qmp_timer() {
            None => boundary::FOREVER,
            Some(t) => i64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX),
        });
        Ok(())
    })
}

/// Turns the QMP monitor on (the default) or off. Without it, QMP calls fail with
/// `QM_ERR_STATE` and a graceful shutdown sends SIGTERM.
#[no_mangle]
pub unsafe extern "C" fn qm_set_qmp_monitor(
    m: *mut qm_machine,
    enabled: bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_qmp_monitor", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.set_qmp_monitor(enabled);
        Ok(())
    })
}

/// Adds `-machine TYPE` (`machine_type` borrowed, e.g. `"none"`, `"pc"`, `"q35"`).
#[no_mangle]
pub unsafe extern "C" fn qm_set_machine(
    m: *mut qm_machine,
    machine_type: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_machine", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, machine_type) = unsafe { (machine(m)?, string(machine_type, "machine_type")?) };
        m.vm.set_machine(machine_type);
        Ok(())
    })
}

/// Adds a console on a socketpair (see `qm_console_fd`): `-serial chardev:console`, or with a
/// `device_type` (borrowed, e.g. `"isa-serial"`; NULL for the default serial port)
/// `-device TYPE,chardev=console`. An `index` above 0 first adds that many `-serial null`.
#[no_mangle]
pub unsafe extern "C" fn qm_set_console(
    m: *mut qm_machine,
    device_type: *const c_char,
    index: u32,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_console", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, device) = unsafe { (machine(m)?, opt_string(device_type, "device_type")?) };
        m.vm.set_console(device, index as usize);
        Ok(())
    })
}

/// Adds an unused `-monitor null`.
#[no_mangle]
pub unsafe extern "C" fn qm_add_monitor_null(
    m: *mut qm_machine,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_add_monitor_null", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.add_monitor_null();
        Ok(())
    })
}

/// Passes the open descriptor `fd` to QEMU as `-add-fd fd=FD,set=FDSET,opaque=OPAQUE[,OPTS]`
/// (`opaque` borrowed; `opts` borrowed or NULL for none). QEMU inherits it under the same
/// number. The caller keeps ownership and must keep it open until `qm_launch` returns.
/// `QM_ERR_INVALID` when `fd` is not an open descriptor.
#[no_mangle]
pub unsafe extern "C" fn qm_add_fd(
    m: *mut qm_machine,
    fd: c_int,
    fdset: u32,
    opaque: *const c_char,
    opts: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_add_fd", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, opaque, opts) = unsafe {
            (
                machine(m)?,
                string(opaque, "opaque")?,
                opt_string(opts, "opts")?,
            )
        };
        let fd = open_fd(fd, "fd")?;
        m.vm.add_fd(fd, fdset, opaque, opts.unwrap_or(""));
        Ok(())
    })
}

/// Caps the size of one message from QEMU, in bytes (default 64 MiB; values under 1024 count
/// as 1024). A larger message fails the connection with `QM_ERR_PROTOCOL`.
#[no_mangle]
pub unsafe extern "C" fn qm_set_max_message_size(
    m: *mut qm_machine,
    bytes: usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_max_message_size", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.set_max_message_size(bytes);
        Ok(())
    })
}

// ---- launch ---------------------------------------------------------------------------------

/// Starts QEMU and, unless QMP is off, connects and negotiates QMP.
///
/// Blocks until QMP is up, at most `timeout_ms` milliseconds (`QM_WAIT_DEFAULT`: the QMP timer,
/// `qm_set_qmp_timer`; `QM_WAIT_FOREVER`), or until `cancel` (may be NULL) fires; returns at
/// once when QEMU exits early. A token that had fired fails with `QM_ERR_INTERRUPTED`, launching
/// nothing. `QM_ERR_STATE` when already launched. Any other failure is `QM_ERR_LAUNCH`, whose
/// error object has QEMU's exit code (`qm_error_exit_code`), the command line and QEMU's output,
/// and the cause (`qm_error_cause`); by then no process is left and everything the launch
/// created is removed, and the machine can be launched again.
#[no_mangle]
pub unsafe extern "C" fn qm_launch(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_launch", err_out, || {
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        m.vm.launch_with(wait)
    })
}

/// Prepares the next launch without starting QEMU: creates what `qm_launch` creates before
/// starting it (the monitor socketpair or listener, the console socketpair, QEMU's log) and
/// stores in `*base_args_out` (owned: free with `qm_string_free`) the arguments qm puts between
/// the binary and the extra arguments, as a JSON array of strings, e.g.
/// `["-display","none","-vga","none","-chardev","socket,id=mon,fd=5",
/// "-mon","chardev=mon,mode=control"]`. The `fd=N` numbers are the descriptors QEMU will
/// inherit, under those numbers. Never blocks on QEMU.
///
/// The run uses the configuration as of this call. Calling it again while prepared returns the
/// same array. `qm_launch_argv` or `qm_launch` start QEMU with what was prepared;
/// `qm_launch_abort`, `qm_shutdown`, `qm_kill`, `qm_wait` and `qm_free` release it. A new
/// prepare forgets the last run's exit code, pid, command line and log. `QM_ERR_STATE` when
/// launched; any other failure is `QM_ERR_LAUNCH` as for `qm_launch`, with nothing left over.
#[no_mangle]
pub unsafe extern "C" fn qm_launch_prepare(
    m: *mut qm_machine,
    base_args_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_launch_prepare", err_out, || {
        let out = out(base_args_out, "base_args_out")?;
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        let base = m.vm.prepare_launch()?;
        out.write_string(Value::from(base).to_string());
        Ok(())
    })
}

/// Starts `argv` (`n` borrowed UTF-8 strings, `n` > 0; `argv[0]` looked up in `PATH`; never a
/// shell) exactly as given instead of the command line `qm_launch` builds, then connects and
/// negotiates QMP as `qm_launch` does: same `timeout_ms` and `cancel` (may be NULL), same
/// errors, same cleanup on `QM_ERR_LAUNCH`. Prepares first when `qm_launch_prepare` was not
/// called. `qm_get_command_line` then returns `argv`.
///
/// QEMU inherits the prepared descriptors, those of `qm_add_fd`, and `extra_fds` (`n_fds`
/// borrowed open descriptors, each 3 or above, kept open by the caller until the call returns;
/// NULL when `n_fds` is 0) under their numbers; nothing else. `QM_ERR_INVALID` (a prepared
/// launch stays prepared) for an empty or non-UTF-8 `argv`, or a bad descriptor;
/// `QM_ERR_STATE` when launched.
#[no_mangle]
pub unsafe extern "C" fn qm_launch_argv(
    m: *mut qm_machine,
    argv: *const *const c_char,
    n: usize,
    extra_fds: *const c_int,
    n_fds: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_launch_argv", err_out, || {
        // SAFETY: the handle, array and token contracts.
        let (m, argv, wait) = unsafe {
            (
                machine(m)?,
                strings(argv, n, "argv")?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let raw: &[c_int] = if n_fds == 0 {
            &[]
        } else if extra_fds.is_null() {
            return Err(Error::Invalid(format!(
                "extra_fds is NULL but its length is {n_fds}"
            )));
        } else {
            // SAFETY: not NULL; the caller promises `n_fds` readable ints.
            unsafe { std::slice::from_raw_parts(extra_fds, n_fds) }
        };
        let fds = raw
            .iter()
            .enumerate()
            .map(|(i, &fd)| open_fd(fd, &format!("extra_fds[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        m.vm.launch_argv(argv, &fds, wait)
    })
}

/// Releases what `qm_launch_prepare` created (descriptors, socket files, the log, the temporary
/// directory) when the caller gives up before `qm_launch_argv`. Does nothing when not
/// prepared; `QM_ERR_STATE` when launched. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_launch_abort(
    m: *mut qm_machine,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_launch_abort", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.abort_launch()
    })
}

// ---- QMP --------------------------------------------------------------------------------------

/// Sends a QMP command and returns its response.
///
/// # Safety
/// The pointer contracts of `qm_qmp`.
unsafe fn execute(
    m: *mut qm_machine,
    cmd: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
) -> Result<Value> {
    // SAFETY: the handle, string and token contracts.
    let (m, cmd, args) = unsafe {
        (
            machine(m)?,
            string(cmd, "cmd")?,
            opt_json_object(args_json, "args_json")?,
        )
    };
    // SAFETY: the token contract.
    let wait = unsafe { cancel::wait(timeout_ms, cancel) }?;
    m.vm.qmp_with(cmd, args.as_ref(), wait)
}

/// Runs the QMP command `cmd` (borrowed) with the arguments `args_json` (borrowed: a JSON
/// object, or NULL / `"null"` for none; sent as it is) and stores QEMU's raw response, a JSON
/// object `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`, in `*response_out`
/// (owned: free with `qm_string_free`). A QMP error response is a success here.
///
/// Blocks until the reply, at most `timeout_ms` milliseconds (`QM_WAIT_DEFAULT`: the QMP timer;
/// `QM_WAIT_FOREVER`), or until `cancel` (may be NULL) fires. Any number of threads may run
/// commands on one machine at once. Errors: `QM_ERR_STATE` (not launched, or QMP off),
/// `QM_ERR_TIMEOUT`, `QM_ERR_INTERRUPTED`, `QM_ERR_DISCONNECTED`, `QM_ERR_INVALID`,
/// `QM_ERR_PROTOCOL`. A reply that arrives after a timeout is dropped; the connection stays
/// usable. `timeout_ms` 0 is `QM_ERR_INVALID` and nothing is sent: 0 means "never block", and
/// a command always waits for its reply.
///
/// Another thread's command stuck in a full socket (QEMU not reading) never delays this one:
/// its timeout and `cancel` hold. A command that times out (or is cancelled) before any of it
/// was sent is withdrawn and never reaches QEMU (the message says "nothing was sent"); one
/// that was partly or wholly sent may still run, and its reply is dropped.
#[no_mangle]
pub unsafe extern "C" fn qm_qmp(
    m: *mut qm_machine,
    cmd: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    response_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_qmp", err_out, || {
        let out = out(response_out, "response_out")?;
        // SAFETY: forwarded contracts.
        let response = unsafe { execute(m, cmd, args_json, timeout_ms, cancel) }?;
        out.write_json(Some(&response));
        Ok(())
    })
}

/// Like `qm_qmp`, but stores only the value of `return` as JSON in `*return_out` (owned: free
/// with `qm_string_free`; e.g. `{}` or `{"status": "running", ...}`), and turns an error response
/// into `QM_ERR_QMP` with its class and description on the error object
/// (`qm_error_qmp_class`, `qm_error_qmp_desc`).
#[no_mangle]
pub unsafe extern "C" fn qm_cmd(
    m: *mut qm_machine,
    cmd: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    return_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_cmd", err_out, || {
        let out = out(return_out, "return_out")?;
        // SAFETY: forwarded contracts.
        let response = unsafe { execute(m, cmd, args_json, timeout_ms, cancel) }?;
        let value = crate::qmp::into_return(response)?;
        out.write_json(Some(&value));
        Ok(())
    })
}

/// Sends the open descriptor `fd` (borrowed; the caller keeps it) to QEMU over the QMP socket
/// with SCM_RIGHTS, for a following `getfd` or `add-fd` command, which take the descriptor that
/// arrived last. The monitor must be a unix socket or socketpair (the default).
/// `QM_ERR_INVALID` when `fd` is not open; `QM_ERR_STATE` when not launched. Sent in order
/// with the commands of every thread, waiting at most the QMP timer for room in the socket
/// (`QM_ERR_TIMEOUT`: it was not sent).
///
/// Two threads that each send a descriptor and then run `getfd`/`add-fd` must not interleave:
/// serialise such pairs.
#[no_mangle]
pub unsafe extern "C" fn qm_send_fd_scm(
    m: *mut qm_machine,
    fd: c_int,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_send_fd_scm", err_out, || {
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        let fd = open_fd(fd, "fd")?;
        m.vm.send_fd_scm(fd)
    })
}

/// Opens the file at `path` (borrowed) read-only and sends it with `qm_send_fd_scm`; qm closes
/// its descriptor afterwards. `QM_ERR_IO` when the file cannot be opened.
#[no_mangle]
pub unsafe extern "C" fn qm_send_file_scm(
    m: *mut qm_machine,
    path: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_send_file_scm", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, path) = unsafe { (machine(m)?, string(path, "path")?) };
        m.vm.send_file_scm(Path::new(path))
    })
}

// ---- events -------------------------------------------------------------------------------------

/// Takes the oldest queued QMP event and stores it as a JSON object (`{"event": "STOP",
/// "data": ..., "timestamp": ...}`) in `*event_out` (owned: free with `qm_string_free`).
///
/// `timeout_ms` 0 only looks: when no event is queued, `*event_out` is set to NULL and the call
/// succeeds (also after the connection closed). Otherwise it blocks until an event arrives, at
/// most `timeout_ms` (or `QM_WAIT_FOREVER`), failing with `QM_ERR_TIMEOUT`, or until `cancel`
/// (may be NULL) fires. Events received before a shutdown stay readable after it; before the
/// first launch this is `QM_ERR_STATE`.
#[no_mangle]
pub unsafe extern "C" fn qm_event_get(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    event_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_event_get", err_out, || {
        let out = out(event_out, "event_out")?;
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        let event = m.vm.get_qmp_event(wait)?;
        out.write_json(event.as_ref());
        Ok(())
    })
}

/// Takes every queued event and stores them, oldest first, as a JSON array in
/// `*events_json_array_out` (owned: free with `qm_string_free`). With `timeout_ms` 0 the array
/// may be empty (`[]`); otherwise it waits for at least one event as `qm_event_get` does.
#[no_mangle]
pub unsafe extern "C" fn qm_events_get(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    events_json_array_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_events_get", err_out, || {
        let out = out(events_json_array_out, "events_json_array_out")?;
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        // Built from the queued texts, never a parsed tree per event (issue #19).
        out.write_string(m.vm.get_qmp_events_json(wait)?);
        Ok(())
    })
}

/// `qm_set_max_queued_events` value: no cap (the default); events are never dropped.
pub const QM_EVENTS_UNLIMITED: i64 = -1;

/// Caps the number of queued, unread QMP events at `max_events` (>= 0), or
/// `QM_EVENTS_UNLIMITED` (the default: events are never dropped, as in QEMU's Python
/// `QEMUMachine`). Applies at once and to later launches; other negative values are
/// `QM_ERR_INVALID`.
///
/// When an event arrives and `max_events` are queued, the oldest is dropped to make room (a
/// caller waiting for an event waits for one yet to come). The next call that reads events
/// (`qm_event_get`, `qm_events_get`, `qm_event_wait`, `qm_events_wait`), or one already
/// waiting, fails once with `QM_ERR_EVENTS_DROPPED`; the calls after it read the events that
/// were kept. `qm_dropped_events` counts the drops.
#[no_mangle]
pub unsafe extern "C" fn qm_set_max_queued_events(
    m: *mut qm_machine,
    max_events: i64,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_max_queued_events", err_out, || {
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        let max = match max_events {
            QM_EVENTS_UNLIMITED => None,
            n if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX - 1)),
            n => {
                return Err(Error::Invalid(format!(
                    "max_events is {n}: use a count >= 0 or QM_EVENTS_UNLIMITED (-1)"
                )))
            }
        };
        m.vm.set_max_queued_events(max);
        Ok(())
    })
}

/// How many QMP events the cap of `qm_set_max_queued_events` dropped since the last launch;
/// 0 for a NULL `m`. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_dropped_events(m: *const qm_machine) -> u64 {
    guard(0, || {
        // SAFETY: NULL or a live handle.
        unsafe { m.as_ref() }.map_or(0, |m| m.vm.dropped_events())
    })
}

/// Drops every queued event. Never blocks; does nothing before the first launch.
#[no_mangle]
pub unsafe extern "C" fn qm_events_clear(
    m: *mut qm_machine,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_events_clear", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.clear_events();
        Ok(())
    })
}

/// Waits for the first event called `name` (borrowed) that matches `match_json` (borrowed: a
/// JSON object, or NULL / `"null"` for any; see `qm_event_match`), takes it out of the queue and
/// stores it as a JSON object in `*event_out` (owned: free with `qm_string_free`). Queued
/// events are searched first; events that do not match stay queued, in order.
///
/// Blocking as for `qm_event_get`: with `timeout_ms` 0, `*event_out` is set to NULL when no
/// queued event matches; a longer wait fails with `QM_ERR_TIMEOUT`. `cancel` (may be NULL)
/// interrupts it from another thread with `QM_ERR_INTERRUPTED`.
#[no_mangle]
pub unsafe extern "C" fn qm_event_wait(
    m: *mut qm_machine,
    name: *const c_char,
    match_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    event_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_event_wait", err_out, || {
        let out = out(event_out, "event_out")?;
        // SAFETY: the handle, string and token contracts.
        let (m, name, filter, wait) = unsafe {
            (
                machine(m)?,
                string(name, "name")?,
                opt_json_object(match_json, "match_json")?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let event = m.vm.event_wait(name, filter.as_ref(), wait)?;
        out.write_json(event.as_ref());
        Ok(())
    })
}

/// Parses `[{"name": "STOP"}, {"name": "RESET", "match": {...}}, ...]`.
fn parse_filters(text: &str) -> Result<Vec<(String, Option<Value>)>> {
    let bad = |why: String| Error::Invalid(format!("filters_json: {why}"));
    let Value::Array(items) = boundary::json(text, "filters_json")? else {
        return Err(bad(
            "must be a JSON array of {\"name\": ..., \"match\": ...} objects".into(),
        ));
    };
    if items.is_empty() {
        return Err(bad("the array is empty; give at least one filter".into()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(mut obj) = item else {
                return Err(bad(format!(
                    "element {i} is {}, not an object",
                    kind(&item)
                )));
            };
            if let Some(key) = obj.keys().find(|k| *k != "name" && *k != "match") {
                return Err(bad(format!("element {i} has an unknown key {key:?}")));
            }
            let name = match obj.remove("name") {
                Some(Value::String(name)) => name,
                _ => return Err(bad(format!("element {i} needs a string \"name\""))),
            };
            let filter = match obj.remove("match") {
                None | Some(Value::Null) => None,
                Some(v @ Value::Object(_)) => Some(v),
                Some(other) => {
                    return Err(bad(format!(
                        "element {i}: \"match\" is {}, not an object or null",
                        kind(&other)
                    )))
                }
            };
            Ok((name, filter))
        })
        .collect()
}

/// Like `qm_event_wait`, for the first event that matches any of several filters:
/// `filters_json` (borrowed) is a non-empty JSON array of objects
/// `{"name": "EVENT", "match": {...}}` (`"match"` optional, as `match_json`).
#[no_mangle]
pub unsafe extern "C" fn qm_events_wait(
    m: *mut qm_machine,
    filters_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    event_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_events_wait", err_out, || {
        let out = out(event_out, "event_out")?;
        // SAFETY: the handle, string and token contracts.
        let (m, filters, wait) = unsafe {
            (
                machine(m)?,
                parse_filters(string(filters_json, "filters_json")?)?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let pairs: Vec<(&str, Option<&Value>)> = filters
            .iter()
            .map(|(name, filter)| (name.as_str(), filter.as_ref()))
            .collect();
        let event = m.vm.events_wait(&pairs, wait)?;
        out.write_json(event.as_ref());
        Ok(())
    })
}

// ---- shutdown ----------------------------------------------------------------------------------

/// Shuts QEMU down. Gracefully (`hard` false): `quit` over QMP (SIGTERM without QMP), then
/// waits for QEMU to exit, at most `timeout_ms` (`QM_WAIT_DEFAULT`: 30 s; `QM_WAIT_FOREVER`);
/// if it does not exit in time, or `cancel` (may be NULL) fires meanwhile or had fired before
/// the call, QEMU is killed and
/// the call fails with `QM_ERR_ABNORMAL_SHUTDOWN`. Hard (`hard` true): SIGKILL at once
/// (`timeout_ms` is then ignored, but must be valid).
///
/// Cleanup always runs (console closed, temp dir and socket files removed, log read back). A
/// machine that is not launched (never, or already shut down) is left alone and the call
/// succeeds, so a second shutdown is harmless. Calls blocked on the machine in other threads
/// fail with `QM_ERR_DISCONNECTED`.
#[no_mangle]
pub unsafe extern "C" fn qm_shutdown(
    m: *mut qm_machine,
    hard: bool,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_shutdown", err_out, || {
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        if hard {
            m.vm.kill()
        } else {
            m.vm.shutdown(wait)
        }
    })
}

/// Kills QEMU with SIGKILL, reaps it and cleans up; the same as `qm_shutdown(m, true, ...)`.
/// Blocks until QEMU is gone (normally milliseconds). Succeeds when not launched.
#[no_mangle]
pub unsafe extern "C" fn qm_kill(m: *mut qm_machine, err_out: *mut *mut qm_error) -> qm_status {
    call("qm_kill", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.kill()
    })
}

/// Waits for QEMU to exit by itself (e.g. the guest powered off), at most `timeout_ms`
/// (`QM_WAIT_DEFAULT`: 30 s; `QM_WAIT_FOREVER`), then cleans up. When it does not exit in time
/// or `cancel` (may be NULL) fires (or had fired), QEMU is killed and the call fails with
/// `QM_ERR_ABNORMAL_SHUTDOWN`. Succeeds at once when not launched.
#[no_mangle]
pub unsafe extern "C" fn qm_wait(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_wait", err_out, || {
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        m.vm.wait(wait)
    })
}

// ---- state ------------------------------------------------------------------------------------

/// True while QEMU runs (false for NULL). Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_is_running(m: *const qm_machine) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live handle.
        unsafe { m.as_ref() }.is_some_and(|m| m.vm.is_running())
    })
}

/// QEMU's process id while it runs; -1 when it does not (or for NULL). Never blocks. Under a
/// wrapper: QEMU's own pid when qm found exactly one process of the launch's process group
/// running the QEMU binary once QMP was up; otherwise the wrapper's.
#[no_mangle]
pub unsafe extern "C" fn qm_pid(m: *const qm_machine) -> i64 {
    guard(-1, || {
        // SAFETY: NULL or a live handle.
        unsafe { m.as_ref() }
            .and_then(|m| m.vm.pid())
            .map_or(-1, i64::from)
    })
}

/// The process id of the last run's QEMU, while it runs and after it exited (unlike `qm_pid`),
/// until the next launch is prepared; -1 before any process was started, when the last launch
/// failed before starting one, and for NULL. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_last_pid(m: *const qm_machine) -> i64 {
    guard(-1, || {
        // SAFETY: NULL or a live handle.
        unsafe { m.as_ref() }
            .and_then(|m| m.vm.last_pid())
            .map_or(-1, i64::from)
    })
}

/// Once QEMU has exited (after a shutdown, a wait, or a failed launch where it ran): stores its
/// exit status in `*code_out` (when not NULL; negative: killed by that signal) and returns
/// true. Returns false while it runs, before a launch, and for a NULL `m`. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_exit_code(m: *const qm_machine, code_out: *mut c_int) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live handle.
        let Some(code) = unsafe { m.as_ref() }.and_then(|m| m.vm.exitcode()) else {
            return false;
        };
        if !code_out.is_null() {
            // SAFETY: not NULL; the caller promises a writable int.
            unsafe { code_out.write(code) };
        }
        true
    })
}

/// Stores a getter's string result.
///
/// # Safety
/// The handle contract for `m`.
unsafe fn get_string(
    (function, out_name): (&'static str, &str),
    m: *const qm_machine,
    out_ptr: *mut *mut c_char,
    get: impl FnOnce(&Machine) -> Result<Option<String>>,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call(function, err_out, || {
        let out = out(out_ptr, out_name)?;
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        match get(&m.vm)? {
            Some(s) => out.write_string(s),
            None => out.write(std::ptr::null_mut()),
        }
        Ok(())
    })
}

/// What QEMU wrote to stdout and stderr during the last run, read back after a shutdown or a
/// failed launch, in `*log_out` (owned: free with `qm_string_free`). While QEMU runs, and
/// before any run, there is no log yet: `*log_out` is set to NULL and the call succeeds
/// (`qm_get_log_so_far` reads the output while QEMU runs).
#[no_mangle]
pub unsafe extern "C" fn qm_get_log(
    m: *const qm_machine,
    log_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_log", "log_out"),
            m,
            log_out,
            |vm| Ok(vm.get_log()),
            err_out,
        )
    }
}

/// What QEMU has written to stdout and stderr so far, in `*log_out` (owned: free with
/// `qm_string_free`): while QEMU runs, its output up to now (read afresh on each call); after a
/// shutdown or a failed launch, the same as `qm_get_log`; NULL before any launch.
#[no_mangle]
pub unsafe extern "C" fn qm_get_log_so_far(
    m: *const qm_machine,
    log_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_log_so_far", "log_out"),
            m,
            log_out,
            |vm| Ok(vm.log_so_far()),
            err_out,
        )
    }
}

/// The machine's temporary directory (mode 0700) in `*dir_out` (owned). It is created on first
/// use (so this may fail with `QM_ERR_IO`) and removed at shutdown.
#[no_mangle]
pub unsafe extern "C" fn qm_get_temp_dir(
    m: *const qm_machine,
    dir_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_temp_dir", "dir_out"),
            m,
            dir_out,
            |vm| Ok(Some(path_string(&vm.temp_dir()?))),
            err_out,
        )
    }
}

/// The directory of the log file in `*dir_out` (owned): the one set with `qm_set_log_dir`, or
/// NULL when none was set (QEMU's output is then kept in memory; `qm_get_log` has it).
#[no_mangle]
pub unsafe extern "C" fn qm_get_log_dir(
    m: *const qm_machine,
    dir_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_log_dir", "dir_out"),
            m,
            dir_out,
            |vm| Ok(vm.log_dir().map(|dir| path_string(&dir))),
            err_out,
        )
    }
}

/// The directory of socket files in `*dir_out` (owned): the one set with `qm_set_sock_dir`, or
/// the temporary directory (created on first use).
#[no_mangle]
pub unsafe extern "C" fn qm_get_sock_dir(
    m: *const qm_machine,
    dir_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_sock_dir", "dir_out"),
            m,
            dir_out,
            |vm| Ok(Some(path_string(&vm.sock_dir()?))),
            err_out,
        )
    }
}

/// The machine's name in `*name_out` (owned).
#[no_mangle]
pub unsafe extern "C" fn qm_get_name(
    m: *const qm_machine,
    name_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_name", "name_out"),
            m,
            name_out,
            |vm| Ok(Some(vm.name())),
            err_out,
        )
    }
}

/// The QEMU binary given to `qm_new` in `*binary_out` (owned).
#[no_mangle]
pub unsafe extern "C" fn qm_get_binary(
    m: *const qm_machine,
    binary_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_binary", "binary_out"),
            m,
            binary_out,
            |vm| Ok(Some(vm.binary())),
            err_out,
        )
    }
}

/// The extra arguments added with `qm_add_args` (and `qm_add_fd`, `qm_add_monitor_null`), as a
/// JSON array of strings in `*json_array_out` (owned).
#[no_mangle]
pub unsafe extern "C" fn qm_get_args(
    m: *const qm_machine,
    json_array_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_args", "json_array_out"),
            m,
            json_array_out,
            |vm| Ok(Some(Value::from(vm.args()).to_string())),
            err_out,
        )
    }
}

/// The whole command line of the last launch (wrapper, binary, qm's arguments, extra ones) as a
/// JSON array of strings in `*json_array_out` (owned); `[]` before the first launch.
#[no_mangle]
pub unsafe extern "C" fn qm_get_command_line(
    m: *const qm_machine,
    json_array_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_command_line", "json_array_out"),
            m,
            json_array_out,
            |vm| Ok(Some(Value::from(vm.full_args()).to_string())),
            err_out,
        )
    }
}

// ---- console -----------------------------------------------------------------------------------

/// Stores the console's descriptor (a connected stream socket) in `*fd_out`. It is borrowed:
/// owned by the machine and valid until a shutdown begins (or `qm_free`); the caller may read,
/// write and poll it (and set it non-blocking) but must not close it. `QM_ERR_STATE` unless
/// `qm_set_console` was called and the machine is launched.
///
/// It is a raw copy of the console: it receives every byte the guest writes (from launch, as far
/// as the console's memory still holds it) and what is written to it goes to the guest; reading
/// it does not consume what `qm_console_wait` sees. Returns at once, even during a shutdown. Another
/// thread's shutdown may close the descriptor at any moment (and its number be reused): a
/// program that shuts down from another thread should use `qm_console_dup` instead.
#[no_mangle]
pub unsafe extern "C" fn qm_console_fd(
    m: *const qm_machine,
    fd_out: *mut c_int,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_fd", err_out, || {
        let out = out(fd_out, "fd_out")?;
        // SAFETY: the handle contract.
        let fd = unsafe { machine(m) }?.vm.console_fd()?;
        out.write(fd);
        Ok(())
    })
}

/// Stores a new descriptor for the console in `*fd_out`: a close-on-exec duplicate that the
/// caller owns and closes (it stays valid after a shutdown, then reading gives end of file).
/// `QM_ERR_STATE` unless `qm_set_console` was called and the machine is
/// launched. Returns at once, even during a shutdown.
#[no_mangle]
pub unsafe extern "C" fn qm_console_dup(
    m: *const qm_machine,
    fd_out: *mut c_int,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_dup", err_out, || {
        let out = out(fd_out, "fd_out")?;
        // SAFETY: the handle contract.
        let console = unsafe { machine(m) }?.vm.console()?;
        out.write(std::os::fd::IntoRawFd::into_raw_fd(console));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_filters;

    #[test]
    fn filters() {
        let f =
            parse_filters(r#"[{"name":"STOP"},{"name":"RESET","match":{"data":{"guest":false}}}]"#)
                .unwrap();
        assert_eq!(f.len(), 2);
        assert!(f[0].1.is_none());
        assert!(f[1].1.is_some());
        for bad in [
            "{}",
            "[]",
            "[1]",
            r#"[{"match":{}}]"#,
            r#"[{"name":1}]"#,
            r#"[{"name":"A","match":[1]}]"#,
            r#"[{"name":"A","mach":{}}]"#,
            "[",
        ] {
            assert!(parse_filters(bad).is_err(), "{bad}");
        }
    }
}
