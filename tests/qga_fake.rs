//! The guest agent client against a fake agent peer: the faults a real `qemu-ga` does not
//! produce on demand (stale and garbage bytes around the 0xFF sentinel, replies that come too
//! late, oversize replies, an agent that never answers, a channel that closes).

mod support;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qm::{Cancel, Error, Exec, GuestAgent, ShutdownMode, Wait};
use serde_json::{json, Value};
use support::fake_qga::{echo, error, name, raw, reply, sync_reply, FakeAgent, Then};

const T: Duration = Duration::from_secs(10);

fn agent_with<F>(max_reply: usize, interval: Duration, handler: F) -> (GuestAgent, FakeAgent)
where
    F: FnMut(&Value, &mut UnixStream) -> Then + Send + 'static,
{
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = FakeAgent::start(theirs, handler);
    let agent = GuestAgent::with_sync_interval(ours, "fake", max_reply, interval).unwrap();
    (agent, peer)
}

fn agent<F>(handler: F) -> (GuestAgent, FakeAgent)
where
    F: FnMut(&Value, &mut UnixStream) -> Then + Send + 'static,
{
    agent_with(1 << 20, Duration::from_millis(20), handler)
}

fn count(cmds: &[Value], cmd: &str) -> usize {
    cmds.iter().filter(|c| name(c) == cmd).count()
}

#[test]
fn sync_skips_everything_before_the_sentinel_and_stale_sync_replies() {
    let (ga, peer) = agent(|cmd, sock| {
        if name(cmd) == "guest-sync-delimited" {
            // Leftovers of an earlier client: garbage, a half reply, an old sync's reply.
            raw(sock, b"garbage \x00\x01 {\"return\": {}, \"id\": ");
            raw(sock, b"\xff{\"return\": 4242}\n{\"return\": \"stale\"}\n");
            sync_reply(sock, cmd);
        } else {
            echo(cmd, sock);
        }
        Then::Continue
    });
    ga.sync(T).unwrap();
    assert_eq!(
        ga.cmd("guest-x", Some(&json!({"v": 1})), T).unwrap(),
        json!({"v": 1})
    );
    drop(ga);
    let cmds = peer.join();
    assert_eq!(count(&cmds, "guest-sync-delimited"), 1);
    // The sync's own id is in both places, and fresh.
    let sync = &cmds[0];
    assert_eq!(sync["id"], sync["arguments"]["id"]);
    assert!(sync["id"].as_u64().unwrap() < 1 << 53);
}

/// The agent comes up late: the syncs sent meanwhile wait in the channel, and the agent then
/// answers all of them in order. Only the latest counts; the earlier replies are not taken
/// for the replies of later commands.
#[test]
fn sync_retries_until_the_agent_comes_up_and_waits_for_the_latest() {
    let mut pending: Vec<Value> = Vec::new();
    let (ga, peer) = agent(move |cmd, sock| {
        if name(cmd) == "guest-sync-delimited" {
            pending.push(cmd.clone());
            if pending.len() == 4 {
                for c in pending.drain(..) {
                    sync_reply(sock, &c);
                }
            }
            return Then::Continue;
        }
        echo(cmd, sock)
    });
    ga.sync(T).unwrap();
    for i in 0..5 {
        assert_eq!(
            ga.cmd("guest-x", Some(&json!({ "i": i })), T).unwrap(),
            json!({ "i": i })
        );
    }
    drop(ga);
    let cmds = peer.join();
    assert_eq!(count(&cmds, "guest-sync-delimited"), 4);
}

#[test]
fn an_agent_that_never_answers_times_out_saying_so() {
    let (ga, peer) = agent(|_, _| Then::Continue);
    let started = Instant::now();
    let err = ga.sync(Duration::from_millis(300)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("qemu-ga"), "{err}");
    assert!(started.elapsed() < T);
    // A command first syncs, so it says the same.
    let err = ga
        .cmd("guest-ping", None, Duration::from_millis(100))
        .unwrap_err();
    assert!(err.to_string().contains("guest-sync-delimited"), "{err}");
    drop(ga);
    assert!(count(&peer.join(), "guest-sync-delimited") >= 2);
}

/// A reply that comes after its caller gave up must not be taken for the next command's.
#[test]
fn a_late_reply_is_dropped_and_the_next_call_resyncs() {
    let (ga, peer) = agent(|cmd, sock| {
        match name(cmd) {
            "guest-slow" => {
                std::thread::sleep(Duration::from_millis(300));
                reply(sock, cmd, json!("late"));
            }
            _ => {
                echo(cmd, sock);
            }
        }
        Then::Continue
    });
    ga.sync(T).unwrap();
    let err = ga
        .cmd("guest-slow", None, Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert_eq!(
        ga.cmd("guest-x", Some(&json!({"n": 2})), T).unwrap(),
        json!({"n": 2})
    );
    drop(ga);
    // Synced once at first, and again after the timeout.
    assert_eq!(count(&peer.join(), "guest-sync-delimited"), 2);
}

/// Even while in sync, a reply with another id (a confused agent, a replayed reply) and
/// lines that are not JSON are skipped.
#[test]
fn stale_ids_and_garbage_lines_are_skipped() {
    let (ga, peer) = agent(|cmd, sock| {
        if name(cmd) == "guest-x" {
            raw(
                sock,
                b"not json at all\n[1,2,3]\n{\"return\": \"other\", \"id\": 17}\n",
            );
        }
        echo(cmd, sock)
    });
    assert_eq!(
        ga.cmd("guest-x", Some(&json!({"a": 1})), T).unwrap(),
        json!({"a": 1})
    );
    drop(ga);
    peer.join();
}

#[test]
fn agent_errors_carry_class_and_desc() {
    let (ga, peer) = agent(|cmd, sock| {
        if name(cmd) == "guest-nope" {
            error(
                sock,
                cmd,
                "CommandNotFound",
                "The command guest-nope has not been found",
            );
            return Then::Continue;
        }
        echo(cmd, sock)
    });
    match ga.cmd("guest-nope", None, T).unwrap_err() {
        Error::Qmp { class, desc } => {
            assert_eq!(class, "CommandNotFound");
            assert!(desc.contains("guest-nope"));
        }
        other => panic!("{other:?}"),
    }
    // The raw form returns the error object instead.
    let raw = ga.execute("guest-nope", None, T).unwrap();
    assert_eq!(raw["error"]["class"], "CommandNotFound");
    assert!(raw.get("id").is_none());
    ga.ping(T).unwrap();
    drop(ga);
    peer.join();
}

#[test]
fn an_oversize_reply_fails_then_the_channel_resyncs() {
    let (ga, peer) = agent_with(4096, Duration::from_millis(20), |cmd, sock| {
        if name(cmd) == "guest-big" {
            let mut msg = json!({"return": "x".repeat(100_000)});
            msg["id"] = cmd["id"].clone();
            raw(sock, format!("{msg}\n").as_bytes());
            return Then::Continue;
        }
        echo(cmd, sock)
    });
    let err = ga.cmd("guest-big", None, T).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("size cap"), "{err}");
    assert_eq!(
        ga.cmd("guest-x", Some(&json!({"ok": true})), T).unwrap(),
        json!({"ok": true})
    );
    drop(ga);
    assert_eq!(count(&peer.join(), "guest-sync-delimited"), 2);
}

#[test]
fn cancel_interrupts_a_sync_and_a_queued_caller() {
    let (ga, peer) = agent(|_, _| Then::Continue);
    let ga = Arc::new(ga);
    let cancel = Cancel::new();
    let waiter = {
        let ga = ga.clone();
        let cancel = cancel.clone();
        std::thread::spawn(move || ga.sync(Wait::forever().cancel(&cancel)))
    };
    // A second caller queues behind the first.
    let queued = {
        let ga = ga.clone();
        let cancel = cancel.clone();
        std::thread::spawn(move || ga.ping(Wait::forever().cancel(&cancel)))
    };
    std::thread::sleep(Duration::from_millis(200));
    let fired = Instant::now();
    cancel.cancel();
    assert!(matches!(waiter.join().unwrap(), Err(Error::Interrupted)));
    assert!(matches!(queued.join().unwrap(), Err(Error::Interrupted)));
    assert!(fired.elapsed() < Duration::from_secs(2));
    // A token that fired before the call starts fails it at once.
    assert!(matches!(
        ga.ping(Wait::forever().cancel(&cancel)),
        Err(Error::Interrupted)
    ));
    drop(ga);
    peer.join();
}

#[test]
fn many_threads_each_get_their_own_reply() {
    let (ga, peer) = agent(echo);
    let ga = Arc::new(ga);
    let served = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let ga = ga.clone();
            let served = served.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let v = json!({ "t": t, "i": i });
                    assert_eq!(ga.cmd("guest-x", Some(&v), T).unwrap(), v);
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(served.load(Ordering::Relaxed), 400);
    drop(ga);
    assert_eq!(count(&peer.join(), "guest-sync-delimited"), 1);
}

#[test]
fn end_of_channel_fails_every_call_at_once() {
    let (ga, peer) = agent(|cmd, sock| {
        if name(cmd) == "guest-x" {
            return Then::Close;
        }
        echo(cmd, sock)
    });
    ga.ping(T).unwrap();
    let err = ga.cmd("guest-x", None, T).unwrap_err();
    assert!(matches!(err, Error::AgentDisconnected(_)), "{err:?}");
    // Named for the channel that failed, not the monitor.
    let msg = err.to_string();
    assert!(
        msg.starts_with("guest agent disconnected: ") && !msg.contains("QMP"),
        "{msg}"
    );
    let started = Instant::now();
    assert!(matches!(ga.ping(T), Err(Error::AgentDisconnected(_))));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(ga.is_closed());
    peer.join();
}

#[test]
fn close_wakes_a_blocked_caller() {
    let (ga, peer) = agent(|cmd, sock| {
        if name(cmd) == "guest-sync-delimited" {
            sync_reply(sock, cmd);
        }
        Then::Continue // never answers anything else
    });
    let ga = Arc::new(ga);
    let blocked = {
        let ga = ga.clone();
        std::thread::spawn(move || ga.ping(Wait::forever()))
    };
    std::thread::sleep(Duration::from_millis(200));
    // Asking does not wait for the command in progress.
    assert!(!ga.is_closed());
    ga.close();
    assert!(ga.is_closed());
    assert!(matches!(
        blocked.join().unwrap(),
        Err(Error::AgentDisconnected(_))
    ));
    drop(ga);
    peer.join();
}

#[test]
fn shutdown_succeeds_on_eof_or_on_the_following_sync() {
    // The agent closes (QEMU exited with the guest).
    let (ga, peer) = agent(|cmd, sock| {
        if name(cmd) == "guest-shutdown" {
            assert_eq!(cmd["arguments"]["mode"], "reboot");
            return Then::Close;
        }
        echo(cmd, sock)
    });
    ga.shutdown(ShutdownMode::Reboot, T).unwrap();
    peer.join();

    // The agent takes the command silently and answers the sync that follows.
    let (ga, peer) = agent(|cmd, sock| {
        if name(cmd) == "guest-shutdown" {
            return Then::Continue;
        }
        echo(cmd, sock)
    });
    ga.shutdown(ShutdownMode::Powerdown, T).unwrap();
    ga.ping(T).unwrap();
    drop(ga);
    peer.join();

    // The guest's shutdown program failed: the agent's error.
    let (ga, peer) = agent(|cmd, sock| {
        if name(cmd) == "guest-shutdown" {
            error(
                sock,
                cmd,
                "GenericError",
                "child process has failed to shutdown",
            );
            return Then::Continue;
        }
        echo(cmd, sock)
    });
    let err = ga.shutdown(ShutdownMode::Halt, T).unwrap_err();
    assert!(matches!(err, Error::Qmp { .. }), "{err:?}");
    drop(ga);
    peer.join();
}

#[test]
fn exec_polls_until_exit_and_caps_the_output() {
    let polls = Arc::new(AtomicUsize::new(0));
    let seen = polls.clone();
    let (ga, peer) = agent(move |cmd, sock| {
        match name(cmd) {
            "guest-exec" => {
                assert_eq!(cmd["arguments"]["path"], "/bin/prog");
                assert_eq!(cmd["arguments"]["arg"], json!(["a", "b"]));
                assert_eq!(cmd["arguments"]["input-data"], "aGVsbG8="); // "hello"
                reply(sock, cmd, json!({"pid": 77}));
            }
            "guest-exec-status" => {
                assert_eq!(cmd["arguments"]["pid"], 77);
                if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                    reply(sock, cmd, json!({"exited": false}));
                } else {
                    reply(
                        sock,
                        cmd,
                        json!({"exited": true, "exitcode": 3,
                               "out-data": "Zm9vYmFy", "err-data": "ZXJy"}),
                    );
                }
            }
            _ => {
                echo(cmd, sock);
            }
        }
        Then::Continue
    });
    let out = ga
        .exec(
            &Exec::new("/bin/prog")
                .args(["a", "b"])
                .input("hello")
                .max_output(4)
                .interval(Duration::from_millis(5)),
            T,
        )
        .unwrap();
    assert_eq!(out.pid, 77);
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.signal, None);
    assert_eq!(out.stdout, b"foob");
    assert!(out.stdout_truncated);
    assert_eq!(out.stderr, b"err");
    assert!(!out.stderr_truncated);
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    drop(ga);
    peer.join();
}

#[test]
fn exec_timeout_names_the_pid_still_running() {
    let (ga, peer) = agent(|cmd, sock| {
        match name(cmd) {
            "guest-exec" => reply(sock, cmd, json!({"pid": 5})),
            "guest-exec-status" => reply(sock, cmd, json!({"exited": false})),
            _ => {
                echo(cmd, sock);
            }
        }
        Then::Continue
    });
    let err = ga
        .exec(&Exec::new("sleep"), Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("process 5"), "{err}");
    drop(ga);
    peer.join();
}

#[test]
fn file_read_is_chunked_and_capped_and_always_closes() {
    let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let file = data.clone();
    let mut offset = 0usize;
    let (ga, peer) = agent(move |cmd, sock| {
        match name(cmd) {
            "guest-file-open" => {
                offset = 0;
                reply(sock, cmd, json!(1000));
            }
            "guest-file-read" => {
                // Never more than 1000 bytes a time, whatever was asked: the client loops.
                let want = cmd["arguments"]["count"].as_u64().unwrap() as usize;
                let n = want.min(1000).min(file.len() - offset);
                let chunk = &file[offset..offset + n];
                offset += n;
                reply(
                    sock,
                    cmd,
                    json!({"count": n, "buf-b64": b64(chunk), "eof": offset == file.len()}),
                );
            }
            _ => {
                echo(cmd, sock);
            }
        }
        Then::Continue
    });
    assert_eq!(ga.file_read("/f", 1 << 20, T).unwrap(), data);
    assert_eq!(ga.file_read("/f", 3000, T).unwrap(), data);
    let err = ga.file_read("/f", 2999, T).unwrap_err();
    assert!(err.to_string().contains("larger than the cap"), "{err}");
    drop(ga);
    let cmds = peer.join();
    assert_eq!(count(&cmds, "guest-file-open"), 3);
    assert_eq!(count(&cmds, "guest-file-close"), 3);
}

/// A tiny encoder for the fake side (the client's own is private).
fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A caller queued behind a slow command times out on its own wait, and says why; the slow
/// command still gets its reply, and the queue goes on.
#[test]
fn a_queued_caller_times_out_without_disturbing_the_one_in_progress() {
    let (ga, peer) = agent(|cmd, sock| {
        if name(cmd) == "guest-slow" {
            std::thread::sleep(Duration::from_millis(500));
        }
        echo(cmd, sock)
    });
    ga.sync(T).unwrap();
    let ga = Arc::new(ga);
    let slow = {
        let ga = ga.clone();
        std::thread::spawn(move || ga.cmd("guest-slow", Some(&json!({"s": 1})), T))
    };
    std::thread::sleep(Duration::from_millis(100));
    let err = ga.ping(Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(
        err.to_string().contains("another command holds it"),
        "{err}"
    );
    assert_eq!(slow.join().unwrap().unwrap(), json!({"s": 1}));
    ga.ping(T).unwrap();
    drop(ga);
    // The queued caller never reached the channel: no resync was needed.
    assert_eq!(count(&peer.join(), "guest-sync-delimited"), 1);
}

/// An agent that does not echo ids (older ones): in sync, its replies are taken in order; a
/// reply that comes too late is still dropped by the resync that follows a timeout.
#[test]
fn an_agent_that_does_not_echo_ids_still_works() {
    let (ga, peer) = agent(|cmd, sock| {
        let mut plain = cmd.clone();
        plain.as_object_mut().unwrap().remove("id");
        match name(cmd) {
            "guest-sync-delimited" => sync_reply(sock, &plain),
            "guest-slow" => {
                std::thread::sleep(Duration::from_millis(300));
                reply(sock, &plain, json!("late"));
            }
            _ => reply(sock, &plain, cmd["arguments"].clone()),
        }
        Then::Continue
    });
    for i in 0..3 {
        assert_eq!(
            ga.cmd("guest-x", Some(&json!({ "i": i })), T).unwrap(),
            json!({ "i": i })
        );
    }
    assert!(matches!(
        ga.cmd("guest-slow", None, Duration::from_millis(50)),
        Err(Error::Timeout(_))
    ));
    assert_eq!(
        ga.cmd("guest-x", Some(&json!({"after": 1})), T).unwrap(),
        json!({"after": 1})
    );
    drop(ga);
    peer.join();
}
