//! A QMP client: the QEMU Machine Protocol over a connected stream socket.
//!
//! One [`QmpClient`] may be used from many threads at once. Every command carries its own `id`
//! and each caller gets the reply with its id. There is no I/O thread: whichever caller is
//! waiting does the socket's blocking I/O on behalf of all (a "leader"): it reads, files replies
//! under their ids and events in the queue, writes what is waiting to be sent when the socket
//! has room, and hands the role on when its own wait is over. Everyone else sleeps on a
//! condition variable with their own deadline and cancel token, so no caller ever waits for
//! another caller's I/O.
//!
//! Writing: a command is put in the outgoing queue, whole, and sent from there in order. Any
//! caller may send without blocking; when the socket is full the rest waits for the leader to
//! see room. A command that was not sent at all when its caller gives up (timeout, cancel) is
//! taken out of the queue, so QEMU never sees it; one whose first bytes went out is finished
//! before anything else is sent, so the stream never holds half a command followed by the
//! next one. Its reply, if any, is dropped as late.
//!
//! Events are queued in arrival order (as the text QEMU sent, parsed when read) and, unless a cap is set
//! with [`set_max_queued_events`](QmpClient::set_max_queued_events), never dropped; end of
//! stream or a protocol fault is sticky and fails every waiter at once.

mod events;
mod framing;
mod oob;
mod transcript;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::log::debug;
use crate::sys::{self, poll, pollfd, EventFd, POLLIN, POLLOUT};
use crate::wait::{Deadline, Wait, Wake};
use events::{Cursor, EventQueue, RawEvent, Want};
pub(crate) use framing::preview;
use framing::{LineBuffer, Message};
pub(crate) use transcript::Transcript;

/// Default cap on the size of one message from QEMU (64 MiB). `query-qmp-schema` is ~150 KiB.
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// A connected QMP client.
pub struct QmpClient {
    shared: Arc<Shared>,
}

struct Shared {
    /// The socket; valid until `sock` is emptied by `close`, which waits for any I/O to end.
    raw: RawFd,
    /// Owns the socket. Its lock is only ever held briefly (never across a wait).
    sock: Mutex<Option<OwnedFd>>,
    state: Mutex<State>,
    next_id: AtomicU64,
    nickname: String,
    /// A unix socket, which can carry descriptors (SCM_RIGHTS); a TCP one cannot.
    unix: bool,
    transcript: Transcript,
    /// Out-of-band execution: asked for, and negotiated (`oob.rs`).
    oob: oob::Oob,
}

struct State {
    /// Commands in flight.
    replies: HashMap<u64, Slot>,
    /// Descriptor sends in flight.
    fd_sends: HashMap<u64, Slot>,
    /// What waits to be sent, in order; the front may be partly sent.
    outgoing: VecDeque<Outgoing>,
    /// A caller is sending (without blocking) from the front of `outgoing`.
    writing: bool,
    /// The last send found the socket full: wait for POLLOUT before trying again.
    out_blocked: bool,
    /// Sending failed for good (the peer is gone): every later send fails with this.
    write_failed: Option<String>,
    events: EventQueue,
    greeting: Option<Value>,
    /// A caller (the leader) is in poll/recv for everyone.
    reading: bool,
    /// The leader's poll includes POLLOUT.
    polling_out: bool,
    /// Callers asleep until news that concerns them (or their turn to lead).
    sleepers: Vec<Sleeper>,
    /// Sticky end of the connection.
    broken: Option<Broken>,
    /// `close` was called (whatever ended the connection first).
    closed: bool,
    input: LineBuffer,
    /// QEMU's exit descriptor (readable once it exited), to tell an exit from a peer's fault.
    exit: Option<Arc<OwnedFd>>,
    /// An eventfd that tells the leader, asleep in poll, that output is waiting for room in the
    /// socket (so it should poll for POLLOUT too). Both descriptors go when the connection
    /// ends: a machine keeps its client (and its events) after a shutdown.
    kick: Option<Arc<EventFd>>,
}

/// Where a command (or descriptor send) stands.
enum Slot {
    /// In `outgoing`, not completely sent.
    Queued,
    /// Sent; for a command, waiting for its reply.
    Sent,
    /// The reply to a command.
    Reply(Value),
    /// It could not be sent.
    Failed(String),
}

struct Outgoing {
    id: u64,
    data: Arc<Vec<u8>>,
    sent: usize,
    /// A descriptor to pass with the data (SCM_RIGHTS).
    fd: Option<Arc<OwnedFd>>,
    /// Its caller gave up while it was being sent: drop it unless its first byte went out.
    abandoned: bool,
}

/// What sending did to a caller's message when the caller gave up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Withdrawn {
    /// Taken out of the queue: QEMU never sees it.
    NotSent,
    /// Partly sent: the rest follows before anything else; QEMU runs it.
    Partly,
    /// Sent, or being sent right now.
    Sent,
}

/// What a sleeping caller waits for, so that a leader wakes only those its news concerns:
/// with many threads, waking everyone for every reply costs more than QEMU's round trip.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interest {
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

/// What one round of I/O brought.
#[derive(Default)]
struct News {
    replies: Vec<u64>,
    events: bool,
}

/// What a leader's round of I/O looks at besides the socket.
struct Round<'a> {
    /// Poll for room to write too.
    want_out: bool,
    /// The kick eventfd.
    kick: Option<&'a EventFd>,
    /// QEMU's exit descriptor, to fail at once when it becomes readable (a handshake).
    watch: Option<&'a OwnedFd>,
    /// QEMU's exit descriptor, to tell an exit from a peer's fault at EOF mid-message.
    exit: Option<&'a OwnedFd>,
}

/// What a leader's poll saw.
#[derive(Default)]
struct Polled {
    writable: bool,
}

#[derive(Clone, Debug)]
enum Broken {
    Eof,
    Closed,
    Exited,
    /// EOF in the middle of a message, and QEMU has exited.
    ExitedMidMessage,
    Protocol(String),
    Io(String),
}

impl Broken {
    fn error(&self) -> Error {
        match self {
            Broken::Eof => Error::Disconnected("QEMU closed the monitor connection".into()),
            Broken::Closed => Error::Disconnected("the connection was closed".into()),
            Broken::Exited => Error::Disconnected("QEMU exited".into()),
            Broken::ExitedMidMessage => Error::Disconnected(
                "QEMU exited in the middle of a message (the rest of it was lost)".into(),
            ),
            Broken::Protocol(why) => Error::Protocol(why.clone()),
            Broken::Io(why) => Error::Disconnected(why.clone()),
        }
    }
}

impl Wake for Shared {
    fn wake(&self) {
        // Under the lock: ordered after a sleeper's check of its cancel flag.
        self.lock().wake_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sock(&self) -> MutexGuard<'_, Option<OwnedFd>> {
        self.sock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpClient")
            .field("nickname", &self.shared.nickname)
            .field("fd", &self.shared.raw)
            .finish()
    }
}

impl QmpClient {
    /// Wraps a connected stream socket (unix or TCP). Nothing is read or written until
    /// [`handshake`](Self::handshake). `max_message` caps the size of one incoming message.
    pub fn new(socket: OwnedFd, nickname: &str, max_message: usize) -> Result<QmpClient> {
        sys::socket::set_nonblocking(socket.as_fd())
            .map_err(|e| Error::io("making the monitor socket non-blocking", e))?;
        let unix = sys::socket::is_unix(socket.as_fd());
        let kick = EventFd::new().map_err(|e| Error::io("creating the QMP client's eventfd", e))?;
        Ok(QmpClient {
            shared: Arc::new(Shared {
                raw: socket.as_raw_fd(),
                sock: Mutex::new(Some(socket)),
                state: Mutex::new(State {
                    replies: HashMap::new(),
                    fd_sends: HashMap::new(),
                    outgoing: VecDeque::new(),
                    writing: false,
                    out_blocked: false,
                    write_failed: None,
                    events: EventQueue::new(),
                    greeting: None,
                    reading: false,
                    polling_out: false,
                    sleepers: Vec::new(),
                    broken: None,
                    closed: false,
                    input: LineBuffer::new(max_message),
                    exit: None,
                    kick: Some(Arc::new(kick)),
                }),
                next_id: AtomicU64::new(1),
                nickname: nickname.to_owned(),
                unix,
                transcript: Transcript::default(),
                oob: oob::Oob::default(),
            }),
        })
    }

    /// Reads the greeting (before writing anything), then negotiates capabilities. Events that
    /// arrive meanwhile are queued. Returns the greeting.
    pub fn handshake(&self, wait: impl Into<Wait>) -> Result<Value> {
        self.handshake_watching(&wait.into(), None)
    }

    /// [`handshake`](Self::handshake), failing at once when `exit_fd` (readable once QEMU has
    /// exited) becomes readable. The client keeps a copy of `exit_fd` for the rest of the
    /// connection, to tell an end of stream because QEMU exited from a peer's fault.
    pub(crate) fn handshake_watching(
        &self,
        wait: &Wait,
        exit_fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value> {
        if let Some(fd) = exit_fd {
            let fd = fd
                .try_clone_to_owned()
                .map_err(|e| Error::io("duplicating QEMU's exit descriptor", e))?;
            self.shared.lock().exit = Some(Arc::new(fd));
        }
        let deadline = wait.start()?;
        let greeting = self
            .wait_until(Interest::Events, &deadline, true, |st| {
                st.greeting.take().map(Ok)
            })
            .map_err(|e| in_context(e, "no QMP greeting", &deadline))?;
        let valid = greeting["QMP"]["version"]["qemu"].is_object()
            && greeting["QMP"]["capabilities"].is_array();
        if !valid {
            return Err(Error::Protocol(format!(
                "malformed greeting: {}",
                preview(&greeting.to_string())
            )));
        }
        let capabilities = self.capabilities_for(&greeting);
        let reply = self
            .execute_until("qmp_capabilities", capabilities.as_ref(), &deadline, true)
            .map_err(|e| in_context(e, "qmp_capabilities: no reply", &deadline))?;
        into_return(reply)?;
        self.negotiated(capabilities.as_ref());
        Ok(greeting)
    }

    /// Writes every message from now on to `file` as a JSON line (see `transcript.rs`); only
    /// the first call has an effect. Call it before [`handshake`](Self::handshake) to have
    /// the greeting too.
    pub(crate) fn set_transcript(&self, file: std::fs::File) {
        self.shared.transcript.set(file);
    }

    /// Runs a command and returns QEMU's raw response object, `{"return": …}` or
    /// `{"error": {"class": …, "desc": …}}`.
    ///
    /// A zero wait is refused with [`Error::Invalid`] and nothing is sent: zero means "never
    /// block", and a command always waits for QEMU's reply.
    ///
    /// On [`Error::Timeout`] or [`Error::Interrupted`], a command that had not started to go out
    /// (the socket was full: QEMU is not reading, or another command is still being taken) is
    /// withdrawn and never sent; one that was sent, even in part, is completed and QEMU may run
    /// it; its reply is then dropped. The error's text says which.
    pub fn execute(&self, cmd: &str, args: Option<&Value>, wait: impl Into<Wait>) -> Result<Value> {
        let wait = wait.into();
        if wait.is_no_wait() {
            return Err(Error::Invalid(format!(
                "running {cmd:?} with a zero timeout: zero means \"never block\", and a command \
                 always waits for QEMU's reply; nothing was sent"
            )));
        }
        self.execute_until(cmd, args, &wait.start()?, false)
    }

    /// Runs a command and returns the value of its `return`, or [`Error::Qmp`]. A zero wait is
    /// refused as for [`execute`](Self::execute).
    pub fn cmd(&self, cmd: &str, args: Option<&Value>, wait: impl Into<Wait>) -> Result<Value> {
        into_return(self.execute(cmd, args, wait)?)
    }

    /// Runs a command within `deadline` (which may have run out: then the command is sent only
    /// if the socket takes it at once, and the call times out).
    pub(crate) fn execute_within(
        &self,
        cmd: &str,
        args: Option<&Value>,
        deadline: &Deadline<'_>,
    ) -> Result<Value> {
        self.execute_until(cmd, args, deadline, false)
    }

    fn execute_until(
        &self,
        cmd: &str,
        args: Option<&Value>,
        deadline: &Deadline<'_>,
        watch_exit: bool,
    ) -> Result<Value> {
        self.execute_as(b"execute", cmd, args, deadline, watch_exit)
    }

    /// Runs a command sent as `{"<verb>": cmd, …}`: `execute`, or `exec-oob` (`oob.rs`).
    fn execute_as(
        &self,
        verb: &[u8],
        cmd: &str,
        args: Option<&Value>,
        deadline: &Deadline<'_>,
        watch_exit: bool,
    ) -> Result<Value> {
        if let Some(args) = args {
            if !args.is_object() {
                return Err(Error::Invalid(format!(
                    "arguments of {cmd:?} must be a JSON object, got {}",
                    preview(&args.to_string())
                )));
            }
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        // Written straight from the caller's arguments (no copy of them). No trailing newline:
        // QEMU reads its monitor a byte at a time and stops reading while a command runs, so
        // after `quit` a newline would be left unread at exit, and on TCP unread data turns the
        // close into a reset that discards the reply to `quit`.
        let mut line = Vec::with_capacity(64);
        line.extend_from_slice(b"{\"");
        line.extend_from_slice(verb);
        line.extend_from_slice(b"\":");
        serde_json::to_writer(&mut line, cmd).expect("a string always serialises");
        if let Some(args) = args {
            line.extend_from_slice(b",\"arguments\":");
            serde_json::to_writer(&mut line, args).expect("a JSON value always serialises");
        }
        std::io::Write::write_fmt(&mut line, format_args!(",\"id\":{id}}}"))
            .expect("writing to a Vec cannot fail");

        self.enqueue(id, line, None, true)?;
        let result = self.wait_until(Interest::Reply(id), deadline, watch_exit, |st| {
            match st.replies.get_mut(&id) {
                Some(slot @ Slot::Reply(_)) => match std::mem::replace(slot, Slot::Sent) {
                    Slot::Reply(v) => Some(Ok(v)),
                    _ => unreachable!("matched above"),
                },
                Some(Slot::Failed(why)) => Some(Err(Error::Disconnected(why.clone()))),
                _ => None,
            }
        });
        let withdrawn = {
            let mut st = self.shared.lock();
            st.replies.remove(&id);
            match &result {
                Err(Error::Timeout(_) | Error::Interrupted) => st.withdraw(id),
                _ => Withdrawn::Sent,
            }
        };
        let mut response = result.map_err(|e| match (e, withdrawn) {
            (Error::Timeout(s), Withdrawn::NotSent) if s.is_empty() => Error::Timeout(format!(
                "{cmd}: nothing was sent {} (the monitor socket stayed full: QEMU is not \
                 reading, or is still taking an earlier command)",
                deadline.within()
            )),
            (Error::Timeout(s), Withdrawn::Partly) if s.is_empty() => Error::Timeout(format!(
                "{cmd}: only partly sent {}; the rest goes out before any other command, \
                 QEMU may run it, and its reply will be dropped",
                deadline.within()
            )),
            (e, _) => in_context(e, &format!("{cmd}: no reply"), deadline),
        })?;
        // The id is ours, for pairing; callers get the response as QEMU meant it.
        if let Some(fields) = response.as_object_mut() {
            fields.remove("id");
        }
        Ok(response)
    }

    /// Puts a message in the outgoing queue, with its slot.
    fn enqueue(&self, id: u64, data: Vec<u8>, fd: Option<OwnedFd>, command: bool) -> Result<()> {
        let mut st = self.shared.lock();
        if let Some(broken) = &st.broken {
            return Err(broken.error());
        }
        if let Some(why) = &st.write_failed {
            return Err(Error::Disconnected(why.clone()));
        }
        match fd {
            None => debug!(
                "{} >>> {}",
                self.shared.nickname,
                String::from_utf8_lossy(&data)
            ),
            Some(ref fd) => debug!(
                "{} >>> (SCM_RIGHTS fd {})",
                self.shared.nickname,
                fd.as_raw_fd()
            ),
        }
        if fd.is_none() {
            self.shared.transcript.sent(&data);
        }
        let slots = if command {
            &mut st.replies
        } else {
            &mut st.fd_sends
        };
        slots.insert(id, Slot::Queued);
        st.outgoing.push_back(Outgoing {
            id,
            data: Arc::new(data),
            sent: 0,
            fd: fd.map(Arc::new),
            abandoned: false,
        });
        Ok(())
    }

    /// Sends `fd` with SCM_RIGHTS (one space byte as payload), for QEMU's `getfd` / `add-fd`
    /// commands, which take the descriptor that arrived last. It goes out in order with the
    /// commands of every thread. On timeout or cancel it is not sent unless it had already
    /// gone out.
    pub fn send_fd(&self, fd: BorrowedFd<'_>, wait: impl Into<Wait>) -> Result<()> {
        // Over TCP the kernel would drop the descriptor and send the byte: QEMU's next
        // getfd would fail far from the cause.
        if !self.shared.unix {
            return Err(Error::Invalid(
                "file descriptors can only be passed over a unix socket monitor, not TCP".into(),
            ));
        }
        let wait = wait.into();
        let deadline = wait.start()?;
        // Our own copy: the caller's descriptor is borrowed only for this call, and whoever
        // sends may be another thread.
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicating the descriptor to send", e))?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.enqueue(id, b" ".to_vec(), Some(fd), false)?;
        let result = self.wait_until(Interest::Reply(id), &deadline, false, |st| {
            match st.fd_sends.get(&id) {
                Some(Slot::Sent) => Some(Ok(())),
                Some(Slot::Failed(why)) => Some(Err(Error::Disconnected(why.clone()))),
                _ => None,
            }
        });
        let mut st = self.shared.lock();
        st.fd_sends.remove(&id);
        match result {
            Err(e @ (Error::Timeout(_) | Error::Interrupted)) => match st.withdraw(id) {
                Withdrawn::NotSent => Err(in_context(
                    e,
                    "sending a file descriptor: not sent",
                    &deadline,
                )),
                // One byte: sent now or never; it is out.
                _ => Ok(()),
            },
            other => other,
        }
    }

    /// The next event, oldest first. With a zero wait returns `None` when none is queued or
    /// readable now; otherwise waits and fails with [`Error::Timeout`]. Fails once with
    /// [`Error::EventsDropped`] after the queue's cap dropped events.
    pub fn pull_event(&self, wait: impl Into<Wait>) -> Result<Option<Value>> {
        let wait = wait.into();
        let deadline = wait.start()?;
        let found = self
            .wait_until(Interest::Events, &deadline, false, |st| {
                dropped_error(st).or_else(|| st.events.pop_front().map(Ok))
            })
            .map_err(|e| in_context(e, "no QMP event", &deadline));
        Ok(self.none_if_no_wait(found, &wait)?.map(|ev| ev.value()))
    }

    /// Removes and returns the oldest queued event for which `pred` holds, reading more as
    /// needed; events that do not match stay queued, in order. Each event is examined once per
    /// call, however many times the call wakes up.
    pub fn take_event(
        &self,
        mut pred: impl FnMut(&Value) -> bool,
        wait: impl Into<Wait>,
    ) -> Result<Option<Value>> {
        self.take_event_where(None, &mut pred, wait)
    }

    /// Waits for the first event that matches any `(name, filter)` pair (see
    /// [`event_match`](crate::event_match)), and takes it out of the queue. Queued events are
    /// searched first; events that do not match stay queued, in order; events with other names
    /// are skipped without being parsed. A zero wait returns `None` when nothing matches; a
    /// longer one fails with [`Error::Timeout`].
    pub fn events_wait(
        &self,
        events: &[(&str, Option<&Value>)],
        wait: impl Into<Wait>,
    ) -> Result<Option<Value>> {
        let names = |n: &str| events.iter().any(|(name, _)| *name == n);
        self.take_event_where(
            Some(&names),
            &mut |ev| {
                events.iter().any(|(name, filter)| {
                    ev["event"].as_str() == Some(name) && crate::event_match(ev, *filter)
                })
            },
            wait,
        )
    }

    /// [`take_event`](Self::take_event) for events whose name `names` accepts: events with
    /// other names are skipped without being parsed.
    fn take_event_where(
        &self,
        names: Option<&dyn Fn(&str) -> bool>,
        pred: &mut dyn FnMut(&Value) -> bool,
        wait: impl Into<Wait>,
    ) -> Result<Option<Value>> {
        let wait = wait.into();
        let mut cursor = Cursor::default();
        let deadline = wait.start()?;
        let found = self
            .wait_until(Interest::Events, &deadline, false, |st| {
                dropped_error(st).or_else(|| {
                    let mut want = Want {
                        names,
                        test: &mut *pred,
                    };
                    st.events.take_first(&mut cursor, &mut want).map(Ok)
                })
            })
            .map_err(|e| in_context(e, "no QMP event", &deadline));
        self.none_if_no_wait(found, &wait)
    }

    /// True when a queued event whose name `names` accepts satisfies `pred`, after reading
    /// what is already readable; nothing is removed from the queue and nothing blocks.
    pub(crate) fn has_event(
        &self,
        names: &dyn Fn(&str) -> bool,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> bool {
        let wait = Wait::no_wait();
        let Ok(deadline) = wait.start() else {
            return false;
        };
        self.wait_until(Interest::Events, &deadline, false, |st| {
            let mut want = Want {
                names: Some(names),
                test: &mut pred,
            };
            st.events.any(&mut want).then_some(Ok(()))
        })
        .is_ok()
    }

    /// All queued events. With a non-zero wait, waits until there is at least one.
    pub fn get_events(&self, wait: impl Into<Wait>) -> Result<Vec<Value>> {
        let wait = wait.into();
        let deadline = wait.start()?;
        let found = self
            .wait_until(Interest::Events, &deadline, false, |st| {
                dropped_error(st).or_else(|| (!st.events.is_empty()).then(|| Ok(st.events.drain())))
            })
            .map_err(|e| in_context(e, "no QMP event", &deadline));
        // Parsed outside the lock: the reader may go on meanwhile.
        let raw = self.none_if_no_wait(found, &wait)?.unwrap_or_default();
        Ok(raw.iter().map(RawEvent::value).collect())
    }

    /// Drops every queued event.
    pub fn clear_events(&self) {
        let mut st = self.shared.lock();
        st.events.clear();
        st.events.release();
    }

    /// Caps the number of queued events (`None`, the default: no cap, events are never
    /// dropped, as in QEMU's Python client).
    ///
    /// When an event arrives and `max` are queued, the oldest queued event is dropped to make
    /// room: the newest events are kept, since a caller waiting for an event waits for one yet
    /// to come. Every drop is counted ([`dropped_events`](Self::dropped_events)), and the next
    /// call that reads events (or one already waiting) fails once with
    /// [`Error::EventsDropped`]; the calls after it read the events that were kept. Lowering
    /// the cap below the number queued drops the oldest at once, the same way.
    pub fn set_max_queued_events(&self, max: Option<usize>) {
        let mut st = self.shared.lock();
        st.events.set_max(max);
        if st.events.dropped() > 0 {
            st.wake_all();
        }
    }

    /// The cap set by [`set_max_queued_events`](Self::set_max_queued_events).
    pub fn max_queued_events(&self) -> Option<usize> {
        self.shared.lock().events.max()
    }

    /// How many events the cap has dropped since the connection started.
    pub fn dropped_events(&self) -> u64 {
        self.shared.lock().events.dropped()
    }

    /// How many events are queued, unread.
    pub fn queued_events(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// A zero wait is a look, not a wait: nothing found is `None`, and a closed connection
    /// still yields what was queued before it closed.
    fn none_if_no_wait<T>(&self, found: Result<T>, wait: &Wait) -> Result<Option<T>> {
        match found {
            Ok(v) => Ok(Some(v)),
            Err(Error::Timeout(_)) if wait.is_no_wait() => Ok(None),
            Err(Error::Disconnected(_)) if wait.is_no_wait() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True once [`close`](Self::close) was called (rather than the peer ending it).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// True until the connection ends (EOF, protocol fault, [`close`](Self::close)).
    pub fn is_connected(&self) -> bool {
        self.shared.lock().broken.is_none()
    }

    /// Closes the connection: every waiter fails with [`Error::Disconnected`]; queued events stay
    /// readable. Idempotent. Returns once no thread does I/O on the socket (a leader in poll
    /// is woken at once; a sender never blocks), then closes it.
    pub fn close(&self) {
        {
            let mut st = self.shared.lock();
            st.broken.get_or_insert(Broken::Closed);
            st.closed = true;
            st.end_of_connection();
        }
        // Wake a leader blocked in poll: it sees EOF and lets go of the socket. Only while we
        // still own the descriptor: once closed, its number may belong to someone else.
        if let Some(sock) = self.shared.sock().as_ref() {
            sys::socket::shutdown(sock.as_fd());
        }
        let mut st = self.shared.lock();
        st.wake_all();
        // The leader wakes everyone once it sees the connection broken and stops.
        let idle = Arc::new(Condvar::new());
        while st.reading || st.writing {
            st = sleep(st, &idle, Interest::Idle, None);
        }
        st.input.release();
        drop(st);
        let sock = self.shared.sock().take();
        if sock.is_some() {
            debug!("{}: QMP connection closed", self.shared.nickname);
        }
    }

    /// One non-blocking send of `data` (with `fd` as SCM_RIGHTS when given, `data` then being
    /// the one-byte payload); the bytes it took. The socket's lock is held for the call, which
    /// never blocks, so that `close` cannot close the descriptor under it.
    fn send_some(&self, data: &[u8], fd: Option<&OwnedFd>) -> std::io::Result<usize> {
        let sock = self.shared.sock();
        let Some(sock) = sock.as_ref() else {
            return Err(std::io::Error::from(std::io::ErrorKind::NotConnected));
        };
        match fd {
            None => sys::socket::send(sock.as_fd(), data),
            Some(fd) => sys::socket::send_fd(sock.as_fd(), fd.as_fd()),
        }
    }

    /// Sends from the front of the queue without blocking, until it is empty or the socket
    /// is full. Called with the lock held and `outgoing` not empty, nobody else sending.
    fn flush<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.writing = true;
        let mut news = News::default();
        while let Some(front) = st.outgoing.front() {
            if st.broken.is_some() {
                break;
            }
            let (id, data, sent, fd) = (front.id, front.data.clone(), front.sent, front.fd.clone());
            drop(st);
            let result = self.send_some(&data[sent..], fd.as_deref());
            st = self.shared.lock();
            // The queue may have been emptied meanwhile (the connection ended).
            let same = st.outgoing.front().is_some_and(|o| o.id == id);
            match result {
                Ok(n) if same => {
                    let front = st.outgoing.front_mut().expect("checked above");
                    front.sent += n;
                    front.abandoned = false;
                    if front.sent == front.data.len() {
                        st.outgoing.pop_front();
                        // Only a slot still queued: the reply may have been read meanwhile.
                        if let Some(slot @ Slot::Queued) = st.replies.get_mut(&id) {
                            *slot = Slot::Sent;
                        } else if let Some(slot @ Slot::Queued) = st.fd_sends.get_mut(&id) {
                            *slot = Slot::Sent;
                            news.replies.push(id);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    st.out_blocked = true;
                    if same && sent == 0 && st.outgoing.front().is_some_and(|o| o.abandoned) {
                        st.outgoing.pop_front();
                    }
                    break;
                }
                // The peer is gone. What it sent before stays readable for the other callers,
                // who see the end of the stream when they get there; every send fails.
                Err(e) => {
                    let why = format!("writing to the monitor failed: {e}");
                    st.fail_writes(why, &mut news);
                    break;
                }
            }
        }
        st.writing = false;
        if st.out_blocked && st.reading && !st.polling_out {
            // The leader polls without POLLOUT: have it look again.
            if let Some(kick) = &st.kick {
                kick.signal();
            }
        }
        st.wake_concerned(&news);
        st
    }

    /// Blocks until `ready` yields a result, doing the I/O while nobody else does.
    ///
    /// `ready` runs under the state lock whenever news of `interest` may have come. Order of
    /// checks: what is ready wins over a broken connection (a reply that arrived before EOF is
    /// still delivered), which wins over cancel and timeout. Whoever leaves while nobody leads
    /// hands the role to one sleeper. `watch_exit`: fail as soon as QEMU exits (a handshake).
    fn wait_until<T>(
        &self,
        interest: Interest,
        deadline: &Deadline<'_>,
        watch_exit: bool,
        ready: impl FnMut(&mut State) -> Option<Result<T>>,
    ) -> Result<T> {
        let _watch = deadline.cancel.map(|c| {
            let sleeper: std::sync::Weak<dyn Wake> = Arc::downgrade(&self.shared) as _;
            c.watch(sleeper)
        });
        let (st, result) = self.wait_locked(interest, deadline, watch_exit, ready);
        st.promote();
        result
    }

    fn wait_locked<T>(
        &self,
        interest: Interest,
        deadline: &Deadline<'_>,
        watch_exit: bool,
        mut ready: impl FnMut(&mut State) -> Option<Result<T>>,
    ) -> (MutexGuard<'_, State>, Result<T>) {
        let mut looked = false;
        // Made only when this caller has to sleep: a lone caller always leads.
        let mut wake = None;
        let mut st = self.shared.lock();
        loop {
            if let Some(result) = ready(&mut st) {
                return (st, result);
            }
            if let Some(broken) = &st.broken {
                let err = broken.error();
                return (st, Err(err));
            }
            if deadline.cancelled() {
                return (st, Err(Error::Interrupted));
            }
            let left = deadline.remaining();
            let expired = left == Some(Duration::ZERO);
            if expired && (looked || st.reading) {
                return (st, Err(Error::Timeout(String::new())));
            }
            if !st.outgoing.is_empty() && !st.writing && !st.out_blocked {
                st = self.flush(st);
                continue;
            }
            if st.reading {
                let wake = wake.get_or_insert_with(|| Arc::new(Condvar::new()));
                st = sleep(st, wake, interest, left);
                continue;
            }
            st.reading = true;
            st.polling_out = !st.outgoing.is_empty() && !st.writing;
            let polling_out = st.polling_out;
            let exit = st.exit.clone();
            let kick = st.kick.clone();
            let mut input = std::mem::replace(&mut st.input, LineBuffer::new(0));
            drop(st);
            let mut msgs = Vec::new();
            let watch = exit.as_deref().filter(|_| watch_exit);
            let round = Round {
                want_out: polling_out,
                kick: kick.as_deref(),
                watch,
                exit: exit.as_deref(),
            };
            let outcome = self.io_round(&mut input, &mut msgs, deadline, round);
            looked = true;
            st = self.shared.lock();
            st.input = input;
            st.reading = false;
            st.polling_out = false;
            let mut news = News::default();
            for msg in msgs {
                st.dispatch(msg, &self.shared, &mut news);
            }
            match outcome {
                Ok(polled) => {
                    if polled.writable {
                        st.out_blocked = false;
                    }
                }
                Err(broken) => {
                    st.broken.get_or_insert(broken);
                }
            }
            if st.broken.is_some() {
                st.end_of_connection();
                st.wake_all();
            } else {
                st.wake_concerned(&news);
            }
        }
    }

    /// One round of the leader's I/O: waits (bounded by the deadline) until the socket is
    /// readable (or writable, with `want_out`), the kick, the cancel token or `watch` (QEMU's
    /// exit) fires, and reads and parses what came.
    fn io_round(
        &self,
        input: &mut LineBuffer,
        msgs: &mut Vec<Message>,
        deadline: &Deadline<'_>,
        round: Round<'_>,
    ) -> Result<Polled, Broken> {
        let Round {
            want_out,
            kick,
            watch,
            exit,
        } = round;
        let raw = self.shared.raw;
        let events = POLLIN | if want_out { POLLOUT } else { 0 };
        // A kick descriptor that is gone (the connection ended) is polled as -1: ignored.
        let mut fds = vec![
            pollfd(raw, events),
            pollfd(kick.map_or(-1, EventFd::raw), POLLIN),
        ];
        let io = |e: Error| Broken::Io(e.to_string());
        if let Some(fd) = deadline.cancel_fd().map_err(io)? {
            fds.push(pollfd(fd, POLLIN));
        }
        if let Some(fd) = watch {
            fds.push(pollfd(fd.as_raw_fd(), POLLIN));
        }
        let mut polled = Polled::default();
        let ready = poll(&mut fds, deadline.remaining())
            .map_err(|e| Broken::Io(format!("waiting for the monitor: {e}")))?;
        if ready == 0 {
            return Ok(polled);
        }
        if let Some(kick) = kick.filter(|_| fds[1].revents != 0) {
            kick.drain();
        }
        let sock = fds[0].revents;
        polled.writable = sock & POLLOUT != 0;
        if sock & !POLLOUT == 0 {
            // Not readable. QEMU's exit counts only once the socket has nothing left.
            return match watch {
                Some(_) if fds.last().is_some_and(|f| f.revents != 0) => Err(Broken::Exited),
                _ => Ok(polled),
            };
        }
        const CHUNK: usize = 64 << 10;
        // The leader's role keeps the socket open while it reads it by number (close waits
        // for the leader to leave).
        let n = match input.fill(CHUNK, |room| sys::socket::recv(raw, room)) {
            Ok(n) => n,
            Err(err) => {
                return match err.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(polled),
                    _ => Err(Broken::Io(format!("reading the monitor failed: {err}"))),
                };
            }
        };
        input.drain_messages(msgs).map_err(Broken::Protocol)?;
        if n == 0 {
            if input.has_partial() {
                // QEMU killed while it wrote, or a peer that broke off a message.
                return Err(match exit {
                    Some(fd) if exited_soon(fd) => Broken::ExitedMidMessage,
                    _ => Broken::Protocol("the monitor closed in the middle of a message".into()),
                });
            }
            return Err(Broken::Eof);
        }
        Ok(polled)
    }
}

/// True when `exit` (readable once QEMU has exited) becomes readable within a moment: a
/// process closes its descriptors just before it turns into a zombie.
fn exited_soon(exit: &OwnedFd) -> bool {
    const GRACE: Duration = Duration::from_millis(200);
    let mut fds = [pollfd(exit.as_raw_fd(), POLLIN)];
    matches!(poll(&mut fds, Some(GRACE)), Ok(n) if n > 0)
}

/// The error for events dropped by the cap, once per drop.
fn dropped_error<T>(st: &mut State) -> Option<Result<T>> {
    let n = st.events.take_unreported();
    (n > 0).then(|| {
        Err(Error::EventsDropped {
            dropped: n,
            max: st.events.max().unwrap_or(0),
        })
    })
}

/// Sleeps on `wake` (at most `timeout`) as a sleeper interested in `interest`.
fn sleep<'a>(
    mut st: MutexGuard<'a, State>,
    wake: &Arc<Condvar>,
    interest: Interest,
    timeout: Option<Duration>,
) -> MutexGuard<'a, State> {
    st.sleepers.push(Sleeper {
        interest,
        wake: wake.clone(),
    });
    let mut st = match timeout {
        None => wake.wait(st).unwrap_or_else(|e| e.into_inner()),
        Some(t) => {
            wake.wait_timeout(st, t)
                .unwrap_or_else(|e| e.into_inner())
                .0
        }
    };
    st.sleepers.retain(|s| !Arc::ptr_eq(&s.wake, wake));
    st
}

impl State {
    fn wake_all(&self) {
        for s in &self.sleepers {
            s.wake.notify_one();
        }
    }

    /// Wakes the owners of the replies that came, and the event waiters if events came.
    fn wake_concerned(&self, news: &News) {
        for s in &self.sleepers {
            let concerned = match s.interest {
                Interest::Reply(id) => news.replies.contains(&id),
                Interest::Events => news.events,
                Interest::Idle => true,
            };
            if concerned {
                s.wake.notify_one();
            }
        }
    }

    /// When nobody leads, wakes one sleeper to take over (or to find it has nothing left to
    /// wait for, and pass the turn on when it leaves).
    fn promote(&self) {
        if !self.reading {
            if let Some(s) = self.sleepers.first() {
                s.wake.notify_one();
            }
        }
    }

    /// Takes a message its caller gave up on out of the queue if none of it was sent.
    fn withdraw(&mut self, id: u64) -> Withdrawn {
        let writing = self.writing;
        let Some(pos) = self.outgoing.iter().position(|o| o.id == id) else {
            return Withdrawn::Sent;
        };
        let out = &mut self.outgoing[pos];
        if out.sent > 0 {
            return Withdrawn::Partly;
        }
        if pos == 0 && writing {
            // Being sent right now: the sender drops it if the socket takes none of it.
            out.abandoned = true;
            return Withdrawn::Sent;
        }
        self.outgoing.remove(pos);
        Withdrawn::NotSent
    }

    /// Nothing can be sent any more: every queued message fails with `why`.
    fn fail_writes(&mut self, why: String, news: &mut News) {
        for out in self.outgoing.drain(..) {
            if let Some(slot) = self.replies.get_mut(&out.id) {
                *slot = Slot::Failed(why.clone());
            } else if let Some(slot) = self.fd_sends.get_mut(&out.id) {
                *slot = Slot::Failed(why.clone());
            }
            news.replies.push(out.id);
        }
        self.write_failed.get_or_insert(why);
    }

    /// The connection ended: free what only the connection needed (the read buffer, which an
    /// oversize message may have grown to the size cap, and what waited to be sent).
    fn end_of_connection(&mut self) {
        if !self.reading {
            self.input.release();
        }
        self.outgoing.clear();
        self.exit = None;
        self.kick = None;
    }

    fn dispatch(&mut self, msg: Message, shared: &Shared, news: &mut News) {
        match msg {
            Message::Event(ev) => {
                debug!("{} <<< {}", shared.nickname, ev.text());
                shared.transcript.record("event", ev.text().as_bytes());
                self.events.push(ev);
                news.events = true;
            }
            Message::Other(msg) => {
                debug!("{} <<< {}", shared.nickname, msg);
                shared.transcript.received(&msg);
                if msg.get("return").is_some() || msg.get("error").is_some() {
                    if let Some(id) = self.file_reply(msg, shared) {
                        news.replies.push(id);
                    }
                } else if msg.get("QMP").is_some() && self.greeting.is_none() {
                    self.greeting = Some(msg);
                    news.events = true;
                } else {
                    crate::log::warning!(
                        "{}: ignoring an unexpected QMP message: {}",
                        shared.nickname,
                        preview(&msg.to_string())
                    );
                }
            }
        }
    }

    /// Files a reply under its command's id; returns the id, or `None` if nobody waits for it.
    fn file_reply(&mut self, msg: Value, shared: &Shared) -> Option<u64> {
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
                "{}: dropping a reply no caller waits for (late after a timeout, or unknown id): {}",
                shared.nickname,
                    preview(&msg.to_string())
                );
                None
            }
        }
    }
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// Turns a raw response into its `return` value or an [`Error::Qmp`].
pub fn into_return(mut response: Value) -> Result<Value> {
    if let Some(ret) = response.get_mut("return") {
        return Ok(ret.take());
    }
    let err = &response["error"];
    match (err["class"].as_str(), err["desc"].as_str()) {
        (Some(class), Some(desc)) => Err(Error::Qmp {
            class: class.to_owned(),
            desc: desc.to_owned(),
        }),
        _ => Err(Error::Protocol(format!(
            "a response with neither return nor error: {}",
            preview(&response.to_string())
        ))),
    }
}

/// Names what timed out, and the bound: `what within N ms`.
fn in_context(err: Error, what: &str, deadline: &Deadline<'_>) -> Error {
    match err {
        Error::Timeout(s) if s.is_empty() => {
            Error::Timeout(format!("{what} {}", deadline.within()))
        }
        other => other,
    }
}

/// Feeds `chunks` (as successive reads) through the client's message framing and returns the
/// messages, or the protocol error that would end the connection. For fuzzing and tests; not
/// a stable API.
#[doc(hidden)]
pub fn split_messages(chunks: &[&[u8]], max_message: usize) -> Result<Vec<Value>, String> {
    let mut input = LineBuffer::new(max_message);
    let mut out = Vec::new();
    for chunk in chunks {
        input.push(chunk);
        input.drain_messages(&mut out)?;
    }
    Ok(out.into_iter().map(Message::into_value).collect())
}
