//! A machine's transcript: every message on its channels as one JSON line in a file, for a
//! failing CI job to upload and for the fake QEMU to replay (`src/fake`).
//!
//! One file per machine, shared by the QMP client, the console and the guest agent (one
//! [`TranscriptFile`] behind an `Arc`), each holding it in its own [`Transcript`] slot. Lines:
//!
//! - QMP: `{"t": T, "dir": D, "msg": M}`: `D` `"out"` for what qm sent, `"in"` for what QEMU
//!   sent (the greeting, replies), `"event"` for QEMU's events; `M` the message: what qm sent
//!   and QEMU's events byte for byte, QEMU's other messages as parsed (the same JSON; key order
//!   and spacing may differ).
//! - Console: `{"t": T, "chan": "console", "dir": D, "text": S}`: `D` `"out"` for bytes qm
//!   wrote (one line per send, written before the bytes go out), `"in"` for bytes read from
//!   the guest (one line per read, as read). A piece that is not valid UTF-8 is
//!   `"bytes": B64` (standard base64, padded) instead of `"text"`, so every byte replays.
//! - Guest agent: `{"t": T, "chan": "agent", "dir": D, "msg": M}`: `"out"` a command qm sent
//!   (byte for byte, with its id), `"in"` its reply (as parsed). The agent protocol's own
//!   exchanges are left out: `guest-sync`/`guest-sync-delimited` (random ids, which the fake
//!   answers itself), the 0xFF bytes around them, and replies to commands whose caller gave up.
//!
//! `T` is the time in seconds since the Unix epoch (a float, microsecond resolution: it lines
//! up with other logs and across machines). Each line is written by one `write` on a file
//! opened for appending, under one lock, so lines from the QMP reader, the console reader and
//! the agent's callers are whole and in one order, and a harness killed mid-run leaves whole
//! lines. Every line is recorded before its effect can be seen (what qm sends before it is
//! sent, what it receives before anyone is given it), so causes come before their effects in
//! the file even across channels.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::log::warning;

/// The open transcript file of a machine, shared by its channels.
pub(crate) struct TranscriptFile {
    /// `None` once a write failed (warned about once; the run goes on without it).
    file: Mutex<Option<File>>,
}

impl TranscriptFile {
    /// Opens `path` for appending (created with mode 0600 if needed).
    pub(crate) fn open(path: &Path) -> Result<Arc<TranscriptFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(format!("opening the QMP transcript {}", path.display()), e))?;
        Ok(Arc::new(TranscriptFile {
            file: Mutex::new(Some(file)),
        }))
    }

    /// Writes one line: `{"t":…,` then what `fields` appends (JSON members, without braces)
    /// then `}`, built in one buffer of about `size` bytes.
    fn write_line(&self, size: usize, fields: impl FnOnce(&mut Vec<u8>)) {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = Vec::with_capacity(size + 80);
        let _ = write!(line, "{{\"t\":{}.{:06},", t.as_secs(), t.subsec_micros());
        fields(&mut line);
        line.extend_from_slice(b"}\n");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_all(&line) {
                warning!("writing the transcript failed ({e}); it stops here");
                *file = None;
            }
        }
    }
}

/// A channel's hold on its machine's transcript: empty (nothing is written, one cheap check)
/// unless [`set`](Self::set).
#[derive(Default)]
pub(crate) struct Transcript {
    file: OnceLock<Arc<TranscriptFile>>,
}

impl Transcript {
    /// A slot already holding `file` (if any).
    pub(crate) fn with(file: Option<Arc<TranscriptFile>>) -> Transcript {
        let t = Transcript::default();
        if let Some(file) = file {
            t.set(file);
        }
        t
    }

    /// Starts writing to `file`; only the first call has an effect.
    pub(crate) fn set(&self, file: Arc<TranscriptFile>) {
        let _ = self.file.set(file);
    }

    /// True when lines are written.
    fn is_on(&self) -> bool {
        self.file.get().is_some()
    }

    /// Records a QMP message qm sent (`line`: its JSON text).
    pub(crate) fn sent(&self, line: &[u8]) {
        self.record("out", line);
    }

    /// Records a QMP message QEMU sent: an event, or anything else (greeting, reply).
    pub(crate) fn received(&self, msg: &Value) {
        if self.file.get().is_some() {
            let dir = if msg.get("event").is_some() {
                "event"
            } else {
                "in"
            };
            self.record(dir, msg.to_string().as_bytes());
        }
    }

    /// Records one QMP message: `dir` is `out`, `in` or `event`; `msg` its JSON text (for a
    /// caller that has the text already, e.g. an event kept as text).
    pub(crate) fn record(&self, dir: &str, msg: &[u8]) {
        self.message("", dir, msg);
    }

    /// Records a guest agent message: `dir` `out` (a command, `msg` its JSON text) or `in` (a
    /// reply).
    pub(crate) fn agent(&self, dir: &str, msg: &[u8]) {
        self.message("\"chan\":\"agent\",", dir, msg);
    }

    /// Records a guest agent reply as parsed (serialised only when lines are written).
    pub(crate) fn agent_reply(&self, reply: &Value) {
        if self.is_on() {
            self.agent("in", reply.to_string().as_bytes());
        }
    }

    /// One `{"t":…,<chan>"dir":…,"msg":…}` line; `chan` is empty for QMP.
    fn message(&self, chan: &str, dir: &str, msg: &[u8]) {
        let Some(file) = self.file.get() else {
            return;
        };
        file.write_line(msg.len(), |line| {
            let _ = write!(line, "{chan}\"dir\":\"{dir}\",\"msg\":");
            line.extend_from_slice(msg);
        });
    }

    /// Records console bytes: `dir` `out` (qm wrote them) or `in` (read from the guest).
    pub(crate) fn console(&self, dir: &str, bytes: &[u8]) {
        let Some(file) = self.file.get() else {
            return;
        };
        file.write_line(bytes.len(), |fields| {
            let _ = write!(fields, "\"chan\":\"console\",\"dir\":\"{dir}\",");
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    fields.extend_from_slice(b"\"text\":");
                    serde_json::to_writer(&mut *fields, text).expect("a string always serialises");
                }
                Err(_) => {
                    let _ = write!(
                        fields,
                        "\"bytes\":\"{}\"",
                        crate::qga::base64::encode(bytes)
                    );
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_time_direction_and_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let t = Transcript::default();
        t.sent(b"{\"execute\":\"nothing yet\"}");
        t.set(TranscriptFile::open(&path).unwrap());
        t.sent(br#"{"execute":"query-status","id":1}"#);
        t.received(&serde_json::json!({"return": {}, "id": 1}));
        t.received(&serde_json::json!({"event": "STOP", "timestamp": {}}));
        // The console and the agent share the file through their own slots.
        let console = Transcript::with(t.file.get().cloned());
        console.console("out", b"echo \"hi\"\n");
        console.console("in", b"\xff\x00ok");
        let agent = Transcript::with(t.file.get().cloned());
        agent.agent("out", br#"{"execute":"guest-ping","id":7}"#);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 6, "{text}");
        let dirs: Vec<&str> = lines.iter().map(|l| l["dir"].as_str().unwrap()).collect();
        assert_eq!(dirs, ["out", "in", "event", "out", "in", "out"]);
        assert!(lines[0].get("chan").is_none());
        assert_eq!(lines[3]["chan"], "console");
        assert_eq!(lines[3]["text"], "echo \"hi\"\n");
        // Not UTF-8: base64, every byte kept.
        assert_eq!(lines[4]["bytes"], "/wBvaw==");
        assert!(lines[4].get("text").is_none());
        assert_eq!(lines[5]["chan"], "agent");
        assert_eq!(lines[5]["msg"]["id"], 7);
        assert_eq!(lines[0]["msg"]["execute"], "query-status");
        assert_eq!(lines[2]["msg"]["event"], "STOP");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let t0 = lines[0]["t"].as_f64().unwrap();
        assert!(t0 <= now && now - t0 < 600.0, "{t0} vs {now}");
    }
}
