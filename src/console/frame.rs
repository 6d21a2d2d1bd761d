//! The framing of [`Console::run`](super::Console::run): the line qm types into the guest's
//! shell, and the parser that finds the command's output and exit status in what the console
//! then prints. Pure (no I/O), so it is tested and fuzzed on its own (`fuzz/`).
//!
//! **The line.** For the command `CMD` and a fresh nonce `N` (16 hex digits, never reused), qm
//! types one line:
//!
//! ```text
//! stty -onlcr; printf 'QM-RUN-%s-B\n' N; command eval 'CMD'; printf 'QM-RUN-%s-E %d\n' N "$?"; stty onlcr
//! ```
//!
//! (`CMD` single-quoted for `eval`, so that a trailing `&` or a `;` of its own still reach the
//! end marker; `command eval` because a syntax error in a plain `eval` abandons the rest of an
//! interactive shell's line, end marker included, while under `command` it is a status 2 like
//! any failure). It runs in the console's shell itself, so `cd` and
//! variables stay, and `exit` ends that shell). The markers the guest prints (`QM-RUN-N-B`, `QM-RUN-N-E`) never
//! appear in what qm typed (there the nonce stands apart from the `%s`), so the echo of the line,
//! earlier prompts and output left over from earlier commands can never be taken for them; and
//! no other call produces this nonce, so a fake or stale marker printed by a command (another
//! nonce) is just output.
//!
//! **What is removed, and why.**
//! - Everything before the begin marker: earlier unread output, the prompt, the terminal's
//!   echo of the line, and the escape sequences of the shell's line editor (busybox sends
//!   `ESC [ 6 n` after its prompt and redraws long lines) — all of it printed before the command
//!   ran.
//! - Nothing is translated inside the output: `stty -onlcr` turns off the terminal's only
//!   output translation (LF → CR LF), so the command's bytes arrive as it wrote them, binary
//!   bytes, its own CR LF and its own escape sequences included. (With ONLCR left on, a CR LF
//!   the command wrote and one the terminal made would look the same.)
//! - Kernel messages: the kernel writes its records to the serial console itself, past the
//!   terminal, at any point — even inside the command's output. A record is
//!   `[ SECONDS.MICROS] TEXT` ended by CR LF (the serial driver's own line ending, which the
//!   command's output no longer has). Such records are cut out wherever they land and returned
//!   apart ([`RunFrame::kernel_messages`]). The one ambiguity: a command that itself prints
//!   exactly such a record with CR LF loses it to that list.
//! - The markers, and the status after the end marker.

use regex::bytes::Regex;
use std::sync::OnceLock;

/// The longest line [`Console::run`](super::Console::run) types (bytes, the framing included):
/// busybox's line editor keeps 1023 bytes of a line and silently drops the rest (the terminal's
/// own canonical mode keeps 4095). The framing takes about 130 bytes, and each `'` of the
/// command 3 more.
pub const MAX_LINE: usize = 1000;

/// The longest kernel record held back while its end (CR LF) has not arrived; a longer
/// "record" is output.
const MAX_RECORD: usize = 4096;

/// Where the parse is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Looking for the begin marker (discarding what comes before it).
    Begin,
    /// Collecting output up to the end marker.
    Output,
    /// Reading the status digits after the end marker.
    Status,
    /// The end marker and status were read.
    Done,
}

/// The parser of one run's console output. Feed it the console's bytes in order with
/// [`feed`](Self::feed) until [`is_done`](Self::is_done).
#[derive(Debug)]
pub struct RunFrame {
    begin: Vec<u8>,
    end: Vec<u8>,
    phase: Phase,
    /// Bytes received and not yet decided on (a marker or a kernel record may be incomplete).
    pend: Vec<u8>,
    /// Where in `pend` the last kernel record was cut out: no record may start before it.
    /// The bytes on its two sides were apart on the wire; a "record" made of both would be
    /// found or not depending on how the reads were split (one read's search has moved past
    /// the cut; bytes held back for a later read would be searched again).
    fence: usize,
    output: Vec<u8>,
    kernel: Vec<String>,
    status: Option<i32>,
    /// The status digits were not a number in 0..=255.
    bad_status: Option<String>,
}

fn record_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\[ *[0-9]+\.[0-9]{6}\] [^\r\n]*\r\n").expect("valid regex"))
}

/// True when `s` (starting with `[`) could still grow into a kernel record: a prefix of
/// `[ *[0-9]+\.[0-9]{6}\] [^\r\n]*` with no line end yet.
fn record_prefix(s: &[u8]) -> bool {
    if s.len() > MAX_RECORD || s.first() != Some(&b'[') {
        return false;
    }
    let mut i = 1;
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    let digits = i;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    if i == s.len() {
        return true;
    }
    if i == digits || s[i] != b'.' {
        return false;
    }
    i += 1;
    let frac = i;
    while i < s.len() && i - frac < 6 && s[i].is_ascii_digit() {
        i += 1;
    }
    if i == s.len() {
        return true;
    }
    if i - frac != 6 || s[i] != b']' {
        return false;
    }
    i += 1;
    if i == s.len() {
        return true;
    }
    if s[i] != b' ' {
        return false;
    }
    // The text: anything but a line end (a lone CR at the very end may begin the CR LF).
    let text = &s[i + 1..];
    match text.iter().position(|&b| b == b'\r' || b == b'\n') {
        None => true,
        Some(p) => p == text.len() - 1 && text[p] == b'\r',
    }
}

impl RunFrame {
    /// A parser for the run with this nonce.
    pub fn new(nonce: &str) -> RunFrame {
        RunFrame {
            begin: format!("QM-RUN-{nonce}-B\n").into_bytes(),
            end: format!("QM-RUN-{nonce}-E ").into_bytes(),
            phase: Phase::Begin,
            pend: Vec::new(),
            fence: 0,
            output: Vec::new(),
            kernel: Vec::new(),
            status: None,
            bad_status: None,
        }
    }

    /// The line to type for `command` (without the final newline); see the module docs.
    pub fn line(nonce: &str, command: &str) -> String {
        let quoted = command.replace('\'', "'\\''");
        format!(
            "stty -onlcr; printf 'QM-RUN-%s-B\\n' {nonce}; command eval '{quoted}'; \
             printf 'QM-RUN-%s-E %d\\n' {nonce} \"$?\"; stty onlcr"
        )
    }

    /// Takes the next bytes of the console. Returns how many of `data` it used: all of them
    /// until the run's end, then only those up to the end of the status line (the rest is not
    /// this run's and stays for later waits).
    pub fn feed(&mut self, data: &[u8]) -> usize {
        if self.phase == Phase::Done {
            return 0;
        }
        self.pend.extend_from_slice(data);
        self.strip_records();
        let safe = self.safe_len();
        let mut at = 0;
        while self.phase != Phase::Done {
            let window = &self.pend[at..safe];
            match self.phase {
                Phase::Begin => match memchr::memmem::find(window, &self.begin) {
                    Some(i) => {
                        at += i + self.begin.len();
                        self.phase = Phase::Output;
                    }
                    None => {
                        at += window.len().saturating_sub(self.begin.len() - 1);
                        break;
                    }
                },
                Phase::Output => match memchr::memmem::find(window, &self.end) {
                    Some(i) => {
                        self.output.extend_from_slice(&window[..i]);
                        at += i + self.end.len();
                        self.phase = Phase::Status;
                    }
                    None => {
                        let n = window.len().saturating_sub(self.end.len() - 1);
                        self.output.extend_from_slice(&window[..n]);
                        at += n;
                        break;
                    }
                },
                // A status is at most 15 bytes and its newline: decided on the first 16 bytes
                // only, so that how the bytes were split into reads does not matter.
                Phase::Status => match window[..window.len().min(16)]
                    .iter()
                    .position(|&b| b == b'\n')
                {
                    Some(i) => {
                        let digits = String::from_utf8_lossy(&window[..i]).into_owned();
                        match digits.parse::<i32>() {
                            Ok(n) if (0..=255).contains(&n) => self.status = Some(n),
                            _ => self.bad_status = Some(digits),
                        }
                        at += i + 1;
                        self.phase = Phase::Done;
                    }
                    None if window.len() >= 16 => {
                        self.bad_status = Some(String::from_utf8_lossy(&window[..16]).into_owned());
                        at += 16;
                        self.phase = Phase::Done;
                    }
                    None => break,
                },
                Phase::Done => break,
            }
        }
        self.pend.drain(..at);
        self.fence = self.fence.saturating_sub(at);
        if self.phase == Phase::Done {
            // What is left came after the status line: the tail of `data`, not this run's.
            let rest = self.pend.len().min(data.len());
            self.pend.clear();
            data.len() - rest
        } else {
            data.len()
        }
    }

    /// Cuts complete kernel records out of the pending bytes (those after the fence).
    fn strip_records(&mut self) {
        let open = &self.pend[self.fence..];
        if !open.contains(&b'[') {
            return;
        }
        let re = record_re();
        if !re.is_match(open) {
            return;
        }
        let mut kept = self.pend[..self.fence].to_vec();
        let mut last = self.fence;
        for m in re.find_iter(open) {
            let (start, end) = (self.fence + m.start(), self.fence + m.end());
            kept.extend_from_slice(&self.pend[last..start]);
            let text = &self.pend[start..end - 2];
            self.kernel.push(String::from_utf8_lossy(text).into_owned());
            last = end;
        }
        let fence = kept.len();
        kept.extend_from_slice(&self.pend[last..]);
        self.pend = kept;
        self.fence = fence;
    }

    /// How many pending bytes are final: all but an incomplete kernel record at the end (it
    /// may still be cut out once its CR LF arrives).
    fn safe_len(&self) -> usize {
        let from = self
            .pend
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
            .max(self.pend.len().saturating_sub(MAX_RECORD));
        // A record can no longer start before the fence.
        let from = from.max(self.fence);
        let tail = &self.pend[from..];
        for (i, _) in tail.iter().enumerate().filter(|(_, &b)| b == b'[') {
            if record_prefix(&tail[i..]) {
                return from + i;
            }
        }
        self.pend.len()
    }

    /// True once the end marker and the status were read.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// True once the begin marker was seen (the command started).
    pub fn started(&self) -> bool {
        self.phase != Phase::Begin
    }

    /// The command's exit status (`$?`: 0–255, 128 + N for a death by signal N), once done;
    /// `Err` with the text found when what followed the end marker was not a status.
    pub fn status(&self) -> Option<std::result::Result<i32, String>> {
        match (&self.status, &self.bad_status) {
            (Some(s), _) => Some(Ok(*s)),
            (None, Some(bad)) => Some(Err(bad.clone())),
            _ => None,
        }
    }

    /// The output so far (all of it once done).
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Takes the output out of the parser.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// The kernel records cut out of the console so far (without their CR LF).
    pub fn kernel_messages(&self) -> &[String] {
        &self.kernel
    }

    /// Takes the kernel records out of the parser.
    pub fn take_kernel_messages(&mut self) -> Vec<String> {
        std::mem::take(&mut self.kernel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "0123456789abcdef";

    fn parse_in_pieces(stream: &[u8], piece: usize) -> (RunFrame, usize) {
        let mut f = RunFrame::new(N);
        let mut used = 0;
        for chunk in stream.chunks(piece.max(1)) {
            used += f.feed(chunk);
            if f.is_done() {
                break;
            }
        }
        (f, used)
    }

    fn stream(output: &[u8], status: &str, after: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"old prompt qm-guest# \x1b[6n");
        s.extend_from_slice(RunFrame::line(N, "cmd").as_bytes());
        s.extend_from_slice(b"\r\nQM-RUN-");
        s.extend_from_slice(N.as_bytes());
        s.extend_from_slice(b"-B\n");
        s.extend_from_slice(output);
        s.extend_from_slice(format!("QM-RUN-{N}-E {status}\n").as_bytes());
        s.extend_from_slice(after);
        s
    }

    #[test]
    fn the_echo_never_holds_a_marker() {
        let line = RunFrame::line(N, "echo hi");
        assert!(!line.contains(&format!("QM-RUN-{N}")));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn output_status_and_what_follows_in_any_pieces() {
        let out = b"a\nb\r\nc\x00\xff\x1b[31mred QM-RUN-ffffffffffffffff-E 0\n";
        let s = stream(out, "42", b"qm-guest# ");
        for piece in [1, 2, 3, 7, 64, 4096] {
            let (f, used) = parse_in_pieces(&s, piece);
            assert!(f.is_done(), "piece {piece}");
            assert_eq!(f.output(), out, "piece {piece}");
            assert_eq!(f.status(), Some(Ok(42)));
            assert_eq!(used, s.len() - b"qm-guest# ".len(), "piece {piece}");
        }
    }

    #[test]
    fn kernel_records_are_cut_out_anywhere() {
        let mut s = stream(b"abcdef", "0", b"");
        // Inside the output, and inside the end marker.
        let k = b"[   11.816284] kmsg here\r\n";
        let at = s.windows(3).position(|w| w == b"cde").unwrap() + 1;
        s.splice(at..at, k.iter().copied());
        let end = s.windows(6).position(|w| w == b"QM-RUN").unwrap();
        let end = s[end + 1..]
            .windows(6)
            .position(|w| w == b"QM-RUN")
            .unwrap()
            + end
            + 1;
        let end2 = s[end + 1..]
            .windows(6)
            .position(|w| w == b"QM-RUN")
            .unwrap()
            + end
            + 1;
        s.splice(end2 + 4..end2 + 4, k.iter().copied());
        for piece in [1, 5, 4096] {
            let (f, _) = parse_in_pieces(&s, piece);
            assert!(f.is_done(), "piece {piece}");
            assert_eq!(f.output(), b"abcdef");
            assert_eq!(f.kernel_messages().len(), 2);
            assert_eq!(f.kernel_messages()[0], "[   11.816284] kmsg here");
        }
    }

    /// Found by the `run_frame` fuzz target: cutting a record out of `[  [   2.000000] x\r\n
    ///   2.000000] x\r\n` leaves bytes that join into a second "record"; one read found one
    /// record, reads of a few bytes found two. Bytes on the two sides of a cut never join.
    #[test]
    fn a_cut_record_does_not_join_its_neighbours_into_another() {
        let mut s = b"[  [   2.000000] x\r\n  2.000000] y\r\n".to_vec();
        s.extend(stream(b"out", "0", b""));
        for piece in [1, 2, 3, 5, 4096] {
            let (f, _) = parse_in_pieces(&s, piece);
            assert!(f.is_done(), "piece {piece}");
            assert_eq!(f.kernel_messages(), ["[   2.000000] x"], "piece {piece}");
            assert_eq!(f.output(), b"out");
        }
    }

    #[test]
    fn output_that_looks_like_a_record_start_is_kept() {
        let out = b"[1] [ 2.5] [ 3.000000]x [4.000000] no crlf\n";
        let s = stream(out, "0", b"");
        let (f, _) = parse_in_pieces(&s, 3);
        assert_eq!(f.output(), out);
        assert!(f.kernel_messages().is_empty());
    }

    #[test]
    fn a_bad_status_is_reported() {
        let s = stream(b"", "x1", b"");
        let (f, _) = parse_in_pieces(&s, 4096);
        assert_eq!(f.status(), Some(Err("x1".into())));
    }
}
