//! A machine with a guest agent channel leaves nothing behind: no descriptor, thread, child or
//! socket file, whichever way it ends. One test in its own binary, so nothing else runs in the
//! process while it counts. No guest OS is needed: nothing here waits for the agent to answer.

mod support;

use std::time::Duration;

use qm::{AgentChannel, Error, Machine};
use support::vm::{self, scratch, T};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn machine(dir: &std::path::Path, channel: AgentChannel) -> Machine {
    let m = Machine::new(vm::qemu());
    m.set_base_temp_dir(dir);
    m.add_args(["-nodefaults", "-machine", "q35", "-accel", "tcg"]);
    m.set_guest_agent(Some(channel));
    m
}

fn cycle(dir: &std::path::Path, i: usize) {
    match i % 4 {
        0 => {
            // A sync that times out, then a graceful shutdown.
            let m = machine(dir, AgentChannel::SocketPair);
            m.launch().unwrap();
            let ga = m.agent().unwrap();
            assert!(matches!(
                ga.sync(Duration::from_millis(50)),
                Err(Error::Timeout(_))
            ));
            m.shutdown(T).unwrap();
        }
        1 => {
            // A unix-path channel, killed; the user keeps the agent past the end.
            let m = machine(dir, AgentChannel::Unix(None));
            m.launch().unwrap();
            let ga = m.agent().unwrap();
            m.kill().unwrap();
            assert!(matches!(ga.ping(T), Err(Error::AgentDisconnected(_))));
        }
        2 => {
            // A launch that fails after the channel was made.
            let m = machine(dir, AgentChannel::Unix(Some(dir.join("qga-fail.sock"))));
            m.add_args(["-no-such-option"]);
            m.launch().unwrap_err();
            assert!(!dir.join("qga-fail.sock").exists(), "socket file left");
        }
        _ => {
            // Dropped while running, with a command in the queue's past.
            let m = machine(dir, AgentChannel::SocketPair);
            m.launch().unwrap();
            let _ = m.agent().unwrap().ping(Duration::from_millis(20));
            drop(m);
        }
    }
}

#[test]
fn agent_channels_leave_nothing_behind() {
    let dir = scratch();
    cycle(dir.path(), 0); // warm up: qm's spawner thread
    let (fds, threads_before) = (open_fds(), threads());
    for i in 0..12 {
        cycle(dir.path(), i);
    }
    assert_eq!(open_fds(), fds, "descriptors leaked");
    assert_eq!(threads(), threads_before, "threads leaked");
    let left: Vec<_> = vm::entries(dir.path());
    assert!(left.is_empty(), "files left: {left:?}");
}
