//! The framing parser of `Console::run` (`qm::console::frame::RunFrame`): the console's bytes,
//! split into arbitrary reads.
//!
//! Input layout: byte 0 seeds the split pattern and (its low bit) the mode, the rest is data.
//! - Mode 0: the data is the whole console stream.
//! - Mode 1: the data is split at its first 0x00 into an echo (`Q` replaced: a real echo never
//!   holds a marker) and a payload; the stream is the echo, the begin marker, the payload (with `[` and `Q` replaced, so it holds no kernel
//!   record and no marker), the end marker, a status and the payload again as what follows.
//!
//! Properties:
//! 1. never panics;
//! 2. the result (done, output, status) does not depend on how the stream was split into
//!    reads: one read, pseudo-random reads and one read per byte agree; in mode 1 the kernel
//!    messages and the bytes used agree too (in mode 0 they may not: a kernel record or a
//!    marker after the status line is cut out or not depending on whether it came in the same
//!    read — bytes that are not this run's);
//! 3. mode 1: the run is done, its output is the payload exactly, its status the one framed,
//!    and exactly the bytes after the status line are left unused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qm::console::frame::RunFrame;
use qm_fuzz::random_chunks;

const NONCE: &str = "0123456789abcdef";

type Outcome = (
    bool,
    Vec<u8>,
    Option<Result<i32, String>>,
    Vec<String>,
    usize,
);

fn parse(chunks: &[&[u8]]) -> Outcome {
    let mut f = RunFrame::new(NONCE);
    let mut used = 0;
    for c in chunks {
        used += f.feed(c);
        if f.is_done() {
            break;
        }
    }
    (
        f.is_done(),
        f.output().to_vec(),
        f.status(),
        f.kernel_messages().to_vec(),
        used,
    )
}

fn check(data: &[u8]) {
    let [seed, rest @ ..] = data else {
        return;
    };
    let mut stream = Vec::new();
    let mut expect = None;
    if seed & 1 == 0 {
        stream.extend_from_slice(rest);
    } else {
        let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let (echo, payload) = rest.split_at(cut);
        // What precedes the begin marker (the echo) never holds a marker in real life.
        let echo: Vec<u8> = echo
            .iter()
            .map(|&b| if b == b'Q' { b'q' } else { b })
            .collect();
        let payload: Vec<u8> = payload
            .iter()
            .map(|&b| match b {
                b'[' => b'(',
                b'Q' => b'q',
                b => b,
            })
            .collect();
        let status = i32::from(*seed);
        stream.extend_from_slice(&echo);
        stream.extend_from_slice(format!("QM-RUN-{NONCE}-B\n").as_bytes());
        stream.extend_from_slice(&payload);
        stream.extend_from_slice(format!("QM-RUN-{NONCE}-E {status}\n").as_bytes());
        let framed = stream.len();
        stream.extend_from_slice(&payload);
        expect = Some((payload, status, framed));
    }
    let key = |o: &Outcome| {
        if expect.is_some() {
            o.clone()
        } else {
            (o.0, o.1.clone(), o.2.clone(), Vec::new(), 0)
        }
    };
    let whole = parse(&[&stream]);
    let random = parse(&random_chunks(&stream, *seed));
    assert_eq!(
        key(&random),
        key(&whole),
        "[split] random reads disagree with one read"
    );
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(key(&parse(&bytes)), key(&whole), "[split] bytewise");
    if let Some((payload, status, framed)) = expect {
        let (done, output, got, _, used) = whole;
        assert!(done, "[frame] not done");
        assert_eq!(output, payload, "[frame] output");
        assert_eq!(got, Some(Ok(status)), "[frame] status");
        assert_eq!(used, framed, "[frame] bytes used");
    }
}

fuzz_target!(|data: &[u8]| check(data));
