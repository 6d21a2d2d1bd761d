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
//! - `peak_bytes_per_event`: the heap's high-water mark over its level before the flood / N, all
//!   included (what the queue holds and what a read builds), the highest of: the N arriving,
//!   the wait behind them, a filtered wait that parses each of them (`filter_ms`), reading
//!   them all as JSON text (`get_events_json`, what `qm_events_get` returns; `read_ms`) and
//!   clearing them. Issue #19's goal: ≤ 1 KiB at every N.
//! - `peak_values_bytes_per_event` (information): the same peak for `get_events`, the Rust
//!   call that hands out every event as a parsed tree at once (it cannot do otherwise).

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
/// The high-water mark of `LIVE` since it was last reset (see `peak_during`).
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// The heap's high-water mark during `f`.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, isize) {
    PEAK.store(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst))
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // As the allocator may do it: the new block, then the old one freed.
        grew(new_size as isize);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
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
    filter_ms: f64,
    read_ms: f64,
    heap_per_event: f64,
    peak_per_event: f64,
    peak_values_per_event: f64,
    rss_per_event: f64,
    wire_per_event: f64,
}

fn run(n: usize) -> Figures {
    let (ours, mut peer) = UnixStream::pair().expect("socketpair");
    // What the peer sends next: the N events again (`None`), or one line.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<Option<&'static [u8]>>();
    let wire: usize = (0..n).map(|i| event_line(i).len() - 2).sum();
    let peer_thread = thread::spawn(move || {
        let greeting = json!({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
            "package": ""}, "capabilities": []}});
        peer.write_all(format!("{greeting}\r\n").as_bytes())
            .unwrap();
        let id = read_command(&mut peer);
        peer.write_all(format!("{{\"return\": {{}}, \"id\": {id}}}\r\n").as_bytes())
            .unwrap();
        let flood = |peer: &mut UnixStream| {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, peer);
            for i in 0..n {
                out.write_all(event_line(i).as_bytes()).unwrap();
            }
            out.flush().unwrap();
        };
        flood(&mut peer);
        peer.write_all(b"{\"event\": \"LAST\", \"data\": {}}\r\n")
            .unwrap();
        while let Ok(next) = go_rx.recv() {
            match next {
                Some(line) => peer.write_all(line).unwrap(),
                None => flood(&mut peer),
            }
        }
        drop(peer);
    });
    let client = QmpClient::new(OwnedFd::from(ours), "bench", 64 << 20).expect("client");
    client.handshake(WAIT).expect("handshake");
    let (heap0, rss0) = (LIVE.load(Ordering::SeqCst), rss_bytes());

    let started = Instant::now();
    let (last, peak_arriving) =
        peak_during(|| client.events_wait(&[("LAST", None)], WAIT).expect("LAST"));
    let arriving = started.elapsed();
    assert!(last.is_some());
    let (heap1, rss1) = (LIVE.load(Ordering::SeqCst), rss_bytes());

    go_tx
        .send(Some(b"{\"event\": \"LAST2\", \"data\": {}}\r\n"))
        .unwrap();
    let started = Instant::now();
    let (last2, peak_behind) =
        peak_during(|| client.events_wait(&[("LAST2", None)], WAIT).expect("LAST2"));
    let queued = started.elapsed();
    assert!(last2.is_some());

    // A filter on the flood's own name: every event is parsed, one at a time.
    let filter = json!({"data": {"device": "no such job"}});
    let started = Instant::now();
    let (none, peak_filter) = peak_during(|| {
        client
            .events_wait(&[("BLOCK_JOB_READY", Some(&filter))], Duration::ZERO)
            .expect("filtered wait")
    });
    let filtered = started.elapsed();
    assert!(none.is_none());

    // Every non-matching event is still queued, in order; read as the C API reads them.
    let started = Instant::now();
    let (all, peak_read) = peak_during(|| client.get_events_json(Duration::ZERO).expect("events"));
    let read = started.elapsed();
    assert_eq!(all.matches("BLOCK_JOB_READY").count(), n);
    drop(all);

    // Queued again, for clearing, and again for the call that hands out parsed trees.
    let refill = || {
        go_tx.send(None).unwrap();
        go_tx
            .send(Some(b"{\"event\": \"AGAIN\", \"data\": {}}\r\n"))
            .unwrap();
        client.events_wait(&[("AGAIN", None)], WAIT).expect("AGAIN");
        assert_eq!(client.queued_events(), n);
    };
    refill();
    let ((), peak_clear) = peak_during(|| client.clear_events());
    refill();
    let (values, peak_values) = peak_during(|| client.get_events(Duration::ZERO).expect("events"));
    assert_eq!(values.len(), n);
    drop(values);
    drop(go_tx);
    drop(client);
    peer_thread.join().unwrap();
    let peak = [
        peak_arriving,
        peak_behind,
        peak_filter,
        peak_read,
        peak_clear,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let per_event = |bytes: isize| (bytes - heap0) as f64 / n as f64;
    Figures {
        n,
        arriving_ms: arriving.as_secs_f64() * 1e3,
        queued_ms: queued.as_secs_f64() * 1e3,
        filter_ms: filtered.as_secs_f64() * 1e3,
        read_ms: read.as_secs_f64() * 1e3,
        heap_per_event: per_event(heap1),
        peak_per_event: per_event(peak),
        peak_values_per_event: per_event(peak_values),
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
        "{:>8} {:>12} {:>10} {:>10} {:>9} {:>11} {:>7} {:>7} {:>7} {:>7} {:>9}",
        "N",
        "arriving_ms",
        "queued_ms",
        "filter_ms",
        "read_ms",
        "us/arrival",
        "wire_B",
        "heap_B",
        "peak_B",
        "rss_B",
        "values_B"
    );
    let mut lines = Vec::new();
    for &n in &sizes {
        let f = run(n);
        println!(
            "{:>8} {:>12.1} {:>10.2} {:>10.1} {:>9.1} {:>11.3} {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>9.0}",
            f.n,
            f.arriving_ms,
            f.queued_ms,
            f.filter_ms,
            f.read_ms,
            f.arriving_ms * 1e3 / f.n as f64,
            f.wire_per_event,
            f.heap_per_event,
            f.peak_per_event,
            f.rss_per_event,
            f.peak_values_per_event
        );
        lines.push(json!({
            "metric": "event_queue", "subject": "rust", "n": f.n,
            "arriving_ms": (f.arriving_ms * 10.0).round() / 10.0,
            "queued_ms": (f.queued_ms * 100.0).round() / 100.0,
            "filter_ms": (f.filter_ms * 10.0).round() / 10.0,
            "read_ms": (f.read_ms * 10.0).round() / 10.0,
            "wire_bytes_per_event": f.wire_per_event.round(),
            "heap_bytes_per_event": f.heap_per_event.round(),
            "peak_bytes_per_event": f.peak_per_event.round(),
            "peak_goal_bytes_per_event": 1024,
            "peak_met": f.peak_per_event <= 1024.0,
            "rss_bytes_per_event": f.rss_per_event.round(),
            "peak_values_bytes_per_event": f.peak_values_per_event.round(),
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
