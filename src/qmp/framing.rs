//! Splitting the QMP byte stream into JSON messages.

use serde_json::Value;

/// Accumulates bytes from the monitor and yields one JSON object per line.
///
/// Scanning resumes where the previous call stopped, so a reply that arrives in many pieces is
/// searched for its newline once, not once per piece.
pub(crate) struct LineBuffer {
    /// `buf[..end]` holds the bytes received; the rest is zeroed room to read into, kept
    /// initialised so that reading needs no `unsafe` and zeroing happens only when it grows.
    buf: Vec<u8>,
    end: usize,
    scanned: usize,
    max_message: usize,
}

impl LineBuffer {
    pub(crate) fn new(max_message: usize) -> LineBuffer {
        LineBuffer {
            buf: Vec::new(),
            end: 0,
            scanned: 0,
            max_message,
        }
    }

    /// Lets `read` fill up to `n` bytes at the end of the buffer; keeps as many as it says it
    /// read.
    pub(crate) fn fill<E>(
        &mut self,
        n: usize,
        read: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.buf.len() < self.end + n {
            self.buf.resize(self.end + n, 0);
        }
        let got = read(&mut self.buf[self.end..self.end + n])?;
        self.end += got.min(n);
        Ok(got)
    }

    /// Appends `bytes` (as if read).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let _ = self.fill(bytes.len(), |room| {
            room.copy_from_slice(bytes);
            Ok::<_, ()>(bytes.len())
        });
    }

    /// True when bytes of an unfinished message are buffered.
    pub(crate) fn has_partial(&self) -> bool {
        self.buf[..self.end]
            .iter()
            .any(|b| !b.is_ascii_whitespace())
    }

    /// Moves every complete message into `out`, in order. Fails on a line that is not a JSON
    /// object and on a message longer than the cap; the stream cannot be trusted after that.
    pub(crate) fn drain_messages(&mut self, out: &mut Vec<Value>) -> Result<(), String> {
        // The cap applies to a line's raw bytes (whitespace included, newline excluded), both
        // while it is still arriving and once complete, so it cannot depend on how the stream
        // happened to be split into reads.
        let mut start = 0;
        while let Some(pos) = self.buf[self.scanned..self.end]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = self.scanned + pos;
            if end - start > self.max_message {
                return Err(self.oversize());
            }
            let line = self.buf[start..end].trim_ascii();
            self.scanned = end + 1;
            start = end + 1;
            if !line.is_empty() {
                out.push(parse(line)?);
            }
        }
        // Everything left has been searched: the next read is searched from its own start,
        // so a long line costs one pass, not one pass per read.
        self.buf.copy_within(start..self.end, 0);
        self.end -= start;
        self.scanned = self.end;
        if self.end > self.max_message {
            return Err(self.oversize());
        }
        Ok(())
    }

    fn oversize(&self) -> String {
        format!(
            "a message exceeds the limit of {} bytes (see max_message_size)",
            self.max_message
        )
    }
}

fn parse(line: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(line) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(format!(
            "expected a JSON object, got {}",
            preview(&other.to_string())
        )),
        Err(e) => Err(format!(
            "invalid JSON ({e}): {}",
            preview(&String::from_utf8_lossy(line))
        )),
    }
}

/// The start of a long text, for error messages.
pub(crate) fn preview(text: &str) -> String {
    const MAX: usize = 120;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lb: &mut LineBuffer, bytes: &[u8]) -> Result<Vec<Value>, String> {
        lb.push(bytes);
        let mut out = Vec::new();
        lb.drain_messages(&mut out).map(|()| out)
    }

    #[test]
    fn splits_lines_across_reads() {
        let mut lb = LineBuffer::new(1 << 20);
        assert!(feed(&mut lb, b"{\"a\":").unwrap().is_empty());
        assert!(lb.has_partial());
        let got = feed(&mut lb, b"1}\r\n\r\n{\"b\":2}\n{\"c\"").unwrap();
        assert_eq!(
            got,
            vec![serde_json::json!({"a":1}), serde_json::json!({"b":2})]
        );
        assert_eq!(
            feed(&mut lb, b":3}\n").unwrap(),
            vec![serde_json::json!({"c":3})]
        );
        assert!(!lb.has_partial());
    }

    #[test]
    fn rejects_garbage_and_non_objects() {
        let mut lb = LineBuffer::new(1 << 20);
        assert!(feed(&mut lb, b"nonsense\n")
            .unwrap_err()
            .contains("invalid JSON"));
        let mut lb = LineBuffer::new(1 << 20);
        assert!(feed(&mut lb, b"[1,2]\n")
            .unwrap_err()
            .contains("JSON object"));
    }

    #[test]
    fn caps_message_size_even_without_newline() {
        let mut lb = LineBuffer::new(16);
        assert!(feed(&mut lb, &[b' '; 8]).is_ok());
        assert!(feed(&mut lb, &[b'x'; 32])
            .unwrap_err()
            .contains("limit of 16"));
    }
}
