//! The guest agent channel's framing (`qm::qga::split_frames`): arbitrary bytes (0xFF
//! sentinels, newlines, garbage), split into arbitrary reads, with a small line cap, in normal
//! and in resync mode.
//!
//! Input layout: byte 0 picks the cap (0..=255), byte 1 seeds the split pattern and (its low
//! bit) the mode, the rest is the byte stream. Properties:
//! 1. never panics;
//! 2. no line holds a newline or a 0xFF, none is blank, none is over the cap;
//! 3. the result does not depend on how the stream was split into reads: one read, reads of
//!    pseudo-random sizes (empty ones included) and one read per byte all agree exactly;
//! 4. in resync mode nothing before the first 0xFF comes out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qm::qga::{split_frames, SplitFrame};
use qm_fuzz::random_chunks;

fn check(data: &[u8]) {
    let [max, seed, stream @ ..] = data else {
        return;
    };
    let (max, resync) = (usize::from(*max), seed & 1 == 1);
    let whole = split_frames(&[stream], max, resync);
    for frame in &whole {
        if let SplitFrame::Line { line, .. } = frame {
            assert!(
                !line.contains(&b'\n') && !line.contains(&0xFF),
                "[bytes] {line:?}"
            );
            assert!(!line.trim_ascii().is_empty(), "[blank] {line:?}");
            assert!(line.len() <= max, "[cap] {} > {max}", line.len());
        }
    }
    let random = split_frames(&random_chunks(stream, *seed), max, resync);
    assert_eq!(random, whole, "[split] random reads disagree with one read");
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(split_frames(&bytes, max, resync), whole, "[split] bytewise");
    if resync && !stream.contains(&0xFF) {
        assert!(
            whole.is_empty(),
            "[resync] output before any sentinel: {whole:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| check(data));
