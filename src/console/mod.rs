//! Console interaction: wait for patterns, send bytes and lines, run a command and wait for its
//! output, press a key until something shows — without losing a byte or blocking QEMU.
//!
//! A [`Console`] owns the host end of a stream socket (QEMU's serial chardev, or any other) and a
//! reader thread that takes every byte as soon as it arrives, so QEMU never blocks on a console
//! nobody reads. Each byte goes to
//! - the console log file, if there is one (every byte, nothing dropped);
//! - the in-memory history: the last [`buffer cap`](ConsoleOptions::buffer) bytes (default
//!   [`DEFAULT_BUFFER`], 1 MiB), readable at any time as the [transcript](Console::transcript);
//! - the waits, which consume the history in order: a wait returns the text up to and including
//!   its match and leaves the rest for the next one;
//! - the raw socket ([`Console::fd`]), for callers that read the console themselves: a separate
//!   copy, reading it does not consume what waits see, nor the other way round.
//!
//! **The cap.** Unread output is part of the history, so at most `cap` bytes wait to be
//! consumed. When the guest writes more than that before a wait consumes it, the oldest unread
//! bytes are dropped — counted in [`Stats::dropped`], and reported by the next wait that
//! returns text in [`Match::dropped`] — never hidden, and still in the console log file.
//!
//! **Searching.** Literal patterns resume where the last search stopped; a regular expression
//! is searched again over the whole unread output when new bytes arrive (linear each time). On a
//! chatty console, keep the unread output small (consume it, or [`Console::skip_unread`]) when
//! waiting for regular expressions. A regular expression's match is the one that ends first
//! (see [`Pattern`]), so what a wait returns does not depend on how the output was cut into reads.
//!
//! **Who reads.** The reader thread reads the socket while nobody waits. A waiting caller reads
//! it itself (no hand-off between threads on the way to its match); the thread steps aside until
//! 10 ms after the last wait, which QEMU's socket buffer covers many times over.
//!
//! **What each wait consumes.** [`Console::wait_for`] and [`Console::interrupt_until`]: the
//! unread text up to and including the match (earlier unread output included).
//! [`Console::exec`]: everything unread when it starts (dropped), then up to and including the
//! match, which can only be text that arrived after the call started. [`Console::run`]:
//! everything up to its begin marker (dropped), the output and the end marker with the status
//! line (returned apart); what follows (the next prompt) stays unread. A failure or a timeout
//! consumes as its success would (a failure) or nothing (a timeout; `run` consumes what it
//! read).
//!
//! **One wait at a time.** Waits on one console consume its output in order, so they cannot run
//! at once: a wait (or `exec`, `interrupt_until`) started while another one runs fails at once
//! with [`Error::State`]. Sending, the transcript and the stats work from any thread at any time.
//!
//! **Ends.** When the console reaches end of file (QEMU exited, or closed it) a pending wait
//! fails at once with [`Error::ConsoleClosed`], carrying the unread text; so does every later
//! one. A failure pattern ends a wait with [`Error::ConsoleFailure`]; running out of time with
//! [`Error::ConsoleTimeout`], naming the patterns and the time waited and carrying the tail of
//! the unread text (which stays unread). A fired [`Cancel`](crate::Cancel) returns
//! [`Error::Interrupted`] at once.

pub mod frame;
mod history;
mod pattern;
mod run;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::gate::Gate;
use crate::log::{debug, warning};
use crate::sys::{poll, pollfd, socket, EventFd, POLLHUP, POLLIN, POLLOUT};
use crate::wait::{Deadline, Wait};
use history::History;
#[doc(hidden)]
pub use pattern::find_in_pieces;
use pattern::{Found, Search};
pub use pattern::{Pattern, Patterns};
pub use run::{RunOutput, DEFAULT_RUN_WAIT};

/// The default cap of the console's memory (history and unread output): 1 MiB.
pub const DEFAULT_BUFFER: usize = 1 << 20;

/// The smallest cap accepted; smaller values are raised to it.
pub const MIN_BUFFER: usize = 4 << 10;

/// How much unread text a timeout error carries.
const TAIL: usize = 2048;

/// Input from the raw socket that QEMU has not taken yet, at most; beyond it the raw socket is
/// not read (its writer blocks), so memory stays bounded.
const MAX_PENDING_INPUT: usize = 64 << 10;

/// While waits come and go, the reader thread leaves the socket to them (a waiting caller reads
/// it itself: no hand-off between threads on the way to the match) and looks again this often;
/// it takes the socket back once no wait ran for this long. QEMU never blocks meanwhile: its
/// socket buffer holds far more than a serial port writes in that time.
const WAITER_GRACE: Duration = Duration::from_millis(10);

/// How a [`Console`] is set up.
#[derive(Debug, Default)]
pub struct ConsoleOptions {
    /// Appends every byte the guest writes to this file.
    pub log: Option<File>,
    /// The cap of the in-memory history and unread output in bytes (0: [`DEFAULT_BUFFER`]; at
    /// least [`MIN_BUFFER`]).
    pub buffer: usize,
    /// A name for log messages and the reader thread.
    pub name: String,
}

/// What a successful wait found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// Which success pattern matched: its index in [`Patterns::successes`].
    pub index: usize,
    /// The text consumed: everything unread before the match, and the match.
    pub text: Vec<u8>,
    /// Where the match starts in `text` (it ends at the end of `text`).
    pub start: usize,
    /// Unread bytes dropped (over the cap) since the previous wait that returned text: when not
    /// 0, `text` does not begin where the previous one ended.
    pub dropped: u64,
}

impl Match {
    /// The matched bytes.
    pub fn matched(&self) -> &[u8] {
        &self.text[self.start..]
    }

    /// What came before the match.
    pub fn before(&self) -> &[u8] {
        &self.text[..self.start]
    }

    /// `text` as UTF-8, invalid sequences replaced.
    pub fn text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.text)
    }
}

/// Counters of a console.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes received from the guest since the console was set up.
    pub received: u64,
    /// Bytes kept in memory (the transcript), at most `cap`.
    pub kept: usize,
    /// Bytes not consumed by a wait yet.
    pub unread: usize,
    /// Unread bytes dropped because they exceeded the cap (still in the console log file).
    pub dropped: u64,
    /// Bytes the raw socket ([`Console::fd`]) never got because nobody read it in time.
    pub raw_dropped: u64,
    /// The cap in bytes.
    pub cap: usize,
    /// True once the console reached end of file.
    pub closed: bool,
}

/// A console: the reader thread, the history and the waits. See the [module](self) docs.
///
/// Every method takes `&self` and may be called from any thread. Dropping it stops the reader
/// thread (after taking what is already in the socket) and closes the socket.
pub struct Console {
    shared: Arc<Shared>,
    // Lock order: `user` and `thread` are each held for a statement and never with another
    // lock; `Shared::state` is the one lock the reader thread and the waits share; the
    // `send_order` gate's lock is held only to take or give back the turn, never with another.
    /// The caller's end of the raw copy, until [`close_fd`](Self::close_fd).
    user: Mutex<Option<OwnedFd>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    /// Readable once the console is closed: wakes a waiting caller that polls the socket.
    closed_evt: EventFd,
    /// Signalled when the reader thread took bytes while a caller reads the socket (the two can
    /// both be woken by the same bytes, and the thread may take them first).
    data_evt: EventFd,
    /// The socket to the guest (non-blocking): the thread reads it, senders write it.
    peer: OwnedFd,
    /// Readable when the reader thread should take what is left and stop.
    stop: EventFd,
    /// Serialises [`Console::send`] callers, so one call's bytes are never split by another's.
    send_order: Arc<Gate>,
    /// The machine's transcript, when it has one: bytes read (by whoever reads) and sent.
    transcript: crate::qmp::Transcript,
    name: String,
}

struct State {
    history: History,
    /// The console log file; written under the lock, so bytes read by the reader thread and by
    /// a waiting caller reach it in order.
    log: Option<File>,
    closed: bool,
    /// A wait is in progress.
    waiting: bool,
    /// A waiting caller is reading the socket itself.
    caller_reads: bool,
    /// When a caller last stopped reading the socket (the reader thread leaves the socket to
    /// waits until a while after it).
    caller_read_until: Option<Instant>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what the socket has into the log and the history (the caller holds the lock, so
    /// two readers never reorder bytes). False at end of file (then the console is closed).
    /// Anyone but the waiting caller itself (`by_waiter`) tells that caller when it took bytes:
    /// the caller may be about to sleep in poll on a socket that now looks empty.
    fn pump(&self, st: &mut State, buf: &mut [u8], by_waiter: bool) -> bool {
        let before = st.history.end();
        let open = self.pump_inner(st, buf);
        if !by_waiter && st.caller_reads && st.history.end() > before {
            self.data_evt.signal();
        }
        open
    }

    /// The waiting caller's sleep: releases the lock until the socket has bytes, the console
    /// closes, the reader thread took bytes (`data_evt`), `cancel_fd` fires or `left` passes;
    /// then takes what the socket has and returns the lock. The one copy of this step for every
    /// wait (patterns, `run`).
    fn sleep_for_output<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
        buf: &mut [u8],
        left: Option<Duration>,
        cancel_fd: Option<RawFd>,
    ) -> Result<MutexGuard<'a, State>> {
        drop(st);
        let mut fds = [
            pollfd(self.peer.as_raw_fd(), POLLIN),
            pollfd(self.closed_evt.raw(), POLLIN),
            pollfd(self.data_evt.raw(), POLLIN),
            pollfd(cancel_fd.unwrap_or(-1), POLLIN),
        ];
        let watched = if cancel_fd.is_some() { 4 } else { 3 };
        let ready = poll(&mut fds[..watched], left)
            .map_err(|e| Error::io("waiting for console output", e))?;
        if fds[2].revents != 0 {
            self.data_evt.drain();
        }
        let mut st = self.lock();
        if ready > 0 && fds[0].revents != 0 && !st.closed {
            // The reader thread may have taken the bytes first: then they are in the history.
            self.pump(&mut st, buf, true);
        }
        Ok(st)
    }

    fn pump_inner(&self, st: &mut State, buf: &mut [u8]) -> bool {
        loop {
            match io(socket::recv(self.peer.as_fd(), buf)) {
                Io::Data(n) => {
                    let data = &buf[..n];
                    // Under the lock, as the history: the transcript has the reads in order.
                    self.transcript.console("in", data);
                    if let Some(log) = st.log.as_mut() {
                        if let Err(e) = log.write_all(data) {
                            warning!("{}: console log write failed: {e}", self.name);
                            st.log = None;
                        }
                    }
                    st.history.push(data);
                    if n < buf.len() {
                        return true;
                    }
                }
                Io::WouldBlock => return true,
                Io::Closed => {
                    self.close_locked(st);
                    return false;
                }
            }
        }
    }

    fn close_locked(&self, st: &mut State) {
        if !st.closed {
            st.closed = true;
            self.closed_evt.signal();
        }
    }

    fn close(&self) {
        let mut st = self.lock();
        self.close_locked(&mut st);
        if let Some(log) = st.log.as_mut() {
            let _ = log.flush();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resets the "a wait is in progress" flag.
struct Busy<'a>(&'a Shared);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting = false;
    }
}

/// Hands the socket back to the reader thread when a waiting caller stops reading it.
struct CallerReads<'a>(&'a Shared);

impl CallerReads<'_> {
    fn start(shared: &Shared) -> CallerReads<'_> {
        shared.lock().caller_reads = true;
        CallerReads(shared)
    }
}

impl Drop for CallerReads<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.caller_reads = false;
        st.caller_read_until = Some(Instant::now());
    }
}

impl Console {
    /// Takes over `socket` (a connected stream socket: the guest's side is at the other end)
    /// and starts the reader thread.
    pub fn start(socket: OwnedFd, options: ConsoleOptions) -> Result<Console> {
        Console::start_recorded(socket, options, None)
    }

    /// [`start`](Self::start), recording what is read and sent in the machine's transcript
    /// (from the first byte: the slot is filled before the reader thread starts).
    pub(crate) fn start_recorded(
        socket: OwnedFd,
        options: ConsoleOptions,
        transcript: Option<Arc<crate::qmp::TranscriptFile>>,
    ) -> Result<Console> {
        let cap = match options.buffer {
            0 => DEFAULT_BUFFER,
            n => n.max(MIN_BUFFER),
        };
        let (user, relay) = socket::pair()
            .map_err(|e| Error::io("creating the console's raw-copy socketpair", e))?;
        for fd in [&socket, &relay] {
            socket::set_nonblocking(fd.as_fd())
                .map_err(|e| Error::io("making the console socket non-blocking", e))?;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                history: History::new(cap),
                log: options.log,
                closed: false,
                waiting: false,
                caller_reads: false,
                caller_read_until: None,
            }),
            closed_evt: EventFd::new()
                .map_err(|e| Error::io("creating the console's eventfd", e))?,
            data_evt: EventFd::new().map_err(|e| Error::io("creating the console's eventfd", e))?,
            peer: socket,
            stop: EventFd::new()
                .map_err(|e| Error::io("creating the console reader's eventfd", e))?,
            send_order: Arc::new(Gate::default()),
            transcript: crate::qmp::Transcript::with(transcript),
            name: options.name.clone(),
        });
        let reader = Reader {
            shared: shared.clone(),
            relay: Some(relay),
            to_peer: VecDeque::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("qm-console-{}", options.name))
            .spawn(move || reader.run())
            .map_err(|e| Error::io("starting the console reader thread", e))?;
        Ok(Console {
            shared,
            user: Mutex::new(Some(user)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A raw copy of the console as a connected stream socket: it receives every byte the guest
    /// writes (from the start, as far as the history still has it), and what is written to it
    /// goes to the guest. Borrowed: valid until [`close_fd`](Self::close_fd). `None` after it.
    pub fn fd(&self) -> Option<RawFd> {
        lock(&self.user).as_ref().map(AsRawFd::as_raw_fd)
    }

    /// A duplicate of [`fd`](Self::fd) that the caller owns.
    pub fn dup_fd(&self) -> Result<OwnedFd> {
        let user = lock(&self.user);
        let fd = user
            .as_ref()
            .ok_or_else(|| Error::State("the console is closed".into()))?;
        fd.try_clone()
            .map_err(|e| Error::io("duplicating the console socket", e))
    }

    /// Closes the console's own end of the raw copy (duplicates stay open).
    pub fn close_fd(&self) {
        *lock(&self.user) = None;
    }

    /// Stops the reader thread once it has taken what is left in the socket, and waits for it.
    /// Waits pending then, and later ones, fail with [`Error::ConsoleClosed`]; the transcript
    /// stays readable. Called when QEMU has exited, this reads everything up to end of file.
    pub fn finish(&self) {
        self.close_fd();
        self.shared.stop.signal();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                warning!("{}: the console reader thread panicked", self.shared.name);
            }
        }
        // In case the thread never ran to its end.
        self.shared.close();
    }

    /// Counters: received, kept, unread, dropped.
    pub fn stats(&self) -> Stats {
        let st = self.current();
        let h = &st.history;
        Stats {
            received: h.end(),
            kept: h.kept(),
            unread: h.unread().len(),
            dropped: h.dropped,
            raw_dropped: h.raw_dropped,
            cap: h.cap(),
            closed: st.closed,
        }
    }

    /// The history: the last `last` bytes the guest wrote, or all that is kept (the last `cap`
    /// bytes) for `None`. Readable at any time, also after the console closed.
    pub fn transcript(&self, last: Option<usize>) -> Vec<u8> {
        self.current().history.transcript(last)
    }

    /// The state, with what the socket holds taken in first (the reader thread may be leaving
    /// the socket to waits just now).
    fn current(&self) -> MutexGuard<'_, State> {
        let mut st = self.shared.lock();
        if !st.closed {
            let mut buf = [0u8; 4096];
            self.shared.pump(&mut st, &mut buf, false);
        }
        st
    }

    /// Changes the cap (at least [`MIN_BUFFER`]); shrinking drops at once what no longer fits.
    pub fn set_buffer(&self, cap: usize) {
        self.shared.lock().history.set_cap(cap.max(MIN_BUFFER));
    }

    /// Marks everything received so far as read, so the next wait only sees newer output;
    /// returns how many bytes that skipped. The transcript keeps them.
    pub fn skip_unread(&self) -> usize {
        let mut st = self.current();
        let end = st.history.end();
        st.history.consume(end).0.len()
    }

    /// Waits until a success pattern shows in the unread output; see the [module](self) docs for
    /// the errors. The earliest match wins (a failure pattern on a tie). A zero wait only looks
    /// at what is already there.
    pub fn wait_for(&self, patterns: &Patterns, wait: impl Into<Wait>) -> Result<Match> {
        let wait = wait.into();
        patterns.check()?;
        let _busy = self.busy()?;
        let deadline = wait.start()?;
        let started = Instant::now();
        let mut search = Search::new(patterns);
        match self.wait_step(patterns, &mut search, &deadline, None)? {
            Some(m) => Ok(m),
            None => Err(self.timeout(patterns, started)),
        }
    }

    /// Sends `bytes` to the guest, waiting (up to the wait's bound) while the socket is full.
    /// Concurrent sends never interleave within one call's bytes.
    pub fn send(&self, bytes: &[u8], wait: impl Into<Wait>) -> Result<()> {
        let wait = wait.into();
        self.send_deadline(bytes, &wait.start()?)
    }

    /// Sends `line` followed by `eol` (e.g. `"\n"`, or `"\r"` for a terminal in raw mode).
    pub fn send_line(&self, line: &str, eol: &str, wait: impl Into<Wait>) -> Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + eol.len());
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(eol.as_bytes());
        self.send(&bytes, wait)
    }

    /// Sends `line` + `eol`, then waits for `patterns` as [`wait_for`](Self::wait_for) does,
    /// within the same bound.
    ///
    /// What it consumes: first, everything unread when it starts (dropped, as
    /// [`skip_unread`](Self::skip_unread) does; the transcript keeps it), so a match is never
    /// text the guest printed before the call — an earlier prompt no wait consumed cannot end
    /// it; then the text up to and including the match, which begins with the guest's echo of
    /// the line if it echoes (so a pattern the line itself contains can match its echo). Output
    /// still on its way from before the call (a prompt the previous command had not finished
    /// printing) can arrive after it started and match: to run a command and get its output and
    /// exit status with no such confusion, use [`run`](Self::run), whose markers carry a nonce.
    pub fn exec(
        &self,
        line: &str,
        eol: &str,
        patterns: &Patterns,
        wait: impl Into<Wait>,
    ) -> Result<Match> {
        let wait = wait.into();
        patterns.check()?;
        let _busy = self.busy()?;
        let deadline = wait.start()?;
        let started = Instant::now();
        {
            // Only what comes after this call's line may match (see above).
            let mut st = self.current();
            let end = st.history.end();
            st.history.consume(end);
        }
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(eol.as_bytes());
        self.send_deadline(&bytes, &deadline)?;
        let mut search = Search::new(patterns);
        match self.wait_step(patterns, &mut search, &deadline, None)? {
            Some(m) => Ok(m),
            None => Err(self.timeout(patterns, started)),
        }
    }

    /// Sends `key` every `interval` until a pattern shows (boot menus, "press any key"
    /// prompts), within the wait's bound. The key is sent first at once.
    pub fn interrupt_until(
        &self,
        key: &[u8],
        interval: Duration,
        patterns: &Patterns,
        wait: impl Into<Wait>,
    ) -> Result<Match> {
        let wait = wait.into();
        patterns.check()?;
        if interval.is_zero() {
            return Err(Error::Invalid(
                "interrupt_until needs an interval above zero".into(),
            ));
        }
        let _busy = self.busy()?;
        let deadline = wait.start()?;
        let started = Instant::now();
        let mut search = Search::new(patterns);
        loop {
            self.send_deadline(key, &deadline)?;
            let step = Instant::now() + interval;
            if let Some(m) = self.wait_step(patterns, &mut search, &deadline, Some(step))? {
                return Ok(m);
            }
            if deadline.remaining() == Some(Duration::ZERO) {
                return Err(self.timeout(patterns, started));
            }
        }
    }

    fn busy(&self) -> Result<Busy<'_>> {
        let mut st = self.shared.lock();
        if st.waiting {
            return Err(Error::State(
                "another thread is waiting on this console: waits consume its output in order \
                 and cannot run at once"
                    .into(),
            ));
        }
        st.waiting = true;
        Ok(Busy(&self.shared))
    }

    /// Waits until a pattern matches (`Some`), the deadline or `step` passes (`None`), or an
    /// error ends it. The caller reads the socket itself while it waits (the reader thread
    /// steps aside), so the bytes it waits for reach it without a hand-off between threads.
    fn wait_step(
        &self,
        patterns: &Patterns,
        search: &mut Search<'_>,
        deadline: &Deadline<'_>,
        step: Option<Instant>,
    ) -> Result<Option<Match>> {
        let shared = &*self.shared;
        let cancel_fd = deadline.cancel_fd()?;
        let mut buf = [0u8; 16 << 10];
        // Declared before the lock below, so it is dropped (and locks) after it.
        let _reads = CallerReads::start(shared);
        let mut st = shared.lock();
        // The reader thread may be leaving the socket to waits: look at it at least once.
        let mut looked = false;
        loop {
            if deadline.cancelled() {
                return Err(Error::Interrupted);
            }
            let read = st.history.read;
            if let Some(found) = search.find(st.history.unread(), read) {
                return take(&mut st.history, patterns, found).map(Some);
            }
            if st.closed {
                return Err(Error::ConsoleClosed {
                    waiting_for: patterns.to_string(),
                    text: String::from_utf8_lossy(st.history.unread()).into_owned(),
                });
            }
            let mut left = deadline.remaining();
            if let Some(step) = step {
                let to_step = step.saturating_duration_since(Instant::now());
                left = Some(left.map_or(to_step, |l| l.min(to_step)));
            }
            if left == Some(Duration::ZERO) {
                if !looked && !st.closed {
                    looked = true;
                    shared.pump(&mut st, &mut buf, true);
                    continue;
                }
                return Ok(None);
            }
            st = shared.sleep_for_output(st, &mut buf, left, cancel_fd)?;
            looked = true;
        }
    }

    fn timeout(&self, patterns: &Patterns, started: Instant) -> Error {
        let st = self.shared.lock();
        let unread = st.history.unread();
        let tail = &unread[unread.len().saturating_sub(TAIL)..];
        Error::ConsoleTimeout {
            waiting_for: patterns.to_string(),
            waited: started.elapsed(),
            tail: String::from_utf8_lossy(tail).into_owned(),
        }
    }

    fn send_deadline(&self, bytes: &[u8], deadline: &Deadline<'_>) -> Result<()> {
        if deadline.cancelled() {
            return Err(Error::Interrupted);
        }
        // One send at a time, in arrival order, so one call's bytes are never split by
        // another's; waiting honours the deadline and token (a guest may not read its input).
        let _order = self.shared.send_order.enter(
            deadline,
            || None,
            |_| Error::Timeout("waiting for another thread's send to the console".into()),
        )?;
        // Before the bytes go out, so the guest's answer is never recorded ahead of them.
        self.shared.transcript.console("out", bytes);
        let peer = self.shared.peer.as_fd();
        let mut sent = 0;
        while sent < bytes.len() {
            match io(socket::send(peer, &bytes[sent..])) {
                Io::Data(n) => sent += n,
                Io::Closed => {
                    return Err(Error::ConsoleClosed {
                        waiting_for: format!("sending {} bytes ({sent} sent)", bytes.len()),
                        text: String::new(),
                    })
                }
                Io::WouldBlock => {
                    let mut fds = vec![pollfd(peer.as_raw_fd(), POLLOUT)];
                    if let Some(fd) = deadline.cancel_fd()? {
                        fds.push(pollfd(fd, POLLIN));
                    }
                    let ready = poll(&mut fds, deadline.remaining())
                        .map_err(|e| Error::io("waiting to send to the console", e))?;
                    if deadline.cancelled() {
                        return Err(Error::Interrupted);
                    }
                    if ready == 0 {
                        return Err(Error::Timeout(format!(
                            "sending to the console: the guest took {sent} of {} bytes",
                            bytes.len()
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The outcome of one non-blocking transfer.
enum Io {
    Data(usize),
    WouldBlock,
    /// End of file, or the peer is gone (EPIPE, ECONNRESET …).
    Closed,
}

/// Classifies a non-blocking send or recv; 0 bytes is end of file (never asked to send 0).
fn io(result: std::io::Result<usize>) -> Io {
    match result {
        Ok(0) => Io::Closed,
        Ok(n) => Io::Data(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) =>
        {
            Io::WouldBlock
        }
        Err(_) => Io::Closed,
    }
}

/// Consumes the text up to the end of `found`.
fn take(history: &mut History, patterns: &Patterns, found: Found) -> Result<Match> {
    let base = history.read;
    let (text, dropped) = history.consume(base + found.end as u64);
    if found.failure {
        return Err(Error::ConsoleFailure {
            index: found.index,
            pattern: patterns.failures()[found.index].to_string(),
            text: String::from_utf8_lossy(&text).into_owned(),
        });
    }
    Ok(Match {
        index: found.index,
        start: found.start,
        text,
        dropped,
    })
}

impl Drop for Console {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The reader thread: takes the guest's output into the history and the log, forwards the raw
/// copy, and passes what is written to the raw copy on to the guest.
struct Reader {
    shared: Arc<Shared>,
    relay: Option<OwnedFd>,
    /// Input from the raw copy that the guest has not taken yet.
    to_peer: VecDeque<u8>,
}

impl Reader {
    fn run(mut self) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let peer = self.shared.peer.as_raw_fd();
            // Whether to read the socket now, or leave it to waits for a while.
            let (raw_pending, read_peer, timeout) = {
                let st = self.shared.lock();
                if st.closed {
                    break;
                }
                let raw_pending = self.relay.is_some() && st.history.raw < st.history.end();
                let since = st.caller_read_until.map(|t| t.elapsed());
                match (st.caller_reads, since) {
                    (true, _) => (raw_pending, false, Some(WAITER_GRACE)),
                    (false, Some(since)) if since < WAITER_GRACE => {
                        (raw_pending, false, Some(WAITER_GRACE - since))
                    }
                    _ => (raw_pending, true, None),
                }
            };
            let mut peer_events = if read_peer { POLLIN } else { 0 };
            if !self.to_peer.is_empty() {
                peer_events |= POLLOUT;
            }
            // Not polled at all when nothing is asked of it: a hung-up socket reports POLLHUP
            // even unasked, and the thread would spin while a caller reads it.
            let mut fds = vec![
                pollfd(self.shared.stop.raw(), POLLIN),
                pollfd(if peer_events != 0 { peer } else { -1 }, peer_events),
            ];
            if let Some(relay) = &self.relay {
                let mut events = 0;
                if self.to_peer.len() < MAX_PENDING_INPUT {
                    events |= POLLIN;
                }
                if raw_pending {
                    events |= POLLOUT;
                }
                fds.push(pollfd(relay.as_raw_fd(), events));
            }
            if let Err(e) = poll(&mut fds, timeout) {
                warning!("{}: console reader: {e}", self.shared.name);
                break;
            }
            let stopping = fds[0].revents != 0;
            // When stopping this is the final drain of what is left in the socket. (POLLHUP
            // is reported even when not asked for: only read when it is the thread's turn.)
            let peer_ready = fds[1].revents & (POLLIN | POLLHUP | libc::POLLERR) != 0;
            if (peer_ready && read_peer) || stopping {
                let open = {
                    let mut st = self.shared.lock();
                    !st.closed && self.shared.pump(&mut st, &mut buf, false)
                };
                if !open {
                    break;
                }
            }
            if fds[1].revents & POLLOUT != 0 {
                self.send_to_peer();
            }
            if let Some(relay) = fds.get(2) {
                if relay.revents & (POLLIN | POLLHUP | libc::POLLERR) != 0 {
                    self.pump_from_relay(&mut buf, relay.revents & POLLIN == 0);
                }
            }
            // The raw copy gets what it can take now (also what a waiting caller read).
            self.forward_raw();
            if stopping {
                break;
            }
        }
        self.shared.close();
        // The raw copy gets what it can take now, then end of file.
        self.forward_raw();
        if let Some(relay) = self.relay.take() {
            socket::shutdown(relay.as_fd());
        }
        debug!("{}: console reader finished", self.shared.name);
    }

    /// Takes what the raw copy's user wrote; `hup`: they are gone, take everything left.
    fn pump_from_relay(&mut self, buf: &mut [u8], hup: bool) {
        let Some(relay) = self.relay.as_ref() else {
            return;
        };
        loop {
            match io(socket::recv(relay.as_fd(), buf)) {
                Io::Data(n) => {
                    self.shared.transcript.console("out", &buf[..n]);
                    self.to_peer.extend(&buf[..n]);
                    if !hup {
                        break;
                    }
                }
                Io::WouldBlock if !hup => break,
                Io::WouldBlock | Io::Closed => {
                    // Every copy of the user's end is closed.
                    self.relay = None;
                    break;
                }
            }
        }
        self.send_to_peer();
    }

    fn send_to_peer(&mut self) {
        while !self.to_peer.is_empty() {
            let (front, _) = self.to_peer.as_slices();
            match io(socket::send(self.shared.peer.as_fd(), front)) {
                Io::Data(n) => drop(self.to_peer.drain(..n)),
                Io::WouldBlock => return,
                Io::Closed => return self.to_peer.clear(),
            }
        }
    }

    /// Sends the raw copy what it has not had yet, as far as it takes it.
    fn forward_raw(&mut self) {
        let Some(relay) = self.relay.as_ref() else {
            return;
        };
        let mut st = self.shared.lock();
        loop {
            let raw = st.history.raw;
            let pending = st.history.from(raw);
            if pending.is_empty() {
                return;
            }
            match io(socket::send(relay.as_fd(), pending)) {
                Io::Data(n) => st.history.raw += n as u64,
                Io::WouldBlock => return,
                Io::Closed => {
                    drop(st);
                    self.relay = None;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
