//! The replay rule for nonces on the console.
//!
//! `Console::run` frames each command with markers made of a fresh random nonce (16 lowercase
//! hex digits, see `console/frame.rs`), so the line qm types in a replay is not the recorded
//! one, nor are the markers the guest printed. The rule: in a console `out` line (what qm
//! wrote), a *nonce-shaped token* — exactly 16 lowercase hex digits, with no ASCII letter,
//! digit or `_` touching either end — matches any nonce-shaped token in what qm actually sent,
//! and binds the recorded token to the one qm sent. From then on the recorded token is replaced
//! by the bound one in every console byte the fake writes (`in` lines) and waits for (`out`
//! lines). Tokens not bound are written as recorded.
//!
//! Console bytes are written as recorded, chunk by chunk, so a recorded token may be cut
//! between two `in` lines: the end of what is written that could be the start of a bound token
//! is held back until the next console write, or until the fake waits for qm (then it is
//! written as it is: the token did not come).

use std::ops::Range;

/// The length of a nonce.
pub(super) const NONCE_LEN: usize = 16;

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_nonce_digit(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Whether `text[at..at + 16]` is a nonce-shaped token (standing alone in `text`).
fn token_at(text: &[u8], at: usize) -> bool {
    at + NONCE_LEN <= text.len()
        && text[at..at + NONCE_LEN].iter().all(|&b| is_nonce_digit(b))
        && (at == 0 || !is_word(text[at - 1]))
        && !text.get(at + NONCE_LEN).is_some_and(|&b| is_word(b))
}

/// The nonce-shaped tokens of `text`.
pub(super) fn tokens(text: &[u8]) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut at = 0;
    while at + NONCE_LEN <= text.len() {
        if token_at(text, at) {
            found.push(at..at + NONCE_LEN);
            at += NONCE_LEN;
        } else {
            at += 1;
        }
    }
    found
}

/// The nonces bound so far, and console bytes held back.
#[derive(Default)]
pub(super) struct Nonces {
    /// Recorded token → the one qm sent.
    bound: Vec<(Vec<u8>, Vec<u8>)>,
    /// Written bytes held back (the start of a bound token, maybe).
    held: Vec<u8>,
}

impl Nonces {
    /// Replaces every bound recorded token in `text`.
    fn substitute(&self, text: &mut [u8]) {
        for (recorded, actual) in &self.bound {
            let mut at = 0;
            while let Some(i) = memchr::memmem::find(&text[at..], recorded) {
                let start = at + i;
                text[start..start + NONCE_LEN].copy_from_slice(actual);
                at = start + NONCE_LEN;
            }
        }
    }

    /// Looks for the recorded `want` in `seen` (what qm wrote since the last wait): bound
    /// tokens as bound, other nonce-shaped tokens matching any. On a match binds them and
    /// returns where the match ends in `seen`.
    pub(super) fn find_wait(&mut self, want: &[u8], seen: &[u8]) -> Option<usize> {
        let mut want = want.to_vec();
        self.substitute(&mut want);
        let slots: Vec<Range<usize>> = tokens(&want)
            .into_iter()
            .filter(|r| !self.bound.iter().any(|(_, a)| a[..] == want[r.clone()]))
            .collect();
        if slots.is_empty() {
            return memchr::memmem::find(seen, &want).map(|i| i + want.len());
        }
        let matches_at = |start: usize| -> bool {
            if start + want.len() > seen.len() {
                return false;
            }
            let got = &seen[start..start + want.len()];
            let mut lit = 0;
            for slot in &slots {
                if got[lit..slot.start] != want[lit..slot.start]
                    || !token_at(seen, start + slot.start)
                {
                    return false;
                }
                lit = slot.end;
            }
            got[lit..] == want[lit..]
        };
        // Candidates: where the literal text before the first token is.
        let head = &want[..slots[0].start];
        let start = if head.is_empty() {
            (0..seen.len()).find(|&s| matches_at(s))?
        } else {
            memchr::memmem::find_iter(seen, head).find(|&s| matches_at(s))?
        };
        for slot in &slots {
            let recorded = want[slot.clone()].to_vec();
            let actual = seen[start + slot.start..start + slot.end].to_vec();
            if recorded != actual && !self.bound.iter().any(|(r, _)| *r == recorded) {
                self.bound.push((recorded, actual));
            }
        }
        Some(start + want.len())
    }

    /// Console bytes to write: what can go out now of what was held back and `text`, bound
    /// tokens replaced.
    pub(super) fn write(&mut self, text: &[u8]) -> Vec<u8> {
        if self.bound.is_empty() {
            return text.to_vec();
        }
        let mut out = std::mem::take(&mut self.held);
        out.extend_from_slice(text);
        self.substitute(&mut out);
        // The longest end that is the start of a bound token waits for the next write.
        let keep = (1..NONCE_LEN.min(out.len() + 1))
            .rev()
            .find(|&n| {
                let tail = &out[out.len() - n..];
                self.bound.iter().any(|(r, _)| r.starts_with(tail))
            })
            .unwrap_or(0);
        self.held = out.split_off(out.len() - keep);
        out
    }

    /// What is held back, to be written as it is (the fake is about to wait for qm).
    pub(super) fn flush(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &[u8] = b"stty -onlcr; printf 'QM-RUN-%s-B\\n' 0123456789abcdef; command eval 'echo hi'; printf 'QM-RUN-%s-E %d\\n' 0123456789abcdef \"$?\"; stty onlcr\n";

    fn replayed_line(nonce: &str) -> Vec<u8> {
        String::from_utf8_lossy(LINE)
            .replace("0123456789abcdef", nonce)
            .into_bytes()
    }

    #[test]
    fn tokens_are_16_lowercase_hex_digits_standing_alone() {
        assert_eq!(tokens(LINE).len(), 2);
        assert_eq!(tokens(b"QM-RUN-0123456789abcdef-B"), vec![7..23]);
        // Longer, shorter, upper case, or touching a word character: not a nonce.
        assert!(tokens(b"0123456789abcdef0").is_empty());
        assert!(tokens(b"0123456789abcde").is_empty());
        assert!(tokens(b"0123456789ABCDEF").is_empty());
        assert!(tokens(b"x0123456789abcdef").is_empty());
        assert!(tokens(b"0123456789abcdef_").is_empty());
    }

    #[test]
    fn a_recorded_nonce_binds_to_the_one_sent_and_is_replaced_in_later_output() {
        let mut n = Nonces::default();
        let sent = [
            b"prompt junk ".as_slice(),
            &replayed_line("fedcba9876543210"),
        ]
        .concat();
        assert_eq!(n.find_wait(LINE, &sent), Some(sent.len()));
        // The guest's markers, cut between two recorded reads, come out with the new nonce.
        let mut out = n.write(b"echo...\r\nQM-RUN-01234567");
        out.extend(n.write(b"89abcdef-B\nhi\nQM-RUN-0123456789abcdef-E 0\n"));
        out.extend(n.flush());
        assert_eq!(
            out,
            b"echo...\r\nQM-RUN-fedcba9876543210-B\nhi\nQM-RUN-fedcba9876543210-E 0\n"
        );
        // A later wait with the same recorded token wants the bound one.
        let again = b"kill 0123456789abcdef\n";
        assert_eq!(n.find_wait(again, b"kill 0123456789abcdef\n"), None);
        assert_eq!(n.find_wait(again, b"kill fedcba9876543210\n"), Some(22));
    }

    #[test]
    fn held_back_bytes_that_are_no_token_go_out_as_they_are() {
        let mut n = Nonces::default();
        n.find_wait(LINE, &replayed_line("fedcba9876543210"))
            .unwrap();
        let mut out = n.write(b"abc 0123");
        assert_eq!(out, b"abc ");
        out.extend(n.flush());
        assert_eq!(out, b"abc 0123");
        assert_eq!(n.write(b"x0123 y"), b"x0123 y");
    }

    #[test]
    fn waits_without_nonces_and_mismatches() {
        let mut n = Nonces::default();
        assert_eq!(n.find_wait(b"root\n", b"xx root\nyy"), Some(8));
        // Nothing bound: writes pass untouched.
        assert_eq!(n.write(b"0123456789abcdef"), b"0123456789abcdef");
        // Another command than recorded: no match, nothing bound.
        let other = String::from_utf8_lossy(&replayed_line("fedcba9876543210"))
            .replace("echo hi", "echo ho");
        assert_eq!(n.find_wait(LINE, other.as_bytes()), None);
        assert!(n.bound.is_empty());
        // Not nonce-shaped where the recording had a nonce: no match.
        assert_eq!(n.find_wait(LINE, &replayed_line("FEDCBA9876543210")), None);
    }
}
