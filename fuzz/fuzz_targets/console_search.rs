//! The console's pattern search (`qm::console::find_in_pieces`): literal and regex patterns,
//! success and failure lists, over text that arrives in arbitrary pieces.
//!
//! Input layout: byte 0 is the number of patterns (1..=4) and, by its high bits, which of them
//! are failures; each pattern is a length byte (its low 4 bits; bit 7 marks a regex) and that
//! many bytes; then a seed byte for the pieces; the rest is the text. Properties:
//! 1. never panics (a regex that does not compile is an `Err`, skipped);
//! 2. (patterns without assertions about what follows, like `$` or `\b`) the text searched in pieces (each literal resuming where it stopped) finds exactly what one
//!    search of the whole text finds: the same pattern, the same place;
//! 3. a match lies inside the text, and a literal's match is its own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qm::console::{find_in_pieces, Pattern, Patterns};
use qm_fuzz::random_chunks;

fn check(data: &[u8]) {
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let n = 1 + usize::from(head & 3);
    let mut patterns = Patterns::new();
    // Per list (successes, failures): the literal's bytes, or None for a regex.
    let mut lists: [Vec<Option<Vec<u8>>>; 2] = [Vec::new(), Vec::new()];
    for i in 0..n {
        let Some((&len_byte, more)) = rest.split_first() else {
            return;
        };
        let len = usize::from(len_byte & 15).min(more.len());
        let (bytes, after) = more.split_at(len);
        rest = after;
        let failure = i > 0 && (head >> (2 + i)) & 1 == 1;
        let (pattern, literal) = if len_byte & 0x80 != 0 {
            let Ok(source) = std::str::from_utf8(bytes) else {
                return;
            };
            // Assertions about what follows (`$`, `\b`, `\B`, `\z`) hold at the end of what has
            // arrived and may fail once more arrives: inherent to searching a stream, so not
            // part of the property.
            if ["$", "\\b", "\\B", "\\z", "\\>", "\\<"]
                .iter()
                .any(|a| source.contains(a))
            {
                return;
            }
            match Pattern::regex(source) {
                Ok(p) => (p, None),
                Err(_) => return,
            }
        } else if bytes.is_empty() {
            return;
        } else {
            (Pattern::literal(bytes), Some(bytes.to_vec()))
        };
        lists[usize::from(failure)].push(literal);
        if failure {
            patterns.push_failure(pattern);
        } else {
            patterns.push_success(pattern);
        }
    }
    let Some((&seed, text)) = rest.split_first() else {
        return;
    };
    let whole = find_in_pieces(&patterns, text, &[]);
    let mut ends = Vec::new();
    let mut at = 0;
    for chunk in random_chunks(text, seed) {
        at += chunk.len();
        ends.push(at);
    }
    assert_eq!(
        find_in_pieces(&patterns, text, &ends),
        whole,
        "[pieces] text {text:?} ends {ends:?}"
    );
    let per_byte: Vec<usize> = (0..=text.len()).collect();
    assert_eq!(find_in_pieces(&patterns, text, &per_byte), whole, "[bytes]");
    if let Some((failure, index, start, end)) = whole {
        assert!(start <= end && end <= text.len(), "[range] {start}..{end}");
        if let Some(literal) = &lists[usize::from(failure)][index] {
            assert_eq!(&text[start..end], literal.as_slice(), "[literal]");
        }
    }
}

fuzz_target!(|data: &[u8]| check(data));
