//! How long a blocking call may wait, and how another thread can interrupt it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The bound of a blocking call: a timeout (or none: wait forever) and an optional [`Cancel`].
///
/// Converts from a [`Duration`] (a timeout) and from `Option<Duration>` (`None` waits forever).
/// A zero timeout never blocks: it only looks at what is already there.
#[derive(Clone, Debug, Default)]
pub struct Wait {
    timeout: Option<Duration>,
    cancel: Option<Cancel>,
}

impl Wait {
    /// Wait as long as it takes (still interruptible through a [`Cancel`]).
    pub fn forever() -> Wait {
        Wait::default()
    }

    /// Wait at most `timeout`.
    pub fn timeout(timeout: Duration) -> Wait {
        Wait {
            timeout: Some(timeout),
            cancel: None,
        }
    }

    /// Do not block at all.
    pub fn no_wait() -> Wait {
        Wait::timeout(Duration::ZERO)
    }

    /// Also return [`Error::Interrupted`] as soon as `cancel` fires.
    pub fn cancel(mut self, cancel: &Cancel) -> Wait {
        self.cancel = Some(cancel.clone());
        self
    }

    /// True when this wait never blocks.
    pub(crate) fn is_no_wait(&self) -> bool {
        self.timeout == Some(Duration::ZERO)
    }

    /// Fixes the deadline now.
    pub(crate) fn start(&self) -> Deadline<'_> {
        Deadline {
            at: self.timeout.map(|t| Instant::now() + t),
            cancel: self.cancel.as_ref(),
        }
    }
}

impl From<Duration> for Wait {
    fn from(timeout: Duration) -> Wait {
        Wait::timeout(timeout)
    }
}

impl From<Option<Duration>> for Wait {
    fn from(timeout: Option<Duration>) -> Wait {
        Wait {
            timeout,
            cancel: None,
        }
    }
}

/// A [`Wait`] whose clock has started.
pub(crate) struct Deadline<'a> {
    at: Option<Instant>,
    pub(crate) cancel: Option<&'a Cancel>,
}

impl Deadline<'_> {
    /// Time left; `None` means no limit. Zero once expired.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.is_some_and(Cancel::is_cancelled)
    }

    /// The eventfd of the cancel token, to add to a poll set.
    pub(crate) fn cancel_fd(&self) -> Result<Option<RawFd>> {
        self.cancel.map(Cancel::fd).transpose()
    }
}

/// Something a blocked caller sleeps on, which a [`Cancel`] must wake.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

/// A cancellation token: firing it interrupts every call waiting with it, now and later.
///
/// Cloning gives another handle to the same token. Firing is sticky: a call that starts after
/// the token fired returns [`Error::Interrupted`] at once, so there is no race between
/// "about to wait" and "cancel".
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    fired: AtomicBool,
    /// An eventfd, made only when a caller needs to poll on the token; readable once fired.
    fd: OnceLock<OwnedFd>,
    /// Callers asleep on a condition variable, to wake when the token fires.
    sleepers: Mutex<Vec<(u64, Weak<dyn Wake>)>>,
    next_sleeper: AtomicU64,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Cancel {
    /// A token that has not fired.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Fires the token: every call waiting with it returns [`Error::Interrupted`].
    pub fn cancel(&self) {
        self.inner.fired.store(true, Ordering::SeqCst);
        if let Some(fd) = self.inner.fd.get() {
            signal_eventfd(fd.as_raw_fd());
        }
        let sleepers = self
            .inner
            .sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (_, sleeper) in sleepers.iter() {
            if let Some(sleeper) = sleeper.upgrade() {
                sleeper.wake();
            }
        }
    }

    /// True once [`cancel`](Cancel::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.fired.load(Ordering::SeqCst)
    }

    fn fd(&self) -> Result<RawFd> {
        let fd = match self.inner.fd.get() {
            Some(fd) => fd,
            None => {
                // SAFETY: eventfd has no memory preconditions; the result is checked.
                let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                if raw < 0 {
                    return Err(Error::last_os("creating an eventfd for a cancel token"));
                }
                // SAFETY: raw is a fresh descriptor that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                // Losing the race just drops our spare descriptor.
                let _ = self.inner.fd.set(fd);
                self.inner.fd.get().expect("set above")
            }
        };
        // Order matters: the fd exists before the flag is read, so a concurrent cancel() either
        // sees the fd and signals it, or set the flag that we see here.
        if self.is_cancelled() {
            signal_eventfd(fd.as_raw_fd());
        }
        Ok(fd.as_raw_fd())
    }

    /// Registers a sleeper to wake on cancel until the guard drops.
    pub(crate) fn watch(&self, sleeper: Weak<dyn Wake>) -> CancelWatch<'_> {
        let id = self.inner.next_sleeper.fetch_add(1, Ordering::Relaxed);
        self.inner
            .sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, sleeper));
        CancelWatch { cancel: self, id }
    }
}

/// Unregisters a sleeper from a [`Cancel`] when dropped.
pub(crate) struct CancelWatch<'a> {
    cancel: &'a Cancel,
    id: u64,
}

impl Drop for CancelWatch<'_> {
    fn drop(&mut self) {
        self.cancel
            .inner
            .sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.id);
    }
}

fn signal_eventfd(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) is still readable: fine.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// poll(2) over `fds` until one is ready or `timeout` passes (`None`: no limit), retrying on
/// EINTR. Returns the number of ready descriptors (0 on timeout).
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> Result<usize> {
    let until = timeout.map(|t| Instant::now() + t);
    loop {
        let left = until.map(|u| u.saturating_duration_since(Instant::now()));
        let ts = left.map(|d| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: fds is a valid slice of pollfd; ts_ptr is null or points to a live timespec.
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
            return Err(Error::io("poll", err));
        }
    }
}

/// A pollfd asking for `events` on `fd`.
pub(crate) fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}
