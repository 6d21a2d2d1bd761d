//! `qm-bench-event-queue [--sizes N,N,…] [--out results.jsonl]`: growth curves of the QMP event
//! queue (figures, not pass/fail): what a queued event costs, and how long a wait for one event
//! takes behind N others, as N grows.
//!
//! qm's client talks to a scripted peer on a socketpair (QEMU cannot be made to send 400,000
//! events on demand): the peer greets, answers `qmp_capabilities`, then sends N non-matching
//! events (~100 bytes each, the shape of QEMU's) and one `LAST`. Per N:
//!
//! - `arriving_ms`: `events_wait("LAST")` started before the flood, until it returns: the
//!   client reads, queues and examines the N events as they come.
//! - `queued_ms`: with the N events queued, the peer sends `LAST2` and `events_wait("LAST2")`
//!   finds it behind them.
//! - `heap_bytes_per_event`: heap bytes held by the queue (a counting allocator: bytes asked
//!   of malloc, without its own overhead) / N, and `wire_bytes_per_event` for comparison.
//! - `rss_bytes_per_event`: the growth of the process's resident memory / N (includes malloc's
//!   overhead; noisy for small N).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use qm::QmpClient;
use serde_json::json;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const WAIT: Duration = Duration::from_secs(600);

fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// One event line as QEMU would send it, numbered so that no two are alike.
fn event_line(i: usize) -> String {
    format!(
        "{{\"timestamp\": {{\"seconds\": {}, \"microseconds\": {}}}, \"event\": \"BLOCK_JOB_READY\", \"data\": {{\"device\": \"job{}\"}}}}\r\n",
        1_764_480_000 + i / 1_000_000,
        i % 1_000_000,
        i % 1000
    )
}

/// Reads until a command (which qm sends without a newline) ends with `"id":N}`.
fn read_command(s: &mut UnixStream) -> u64 {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("peer read");
        assert!(n > 0, "qm closed the connection");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(at) = text.rfind("\"id\":") {
            if text.ends_with('}') {
                return text[at + 5..text.len() - 1].parse().expect("an id");
            }
        }
    }
}

struct Figures {
    n: usize,
    arriving_ms: f64,
    queued_ms: f64,
    heap_per_event: f64,
    rss_per_event: f64,
    wire_per_event: f64,
}

fn run(n: usize) -> Figures {
    let (ours, mut peer) = UnixStream::pair().expect("socketpair");
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let wire: usize = (0..n).map(|i| event_line(i).len() - 2).sum();
    let peer_thread = thread::spawn(move || {
        let greeting = json!({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
            "package": ""}, "capabilities": []}});
        peer.write_all(format!("{greeting}\r\n").as_bytes())
            .unwrap();
        let id = read_command(&mut peer);
        peer.write_all(format!("{{\"return\": {{}}, \"id\": {id}}}\r\n").as_bytes())
            .unwrap();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, &mut peer);
        for i in 0..n {
            out.write_all(event_line(i).as_bytes()).unwrap();
        }
        out.write_all(b"{\"event\": \"LAST\", \"data\": {}}\r\n")
            .unwrap();
        out.flush().unwrap();
        drop(out);
        go_rx.recv().unwrap();
        peer.write_all(b"{\"event\": \"LAST2\", \"data\": {}}\r\n")
            .unwrap();
        go_rx.recv().unwrap();
        drop(peer);
    });
    let client = QmpClient::new(OwnedFd::from(ours), "bench", 64 << 20).expect("client");
    client.handshake(WAIT).expect("handshake");
    let (heap0, rss0) = (LIVE.load(Ordering::SeqCst), rss_bytes());

    let started = Instant::now();
    let last = client.events_wait(&[("LAST", None)], WAIT).expect("LAST");
    let arriving = started.elapsed();
    assert!(last.is_some());
    let (heap1, rss1) = (LIVE.load(Ordering::SeqCst), rss_bytes());

    go_tx.send(()).unwrap();
    let started = Instant::now();
    let last2 = client.events_wait(&[("LAST2", None)], WAIT).expect("LAST2");
    let queued = started.elapsed();
    assert!(last2.is_some());
    // Every non-matching event is still queued, in order.
    let all = client.get_events(Duration::ZERO).expect("events");
    assert_eq!(all.len(), n);
    drop(all);
    go_tx.send(()).unwrap();
    drop(client);
    peer_thread.join().unwrap();
    Figures {
        n,
        arriving_ms: arriving.as_secs_f64() * 1e3,
        queued_ms: queued.as_secs_f64() * 1e3,
        heap_per_event: (heap1 - heap0) as f64 / n as f64,
        rss_per_event: (rss1 - rss0) as f64 / n as f64,
        wire_per_event: wire as f64 / n as f64,
    }
}

fn main() {
    let mut sizes = vec![10_000, 50_000, 100_000, 400_000];
    let mut out_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sizes" => {
                sizes = args
                    .next()
                    .expect("--sizes N,N,…")
                    .split(',')
                    .map(|n| n.parse().expect("a number"))
                    .collect()
            }
            "--out" => out_path = args.next(),
            other => {
                eprintln!("usage: qm-bench-event-queue [--sizes N,N,…] [--out FILE] ({other}?)");
                std::process::exit(2);
            }
        }
    }
    println!(
        "\nevent queue growth (rust, scripted peer): N non-matching events, then one that matches"
    );
    println!(
        "{:>8} {:>13} {:>11} {:>12} {:>10} {:>10} {:>10}",
        "N", "arriving_ms", "queued_ms", "us/event", "wire_B", "heap_B", "rss_B"
    );
    let mut lines = Vec::new();
    for &n in &sizes {
        let f = run(n);
        println!(
            "{:>8} {:>13.1} {:>11.2} {:>12.3} {:>10.0} {:>10.0} {:>10.0}",
            f.n,
            f.arriving_ms,
            f.queued_ms,
            f.arriving_ms * 1e3 / f.n as f64,
            f.wire_per_event,
            f.heap_per_event,
            f.rss_per_event
        );
        lines.push(json!({
            "metric": "event_queue", "subject": "rust", "n": f.n,
            "arriving_ms": (f.arriving_ms * 10.0).round() / 10.0,
            "queued_ms": (f.queued_ms * 100.0).round() / 100.0,
            "wire_bytes_per_event": f.wire_per_event.round(),
            "heap_bytes_per_event": f.heap_per_event.round(),
            "rss_bytes_per_event": f.rss_per_event.round(),
        }));
    }
    if let Some(path) = out_path {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
    }
}
