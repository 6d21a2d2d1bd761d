//! A scripted fake QMP server peer for tests.
//!
//! [`FakePeer`] plays the QEMU side of one `UnixStream` in a background
//! thread, following a list of [`Step`]s, so tests can feed the client faults
//! a real QEMU will not produce (garbage, partial or oversize lines, unknown
//! reply ids, early EOF, ...).
//!
//! ```ignore
//! let (client_end, peer_end) = UnixStream::pair().unwrap();
//! let mut script = fake_qmp::handshake();
//! script.push(Step::expect("query-status"));
//! script.push(Step::Reply(json!({"status": "running", "running": true})));
//! let peer = FakePeer::start(peer_end, script);
//! // ... drive the client over `client_end`, then drop it ...
//! let received = peer.join().unwrap();
//! ```
//!
//! When the script ends (or fails) the peer shuts the socket down, so the
//! client sees EOF after everything the script sent. Append [`Step::Drain`] to
//! keep the connection open until the client closes it instead.
//!
//! Only `std` and `serde_json` are used.
#![allow(dead_code)]

use std::fmt;
use std::io::{self, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Read/write timeout used by [`FakePeer::start`]: a step blocked longer than
/// this fails instead of hanging the test.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One action of the fake peer's script.
pub enum Step {
    /// Send these raw bytes as they are (garbage, partial lines, oversize
    /// lines). Written straight from this buffer, without copies.
    Raw(Vec<u8>),
    /// Send `count` copies of `byte` (e.g. a 100 MiB line without a newline)
    /// from a small reusable buffer, without allocating `count` bytes.
    Repeat {
        /// The byte to send.
        byte: u8,
        /// How many times to send it.
        count: usize,
    },
    /// Send one JSON value followed by `"\r\n"`.
    Send(Value),
    /// Send the standard greeting (see [`greeting`]).
    Greeting,
    /// Send event `name` with `"data": {}` and a current timestamp.
    Event(String),
    /// Send event `name` with this `data` and a current timestamp.
    EventWith(String, Value),
    /// Read one command line from the client and fail unless its `"execute"`
    /// equals this name; remember its `"id"` for the `Reply*` steps.
    Expect(String),
    /// Reply `{"return": value, "id": <id of the last Expect>}` (no `"id"` if
    /// that command had none).
    Reply(Value),
    /// Reply with this object (e.g. `{"error": {...}}`), adding the id of the
    /// last Expect. Fails if the value is not an object.
    ReplyWith(Value),
    /// Reply `{"return": value, "id": id}` with a fixed id (e.g. an unknown
    /// one), ignoring the remembered id.
    ReplyId(Value, Value),
    /// Answer commands automatically with `{"return": {}}` echoing each id,
    /// until the client closes or `max` commands were served (use
    /// `usize::MAX` for "until close"). If `event_before_reply` is set, that
    /// event is sent before every reply.
    Serve {
        /// Stop after this many commands.
        max: usize,
        /// Event name to send before each reply, if any.
        event_before_reply: Option<String>,
    },
    /// Read and record lines without answering until the client closes (or
    /// the I/O timeout expires, which fails the script).
    Drain,
    /// Sleep (cut short, ending the script, if the [`FakePeer`] is dropped).
    Sleep(Duration),
    /// Shut the socket down (EOF for the client). Usually the last step; later
    /// writes end the script as "client gone", later reads see EOF.
    Close,
}

impl Step {
    /// Shorthand for `Step::Expect(name.into())`.
    pub fn expect(name: &str) -> Step {
        Step::Expect(name.to_owned())
    }

    /// Shorthand for `Step::Event(name.into())`.
    pub fn event(name: &str) -> Step {
        Step::Event(name.to_owned())
    }

    /// Shorthand for `Step::Raw(bytes.to_vec())`.
    pub fn raw(bytes: &[u8]) -> Step {
        Step::Raw(bytes.to_vec())
    }

    /// Shorthand for `Step::Serve { max, event_before_reply: None }`.
    pub fn serve(max: usize) -> Step {
        Step::Serve {
            max,
            event_before_reply: None,
        }
    }

    /// Short description for error messages (large payloads abbreviated).
    fn describe(&self) -> String {
        match self {
            Step::Raw(b) => {
                let head = &b[..b.len().min(40)];
                let more = if b.len() > head.len() { "..." } else { "" };
                format!(
                    "Raw({} bytes: {:?}{more})",
                    b.len(),
                    String::from_utf8_lossy(head)
                )
            }
            Step::Repeat { byte, count } => format!("Repeat({:?} x {count})", *byte as char),
            Step::Send(v) => format!("Send({v})"),
            Step::Greeting => "Greeting".into(),
            Step::Event(n) => format!("Event({n:?})"),
            Step::EventWith(n, d) => format!("EventWith({n:?}, {d})"),
            Step::Expect(n) => format!("Expect({n:?})"),
            Step::Reply(v) => format!("Reply({v})"),
            Step::ReplyWith(v) => format!("ReplyWith({v})"),
            Step::ReplyId(v, id) => format!("ReplyId({v}, id {id})"),
            Step::Serve {
                max,
                event_before_reply,
            } => format!("Serve {{ max: {max}, event_before_reply: {event_before_reply:?} }}"),
            Step::Drain => "Drain".into(),
            Step::Sleep(d) => format!("Sleep({d:?})"),
            Step::Close => "Close".into(),
        }
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The standard QMP greeting the fake peer sends for [`Step::Greeting`].
pub fn greeting() -> Value {
    json!({
        "QMP": {
            "version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
            "capabilities": ["oob"]
        }
    })
}

/// An event object `name` with `data` and the current time as timestamp.
pub fn event(name: &str, data: Value) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    json!({
        "event": name,
        "data": data,
        "timestamp": {"seconds": now.as_secs(), "microseconds": now.subsec_micros()}
    })
}

/// A script starting with `Greeting`, `Expect("qmp_capabilities")`,
/// `Reply({})`; push further steps onto it.
pub fn handshake() -> Vec<Step> {
    vec![
        Step::Greeting,
        Step::expect("qmp_capabilities"),
        Step::Reply(json!({})),
    ]
}

/// What the fake peer observed; see [`FakePeer::finish`].
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// Every line the client sent, parsed; a line that is not JSON is kept as
    /// a `Value::String` of its text. Includes lines read by `Serve`, `Drain`
    /// and the final drain after shutdown.
    pub received: Vec<Value>,
    /// The same lines as raw text, leading whitespace (such as the `" "` byte
    /// sent with `SCM_RIGHTS`) and line terminator included.
    pub raw: Vec<String>,
    /// Set when a write found the client gone (EPIPE, ECONNRESET, ...): the
    /// step and the error. The script stopped there; this is not a failure.
    pub client_gone: Option<String>,
}

/// A fake QMP server running a script on one end of a `UnixStream` in a
/// background thread named `fake-qmp-peer`.
///
/// Dropping it without [`join`](Self::join) shuts the socket down (unblocking
/// any read or write), cuts any `Sleep` short and joins the thread.
pub struct FakePeer {
    handle: Option<JoinHandle<Result<(), String>>>,
    transcript: Arc<Mutex<Transcript>>,
    control: UnixStream,
    cancel: Option<Sender<()>>,
}

impl FakePeer {
    /// Start running `script` on `stream` with [`DEFAULT_IO_TIMEOUT`].
    pub fn start(stream: UnixStream, script: Vec<Step>) -> FakePeer {
        FakePeer::start_with_timeout(stream, script, Some(DEFAULT_IO_TIMEOUT))
    }

    /// Start running `script` on `stream`; any single read or write blocked
    /// longer than `io_timeout` fails the script (`None`: wait forever).
    pub fn start_with_timeout(
        stream: UnixStream,
        script: Vec<Step>,
        io_timeout: Option<Duration>,
    ) -> FakePeer {
        stream
            .set_read_timeout(io_timeout)
            .expect("fake QMP peer: set_read_timeout");
        stream
            .set_write_timeout(io_timeout)
            .expect("fake QMP peer: set_write_timeout");
        let control = stream.try_clone().expect("fake QMP peer: clone stream");
        let reader = stream.try_clone().expect("fake QMP peer: clone stream");
        let transcript = Arc::new(Mutex::new(Transcript::default()));
        let (cancel, cancelled) = mpsc::channel();
        let mut runner = Runner {
            reader: BufReader::new(reader),
            writer: stream,
            last_id: None,
            transcript: Arc::clone(&transcript),
            cancelled,
            io_timeout,
        };
        let handle = thread::Builder::new()
            .name("fake-qmp-peer".into())
            .spawn(move || {
                let result = runner.run(script);
                runner.shutdown_and_drain();
                result
            })
            .expect("fake QMP peer: spawn thread");
        FakePeer {
            handle: Some(handle),
            transcript,
            control,
            cancel: Some(cancel),
        }
    }

    /// Wait for the script to finish; returns every line the client sent
    /// (parsed JSON), or a message naming the step that failed.
    pub fn join(self) -> Result<Vec<Value>, String> {
        self.finish().map(|t| t.received)
    }

    /// Like [`join`](Self::join) but returns the whole [`Transcript`].
    pub fn finish(mut self) -> Result<Transcript, String> {
        let handle = self.handle.take().expect("fake QMP peer: joined twice");
        let outcome = match handle.join() {
            Ok(result) => result,
            Err(payload) => Err(format!(
                "fake QMP peer: thread panicked: {}",
                panic_message(&*payload)
            )),
        };
        outcome.map(|()| lock(&self.transcript).clone())
    }

    /// The lines received so far (the script may still be running).
    pub fn received(&self) -> Vec<Value> {
        lock(&self.transcript).received.clone()
    }

    /// Whether the script has ended (successfully or not).
    pub fn is_finished(&self) -> bool {
        match &self.handle {
            Some(h) => h.is_finished(),
            None => true,
        }
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            // Disconnecting the channel interrupts Sleep; shutting the socket
            // down interrupts blocked reads (EOF) and writes (EPIPE).
            drop(self.cancel.take());
            let _ = self.control.shutdown(Shutdown::Both);
            let _ = handle.join();
        }
    }
}

fn lock(t: &Mutex<Transcript>) -> MutexGuard<'_, Transcript> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// Errors meaning the client end is gone rather than the peer being broken.
fn is_client_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Whether the script goes on after a step.
#[derive(PartialEq)]
enum Flow {
    Continue,
    /// The client is gone (recorded in the transcript); end the script.
    Stop,
}

struct Runner {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    last_id: Option<Value>,
    transcript: Arc<Mutex<Transcript>>,
    cancelled: Receiver<()>,
    io_timeout: Option<Duration>,
}

impl Runner {
    fn run(&mut self, script: Vec<Step>) -> Result<(), String> {
        // Consume the steps so a large Raw buffer is freed once sent.
        for (i, step) in script.into_iter().enumerate() {
            let what = format!("step {i} ({})", step.describe());
            match self.step(&step, &what) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => return Ok(()),
                Err(e) => return Err(format!("fake QMP peer: {what}: {e}")),
            }
        }
        Ok(())
    }

    fn step(&mut self, step: &Step, what: &str) -> Result<Flow, String> {
        match step {
            Step::Raw(bytes) => self.write(bytes, what),
            Step::Repeat { byte, count } => {
                let chunk = vec![*byte; (*count).min(64 * 1024)];
                let mut left = *count;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if self.write(&chunk[..n], what)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                    left -= n;
                }
                Ok(Flow::Continue)
            }
            Step::Send(v) => self.send(v, what),
            Step::Greeting => self.send(&greeting(), what),
            Step::Event(name) => self.send(&event(name, json!({})), what),
            Step::EventWith(name, data) => self.send(&event(name, data.clone()), what),
            Step::Expect(name) => {
                let Some(cmd) = self.read_line()? else {
                    return Err(format!("client closed the connection, expected {name:?}"));
                };
                match cmd.get("execute").and_then(Value::as_str) {
                    Some(got) if got == name => {
                        self.last_id = cmd.get("id").cloned();
                        Ok(Flow::Continue)
                    }
                    _ => Err(format!("expected execute {name:?}, client sent {cmd}")),
                }
            }
            Step::Reply(v) => {
                let reply = self.with_last_id(json!({ "return": v }));
                self.send(&reply, what)
            }
            Step::ReplyWith(v) => {
                if !v.is_object() {
                    return Err(format!("ReplyWith needs a JSON object, got {v}"));
                }
                let reply = self.with_last_id(v.clone());
                self.send(&reply, what)
            }
            Step::ReplyId(v, id) => self.send(&json!({ "return": v, "id": id }), what),
            Step::Serve {
                max,
                event_before_reply,
            } => {
                let mut served = 0;
                while served < *max {
                    let Some(cmd) = self.read_line()? else {
                        return Ok(Flow::Continue);
                    };
                    if !cmd.is_object() {
                        return Err(format!("client sent a non-object line: {cmd}"));
                    }
                    self.last_id = cmd.get("id").cloned();
                    if let Some(name) = event_before_reply {
                        if self.send(&event(name, json!({})), what)? == Flow::Stop {
                            return Ok(Flow::Stop);
                        }
                    }
                    let reply = self.with_last_id(json!({ "return": {} }));
                    if self.send(&reply, what)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                    served += 1;
                }
                Ok(Flow::Continue)
            }
            Step::Drain => {
                while self.read_line()?.is_some() {}
                Ok(Flow::Continue)
            }
            Step::Sleep(d) => match self.cancelled.recv_timeout(*d) {
                Err(RecvTimeoutError::Timeout) => Ok(Flow::Continue),
                _ => Err("cancelled: FakePeer dropped".into()),
            },
            Step::Close => {
                let _ = self.writer.shutdown(Shutdown::Both);
                Ok(Flow::Continue)
            }
        }
    }

    fn timeout_text(&self) -> String {
        self.io_timeout
            .map_or_else(|| "no timeout".to_owned(), |d| format!("{d:?}"))
    }

    fn with_last_id(&self, mut obj: Value) -> Value {
        if let (Some(id), Some(map)) = (&self.last_id, obj.as_object_mut()) {
            map.insert("id".into(), id.clone());
        }
        obj
    }

    /// Send one JSON value terminated by "\r\n", in a single write call.
    fn send(&mut self, v: &Value, what: &str) -> Result<Flow, String> {
        let mut line = serde_json::to_vec(v).map_err(|e| e.to_string())?;
        line.extend_from_slice(b"\r\n");
        self.write(&line, what)
    }

    fn write(&mut self, bytes: &[u8], what: &str) -> Result<Flow, String> {
        match self.writer.write_all(bytes) {
            Ok(()) => Ok(Flow::Continue),
            Err(e) if is_client_gone(&e) => {
                lock(&self.transcript).client_gone = Some(format!("{what}: {e}"));
                Ok(Flow::Stop)
            }
            Err(e) if is_timeout(&e) => Err(format!(
                "write timed out after {} (client not reading?)",
                self.timeout_text()
            )),
            Err(e) => Err(format!("write failed: {e}")),
        }
    }

    /// Read the client's next message, record it and return it parsed. The
    /// client need not end messages with a newline (qm does not: QEMU reads
    /// its monitor a byte at a time, and a trailing byte left unread when it
    /// exits after `quit` turns into a TCP reset), so this reads one JSON
    /// object by counting braces outside strings. Leading whitespace (e.g.
    /// the SCM_RIGHTS " ") is skipped but kept in the raw transcript. Text
    /// that is not an object becomes a `Value::String`. `None` on EOF or
    /// reset.
    fn read_line(&mut self) -> Result<Option<Value>, String> {
        let mut buf = Vec::new();
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        loop {
            let mut byte = [0u8; 1];
            match io::Read::read(&mut self.reader, &mut byte) {
                Ok(0) => {
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    break; // unterminated message before EOF
                }
                Ok(_) => {
                    let b = byte[0];
                    buf.push(b);
                    if in_string {
                        match (escaped, b) {
                            (true, _) => escaped = false,
                            (false, b'\\') => escaped = true,
                            (false, b'"') => in_string = false,
                            _ => {}
                        }
                    } else {
                        match b {
                            b'"' => in_string = true,
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' => depth = depth.saturating_sub(1),
                            _ => {}
                        }
                        let started = buf.iter().any(|c| !c.is_ascii_whitespace());
                        if started && depth == 0 && (b == b'}' || b == b'\n') {
                            break;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_client_gone(&e) => return Ok(None),
                Err(e) if is_timeout(&e) => {
                    return Err(format!(
                        "timed out after {} waiting for a message from the client \
                         (read so far: {:?})",
                        self.timeout_text(),
                        String::from_utf8_lossy(&buf)
                    ))
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let value = serde_json::from_str(text.trim())
            .unwrap_or_else(|_| Value::String(text.trim().to_owned()));
        let mut t = lock(&self.transcript);
        t.raw.push(text);
        t.received.push(value.clone());
        Ok(Some(value))
    }

    /// End of script: EOF for the client, then record whatever it had already
    /// sent (emptying our receive queue also spares the client an ECONNRESET
    /// when the socket is finally closed).
    fn shutdown_and_drain(&mut self) {
        let _ = self.writer.shutdown(Shutdown::Both);
        while let Ok(Some(_)) = self.read_line() {}
    }
}
