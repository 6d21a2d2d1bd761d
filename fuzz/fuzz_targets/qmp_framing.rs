//! The QMP reader's framing (`qm::qmp::split_messages`): arbitrary bytes, split into arbitrary
//! reads, with a small message cap.
//!
//! Input layout: byte 0 picks `max_message` (0..=255), byte 1 seeds the split pattern, the rest
//! is the byte stream. Properties:
//! 1. never panics;
//! 2. `Ok` holds only JSON objects;
//! 3. the result does not depend on how the stream was split into reads: one read, reads of
//!    pseudo-random sizes (empty ones included), and one read per byte all agree exactly;
//! 4. it agrees with a reference model: lines end at `\n`, are trimmed of ASCII whitespace,
//!    empty ones are skipped, each must be a JSON object of at most `max_message` bytes, and
//!    the unfinished last line must not be over the cap either. Whether whitespace around a
//!    message counts towards the cap is left open: the model accepts either rule, applied to
//!    finished and unfinished lines alike (property 3 then demands that qm picks one). Only
//!    the raw rule bounds memory for a line that never ends (`{"a":"` then spaces forever).
//!
//! A violation panics with a `[tag]`; `QM_FUZZ_ALLOW=tag,…` turns known ones into passes so
//! that a long run can look past them (see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qm_fuzz::{allowed, random_chunks};
use serde_json::Value;

#[derive(Debug, PartialEq, Clone, Copy)]
enum Kind {
    Oversize,
    Invalid,
    NotObject,
    Other,
}

fn kind(err: &str) -> Kind {
    // By prefix: the rest quotes the offending input, which may say anything.
    if err.starts_with("a message exceeds the limit") {
        Kind::Oversize
    } else if err.starts_with("invalid JSON") {
        Kind::Invalid
    } else if err.starts_with("expected a JSON object") {
        Kind::NotObject
    } else {
        Kind::Other
    }
}

type Outcome = Result<Vec<Value>, Kind>;

/// `raw`: the cap applies to the line with its whitespace (without the `\n`); otherwise
/// to the trimmed line.
fn model(stream: &[u8], max: usize, raw: bool) -> Outcome {
    let len = |line: &[u8]| {
        if raw {
            line.len()
        } else {
            line.trim_ascii().len()
        }
    };
    let mut out = Vec::new();
    let mut rest = stream;
    while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
        let (line, trimmed) = (&rest[..pos], rest[..pos].trim_ascii());
        rest = &rest[pos + 1..];
        // Before skipping blank lines: under the raw rule a long blank line is over the cap
        // too (it was, while unfinished).
        if len(line) > max {
            return Err(Kind::Oversize);
        }
        if trimmed.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(trimmed) {
            Ok(v @ Value::Object(_)) => out.push(v),
            Ok(_) => return Err(Kind::NotObject),
            Err(_) => return Err(Kind::Invalid),
        }
    }
    if len(rest) > max {
        return Err(Kind::Oversize);
    }
    Ok(out)
}

/// True when some line (or the unfinished tail) is over the cap with its surrounding
/// whitespace but not without: the known "whitespace counts towards the cap of an unfinished
/// line" discrepancy.
fn whitespace_straddles_cap(stream: &[u8], max: usize) -> bool {
    stream
        .split(|&b| b == b'\n')
        .any(|line| line.len() > max && line.trim_ascii().len() <= max)
}

fn check(data: &[u8]) {
    let [max, seed, stream @ ..] = data else {
        return;
    };
    let max = usize::from(*max);

    let whole = qm::qmp::split_messages(&[stream], max);
    let random = qm::qmp::split_messages(&random_chunks(stream, *seed), max);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let bytewise = qm::qmp::split_messages(&bytes, max);

    if let Ok(msgs) = &whole {
        assert!(
            msgs.iter().all(Value::is_object),
            "[non-object] Ok holds a non-object: {msgs:?}"
        );
    }
    let ws = || whitespace_straddles_cap(stream, max);
    for (name, got) in [("random reads", &random), ("one byte per read", &bytewise)] {
        if got != &whole && !(ws() && allowed("ws-cap")) {
            panic!(
                "[{}] {name} disagree with one read (max {max}):\n  one read: {whole:?}\n  \
                 {name}: {got:?}",
                if ws() { "ws-cap" } else { "split" },
            );
        }
    }
    let actual: Outcome = whole.clone().map_err(|e| kind(&e));
    let trimmed = model(stream, max, false);
    let raw = model(stream, max, true);
    if actual != trimmed && actual != raw {
        panic!(
            "[model] framing disagrees with the model (max {max}):\n  qm: {whole:?}\n  \
             model (cap on trimmed lines): {trimmed:?}\n  model (cap on raw lines): {raw:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| check(data));
