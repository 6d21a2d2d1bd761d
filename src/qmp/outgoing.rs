//! The outgoing queue: what waits to be sent to QEMU, in order.
//!
//! A message (a command, or one byte carrying a descriptor) is queued whole and sent from the
//! front without blocking, by whichever caller finds the socket has room; the rest waits for
//! the reader to see room. A message whose caller gives up before any of it went out is taken
//! out ([`Withdrawn::NotSent`]): QEMU never sees it. One partly sent is finished before anything
//! else, so the stream never holds half a command followed by the next one.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// One message waiting to be sent.
struct Outgoing {
    id: u64,
    data: Arc<Vec<u8>>,
    /// How many bytes of `data` went out.
    sent: usize,
    /// A descriptor to pass with the data (SCM_RIGHTS).
    fd: Option<Arc<OwnedFd>>,
    /// Its caller gave up while it was being sent: drop it unless its first byte went out.
    abandoned: bool,
}

/// What sending did to a caller's message when the caller gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Withdrawn {
    /// Taken out of the queue: QEMU never sees it.
    NotSent,
    /// Partly sent: the rest follows before anything else; QEMU runs it.
    Partly,
    /// Sent, or being sent right now.
    Sent,
}

/// The front of the queue, to send without the state's lock held.
pub(super) struct Chunk {
    pub id: u64,
    pub data: Arc<Vec<u8>>,
    /// Where the unsent part starts.
    pub from: usize,
    pub fd: Option<Arc<OwnedFd>>,
}

/// What became of the front after a send.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Message `id` went out completely and left the queue.
    Done(u64),
    /// Some of it is still to send.
    More,
    /// The message sent is no longer the front (the queue was emptied meanwhile).
    Gone,
}

/// The queue and the state of sending.
///
/// Invariants: at most one caller sends at a time (`writing`), always from the front; only the
/// front may have `sent > 0`; `failed` once set stays set and the queue stays empty.
#[derive(Default)]
pub(super) struct OutQueue {
    items: VecDeque<Outgoing>,
    /// A caller is sending (without blocking) from the front.
    pub writing: bool,
    /// The last send found the socket full: wait for POLLOUT before trying again.
    pub blocked: bool,
    /// Sending failed for good (the peer is gone): every later send fails with this.
    pub failed: Option<String>,
}

impl OutQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True when a caller should send now: something waits, nobody sends, the socket had room.
    pub(super) fn ready_to_send(&self) -> bool {
        !self.items.is_empty() && !self.writing && !self.blocked
    }

    pub(super) fn push(&mut self, id: u64, data: Vec<u8>, fd: Option<OwnedFd>) {
        self.items.push_back(Outgoing {
            id,
            data: Arc::new(data),
            sent: 0,
            fd: fd.map(Arc::new),
            abandoned: false,
        });
    }

    /// What to send next.
    pub(super) fn front(&self) -> Option<Chunk> {
        self.items.front().map(|o| Chunk {
            id: o.id,
            data: o.data.clone(),
            from: o.sent,
            fd: o.fd.clone(),
        })
    }

    /// `n` more bytes of message `id` went out.
    pub(super) fn sent(&mut self, id: u64, n: usize) -> Progress {
        let Some(front) = self.items.front_mut().filter(|o| o.id == id) else {
            return Progress::Gone;
        };
        front.sent += n;
        front.abandoned = false;
        if front.sent < front.data.len() {
            return Progress::More;
        }
        self.items.pop_front();
        Progress::Done(id)
    }

    /// The socket took nothing of message `id`: it is blocked, and a front its caller
    /// abandoned is dropped if none of it went out.
    pub(super) fn full(&mut self, id: u64) {
        self.blocked = true;
        if self
            .items
            .front()
            .is_some_and(|o| o.id == id && o.sent == 0 && o.abandoned)
        {
            self.items.pop_front();
        }
    }

    /// Takes a message its caller gave up on out of the queue if none of it was sent.
    pub(super) fn withdraw(&mut self, id: u64) -> Withdrawn {
        let writing = self.writing;
        let Some(pos) = self.items.iter().position(|o| o.id == id) else {
            return Withdrawn::Sent;
        };
        let out = &mut self.items[pos];
        if out.sent > 0 {
            return Withdrawn::Partly;
        }
        if pos == 0 && writing {
            // Being sent right now: the sender drops it if the socket takes none of it.
            out.abandoned = true;
            return Withdrawn::Sent;
        }
        self.items.remove(pos);
        Withdrawn::NotSent
    }

    /// Nothing can be sent any more: empties the queue and returns the ids it held.
    pub(super) fn fail_all(&mut self, why: String) -> Vec<u64> {
        self.failed.get_or_insert(why);
        self.items.drain(..).map(|o| o.id).collect()
    }

    /// The connection ended: what waited is dropped.
    pub(super) fn clear(&mut self) {
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(ids: &[u64]) -> OutQueue {
        let mut q = OutQueue::default();
        for &id in ids {
            q.push(id, format!("cmd{id}").into_bytes(), None);
        }
        q
    }

    #[test]
    fn sends_in_order_and_finishes_a_partial_send() {
        let mut q = queue(&[1, 2]);
        let c = q.front().unwrap();
        assert_eq!((c.id, c.from), (1, 0));
        assert_eq!(q.sent(1, 2), Progress::More);
        assert_eq!(q.front().unwrap().from, 2);
        assert_eq!(q.sent(1, 2), Progress::Done(1));
        assert_eq!(q.front().unwrap().id, 2);
        assert_eq!(q.sent(7, 1), Progress::Gone);
    }

    #[test]
    fn withdrawing_never_leaves_half_a_command() {
        let mut q = queue(&[1, 2, 3]);
        assert_eq!(q.sent(1, 1), Progress::More);
        // Partly sent: it stays, to be finished.
        assert_eq!(q.withdraw(1), Withdrawn::Partly);
        // Not sent at all: taken out, QEMU never sees it.
        assert_eq!(q.withdraw(3), Withdrawn::NotSent);
        assert_eq!(q.withdraw(3), Withdrawn::Sent);
        assert_eq!(q.sent(1, 3), Progress::Done(1));
        assert_eq!(q.front().unwrap().id, 2);
    }

    #[test]
    fn a_front_abandoned_while_being_sent_goes_only_if_nothing_went_out() {
        let mut q = queue(&[1, 2]);
        q.writing = true;
        assert_eq!(q.withdraw(1), Withdrawn::Sent);
        // The socket took none of it: dropped.
        q.full(1);
        assert!(q.blocked);
        assert_eq!(q.front().unwrap().id, 2);
        // The same with one byte out: it is finished.
        assert_eq!(q.withdraw(2), Withdrawn::Sent);
        assert_eq!(q.sent(2, 1), Progress::More);
        q.full(2);
        assert_eq!(q.front().unwrap().id, 2);
    }

    #[test]
    fn failing_empties_the_queue_for_good() {
        let mut q = queue(&[4, 5]);
        assert_eq!(q.fail_all("gone".into()), vec![4, 5]);
        assert!(q.is_empty());
        assert!(!q.ready_to_send());
        q.fail_all("later".into());
        assert_eq!(q.failed.as_deref(), Some("gone"));
    }
}
