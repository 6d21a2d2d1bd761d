//! The QMP client against a scripted fake peer: faults a real QEMU does not produce, where a
//! test needs byte-level control of one socket. Faults the public fake QEMU can play run under a
//! real `Machine` in `tests/fake_faults.rs`.

mod support;
use support::fake_client;
use support::fake_qmp;

use fake_client::{client, client_with, with_handshake};

use std::time::Duration;

use fake_qmp::{handshake, Step};
use qm::Error;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

#[test]
fn event_before_greeting_is_queued_not_taken_for_a_reply() {
    let mut script = vec![Step::event("EARLY")];
    script.extend(handshake());
    script.extend([
        Step::expect("query-status"),
        Step::Reply(json!({"status": "ok"})),
    ]);
    script.push(Step::Drain);
    let (c, peer) = client(script);
    c.handshake(T).unwrap();
    assert_eq!(
        c.cmd("query-status", None, T).unwrap(),
        json!({"status": "ok"})
    );
    let ev = c.pull_event(Duration::ZERO).unwrap().unwrap();
    assert_eq!(ev["event"], "EARLY");
    drop(c);
    peer.join().unwrap();
}

#[test]
fn nothing_is_written_before_the_greeting() {
    let (c, peer) = client(vec![Step::Sleep(Duration::from_millis(200)), Step::Drain]);
    let err = c.handshake(Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    drop(c);
    assert!(
        peer.join().unwrap().is_empty(),
        "client wrote before the greeting"
    );
}

fn assert_protocol_error(rest: Vec<Step>, max_message: usize, needle: &str) {
    let mut script = with_handshake(vec![Step::expect("query-status")]);
    script.extend(rest);
    script.push(Step::Drain);
    let (c, peer) = client_with(script, max_message);
    c.handshake(T).unwrap();
    let err = c.cmd("query-status", None, T).unwrap_err();
    match &err {
        Error::Protocol(why) => assert!(why.contains(needle), "{why}"),
        other => panic!("expected a protocol error containing {needle:?}, got {other}"),
    }
    // Sticky: the stream cannot be trusted any more.
    assert!(!c.is_connected());
    assert!(matches!(
        c.cmd("query-status", None, T),
        Err(Error::Protocol(_))
    ));
    drop(c);
    let _ = peer.join();
}

#[test]
fn oversize_line_is_a_protocol_error_with_bounded_memory() {
    let rest = vec![Step::Repeat {
        byte: b'x',
        count: 8 << 20,
    }];
    assert_protocol_error(rest, 1 << 20, "exceeds the limit");
}

#[test]
fn event_burst_is_delivered_in_order() {
    const N: usize = 20_000;
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend_from_slice(
            format!("{{\"event\": \"TICK\", \"data\": {{\"i\": {i}}}}}\r\n").as_bytes(),
        );
    }
    let script = with_handshake(vec![Step::Raw(burst), Step::Drain]);
    let (c, peer) = client(script);
    c.handshake(T).unwrap();
    for i in 0..N {
        let ev = c.pull_event(T).unwrap().unwrap();
        assert_eq!(ev["data"]["i"], i);
    }
    drop(c);
    peer.join().unwrap();
}

#[test]
fn commands_from_many_threads_with_events_interleaved() {
    let script = with_handshake(vec![
        Step::Serve {
            max: 8 * 100,
            event_before_reply: Some("NOISE".into()),
        },
        Step::Drain,
    ]);
    let (c, peer) = client(script);
    c.handshake(T).unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..100 {
                    assert_eq!(c.cmd("ping", None, T).unwrap(), json!({}));
                }
            });
        }
    });
    assert_eq!(c.get_events(Duration::ZERO).unwrap().len(), 800);
    drop(c);
    peer.join().unwrap();
}

#[test]
fn cancel_interrupts_a_blocked_wait() {
    let (c, peer) = client(with_handshake(vec![Step::Drain]));
    c.handshake(T).unwrap();
    let cancel = qm::Cancel::new();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| c.pull_event(qm::Wait::forever().cancel(&cancel)));
        std::thread::sleep(Duration::from_millis(100));
        cancel.cancel();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Interrupted)));
    });
    // Sticky: a later wait with the same token returns at once.
    assert!(matches!(
        c.pull_event(qm::Wait::forever().cancel(&cancel)),
        Err(Error::Interrupted)
    ));
    drop(c);
    peer.join().unwrap();
}

#[test]
fn a_follower_is_woken_by_its_cancel_while_another_thread_reads() {
    let (c, peer) = client(with_handshake(vec![Step::Drain]));
    c.handshake(T).unwrap();
    let cancel = qm::Cancel::new();
    std::thread::scope(|s| {
        // The leader: blocked reading with no cancel of its own.
        let leader = s.spawn(|| c.pull_event(Duration::from_secs(3)));
        std::thread::sleep(Duration::from_millis(50));
        let follower = s.spawn(|| c.pull_event(qm::Wait::forever().cancel(&cancel)));
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel();
        assert!(matches!(follower.join().unwrap(), Err(Error::Interrupted)));
        assert!(!leader.is_finished(), "the leader's own wait goes on");
        assert!(matches!(leader.join().unwrap(), Err(Error::Timeout(_))));
    });
    drop(c);
    peer.join().unwrap();
}
