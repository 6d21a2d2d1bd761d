//! What a console wait looks for: literal substrings and regular expressions, as success or
//! failure patterns, and the search for the earliest one in the unread output.

use std::fmt;

use regex::bytes::Regex;

use crate::error::{Error, Result};

/// One thing to look for in the console output: a literal byte string or a regular expression.
///
/// Regular expressions use the [`regex`] crate's syntax over bytes (console output need not be
/// UTF-8); they run in time linear in the text, so no pattern can make a wait hang. `^` and `$`
/// match at the ends of the unread text unless the pattern turns on multi-line mode (`(?m)`).
///
/// A match is the one that **ends first** in the output, as if the output were searched after
/// every byte (as pexpect does): the result never depends on how QEMU's output was cut into
/// reads. So a repetition at the end of a pattern takes as little as it can —
/// `Kernel panic[^\r\n]*` matches `Kernel panic`; end the pattern with what follows
/// (`Kernel panic[^\r\n]*\r\n`) to capture the whole line.
#[derive(Clone)]
pub struct Pattern {
    kind: Kind,
    source: String,
}

#[derive(Clone)]
enum Kind {
    Literal(Vec<u8>),
    Regex(Regex),
}

impl Pattern {
    /// A literal byte string (an empty one matches at once).
    pub fn literal(text: impl AsRef<[u8]>) -> Pattern {
        let bytes = text.as_ref().to_vec();
        Pattern {
            source: String::from_utf8_lossy(&bytes).into_owned(),
            kind: Kind::Literal(bytes),
        }
    }

    /// A regular expression; [`Error::Invalid`] when it does not compile.
    pub fn regex(re: &str) -> Result<Pattern> {
        let compiled =
            Regex::new(re).map_err(|e| Error::Invalid(format!("bad console regex /{re}/: {e}")))?;
        Ok(Pattern {
            kind: Kind::Regex(compiled),
            source: re.to_owned(),
        })
    }

    /// The pattern as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True for a regular expression.
    pub fn is_regex(&self) -> bool {
        matches!(self.kind, Kind::Regex(_))
    }

    /// The first match in `hay` starting at or after `from`: (start, end).
    fn find(&self, hay: &[u8], from: usize) -> Option<(usize, usize)> {
        match &self.kind {
            Kind::Literal(lit) => {
                if lit.is_empty() {
                    return Some((from, from));
                }
                memchr::memmem::find(&hay[from..], lit).map(|i| (from + i, from + i + lit.len()))
            }
            // The match that ends first, not the leftmost-first one: output arrives in pieces,
            // and a greedy tail (`b*`, `[^\n]*`) would otherwise take as much as happened to
            // have arrived, so the same output could match differently from run to run. The
            // shortest prefix of the text that holds a match is found by bisection (a prefix
            // that holds a match stays one when it grows), paid only once something matched;
            // its leftmost-first match ends at that prefix's end.
            Kind::Regex(re) => {
                let first = re.find_at(hay, from)?;
                let (mut lo, mut hi) = (from, first.end());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if re.is_match_at(&hay[..mid], from) {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                // A look-around at the cut (`\B`, `$`) can fail in the shortened text.
                let m = re.find_at(&hay[..hi], from).unwrap_or(first);
                Some((m.start(), m.end()))
            }
        }
    }

    /// How far back from the end of a text that did not match a later search must restart so
    /// that a match spanning the old end and the new bytes is still found. `None`: from the
    /// start (a regular expression may match any length).
    fn overlap(&self) -> Option<usize> {
        match &self.kind {
            Kind::Literal(lit) => Some(lit.len().saturating_sub(1)),
            Kind::Regex(_) => None,
        }
    }
}

impl From<&str> for Pattern {
    /// A literal.
    fn from(text: &str) -> Pattern {
        Pattern::literal(text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Pattern {
    /// Literals quoted (`"login: "`), regular expressions between slashes (`/\d+ ms/`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Literal(_) => write!(f, "{:?}", self.source),
            Kind::Regex(_) => write!(f, "/{}/", self.source),
        }
    }
}

/// The patterns of one wait: at least one success pattern, and failure patterns that end the
/// wait with [`Error::ConsoleFailure`].
///
/// Build it once and reuse it: regular expressions are compiled when added.
///
/// ```
/// use qm::console::{Pattern, Patterns};
/// let p = Patterns::new()
///     .success("qm-guest# ")
///     .failure("Kernel panic")
///     .failure(Pattern::regex(r"(?m)^.*: not found$")?);
/// assert_eq!(p.to_string(), r#""qm-guest# " (failure: "Kernel panic", /(?m)^.*: not found$/)"#);
/// # Ok::<(), qm::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Patterns {
    success: Vec<Pattern>,
    failure: Vec<Pattern>,
}

impl Patterns {
    /// No patterns yet.
    pub fn new() -> Patterns {
        Patterns::default()
    }

    /// Adds a success pattern; its index ([`Match::index`](super::Match::index)) is the number
    /// of success patterns added before it.
    pub fn success(mut self, pattern: impl Into<Pattern>) -> Patterns {
        self.success.push(pattern.into());
        self
    }

    /// Adds a failure pattern; its index (in [`Error::ConsoleFailure`]) is the number of failure
    /// patterns added before it.
    pub fn failure(mut self, pattern: impl Into<Pattern>) -> Patterns {
        self.failure.push(pattern.into());
        self
    }

    /// [`success`](Self::success) in place.
    pub fn push_success(&mut self, pattern: Pattern) {
        self.success.push(pattern);
    }

    /// [`failure`](Self::failure) in place.
    pub fn push_failure(&mut self, pattern: Pattern) {
        self.failure.push(pattern);
    }

    /// The success patterns, in order.
    pub fn successes(&self) -> &[Pattern] {
        &self.success
    }

    /// The failure patterns, in order.
    pub fn failures(&self) -> &[Pattern] {
        &self.failure
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.success.is_empty() {
            return Err(Error::Invalid(
                "a console wait needs at least one success pattern".into(),
            ));
        }
        Ok(())
    }
}

impl From<&str> for Patterns {
    /// One literal success pattern.
    fn from(text: &str) -> Patterns {
        Patterns::new().success(text)
    }
}

impl From<Pattern> for Patterns {
    /// One success pattern.
    fn from(p: Pattern) -> Patterns {
        Patterns::new().success(p)
    }
}

impl fmt::Display for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        list(f, &self.success)?;
        if !self.failure.is_empty() {
            f.write_str(" (failure: ")?;
            list(f, &self.failure)?;
            f.write_str(")")?;
        }
        Ok(())
    }
}

fn list(f: &mut fmt::Formatter<'_>, patterns: &[Pattern]) -> fmt::Result {
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{p}")?;
    }
    Ok(())
}

/// Which pattern was found, and where in the searched text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) failure: bool,
    pub(crate) index: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The search state of one wait: where each literal may resume, so that output arriving in many
/// small pieces is not searched again from the start for every piece.
pub(crate) struct Search<'p> {
    patterns: &'p Patterns,
    /// Per pattern (successes then failures): the absolute offset to resume at.
    resume: Vec<u64>,
}

impl<'p> Search<'p> {
    pub(crate) fn new(patterns: &'p Patterns) -> Search<'p> {
        let n = patterns.success.len() + patterns.failure.len();
        Search {
            patterns,
            resume: vec![0; n],
        }
    }

    /// The earliest-ending match in `hay` (the unread text, which starts at absolute offset
    /// `base`); on a tie a failure pattern wins, then the lower index. Remembers how far each
    /// literal was searched when nothing matched.
    pub(crate) fn find(&mut self, hay: &[u8], base: u64) -> Option<Found> {
        let all = self
            .patterns
            .success
            .iter()
            .map(|p| (false, p))
            .chain(self.patterns.failure.iter().map(|p| (true, p)));
        let mut best: Option<Found> = None;
        let n_success = self.patterns.success.len();
        for (slot, (failure, pattern)) in all.enumerate() {
            let from = self.resume[slot].saturating_sub(base).min(hay.len() as u64) as usize;
            let index = if failure { slot - n_success } else { slot };
            match pattern.find(hay, from) {
                Some((start, end)) => {
                    let found = Found {
                        failure,
                        index,
                        start,
                        end,
                    };
                    let better = match best {
                        None => true,
                        Some(b) => end < b.end || (end == b.end && failure && !b.failure),
                    };
                    if better {
                        best = Some(found);
                    }
                }
                None => {
                    if let Some(overlap) = pattern.overlap() {
                        let next = hay.len().saturating_sub(overlap);
                        self.resume[slot] = base + next as u64;
                    }
                }
            }
        }
        best
    }
}

/// The first match of `patterns` in `text` as it would be found if the text arrived in pieces
/// ending at each of `ends` (ascending offsets; the whole text last), searched after each piece
/// the way a console wait searches: `(failure, index, start, end)`. Public for the fuzz target
/// that checks it against one search of the whole text (`fuzz/fuzz_targets/console_search.rs`).
#[doc(hidden)]
pub fn find_in_pieces(
    patterns: &Patterns,
    text: &[u8],
    ends: &[usize],
) -> Option<(bool, usize, usize, usize)> {
    let mut search = Search::new(patterns);
    let pieces = ends.iter().map(|&e| e.min(text.len()));
    pieces
        .chain(std::iter::once(text.len()))
        .find_map(|end| search.find(&text[..end], 0))
        .map(|f| (f.failure, f.index, f.start, f.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats() -> Patterns {
        Patterns::new()
            .success("ready")
            .success(Pattern::regex(r"\d+ ms").unwrap())
            .failure("panic")
    }

    #[test]
    fn earliest_end_wins_and_failure_wins_a_tie() {
        let p = pats();
        let f = Search::new(&p).find(b"took 12 ms; ready", 0).unwrap();
        assert_eq!((f.failure, f.index, f.start, f.end), (false, 1, 5, 10));
        let p = Patterns::new().success("x panic").failure("panic");
        let f = Search::new(&p).find(b"x panic", 0).unwrap();
        assert!(f.failure);
    }

    #[test]
    fn literal_resume_finds_a_match_split_across_searches() {
        let p = pats();
        let mut s = Search::new(&p);
        assert_eq!(s.find(b"....rea", 0), None);
        let f = s.find(b"....ready", 0).unwrap();
        assert_eq!((f.start, f.end), (4, 9));
    }

    /// Searching text that arrives in pieces (resuming each literal where it stopped) finds
    /// the same first match as searching the whole text at once, for many random texts, pieces
    /// and patterns (a small LCG: deterministic, no dependency).
    #[test]
    fn pieces_find_what_the_whole_text_finds() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..2000 {
            let len = next(60) as usize;
            let text: Vec<u8> = (0..len).map(|_| b"ab\n"[next(3) as usize]).collect();
            let lit: Vec<u8> = (0..1 + next(4))
                .map(|_| b"ab\n"[next(3) as usize])
                .collect();
            let p = Patterns::new()
                .success(Pattern::literal(&lit))
                .failure(Pattern::literal(b"bbb"))
                .success(Pattern::regex("a\nb+a").unwrap());
            let whole = Search::new(&p).find(&text, 0);
            let mut search = Search::new(&p);
            let mut end = 0;
            let mut found = None;
            while found.is_none() && end < text.len() {
                end = (end + 1 + next(5) as usize).min(text.len());
                found = search.find(&text[..end], 0);
            }
            if found.is_none() {
                found = search.find(&text, 0);
            }
            assert_eq!(found, whole, "text {:?} literal {:?}", text, lit);
        }
    }

    /// A greedy tail takes what has arrived when the search runs: the match that ends first
    /// makes the result the same however the output was cut (found by fuzzing).
    #[test]
    fn a_greedy_tail_matches_the_same_in_pieces_and_whole() {
        let p = Patterns::new().success(Pattern::regex("a\nb*").unwrap());
        let text = b"xxa\nbbb\r\n";
        let whole = Search::new(&p).find(text, 0).unwrap();
        assert_eq!((whole.start, whole.end), (2, 4));
        let mut s = Search::new(&p);
        assert_eq!(
            s.find(&text[..5], 0).map(|f| (f.start, f.end)),
            Some((2, 4))
        );
        // Anchored at what follows, the whole line.
        let p = Patterns::new().success(Pattern::regex("a\nb*\r\n").unwrap());
        let f = Search::new(&p).find(text, 0).unwrap();
        assert_eq!((f.start, f.end), (2, 9));
    }

    /// Alternatives that end at different places: the one that ends first wins, whatever the
    /// engine prefers when the whole text is there (found by fuzzing).
    #[test]
    fn of_alternatives_the_one_that_ends_first_wins() {
        let p = Patterns::new().success(Pattern::regex("b|nbnb").unwrap());
        let f = Search::new(&p).find(b"xx|nbnb|", 0).unwrap();
        assert_eq!((f.start, f.end), (4, 5));
    }

    #[test]
    fn bad_regex_is_invalid() {
        assert!(matches!(Pattern::regex("("), Err(Error::Invalid(_))));
    }

    #[test]
    fn empty_success_list_is_invalid() {
        assert!(matches!(Patterns::new().check(), Err(Error::Invalid(_))));
    }
}
