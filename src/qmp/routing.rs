//! Routing what QEMU sends: a reply to the caller whose command has its id, an event to the
//! queue, the greeting to the handshake; and waking only the sleeping callers that news
//! concerns (with many threads, waking everyone for every reply costs more than QEMU's round
//! trip).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar};

use serde_json::Value;

use super::events::EventQueue;
use super::framing::{preview, Message};
use super::transcript::Transcript;
use crate::log::debug;

/// Where a command (or descriptor send) stands.
pub(super) enum Slot {
    /// In the outgoing queue, not completely sent.
    Queued,
    /// Sent; for a command, waiting for its reply.
    Sent,
    /// The reply to a command.
    Reply(Value),
    /// It could not be sent.
    Failed(String),
}

/// Where messages from QEMU go.
///
/// Invariants: a command has a slot in `replies` from when it is queued until its caller
/// leaves (whatever the outcome), a descriptor send likewise in `fd_sends`; a reply with no
/// slot, or for a slot that holds a reply already, is dropped (late after a timeout).
pub(super) struct Routes {
    /// Commands in flight. A B-tree, not a hash map: a handful of small keys, looked up a few
    /// times per command, cost less to compare than to hash (SipHash).
    pub replies: BTreeMap<u64, Slot>,
    /// Descriptor sends in flight.
    pub fd_sends: BTreeMap<u64, Slot>,
    /// The greeting, until the handshake takes it.
    pub greeting: Option<Value>,
    pub events: EventQueue,
}

/// What one round of I/O brought, for [`Sleepers::wake_concerned`].
#[derive(Default)]
pub(super) struct News {
    /// Commands answered, descriptor sends done, messages that failed.
    pub replies: Vec<u64>,
    /// Events (or the greeting) arrived.
    pub events: bool,
}

impl Routes {
    pub(super) fn new() -> Routes {
        Routes {
            replies: BTreeMap::new(),
            fd_sends: BTreeMap::new(),
            greeting: None,
            events: EventQueue::new(),
        }
    }

    /// Message `id` went out completely. A descriptor send is then done (news for its
    /// caller); a command waits for its reply, which may even have been read already.
    pub(super) fn sent(&mut self, id: u64, news: &mut News) {
        if let Some(slot @ Slot::Queued) = self.replies.get_mut(&id) {
            *slot = Slot::Sent;
        } else if let Some(slot @ Slot::Queued) = self.fd_sends.get_mut(&id) {
            *slot = Slot::Sent;
            news.replies.push(id);
        }
    }

    /// Message `id` can never be sent.
    pub(super) fn failed(&mut self, id: u64, why: &str, news: &mut News) {
        if let Some(slot) = self.replies.get_mut(&id) {
            *slot = Slot::Failed(why.to_owned());
        } else if let Some(slot) = self.fd_sends.get_mut(&id) {
            *slot = Slot::Failed(why.to_owned());
        }
        news.replies.push(id);
    }

    /// Files one message from QEMU where it belongs.
    pub(super) fn dispatch(
        &mut self,
        msg: Message,
        nickname: &str,
        transcript: &Transcript,
        news: &mut News,
    ) {
        match msg {
            Message::Event(ev) => {
                debug!("{nickname} <<< {}", ev.text());
                transcript.record("event", ev.text().as_bytes());
                self.events.push(ev);
                news.events = true;
            }
            Message::Other(msg) => {
                debug!("{nickname} <<< {msg}");
                transcript.received(&msg);
                if msg.get("return").is_some() || msg.get("error").is_some() {
                    if let Some(id) = self.file_reply(msg, nickname) {
                        news.replies.push(id);
                    }
                } else if msg.get("QMP").is_some() && self.greeting.is_none() {
                    self.greeting = Some(msg);
                    news.events = true;
                } else {
                    crate::log::warning!(
                        "{nickname}: ignoring an unexpected QMP message: {}",
                        preview(&msg.to_string())
                    );
                }
            }
        }
    }

    /// Files a reply under its command's id; returns the id, or `None` if nobody waits for it.
    fn file_reply(&mut self, msg: Value, nickname: &str) -> Option<u64> {
        let id = match msg.get("id") {
            Some(id) => id.as_u64(),
            // QEMU answers without an id only when it could not read the id; with a single
            // command in flight the reply can only be its.
            None if self.replies.len() == 1 => self.replies.keys().next().copied(),
            None => None,
        };
        match id.and_then(|id| self.replies.get_mut(&id)) {
            Some(slot @ (Slot::Sent | Slot::Queued)) => {
                *slot = Slot::Reply(msg);
                id
            }
            _ => {
                debug!(
                    "{nickname}: dropping a reply no caller waits for (late after a timeout, \
                     or unknown id): {}",
                    preview(&msg.to_string())
                );
                None
            }
        }
    }
}

/// What a sleeping caller waits for, so that only those news concern are woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Interest {
    /// The reply with this id (or the end of sending it, for a descriptor).
    Reply(u64),
    /// Events (or the greeting).
    Events,
    /// Nothing but the end of I/O (`close`).
    Idle,
}

struct Sleeper {
    interest: Interest,
    wake: Arc<Condvar>,
}

/// The callers asleep on their own condition variable, until news that concerns them (or
/// their turn to read for everyone).
#[derive(Default)]
pub(super) struct Sleepers(Vec<Sleeper>);

impl Sleepers {
    pub(super) fn add(&mut self, interest: Interest, wake: &Arc<Condvar>) {
        self.0.push(Sleeper {
            interest,
            wake: wake.clone(),
        });
    }

    pub(super) fn remove(&mut self, wake: &Arc<Condvar>) {
        self.0.retain(|s| !Arc::ptr_eq(&s.wake, wake));
    }

    /// Whether any caller is asleep here.
    pub(super) fn any(&self) -> bool {
        !self.0.is_empty()
    }

    pub(super) fn wake_all(&self) {
        for s in &self.0 {
            s.wake.notify_one();
        }
    }

    /// Wakes the owners of the replies that came, and the event waiters if events came.
    pub(super) fn wake_concerned(&self, news: &News) {
        for s in &self.0 {
            if concerns(s.interest, news) {
                s.wake.notify_one();
            }
        }
    }

    /// Wakes one sleeper to take over the reading (or to find it has nothing left to wait
    /// for, and pass the turn on when it leaves).
    pub(super) fn wake_one(&self) {
        if let Some(s) = self.0.first() {
            s.wake.notify_one();
        }
    }
}

/// True when `news` concerns a caller waiting with `interest`.
fn concerns(interest: Interest, news: &News) -> bool {
    match interest {
        Interest::Reply(id) => news.replies.contains(&id),
        Interest::Events => news.events,
        Interest::Idle => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::framing::LineBuffer;
    use serde_json::json;

    fn messages(text: &str) -> Vec<Message> {
        let mut lb = LineBuffer::new(1 << 20);
        lb.push(text.as_bytes());
        let mut out = Vec::new();
        lb.drain_messages(&mut out).unwrap();
        out
    }

    fn route(r: &mut Routes, text: &str) -> News {
        let mut news = News::default();
        for m in messages(text) {
            r.dispatch(m, "t", &Transcript::default(), &mut news);
        }
        news
    }

    #[test]
    fn replies_go_to_their_ids_and_late_ones_are_dropped() {
        let mut r = Routes::new();
        r.replies.insert(1, Slot::Sent);
        r.replies.insert(2, Slot::Queued);
        let news = route(
            &mut r,
            "{\"return\": 2, \"id\": 2}\n{\"return\": 9, \"id\": 7}\n{\"event\": \"X\"}\n",
        );
        assert_eq!(news.replies, vec![2]);
        assert!(news.events);
        assert!(matches!(&r.replies[&2], Slot::Reply(v) if v["return"] == json!(2)));
        assert!(matches!(r.replies[&1], Slot::Sent));
        assert_eq!(r.events.len(), 1);
        // A second reply for a slot that holds one already is late: dropped.
        assert!(route(&mut r, "{\"return\": 3, \"id\": 2}\n")
            .replies
            .is_empty());
    }

    #[test]
    fn a_reply_without_id_goes_to_the_only_command_in_flight() {
        let mut r = Routes::new();
        r.replies.insert(5, Slot::Sent);
        let news = route(
            &mut r,
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n",
        );
        assert_eq!(news.replies, vec![5]);
        r.replies.insert(6, Slot::Sent);
        r.replies.insert(7, Slot::Sent);
        assert!(route(&mut r, "{\"return\": {}}\n").replies.is_empty());
    }

    #[test]
    fn the_greeting_is_kept_once() {
        let mut r = Routes::new();
        assert!(route(&mut r, "{\"QMP\": {\"n\": 1}}\n").events);
        assert!(!route(&mut r, "{\"QMP\": {\"n\": 2}}\n").events);
        assert_eq!(r.greeting.unwrap()["QMP"]["n"], 1);
    }

    #[test]
    fn sending_moves_slots_on() {
        let mut r = Routes::new();
        r.replies.insert(1, Slot::Queued);
        r.fd_sends.insert(2, Slot::Queued);
        let mut news = News::default();
        r.sent(1, &mut news);
        r.sent(2, &mut news);
        // A command waits for its reply; a descriptor send is done.
        assert_eq!(news.replies, vec![2]);
        assert!(matches!(r.replies[&1], Slot::Sent));
        r.failed(1, "gone", &mut news);
        assert!(matches!(&r.replies[&1], Slot::Failed(w) if w == "gone"));
    }

    #[test]
    fn only_the_concerned_are_woken() {
        let news = News {
            replies: vec![3],
            events: false,
        };
        assert!(concerns(Interest::Reply(3), &news));
        assert!(!concerns(Interest::Reply(4), &news));
        assert!(!concerns(Interest::Events, &news));
        assert!(concerns(Interest::Idle, &news));
        let mut s = Sleepers::default();
        let w = Arc::new(Condvar::new());
        s.add(Interest::Events, &w);
        s.remove(&w);
        assert!(s.0.is_empty());
    }
}
