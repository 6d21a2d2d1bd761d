//! The QEMU child process: spawning with exactly the intended descriptors, exact timed waits
//! through a pidfd, and signals that cannot hit a recycled pid.
//!
//! Without pidfds (Linux before 5.3, or valgrind, which does not know the syscall) a small
//! thread blocks in `waitid(WNOWAIT)` and signals an eventfd when the child exits: the same
//! exact wake-up, at the cost of one thread per running QEMU.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use super::{tree, vfork};
use crate::error::{Error, Result};
use crate::log::warning;
use crate::wait::{poll, pollfd, Deadline};

/// What to start.
pub(crate) struct Spawn {
    pub argv: Vec<String>,
    /// Descriptors QEMU inherits under the same numbers; everything else is closed at exec.
    pub keep_fds: Vec<RawFd>,
    /// Receives QEMU's stdout and stderr.
    pub log: File,
}

/// A running (or exited, not yet forgotten) QEMU, or the wrapper that runs it: the leader of a
/// process group that holds everything the launch started (see [`tree`]).
pub(crate) struct Process {
    /// The spawned process: the group's leader, its pgid.
    pid: u32,
    /// What [`Machine::pid`](super::Machine::pid) reports: QEMU's own pid when it is known.
    reported: AtomicU32,
    /// Readable once the child has exited: its pidfd, or the fallback's eventfd.
    exit: ExitFd,
    /// The exit status once reaped; its lock also keeps the pid from being reaped (and so
    /// recycled) while a signal goes out.
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

type Job = (
    vfork::Prepared,
    mpsc::SyncSender<std::io::Result<libc::pid_t>>,
);

/// Every QEMU is started from one long-lived thread. `PR_SET_PDEATHSIG` fires when the thread
/// that started the child ends, not the process; starting it from a caller's thread would kill
/// the VM when that thread exits (a Go goroutine's OS thread, a test thread). The spawner only
/// clones: everything that allocates (argv, environment, the `PATH` search) is prepared by
/// the launching thread, and the clone shares the host's memory instead of copying its page
/// tables ([`vfork`]), so the spawner is busy for the kernel part of one `execve` per launch.
fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("qm-spawner".into())
            .spawn(move || {
                for (job, reply) in rx {
                    let _ = reply.send(vfork::spawn(&job));
                }
            })
            .expect("starting the qm spawner thread");
        tx
    })
}

impl Process {
    /// Starts `spawn.argv` with stdin on /dev/null and stdout+stderr on the log.
    pub(crate) fn spawn(spawn: Spawn) -> Result<Process> {
        let program = spawn.argv[0].clone();
        let starting = |e| Error::io(format!("starting {program:?}"), e);
        let null = File::open("/dev/null").map_err(starting)?;
        let log = spawn.log.as_raw_fd();
        let mut job =
            vfork::Prepared::new(&spawn.argv, [null.as_raw_fd(), log, log], &spawn.keep_fds)
                .map_err(starting)?;
        job.death_signal = libc::SIGKILL;
        job.own_group = true;
        let (tx, rx) = mpsc::sync_channel(1);
        spawner()
            .send((job, tx))
            .map_err(|_| Error::State("the qm spawner thread is gone".into()))?;
        let pid = rx
            .recv()
            .map_err(|_| Error::State("the qm spawner thread is gone".into()))?
            .map_err(starting)?;
        // From here on the group is ours: any failure must kill it (see `Drop`).
        let kill_group = |pid: libc::pid_t| {
            // SAFETY: killing and reaping our own child and its group (the unreaped leader
            // pins the group's id).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        };
        if let Err(err) = tree::guard(pid) {
            warning!("{program}: the process tree is not guarded against the host's death: {err}");
        }
        let exit = match exit_fd(pid as u32) {
            Ok(exit) => exit,
            Err(err) => {
                kill_group(pid);
                tree::release(pid);
                return Err(Error::io("watching QEMU's exit", err));
            }
        };
        Ok(Process {
            pid: pid as u32,
            reported: AtomicU32::new(pid as u32),
            exit,
            status: Mutex::new(None),
        })
    }

    /// The pid to report: QEMU's own once [`identify`](Self::identify) found it under a
    /// wrapper, else the spawned process's.
    pub(crate) fn reported_pid(&self) -> u32 {
        self.reported.load(Ordering::Relaxed)
    }

    /// Under a wrapper: looks for `program` among the processes of the launch's group and
    /// reports its pid from now on, if exactly one is found.
    pub(crate) fn identify(&self, program: &str) {
        if let Some(pid) = tree::find_in_group(self.pid, program) {
            self.reported.store(pid, Ordering::Relaxed);
        }
    }

    /// Readable once the process has exited.
    pub(crate) fn exit_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.exit.fd().as_fd()
    }

    /// The exit status if the process has exited (reaping it), `-N` for death by signal N.
    /// Whatever is left of its group is killed first, while the unreaped leader still pins the
    /// group's id: nothing the launch started outlives the process qm spawned.
    pub(crate) fn try_status(&self) -> Option<i32> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            let pid = self.pid as libc::pid_t;
            // SAFETY: siginfo_t is plain data; waitid fills it. WNOWAIT: look, don't reap yet.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            // SAFETY: as above, on our own child.
            let exited = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) }
                == 0
                && unsafe { info.si_pid() } == pid;
            if exited {
                let mut wstatus = 0;
                // SAFETY: signalling the group of our unreaped child, then reaping it.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut wstatus, 0);
                }
                tree::release(pid);
                *status = Some(if libc::WIFSIGNALED(wstatus) {
                    -libc::WTERMSIG(wstatus)
                } else {
                    libc::WEXITSTATUS(wstatus)
                });
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

    /// Sends `sig` to the launch's whole process group unless its leader is already reaped.
    /// Never hits a recycled id: the status lock keeps the leader unreaped while the signal
    /// goes out, and an unreaped leader keeps its pid (the group's id) from being reused.
    pub(crate) fn signal(&self, sig: libc::c_int) -> Result<()> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on the group of our unreaped child.
        let rc = unsafe { libc::kill(-(self.pid as libc::pid_t), sig) };
        drop(status);
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(Error::last_os(format!(
                "signalling QEMU (process group {})",
                self.pid
            )))
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Never leave a group behind: a Process is normally reaped before it is dropped, but a
        // launch that failed half-way may drop it running.
        if self.try_status().is_none() {
            let _ = self.signal(libc::SIGKILL);
            let _ =
                self.wait(&crate::wait::Wait::timeout(std::time::Duration::from_secs(5)).start());
        }
        // The fallback watcher ends when the child exits; join it if so, never block on it.
        if let ExitFd::Watched { watcher, .. } = &mut self.exit {
            if let Some(handle) = watcher.take_if(|h| h.is_finished()) {
                let _ = handle.join();
            }
        }
    }
}
