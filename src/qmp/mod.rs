//! A QMP client: the QEMU Machine Protocol over a connected stream socket.
//!
//! One [`QmpClient`] may be used from many threads at once. Every command carries its own `id`
//! and each caller gets the reply with its id. There is no reader thread: whichever caller is
//! waiting reads the socket on behalf of all (a "leader"), files replies under their ids and
//! events in the queue, and hands the role on when its own wait is over. Events are queued in
//! arrival order and never dropped; end of stream or a protocol fault is sticky and fails every
//! waiter at once.

mod framing;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::log::debug;
use crate::sys::{self, poll, pollfd, POLLIN, POLLOUT};
use crate::wait::{Deadline, Wait, Wake};
pub(crate) use framing::preview;
use framing::LineBuffer;

/// Default cap on the size of one message from QEMU (64 MiB). `query-qmp-schema` is ~150 KiB.
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// A connected QMP client.
pub struct QmpClient {
    shared: Arc<Shared>,
}

struct Shared {
    /// The socket, for the reader; valid while `state.reading` or until `writer` is closed.
    raw: RawFd,
    /// Owns the socket; its lock serialises writes. `None` once closed.
    writer: Mutex<Option<OwnedFd>>,
    state: Mutex<State>,
    next_id: AtomicU64,
    nickname: String,
    /// A unix socket, which can carry descriptors (SCM_RIGHTS); a TCP one cannot.
    unix: bool,
}

struct State {
    /// Commands in flight: `None` until their reply arrives.
    replies: HashMap<u64, Option<Value>>,
    events: VecDeque<Value>,
    greeting: Option<Value>,
    /// A caller is reading the socket for everyone.
    reading: bool,
    /// Callers asleep until news that concerns them (or their turn to read).
    sleepers: Vec<Sleeper>,
    /// Sticky end of the connection.
    broken: Option<Broken>,
    /// `close` was called (whatever ended the connection first).
    closed: bool,
    input: LineBuffer,
}

/// What a sleeping caller waits for, so that a reader wakes only those its news concerns:
/// with many threads, waking everyone for every reply costs more than QEMU's round trip.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interest {
    /// The reply with this id.
    Reply(u64),
    /// Events (or the greeting).
    Events,
    /// Nothing but the end of reading (`close`).
    Idle,
}

struct Sleeper {
    interest: Interest,
    wake: Arc<Condvar>,
}

/// What one round of reading brought.
#[derive(Default)]
struct News {
    replies: Vec<u64>,
    events: bool,
}

#[derive(Clone, Debug)]
enum Broken {
    Eof,
    Closed,
    Exited,
    Protocol(String),
    Io(String),
}

impl Broken {
    fn error(&self) -> Error {
        match self {
            Broken::Eof => Error::Disconnected("QEMU closed the monitor connection".into()),
            Broken::Closed => Error::Disconnected("the connection was closed".into()),
            Broken::Exited => Error::Disconnected("QEMU exited".into()),
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
        Ok(QmpClient {
            shared: Arc::new(Shared {
                raw: socket.as_raw_fd(),
                writer: Mutex::new(Some(socket)),
                state: Mutex::new(State {
                    replies: HashMap::new(),
                    events: VecDeque::new(),
                    greeting: None,
                    reading: false,
                    sleepers: Vec::new(),
                    broken: None,
                    closed: false,
                    input: LineBuffer::new(max_message),
                }),
                next_id: AtomicU64::new(1),
                nickname: nickname.to_owned(),
                unix,
            }),
        })
    }

    /// Reads the greeting (before writing anything), then negotiates capabilities. Events that
    /// arrive meanwhile are queued. Returns the greeting.
    pub fn handshake(&self, wait: impl Into<Wait>) -> Result<Value> {
        self.handshake_watching(&wait.into(), None)
    }

    /// [`handshake`](Self::handshake), failing at once when `exit_fd` (a pidfd) becomes readable.
    pub(crate) fn handshake_watching(
        &self,
        wait: &Wait,
        exit_fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value> {
        let deadline = wait.start()?;
        let greeting = self
            .wait_until(Interest::Events, &deadline, exit_fd, |st| {
                st.greeting.take()
            })
            .map_err(|e| in_context(e, "waiting for the QMP greeting"))?;
        let valid = greeting["QMP"]["version"]["qemu"].is_object()
            && greeting["QMP"]["capabilities"].is_array();
        if !valid {
            return Err(Error::Protocol(format!(
                "malformed greeting: {}",
                preview(&greeting.to_string())
            )));
        }
        let reply = self
            .execute_until("qmp_capabilities", None, &deadline, exit_fd)
            .map_err(|e| in_context(e, "negotiating QMP capabilities"))?;
        into_return(reply)?;
        Ok(greeting)
    }

    /// Runs a command and returns QEMU's raw response object, `{"return": …}` or
    /// `{"error": {"class": …, "desc": …}}`.
    pub fn execute(&self, cmd: &str, args: Option<&Value>, wait: impl Into<Wait>) -> Result<Value> {
        let wait = wait.into();
        self.execute_until(cmd, args, &wait.start()?, None)
    }

    /// Runs a command and returns the value of its `return`, or [`Error::Qmp`].
    pub fn cmd(&self, cmd: &str, args: Option<&Value>, wait: impl Into<Wait>) -> Result<Value> {
        into_return(self.execute(cmd, args, wait)?)
    }

    fn execute_until(
        &self,
        cmd: &str,
        args: Option<&Value>,
        deadline: &Deadline<'_>,
        exit_fd: Option<BorrowedFd<'_>>,
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
        line.extend_from_slice(b"{\"execute\":");
        serde_json::to_writer(&mut line, cmd).expect("a string always serialises");
        if let Some(args) = args {
            line.extend_from_slice(b",\"arguments\":");
            serde_json::to_writer(&mut line, args).expect("a JSON value always serialises");
        }
        std::io::Write::write_fmt(&mut line, format_args!(",\"id\":{id}}}"))
            .expect("writing to a Vec cannot fail");

        {
            let mut st = self.shared.lock();
            if let Some(broken) = &st.broken {
                return Err(broken.error());
            }
            st.replies.insert(id, None);
        }
        let result = self.write_all(&line, deadline).and_then(|()| {
            self.wait_until(Interest::Reply(id), deadline, exit_fd, |st| {
                st.replies.get_mut(&id).and_then(Option::take)
            })
        });
        self.shared.lock().replies.remove(&id);
        let mut response = result.map_err(|e| in_context(e, &format!("running {cmd:?}")))?;
        // The id is ours, for pairing; callers get the response as QEMU meant it.
        if let Some(fields) = response.as_object_mut() {
            fields.remove("id");
        }
        Ok(response)
    }

    /// Sends `fd` with SCM_RIGHTS (one space byte as payload), for QEMU's `getfd` / `add-fd`
    /// commands, which take the descriptor that arrived last.
    pub fn send_fd(&self, fd: BorrowedFd<'_>) -> Result<()> {
        // Over TCP the kernel would drop the descriptor and send the byte: QEMU's next
        // getfd would fail far from the cause.
        if !self.shared.unix {
            return Err(Error::Invalid(
                "file descriptors can only be passed over a unix socket monitor, not TCP".into(),
            ));
        }
        let writer = self.shared.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sock) = writer.as_ref() else {
            return Err(Broken::Closed.error());
        };
        loop {
            let err = match sys::socket::send_fd(sock.as_fd(), fd) {
                Ok(_) => {
                    debug!(
                        "{} >>> (SCM_RIGHTS fd {})",
                        self.shared.nickname,
                        fd.as_raw_fd()
                    );
                    return Ok(());
                }
                Err(err) => err,
            };
            match err.kind() {
                std::io::ErrorKind::WouldBlock => {
                    poll(&mut [pollfd(sock.as_raw_fd(), POLLOUT)], None)
                        .map_err(|e| Error::io("waiting to send a descriptor", e))?;
                }
                _ => {
                    return Err(Error::Disconnected(format!(
                        "sending a file descriptor over QMP failed: {err}"
                    )))
                }
            }
        }
    }

    /// The next event, oldest first. With a zero wait returns `None` when none is queued or
    /// readable now; otherwise waits and fails with [`Error::Timeout`].
    pub fn pull_event(&self, wait: impl Into<Wait>) -> Result<Option<Value>> {
        self.take_event(|_| true, wait)
    }

    /// Removes and returns the oldest queued event for which `pred` holds, reading more as
    /// needed; events that do not match stay queued, in order.
    pub fn take_event(
        &self,
        mut pred: impl FnMut(&Value) -> bool,
        wait: impl Into<Wait>,
    ) -> Result<Option<Value>> {
        let wait = wait.into();
        let found = self
            .wait_until(Interest::Events, &wait.start()?, None, |st| {
                let pos = st.events.iter().position(&mut pred)?;
                st.events.remove(pos)
            })
            .map_err(|e| in_context(e, "waiting for a QMP event"));
        self.none_if_no_wait(found, &wait)
    }

    /// All queued events. With a non-zero wait, waits until there is at least one.
    pub fn get_events(&self, wait: impl Into<Wait>) -> Result<Vec<Value>> {
        let wait = wait.into();
        let found = self
            .wait_until(Interest::Events, &wait.start()?, None, |st| {
                (!st.events.is_empty()).then(|| st.events.drain(..).collect())
            })
            .map_err(|e| in_context(e, "waiting for a QMP event"));
        Ok(self.none_if_no_wait(found, &wait)?.unwrap_or_default())
    }

    /// Drops every queued event.
    pub fn clear_events(&self) {
        self.shared.lock().events.clear();
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
    /// readable. Idempotent.
    pub fn close(&self) {
        {
            let mut st = self.shared.lock();
            st.broken.get_or_insert(Broken::Closed);
            st.closed = true;
        }
        // Wake a reader blocked in poll: it sees EOF and lets go of the socket. Only while we
        // still own the descriptor: once closed, its number may belong to someone else.
        if let Some(sock) = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            sys::socket::shutdown(sock.as_fd());
        }
        let mut st = self.shared.lock();
        st.wake_all();
        // The reader wakes everyone once it sees the connection broken and stops reading.
        let idle = Arc::new(Condvar::new());
        while st.reading {
            st = sleep(st, &idle, Interest::Idle, None);
        }
        drop(st);
        let sock = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if sock.is_some() {
            debug!("{}: QMP connection closed", self.shared.nickname);
        }
    }

    fn write_all(&self, mut buf: &[u8], deadline: &Deadline<'_>) -> Result<()> {
        let writer = self.shared.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sock) = writer.as_ref() else {
            return Err(Broken::Closed.error());
        };
        debug!(
            "{} >>> {}",
            self.shared.nickname,
            String::from_utf8_lossy(buf).trim_end()
        );
        let whole = buf.len();
        // Giving up in the middle of a command would leave QEMU to read the next command as its
        // rest: the stream cannot be used any more.
        let give_up = |err: Error, left: usize| {
            if left < whole {
                self.fail(Broken::Protocol(format!(
                    "a command was only partly sent ({err}); the connection cannot be used any more"
                )));
            }
            err
        };
        while !buf.is_empty() {
            // A dead peer is EPIPE here, never a SIGPIPE.
            let err = match sys::socket::send(sock.as_fd(), buf) {
                Ok(n) => {
                    buf = &buf[n..];
                    continue;
                }
                Err(err) => err,
            };
            match err.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock => {
                    if deadline.cancelled() {
                        return Err(give_up(Error::Interrupted, buf.len()));
                    }
                    let mut fds = vec![pollfd(sock.as_raw_fd(), POLLOUT)];
                    if let Some(fd) = deadline.cancel_fd()? {
                        fds.push(pollfd(fd, POLLIN));
                    }
                    let ready = poll(&mut fds, deadline.remaining())
                        .map_err(|e| Error::io("waiting to write to the monitor", e))?;
                    if ready == 0 {
                        let err = Error::Timeout("writing to the monitor".into());
                        return Err(give_up(err, buf.len()));
                    }
                }
                // The peer is gone; what it sent before stays readable for the other callers,
                // who see the end of the stream when they get there.
                _ => {
                    return Err(Error::Disconnected(format!(
                        "writing to the monitor failed: {err}"
                    )))
                }
            }
        }
        Ok(())
    }

    fn fail(&self, broken: Broken) {
        let mut st = self.shared.lock();
        st.broken.get_or_insert(broken);
        st.wake_all();
    }

    /// Blocks until `ready` yields a value, reading the socket while nobody else does.
    ///
    /// `ready` runs under the state lock whenever news of `interest` may have come. Order of
    /// checks: what is ready wins over a broken connection (a reply that arrived before EOF is
    /// still delivered), which wins over cancel and timeout. Whoever leaves while nobody reads
    /// hands the reading role to one sleeper.
    fn wait_until<T>(
        &self,
        interest: Interest,
        deadline: &Deadline<'_>,
        exit_fd: Option<BorrowedFd<'_>>,
        ready: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T> {
        let _watch = deadline.cancel.map(|c| {
            let sleeper: std::sync::Weak<dyn Wake> = Arc::downgrade(&self.shared) as _;
            c.watch(sleeper)
        });
        let (st, result) = self.wait_locked(interest, deadline, exit_fd, ready);
        st.promote();
        result
    }

    fn wait_locked<T>(
        &self,
        interest: Interest,
        deadline: &Deadline<'_>,
        exit_fd: Option<BorrowedFd<'_>>,
        mut ready: impl FnMut(&mut State) -> Option<T>,
    ) -> (MutexGuard<'_, State>, Result<T>) {
        let mut looked = false;
        // Made only when this caller has to sleep: a lone caller always reads.
        let mut wake = None;
        let mut st = self.shared.lock();
        loop {
            if let Some(v) = ready(&mut st) {
                return (st, Ok(v));
            }
            if let Some(broken) = &st.broken {
                let err = broken.error();
                return (st, Err(err));
            }
            if deadline.cancelled() {
                return (st, Err(Error::Interrupted));
            }
            let left = deadline.remaining();
            let expired = left == Some(std::time::Duration::ZERO);
            if expired && (looked || st.reading) {
                return (st, Err(Error::Timeout(String::new())));
            }
            if st.reading {
                let wake = wake.get_or_insert_with(|| Arc::new(Condvar::new()));
                st = sleep(st, wake, interest, left);
                continue;
            }
            st.reading = true;
            let mut input = std::mem::replace(&mut st.input, LineBuffer::new(0));
            drop(st);
            let mut msgs = Vec::new();
            let outcome = self.read_some(&mut input, &mut msgs, deadline, exit_fd);
            looked = true;
            st = self.shared.lock();
            st.input = input;
            st.reading = false;
            let mut news = News::default();
            for msg in msgs {
                st.dispatch(msg, &self.shared, &mut news);
            }
            if let Err(broken) = outcome {
                st.broken.get_or_insert(broken);
            }
            if st.broken.is_some() {
                st.wake_all();
            } else {
                st.wake_concerned(&news);
            }
        }
    }

    /// One round of reading: waits (bounded by the deadline) for input and parses what came.
    fn read_some(
        &self,
        input: &mut LineBuffer,
        msgs: &mut Vec<Value>,
        deadline: &Deadline<'_>,
        exit_fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), Broken> {
        let raw = self.shared.raw;
        let mut fds = vec![pollfd(raw, POLLIN)];
        let io = |e: Error| Broken::Io(e.to_string());
        if let Some(fd) = deadline.cancel_fd().map_err(io)? {
            fds.push(pollfd(fd, POLLIN));
        }
        if let Some(fd) = exit_fd {
            fds.push(pollfd(fd.as_raw_fd(), POLLIN));
        }
        let ready = poll(&mut fds, deadline.remaining())
            .map_err(|e| Broken::Io(format!("waiting for the monitor: {e}")))?;
        if ready == 0 {
            return Ok(());
        }
        if fds[0].revents == 0 {
            // Cancel or exit: the exit fd counts only once the socket has nothing left.
            return match exit_fd {
                Some(_) if fds.last().is_some_and(|f| f.revents != 0) => Err(Broken::Exited),
                _ => Ok(()),
            };
        }
        const CHUNK: usize = 64 << 10;
        // The reading role keeps the socket open while we read it by number (close waits for
        // the reader to leave).
        let n = match input.fill(CHUNK, |room| sys::socket::recv(raw, room)) {
            Ok(n) => n,
            Err(err) => {
                return match err.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(()),
                    _ => Err(Broken::Io(format!("reading the monitor failed: {err}"))),
                };
            }
        };
        input.drain_messages(msgs).map_err(Broken::Protocol)?;
        if n == 0 {
            if input.has_partial() {
                return Err(Broken::Protocol(
                    "the monitor closed in the middle of a message".into(),
                ));
            }
            return Err(Broken::Eof);
        }
        Ok(())
    }
}

/// Sleeps on `wake` (at most `timeout`) as a sleeper interested in `interest`.
fn sleep<'a>(
    mut st: MutexGuard<'a, State>,
    wake: &Arc<Condvar>,
    interest: Interest,
    timeout: Option<std::time::Duration>,
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

    /// When nobody reads, wakes one sleeper to take over (or to find it has nothing left to
    /// wait for, and pass the turn on when it leaves).
    fn promote(&self) {
        if !self.reading {
            if let Some(s) = self.sleepers.first() {
                s.wake.notify_one();
            }
        }
    }

    fn dispatch(&mut self, msg: Value, shared: &Shared, news: &mut News) {
        debug!("{} <<< {}", shared.nickname, msg);
        if msg.get("event").is_some() {
            self.events.push_back(msg);
            news.events = true;
        } else if msg.get("return").is_some() || msg.get("error").is_some() {
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
            Some(slot) if slot.is_none() => {
                *slot = Some(msg);
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

fn in_context(err: Error, what: &str) -> Error {
    match err {
        Error::Timeout(s) if s.is_empty() => Error::Timeout(what.to_owned()),
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
    Ok(out)
}
