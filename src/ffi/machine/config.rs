//! Configuration of a `qm_machine`: what the next launch runs (arguments, wrapper, name,
//! directories, monitor, console, descriptors, limits). Every call here returns at once.

use std::ffi::{c_char, c_int};
use std::path::PathBuf;

use super::{machine, open_fd, qm_machine};
use crate::ffi::boundary::{self, millis, opt_string, out, string, strings};
use crate::ffi::error::{call, qm_error, qm_status};
use crate::MonitorAddress;

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
/// events). The console and the guest agent, when the machine has them, go to the same file
/// (lines with `"chan": "console"` or `"agent"`; see the README's "Record, then replay"),
/// which the fake QEMU replays. NULL turns it off (the default). The file is opened at each
/// launch (created mode 0600, appended to; a launch fails with `QM_ERR_LAUNCH` if it cannot be
/// opened).
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

/// Lets QEMU inherit every descriptor of this process that is not close-on-exec (as
/// `subprocess.Popen(close_fds=False)` does), besides those qm passes. Off by default: QEMU
/// gets qm's own descriptors for it, those of `qm_add_fd` and the `extra_fds` of
/// `qm_launch_argv`, nothing else. Takes effect at the next prepare or launch.
#[no_mangle]
pub unsafe extern "C" fn qm_set_inherit_fds(
    m: *mut qm_machine,
    inherit: bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_inherit_fds", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.set_inherit_fds(inherit);
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
