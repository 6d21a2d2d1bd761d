//! How long a blocking call may wait, and how another thread can interrupt it.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys::EventFd;

/// The default bound of the calls that have one, unless configured otherwise: the QMP timer's
/// initial value, a shutdown's and a wait's, a guest agent call's (30 s, the seed's). The one
/// place it is written; C reads it with `qm_default_timeout_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest number of milliseconds [`millis_from_secs`] returns (2^62: far beyond any
/// useful wait, and exact in the bindings' number types).
pub const MAX_MILLIS: u64 = 1 << 62;

/// The one rule for turning seconds given as a float (Python's and the bindings' idiom) into
/// whole milliseconds: `None` for `+inf` (no limit); [`Error::Invalid`] for NaN and negative
/// values; otherwise rounded *up* to a whole millisecond, so that a positive timeout never
/// becomes 0 ("do not block"): 0.0004 s is 1 ms, 0 is 0. A product that is a whole number
/// but for the float's last bits (0.003 s × 1000 = 3.0000000000000004) stays that whole
/// number. Capped at [`MAX_MILLIS`].
pub fn millis_from_secs(secs: f64) -> Result<Option<u64>> {
    if secs.is_nan() || secs < 0.0 {
        return Err(Error::Invalid(format!(
            "{secs} seconds: a timeout is >= 0 seconds (or infinite)"
        )));
    }
    if secs.is_infinite() {
        return Ok(None);
    }
    let ms = secs * 1000.0;
    if ms >= MAX_MILLIS as f64 {
        return Ok(Some(MAX_MILLIS));
    }
    let nearest = ms.round();
    let whole = if (ms - nearest).abs() <= nearest * 4.0 * f64::EPSILON {
        nearest
    } else {
        ms.ceil()
    };
    Ok(Some(whole as u64))
}

/// The bound of a blocking call: a timeout, no limit, or the call's own default, and an optional
/// [`Cancel`].
///
/// This is the one place that decides what a bound means; the C ABI and the bindings only
/// convert to it:
/// - [`Wait::call_default`] (also `Wait::default()`, C's `QM_WAIT_DEFAULT`) is the call's own
///   default: the QMP timer for [`launch`](crate::Machine::launch) and QMP commands,
///   [`DEFAULT_SHUTDOWN_TIMEOUT`](crate::DEFAULT_SHUTDOWN_TIMEOUT) for shutdown and wait. Calls
///   without a default (event waits) refuse it with [`Error::Invalid`].
/// - [`Wait::forever`] (C's `QM_WAIT_FOREVER`, `None` as an `Option<Duration>`) has no limit.
/// - A zero timeout never blocks: it only looks at what is already there.
/// - A token that already fired fails the call with [`Error::Interrupted`] before it does
///   anything (for shutdown and wait that means "do not wait: kill QEMU").
///
/// Converts from a [`Duration`] (a timeout) and from `Option<Duration>` (`None` waits forever).
#[derive(Clone, Debug, Default)]
pub struct Wait {
    bound: Bound,
    cancel: Option<Cancel>,
    /// For a nested wait (what is left of an outer one): the outer limit, which its timeout
    /// errors name (`within 3000 ms`, not `within 2987 ms`).
    reported: Option<Duration>,
}

/// How long a [`Wait`] may last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Bound {
    /// The call's own default, resolved by [`Wait::or_default`].
    #[default]
    CallDefault,
    /// At most this long (`None`: no limit).
    Limit(Option<Duration>),
}

impl Wait {
    /// The call's own default bound (see [`Wait`]); the same as `Wait::default()`.
    pub fn call_default() -> Wait {
        Wait::default()
    }

    /// Wait as long as it takes (still interruptible through a [`Cancel`]).
    pub fn forever() -> Wait {
        Wait::from(None)
    }

    /// Wait at most `timeout`.
    pub fn timeout(timeout: Duration) -> Wait {
        Wait::from(Some(timeout))
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

    /// This wait, with the call's default resolved to `default` (`None`: no limit).
    pub(crate) fn or_default(mut self, default: Option<Duration>) -> Wait {
        if self.bound == Bound::CallDefault {
            self.bound = Bound::Limit(default);
        }
        self
    }

    /// True when this wait never blocks.
    pub(crate) fn is_no_wait(&self) -> bool {
        self.bound == Bound::Limit(Some(Duration::ZERO))
    }

    /// This wait, once [`start`](Self::start) would accept it: a call checks its wait first,
    /// so a fired token or a missing default is reported before anything else is looked at.
    pub(crate) fn checked(self) -> Result<Wait> {
        self.start()?;
        Ok(self)
    }

    /// Fixes the deadline now. Fails with [`Error::Interrupted`] when the token already fired,
    /// and with [`Error::Invalid`] when the call's default was asked of a call that has none.
    pub(crate) fn start(&self) -> Result<Deadline<'_>> {
        let Bound::Limit(timeout) = self.bound else {
            return Err(Error::Invalid(
                "this call has no default wait: give a timeout, or wait forever".into(),
            ));
        };
        if self.cancel.as_ref().is_some_and(Cancel::is_cancelled) {
            return Err(Error::Interrupted);
        }
        Ok(Deadline {
            at: timeout.map(|t| Instant::now() + t),
            limit: self.reported.or(timeout),
            cancel: self.cancel.as_ref(),
        })
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
            bound: Bound::Limit(timeout),
            cancel: None,
            reported: None,
        }
    }
}

/// A [`Wait`] whose clock has started.
pub(crate) struct Deadline<'a> {
    at: Option<Instant>,
    /// The whole bound, for error messages.
    limit: Option<Duration>,
    pub(crate) cancel: Option<&'a Cancel>,
}

impl Deadline<'static> {
    /// A deadline `timeout` from now that no token can interrupt, for qm's own bounded waits
    /// (reaping a killed QEMU).
    pub(crate) fn after(timeout: Duration) -> Deadline<'static> {
        Deadline {
            at: Some(Instant::now() + timeout),
            limit: Some(timeout),
            cancel: None,
        }
    }
}

impl Deadline<'_> {
    /// Time left; `None` means no limit. Zero once expired.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// What is left of this deadline, as a [`Wait`] for a nested call.
    pub(crate) fn to_wait(&self) -> Wait {
        Wait {
            bound: Bound::Limit(self.remaining()),
            cancel: self.cancel.cloned(),
            reported: self.limit,
        }
    }

    /// The whole bound (`None`: no limit), for a timeout's message.
    pub(crate) fn limit(&self) -> Option<Duration> {
        self.limit
    }

    /// `within N ms`: the bound, as timeout errors name it.
    pub(crate) fn within(&self) -> String {
        within(self.limit)
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.is_some_and(Cancel::is_cancelled)
    }

    /// The eventfd of the cancel token, to add to a poll set.
    pub(crate) fn cancel_fd(&self) -> Result<Option<RawFd>> {
        self.cancel.map(Cancel::fd).transpose()
    }
}

/// `within N ms` for a bound (`None`: no limit, which cannot time out but is named all the same).
pub(crate) fn within(limit: Option<Duration>) -> String {
    match limit {
        Some(d) => format!("within {} ms", d.as_millis()),
        None => "with no time limit".to_owned(),
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
    fd: OnceLock<EventFd>,
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
            fd.signal();
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
                let fd = EventFd::new()
                    .map_err(|e| Error::io("creating an eventfd for a cancel token", e))?;
                // Losing the race just drops our spare descriptor.
                let _ = self.inner.fd.set(fd);
                self.inner.fd.get().expect("set above")
            }
        };
        // Order matters: the fd exists before the flag is read, so a concurrent cancel() either
        // sees the fd and signals it, or set the flag that we see here.
        if self.is_cancelled() {
            fd.signal();
        }
        Ok(fd.raw())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up_to_whole_milliseconds() {
        let ms = |s: f64| millis_from_secs(s).unwrap();
        assert_eq!(ms(0.0), Some(0));
        assert_eq!(ms(0.0004), Some(1)); // Python truncated this to 0 ("do not block")
        assert_eq!(ms(1e-12), Some(1));
        assert_eq!(ms(0.001), Some(1));
        assert_eq!(ms(0.003), Some(3)); // 3.0000000000000004 in floats
        assert_eq!(ms(0.0015), Some(2));
        assert_eq!(ms(1.1), Some(1100));
        assert_eq!(ms(30.0), Some(30_000));
        assert_eq!(ms(1e300), Some(MAX_MILLIS));
        assert_eq!(ms(f64::INFINITY), None);
        assert!(millis_from_secs(-0.5).is_err());
        assert!(millis_from_secs(f64::NAN).is_err());
        assert!(millis_from_secs(f64::NEG_INFINITY).is_err());
    }
}
