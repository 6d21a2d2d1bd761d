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

// The pieces, each with its state's invariants where that state is declared:
// - `outgoing.rs`: the queue of what waits to be sent, and withdrawing what a caller gave up;
// - `reader.rs`: the leader/follower reading (who does the I/O, who sleeps, how it ends);
// - `routing.rs`: replies to their callers, events to the queue, waking only the concerned;
// - `events.rs`: the event queue (text, a few parsed), `framing.rs`: lines into messages,
//   `transcript.rs`: the optional record of every message.
mod events;
mod framing;
mod oob;
mod outgoing;
mod reader;
mod routing;
mod transcript;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::log::debug;
use crate::sys::{self, EventFd};
use crate::wait::{Deadline, Wait, Wake};
use events::{Cursor, RawEvent, Want};
pub(crate) use framing::preview;
use framing::{LineBuffer, Message};
use outgoing::{OutQueue, Withdrawn};
use reader::{Broken, Ended, Reader};
use routing::{Interest, Routes, Slot};
pub(crate) use transcript::{Transcript, TranscriptFile};

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

/// The client's state, under one lock, in three parts: what waits to be sent
/// (`outgoing.rs`), where what QEMU sends goes (`routing.rs`) and the shared reading
/// (`reader.rs`), each with its invariants where it is declared.
struct State {
    out: OutQueue,
    routes: Routes,
    reader: Reader,
}

impl Wake for Shared {
    fn wake(&self) {
        // Under the lock: ordered after a sleeper's check of its cancel flag.
        self.lock().reader.sleepers.wake_all();
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
        sys::socket::set_blocking_reads(socket.as_fd(), reader::READ_SLICE)
            .map_err(|e| Error::io("setting up the monitor socket", e))?;
        let unix = sys::socket::is_unix(socket.as_fd());
        let kick = EventFd::new().map_err(|e| Error::io("creating the QMP client's eventfd", e))?;
        Ok(QmpClient {
            shared: Arc::new(Shared {
                raw: socket.as_raw_fd(),
                sock: Mutex::new(Some(socket)),
                state: Mutex::new(State {
                    out: OutQueue::default(),
                    routes: Routes::new(),
                    reader: Reader::new(max_message, kick),
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
    /// exited) becomes readable. The client keeps `exit_fd` for the rest of the connection,
    /// to tell an end of stream because QEMU exited from a peer's fault.
    pub(crate) fn handshake_watching(
        &self,
        wait: &Wait,
        exit_fd: Option<Arc<OwnedFd>>,
    ) -> Result<Value> {
        if let Some(fd) = exit_fd {
            self.shared.lock().reader.exit = Some(fd);
        }
        let deadline = wait.start()?;
        let greeting = self
            .wait_until(Interest::Events, &deadline, true, |st| {
                st.routes.greeting.take().map(Ok)
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
        let reply =
            self.execute_until("qmp_capabilities", capabilities.as_ref(), &deadline, true)?;
        into_return(reply)?;
        self.negotiated(capabilities.as_ref());
        Ok(greeting)
    }

    /// Writes every message from now on to `file` as a JSON line (see `transcript.rs`); only
    /// the first call has an effect. Call it before [`handshake`](Self::handshake) to have
    /// the greeting too.
    pub(crate) fn set_transcript(&self, file: std::sync::Arc<TranscriptFile>) {
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
            match st.routes.replies.get_mut(&id) {
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
            st.routes.replies.remove(&id);
            match &result {
                Err(Ended::TimedOut | Ended::Failed(Error::Interrupted)) => st.out.withdraw(id),
                _ => Withdrawn::Sent,
            }
        };
        let mut response = result.map_err(|e| match (e, withdrawn) {
            (Ended::TimedOut, Withdrawn::NotSent) => Error::Timeout(format!(
                "{cmd}: nothing was sent {} (the monitor socket stayed full: QEMU is not \
                 reading, or is still taking an earlier command)",
                deadline.within()
            )),
            (Ended::TimedOut, Withdrawn::Partly) => Error::Timeout(format!(
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
        if let Some(broken) = &st.reader.broken {
            return Err(broken.error());
        }
        if let Some(why) = &st.out.failed {
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
            &mut st.routes.replies
        } else {
            &mut st.routes.fd_sends
        };
        slots.insert(id, Slot::Queued);
        st.out.push(id, data, fd);
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
            match st.routes.fd_sends.get(&id) {
                Some(Slot::Sent) => Some(Ok(())),
                Some(Slot::Failed(why)) => Some(Err(Error::Disconnected(why.clone()))),
                _ => None,
            }
        });
        let mut st = self.shared.lock();
        st.routes.fd_sends.remove(&id);
        match result {
            Err(e @ (Ended::TimedOut | Ended::Failed(Error::Interrupted))) => {
                match st.out.withdraw(id) {
                    Withdrawn::NotSent => Err(in_context(
                        e,
                        "sending a file descriptor: not sent",
                        &deadline,
                    )),
                    // One byte: sent now or never; it is out.
                    _ => Ok(()),
                }
            }
            other => other.map_err(|e| in_context(e, "sending a file descriptor", &deadline)),
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
                dropped_error(st).or_else(|| st.routes.events.pop_front_value().map(Ok))
            })
            .map_err(|e| in_context(e, "no QMP event", &deadline));
        self.none_if_no_wait(found, &wait)
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
                    st.routes.events.take_first(&mut cursor, &mut want).map(Ok)
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
            st.routes.events.any(&mut want).then_some(Ok(()))
        })
        .is_ok()
    }

    /// All queued events. With a non-zero wait, waits until there is at least one.
    ///
    /// Every event is handed out parsed, all at once: for a long queue,
    /// [`get_events_json`](Self::get_events_json) costs far less memory.
    pub fn get_events(&self, wait: impl Into<Wait>) -> Result<Vec<Value>> {
        let wait = wait.into();
        let deadline = wait.start()?;
        let found = self
            .wait_until(Interest::Events, &deadline, false, |st| {
                dropped_error(st).or_else(|| {
                    (!st.routes.events.is_empty()).then(|| Ok(st.routes.events.drain()))
                })
            })
            .map_err(|e| in_context(e, "no QMP event", &deadline));
        // Parsed outside the lock: the reader may go on meanwhile.
        let raw = self.none_if_no_wait(found, &wait)?.unwrap_or_default();
        Ok(raw.iter().map(RawEvent::value).collect())
    }

    /// All queued events as the text of one JSON array, oldest first (`[]` when none, with a
    /// zero wait). With a non-zero wait, waits until there is at least one, as
    /// [`get_events`](Self::get_events) does.
    ///
    /// Unlike [`get_events`](Self::get_events), which must hand out one parsed tree per
    /// event (~20× the event's text), this never parses an event: the array is built from the
    /// texts the queue holds, each copied without the white space between its tokens, so
    /// reading a queue of N events costs about what they hold plus the array's text.
    pub fn get_events_json(&self, wait: impl Into<Wait>) -> Result<String> {
        let wait = wait.into();
        let deadline = wait.start()?;
        let found = self
            .wait_until(Interest::Events, &deadline, false, |st| {
                dropped_error(st).or_else(|| {
                    (!st.routes.events.is_empty()).then(|| Ok(st.routes.events.take_all()))
                })
            })
            .map_err(|e| in_context(e, "no QMP event", &deadline));
        // Built outside the lock: the reader may go on meanwhile.
        Ok(match self.none_if_no_wait(found, &wait)? {
            Some(taken) => taken.into_json_array(),
            None => "[]".to_owned(),
        })
    }

    /// Drops every queued event.
    pub fn clear_events(&self) {
        let mut st = self.shared.lock();
        st.routes.events.clear();
        st.routes.events.release();
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
        st.routes.events.set_max(max);
        if st.routes.events.dropped() > 0 {
            st.reader.sleepers.wake_all();
        }
    }

    /// The cap set by [`set_max_queued_events`](Self::set_max_queued_events).
    pub fn max_queued_events(&self) -> Option<usize> {
        self.shared.lock().routes.events.max()
    }

    /// How many events the cap has dropped since the connection started.
    pub fn dropped_events(&self) -> u64 {
        self.shared.lock().routes.events.dropped()
    }

    /// How many events are queued, unread.
    pub fn queued_events(&self) -> usize {
        self.shared.lock().routes.events.len()
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
        self.shared.lock().reader.closed
    }

    /// True until the connection ends (EOF, protocol fault, [`close`](Self::close)).
    pub fn is_connected(&self) -> bool {
        self.shared.lock().reader.broken.is_none()
    }

    /// Closes the connection: every waiter fails with [`Error::Disconnected`]; queued events stay
    /// readable. Idempotent. Returns once no thread does I/O on the socket (a leader in poll
    /// is woken at once; a sender never blocks), then closes it.
    pub fn close(&self) {
        {
            let mut st = self.shared.lock();
            st.reader.broken.get_or_insert(Broken::Closed);
            st.reader.closed = true;
            st.end_of_connection();
        }
        // Wake a leader blocked in poll: it sees EOF and lets go of the socket. Only while we
        // still own the descriptor: once closed, its number may belong to someone else.
        if let Some(sock) = self.shared.sock().as_ref() {
            sys::socket::shutdown(sock.as_fd());
        }
        let mut st = self.shared.lock();
        st.reader.sleepers.wake_all();
        // The leader wakes everyone once it sees the connection broken and stops.
        let idle = Arc::new(Condvar::new());
        while st.reader.reading || st.out.writing {
            st = reader::sleep(st, &idle, Interest::Idle, None);
        }
        st.reader.input.release();
        drop(st);
        let sock = self.shared.sock().take();
        if sock.is_some() {
            debug!("{}: QMP connection closed", self.shared.nickname);
        }
    }
}

/// The error for events dropped by the cap, once per drop.
fn dropped_error<T>(st: &mut State) -> Option<Result<T>> {
    let n = st.routes.events.take_unreported();
    (n > 0).then(|| {
        Err(Error::EventsDropped {
            dropped: n,
            max: st.routes.events.max().unwrap_or(0),
        })
    })
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

/// The error for a wait that ended: a timeout names what timed out and the bound (`what
/// within N ms`); anything else is passed on.
fn in_context(ended: Ended, what: &str, deadline: &Deadline<'_>) -> Error {
    match ended {
        Ended::TimedOut => Error::Timeout(format!("{what} {}", deadline.within())),
        Ended::Failed(e) => e,
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
