//! A fake guest agent peer: plays `qemu-ga`'s side of one socket in a thread, for the faults
//! a real agent will not produce on demand (garbage, stale and oversize replies, silence).
//!
//! The peer parses the client's stream the way `qemu-ga` does: JSON objects back to back, a
//! 0xFF byte dropping any half-read object. Each command goes to the test's handler, which
//! answers by writing to the socket (see [`reply`], [`sync_reply`]) or not at all.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

/// What the handler says after a command.
pub enum Then {
    Continue,
    /// Close the socket (EOF for the client).
    Close,
}

/// A running fake agent. Joining returns every command it received.
pub struct FakeAgent {
    thread: Option<JoinHandle<()>>,
    received: Arc<Mutex<Vec<Value>>>,
}

impl FakeAgent {
    /// Serves `sock` with `handler`, until the client closes or the handler says
    /// [`Then::Close`]. A 30 s read timeout keeps a broken test from hanging.
    pub fn start<F>(sock: UnixStream, mut handler: F) -> FakeAgent
    where
        F: FnMut(&Value, &mut UnixStream) -> Then + Send + 'static,
    {
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let thread = std::thread::spawn(move || {
            let mut sock = sock;
            sock.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let n = match sock.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                for &b in &chunk[..n] {
                    if b == 0xFF {
                        buf.clear(); // qemu-ga's lexer resets on 0xFF
                    } else {
                        buf.push(b);
                    }
                }
                let mut consumed = 0;
                let mut cmds = Vec::new();
                {
                    let mut stream =
                        serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                    loop {
                        match stream.next() {
                            Some(Ok(v)) => {
                                consumed = stream.byte_offset();
                                cmds.push(v);
                            }
                            Some(Err(e)) if e.is_eof() => break,
                            Some(Err(_)) => {
                                consumed = buf.len();
                                break;
                            }
                            None => break,
                        }
                    }
                }
                buf.drain(..consumed);
                for cmd in cmds {
                    log.lock().unwrap().push(cmd.clone());
                    if let Then::Close = handler(&cmd, &mut sock) {
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                }
            }
        });
        FakeAgent {
            thread: Some(thread),
            received,
        }
    }

    /// The commands received so far.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits for the peer to end (the client must have closed its end).
    pub fn join(mut self) -> Vec<Value> {
        if let Some(t) = self.thread.take() {
            t.join().expect("the fake agent panicked");
        }
        self.received()
    }
}

/// The name of a command.
pub fn name(cmd: &Value) -> &str {
    cmd["execute"].as_str().unwrap_or_default()
}

/// Writes `{"return": value, "id": <the command's id>}` and a newline.
pub fn reply(sock: &mut UnixStream, cmd: &Value, value: Value) {
    let mut msg = json!({ "return": value });
    if let Some(id) = cmd.get("id") {
        msg["id"] = id.clone();
    }
    let _ = sock.write_all(format!("{msg}\n").as_bytes());
}

/// Writes an error reply for `cmd`.
pub fn error(sock: &mut UnixStream, cmd: &Value, class: &str, desc: &str) {
    let mut msg = json!({ "error": { "class": class, "desc": desc } });
    if let Some(id) = cmd.get("id") {
        msg["id"] = id.clone();
    }
    let _ = sock.write_all(format!("{msg}\n").as_bytes());
}

/// Answers a `guest-sync-delimited` as qemu-ga does: 0xFF, then the echo of its id.
pub fn sync_reply(sock: &mut UnixStream, cmd: &Value) {
    let _ = sock.write_all(b"\xff");
    reply(sock, cmd, cmd["arguments"]["id"].clone());
}

/// Writes raw bytes.
pub fn raw(sock: &mut UnixStream, bytes: &[u8]) {
    let _ = sock.write_all(bytes);
}

/// A handler that behaves like a healthy agent for sync and ping, and answers any other
/// command with `{"return": <its arguments>}`.
pub fn echo(cmd: &Value, sock: &mut UnixStream) -> Then {
    match name(cmd) {
        "guest-sync-delimited" => sync_reply(sock, cmd),
        "guest-ping" => reply(sock, cmd, json!({})),
        _ => reply(
            sock,
            cmd,
            cmd.get("arguments").cloned().unwrap_or(json!({})),
        ),
    }
    Then::Continue
}
