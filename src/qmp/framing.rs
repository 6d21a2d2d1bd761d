//! Splitting the QMP byte stream into JSON messages.

use std::fmt;
use std::marker::PhantomData;
use std::sync::LazyLock;

use memchr::memmem;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::events::RawEvent;

/// One message from QEMU: an event, kept as its text until someone reads it, or anything else
/// (greeting, reply), parsed.
pub(crate) enum Message {
    Event(RawEvent),
    Other(Value),
}

impl Message {
    pub(crate) fn into_value(self) -> Value {
        match self {
            Message::Event(ev) => ev.value(),
            Message::Other(v) => v,
        }
    }
}

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

    /// Frees the buffer (the connection is over): an oversize message may have grown it to the
    /// size cap.
    pub(crate) fn release(&mut self) {
        self.buf = Vec::new();
        self.end = 0;
        self.scanned = 0;
    }

    /// True when bytes of an unfinished message are buffered.
    pub(crate) fn has_partial(&self) -> bool {
        self.buf[..self.end]
            .iter()
            .any(|b| !b.is_ascii_whitespace())
    }

    /// Moves every complete message into `out`, in order. Fails on a line that is not a JSON
    /// object and on a message longer than the cap; the stream cannot be trusted after that.
    pub(crate) fn drain_messages(&mut self, out: &mut Vec<Message>) -> Result<(), String> {
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
        // A large message grew the buffer: give the memory back once it is consumed, rather
        // than keep up to the size cap for the rest of the connection.
        const KEEP: usize = 1 << 20;
        if self.buf.capacity() > KEEP && self.end < KEEP / 4 {
            self.buf.truncate(KEEP / 4);
            self.buf.shrink_to_fit();
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

/// What decides where a message goes: the name of an event, borrowed from its text. Reading it
/// checks the whole message exactly as parsing it into a `serde_json::Value` would (numbers in
/// range, nesting depth, UTF-8), without building the value: an event kept as text must parse
/// again when it is read.
struct Head<'a> {
    event: Option<Name<'a>>,
}

/// An event's name: the slice of the text it is, when it has no escapes (`None` otherwise).
struct Name<'a>(Option<&'a str>);

/// Any JSON value, checked and thrown away.
struct Valid;

/// A key of the top-level object: whether it is `event`.
struct Key(bool);

impl<'de: 'a, 'a> Deserialize<'de> for Head<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Head<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head<'a>, A::Error> {
                let mut event = None;
                while let Some(Key(is_event)) = map.next_key()? {
                    if is_event {
                        // A repeated key: the last one counts, as in a parsed value.
                        event = Some(map.next_value::<Name<'a>>()?);
                    } else {
                        map.next_value::<Valid>()?;
                    }
                }
                Ok(Head { event })
            }
        }
        d.deserialize_map(Visit(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'a>, E> {
                Ok(Name(Some(v)))
            }
            fn visit_str<E>(self, _: &str) -> Result<Name<'a>, E> {
                Ok(Name(None))
            }
        }
        d.deserialize_str(Visit(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl Visitor<'_> for Visit {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v == "event"))
            }
        }
        d.deserialize_str(Visit)
    }
}

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Valid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_unit<E>(self) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
                while seq.next_element::<Valid>()?.is_some() {}
                Ok(Valid)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
                while map.next_key::<Valid>()?.is_some() {
                    map.next_value::<Valid>()?;
                }
                Ok(Valid)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Parses one line. An event is checked (the whole line is valid JSON) and kept as text, with
/// its name located; anything else is parsed into a value.
///
/// Only a line that holds `"event"` can be an event with its key written plainly: any other
/// (every reply) is parsed once, straight into a value, not checked first as a possible event
/// (a second pass on every command's critical path). A key spelled with escapes is still
/// found, by the parsed value.
fn parse(line: &[u8]) -> Result<Message, String> {
    // Built once: a searcher costs more to set up than to search a reply.
    static EVENT_KEY: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"event\""));
    if line.first() == Some(&b'{') && EVENT_KEY.find(line).is_some() {
        if let Ok(text) = std::str::from_utf8(line) {
            if let Ok(Head { event: Some(name) }) = serde_json::from_str::<Head>(text) {
                return Ok(Message::Event(RawEvent::new(text, name.0)));
            }
        }
    }
    let value = parse_value(line)?;
    if value.get("event").is_some() {
        // An event whose name is not a string (or repeated): kept as text all the same.
        let text = String::from_utf8_lossy(line);
        return Ok(Message::Event(RawEvent::new(&text, None)));
    }
    Ok(Message::Other(value))
}

fn parse_value(line: &[u8]) -> Result<Value, String> {
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
        lb.drain_messages(&mut out)
            .map(|()| out.into_iter().map(Message::into_value).collect())
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

    #[test]
    fn events_keep_their_text_and_name() {
        let mut lb = LineBuffer::new(1 << 20);
        let mut out = Vec::new();
        let line = b"{\"event\": \"STOP\", \"data\": {}}\n{\"event\": 5}\n{\"return\": {}}\n";
        feed_raw(&mut lb, line);
        lb.drain_messages(&mut out).unwrap();
        assert!(matches!(&out[0], Message::Event(ev) if ev.quick_name() == Some("STOP")));
        assert!(matches!(out[1], Message::Event(_)));
        assert!(matches!(out[2], Message::Other(_)));
        let values: Vec<Value> = out.into_iter().map(Message::into_value).collect();
        assert_eq!(values[0], serde_json::json!({"event": "STOP", "data": {}}));
        assert_eq!(values[1], serde_json::json!({"event": 5}));
        // What a parsed value refuses is refused in an event too.
        for bad in [
            &b"{\"event\": \"STOP\", \"data\": }\n"[..],
            b"{\"event\": \"STOP\", \"n\": 1e400}\n",
            b"{\"event\": \"STOP\", \"s\": \"\\ud800\"}\n",
        ] {
            let mut lb = LineBuffer::new(1 << 20);
            feed_raw(&mut lb, bad);
            let whole = serde_json::from_slice::<Value>(bad.trim_ascii());
            assert!(whole.is_err());
            assert!(lb.drain_messages(&mut Vec::new()).is_err(), "{bad:?}");
        }
        let deep = format!(
            "{{\"event\": \"X\", \"d\": {}1{}}}\n",
            "[".repeat(200),
            "]".repeat(200)
        );
        let mut lb = LineBuffer::new(1 << 20);
        feed_raw(&mut lb, deep.as_bytes());
        assert!(lb.drain_messages(&mut Vec::new()).is_err());
    }

    #[test]
    fn an_event_key_spelled_with_escapes_is_still_an_event() {
        let mut lb = LineBuffer::new(1 << 20);
        feed_raw(
            &mut lb,
            b"{\"\\u0065vent\": \"X\", \"data\": {}}\n{\"return\": {}, \"id\": 1}\n",
        );
        let mut out = Vec::new();
        lb.drain_messages(&mut out).unwrap();
        assert!(matches!(&out[0], Message::Event(_)));
        assert!(matches!(&out[1], Message::Other(_)));
        assert_eq!(out.remove(0).into_value()["event"], "X");
    }

    #[test]
    fn a_large_message_does_not_pin_its_buffer() {
        let mut lb = LineBuffer::new(64 << 20);
        let mut big = b"{\"return\": \"".to_vec();
        big.resize(8 << 20, b'x');
        big.extend_from_slice(b"\"}\n");
        feed_raw(&mut lb, &big);
        lb.drain_messages(&mut Vec::new()).unwrap();
        assert!(lb.buf.capacity() <= 1 << 20, "{}", lb.buf.capacity());
        lb.release();
        assert_eq!(lb.buf.capacity(), 0);
    }

    fn feed_raw(lb: &mut LineBuffer, bytes: &[u8]) {
        lb.push(bytes);
    }
}
