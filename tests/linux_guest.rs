//! The Linux test guest (guest/linux) driven by qm: it boots to its ready line and prompt,
//! answers at the console, its qemu-ga answers on the virtio-serial port, and `poweroff -f`
//! reaches QMP as SHUTDOWN and ends QEMU. Console and agent are read here with plain sockets
//! (the console and agent APIs are tested in their own files).

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use qm::Machine;
use serde_json::{json, Value};
use support::linux_guest::{agent_args, kernel_release, linux_guest, qemu_args, PROMPT, READY};

/// Bound for a boot under TCG on a loaded machine (it takes ~4-8 s here): reaching it is a
/// failure, not a timing check.
const BOOT: Duration = Duration::from_secs(120);
const T: Duration = Duration::from_secs(30);

/// Reads `stream` until `needle` has been seen (or `limit` passes, or end of file: both panic
/// with what was read); returns what was read up to and including it, keeps the rest in `rest`.
fn read_until(
    stream: &mut UnixStream,
    rest: &mut Vec<u8>,
    needle: &[u8],
    limit: Duration,
) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(i) = rest.windows(needle.len()).position(|w| w == needle) {
            let tail = rest.split_off(i + needle.len());
            return std::mem::replace(rest, tail);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {:?} within {limit:?}; read: {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(rest)
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "end of file before {:?}; read: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(rest)
            ),
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Types `line` at the prompt; returns the output lines (echo, escapes and prompt removed).
fn run(con: &mut UnixStream, rest: &mut Vec<u8>, line: &str) -> Vec<String> {
    con.write_all(format!("{line}\n").as_bytes()).unwrap();
    let out = read_until(con, rest, PROMPT.as_bytes(), T);
    let text = String::from_utf8_lossy(&out[..out.len() - PROMPT.len()]).replace("\x1b[6n", "");
    let mut lines = text.split("\r\n");
    assert_eq!(
        lines.next(),
        Some(line),
        "the command is echoed first: {text:?}"
    );
    lines.filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[test]
fn boots_answers_at_the_console_and_through_the_agent_then_powers_off() {
    let guest = linux_guest();
    let release = kernel_release(&guest);
    let dir = tempfile::Builder::new()
        .prefix("qm-test-")
        .tempdir()
        .unwrap();
    let agent_path = dir.path().join("qga.sock");

    let vm = Machine::new(std::env::var("QM_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()));
    vm.set_base_temp_dir(dir.path());
    vm.set_console(None, 0);
    vm.add_args(qemu_args(&guest));
    vm.add_args([
        "-chardev".to_string(),
        format!(
            "socket,id=qga0,path={},server=on,wait=off",
            agent_path.display()
        ),
    ]);
    vm.add_args(agent_args("qga0"));
    vm.launch().unwrap();

    let mut con = vm.console().unwrap();
    let mut rest = Vec::new();
    read_until(&mut con, &mut rest, READY.as_bytes(), BOOT);
    read_until(&mut con, &mut rest, PROMPT.as_bytes(), T);
    assert_eq!(run(&mut con, &mut rest, "uname -r"), [release.as_str()]);
    assert_eq!(run(&mut con, &mut rest, "echo $((6*7))"), ["42"]);

    // qemu-ga: guest-sync-delimited answers with 0xFF, then {"return": id}.
    let mut qga = UnixStream::connect(&agent_path).unwrap();
    let mut qrest = Vec::new();
    let sync = json!({"execute": "guest-sync-delimited", "arguments": {"id": 4242}});
    qga.write_all(format!("{sync}\n").as_bytes()).unwrap();
    read_until(&mut qga, &mut qrest, b"\xff", T);
    let reply: Value = serde_json::from_slice(&read_until(&mut qga, &mut qrest, b"\n", T)).unwrap();
    assert_eq!(reply, json!({"return": 4242}));
    qga.write_all(b"{\"execute\": \"guest-get-osinfo\"}\n")
        .unwrap();
    let reply: Value = serde_json::from_slice(&read_until(&mut qga, &mut qrest, b"\n", T)).unwrap();
    assert_eq!(reply["return"]["kernel-release"], json!(release), "{reply}");

    con.write_all(b"poweroff -f\n").unwrap();
    let event = vm.event_wait("SHUTDOWN", None, T).unwrap().unwrap();
    assert_eq!(event["data"]["guest"], json!(true), "{event}");
    drop(con);
    drop(qga);
    vm.wait(T).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
}
