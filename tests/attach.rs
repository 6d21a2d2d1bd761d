//! Attaching to a QEMU started by hand (`-qmp unix:PATH,server=on,wait=off`, as a user would):
//! commands, events and waits work as on a launched machine, and ending the machine detaches,
//! leaving QEMU running.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qm::{AttachAddress, Error, Machine, Wait};
use serde_json::json;
use support::linux_guest::{agent_args, qemu_args, try_linux_guest};
use support::vm::{qemu, scratch, T};

/// A QEMU this test started itself, killed and reaped when dropped (qm never does it).
struct HandStarted {
    child: Child,
}

impl HandStarted {
    fn start(args: &[String]) -> HandStarted {
        let child = Command::new(qemu())
            .args(["-display", "none", "-nodefaults"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting QEMU by hand");
        HandStarted { child }
    }

    /// A `-machine none` QEMU whose monitor listens at `sock`.
    fn with_unix_monitor(sock: &Path) -> HandStarted {
        let qemu = HandStarted::start(&[
            "-machine".into(),
            "none".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", sock.display()),
        ]);
        wait_for_path(sock);
        qemu
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for HandStarted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until QEMU listens at `path`: the file exists (QEMU binds it), and a connection is
/// not refused (QEMU calls listen a moment after bind). The probe connection is closed at
/// once; QEMU takes that as a client that left.
fn wait_for_path(path: &Path) {
    let start = Instant::now();
    loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return,
            Err(e) => assert!(
                start.elapsed() < T,
                "QEMU never listened at {}: {e}",
                path.display()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn machine(dir: &Path) -> Machine {
    let vm = Machine::new(qemu());
    vm.set_base_temp_dir(dir);
    vm
}

fn unix(path: &Path) -> AttachAddress {
    AttachAddress::Unix(path.to_owned())
}

#[test]
fn attach_runs_commands_and_events_then_detaches_leaving_qemu_running() {
    let dir = scratch();
    let sock = dir.path().join("qmp.sock");
    let mut qemu = HandStarted::with_unix_monitor(&sock);

    let vm = machine(dir.path());
    vm.attach(&unix(&sock), None, T).unwrap();
    assert!(vm.is_attached());
    assert!(vm.is_running());
    assert_eq!(vm.pid(), None, "an attached machine has no process of qm's");
    assert_eq!(vm.cmd("query-status", None).unwrap()["status"], "running");

    vm.cmd("stop", None).unwrap();
    let stop = vm.event_wait("STOP", None, T).unwrap().unwrap();
    assert_eq!(stop["event"], "STOP");
    vm.cmd("cont", None).unwrap();
    vm.event_wait("RESUME", None, T).unwrap().unwrap();
    let err = vm.cmd("no-such-command", None).unwrap_err();
    assert!(
        matches!(err, Error::Qmp { ref class, .. } if class == "CommandNotFound"),
        "{err}"
    );

    vm.shutdown(T).unwrap();
    assert!(!vm.is_attached());
    assert!(!vm.is_running());
    assert!(qemu.running(), "detaching must leave QEMU running");
    assert!(
        sock.exists(),
        "QEMU's socket is QEMU's: qm must not remove it"
    );
    assert!(
        matches!(vm.cmd("query-status", None), Err(Error::State(_))),
        "a detached machine runs no commands"
    );
    // Events received before the detach stay readable, as after a shutdown.
    assert_eq!(vm.get_qmp_events(Wait::no_wait()).unwrap().len(), 0);

    // QEMU took the disconnect and serves the next client: the same machine attaches again.
    vm.attach(&unix(&sock), None, T).unwrap();
    assert_eq!(vm.cmd("query-status", None).unwrap()["status"], "running");
    vm.kill().unwrap();
    assert!(qemu.running(), "kill on an attached machine only detaches");
}

#[test]
fn dropping_an_attached_machine_detaches() {
    let dir = scratch();
    let sock = dir.path().join("qmp.sock");
    let mut qemu = HandStarted::with_unix_monitor(&sock);
    {
        let vm = machine(dir.path());
        vm.attach(&unix(&sock), None, T).unwrap();
        vm.cmd("query-version", None).unwrap();
    }
    assert!(
        qemu.running(),
        "dropping an attached machine must leave QEMU running"
    );
    // And the monitor is free again.
    let vm = machine(dir.path());
    vm.attach(&unix(&sock), None, T).unwrap();
    vm.shutdown(T).unwrap();
    assert!(qemu.running());
}

#[test]
fn quit_then_shutdown_waits_for_qemu_to_hang_up() {
    let dir = scratch();
    let sock = dir.path().join("qmp.sock");
    let mut qemu = HandStarted::with_unix_monitor(&sock);
    let vm = machine(dir.path());
    vm.attach(
        &format!("unix:{}", sock.display()).parse().unwrap(),
        None,
        T,
    )
    .unwrap();
    vm.cmd("quit", None).unwrap();
    vm.shutdown(T).unwrap();
    // QEMU closes the monitor as it exits; the child is then ours (the test's) to reap.
    let status = qemu.child.wait().unwrap();
    assert!(status.success(), "QEMU exited with {status}");
    assert!(vm.exitcode().is_none(), "qm reaps nothing it did not start");
}

#[test]
fn attach_over_tcp() {
    let dir = scratch();
    // A free port: taken and released (QEMU binds it next; a collision fails the test loudly).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut qemu = HandStarted::start(&[
        "-machine".into(),
        "none".into(),
        "-qmp".into(),
        format!("tcp:127.0.0.1:{port},server=on,wait=off"),
    ]);
    let addr: AttachAddress = format!("tcp:127.0.0.1:{port}").parse().unwrap();
    let vm = machine(dir.path());
    let start = Instant::now();
    // QEMU listens once it has started; retry the connection until then.
    loop {
        match vm.attach(&addr, None, T) {
            Ok(()) => break,
            Err(Error::Io { .. }) if start.elapsed() < T => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("attach over TCP: {e}"),
        }
    }
    let version = vm.cmd("query-version", None).unwrap();
    assert!(version["qemu"]["major"].as_u64().unwrap() >= 7);
    vm.shutdown(T).unwrap();
    assert!(qemu.running());
}

#[test]
fn attach_refusals() {
    let dir = scratch();
    let vm = machine(dir.path());
    // Nothing listens.
    let err = vm
        .attach(&unix(&dir.path().join("nobody.sock")), None, T)
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!vm.is_attached());

    let sock = dir.path().join("qmp.sock");
    let _qemu = HandStarted::with_unix_monitor(&sock);
    vm.attach(&unix(&sock), None, T).unwrap();
    // Attached: no second attach, no launch.
    assert!(matches!(
        vm.attach(&unix(&sock), None, T),
        Err(Error::State(_))
    ));
    assert!(matches!(vm.launch(), Err(Error::State(_))));

    // QEMU serves one client at a time: a second one gets no greeting, and says why.
    let other = machine(dir.path());
    let err = other
        .attach(&unix(&sock), None, Duration::from_millis(500))
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(ref why) if why.contains("another")),
        "{err}"
    );
    assert!(!other.is_attached());
    // The first connection is unharmed.
    vm.cmd("query-status", None).unwrap();
    vm.shutdown(T).unwrap();
}

#[test]
fn attach_writes_the_transcript() {
    let dir = scratch();
    let sock = dir.path().join("qmp.sock");
    let _qemu = HandStarted::with_unix_monitor(&sock);
    let transcript = dir.path().join("qmp.jsonl");
    let vm = machine(dir.path());
    vm.set_qmp_transcript(Some(transcript.clone()));
    vm.attach(&unix(&sock), None, T).unwrap();
    vm.cmd("query-name", None).unwrap();
    vm.shutdown(T).unwrap();
    let text = std::fs::read_to_string(&transcript).unwrap();
    assert!(text.contains("query-name"), "{text}");
    assert!(text.contains("\"QMP\""), "the greeting is recorded: {text}");
}

/// The Linux test guest started by hand with its agent on a unix socket: qm attaches to both.
#[test]
fn attach_with_the_guest_agent() {
    let guest = match try_linux_guest() {
        Ok(guest) => guest,
        Err(why) => {
            eprintln!("skipped: the Linux test guest cannot be built here: {why}");
            return;
        }
    };
    let dir = scratch();
    let sock = dir.path().join("qmp.sock");
    let qga: PathBuf = dir.path().join("qga.sock");
    let mut args = qemu_args(&guest);
    args.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", sock.display()),
        "-chardev".into(),
        format!("socket,id=qga0,path={},server=on,wait=off", qga.display()),
    ]);
    args.extend(agent_args("qga0"));
    let mut qemu = HandStarted::start(&args);
    wait_for_path(&sock);
    wait_for_path(&qga);

    let vm = machine(dir.path());
    vm.attach(&unix(&sock), Some(&qga), T).unwrap();
    let agent = vm.agent().unwrap();
    // The guest boots under TCG on a loaded machine: a generous bound.
    agent.sync(Duration::from_secs(180)).unwrap();
    let info = agent.cmd("guest-info", None, T).unwrap();
    assert!(info["version"].is_string(), "{info}");
    let ping = agent.cmd("guest-ping", None, T).unwrap();
    assert_eq!(ping, json!({}));

    vm.shutdown(T).unwrap();
    assert!(
        vm.agent().is_err(),
        "the agent channel goes with the detach"
    );
    assert!(qemu.running(), "detaching must leave the guest running");
}
