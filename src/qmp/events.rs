//! The queue of QMP events nobody has read yet.
//!
//! An event is kept as the text QEMU sent (one line of JSON, checked when it arrived) and parsed
//! again only when a caller looks at it: a parsed `serde_json::Value` costs ~20× its text (a
//! map and a heap string per key), and a flood of events nobody reads would cost that much.
//! The event's name is located in the text once, so that waiting for one name skips the others
//! without parsing them.
//!
//! While the queue is short (fewer than [`PARSED_MAX`] events), an arriving event is also
//! parsed at once, by the reader, and the tree kept beside its text: a caller that runs a
//! command and then waits for the event it causes (`stop`, then `STOP`) finds it parsed,
//! because QEMU sends the event before the reply and the reader parses it while the reply is
//! still on its way. Parsing it only when the caller asked put that parse, and its
//! allocations, on the caller's critical path (issue #20). A flood is unaffected: beyond the
//! first few events the queue holds text only.
//!
//! Every event gets a sequence number. A waiter remembers the last one it examined, so each of
//! its wake-ups examines only what arrived since: waiting behind N queued events costs O(N)
//! once, not O(N) per wake-up.

use std::collections::VecDeque;

use serde_json::Value;

/// One event as QEMU sent it.
pub(crate) struct RawEvent {
    text: Box<str>,
    /// Where the event's name sits in `text` (start, length), when it is a plain JSON string
    /// (no escapes); otherwise the name is read by parsing.
    name: Option<(u32, u32)>,
}

impl RawEvent {
    /// An event line; `name` is its name when it is a borrowed slice of `text`.
    pub(crate) fn new(text: &str, name: Option<&str>) -> RawEvent {
        let name = name.and_then(|n| {
            let start = (n.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
            let fits = start + n.len() <= text.len();
            (fits && start <= u32::MAX as usize && n.len() <= u32::MAX as usize)
                .then_some((start as u32, n.len() as u32))
        });
        RawEvent {
            text: text.into(),
            name,
        }
    }

    /// The text QEMU sent.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The event's name without parsing the event, when it was located on arrival.
    pub(crate) fn quick_name(&self) -> Option<&str> {
        let (start, len) = self.name?;
        self.text.get(start as usize..(start + len) as usize)
    }

    /// The parsed event. The text was parsed once on arrival, so this cannot fail in practice;
    /// should it, the text is returned as a string rather than lost.
    pub(crate) fn value(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| Value::String(self.text.to_string()))
    }

    /// The size of the event as QEMU sent it (without the newline).
    #[cfg(test)]
    fn wire_len(&self) -> usize {
        self.text.len()
    }
}

struct Queued {
    seq: u64,
    event: RawEvent,
}

/// How many queued events may also be held parsed (see the module's documentation): a tree
/// costs ~20× its text, so only a handful, whatever the queue's length.
pub(crate) const PARSED_MAX: usize = 8;

/// The events in arrival order, with an optional cap.
pub(crate) struct EventQueue {
    items: VecDeque<Queued>,
    /// The parsed trees of some queued events, by sequence number, in increasing order: only
    /// of events that arrived while fewer than [`PARSED_MAX`] were queued, so never more than
    /// that many. An entry goes when its event leaves the queue.
    parsed: VecDeque<(u64, Value)>,
    /// The sequence number of the next event to arrive (the first is 1; 0 means "none seen").
    next_seq: u64,
    /// At most this many events are kept; `None`: no limit (the default, as QEMU's Python
    /// client: events are never dropped).
    max: Option<usize>,
    /// Events dropped because the queue was full, since the connection started.
    dropped: u64,
    /// Events dropped that no reader has been told about yet.
    unreported: u64,
}

/// Where a waiter stands in the queue: the last sequence number it examined.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cursor(u64);

/// What a waiter is looking for: a name test that needs no parsing (`None`: any name), and a
/// test of the parsed event.
pub(crate) struct Want<'a> {
    pub names: Option<&'a dyn Fn(&str) -> bool>,
    pub test: &'a mut dyn FnMut(&Value) -> bool,
}

impl EventQueue {
    pub(crate) fn new() -> EventQueue {
        EventQueue {
            items: VecDeque::new(),
            parsed: VecDeque::new(),
            next_seq: 1,
            max: None,
            dropped: 0,
            unreported: 0,
        }
    }

    pub(crate) fn push(&mut self, event: RawEvent) {
        if let Some(max) = self.max {
            // A cap of 0 keeps nothing: every event is dropped (and counted).
            while self.items.len() >= max {
                if self.pop_front().is_none() {
                    break;
                }
                self.count_dropped(1);
            }
            if max == 0 {
                self.count_dropped(1);
                self.next_seq += 1;
                return;
            }
        }
        if self.items.len() < PARSED_MAX {
            self.parsed.push_back((self.next_seq, event.value()));
        }
        self.items.push_back(Queued {
            seq: self.next_seq,
            event,
        });
        self.next_seq += 1;
    }

    /// Where the parsed tree of event `seq` is in `parsed`, if it is held.
    fn parsed_index(&self, seq: u64) -> Option<usize> {
        self.parsed.binary_search_by_key(&seq, |(s, _)| *s).ok()
    }

    /// Takes the tree of event `seq` out of `parsed`, or parses `event`.
    fn take_value(&mut self, seq: u64, event: &RawEvent) -> Value {
        match self.parsed_index(seq) {
            Some(i) => self.parsed.remove(i).expect("found above").1,
            None => event.value(),
        }
    }

    fn count_dropped(&mut self, n: u64) {
        self.dropped += n;
        self.unreported += n;
    }

    /// Sets the cap (`None`: no limit). Lowering it below the queue's length drops the oldest
    /// events now, counted as any other drop.
    pub(crate) fn set_max(&mut self, max: Option<usize>) {
        self.max = max;
        if let Some(max) = max {
            let excess = self.items.len().saturating_sub(max);
            if let Some(last) = excess.checked_sub(1).map(|i| self.items[i].seq) {
                self.parsed.retain(|(seq, _)| *seq > last);
            }
            self.items.drain(..excess);
            self.count_dropped(excess as u64);
        }
    }

    pub(crate) fn max(&self) -> Option<usize> {
        self.max
    }

    /// Events dropped because the queue was full, in all.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events dropped since the last call, which reports them (the caller turns a non-zero
    /// count into an error, once).
    pub(crate) fn take_unreported(&mut self) -> u64 {
        std::mem::take(&mut self.unreported)
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.parsed.clear();
    }

    /// Frees the memory of an empty queue that once held many events.
    pub(crate) fn release(&mut self) {
        self.items = VecDeque::new();
    }

    /// Removes the oldest event.
    pub(crate) fn pop_front(&mut self) -> Option<RawEvent> {
        let q = self.items.pop_front()?;
        if self.parsed.front().is_some_and(|(seq, _)| *seq == q.seq) {
            self.parsed.pop_front();
        }
        Some(q.event)
    }

    /// Removes the oldest event and returns it parsed.
    pub(crate) fn pop_front_value(&mut self) -> Option<Value> {
        let q = self.items.pop_front()?;
        Some(self.take_value(q.seq, &q.event))
    }

    /// Takes every queued event out at once (their texts move; nothing is copied or parsed).
    pub(crate) fn take_all(&mut self) -> Taken {
        self.parsed.clear();
        Taken(std::mem::take(&mut self.items))
    }

    /// Removes every queued event, oldest first.
    pub(crate) fn drain(&mut self) -> Vec<RawEvent> {
        self.parsed.clear();
        let all = std::mem::take(&mut self.items);
        all.into_iter().map(|q| q.event).collect()
    }

    /// True when some queued event is one `want` accepts; nothing is removed, and events with
    /// other names are not parsed.
    pub(crate) fn any(&self, want: &mut Want<'_>) -> bool {
        self.items.iter().any(|q| self.examine(q, want).is_some())
    }

    /// Whether `want` accepts `q`: `None` if not; if so, the tree parsed to find out (`None`
    /// inside when the tree was held parsed already).
    fn examine(&self, q: &Queued, want: &mut Want<'_>) -> Option<Option<Value>> {
        if let (Some(names), Some(name)) = (want.names, q.event.quick_name()) {
            if !names(name) {
                return None;
            }
        }
        let mut parsed = None;
        let value = match self.parsed_index(q.seq) {
            Some(i) => &self.parsed[i].1,
            None => parsed.insert(q.event.value()),
        };
        if let Some(names) = want.names {
            if !value["event"].as_str().is_some_and(names) {
                return None;
            }
        }
        (want.test)(value).then_some(parsed)
    }

    /// Removes and returns the oldest event after `cursor` that `want` accepts, moving the
    /// cursor past every event examined. Events already examined through this cursor are not
    /// looked at again; events that do not match stay queued, in order.
    pub(crate) fn take_first(&mut self, cursor: &mut Cursor, want: &mut Want<'_>) -> Option<Value> {
        // Sequence numbers only grow along the queue: find the first unexamined one by halving.
        let start = self.items.partition_point(|q| q.seq <= cursor.0);
        let mut found = None;
        for (i, q) in self.items.iter().enumerate().skip(start) {
            cursor.0 = q.seq;
            if let Some(parsed) = self.examine(q, want) {
                found = Some((i, parsed));
                break;
            }
        }
        let (i, parsed) = found?;
        let q = self.items.remove(i).expect("found above");
        Some(match parsed {
            Some(value) => value,
            None => self.take_value(q.seq, &q.event),
        })
    }
}

/// Events taken out of the queue by [`EventQueue::take_all`], oldest first.
pub(crate) struct Taken(VecDeque<Queued>);

impl Taken {
    /// The events as one JSON array, built from their texts without parsing any: each event's
    /// text is copied in without the white space between its tokens (the form a parsed value
    /// prints; keys stay in QEMU's order), and freed as soon as it is copied. The result is
    /// sized once, with room for one more byte (a C string's NUL), so reading N queued events
    /// costs at most what they hold plus the array's text, never a tree per event.
    pub(crate) fn into_json_array(mut self) -> String {
        let room = 2 + self.0.iter().map(|q| q.event.text.len() + 1).sum::<usize>();
        let mut out = Vec::with_capacity(room + 1);
        out.push(b'[');
        while let Some(q) = self.0.pop_front() {
            if out.len() > 1 {
                out.push(b',');
            }
            push_compact(&mut out, q.event.text.as_bytes());
        }
        out.push(b']');
        // Only ASCII white space between tokens was left out: still UTF-8.
        String::from_utf8(out).expect("UTF-8 text minus ASCII white space is UTF-8")
    }
}

/// Appends the JSON text `text` to `out` without the white space between its tokens (white
/// space inside strings is kept).
fn push_compact(out: &mut Vec<u8>, text: &[u8]) {
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(name: &str, n: u64) -> RawEvent {
        let text = format!("{{\"timestamp\":{{\"seconds\":1,\"microseconds\":2}},\"event\":\"{name}\",\"data\":{{\"n\":{n}}}}}");
        let at = text.find(name).unwrap();
        let ev = RawEvent::new(&text, Some(&text[at..at + name.len()]));
        assert_eq!(ev.quick_name(), Some(name));
        ev
    }

    fn take(q: &mut EventQueue, cursor: &mut Cursor, name: &str) -> Option<Value> {
        let names = |n: &str| n == name;
        let mut test = |_: &Value| true;
        q.take_first(
            cursor,
            &mut Want {
                names: Some(&names),
                test: &mut test,
            },
        )
    }

    #[test]
    fn takes_by_name_and_keeps_the_rest_in_order() {
        let mut q = EventQueue::new();
        for i in 0..5 {
            q.push(event(if i == 3 { "B" } else { "A" }, i));
        }
        let mut c = Cursor::default();
        assert_eq!(take(&mut q, &mut c, "B").unwrap()["data"]["n"], json!(3));
        assert_eq!(q.len(), 4);
        let order: Vec<_> = q
            .drain()
            .iter()
            .map(|e| e.value()["data"]["n"].clone())
            .collect();
        assert_eq!(order, vec![json!(0), json!(1), json!(2), json!(4)]);
    }

    #[test]
    fn a_cursor_never_examines_an_event_twice() {
        let mut q = EventQueue::new();
        for i in 0..100 {
            q.push(event("A", i));
        }
        let mut c = Cursor::default();
        let mut looked = 0;
        let mut test = |_: &Value| {
            looked += 1;
            false
        };
        let mut want = Want {
            names: None,
            test: &mut test,
        };
        assert!(q.take_first(&mut c, &mut want).is_none());
        assert!(q.take_first(&mut c, &mut want).is_none());
        q.push(event("A", 100));
        assert!(q.take_first(&mut c, &mut want).is_none());
        assert_eq!(looked, 101);
        // Another waiter has its own cursor and sees everything.
        assert!(take(&mut q, &mut Cursor::default(), "A").is_some());
    }

    #[test]
    fn a_name_with_escapes_is_matched_by_parsing() {
        let text = r#"{"event":"A\u0042","data":{}}"#;
        let mut q = EventQueue::new();
        q.push(RawEvent::new(text, None));
        assert!(take(&mut q, &mut Cursor::default(), "AB").is_some());
    }

    #[test]
    fn the_cap_drops_the_oldest_and_counts() {
        let mut q = EventQueue::new();
        q.set_max(Some(3));
        for i in 0..5 {
            q.push(event("A", i));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.take_unreported(), 2);
        assert_eq!(q.take_unreported(), 0);
        assert_eq!(q.pop_front().unwrap().value()["data"]["n"], json!(2));
        q.set_max(Some(0));
        q.push(event("A", 9));
        assert!(q.is_empty());
        assert_eq!(q.dropped(), 5);
    }

    #[test]
    fn the_json_array_is_the_events_compacted_in_order() {
        let mut q = EventQueue::new();
        q.push(RawEvent::new(
            "{\"event\": \"A\", \"data\": {\"s\": \"a b\\\" c\", \"n\": [1, 2]}}",
            None,
        ));
        for i in 0..20 {
            q.push(event("B", i));
        }
        let text = q.take_all().into_json_array();
        assert!(q.is_empty());
        assert!(text.starts_with(r#"[{"event":"A","data":{"s":"a b\" c","n":[1,2]}},{"timestamp""#));
        let all: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(all.len(), 21);
        assert_eq!(all[0]["data"]["s"], "a b\" c");
        assert_eq!(all[20]["data"]["n"], 19);
        assert!(!text.contains(' ') || text.contains("a b"));
        assert_eq!(EventQueue::new().take_all().into_json_array(), "[]");
    }

    #[test]
    fn parsed_trees_stay_few_and_follow_their_events() {
        let mut q = EventQueue::new();
        for i in 0..100 {
            q.push(event(if i % 2 == 0 { "A" } else { "B" }, i));
        }
        assert_eq!(q.parsed.len(), PARSED_MAX);
        // Taking events, held parsed or not, gives the right ones and drops their trees.
        let mut c = Cursor::default();
        assert_eq!(take(&mut q, &mut c, "B").unwrap()["data"]["n"], json!(1));
        assert_eq!(q.parsed.len(), PARSED_MAX - 1);
        assert_eq!(q.pop_front_value().unwrap()["data"]["n"], json!(0));
        assert_eq!(q.parsed.len(), PARSED_MAX - 2);
        q.set_max(Some(10));
        assert!(q.parsed.is_empty());
        assert_eq!(q.pop_front_value().unwrap()["data"]["n"], json!(90));
        q.clear();
        q.push(event("A", 7));
        assert_eq!(q.parsed.len(), 1);
        assert_eq!(q.pop_front_value().unwrap()["data"]["n"], json!(7));
    }

    /// The queue's own share of an event: the text, the slot and the allocator's rounding.
    #[test]
    fn an_event_costs_less_than_twice_its_text() {
        let ev = event("BLOCK_JOB_COMPLETED", 7);
        let wire = ev.wire_len();
        let slot = std::mem::size_of::<Queued>();
        // malloc rounds to 16 bytes and keeps 8 bytes of header.
        let heap = (wire + 8).div_ceil(16) * 16;
        assert!(slot + heap <= 2 * wire, "{slot} + {heap} for {wire} bytes");
    }
}
