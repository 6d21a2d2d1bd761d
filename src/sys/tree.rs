//! Owning the whole process tree a launch starts, not just the process qm spawned.
//!
//! `PR_SET_PDEATHSIG` reaches only the direct child: a wrapper (`sudo`, `systemd-run`,
//! `valgrind`, a shell script) that runs QEMU as its child, or anything QEMU itself starts,
//! would survive both an explicit kill and the death of the host. So:
//! - every launch gets a **process group** of its own (the spawned process is its leader, its
//!   pgid is its pid); every signal qm sends goes to the group, and when the leader has exited
//!   whatever is left of the group is SIGKILLed before the leader is reaped (while the leader's
//!   zombie still pins the group's id, so the id cannot name anyone else);
//! - one **watchdog** process per host (started on the first launch, a `/bin/sh` running a
//!   ten-line script, so no helper binary has to be installed) reads the ids of the live groups
//!   from a socket whose other end only the host holds. The kernel closes that end when the
//!   host dies, however it dies (SIGKILL included); the watchdog then reads end of file and
//!   SIGKILLs every group still registered. The direct child also keeps its parent-death signal.
//!
//! What escapes: a descendant that leaves the group on purpose (`setsid`, `setpgid`, a
//! daemonizing fork) is not reached (a cgroup would reach it, but needs privileges or a
//! delegated hierarchy, and still a watchdog for the host's death).
//!
//! A plain `fork` of the host that does not exec (Python's `multiprocessing`) would keep the
//! host's end of the socket open, and the watchdog would wait for that child too: an
//! `atfork` handler puts `/dev/null` in its place in the child (same number, so nothing else
//! takes it; a send there fails and the child, if it launches machines, starts a watchdog of
//! its own).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};

use super::spawn::{start as start_child, Prepared};

/// The watchdog: on end of file on stdin, SIGKILL every group registered and not released.
/// Lines: `+PGID` registers a group, `-PGID` releases it. One shell variable per group (a
/// hash table in the shell), so each line costs the same however many groups are live: a list
/// in one string made each release a pattern match over all of them (1.1 s of dash for 400
/// registrations and releases, against 16 ms now). The environment is empty, so that no
/// variable but these starts with `qm_g_`.
const SCRIPT: &str = r#"while read -r l; do
  p=${l#?}
  case $p in ''|*[!0-9]*|0|1) continue ;; esac
  case $l in
    +*) eval "qm_g_$p=1" ;;
    -*) unset "qm_g_$p" ;;
  esac
done
set | while IFS='=' read -r k v; do
  case $k in qm_g_*) kill -9 "-${k#qm_g_}" 2>/dev/null ;; esac
done
"#;

struct Watchdog {
    /// Our end of the socket; the watchdog's stdin is the other.
    sock: OwnedFd,
    pid: libc::pid_t,
}

struct State {
    watchdog: Option<Watchdog>,
    /// Groups registered, re-sent to a new watchdog if the old one died.
    groups: BTreeSet<u32>,
}

static STATE: Mutex<State> = Mutex::new(State {
    watchdog: None,
    groups: BTreeSet::new(),
});

fn lock() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `sig` to the process group `pgid` (ours: its leader is our unreaped child); a group
/// that is gone (ESRCH) is not an error.
pub(crate) fn signal_group(pgid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) with integers; a negative pid names a group.
    if unsafe { libc::kill(-(pgid as libc::pid_t), sig) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(()),
        _ => Err(err),
    }
}

/// Registers the group `pgid` with the watchdog (starting it if needed), so that the group is
/// killed if the host dies before [`release`]. An error means the group is not guarded.
pub(crate) fn guard(pgid: u32) -> io::Result<()> {
    let mut state = lock();
    state.groups.insert(pgid);
    send(&mut state, &format!("+{pgid}\n"))
}

/// Forgets the group `pgid` (once it is dead and its leader reaped).
pub(crate) fn release(pgid: u32) {
    let mut state = lock();
    if state.groups.remove(&pgid) && state.watchdog.is_some() {
        let _ = send(&mut state, &format!("-{pgid}\n"));
    }
}

/// Sends `line`; if the watchdog is gone (or not started), starts one and registers every
/// group again.
fn send(state: &mut State, line: &str) -> io::Result<()> {
    if let Some(w) = &state.watchdog {
        if write_all(w.sock.as_raw_fd(), line.as_bytes()).is_ok() {
            return Ok(());
        }
        // It died (someone killed it): reap it and start another.
        let w = state.watchdog.take().expect("checked above");
        SOCK.store(-1, Ordering::Relaxed);
        // SAFETY: reaping our own child without blocking.
        unsafe { libc::waitpid(w.pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
    let w = start()?;
    let all: String = state.groups.iter().map(|g| format!("+{g}\n")).collect();
    write_all(w.sock.as_raw_fd(), all.as_bytes())?;
    state.watchdog = Some(w);
    Ok(())
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: sends from a live buffer; MSG_NOSIGNAL: a dead reader must not SIGPIPE us.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// The host's end of the watchdog's socket, and a descriptor of /dev/null, for the atfork
/// handler (-1: none).
static SOCK: AtomicI32 = AtomicI32::new(-1);
static NULL: AtomicI32 = AtomicI32::new(-1);

/// In a forked child of the host: replace the socket with /dev/null. Async-signal-safe.
extern "C" fn in_forked_child() {
    let (sock, null) = (SOCK.load(Ordering::Relaxed), NULL.load(Ordering::Relaxed));
    if sock >= 0 && null >= 0 {
        // SAFETY: dup3 onto a descriptor this library owns in the parent; in the child its
        // number keeps naming something (/dev/null) so no later open can take it.
        unsafe { libc::dup3(null, sock, libc::O_CLOEXEC) };
    }
}

fn start() -> io::Result<Watchdog> {
    static ATFORK: Once = Once::new();
    let mut atfork_err = None;
    ATFORK.call_once(|| {
        match File::open("/dev/null") {
            // Kept for the life of the process, for the handler.
            Ok(null) => NULL.store(std::os::fd::IntoRawFd::into_raw_fd(null), Ordering::Relaxed),
            Err(err) => atfork_err = Some(err),
        }
        // SAFETY: registers a handler that only calls dup3 (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) };
    });
    if let Some(err) = atfork_err {
        return Err(err);
    }
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array; checked.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The watchdog only reads: our end is write-only, its end read-only.
    // SAFETY: shutdown on our own sockets.
    unsafe {
        libc::shutdown(ours.as_raw_fd(), libc::SHUT_RD);
        libc::shutdown(theirs.as_raw_fd(), libc::SHUT_WR);
    }
    let null = File::options().read(true).write(true).open("/dev/null")?;
    let argv: Vec<String> = ["/bin/sh", "-c", SCRIPT, "qm-watchdog"]
        .map(String::from)
        .into();
    let mut prepared = Prepared::new(
        &argv,
        [theirs.as_raw_fd(), null.as_raw_fd(), null.as_raw_fd()],
        &[],
    )?;
    prepared.clear_env();
    // Its own group, so that a terminal's ^C or a signal to the host's group does not reach
    // it, and terminal signals ignored: it must outlive the host to do its job.
    prepared.own_group = true;
    prepared.ignore = vec![
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ];
    let pid = start_child(&prepared)
        .map_err(|e| io::Error::new(e.kind(), format!("starting the qm watchdog: {e}")))?;
    SOCK.store(ours.as_raw_fd(), Ordering::Relaxed);
    Ok(Watchdog { sock: ours, pid })
}

/// The pid of the one process in group `pgid` whose executable is `program` (looked up in
/// `PATH` like `execvp`), if there is exactly one. Reads `/proc`.
pub(crate) fn find_in_group(pgid: u32, program: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let target = resolve(program)?;
    let target = std::fs::metadata(target).ok()?;
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if group_of(pid) != Some(pgid) {
            continue;
        }
        // /proc/PID/exe leads to the executable itself: compare the files, not the names.
        let Ok(exe) = std::fs::metadata(format!("/proc/{pid}/exe")) else {
            continue;
        };
        if exe.dev() == target.dev() && exe.ino() == target.ino() {
            if found.is_some() {
                return None; // two candidates: no way to tell which
            }
            found = Some(pid);
        }
    }
    found
}

/// The process group of `pid`, from `/proc/PID/stat` (the fields after the command's `)`:
/// state, ppid, pgrp).
fn group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

fn resolve(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Some(program.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
