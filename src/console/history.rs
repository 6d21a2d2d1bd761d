//! The console's memory: the last `cap` bytes the guest wrote, with two read cursors (the waits'
//! and the raw socket's) that lose, and count, what falls off the front.

/// Bytes received from the guest, the last `cap` of them kept.
///
/// Positions are absolute offsets since launch (`u64`), so a cursor stays meaningful when the
/// bytes before it are gone. The bytes live in one contiguous `Vec` (regular expressions need a
/// slice); evicted bytes are compacted away in bulk, so the `Vec` holds at most about 1.5 × `cap`
/// plus one read's worth.
pub(crate) struct History {
    buf: Vec<u8>,
    /// Index in `buf` of the oldest kept byte.
    head: usize,
    /// Absolute offset of `buf[head]`.
    base: u64,
    cap: usize,
    /// Where the next wait starts: everything before was consumed (or dropped).
    pub(crate) read: u64,
    /// Unread bytes dropped (fell off the front before a wait consumed them), in total and since
    /// the last wait that consumed text.
    pub(crate) dropped: u64,
    pub(crate) dropped_pending: u64,
    /// Where the raw socket's copy (`console_fd`) continues, and what it lost.
    pub(crate) raw: u64,
    pub(crate) raw_dropped: u64,
}

impl History {
    pub(crate) fn new(cap: usize) -> History {
        History {
            buf: Vec::new(),
            head: 0,
            base: 0,
            cap: cap.max(1),
            read: 0,
            dropped: 0,
            dropped_pending: 0,
            raw: 0,
            raw_dropped: 0,
        }
    }

    /// Absolute offset just past the newest byte: every byte ever received.
    pub(crate) fn end(&self) -> u64 {
        self.base + (self.buf.len() - self.head) as u64
    }

    /// Bytes kept.
    pub(crate) fn kept(&self) -> usize {
        self.buf.len() - self.head
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Appends what the guest wrote, evicting the oldest bytes beyond the cap.
    pub(crate) fn push(&mut self, data: &[u8]) {
        // More than the cap at once: only its tail can be kept.
        let skip = data.len().saturating_sub(self.cap);
        if skip > 0 {
            self.evict(self.kept());
            self.base += skip as u64;
            self.lose_before(self.base);
        }
        self.buf.extend_from_slice(&data[skip..]);
        let over = self.kept().saturating_sub(self.cap);
        self.evict(over);
    }

    fn evict(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.head += n;
        self.base += n as u64;
        self.lose_before(self.base);
        // Compact once the dead prefix is large: O(kept) work per cap/2 bytes evicted.
        if self.head >= self.cap / 2 || self.head == self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }

    /// Moves cursors that point before `base` up to it, counting what they lost.
    fn lose_before(&mut self, base: u64) {
        if self.read < base {
            let lost = base - self.read;
            self.dropped += lost;
            self.dropped_pending += lost;
            self.read = base;
        }
        if self.raw < base {
            self.raw_dropped += base - self.raw;
            self.raw = base;
        }
    }

    /// The kept bytes from absolute offset `from` (clamped to what is kept) to the end.
    pub(crate) fn from(&self, from: u64) -> &[u8] {
        let at = from.clamp(self.base, self.end()) - self.base;
        &self.buf[self.head + at as usize..]
    }

    /// The unread bytes.
    pub(crate) fn unread(&self) -> &[u8] {
        self.from(self.read)
    }

    /// Consumes the unread bytes up to absolute offset `upto`; returns them and how many unread
    /// bytes had been dropped before them since the last consume.
    pub(crate) fn consume(&mut self, upto: u64) -> (Vec<u8>, u64) {
        let upto = upto.clamp(self.read, self.end());
        let text = self.from(self.read)[..(upto - self.read) as usize].to_vec();
        self.read = upto;
        (text, std::mem::take(&mut self.dropped_pending))
    }

    /// The last `last` kept bytes (all of them for `None`).
    pub(crate) fn transcript(&self, last: Option<usize>) -> Vec<u8> {
        let kept = self.from(self.base);
        let n = last.map_or(kept.len(), |l| l.min(kept.len()));
        kept[kept.len() - n..].to_vec()
    }

    /// Changes the cap, evicting at once what no longer fits.
    pub(crate) fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        let over = self.kept().saturating_sub(self.cap);
        self.evict(over);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_cap_bytes_and_counts_unread_drops() {
        let mut h = History::new(8);
        h.push(b"abcdef");
        let (text, lost) = h.consume(3);
        assert_eq!((text.as_slice(), lost), (&b"abc"[..], 0));
        h.push(b"ghijkl");
        // 12 bytes received, 8 kept: "efghijkl"; "d" was unread and is gone.
        assert_eq!(h.transcript(None), b"efghijkl");
        assert_eq!(h.unread(), b"efghijkl");
        assert_eq!(h.dropped, 1);
        let (text, lost) = h.consume(h.end());
        assert_eq!((text.as_slice(), lost), (&b"efghijkl"[..], 1));
        assert_eq!(h.dropped_pending, 0);
        assert_eq!(h.end(), 12);
    }

    #[test]
    fn a_push_larger_than_the_cap_keeps_its_tail() {
        let mut h = History::new(4);
        h.push(b"xy");
        h.push(b"0123456789");
        assert_eq!(h.transcript(None), b"6789");
        assert_eq!(h.dropped, 8);
        assert_eq!(h.raw_dropped, 8);
        assert_eq!(h.end(), 12);
        assert_eq!(h.transcript(Some(2)), b"89");
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let mut h = History::new(1000);
        for i in 0..10_000u32 {
            h.push(&[i as u8; 37]);
            assert!(h.buf.len() <= 1500 + 37, "{}", h.buf.len());
            assert_eq!(h.kept(), h.cap().min(h.end() as usize));
        }
        assert_eq!(h.dropped, 370_000 - 1000);
    }

    #[test]
    fn shrinking_the_cap_evicts() {
        let mut h = History::new(10);
        h.push(b"0123456789");
        h.set_cap(3);
        assert_eq!(h.transcript(None), b"789");
        assert_eq!(h.unread(), b"789");
        assert_eq!(h.dropped, 7);
    }
}
