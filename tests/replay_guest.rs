//! Record, then replay, on every channel: a run against the real Linux guest (QMP, console,
//! guest agent) with a transcript, replayed on the fake QEMU (`qm-fake-qemu`), must show the
//! program the same replies, events, console text, `run` results and agent results.

mod support;

use std::path::Path;
use std::time::Duration;

use qm::linux_guest::{LinuxGuest, READY};
use qm::{AgentChannel, Channel, Error, Machine, Value};
use serde_json::json;
use support::linux_guest::linux_guest;
use support::vm::{self, scratch, T};

/// The fake's binary, as Cargo built it for these tests.
const FAKE: &str = env!("CARGO_BIN_EXE_qm-fake-qemu");
/// Bound of a boot: generous, TCG on a loaded 2-core machine.
const BOOT: Duration = Duration::from_secs(240);
/// A console command with output on stdout and stderr, binary bytes, and a nonzero status.
const CONSOLE_CMD: &str = r"echo console-out; echo console-err >&2; printf '\377\000z\n'; (exit 3)";

/// A machine booting the Linux guest with a console and an agent, on `binary`.
fn machine(binary: &str, dir: &Path) -> Machine {
    let g = linux_guest();
    let vm = Machine::new(binary);
    vm.set_base_temp_dir(dir);
    // The fake ignores the guest's arguments; the real QEMU boots it.
    vm.add_args(LinuxGuest::new(&g.kernel, &g.initrd).qemu_args());
    vm.set_console(None, 0);
    vm.set_guest_agent(Some(AgentChannel::SocketPair));
    vm
}

fn run_json(out: qm::RunOutput) -> Value {
    json!({"stdout": out.stdout, "stderr": out.stderr, "status": out.status,
        "kernel": out.kernel_messages})
}

/// What a program sees in one run (all compared whole). `changed`: the program runs another
/// console command than it did when recorded (then it stops there).
fn scenario(vm: &Machine, changed: bool) -> Vec<Value> {
    let mut seen = Vec::new();
    vm.launch().unwrap();
    // The boot log up to the ready line: every console byte, as the guest wrote it.
    let boot = vm.console_wait(&READY.into(), BOOT).unwrap();
    seen.push(json!(boot.text));
    for ch in [Channel::Console, Channel::Agent] {
        vm.guest(ch).wait_ready(BOOT).unwrap();
    }
    vm::qmp_scenario(vm, &mut seen);
    vm.cmd("cont", None).unwrap();
    seen.push(vm.event_wait("RESUME", None, T).unwrap().unwrap());
    if changed {
        let err = vm
            .console_run("echo changed", Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, Error::ConsoleTimeout { .. }), "{err}");
        let _ = vm.shutdown(T);
        return seen;
    }
    // Over the console: two runs, each with its own nonce.
    seen.push(run_json(vm.console_run(CONSOLE_CMD, T).unwrap()));
    seen.push(run_json(vm.console_run("uname -s", T).unwrap()));
    // Over the agent: guest-exec and its status polls, a ping, osinfo.
    let out = vm
        .guest(Channel::Agent)
        .run("echo agent-out; echo agent-err >&2; sleep 0.3; exit 4", T)
        .unwrap();
    seen.push(run_json(out));
    let agent = vm.agent().unwrap();
    agent.ping(T).unwrap();
    seen.push(agent.get_osinfo(T).unwrap());
    vm.shutdown(T).unwrap();
    seen.push(json!(vm.exitcode()));
    seen
}

fn replay_machine(dir: &Path, transcript: &Path) -> Machine {
    let vm = machine(FAKE, dir);
    vm.add_args([
        "-qm-fake-script".to_owned(),
        transcript.display().to_string(),
    ]);
    vm
}

#[test]
fn a_run_on_the_linux_guest_replays_on_the_fake_on_every_channel() {
    let dir = scratch();
    let transcript = dir.path().join("recorded.jsonl");
    let real = machine(&vm::qemu(), dir.path());
    real.set_qmp_transcript(Some(transcript.clone()));
    let recorded = scenario(&real, false);
    assert_eq!(recorded.last(), Some(&json!(0)));
    // What the guest did, as the program saw it.
    assert_eq!(recorded[5]["status"], 3);
    assert_eq!(
        recorded[5]["stdout"],
        json!(b"console-out\nconsole-err\n\xff\x00z\n")
    );
    assert_eq!(recorded[6]["stdout"], json!(b"Linux\n"));
    assert_eq!(recorded[7]["status"], 4);
    assert_eq!(recorded[7]["stdout"], json!(b"agent-out\n"));
    assert_eq!(recorded[7]["stderr"], json!(b"agent-err\n"));

    // The file: every channel, as script lines; never the agent's syncs.
    let text = std::fs::read_to_string(&transcript).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |chan: &str, dir: &str| {
        lines
            .iter()
            .filter(|l| l["chan"].as_str().unwrap_or("qmp") == chan && l["dir"] == dir)
            .count()
    };
    for (chan, dir) in [
        ("qmp", "out"),
        ("qmp", "in"),
        ("qmp", "event"),
        ("console", "in"),
        ("console", "out"),
        ("agent", "out"),
        ("agent", "in"),
    ] {
        assert!(
            count(chan, dir) > 0,
            "no {chan} {dir} line in\n{text:.3000}"
        );
    }
    assert!(!text.contains("guest-sync"), "{text:.3000}");
    assert!(
        lines
            .iter()
            .any(|l| l["chan"] == "console" && l.get("bytes").is_some()),
        "the \\377 the guest printed is not UTF-8: a bytes line"
    );
    let polls = lines
        .iter()
        .filter(|l| l["msg"]["execute"] == "guest-exec-status")
        .count();
    assert!(polls >= 1, "{text:.3000}");

    // The replay: the same program on the fake sees the same.
    let fake = replay_machine(dir.path(), &transcript);
    let replayed = scenario(&fake, false);
    let log = fake.get_log().unwrap_or_default();
    assert_eq!(replayed.len(), recorded.len());
    for (i, (r, p)) in recorded.iter().zip(&replayed).enumerate() {
        assert!(
            r == p,
            "item {i} differs: recorded {r:.300}, replayed {p:.300}\n{log}"
        );
    }
    assert!(!log.contains("qm-fake-qemu"), "{log}");

    // A program that changed since the recording: its console run departs (its run times
    // out), and the fake reports the recorded line it was waiting at, and exit status 3.
    let fake = replay_machine(dir.path(), &transcript);
    let seen = scenario(&fake, true);
    assert_eq!(seen[..], recorded[..seen.len()]);
    assert_eq!(fake.exitcode(), Some(qm::fake::EXIT_NOT_FOLLOWED));
    let log = fake.get_log().unwrap_or_default();
    let run_line = lines
        .iter()
        .position(|l| {
            l["chan"] == "console"
                && l["dir"] == "out"
                && l["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("console-out"))
        })
        .unwrap()
        + 1;
    assert!(
        log.contains(&format!(
            "script line {run_line}: waiting for console input \"stty -onlcr;"
        )),
        "line {run_line} not named in\n{log}"
    );
}
