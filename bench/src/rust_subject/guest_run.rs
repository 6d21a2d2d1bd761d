//! Running a command in the Linux test guest until its exit status is in hand (issue #21):
//!
//! - `console_run`: `true` over the console. qm: `Machine::console_run` (its framed line with a
//!   fresh nonce, qm's reader thread and its frame parser). The baseline: a second guest spawned
//!   by hand with its console on a socketpair, on which the caller types the same framed line
//!   (its own nonce) and runs a plain blocking `read` loop until the end marker and the status
//!   line. One sample: from typing the line to the status in hand, ms.
//! - `agent_run`: `/bin/sh -c 'echo hello'` through the guest agent, as `Guest::run` sends it
//!   (`guest-exec` with captured output), polling `guest-exec-status` every 2 ms on both sides,
//!   until the exit status and the decoded output are in hand, ms. qm: `GuestAgent::exec`; the
//!   baseline: the raw agent client of `qga.rs` on the same connection, decoding the output's
//!   base64 itself.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qm::linux_guest::{PROMPT, READY};
use qm::{Channel, Exec, Machine};
use serde_json::Value;

use crate::qga::{linux_guest, setup, RawAgent, EXEC_INTERVAL};
use crate::raw::Res;
use crate::{e, ms, order, Out, Params, Side, WAIT};

/// A boot of the Linux guest under TCG on a loaded machine: a failure bound only.
const BOOT: Duration = Duration::from_secs(300);

/// The command `console_run` runs.
const CONSOLE_CMD: &str = "true";
/// The command `agent_run` runs, and what it prints.
const AGENT_CMD: &str = "echo hello";
const AGENT_OUT: &[u8] = b"hello\n";

// ---- console_run ----------------------------------------------------------------------------

/// The Linux guest spawned by hand with its console (ttyS0) on a socketpair: the baseline
/// types framed lines and reads with blocking `read`s. Killed on drop.
struct RawShell {
    child: Child,
    sock: UnixStream,
    /// Bytes read and not yet consumed.
    seen: Vec<u8>,
    runs: u64,
}

impl RawShell {
    fn spawn(qemu: &str, args: &[String]) -> Res<RawShell> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let theirs = OwnedFd::from(theirs);
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(qemu);
        // What qm gives QEMU for a console, less its monitor.
        cmd.args(["-display", "none", "-vga", "none"])
            .arg("-chardev")
            .arg(format!("socket,id=console,fd={fd}"))
            .args(["-serial", "chardev:console"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: fcntl is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawning {qemu}: {e}"))?;
        drop(theirs);
        // A failure bound only: a blocking read that never returns would hang the bench.
        ours.set_read_timeout(Some(BOOT))
            .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
        Ok(RawShell {
            child,
            sock: ours,
            seen: Vec::new(),
            runs: 0,
        })
    }

    /// Waits until the guest is up and its shell runs a command.
    fn ready(&mut self) -> Res<()> {
        self.until(READY.as_bytes())?;
        self.until(PROMPT.as_bytes())?;
        let (_, status) = self.run(":")?;
        if status != 0 {
            return Err(format!("raw console: `:` exited with {status}"));
        }
        Ok(())
    }

    /// Reads until `marker` is among the bytes read; returns the offset just past it (the bytes
    /// stay in `seen`).
    fn until(&mut self, marker: &[u8]) -> Res<usize> {
        let mut buf = [0u8; 16 << 10];
        let mut from = 0;
        loop {
            if let Some(i) = self.seen[from..]
                .windows(marker.len())
                .position(|w| w == marker)
            {
                return Ok(from + i + marker.len());
            }
            from = self.seen.len().saturating_sub(marker.len() - 1);
            let n = self
                .sock
                .read(&mut buf)
                .map_err(|e| format!("raw console: read: {e}"))?;
            if n == 0 {
                return Err("raw console: the console closed".into());
            }
            self.seen.extend_from_slice(&buf[..n]);
        }
    }

    /// Types the framed line (the same bytes as qm's `RunFrame::line`, with a nonce of this
    /// client's) and reads the output up to the end marker and the status line; what follows
    /// (the next prompt) stays for the next run, which skips it looking for its begin marker.
    fn run(&mut self, command: &str) -> Res<(Vec<u8>, i32)> {
        self.runs += 1;
        let nonce = format!("{:08x}{:08x}", std::process::id(), self.runs);
        let line = format!(
            "stty -onlcr; printf 'QM-RUN-%s-B\\n' {nonce}; command eval '{}'; \
             printf 'QM-RUN-%s-E %d\\n' {nonce} \"$?\"; stty onlcr\n",
            command.replace('\'', "'\\''")
        );
        self.sock
            .write_all(line.as_bytes())
            .map_err(|e| format!("raw console: write: {e}"))?;
        let begin = format!("QM-RUN-{nonce}-B\n");
        let start = self.until(begin.as_bytes())?;
        self.seen.drain(..start);
        let end = format!("QM-RUN-{nonce}-E ");
        let at = self.until(end.as_bytes())?;
        let output = self.seen[..at - end.len()].to_vec();
        self.seen.drain(..at);
        let eol = self.until(b"\n")?;
        let digits = String::from_utf8_lossy(&self.seen[..eol - 1]).into_owned();
        self.seen.drain(..eol);
        let status = digits
            .trim()
            .parse()
            .map_err(|_| format!("raw console: status {digits:?}"))?;
        Ok((output, status))
    }
}

impl Drop for RawShell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qm_shell(qemu: &str, args: &[String]) -> Res<Machine> {
    let vm = Machine::new(qemu);
    vm.add_args(args);
    vm.set_console(None, 0);
    vm.launch().map_err(e)?;
    Ok(vm)
}

fn qm_ready(vm: &Machine) -> Res<()> {
    vm.console_wait(&READY.into(), BOOT).map_err(e)?;
    vm.guest(Channel::Console).wait_ready(BOOT).map_err(e)
}

fn check_true(side: &str, output: &[u8], status: i32) -> Res<()> {
    if status != 0 || !output.is_empty() {
        return Err(format!(
            "{side}: `{CONSOLE_CMD}` gave status {status}, output {:?}",
            String::from_utf8_lossy(output)
        ));
    }
    Ok(())
}

pub fn console_run(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 4), p.get("reps", 25));
    let args = linux_guest()?.qemu_args();
    let q = p.qemu();
    for seg in 0..p.get("segments", 2) {
        out.pair();
        // Both guests boot at once (a boot is most of a segment's time).
        let (mut raw, vm) = if seg % 2 == 0 {
            let raw = RawShell::spawn(&q, &args)?;
            (raw, qm_shell(&q, &args)?)
        } else {
            let vm = qm_shell(&q, &args)?;
            (RawShell::spawn(&q, &args)?, vm)
        };
        raw.ready()?;
        qm_ready(&vm)?;
        for _ in 0..5 {
            let (o, s) = raw.run(CONSOLE_CMD)?;
            check_true("raw", &o, s)?;
            let r = vm.console_run(CONSOLE_CMD, WAIT).map_err(e)?;
            check_true("qm", &r.stdout, r.status)?;
        }
        for block in 0..blocks {
            for side in order(block) {
                for _ in 0..reps {
                    let t = Instant::now();
                    let (o, s) = match side {
                        Side::Raw => raw.run(CONSOLE_CMD)?,
                        Side::Qm => {
                            let r = vm.console_run(CONSOLE_CMD, WAIT).map_err(e)?;
                            (r.stdout, r.status)
                        }
                    };
                    out.push(side, ms(t.elapsed()));
                    check_true(side.short(), &o, s)?;
                }
            }
        }
        drop(raw);
        vm.kill().map_err(e)?;
    }
    Ok(())
}

// ---- agent_run ------------------------------------------------------------------------------

/// Standard base64 (with padding), as `qemu-ga` encodes captured output.
fn base64_decode(text: &str) -> Res<Vec<u8>> {
    let value = |c: u8| -> Res<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("raw agent: bad base64 byte {c:#x}")),
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let take = chunk.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Ok(out)
}

/// The baseline: `guest-exec` of `/bin/sh -c CMD` with its output captured, then
/// `guest-exec-status` every interval until it exited; returns (status, stdout).
fn raw_run(raw: &mut RawAgent, command: &str) -> Res<(i32, Vec<u8>)> {
    let args = format!(
        r#"{{"path":"/bin/sh","arg":["-c",{}],"capture-output":true}}"#,
        serde_json::to_string(command).expect("a string")
    );
    let started = raw.cmd("guest-exec", &args)?;
    let pid = started["pid"]
        .as_i64()
        .ok_or_else(|| format!("raw agent: guest-exec returned {started}"))?;
    let args = format!("{{\"pid\":{pid}}}");
    loop {
        let status = raw.cmd("guest-exec-status", &args)?;
        if status["exited"] == true {
            let code = match (status["exitcode"].as_i64(), status["signal"].as_i64()) {
                (_, Some(sig)) => 128 + sig as i32,
                (Some(code), None) => code as i32,
                _ => return Err(format!("raw agent: no exit code in {status}")),
            };
            let stdout = match &status["out-data"] {
                Value::String(s) => base64_decode(s)?,
                _ => Vec::new(),
            };
            return Ok((code, stdout));
        }
        std::thread::sleep(EXEC_INTERVAL);
    }
}

pub fn agent_run(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 10), p.get("reps", 10));
    let (vm, agent, mut raw) = setup(p)?;
    // What `Guest::run` sends over the agent, polled as often as the baseline polls.
    let req = Exec::new("/bin/sh")
        .args(["-c", AGENT_CMD])
        .capture(true)
        .interval(EXEC_INTERVAL);
    let qm_run = || -> Res<(i32, Vec<u8>)> {
        let r = agent.exec(&req, WAIT).map_err(e)?;
        let status = match (r.exit_code, r.signal) {
            (_, Some(sig)) => 128 + sig,
            (Some(code), None) => code,
            (None, None) => return Err("qm: neither exit code nor signal".into()),
        };
        Ok((status, r.stdout))
    };
    let check = |side: &str, (status, stdout): (i32, Vec<u8>)| -> Res<()> {
        if status != 0 || stdout != AGENT_OUT {
            return Err(format!(
                "{side}: `{AGENT_CMD}` gave status {status}, output {:?}",
                String::from_utf8_lossy(&stdout)
            ));
        }
        Ok(())
    };
    for _ in 0..3 {
        check("raw", raw_run(&mut raw, AGENT_CMD)?)?;
        check("qm", qm_run()?)?;
    }
    for block in 0..blocks {
        out.pair();
        for side in order(block) {
            for _ in 0..reps {
                let t = Instant::now();
                let r = match side {
                    Side::Raw => raw_run(&mut raw, AGENT_CMD)?,
                    Side::Qm => qm_run()?,
                };
                out.push(side, ms(t.elapsed()));
                check(side.short(), r)?;
            }
        }
    }
    drop(agent);
    vm.shutdown(WAIT).map_err(e)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_every_padding() {
        for (text, want) in [
            ("", &b""[..]),
            ("aGVsbG8K", b"hello\n"),
            ("aGk=", b"hi"),
            ("aA==", b"h"),
            ("AP8=", b"\x00\xff"),
        ] {
            assert_eq!(super::base64_decode(text).unwrap(), want, "{text}");
        }
    }
}
