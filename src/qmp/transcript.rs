//! A QMP transcript: every message to and from QEMU as one JSON line in a file, for a failing
//! CI job to upload.
//!
//! Each line is `{"t": T, "dir": D, "msg": M}`: `T` the time in seconds since the Unix epoch
//! (a float, microsecond resolution: it lines up with other logs and across machines), `D`
//! `"out"` for what qm sent, `"in"` for what QEMU sent (the greeting, replies), `"event"` for
//! QEMU's events, and `M` the message: what qm sent and QEMU's events byte for byte, QEMU's
//! other messages as parsed (the same JSON; key order and spacing may differ). Each line is written by one
//! `write` on a file opened for appending, so a harness killed mid-run leaves whole lines.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::log::warning;

/// Where a client's transcript goes; empty (nothing is written) unless [`set`](Self::set).
#[derive(Default)]
pub(crate) struct Transcript {
    /// `None` once a write failed (warned about once; the run goes on without it).
    file: OnceLock<Mutex<Option<File>>>,
}

impl Transcript {
    /// Opens `path` for appending (created with mode 0600 if needed).
    pub(crate) fn open(path: &Path) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(format!("opening the QMP transcript {}", path.display()), e))
    }

    /// Starts writing to `file`; only the first call has an effect.
    pub(crate) fn set(&self, file: File) {
        let _ = self.file.set(Mutex::new(Some(file)));
    }

    /// Records a message qm sent (`line`: its JSON text).
    pub(crate) fn sent(&self, line: &[u8]) {
        self.record("out", line);
    }

    /// Records a message QEMU sent: an event, or anything else (greeting, reply).
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

    /// Records one message: `dir` is `out`, `in` or `event`; `msg` its JSON text (for a caller
    /// that has the text already, e.g. an event kept as text).
    pub(crate) fn record(&self, dir: &str, msg: &[u8]) {
        let Some(file) = self.file.get() else {
            return;
        };
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = Vec::with_capacity(msg.len() + 48);
        let _ = write!(
            line,
            "{{\"t\":{}.{:06},\"dir\":\"{dir}\",\"msg\":",
            t.as_secs(),
            t.subsec_micros()
        );
        line.extend_from_slice(msg);
        line.extend_from_slice(b"}\n");
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_all(&line) {
                warning!("writing the QMP transcript failed ({e}); it stops here");
                *file = None;
            }
        }
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
        t.set(Transcript::open(&path).unwrap());
        t.sent(br#"{"execute":"query-status","id":1}"#);
        t.received(&serde_json::json!({"return": {}, "id": 1}));
        t.received(&serde_json::json!({"event": "STOP", "timestamp": {}}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        let dirs: Vec<&str> = lines.iter().map(|l| l["dir"].as_str().unwrap()).collect();
        assert_eq!(dirs, ["out", "in", "event"]);
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
