//! The operating system, in one room: every system call qm makes goes through the small safe
//! types and functions here, so the rest of the crate has no `unsafe` and no raw `libc`.
//!
//! `nix` does the calls where it has a safe wrapper; the few it lacks (`pidfd_open`,
//! `pidfd_send_signal`, `ppoll` on raw descriptors) and the child side of a fork, which must
//! stay async-signal-safe, are written here by hand, each `unsafe` block with the reason it
//! is sound.
//!
//! - [`EventFd`]: a counter another thread signals to wake a poll (cancel tokens, the console
//!   drain, the exit watcher).
//! - [`poll`]/[`pollfd`]: waiting on several descriptors with a timeout.
//! - [`socket`]: socket pairs, a unix listener, `send`/`recv` without SIGPIPE, SCM_RIGHTS.
//! - [`exit`]: a child's exit as a readable descriptor (a pidfd, or a `waitid` thread),
//!   signals that cannot hit a recycled pid, reaping.
//! - [`spawn`]: a vfork-style clone and exec with exactly the intended descriptors, in a
//!   process group of its own.
//! - [`tree`]: the launch's process group as the unit qm owns: group signals, the watchdog
//!   that kills the groups when the host dies, finding QEMU in a wrapper's group.
//! - [`memfd`]: an anonymous in-memory file.

pub(crate) mod exit;
pub(crate) mod locate;
pub(crate) mod socket;
pub(crate) mod spawn;
pub(crate) mod tree;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::eventfd::EfdFlags;

/// Readable, for [`pollfd`].
pub(crate) const POLLIN: i16 = libc::POLLIN;
/// Writable, for [`pollfd`].
pub(crate) const POLLOUT: i16 = libc::POLLOUT;
/// Hung up (only ever reported, in `revents`).
pub(crate) const POLLHUP: i16 = libc::POLLHUP;

/// One descriptor of a [`poll`] set; `revents` says what happened.
pub(crate) type PollFd = libc::pollfd;

/// A [`PollFd`] asking for `events` on `fd`. A raw number is fine here: polling a descriptor
/// that was closed meanwhile reports `POLLNVAL`, it touches no memory.
pub(crate) fn pollfd(fd: RawFd, events: i16) -> PollFd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no limit), retrying on
/// EINTR with what is left of the timeout. Returns the number of ready descriptors (0 on
/// timeout).
pub(crate) fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> std::io::Result<usize> {
    let until = timeout.map(|t| Instant::now() + t);
    loop {
        let ts = until.map(|u| {
            let left = u.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            }
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: fds is a live, writable slice of pollfd and its length is passed with it;
        // ts_ptr is NULL or points to a timespec that outlives the call; no signal mask.
        // (nix's ppoll wants borrowed descriptors; callers here poll numbers they hold open.)
        let n = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                ts_ptr,
                std::ptr::null(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// An eventfd: a counter that one thread signals and another polls for (readable while
/// non-zero). Close-on-exec and non-blocking.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> std::io::Result<EventFd> {
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let fd = nix::sys::eventfd::EventFd::from_flags(flags)?;
        Ok(EventFd(OwnedFd::from(fd)))
    }

    /// Makes the descriptor readable. Never blocks: a counter at its maximum (EAGAIN) is
    /// readable already, so the error is ignored.
    pub(crate) fn signal(&self) {
        let _ = nix::unistd::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Resets the counter (no longer readable until signalled again). Never blocks.
    pub(crate) fn drain(&self) {
        let mut count = [0u8; 8];
        let _ = nix::unistd::read(&self.0, &mut count);
    }

    /// A second descriptor on the same counter (for a thread that signals it).
    pub(crate) fn try_clone(&self) -> std::io::Result<EventFd> {
        self.0.try_clone().map(EventFd)
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A new anonymous in-memory file (close-on-exec), named `name` for /proc.
pub(crate) fn memfd(name: &str) -> std::io::Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}
