//! The fake QEMU (`qm-fake-qemu`, `qm::fake`) driven by a real `Machine`: scripts, strictness,
//! faults, console and agent, and the round trip record on a real QEMU → replay on the fake.

mod support;
use support::vm;

use std::path::{Path, PathBuf};

use qm::console::Patterns;
use qm::{AgentChannel, Error, Machine, MonitorAddress, Value};
use serde_json::json;
use vm::{scratch, vm_none, T};

/// The fake's binary, as Cargo built it for these tests.
const FAKE: &str = env!("CARGO_BIN_EXE_qm-fake-qemu");

fn write_script(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join(format!("script-{}.jsonl", vm::unique()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A machine running the fake on `script`.
fn fake_vm(dir: &Path, script: &str) -> Machine {
    let path = write_script(dir, script);
    let vm = Machine::new(FAKE);
    vm.set_base_temp_dir(dir);
    vm.add_args(["-qm-fake-script".to_owned(), path.display().to_string()]);
    vm
}

fn log(vm: &Machine) -> String {
    vm.get_log().unwrap_or_default()
}

#[test]
fn hand_written_script_replies_errors_and_events() {
    let dir = scratch();
    let vm = fake_vm(
        dir.path(),
        r#"{"qm-fake":1,"idle":30}
{"dir":"out","msg":{"execute":"query-status"}}
{"dir":"in","msg":{"return":{"status":"running","running":true}}}
{"dir":"out","msg":{"execute":"device_add","arguments":{"driver":"virtio-blk-pci"}},"match":"subset"}
{"dir":"in","msg":{"error":{"class":"GenericError","desc":"Bus 'pci.0' does not support hotplugging"}}}
{"dir":"event","msg":{"event":"DEVICE_DELETED","data":{"device":"d0"}},"delay":0.05}
{"dir":"out","msg":{"execute":"stop"},"match":"name"}
{"dir":"in","msg":{"return":{}}}
{"dir":"event","msg":{"event":"STOP"}}
"#,
    );
    vm.launch().unwrap();
    assert_eq!(vm.cmd("query-status", None).unwrap()["status"], "running");
    let err = vm
        .cmd(
            "device_add",
            Some(&json!({"driver": "virtio-blk-pci", "id": "d0", "drive": "x"})),
        )
        .unwrap_err();
    match err {
        Error::Qmp { class, desc } => {
            assert_eq!(class, "GenericError");
            assert!(desc.contains("hotplugging"), "{desc}");
        }
        other => panic!("expected a QMP error, got {other}"),
    }
    let ev = vm.event_wait("DEVICE_DELETED", None, T).unwrap().unwrap();
    assert_eq!(ev["data"]["device"], "d0");
    assert!(ev["timestamp"]["seconds"].as_u64().unwrap() > 0);
    vm.cmd("stop", Some(&json!({"whatever": 1}))).unwrap();
    assert!(vm.event_wait("STOP", None, T).unwrap().is_some());
    // `quit` is answered by the fake (the script has no expectation left), then QEMU's event
    // follows, as from QEMU: after the reply. (`shutdown` closes the monitor once the reply is
    // in, as the seed does, so whether it still reads the event depends on the timing.)
    vm.cmd("quit", None).unwrap();
    let ev = vm.event_wait("SHUTDOWN", None, T).unwrap().unwrap();
    assert_eq!(ev["data"]["reason"], "host-qmp-quit");
    vm.wait(T).unwrap();
    assert_eq!(vm.exitcode(), Some(0), "{}", log(&vm));
    assert!(!log(&vm).contains("qm-fake-qemu"), "{}", log(&vm));
}

#[test]
fn an_unexpected_command_is_an_error_reply_a_report_and_exit_status_3() {
    let dir = scratch();
    let vm = fake_vm(
        dir.path(),
        r#"{"dir":"out","msg":{"execute":"query-status"}}
{"dir":"in","msg":{"return":{"status":"running","running":true}}}
{"dir":"out","msg":{"execute":"cont"}}
{"dir":"in","msg":{"return":{}}}
"#,
    );
    vm.launch().unwrap();
    let err = vm.cmd("query-kvm", None).unwrap_err();
    let Error::Qmp { desc, .. } = err else {
        panic!("expected a QMP error, got {err}");
    };
    assert!(desc.contains("script line 1"), "{desc}");
    assert!(
        desc.contains("query-kvm") && desc.contains("query-status"),
        "{desc}"
    );
    // Strict: the script did not move on; the expected command still works.
    vm.cmd("query-status", None).unwrap();
    vm.shutdown(T).unwrap();
    assert_eq!(vm.exitcode(), Some(qm::fake::EXIT_NOT_FOLLOWED));
    let log = log(&vm);
    assert!(log.contains("unexpected qmp message"), "{log}");
    // `cont` (line 3) was never sent: reported at the end, with its line.
    assert!(
        log.contains("script line 3") && log.contains("never happened"),
        "{log}"
    );
}

#[test]
fn a_malformed_script_fails_the_launch_naming_the_line() {
    let dir = scratch();
    let vm = fake_vm(
        dir.path(),
        "{\"dir\":\"out\",\"msg\":{\"execute\":\"stop\"}}\n{\"dir\":\"in\",\"msg\":{\"retrun\":{}}}\n",
    );
    let err = vm.launch().unwrap_err();
    let Error::Launch {
        exitcode, output, ..
    } = &err
    else {
        panic!("expected a launch error, got {err}");
    };
    assert_eq!(*exitcode, Some(qm::fake::EXIT_BAD_SCRIPT));
    assert!(
        output.contains("script line 2") && output.contains("\"return\" or \"error\""),
        "{output}"
    );
}

#[test]
fn monitor_on_a_unix_socket_and_on_tcp() {
    let dir = scratch();
    for address in [
        MonitorAddress::Unix(None),
        MonitorAddress::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        },
    ] {
        let vm = fake_vm(
            dir.path(),
            "{\"dir\":\"out\",\"msg\":{\"execute\":\"query-name\"}}\n{\"dir\":\"in\",\"msg\":{\"return\":{\"name\":\"fake\"}}}\n",
        );
        vm.set_monitor_address(address.clone());
        vm.launch().unwrap();
        assert_eq!(
            vm.cmd("query-name", None).unwrap()["name"],
            "fake",
            "{address:?}"
        );
        vm.shutdown(T).unwrap();
        assert_eq!(vm.exitcode(), Some(0), "{address:?}: {}", log(&vm));
    }
}

#[test]
fn console_output_and_waiting_for_input() {
    let dir = scratch();
    let vm = fake_vm(
        dir.path(),
        r##"{"chan":"console","dir":"in","text":"Welcome\r\nlogin: "}
{"chan":"console","dir":"out","text":"root\n"}
{"chan":"console","dir":"in","text":"# "}
{"chan":"console","dir":"out","text":"uname\n"}
{"chan":"console","dir":"in","text":"Linux\r\n# "}
"##,
    );
    vm.set_console(None, 0);
    vm.launch().unwrap();
    vm.console_wait(&Patterns::new().success("login: "), T)
        .unwrap();
    vm.console_send_line("root", "\n", T).unwrap();
    vm.console_wait(&Patterns::new().success("# "), T).unwrap();
    let m = vm
        .console_exec("uname", "\n", &Patterns::new().success("# "), T)
        .unwrap();
    assert!(m.text_lossy().contains("Linux"), "{}", m.text_lossy());
    vm.shutdown(T).unwrap();
    assert_eq!(vm.exitcode(), Some(0), "{}", log(&vm));
}

#[test]
fn agent_calls_on_both_channel_kinds() {
    let dir = scratch();
    for channel in [AgentChannel::SocketPair, AgentChannel::Unix(None)] {
        let vm = fake_vm(
            dir.path(),
            r#"{"chan":"agent","dir":"out","msg":{"execute":"guest-get-osinfo"}}
{"chan":"agent","dir":"in","msg":{"return":{"id":"fakeos","kernel-release":"6.1"}}}
{"chan":"agent","dir":"out","msg":{"execute":"guest-file-open","arguments":{"path":"/etc/none"}},"match":"subset"}
{"chan":"agent","dir":"in","msg":{"error":{"class":"GenericError","desc":"No such file or directory"}}}
"#,
        );
        vm.set_guest_agent(Some(channel.clone()));
        vm.launch().unwrap();
        let agent = vm.agent().unwrap();
        assert_eq!(agent.get_osinfo(T).unwrap()["id"], "fakeos", "{channel:?}");
        let err = agent.file_read("/etc/none", 4096, T).unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
        vm.shutdown(T).unwrap();
        assert_eq!(vm.exitcode(), Some(0), "{channel:?}: {}", log(&vm));
    }
}

#[test]
fn faults_disconnect_hang_and_exit_status() {
    let dir = scratch();
    // A disconnect in the middle of a command, then QEMU exits with status 1.
    let vm = fake_vm(
        dir.path(),
        r#"{"dir":"out","msg":{"execute":"query-status"}}
{"do":"garbage","text":"{\"retur"}
{"do":"disconnect"}
{"do":"exit","status":1,"delay":0.05}
"#,
    );
    vm.launch().unwrap();
    let err = vm.cmd("query-status", None).unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err}");
    let _ = vm.shutdown(T);
    assert_eq!(vm.exitcode(), Some(1), "{}", log(&vm));

    // A hang: `quit` is never answered, so qm's shutdown ladder kills the fake.
    let vm = fake_vm(
        dir.path(),
        "{\"dir\":\"out\",\"msg\":{\"execute\":\"quit\"}}\n{\"do\":\"hang\"}\n",
    );
    vm.launch().unwrap();
    let err = vm
        .shutdown(std::time::Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, Error::AbnormalShutdown(_)), "{err}");
    assert_eq!(vm.exitcode(), Some(-libc_sigkill()));
}

fn libc_sigkill() -> i32 {
    9
}

#[test]
fn the_idle_limit_ends_a_forgotten_fake() {
    let dir = scratch();
    let vm = fake_vm(
        dir.path(),
        "{\"qm-fake\":1,\"idle\":0.2}\n{\"dir\":\"out\",\"msg\":{\"execute\":\"query-status\"}}\n",
    );
    vm.launch().unwrap();
    // The program under test never sends the command: the fake gives up by itself, which the
    // program sees as QEMU going away.
    let err = vm.event_wait("NEVER", None, T).unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err}");
    let _ = vm.wait(T);
    assert_eq!(vm.exitcode(), Some(qm::fake::EXIT_IDLE));
    let log = log(&vm);
    assert!(
        log.contains("idle limit") && log.contains("script line 2"),
        "{log}"
    );
}

/// What a program sees in one run: replies, errors, events (all compared whole).
fn scenario(vm: &Machine) -> Vec<Value> {
    let mut seen = Vec::new();
    vm.launch().unwrap();
    vm::qmp_scenario(vm, &mut seen);
    seen.push(vm.cmd("query-status", None).unwrap());
    vm.cmd("cont", None).unwrap();
    seen.push(vm.event_wait("RESUME", None, T).unwrap().unwrap());
    let schema = vm.cmd("query-qmp-schema", None).unwrap();
    assert!(schema.as_array().unwrap().len() > 500);
    seen.push(schema);
    vm.shutdown(T).unwrap();
    seen.push(json!(vm.exitcode()));
    seen
}

#[test]
fn a_transcript_recorded_on_qemu_replays_on_the_fake_unchanged() {
    let dir = scratch();
    let transcript = dir.path().join("recorded.jsonl");
    let real = vm_none(dir.path());
    real.set_qmp_transcript(Some(transcript.clone()));
    let recorded = scenario(&real);
    assert_eq!(recorded.last(), Some(&json!(0)));

    let fake = Machine::new(FAKE);
    fake.set_base_temp_dir(dir.path());
    fake.set_machine("none");
    fake.add_args([
        "-qm-fake-script".to_owned(),
        transcript.display().to_string(),
    ]);
    let replayed = scenario(&fake);
    assert_eq!(replayed.len(), recorded.len());
    for (i, (r, p)) in recorded.iter().zip(&replayed).enumerate() {
        assert!(
            r == p,
            "item {i} differs: recorded {r:.200}, replayed {p:.200}\n{}",
            log(&fake)
        );
    }
    assert!(!log(&fake).contains("qm-fake-qemu"), "{}", log(&fake));
}

#[test]
fn a_replayed_program_that_changed_is_told_where() {
    let dir = scratch();
    let transcript = dir.path().join("recorded.jsonl");
    let real = vm_none(dir.path());
    real.set_qmp_transcript(Some(transcript.clone()));
    real.launch().unwrap();
    real.cmd("query-status", None).unwrap();
    real.shutdown(T).unwrap();

    let fake = Machine::new(FAKE);
    fake.set_base_temp_dir(dir.path());
    fake.add_args([
        "-qm-fake-script".to_owned(),
        transcript.display().to_string(),
    ]);
    fake.launch().unwrap();
    // The program now asks something else than it did when recorded.
    let err = fake.cmd("query-name", None).unwrap_err();
    assert!(err.to_string().contains("query-status"), "{err}");
    fake.shutdown(T).unwrap();
    assert_eq!(fake.exitcode(), Some(qm::fake::EXIT_NOT_FOLLOWED));
}

#[test]
fn the_binary_is_found_beside_qm() {
    // These tests link qm statically into target/debug/deps/…; the fake is in target/debug.
    if std::env::var_os(qm::fake::BINARY_ENV).is_none() {
        assert_eq!(
            qm::fake::binary_path(),
            Path::new(FAKE).canonicalize().unwrap()
        );
    }
}
