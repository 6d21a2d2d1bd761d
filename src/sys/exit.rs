//! A child's exit as a readable descriptor, signals that cannot hit a recycled pid, reaping.
//!
//! Every child qm spawns leads a process group of its own (see [`spawn`](super::spawn)), and
//! the group is what qm owns: signals go to the group, and when the leader has exited, what
//! is left of its group is killed before the leader is reaped. The unreaped leader pins the
//! group's id (a pid is not reused while a zombie holds it), so neither can hit a stranger.
//!
//! With pidfds (Linux 5.3+) the descriptor is the pidfd. Without (older kernels, or valgrind,
//! which does not know the syscall) a small thread blocks in `waitid(WNOWAIT)` and signals an
//! eventfd when the child exits: the same exact wake-up, at the cost of one thread per child.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::EventFd;

/// Readable once the child has exited (it stays unreaped until [`try_reap`]).
pub(crate) struct ExitWatch {
    pid: u32,
    kind: Kind,
}

enum Kind {
    /// Shared (`shared_fd`) rather than duplicated: one descriptor per machine, not one per user.
    Pidfd(Arc<OwnedFd>),
    Watched {
        event: EventFd,
        watcher: Option<JoinHandle<()>>,
    },
}

impl ExitWatch {
    /// Watches our unreaped child `pid` (its pid cannot be recycled until we reap it).
    pub(crate) fn new(pid: u32) -> std::io::Result<ExitWatch> {
        // SAFETY: pidfd_open takes a pid and flags and touches no memory of ours; the result
        // is checked. nix has no wrapper for it.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if raw >= 0 {
            // SAFETY: a fresh descriptor nothing else owns (pidfds are close-on-exec).
            let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
            return Ok(ExitWatch {
                pid,
                kind: Kind::Pidfd(Arc::new(fd)),
            });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOSYS) {
            return Err(err);
        }
        let event = EventFd::new()?;
        let signal = event.try_clone()?;
        let watcher = std::thread::Builder::new()
            .name(format!("qm-wait-{pid}"))
            .spawn(move || {
                // WNOWAIT leaves the child unreaped, so its pid stays ours until try_reap.
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
                while waitid(Id::Pid(Pid::from_raw(pid as i32)), flags) == Err(Errno::EINTR) {}
                signal.signal();
            })?;
        Ok(ExitWatch {
            pid,
            kind: Kind::Watched {
                event,
                watcher: Some(watcher),
            },
        })
    }

    /// Readable once the child has exited.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::Pidfd(fd) => fd.as_fd(),
            Kind::Watched { event, .. } => event.as_fd(),
        }
    }

    /// The descriptor of [`fd`](Self::fd), for a user that keeps it beyond a borrow (the QMP
    /// client): the pidfd itself, shared; a copy of the fallback's eventfd.
    pub(crate) fn shared_fd(&self) -> std::io::Result<Arc<OwnedFd>> {
        match &self.kind {
            Kind::Pidfd(fd) => Ok(fd.clone()),
            Kind::Watched { event, .. } => Ok(Arc::new(event.as_fd().try_clone_to_owned()?)),
        }
    }

    /// Sends `sig` to the child's whole process group; a group that is already gone (ESRCH)
    /// is not an error. The caller must not reap the child meanwhile (the unreaped leader is
    /// what keeps the group's id ours).
    pub(crate) fn signal(&self, sig: libc::c_int) -> std::io::Result<()> {
        super::tree::signal_group(self.pid, sig)
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        // The fallback watcher ends when the child exits; join it if so, never block on it.
        if let Kind::Watched { watcher, .. } = &mut self.kind {
            if let Some(handle) = watcher.take_if(|h| h.is_finished()) {
                let _ = handle.join();
            }
        }
    }
}

/// Reaps our child `pid` if it has exited, without blocking: its exit code, or `-N` for a
/// death by signal N. Before reaping, SIGKILLs whatever is left of its process group and
/// releases the group from the watchdog: nothing a launch started outlives its leader.
pub(crate) fn try_reap(pid: u32) -> Option<i32> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    // Look without reaping: the zombie keeps the group's id ours while the rest is killed.
    match waitid(Id::Pid(Pid::from_raw(pid as i32)), flags) {
        Ok(WaitStatus::StillAlive) => return None,
        Ok(_) => {}
        // Not ours to wait for (already reaped): nothing to do.
        Err(_) => return None,
    }
    let _ = super::tree::signal_group(pid, libc::SIGKILL);
    let mut wstatus = 0;
    // SAFETY: waitpid writes the status into a live c_int and touches nothing else. Not nix's
    // waitpid: it fails on a signal its `Signal` does not know (real-time signals), after the
    // child was reaped, which would lose the exit and leave the pid to be recycled.
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut wstatus, libc::WNOHANG) };
    (rc > 0).then(|| {
        super::tree::release(pid);
        if libc::WIFSIGNALED(wstatus) {
            -libc::WTERMSIG(wstatus)
        } else {
            libc::WEXITSTATUS(wstatus)
        }
    })
}

/// Kills our child `pid` and its group, and reaps it (blocking until it is gone).
pub(crate) fn kill_and_reap(pid: u32) {
    let _ = super::tree::signal_group(pid, libc::SIGKILL);
    while waitpid(Pid::from_raw(pid as i32), None) == Err(Errno::EINTR) {}
    super::tree::release(pid);
}
