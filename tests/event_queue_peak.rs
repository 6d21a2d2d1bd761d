//! Reading a long event queue costs at most a small constant over what it holds (issue #19):
//! the peak of the heap, all included (the queue and whatever a read builds), stays under
//! 1 KiB per queued event while events arrive, while a wait scans them, while a filter parses
//! each, and while they are all read as JSON text (what `qm_events_get` returns) or cleared.
//!
//! The peak is read from a counting global allocator, so this test is a binary of its own and
//! deterministic (no timing, no RSS). The peer is scripted: QEMU cannot be made to send
//! 50,000 events on demand.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use qm::QmpClient;
use serde_json::{json, Value};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as the allocator may do it: the new block, then the old one freed.
        grew(new_size as isize);
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const N: usize = 50_000;
const GOAL: f64 = 1024.0;
const WAIT: Duration = Duration::from_secs(300);

/// One event line as QEMU sends it (~120 bytes), numbered so that no two are alike.
fn event_line(i: usize) -> String {
    format!(
        "{{\"timestamp\": {{\"seconds\": {}, \"microseconds\": {}}}, \"event\": \"BLOCK_IO_ERROR\", \"data\": {{\"device\": \"drive{}\", \"operation\": \"write\", \"action\": \"report\"}}}}\r\n",
        1_764_480_000 + i / 1_000_000,
        i % 1_000_000,
        i % 1000
    )
}

/// Reads until a command (sent without a newline) ends with `"id":N}`.
fn read_command(s: &mut UnixStream) -> u64 {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("peer read");
        assert!(n > 0, "qm closed the connection");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let (Some(at), true) = (text.rfind("\"id\":"), text.ends_with('}')) {
            return text[at + 5..text.len() - 1].parse().expect("an id");
        }
    }
}

/// The peak of the heap during `f`, over `base`, per queued event.
fn peak_per_event<T>(base: isize, f: impl FnOnce() -> T) -> (T, f64) {
    PEAK.store(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
    let out = f();
    let peak = PEAK.load(Ordering::SeqCst) - base;
    (out, peak as f64 / N as f64)
}

#[test]
fn reading_a_long_queue_peaks_under_1_kib_per_event() {
    let (ours, mut peer) = UnixStream::pair().expect("socketpair");
    // What the peer sends next: N events (`None`), or one line.
    let (go_tx, go_rx) = mpsc::channel::<Option<&'static [u8]>>();
    let peer_thread = thread::spawn(move || {
        peer.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n")
            .unwrap();
        let id = read_command(&mut peer);
        peer.write_all(format!("{{\"return\": {{}}, \"id\": {id}}}\r\n").as_bytes())
            .unwrap();
        let flood = |peer: &mut UnixStream| {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, peer);
            for i in 0..N {
                out.write_all(event_line(i).as_bytes()).unwrap();
            }
            out.flush().unwrap();
        };
        flood(&mut peer);
        peer.write_all(b"{\"event\": \"LAST\", \"data\": {}}\r\n")
            .unwrap();
        // Then what the test asks for, until it hangs up.
        while let Ok(next) = go_rx.recv() {
            match next {
                Some(line) => peer.write_all(line).unwrap(),
                None => flood(&mut peer),
            }
        }
    });
    let client = QmpClient::new(OwnedFd::from(ours), "peak", 64 << 20).expect("client");
    client.handshake(WAIT).expect("handshake");
    let base = LIVE.load(Ordering::SeqCst);

    // The N events arrive while a wait for another name reads them.
    let (last, arriving) = peak_per_event(base, || {
        client.events_wait(&[("LAST", None)], WAIT).unwrap()
    });
    assert!(last.is_some());
    assert_eq!(client.queued_events(), N);
    let held = (LIVE.load(Ordering::SeqCst) - base) as f64 / N as f64;

    // A wait for a name that comes behind them.
    go_tx
        .send(Some(b"{\"event\": \"LAST2\", \"data\": {}}\r\n"))
        .unwrap();
    let (last2, behind) = peak_per_event(base, || {
        client.events_wait(&[("LAST2", None)], WAIT).unwrap()
    });
    assert!(last2.is_some());

    // A filter on their own name parses every one of them, one at a time.
    let filter = json!({"data": {"device": "no such drive"}});
    let (none, filtered) = peak_per_event(base, || {
        client
            .events_wait(&[("BLOCK_IO_ERROR", Some(&filter))], Duration::ZERO)
            .unwrap()
    });
    assert!(none.is_none());
    assert_eq!(client.queued_events(), N);

    // All of them at once, as the C API returns them.
    let (text, read_all) = peak_per_event(base, || client.get_events_json(WAIT).unwrap());
    assert_eq!(client.queued_events(), 0);
    {
        // The test's own check builds every tree, after the measurement.
        let all: Value = serde_json::from_str(&text).unwrap();
        let all = all.as_array().unwrap();
        assert_eq!(all.len(), N);
        assert_eq!(all[0]["data"]["device"], "drive0");
        assert_eq!(
            all[N - 1]["data"]["device"],
            format!("drive{}", (N - 1) % 1000)
        );
    }
    drop(text);

    // Queued again, then cleared.
    go_tx.send(None).unwrap();
    go_tx
        .send(Some(b"{\"event\": \"AGAIN\", \"data\": {}}\r\n"))
        .unwrap();
    client.events_wait(&[("AGAIN", None)], WAIT).unwrap();
    assert_eq!(client.queued_events(), N);
    let ((), cleared) = peak_per_event(base, || client.clear_events());

    println!(
        "per event, N = {N}: held {held:.0} B; peak arriving {arriving:.0}, waiting behind \
         {behind:.0}, filtering {filtered:.0}, reading all {read_all:.0}, clearing {cleared:.0}"
    );
    for (what, peak) in [
        ("arriving", arriving),
        ("waiting behind", behind),
        ("filtering", filtered),
        ("reading all as JSON", read_all),
        ("clearing", cleared),
    ] {
        assert!(
            peak <= GOAL,
            "{what}: the heap peaked at {peak:.0} bytes per queued event (goal {GOAL})"
        );
    }
    drop(go_tx);
    drop(client);
    peer_thread.join().unwrap();
}
