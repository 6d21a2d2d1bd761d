//! The fake at run time: connect the channels, then follow the script step by step.
//!
//! One reader thread per channel turns what qm writes into [`Input`]s; the main thread alone
//! writes, so the order of what the fake sends is the script's.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::SystemTime;

use serde_json::{json, Value};

use super::args::Endpoint;
use super::nonce::Nonces;
use super::script::{command_name, matches, Action, Chan, Match, Script};

/// Exit status: the script was followed (or the scripted `exit` status).
pub const EXIT_OK: i32 = 0;
/// Exit status: a channel could not be connected.
pub const EXIT_SETUP: i32 = 1;
/// Exit status: bad arguments or a malformed script (nothing ran).
pub const EXIT_BAD_SCRIPT: i32 = 2;
/// Exit status: the script was not followed (an unexpected command, an expectation unmet).
pub const EXIT_NOT_FOLLOWED: i32 = 3;
/// Exit status: the idle limit was reached.
pub const EXIT_IDLE: i32 = 4;

/// The most console output kept for `"dir": "out"` waits.
const CONSOLE_KEEP: usize = 1 << 20;

/// A connected channel.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
        Ok(match endpoint {
            Endpoint::Fd(fd) => {
                Stream::Unix(UnixStream::from(crate::sys::socket::inherited_socket(*fd)?))
            }
            Endpoint::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            Endpoint::Tcp(host, port) => Stream::Tcp(TcpStream::connect((host.as_str(), *port))?),
        })
    }

    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn close(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a reader thread saw.
enum Input {
    /// A JSON message.
    Msg(Chan, Value),
    /// A line that is not JSON.
    Bad(Chan, String),
    /// Console bytes.
    Console(Vec<u8>),
    /// The channel was closed by qm.
    Eof(Chan),
}

/// Reads JSON messages (the agent's 0xFF resets dropped) until EOF.
fn read_json(mut stream: Stream, chan: Chan, tx: Sender<Input>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend(chunk[..n].iter().filter(|&&b| b != 0xFF));
        // QEMU's parser is a stream of JSON values, not of lines: so is the fake's.
        loop {
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let input = match values.next() {
                None => {
                    buf.clear();
                    break;
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Ok(v)) => {
                    let end = values.byte_offset();
                    buf.drain(..end);
                    Input::Msg(chan, v)
                }
                Some(Err(_)) => {
                    let end = buf
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(buf.len(), |i| i + 1);
                    let bad: Vec<u8> = buf.drain(..end).collect();
                    Input::Bad(chan, String::from_utf8_lossy(&bad).trim().to_owned())
                }
            };
            if tx.send(input).is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Input::Eof(chan));
}

fn read_console(mut stream: Stream, tx: Sender<Input>) {
    let mut chunk = [0u8; 65536];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(Input::Console(chunk[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.send(Input::Eof(Chan::Console));
}

/// A command received and not answered yet.
struct Pending {
    /// Its id, for the reply.
    id: Option<Value>,
    /// The id the script's command had (a recorded transcript's), to pair recorded replies.
    recorded: Option<Value>,
}

/// The fake's state while it follows a script.
pub(super) struct Runner {
    script: Script,
    next: usize,
    qmp: Option<Stream>,
    agent: Option<Stream>,
    console: Option<Stream>,
    /// Channels the script closed: their EOF is not qm's doing.
    closed: Vec<Chan>,
    rx: Receiver<Input>,
    /// Kept so that the queue never reports "all senders gone": the idle limit decides.
    _tx: Sender<Input>,
    pending_qmp: VecDeque<Pending>,
    pending_agent: VecDeque<Pending>,
    console_seen: Vec<u8>,
    /// `Console::run`'s nonces, bound by console waits (see `nonce.rs`).
    nonces: Nonces,
    problems: usize,
    capabilities_done: bool,
    /// `quit` was accepted: exit once the steps after its reply are sent.
    quitting: bool,
    /// The line of the `hang` in effect.
    hanging: Option<usize>,
}

impl Runner {
    /// Connects the channels and starts their readers; the greeting is sent by [`run`].
    pub(super) fn connect(
        script: Script,
        monitor: Option<&Endpoint>,
        console: Option<&Endpoint>,
        agent: Option<&Endpoint>,
    ) -> Result<Runner, String> {
        let (tx, rx) = mpsc::channel();
        let open = |e: Option<&Endpoint>, what: &str| -> Result<Option<(Stream, Stream)>, String> {
            let Some(e) = e else { return Ok(None) };
            let s = Stream::connect(e)
                .map_err(|err| format!("connecting the {what} ({e:?}): {err}"))?;
            let r = s.try_clone().map_err(|err| format!("the {what}: {err}"))?;
            Ok(Some((s, r)))
        };
        let qmp = open(monitor, "monitor")?;
        let console = open(console, "console")?;
        let agent = open(agent, "guest agent channel")?;
        let mut runner = Runner {
            script,
            next: 0,
            qmp: None,
            agent: None,
            console: None,
            closed: Vec::new(),
            rx,
            _tx: tx.clone(),
            pending_qmp: VecDeque::new(),
            pending_agent: VecDeque::new(),
            console_seen: Vec::new(),
            nonces: Nonces::default(),
            problems: 0,
            capabilities_done: false,
            quitting: false,
            hanging: None,
        };
        if let Some((w, r)) = qmp {
            let tx = tx.clone();
            std::thread::spawn(move || read_json(r, Chan::Qmp, tx));
            runner.qmp = Some(w);
        }
        if let Some((w, r)) = agent {
            let tx = tx.clone();
            std::thread::spawn(move || read_json(r, Chan::Agent, tx));
            runner.agent = Some(w);
        }
        if let Some((w, r)) = console {
            std::thread::spawn(move || read_console(r, tx));
            runner.console = Some(w);
        }
        Ok(runner)
    }

    /// Follows the script; returns the exit status.
    pub(super) fn run(mut self) -> i32 {
        let greeting = self.script.greeting.clone();
        self.send(Chan::Qmp, &greeting);
        loop {
            if self.hanging.is_none() {
                let exit = self.advance();
                // About to wait for qm (or to exit): console bytes held back go out now.
                self.flush_console();
                if let Some(status) = exit {
                    return status;
                }
                if self.quitting && self.hanging.is_none() {
                    return self.finish(EXIT_OK);
                }
            }
            match self.rx.recv_timeout(self.script.idle) {
                Ok(Input::Msg(chan, msg)) => self.received(chan, msg),
                Ok(Input::Bad(chan, text)) => {
                    if self.hanging.is_none() {
                        self.problem(format!(
                            "qm sent a line that is not JSON on {}: {text}",
                            chan.name()
                        ));
                        let e = json!({"error": {"class": "GenericError", "desc": "qm-fake-qemu: not JSON"}});
                        self.send(chan, &e);
                    }
                }
                Ok(Input::Console(bytes)) => {
                    self.console_seen.extend(bytes);
                    let excess = self.console_seen.len().saturating_sub(CONSOLE_KEEP);
                    self.console_seen.drain(..excess);
                }
                Ok(Input::Eof(Chan::Qmp)) if !self.closed.contains(&Chan::Qmp) => {
                    if self.hanging.is_none() {
                        return self.finish(EXIT_OK);
                    }
                }
                Ok(Input::Eof(_)) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let idle = self.script.idle.as_secs_f64();
                    match self.hanging {
                        Some(line) => say(&format!(
                            "hanging as script line {line} says; idle limit ({idle} s) reached"
                        )),
                        None => self.problem(format!(
                            "idle limit ({idle} s) reached: nothing from qm while {}",
                            self.where_now()
                        )),
                    }
                    self.finish(EXIT_OK);
                    return EXIT_IDLE;
                }
            }
        }
    }

    /// Carries out steps up to the next one that waits for qm (or the end). `Some(status)`
    /// when a step says to exit.
    fn advance(&mut self) -> Option<i32> {
        while let Some(step) = self.script.steps.get(self.next) {
            let (line, delay) = (step.line, step.delay);
            let action = step.action.clone();
            match &action {
                Action::Expect { .. } => return None,
                Action::ConsoleWait(text) => {
                    // Not seen yet: wait (`None`: nothing says to exit).
                    let end = self.nonces.find_wait(text, &self.console_seen)?;
                    self.console_seen.drain(..end);
                    self.next += 1;
                    continue;
                }
                _ => {}
            }
            std::thread::sleep(delay);
            self.next += 1;
            match action {
                Action::Reply { chan, msg } => self.reply(chan, msg, line),
                Action::Event(msg) => self.send(Chan::Qmp, &stamped(msg)),
                Action::ConsoleWrite(text) => {
                    let now = self.nonces.write(&text);
                    self.write_raw(Chan::Console, &now);
                }
                Action::Garbage(chan, text) => self.write_raw(chan, text.as_bytes()),
                Action::Disconnect(chan) => {
                    if chan == Chan::Console {
                        self.flush_console();
                    }
                    if let Some(s) = self.stream(chan).take() {
                        s.close();
                    }
                    self.closed.push(chan);
                }
                Action::Hang => {
                    say(&format!("hanging as script line {line} says"));
                    self.hanging = Some(line);
                    return None;
                }
                Action::Exit(status) => {
                    say(&format!(
                        "exiting with status {status} as script line {line} says"
                    ));
                    return Some(status);
                }
                Action::Sleep | Action::Expect { .. } | Action::ConsoleWait(_) => {}
            }
        }
        None
    }

    /// A message from qm on `chan`.
    fn received(&mut self, chan: Chan, msg: Value) {
        if self.hanging.is_some() {
            return;
        }
        let id = msg.get("id").cloned();
        let name = command_name(&msg).map(str::to_owned);
        if chan == Chan::Agent
            && matches!(name.as_deref(), Some("guest-sync-delimited" | "guest-sync"))
        {
            // The agent protocol's own handshake: random ids, answered by the fake itself.
            let sync_id = msg["arguments"]["id"].clone();
            let mut reply = json!({"return": sync_id}).to_string().into_bytes();
            reply.push(b'\n');
            if name.as_deref() == Some("guest-sync-delimited") {
                reply.insert(0, 0xFF);
            }
            self.write_raw(Chan::Agent, &reply);
            return;
        }
        if let Some(step) = self.script.steps.get(self.next) {
            if let Action::Expect {
                chan: want_chan,
                msg: want,
                how,
            } = &step.action
            {
                if *want_chan == chan && matches(want, *how, &msg) {
                    let pending = Pending {
                        id,
                        recorded: want.get("id").cloned(),
                    };
                    if chan == Chan::Qmp {
                        self.pending_qmp.push_back(pending);
                        self.quitting |= name.as_deref() == Some("quit");
                    } else {
                        self.pending_agent.push_back(pending);
                    }
                    self.next += 1;
                    return;
                }
            }
        }
        if chan == Chan::Qmp {
            let auto = match name.as_deref() {
                Some("qmp_capabilities")
                    if !self.script.expects_capabilities && !self.capabilities_done =>
                {
                    self.capabilities_done = true;
                    true
                }
                Some("quit") if !self.expectations_left() => {
                    self.quitting = true;
                    true
                }
                _ => false,
            };
            if auto {
                self.send(Chan::Qmp, &with_id(json!({"return": {}}), id));
                if self.quitting {
                    // What QEMU says after a `quit`, for programs that wait for it.
                    let event = json!({"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}});
                    self.send(Chan::Qmp, &stamped(event));
                }
                return;
            }
        }
        let report = format!(
            "unexpected {} message {}; {}",
            chan.name(),
            without_id(&msg),
            self.where_now()
        );
        self.problem(report.clone());
        let err =
            json!({"error": {"class": "GenericError", "desc": format!("qm-fake-qemu: {report}")}});
        self.send(chan, &with_id(err, id));
    }

    /// Answers the pending command the recorded reply belongs to (by its recorded id), or
    /// the oldest.
    fn reply(&mut self, chan: Chan, msg: Value, line: usize) {
        let pending = if chan == Chan::Qmp {
            &mut self.pending_qmp
        } else {
            &mut self.pending_agent
        };
        let index = msg
            .get("id")
            .and_then(|rid| {
                pending
                    .iter()
                    .position(|p| p.recorded.as_ref() == Some(rid))
            })
            .unwrap_or(0);
        let Some(p) = pending.remove(index) else {
            self.problem(format!("script line {line}: no command to answer"));
            return;
        };
        self.send(chan, &with_id(msg, p.id));
    }

    fn expectations_left(&self) -> bool {
        self.script.steps[self.next.min(self.script.steps.len())..]
            .iter()
            .any(|s| matches!(s.action, Action::Expect { .. } | Action::ConsoleWait(_)))
    }

    /// Where the script stands, for reports.
    fn where_now(&self) -> String {
        match self.script.steps.get(self.next) {
            None => "the script has ended".to_owned(),
            Some(step) => format!("script line {}: {}", step.line, describe(&step.action)),
        }
    }

    fn problem(&mut self, text: String) {
        self.problems += 1;
        say(&text);
    }

    /// The end: reports expectations never met; the status is `ok` unless something went wrong.
    fn finish(&mut self, ok: i32) -> i32 {
        let unmet: Vec<String> = self.script.steps[self.next.min(self.script.steps.len())..]
            .iter()
            .filter(|s| matches!(s.action, Action::Expect { .. } | Action::ConsoleWait(_)))
            .map(|s| {
                format!(
                    "script line {}: {} — never happened",
                    s.line,
                    describe(&s.action)
                )
            })
            .collect();
        for u in unmet {
            self.problem(u);
        }
        if self.problems == 0 {
            return ok;
        }
        say(&format!(
            "the script was not followed ({} problem(s) above); exit status {EXIT_NOT_FOLLOWED}",
            self.problems
        ));
        EXIT_NOT_FOLLOWED
    }

    fn stream(&mut self, chan: Chan) -> &mut Option<Stream> {
        match chan {
            Chan::Qmp => &mut self.qmp,
            Chan::Agent => &mut self.agent,
            Chan::Console => &mut self.console,
        }
    }

    fn send(&mut self, chan: Chan, msg: &Value) {
        let mut text = msg.to_string().into_bytes();
        text.extend_from_slice(if chan == Chan::Qmp { b"\r\n" } else { b"\n" });
        self.write_raw(chan, &text);
    }

    /// Writes the console bytes held back for a nonce that did not come.
    fn flush_console(&mut self) {
        let held = self.nonces.flush();
        if !held.is_empty() {
            self.write_raw(Chan::Console, &held);
        }
    }

    /// Writes to a channel; a channel qm closed is not the script's problem.
    fn write_raw(&mut self, chan: Chan, bytes: &[u8]) {
        if let Some(s) = self.stream(chan).as_mut() {
            let _ = s.write_all(bytes);
        }
    }
}

/// What a waiting step waits for, in words.
fn describe(action: &Action) -> String {
    match action {
        Action::Expect { chan, msg, how } => {
            let how = match how {
                Match::Exact => "exactly",
                Match::Subset => "with at least these arguments",
                Match::Name => "by name",
            };
            format!(
                "expected {} command {} ({how})",
                chan.name(),
                without_id(msg)
            )
        }
        Action::ConsoleWait(text) => format!(
            "waiting for console input {:?}",
            String::from_utf8_lossy(text)
        ),
        other => format!("{other:?}"),
    }
}

/// `event` with the current time as its timestamp, unless it has one.
fn stamped(mut event: Value) -> Value {
    if event.get("timestamp").is_none() {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        event["timestamp"] = json!({"seconds": t.as_secs(), "microseconds": t.subsec_micros()});
    }
    event
}

fn without_id(msg: &Value) -> Value {
    let mut msg = msg.clone();
    if let Some(obj) = msg.as_object_mut() {
        obj.remove("id");
    }
    msg
}

fn with_id(mut msg: Value, id: Option<Value>) -> Value {
    if let Some(obj) = msg.as_object_mut() {
        match id {
            Some(id) => obj.insert("id".into(), id),
            None => obj.remove("id"),
        };
    }
    msg
}

/// One line of the fake's report on stderr (QEMU's log, which qm keeps).
pub(super) fn say(text: &str) {
    eprintln!("qm-fake-qemu: {text}");
}
