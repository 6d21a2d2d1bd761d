//! The QEMU child process: spawning with exactly the intended descriptors, exact timed waits
//! through a pidfd, and signals that cannot hit a recycled pid.
//!
//! Without pidfds (Linux before 5.3, or valgrind, which does not know the syscall) a small
//! thread blocks in `waitid(WNOWAIT)` and signals an eventfd when the child exits: the same
//! exact wake-up, at the cost of one thread per running QEMU.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::wait::{poll, pollfd, Deadline};

/// What to start.
pub(crate) struct Spawn {
    pub argv: Vec<String>,
    /// Descriptors QEMU inherits under the same numbers; everything else is closed at exec.
    pub keep_fds: Vec<RawFd>,
    /// Receives QEMU's stdout and stderr.
    pub log: File,
}

/// A running (or exited, not yet forgotten) QEMU.
pub(crate) struct Process {
    pid: u32,
    /// Readable once the child has exited: its pidfd, or the fallback's eventfd.
    exit: ExitFd,
    child: Mutex<Child>,
    status: Mutex<Option<i32>>,
}

enum ExitFd {
    Pidfd(OwnedFd),
    Watched {
        eventfd: OwnedFd,
        watcher: Option<std::thread::JoinHandle<()>>,
    },
}

impl ExitFd {
    fn fd(&self) -> &OwnedFd {
        match self {
            ExitFd::Pidfd(fd) => fd,
            ExitFd::Watched { eventfd, .. } => eventfd,
        }
    }
}

/// A pidfd for our child `pid`, or the fallback when the kernel (or valgrind) has none.
fn exit_fd(pid: u32) -> std::io::Result<ExitFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked. Our unreaped child's
    // pid cannot be recycled, so the pidfd refers to it.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw >= 0 {
        // SAFETY: a fresh descriptor nothing else owns (pidfds are close-on-exec).
        return Ok(ExitFd::Pidfd(unsafe { OwnedFd::from_raw_fd(raw as RawFd) }));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // SAFETY: eventfd has no memory preconditions; checked below.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let signal = eventfd.try_clone()?;
    let watcher = std::thread::Builder::new()
        .name(format!("qm-wait-{pid}"))
        .spawn(move || {
            // SAFETY: siginfo_t is plain data; waitid fills it. WNOWAIT leaves the child
            // unreaped, so its pid stays ours until try_status reaps it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            loop {
                let flags = libc::WEXITED | libc::WNOWAIT;
                // SAFETY: as above.
                let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
                if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            unsafe { libc::write(signal.as_raw_fd(), (&one as *const u64).cast(), 8) };
        })?;
    Ok(ExitFd::Watched {
        eventfd,
        watcher: Some(watcher),
    })
}

type Job = (Spawn, mpsc::SyncSender<std::io::Result<Child>>);

/// Every QEMU is forked from one long-lived thread. `PR_SET_PDEATHSIG` fires when the thread
/// that forked the child ends, not the process; forking from a caller's thread would kill the
/// VM when that thread exits (a Go goroutine's OS thread, a test thread).
fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("qm-spawner".into())
            .spawn(move || {
                for (job, reply) in rx {
                    let _ = reply.send(spawn_here(job));
                }
            })
            .expect("starting the qm spawner thread");
        tx
    })
}

fn spawn_here(job: Spawn) -> std::io::Result<Child> {
    let Spawn {
        argv,
        keep_fds,
        log,
    } = job;
    let host = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid, syscall, fcntl), with no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The host may have died before prctl: then nobody would ever kill us.
            if libc::getppid() != host {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            close_on_exec_from(3);
            for &fd in &keep_fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Marks every descriptor from `first` up close-on-exec, so that descriptors other code in the
/// host left inheritable do not leak into QEMU. Async-signal-safe.
unsafe fn close_on_exec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    if libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) == 0 {
        return;
    }
    // Kernels before 5.11: walk the descriptor table up to the soft limit.
    let mut lim: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
        lim.rlim_cur.min(1 << 20) as i32
    } else {
        4096
    };
    for fd in first as i32..max {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

impl Process {
    /// Starts `spawn.argv` with stdin on /dev/null and stdout+stderr on the log.
    pub(crate) fn spawn(spawn: Spawn) -> Result<Process> {
        let program = spawn.argv[0].clone();
        let (tx, rx) = mpsc::sync_channel(1);
        spawner()
            .send((spawn, tx))
            .map_err(|_| Error::State("the qm spawner thread is gone".into()))?;
        let child = rx
            .recv()
            .map_err(|_| Error::State("the qm spawner thread is gone".into()))?
            .map_err(|e| Error::io(format!("starting {program:?}"), e))?;
        let pid = child.id();
        let exit = match exit_fd(pid) {
            Ok(exit) => exit,
            Err(err) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::io("watching QEMU's exit", err));
            }
        };
        Ok(Process {
            pid,
            exit,
            child: Mutex::new(child),
            status: Mutex::new(None),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Readable once the process has exited.
    pub(crate) fn exit_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.exit.fd().as_fd()
    }

    /// The exit status if the process has exited (reaping it), `-N` for death by signal N.
    pub(crate) fn try_status(&self) -> Option<i32> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(Some(st)) = child.try_wait() {
                *status = st.code().or_else(|| st.signal().map(|s| -s));
            }
        }
        *status
    }

    /// Waits for the exit, bounded by `deadline`; wakes the moment the process exits.
    pub(crate) fn wait(&self, deadline: &Deadline<'_>) -> Result<i32> {
        loop {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            if deadline.cancelled() {
                return Err(Error::Interrupted);
            }
            let mut fds = vec![pollfd(self.exit.fd().as_raw_fd(), libc::POLLIN)];
            if let Some(fd) = deadline.cancel_fd()? {
                fds.push(pollfd(fd, libc::POLLIN));
            }
            if poll(&mut fds, deadline.remaining())? == 0 {
                return Err(Error::Timeout(format!(
                    "waiting for QEMU (pid {}) to exit",
                    self.pid
                )));
            }
        }
    }

    /// Sends `sig` unless the process is already gone. Never hits a recycled pid: the pidfd
    /// names this process only, and without one the status lock keeps the child unreaped (so
    /// its pid ours) while the signal goes out.
    pub(crate) fn signal(&self, sig: libc::c_int) -> Result<()> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_some() {
            return Ok(());
        }
        let rc = match &self.exit {
            // SAFETY: pidfd_send_signal with a live pidfd and no siginfo.
            ExitFd::Pidfd(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill(2) on our unreaped child.
            ExitFd::Watched { .. } => (unsafe { libc::kill(self.pid as libc::pid_t, sig) }) as _,
        };
        drop(status);
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(Error::last_os(format!(
                "signalling QEMU (pid {})",
                self.pid
            )))
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The fallback watcher ends when the child exits; join it if so, never block on it.
        if let ExitFd::Watched { watcher, .. } = &mut self.exit {
            if let Some(handle) = watcher.take_if(|h| h.is_finished()) {
                let _ = handle.join();
            }
        }
    }
}
