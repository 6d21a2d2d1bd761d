//! The console engine against a fake peer (the other end of a socketpair): what real QEMU will
//! not produce on demand — floods, reads split at every byte, a peer that closes mid-wait.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::Cancel;

/// Bound for waits that should end in milliseconds: a failure, never a timing assertion.
const T: Duration = Duration::from_secs(30);

fn pair(buffer: usize, log: Option<File>) -> (Console, UnixStream) {
    let (ours, theirs) = socket::pair().unwrap();
    let console = Console::start(
        ours,
        ConsoleOptions {
            log,
            buffer,
            name: "test".into(),
        },
    )
    .unwrap();
    (console, UnixStream::from(theirs))
}

/// Waits (bounded) until the reader thread has received `n` bytes in total.
fn until_received(c: &Console, n: u64) {
    let until = Instant::now() + T;
    while c.stats().received < n {
        assert!(Instant::now() < until, "reader never got {n} bytes");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_pattern_split_at_every_byte_boundary_still_matches() {
    let msg = b"noise\r\nqm-guest: ready\r\nqm-guest# ";
    let literal = Patterns::new().success("qm-guest: ready");
    let regex = Patterns::new().success(Pattern::regex(r"qm-\w+: re+ady").unwrap());
    for patterns in [&literal, &regex] {
        for cut in 0..=msg.len() {
            let (c, mut peer) = pair(0, None);
            peer.write_all(&msg[..cut]).unwrap();
            until_received(&c, cut as u64);
            peer.write_all(&msg[cut..]).unwrap();
            let m = c.wait_for(patterns, T).unwrap();
            assert_eq!(m.text, b"noise\r\nqm-guest: ready", "cut at {cut}");
            assert_eq!(m.matched(), b"qm-guest: ready");
            assert_eq!(m.before(), b"noise\r\n");
            // What followed is kept for the next wait.
            let m = c.wait_for(&"# ".into(), T).unwrap();
            assert_eq!(m.text, b"\r\nqm-guest# ");
        }
    }
}

#[test]
fn every_split_of_a_partial_line_while_a_wait_is_pending() {
    let msg = b"abc: 42 done\n";
    for cut in 1..msg.len() {
        let (c, mut peer) = pair(0, None);
        let writer = thread::spawn(move || {
            peer.write_all(&msg[..cut]).unwrap();
            thread::sleep(Duration::from_millis(2));
            peer.write_all(&msg[cut..]).unwrap();
            peer
        });
        let p = Patterns::new().success(Pattern::regex(r"(\d+) done\n").unwrap());
        let m = c.wait_for(&p, T).unwrap();
        assert_eq!(m.matched(), b"42 done\n", "cut at {cut}");
        drop(writer.join().unwrap());
    }
}

#[test]
fn a_flood_nobody_reads_never_blocks_the_writer_and_drops_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("console.log");
    let log = File::create(&log_path).unwrap();
    let (c, mut peer) = pair(MIN_BUFFER * 4, Some(log));
    const TOTAL: usize = 8 << 20;
    // The writer must finish although nobody waits: the reader thread takes everything.
    let writer = thread::spawn(move || {
        let chunk: Vec<u8> = (0..4096u32).map(|i| b'a' + (i % 26) as u8).collect();
        for _ in 0..TOTAL / chunk.len() {
            peer.write_all(&chunk).unwrap();
        }
        peer.write_all(b"END-OF-FLOOD").unwrap();
        peer
    });
    let peer = writer.join().unwrap();
    let m = c
        .wait_for(&Patterns::new().success("END-OF-FLOOD"), T)
        .unwrap();
    let stats = c.stats();
    assert_eq!(stats.received, TOTAL as u64 + 12);
    assert!(stats.kept <= stats.cap, "{stats:?}");
    // Everything beyond the cap that no wait consumed was dropped, and said so.
    assert_eq!(m.dropped, stats.received - m.text.len() as u64);
    assert_eq!(stats.dropped, m.dropped);
    assert!(m.text.len() <= stats.cap);
    drop(peer);
    c.finish();
    // The log file has every byte.
    assert_eq!(
        std::fs::metadata(&log_path).unwrap().len(),
        TOTAL as u64 + 12
    );
}

#[test]
fn eof_fails_a_pending_wait_at_once_and_every_later_one() {
    let (c, mut peer) = pair(0, None);
    peer.write_all(b"last words").unwrap();
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        drop(peer);
    });
    let started = Instant::now();
    let err = c.wait_for(&"never".into(), T).unwrap_err();
    assert!(started.elapsed() < T / 2, "EOF must end the wait");
    match &err {
        Error::ConsoleClosed { text, waiting_for } => {
            assert_eq!(text, "last words");
            assert_eq!(waiting_for, "\"never\"");
        }
        other => panic!("{other:?}"),
    }
    closer.join().unwrap();
    assert!(matches!(
        c.wait_for(&"never".into(), T),
        Err(Error::ConsoleClosed { .. })
    ));
    // A match already there still wins over the end of file.
    assert_eq!(c.wait_for(&"last".into(), T).unwrap().text, b"last");
    assert!(c.stats().closed);
    assert_eq!(c.transcript(None), b"last words");
}

#[test]
fn timeout_names_the_patterns_and_carries_the_tail_which_stays_unread() {
    let (c, mut peer) = pair(0, None);
    peer.write_all(b"boot log\nlogin: ").unwrap();
    until_received(&c, 16);
    let p = Patterns::new()
        .success("# ")
        .success(Pattern::regex("ok$").unwrap());
    let err = c.wait_for(&p, Duration::from_millis(100)).unwrap_err();
    match &err {
        Error::ConsoleTimeout {
            waiting_for,
            waited,
            tail,
        } => {
            assert_eq!(waiting_for, "\"# \", /ok$/");
            assert!(*waited >= Duration::from_millis(100));
            assert_eq!(tail, "boot log\nlogin: ");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_timeout());
    assert!(err.to_string().contains("login: "), "{err}");
    assert_eq!(c.stats().unread, 16);
    assert_eq!(
        c.wait_for(&"login: ".into(), Duration::ZERO).unwrap().text,
        b"boot log\nlogin: "
    );
}

#[test]
fn a_failure_pattern_ends_the_wait_with_its_text() {
    let (c, mut peer) = pair(0, None);
    peer.write_all(b"[ 1.0] Kernel panic - not syncing\nlogin: ")
        .unwrap();
    let p = Patterns::new()
        .success("login: ")
        .failure("Oops")
        .failure(Pattern::regex(r"Kernel panic[^\n]*\n").unwrap());
    match c.wait_for(&p, T).unwrap_err() {
        Error::ConsoleFailure {
            index,
            pattern,
            text,
        } => {
            assert_eq!(index, 1);
            assert_eq!(pattern, r"/Kernel panic[^\n]*\n/");
            assert_eq!(text, "[ 1.0] Kernel panic - not syncing\n");
        }
        other => panic!("{other:?}"),
    }
    // The failure was consumed; the rest is there for the next wait.
    assert_eq!(c.wait_for(&p, T).unwrap().text, b"login: ");
}

#[test]
fn cancel_from_another_thread_ends_the_wait_and_a_second_wait_is_refused() {
    let (c, _peer) = pair(0, None);
    let c = Arc::new(c);
    let cancel = Cancel::new();
    let waiter = {
        let (c, cancel) = (c.clone(), cancel.clone());
        thread::spawn(move || {
            let started = Instant::now();
            // The probe below may hold the console for a moment: try again until this waits.
            loop {
                let r = c.wait_for(&"never".into(), Wait::forever().cancel(&cancel));
                if !matches!(r, Err(Error::State(_))) {
                    return (r, started.elapsed());
                }
            }
        })
    };
    // The second waiter is refused while the first one waits.
    let until = Instant::now() + T;
    loop {
        match c.wait_for(&"x".into(), Duration::ZERO) {
            Err(Error::State(msg)) => {
                assert!(msg.contains("another thread"), "{msg}");
                break;
            }
            Err(Error::ConsoleTimeout { .. }) => {
                assert!(Instant::now() < until);
                thread::sleep(Duration::from_millis(1));
            }
            other => panic!("{other:?}"),
        }
    }
    cancel.cancel();
    let (r, took) = waiter.join().unwrap();
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    assert!(took < T / 2);
    // A fired token refuses at once; the console is usable again.
    assert!(matches!(
        c.wait_for(&"x".into(), Wait::forever().cancel(&cancel)),
        Err(Error::Interrupted)
    ));
    assert!(matches!(
        c.wait_for(&"x".into(), Duration::ZERO),
        Err(Error::ConsoleTimeout { .. })
    ));
}

/// A fake shell on the peer: echoes each line, answers `uname` and `fail`, prints a prompt.
fn fake_shell(mut peer: UnixStream) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        peer.write_all(b"sh# ").unwrap();
        while let Ok(1) = peer.read(&mut byte) {
            got.push(byte[0]);
            if byte[0] != b'\n' {
                line.push(byte[0]);
                continue;
            }
            let reply: &[u8] = match line.as_slice() {
                b"uname" => b"Linux\n",
                b"fail" => b"fail: not found\n",
                _ => b"",
            };
            peer.write_all(&line).unwrap();
            peer.write_all(b"\r\n").unwrap();
            peer.write_all(reply).unwrap();
            peer.write_all(b"sh# ").unwrap();
            line.clear();
        }
        got
    })
}

#[test]
fn exec_sends_a_line_and_returns_its_output() {
    let (c, peer) = pair(0, None);
    let shell = fake_shell(peer);
    c.wait_for(&"sh# ".into(), T).unwrap();
    let p = Patterns::new()
        .success("sh# ")
        .failure(Pattern::regex(r"\w+: not found").unwrap());
    let m = c.exec("uname", "\n", &p, T).unwrap();
    assert_eq!(m.text_lossy(), "uname\r\nLinux\nsh# ");
    let err = c.exec("fail", "\n", &p, T).unwrap_err();
    assert!(
        matches!(err, Error::ConsoleFailure { index: 0, .. }),
        "{err}"
    );
    c.send_line("uname", "\n", T).unwrap();
    c.send(b"x\n", T).unwrap();
    assert_eq!(
        c.wait_for(&"x\r\nsh# ".into(), T).unwrap().text_lossy(),
        // The "\n" after the failure's match was left unread.
        "\nsh# uname\r\nLinux\nsh# x\r\nsh# "
    );
    // Dropping the console closes the socket: the shell sees end of file.
    drop(c);
    assert_eq!(shell.join().unwrap(), b"uname\nfail\nuname\nx\n");
}

#[test]
fn interrupt_until_presses_the_key_until_the_pattern_shows() {
    let (c, mut peer) = pair(0, None);
    let menu = thread::spawn(move || {
        let mut keys = 0;
        let mut byte = [0u8; 1];
        while keys < 3 {
            peer.read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], 0x1b);
            keys += 1;
            peer.write_all(b"booting...\n").unwrap();
        }
        peer.write_all(b"Boot menu>").unwrap();
        peer
    });
    let m = c
        .interrupt_until(b"\x1b", Duration::from_millis(20), &"menu>".into(), T)
        .unwrap();
    assert!(m.text.ends_with(b"Boot menu>"));
    drop(menu.join().unwrap());
    let err = c
        .interrupt_until(
            b"\x1b",
            Duration::from_millis(5),
            &"never".into(),
            Duration::ZERO,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ConsoleClosed { .. } | Error::ConsoleTimeout { .. }
        ),
        "{err}"
    );
}

#[test]
fn the_raw_copy_sees_every_byte_and_its_writes_reach_the_guest() {
    let (c, mut peer) = pair(0, None);
    peer.write_all(b"before anyone reads\n").unwrap();
    let mut raw = UnixStream::from(c.dup_fd().unwrap());
    raw.set_read_timeout(Some(T)).unwrap();
    let mut got = vec![0u8; 20];
    raw.read_exact(&mut got).unwrap();
    assert_eq!(got, b"before anyone reads\n");
    raw.write_all(b"typed").unwrap();
    let mut typed = [0u8; 5];
    peer.set_read_timeout(Some(T)).unwrap();
    peer.read_exact(&mut typed).unwrap();
    assert_eq!(&typed, b"typed");
    // The raw copy did not consume what waits see.
    assert_eq!(
        c.wait_for(&"reads\n".into(), T).unwrap().text,
        b"before anyone reads\n"
    );
    // End of file reaches the raw copy too.
    drop(peer);
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn transcript_skip_and_a_smaller_cap() {
    let (c, mut peer) = pair(0, None);
    peer.write_all(b"0123456789").unwrap();
    until_received(&c, 10);
    assert_eq!(c.transcript(Some(4)), b"6789");
    assert_eq!(c.skip_unread(), 10);
    assert_eq!(c.stats().unread, 0);
    assert_eq!(c.transcript(None), b"0123456789");
    c.set_buffer(1);
    assert_eq!(c.stats().cap, MIN_BUFFER);
}

#[test]
fn send_to_a_closed_peer_is_console_closed() {
    let (c, peer) = pair(0, None);
    drop(peer);
    let until = Instant::now() + T;
    loop {
        match c.send(b"x", T) {
            Err(Error::ConsoleClosed { .. }) => break,
            Ok(()) => {
                assert!(Instant::now() < until);
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_zero_wait_and_the_transcript_see_bytes_the_reader_thread_left_to_waits() {
    let (c, mut peer) = pair(0, None);
    peer.write_all(b"one ").unwrap();
    c.wait_for(&"one ".into(), T).unwrap();
    // Right after a wait the reader thread leaves the socket alone for a while: a zero wait
    // and the transcript must still see what is in it.
    peer.write_all(b"two ").unwrap();
    assert_eq!(
        c.wait_for(&"two ".into(), Duration::ZERO).unwrap().text,
        b"two "
    );
    peer.write_all(b"three").unwrap();
    assert_eq!(c.transcript(None), b"one two three");
    assert_eq!(c.stats().unread, 5);
}

#[test]
fn a_send_stuck_on_a_full_socket_never_holds_other_senders_past_their_bounds() {
    let (c, _peer) = pair(0, None); // the peer never reads
    let c = Arc::new(c);
    let cancel = Cancel::new();
    let stuck = {
        let (c, cancel) = (c.clone(), cancel.clone());
        thread::spawn(move || c.send(&vec![b'x'; 8 << 20], Wait::forever().cancel(&cancel)))
    };
    // Wait (bounded) until the first send is stuck: then a second one times out or is refused
    // by its own bound, not by the first one's.
    let until = Instant::now() + T;
    loop {
        match c.send(b"y", Duration::from_millis(100)) {
            Err(Error::Timeout(_)) => break,
            Ok(()) => assert!(Instant::now() < until, "the first send never got stuck"),
            Err(e) => panic!("{e}"),
        }
    }
    let other = Cancel::new();
    other.cancel();
    assert!(matches!(
        c.send(b"y", Wait::forever().cancel(&other)),
        Err(Error::Interrupted)
    ));
    cancel.cancel();
    let r = stuck.join().unwrap();
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    // The gate is free again.
    assert!(matches!(c.send(b"", T), Ok(())));
}
