//! A client for QEMU's guest agent (`qemu-ga`), which runs inside the guest and answers on a
//! virtio-serial port named `org.qemu.guest_agent.0`.
//!
//! The agent speaks QMP's JSON, with traps of its own that this client handles:
//!
//! - **Nobody answers until the guest has booted** and started `qemu-ga`; what we write meanwhile
//!   waits in the channel. [`GuestAgent::sync`] sends `guest-sync-delimited` with a fresh random
//!   id, again every retry interval, until the agent answers or the wait ends.
//! - **Stale replies**: a reply to a command whose caller gave up (timeout, cancel, an agent
//!   killed and restarted) arrives later, and would be taken for the next command's. Every
//!   command carries a fresh random `id`, which the agent echoes; a reply with another id is
//!   dropped. After a timeout, a cancel or a protocol fault the channel is marked out of sync,
//!   and the next call synchronises first: it sends a 0xFF byte (which resets the agent's JSON
//!   parser), then `guest-sync-delimited`, whose reply the agent prefixes with a 0xFF sentinel;
//!   everything before the sentinel is dropped, and replies to older syncs too.
//! - **One command at a time**: the agent is sequential. Callers from many threads queue (in
//!   arrival order) for the channel; each waits at most its own [`Wait`], which covers the time
//!   in the queue.
//!
//! Errors: an agent error reply is [`Error::Qmp`] with the agent's class and description (the
//! agent's errors are QMP errors). A silent agent is [`Error::Timeout`], a closed channel
//! (QEMU exited, the machine shut down) [`Error::AgentDisconnected`], a reply over the size cap or
//! that is not JSON [`Error::Protocol`].

pub(crate) mod base64;
mod commands;
mod framing;
pub(crate) mod launch;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::gate::{Gate, Pass};
use crate::log::debug;
use crate::qmp::preview;
use crate::sys::{self, poll, pollfd, POLLIN, POLLOUT};
use crate::wait::{Deadline, Wait, Wake};
pub use commands::{
    Exec, ExecOutput, ShutdownMode, DEFAULT_EXEC_INTERVAL, DEFAULT_MAX_OUTPUT, FILE_CHUNK,
};
use framing::{Frames, Next};
pub use launch::AgentChannel;

/// The default bound of an agent call ([`Wait::call_default`], `QM_WAIT_DEFAULT` in C): the
/// crate's [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT), 30 s.
pub const DEFAULT_AGENT_TIMEOUT: Duration = crate::wait::DEFAULT_TIMEOUT;

/// How often [`GuestAgent::sync`] sends a new `guest-sync-delimited` while the agent is silent.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// Default cap on one reply from the agent (64 MiB). `qemu-ga` caps each stream of `guest-exec`
/// at 16 MiB, which base64 makes 21 MiB; a reply is read whole before it is decoded.
pub const DEFAULT_MAX_REPLY: usize = 64 << 20;

/// Bytes read from the channel at a time.
const READ_CHUNK: usize = 64 << 10;

/// The virtio-serial port name `qemu-ga` looks for.
pub const AGENT_PORT_NAME: &str = "org.qemu.guest_agent.0";

/// A connection to a guest agent. Every method takes `&self` and may be called from many
/// threads at once: commands are queued and run one at a time.
pub struct GuestAgent {
    inner: Arc<Inner>,
}

struct Inner {
    sock: UnixStream,
    nickname: String,
    sync_interval: Duration,
    closed: AtomicBool,
    /// Sticky end of the channel (QEMU hung up); readable without waiting for the channel.
    eof: AtomicBool,
    // Lock order: the `turn` gate (arrival order; its lock is held only to take or give back
    // a turn, never while the channel is used) before `chan` (the socket and its frames;
    // held by the caller whose turn it is). Neither is held while calling out of the agent.
    turn: Arc<Gate>,
    chan: Mutex<Channel>,
    ids: RandomState,
    counter: AtomicU64,
    /// The machine's view of the guest going down (see [`GoneWatch`]).
    gone: OnceLock<GoneWatch>,
    /// The machine's transcript, when it has one: commands and their replies, never the
    /// protocol's own syncs (see `qmp/transcript.rs`).
    transcript: crate::qmp::Transcript,
}

/// Tells whether the guest went down (its agent's port closed, a reset, a shutdown) at or
/// after a time: the machine reads it from QMP events. The agent itself cannot always tell:
/// a guest that reboots or halts kills `qemu-ga` before it answers, and QEMU keeps the channel
/// open.
pub(crate) type GoneWatch = Box<dyn Fn(SystemTime) -> bool + Send + Sync>;

/// How often a `guest-shutdown` looks at the machine's events while the agent is silent: the
/// two streams have different readers, and a guest takes far longer than this to go down.
const GONE_CHECK: Duration = Duration::from_millis(50);

/// The channel's reading state; only the caller holding the turn touches it.
struct Channel {
    frames: Frames,
    /// Reads land here first; allocated (and zeroed) once, not per read.
    scratch: Vec<u8>,
    /// The last sync succeeded and nothing went wrong since.
    synced: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAgent")
            .field("nickname", &self.inner.nickname)
            .field("fd", &self.inner.sock.as_raw_fd())
            .finish()
    }
}

/// What one bounded read of the channel brought.
enum Got {
    Frame(framing::Frame),
    /// The bound passed (the read's own `until`, which may be shorter than the call's).
    TimedOut,
}

impl GuestAgent {
    /// Wraps a connected stream socket to the agent's chardev. Nothing is read or written until
    /// the first call, which synchronises. `max_reply` caps the size of one reply.
    pub fn new(sock: UnixStream, nickname: &str, max_reply: usize) -> Result<GuestAgent> {
        GuestAgent::with_sync_interval(sock, nickname, max_reply, DEFAULT_SYNC_INTERVAL)
    }

    /// [`new`](Self::new) with another retry interval for `guest-sync-delimited`.
    pub fn with_sync_interval(
        sock: UnixStream,
        nickname: &str,
        max_reply: usize,
        sync_interval: Duration,
    ) -> Result<GuestAgent> {
        sock.set_nonblocking(true)
            .map_err(|e| Error::io("making the guest agent socket non-blocking", e))?;
        Ok(GuestAgent {
            inner: Arc::new(Inner {
                sock,
                nickname: nickname.to_owned(),
                sync_interval: sync_interval.max(Duration::from_millis(1)),
                closed: AtomicBool::new(false),
                eof: AtomicBool::new(false),
                turn: Arc::new(Gate::default()),
                chan: Mutex::new(Channel {
                    frames: Frames::new(max_reply.max(1024)),
                    scratch: vec![0; READ_CHUNK],
                    synced: false,
                }),
                ids: RandomState::new(),
                counter: AtomicU64::new(0),
                gone: OnceLock::new(),
                transcript: crate::qmp::Transcript::default(),
            }),
        })
    }

    /// Waits until the agent answers `guest-sync-delimited` (sent again every retry interval),
    /// dropping whatever stale data sits in the channel. Other calls do this by themselves when
    /// needed; call it to wait for the agent to come up (e.g. right after launch).
    pub fn sync(&self, wait: impl Into<Wait>) -> Result<()> {
        let wait = agent_wait(wait);
        let deadline = wait.start()?;
        let _turn = self.inner.acquire(&deadline)?;
        let mut chan = lock(&self.inner.chan);
        self.inner.check_open()?;
        self.inner.sync_locked(&mut chan, &deadline)
    }

    /// Runs an agent command and returns the raw reply, `{"return": …}` or
    /// `{"error": {"class": …, "desc": …}}` (without the `id` qm added). Synchronises first if
    /// needed. `args`, if given, must be a JSON object.
    pub fn execute(&self, cmd: &str, args: Option<&Value>, wait: impl Into<Wait>) -> Result<Value> {
        let wait = agent_wait(wait);
        self.inner.execute(cmd, args, &wait.start()?)
    }

    /// Runs an agent command and returns its `return` value, or [`Error::Qmp`] with the agent's
    /// error class and description.
    pub fn cmd(&self, cmd: &str, args: Option<&Value>, wait: impl Into<Wait>) -> Result<Value> {
        crate::qmp::into_return(self.execute(cmd, args, wait)?)
    }

    /// `guest-shutdown`: asks the guest to power off, halt or reboot. The agent does not answer
    /// a shutdown that works, so qm follows it with `guest-sync-delimited`. Success is its reply
    /// (the agent took the command and lives on for a moment), the end of the channel (QEMU
    /// exited with the guest) or, for the agent of a [`Machine`](crate::Machine) with QMP, the
    /// guest going down (QEMU reports the agent's port closed, or a reset or shutdown by the
    /// guest). An error reply (e.g. the guest's shutdown program failed) is [`Error::Qmp`].
    /// Either way the channel is resynchronised before the next command.
    pub fn shutdown(&self, mode: ShutdownMode, wait: impl Into<Wait>) -> Result<()> {
        let wait = agent_wait(wait);
        self.inner.shutdown(mode, &wait.start()?)
    }

    /// Lets the agent read the machine's view of the guest going down (set once, at launch).
    pub(crate) fn set_gone_watch(&self, watch: GoneWatch) {
        let _ = self.inner.gone.set(watch);
    }

    /// Records commands and replies in the machine's transcript from now on (set once, at
    /// launch, before the first call).
    pub(crate) fn set_transcript(&self, file: Arc<crate::qmp::TranscriptFile>) {
        self.inner.transcript.set(file);
    }

    /// Closes the channel: a call in progress and every later one fail with
    /// [`Error::AgentDisconnected`]. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// True once the channel is closed ([`close`](Self::close), or QEMU hung up).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst) || self.inner.eof.load(Ordering::SeqCst)
    }
}

impl Drop for GuestAgent {
    fn drop(&mut self) {
        self.inner.close();
    }
}

impl Inner {
    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            // Wakes a caller blocked reading: it sees the end of the stream. The descriptor
            // itself stays open until the last user lets go of it.
            let _ = self.sock.shutdown(Shutdown::Both);
            debug!("{}: guest agent channel closed", self.nickname);
        }
        self.turn.wake();
    }

    fn check_open(&self) -> Result<()> {
        if self.eof.load(Ordering::SeqCst) || self.closed.load(Ordering::SeqCst) {
            return Err(Error::AgentDisconnected(
                "its channel is closed (QEMU exited, or the machine shut down)".into(),
            ));
        }
        Ok(())
    }

    /// A fresh id: random, so a reply left over from another client or an earlier run never
    /// matches; below 2^53 so that any JSON reader keeps it exact.
    fn fresh_id(&self) -> u64 {
        let mut h = self.ids.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        h.finish() & ((1 << 53) - 1)
    }

    /// Waits for this caller's turn on the channel, in arrival order.
    fn acquire(&self, deadline: &Deadline<'_>) -> Result<Pass<'_>> {
        let closed = || {
            self.closed.load(Ordering::SeqCst).then(|| {
                Error::AgentDisconnected(
                    "its channel is closed (QEMU exited, or the machine shut down)".into(),
                )
            })
        };
        self.turn.enter(deadline, closed, |deadline| {
            Error::Timeout(format!(
                "the guest agent channel did not come free {} (another command holds it)",
                deadline.within()
            ))
        })
    }

    fn execute(
        self: &Arc<Self>,
        cmd: &str,
        args: Option<&Value>,
        deadline: &Deadline<'_>,
    ) -> Result<Value> {
        if let Some(args) = args {
            if !args.is_object() {
                return Err(Error::Invalid(format!(
                    "arguments of {cmd:?} must be a JSON object, got {}",
                    preview(&args.to_string())
                )));
            }
        }
        let _turn = self.acquire(deadline)?;
        let mut chan = lock(&self.chan);
        self.check_open()?;
        if !chan.synced {
            self.sync_locked(&mut chan, deadline)?;
        }
        let id = self.fresh_id();
        let line = command_line(cmd, args, id);
        let sent_at = SystemTime::now();
        self.transcript.agent("out", &line);
        let result = self
            .write_all(&line, deadline)
            .and_then(|()| self.reply_to(&mut chan, id, deadline, sent_at));
        match result {
            Ok(mut reply) => {
                self.transcript.agent_reply(&reply);
                if let Some(fields) = reply.as_object_mut() {
                    fields.remove("id");
                }
                Ok(reply)
            }
            Err(e) => {
                // Its reply may still come: the next call must not take it for its own.
                chan.synced = false;
                Err(in_context(
                    e,
                    &format!("{cmd}: no reply from the guest agent"),
                    deadline,
                ))
            }
        }
    }

    fn shutdown(self: &Arc<Self>, mode: ShutdownMode, deadline: &Deadline<'_>) -> Result<()> {
        let _turn = self.acquire(deadline)?;
        let mut chan = lock(&self.chan);
        self.check_open()?;
        if !chan.synced {
            self.sync_locked(&mut chan, deadline)?;
        }
        // From here on the agent is going away: whatever happens, sync before the next command.
        chan.synced = false;
        let id = self.fresh_id();
        let sync_id = self.fresh_id();
        let mut lines = command_line(
            "guest-shutdown",
            Some(&serde_json::json!({ "mode": mode.as_str() })),
            id,
        );
        // The sync that follows is the protocol's, not the program's: not recorded.
        self.transcript.agent("out", &lines);
        // No 0xFF here: the agent would answer it with an error that has no id.
        lines.extend_from_slice(&command_line(
            "guest-sync-delimited",
            Some(&serde_json::json!({ "id": sync_id })),
            sync_id,
        ));
        let until = deadline.remaining().map(|left| Instant::now() + left);
        let sent_at = SystemTime::now();
        let outcome = self.write_all(&lines, deadline).and_then(|()| loop {
            let frame = match self.read_frame(&mut chan, self.slice(until), deadline)? {
                Got::Frame(f) => f,
                Got::TimedOut => {
                    // A guest that reboots or halts kills the agent before it answers.
                    if self.gone.get().is_some_and(|gone| gone(sent_at)) {
                        return Ok(());
                    }
                    if until.is_some_and(|u| Instant::now() >= u) {
                        return Err(Error::Timeout(format!(
                            "guest-shutdown: no answer from the guest agent {}, the channel did \
                             not close, and the guest did not go down",
                            deadline.within()
                        )));
                    }
                    continue;
                }
            };
            let Ok(msg) = serde_json::from_slice::<Value>(&frame.line) else {
                continue;
            };
            debug!("{} <<< {}", self.nickname, msg);
            if frame.delimited {
                if msg["return"].as_u64() == Some(sync_id) {
                    return Ok(());
                }
                continue;
            }
            // Without an id: an agent that does not echo ids (or could not read ours).
            let ours = ours_or_no_id(&msg, id);
            if ours {
                self.transcript.agent_reply(&msg);
                return crate::qmp::into_return(msg).map(drop);
            }
        });
        match outcome {
            // The end of the channel: QEMU exited with the guest, as asked.
            Err(Error::AgentDisconnected(_))
                if self.eof.load(Ordering::SeqCst) && !self.closed.load(Ordering::SeqCst) =>
            {
                Ok(())
            }
            other => other.map_err(|e| in_context(e, "guest-shutdown", deadline)),
        }
    }

    /// Reads until the reply with `id`, or one without an id (an agent that does not echo ids,
    /// or could not read ours). Replies with other ids are stale and dropped.
    ///
    /// When the guest goes down after `sent_at` (the agent's port closed: `qemu-ga` was killed,
    /// the guest rebooted), the reply will never come: fails then, rather than at the timeout.
    fn reply_to(
        &self,
        chan: &mut Channel,
        id: u64,
        deadline: &Deadline<'_>,
        sent_at: SystemTime,
    ) -> Result<Value> {
        let until = deadline.remaining().map(|left| Instant::now() + left);
        loop {
            let frame = match self.read_frame(chan, self.slice(until), deadline)? {
                Got::Frame(f) => f,
                Got::TimedOut => {
                    if self.gone.get().is_some_and(|gone| gone(sent_at)) {
                        return Err(Error::AgentDisconnected(
                            "the agent went away before answering (its port closed: qemu-ga \
                             exited, or the guest rebooted or shut down)"
                                .into(),
                        ));
                    }
                    if until.is_some_and(|u| Instant::now() >= u) {
                        return Err(Error::Timeout(String::new()));
                    }
                    continue;
                }
            };
            let text = String::from_utf8_lossy(&frame.line);
            let msg = match serde_json::from_slice::<Value>(&frame.line) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    debug!(
                        "{}: skipping a line that is not a JSON object: {}",
                        self.nickname,
                        preview(&text)
                    );
                    continue;
                }
            };
            debug!("{} <<< {}", self.nickname, msg);
            let is_reply = msg.get("return").is_some() || msg.get("error").is_some();
            // In sync, a reply without an id is ours too: the agent could not read our id, or
            // does not echo ids (older agents); only a reply with another id is stale.
            let ours = !frame.delimited && is_reply && ours_or_no_id(&msg, id);
            if ours {
                return Ok(msg);
            }
            debug!(
                "{}: dropping a stale reply (not for id {id})",
                self.nickname
            );
        }
    }

    /// The bound of one read while waiting until `until`: with a [`GoneWatch`], short enough
    /// to look at the machine's events now and then.
    fn slice(&self, until: Option<Instant>) -> Option<Instant> {
        match (self.gone.get(), until) {
            (None, u) => u,
            (Some(_), None) => Some(Instant::now() + GONE_CHECK),
            (Some(_), Some(u)) => Some(u.min(Instant::now() + GONE_CHECK)),
        }
    }

    /// Sends `guest-sync-delimited` until the agent answers the latest one. Replies to earlier
    /// ones from this same call prove the agent is up: then no new one is sent, and the call
    /// waits for the latest, which the sequential agent answers last.
    fn sync_locked(&self, chan: &mut Channel, deadline: &Deadline<'_>) -> Result<()> {
        chan.synced = false;
        chan.frames.resync();
        let until = deadline.remaining().map(|left| Instant::now() + left);
        let mut sent: Vec<u64> = Vec::new();
        let mut heard = false;
        let mut next_send = Instant::now();
        loop {
            if deadline.cancelled() {
                return Err(Error::Interrupted);
            }
            let now = Instant::now();
            if !heard && now >= next_send {
                let id = self.fresh_id();
                // 0xFF first: the agent's parser drops any half command an earlier client left.
                let mut line = vec![0xFF];
                line.extend_from_slice(&command_line(
                    "guest-sync-delimited",
                    Some(&serde_json::json!({ "id": id })),
                    id,
                ));
                self.write_all(&line, deadline)
                    .map_err(|e| in_context(e, "sending guest-sync-delimited", deadline))?;
                sent.push(id);
                next_send = now + self.sync_interval;
            }
            let bound = match (heard, until) {
                (true, u) => u,
                (false, None) => Some(next_send),
                (false, Some(u)) => Some(u.min(next_send)),
            };
            match self.read_frame(chan, bound, deadline)? {
                Got::Frame(frame) if frame.delimited => {
                    let msg = serde_json::from_slice::<Value>(&frame.line).unwrap_or_default();
                    debug!("{} <<< (sync) {}", self.nickname, msg);
                    let answered = msg["return"].as_u64();
                    if answered.is_some() && answered == sent.last().copied() {
                        chan.synced = true;
                        return Ok(());
                    }
                    if answered.is_some_and(|a| sent.contains(&a)) {
                        heard = true;
                    }
                }
                Got::Frame(_) => {}
                Got::TimedOut => {
                    if until.is_some_and(|u| Instant::now() >= u) {
                        return Err(Error::Timeout(format!(
                            "no answer from the guest agent to guest-sync-delimited {} ({} \
                             sent; {}): is qemu-ga running in the guest?",
                            deadline.within(),
                            sent.len(),
                            if heard {
                                "it answered an earlier one, then fell silent"
                            } else {
                                "no answer at all"
                            }
                        )));
                    }
                }
            }
        }
    }

    /// The next line, reading as needed until `until` (`None`: no limit) or the cancel.
    fn read_frame(
        &self,
        chan: &mut Channel,
        until: Option<Instant>,
        deadline: &Deadline<'_>,
    ) -> Result<Got> {
        loop {
            match chan.frames.next() {
                Next::Frame(f) => return Ok(Got::Frame(f)),
                Next::Oversize => {
                    chan.synced = false;
                    return Err(Error::Protocol(
                        "a guest agent reply exceeds the size cap (see max_reply); the channel \
                         will be resynchronised"
                            .into(),
                    ));
                }
                Next::More => {}
            }
            self.check_open()?;
            if deadline.cancelled() {
                return Err(Error::Interrupted);
            }
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            let mut fds = vec![pollfd(self.sock.as_raw_fd(), POLLIN)];
            if let Some(fd) = deadline.cancel_fd()? {
                fds.push(pollfd(fd, POLLIN));
            }
            let ready = poll(&mut fds, left)
                .map_err(|e| Error::io("waiting for the guest agent channel", e))?;
            if ready == 0 {
                return Ok(Got::TimedOut);
            }
            if fds[0].revents == 0 {
                continue; // the cancel token: checked at the top
            }
            let Channel {
                frames, scratch, ..
            } = &mut *chan;
            match (&self.sock).read(scratch) {
                Ok(0) => {
                    self.eof.store(true, Ordering::SeqCst);
                    debug!("{}: guest agent channel: end of stream", self.nickname);
                    return Err(Error::AgentDisconnected(
                        "its channel closed (QEMU exited, or the machine shut down)".into(),
                    ));
                }
                Ok(n) => frames.push(&scratch[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.eof.store(true, Ordering::SeqCst);
                    return Err(Error::AgentDisconnected(format!(
                        "reading its channel failed: {e}"
                    )));
                }
            }
        }
    }

    fn write_all(&self, mut buf: &[u8], deadline: &Deadline<'_>) -> Result<()> {
        debug!(
            "{} >>> {}",
            self.nickname,
            String::from_utf8_lossy(buf).trim_start_matches('\u{fffd}')
        );
        while !buf.is_empty() {
            match sys::socket::send(self.sock.as_fd(), buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The guest is not reading (its port is closed: no agent yet).
                    if deadline.cancelled() {
                        return Err(Error::Interrupted);
                    }
                    let mut fds = vec![pollfd(self.sock.as_raw_fd(), POLLOUT)];
                    if let Some(fd) = deadline.cancel_fd()? {
                        fds.push(pollfd(fd, POLLIN));
                    }
                    let ready = poll(&mut fds, deadline.remaining())
                        .map_err(|e| Error::io("waiting to write to the guest agent", e))?;
                    if ready == 0 {
                        return Err(Error::Timeout(format!(
                            "could not write to the guest agent channel {} (the guest is not \
                             reading it)",
                            deadline.within()
                        )));
                    }
                }
                Err(e) => {
                    return Err(Error::AgentDisconnected(format!(
                        "writing to its channel failed: {e}"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// `{"execute": CMD, "arguments": ARGS, "id": ID}` as bytes.
fn command_line(cmd: &str, args: Option<&Value>, id: u64) -> Vec<u8> {
    let mut line = Vec::with_capacity(64);
    line.extend_from_slice(b"{\"execute\":");
    serde_json::to_writer(&mut line, cmd).expect("a string always serialises");
    if let Some(args) = args {
        line.extend_from_slice(b",\"arguments\":");
        serde_json::to_writer(&mut line, args).expect("a JSON value always serialises");
    }
    line.extend_from_slice(format!(",\"id\":{id}}}").as_bytes());
    line
}

/// One item of [`split_frames`]: a line (and whether a 0xFF sentinel came right before it),
/// or an oversize line that was dropped.
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
pub enum SplitFrame {
    /// A complete line, without its newline.
    Line {
        /// It followed a 0xFF sentinel.
        delimited: bool,
        /// Its bytes.
        line: Vec<u8>,
    },
    /// A line longer than the cap.
    Oversize,
}

/// Feeds `chunks` (as successive reads) through the agent channel's framing, optionally in
/// resync mode (everything before the first 0xFF dropped), and returns what it yields. For
/// fuzzing and tests; not a stable API.
#[doc(hidden)]
pub fn split_frames(chunks: &[&[u8]], max_line: usize, resync: bool) -> Vec<SplitFrame> {
    let mut frames = Frames::new(max_line);
    if resync {
        frames.resync();
    }
    let mut out = Vec::new();
    for chunk in chunks {
        frames.push(chunk);
        loop {
            match frames.next() {
                Next::More => break,
                Next::Oversize => out.push(SplitFrame::Oversize),
                Next::Frame(f) => out.push(SplitFrame::Line {
                    delimited: f.delimited,
                    line: f.line,
                }),
            }
        }
    }
    out
}

/// The wait of an agent call: its own default is [`DEFAULT_AGENT_TIMEOUT`].
fn agent_wait(wait: impl Into<Wait>) -> Wait {
    wait.into().or_default(Some(DEFAULT_AGENT_TIMEOUT))
}

/// True when `msg` carries `id`, or no id at all.
fn ours_or_no_id(msg: &Value, id: u64) -> bool {
    match msg.get("id") {
        Some(v) => v.as_u64() == Some(id),
        None => true,
    }
}

/// A timeout without a message yet says what did not happen and the bound, as the crate's
/// timeouts do ("guest-ping: no reply from the guest agent within 2000 ms").
fn in_context(err: Error, what: &str, deadline: &Deadline<'_>) -> Error {
    match err {
        Error::Timeout(s) if s.is_empty() => {
            Error::Timeout(format!("{what} {}", deadline.within()))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An agent on the other end: answers `guest-sync-delimited` (0xFF first), `guest-ping`,
    /// and nothing to `guest-shutdown`, as `qemu-ga` does.
    fn fake_agent(mut sock: UnixStream) {
        let mut out = sock.try_clone().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // Commands are a stream of JSON values (qm sends no newline).
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let msg = match values.next() {
                Some(Ok(msg)) => {
                    let end = values.byte_offset();
                    buf.drain(..end);
                    msg
                }
                _ => match sock.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        buf.extend(chunk[..n].iter().filter(|&&b| b != 0xFF));
                        continue;
                    }
                },
            };
            let reply = match msg["execute"].as_str() {
                Some("guest-sync-delimited") => {
                    let mut r = vec![0xFF];
                    r.extend(
                        serde_json::json!({"return": msg["arguments"]["id"]})
                            .to_string()
                            .bytes(),
                    );
                    r
                }
                Some("guest-ping") => serde_json::json!({"return": {}, "id": msg["id"]})
                    .to_string()
                    .into_bytes(),
                _ => continue,
            };
            if out.write_all(&[reply, b"\n".to_vec()].concat()).is_err() {
                return;
            }
        }
    }

    #[test]
    fn the_transcript_has_commands_and_replies_but_never_the_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let (ours, theirs) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || fake_agent(theirs));
        let agent = GuestAgent::new(ours, "t", DEFAULT_MAX_REPLY).unwrap();
        agent.set_transcript(crate::qmp::TranscriptFile::open(&path).unwrap());
        let t = Duration::from_secs(10);
        agent.sync(t).unwrap();
        agent.ping(t).unwrap();
        agent.shutdown(ShutdownMode::Powerdown, t).unwrap();
        agent.close();
        peer.join().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.contains(&0xFF),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("guest-sync"), "{text}");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seen: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| {
                assert_eq!(l["chan"], "agent", "{l}");
                let what = l["msg"]["execute"].as_str().unwrap_or("reply");
                (l["dir"].as_str().unwrap(), what)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("out", "guest-ping"),
                ("in", "reply"),
                ("out", "guest-shutdown")
            ],
            "{text}"
        );
        // The reply keeps its id, which pairs it with its command on replay.
        assert_eq!(lines[1]["msg"]["id"], lines[0]["msg"]["id"]);
    }
}
