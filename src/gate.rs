//! [`Gate`]: one holder at a time, served in arrival order, for the channels whose users must
//! not interleave (the guest agent, which answers one command at a time; sends to a console,
//! whose bytes must not mix). A waiter gives up at its deadline, when its cancel token fires,
//! or when the owner says so (a closed channel); it never sleeps past any of them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::wait::{Deadline, Wake};

/// A first-come, first-served lock with deadlines and cancellation. Keep it in an [`Arc`]: a
/// waiter's cancel token wakes it through a weak reference.
#[derive(Default)]
pub(crate) struct Gate {
    // Held only to take or give back the turn, or to sleep on `turn`; never with another lock
    // of the caller's.
    queue: Mutex<Queue>,
    turn: Condvar,
}

/// The callers waiting, in arrival order.
#[derive(Default)]
struct Queue {
    busy: bool,
    line: VecDeque<u64>,
    next_ticket: u64,
}

/// The right to go through the gate; the next caller in line gets it on drop.
pub(crate) struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.busy = false;
        // Waking costs a system call: only when someone waits.
        if !q.line.is_empty() {
            self.0.turn.notify_all();
        }
    }
}

impl Wake for Gate {
    fn wake(&self) {
        // Under the lock: ordered after a waiter's check of its token (or of `give_up`).
        let _queue = self.lock();
        self.turn.notify_all();
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this caller's turn, in arrival order. Gives up with the error of `give_up`
    /// when it returns one (checked whenever the waiter wakes: call [`Wake::wake`] after
    /// changing what it looks at), [`Error::Interrupted`] when the deadline's token fires, and
    /// `timed_out(deadline)` at the deadline.
    pub(crate) fn enter<'a>(
        self: &'a Arc<Self>,
        deadline: &Deadline<'_>,
        give_up: impl Fn() -> Option<Error>,
        timed_out: impl Fn(&Deadline<'_>) -> Error,
    ) -> Result<Pass<'a>> {
        // A fired token wakes this waiter (the token holds it weakly, only while it waits).
        let _watch = deadline.cancel.map(|c| {
            let me: std::sync::Weak<dyn Wake> = Arc::downgrade(self) as _;
            c.watch(me)
        });
        let mut q = self.lock();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.line.push_back(ticket);
        loop {
            if !q.busy && q.line.front() == Some(&ticket) {
                q.line.pop_front();
                q.busy = true;
                return Ok(Pass(self));
            }
            let err = if let Some(err) = give_up() {
                Some(err)
            } else if deadline.cancelled() {
                Some(Error::Interrupted)
            } else if deadline.remaining() == Some(Duration::ZERO) {
                Some(timed_out(deadline))
            } else {
                None
            };
            if let Some(err) = err {
                q.line.retain(|&t| t != ticket);
                drop(q);
                // The head of the line may have changed.
                self.turn.notify_all();
                return Err(err);
            }
            q = match deadline.remaining() {
                None => self.turn.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(left) => {
                    self.turn
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::{Cancel, Wait};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    fn never() -> Option<Error> {
        None
    }

    fn late(_: &Deadline<'_>) -> Error {
        Error::Timeout("late".into())
    }

    #[test]
    fn one_at_a_time_in_arrival_order() {
        let gate = Arc::new(Gate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let wait = Wait::forever();
        let deadline = wait.start().unwrap();
        let first = gate.enter(&deadline, never, late).unwrap();
        let mut threads = Vec::new();
        for i in 0..4 {
            let (g, order) = (gate.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let wait = Wait::forever();
                let deadline = wait.start().unwrap();
                let _pass = g.enter(&deadline, never, late).unwrap();
                order.lock().unwrap().push(i);
            }));
            // Each is in line before the next arrives.
            while gate.lock().line.len() < i + 1 {
                std::thread::yield_now();
            }
        }
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn gives_up_at_the_deadline_on_cancel_and_when_told() {
        let gate = Arc::new(Gate::default());
        let forever = Wait::forever();
        let d = forever.start().unwrap();
        let _held = gate.enter(&d, never, late).unwrap();

        let short = Wait::timeout(Duration::from_millis(50));
        let d = short.start().unwrap();
        let started = Instant::now();
        assert!(matches!(gate.enter(&d, never, late), Err(Error::Timeout(t)) if t == "late"));
        assert!(started.elapsed() >= Duration::from_millis(50));

        let cancel = Cancel::new();
        let (g, c) = (gate.clone(), cancel.clone());
        let waiter = std::thread::spawn(move || {
            let w = Wait::forever().cancel(&c);
            let d = w.start().unwrap();
            g.enter(&d, never, late).map(drop)
        });
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Interrupted)));

        let closed = Arc::new(AtomicBool::new(false));
        let (g, flag) = (gate.clone(), closed.clone());
        let waiter = std::thread::spawn(move || {
            let w = Wait::forever();
            let d = w.start().unwrap();
            let give_up = || {
                flag.load(Ordering::SeqCst)
                    .then(|| Error::State("closed".into()))
            };
            g.enter(&d, give_up, late).map(drop)
        });
        std::thread::sleep(Duration::from_millis(50));
        closed.store(true, Ordering::SeqCst);
        gate.wake();
        assert!(matches!(waiter.join().unwrap(), Err(Error::State(_))));
        assert!(gate.lock().line.is_empty());
    }
}
