//! Splitting the agent's byte stream into replies.
//!
//! The agent writes one JSON object per line. `guest-sync-delimited` puts a 0xFF byte before
//! its reply; 0xFF never occurs in UTF-8 JSON, so it marks a place where a reader can always
//! start afresh, whatever came before (a stale half reply, garbage).

/// One line from the agent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The line came right after a 0xFF sentinel (a `guest-sync-delimited` reply).
    pub(crate) delimited: bool,
    /// The line, without its newline (not necessarily JSON).
    pub(crate) line: Vec<u8>,
}

/// What [`Frames::next`] found in the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A complete line.
    Frame(Frame),
    /// A line longer than the cap: its bytes so far were dropped, the rest will be skipped up to
    /// its newline (or the next sentinel).
    Oversize,
    /// Read more.
    More,
}

/// Buffered input of the agent channel.
pub(crate) struct Frames {
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already searched for a newline or sentinel.
    scanned: usize,
    /// The line being buffered follows a sentinel.
    delimited: bool,
    /// Drop everything up to the next sentinel (resynchronising).
    want_sentinel: bool,
    /// Drop the rest of an oversize line.
    skipping: bool,
    max_line: usize,
}

impl Frames {
    pub(crate) fn new(max_line: usize) -> Frames {
        Frames {
            buf: Vec::new(),
            scanned: 0,
            delimited: false,
            want_sentinel: false,
            skipping: false,
            max_line,
        }
    }

    /// Forgets everything buffered and ignores all input up to the next 0xFF sentinel.
    pub(crate) fn resync(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.delimited = false;
        self.skipping = false;
        self.want_sentinel = true;
    }

    /// Appends bytes read from the channel.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.want_sentinel {
            // Nothing before a sentinel matters: don't even buffer it.
            match bytes.iter().position(|&b| b == 0xFF) {
                None => return,
                Some(i) => {
                    self.want_sentinel = false;
                    self.buf.clear();
                    self.scanned = 0;
                    self.buf.extend_from_slice(&bytes[i..]);
                    return;
                }
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, if any.
    pub(crate) fn next(&mut self) -> Next {
        loop {
            let Some(pos) = self.buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n' || b == 0xFF)
            else {
                self.scanned = self.buf.len();
                if self.skipping {
                    self.buf.clear();
                    self.scanned = 0;
                } else if self.buf.len() > self.max_line {
                    self.buf.clear();
                    self.scanned = 0;
                    self.skipping = true;
                    return Next::Oversize;
                }
                return Next::More;
            };
            let end = self.scanned + pos;
            let sentinel = self.buf[end] == 0xFF;
            let line: Vec<u8> = self.buf[..end].to_vec();
            self.buf.drain(..=end);
            self.scanned = 0;
            let delimited = std::mem::replace(&mut self.delimited, sentinel);
            if std::mem::take(&mut self.skipping) {
                // The tail of an oversize line, already reported.
                continue;
            }
            // Over the cap whatever ends it (a newline, or a sentinel cutting it short): a long
            // line is reported however the reads split it, also before its end is seen.
            if line.len() > self.max_line {
                return Next::Oversize;
            }
            if sentinel {
                // A sentinel in the middle of a line: what came before it is a fragment.
                continue;
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            return Next::Frame(Frame { delimited, line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> Vec<Next> {
        let mut f = Frames::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            loop {
                match f.next() {
                    Next::More => break,
                    n => out.push(n),
                }
            }
        }
        out
    }

    fn frame(delimited: bool, line: &[u8]) -> Next {
        Next::Frame(Frame {
            delimited,
            line: line.to_vec(),
        })
    }

    #[test]
    fn lines_and_sentinels() {
        let got = frames(
            &[b"{\"a\":1}\n\xff{\"return\"", b": 5}\n\n{\"b\":2}\n"],
            100,
        );
        assert_eq!(
            got,
            vec![
                frame(false, b"{\"a\":1}"),
                frame(true, b"{\"return\": 5}"),
                frame(false, b"{\"b\":2}"),
            ]
        );
    }

    #[test]
    fn a_sentinel_cuts_a_fragment() {
        let got = frames(&[b"{\"half\":", b"\xff{\"return\": 1}\n"], 100);
        assert_eq!(got, vec![frame(true, b"{\"return\": 1}")]);
    }

    #[test]
    fn resync_skips_to_the_sentinel() {
        let mut f = Frames::new(100);
        f.push(b"{\"stale\": 1}\n");
        f.resync();
        f.push(b"{\"stale\": 2}\ngarbage");
        assert_eq!(f.next(), Next::More);
        f.push(b"more\xff{\"return\": 7}\n");
        assert_eq!(f.next(), frame(true, b"{\"return\": 7}"));
    }

    /// However the stream is cut into reads, the same frames come out.
    #[test]
    fn frames_do_not_depend_on_how_reads_split_the_stream() {
        let stream: &[u8] = b"junk{\"a\":1}\n\n\xff{\"return\": 5}\n{\"half\xff{\"return\": 6}\n\
            0123456789012345678901234567890123456789\n{\"b\":2}\n\
            a fragment longer than the cap, cut short\xff{\"c\":3}\n";
        let whole = frames(&[stream], 32);
        assert_eq!(whole.len(), 7, "{whole:?}");
        for cut in 0..stream.len() {
            assert_eq!(
                frames(&[&stream[..cut], &stream[cut..]], 32),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames(&bytes, 32), whole);
    }

    #[test]
    fn oversize_lines_are_reported_once_and_skipped() {
        let got = frames(&[b"0123456789", b"0123456789", b"012\n{\"ok\":1}\n"], 8);
        assert_eq!(got, vec![Next::Oversize, frame(false, b"{\"ok\":1}")]);
        let got = frames(&[b"0123456789012\n{\"ok\":1}\n"], 8);
        assert_eq!(got, vec![Next::Oversize, frame(false, b"{\"ok\":1}")]);
    }
}
