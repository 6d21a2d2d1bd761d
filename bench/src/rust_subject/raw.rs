//! The baseline: a minimal hand-written QMP client, with no library.
//!
//! What QEMU itself allows: fork/exec QEMU (through `std::process::Command`) with one end of a
//! socketpair as its monitor, blocking writes of each command, blocking reads until the reply
//! line with the right id, skipping event lines. QEMU gets exactly the arguments qm gives it
//! (`-display none -vga none -chardev socket,id=mon,fd=N -mon chardev=mon,mode=control
//! -machine none`), so the two sides run the same QEMU doing the same work.
//!
//! Replies are recognised by QEMU's own formatting (`…, "id": N}` at the end of the line), not
//! parsed: a minimal client needs no JSON parser. It is correct for QEMU's output, not clever.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

pub type Res<T> = Result<T, String>;

/// One QEMU with a raw QMP connection.
pub struct RawVm {
    child: Child,
    /// The monitor; `None` once closed.
    sock: Option<UnixStream>,
    next_id: u64,
    /// Bytes read and not yet consumed, then the current line.
    input: Vec<u8>,
    line: Vec<u8>,
}

/// A socketpair, both ends close-on-exec.
fn socketpair() -> Res<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two descriptors; checked.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!("socketpair: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts QEMU with its monitor on a socketpair, as qm does; returns the process and our end
/// of the monitor (for [`RawVm`], or for qm's bare `QmpClient` in the schema metrics).
pub fn spawn_monitor(qemu: &str) -> Res<(Child, UnixStream)> {
    let (ours, theirs) = socketpair()?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(qemu);
    cmd.args(["-display", "none", "-vga", "none", "-chardev"])
        .arg(format!("socket,id=mon,fd={fd}"))
        .args(["-mon", "chardev=mon,mode=control", "-machine", "none"])
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
    Ok((child, UnixStream::from(ours)))
}

impl RawVm {
    /// Starts QEMU, without waiting for anything.
    pub fn spawn(qemu: &str) -> Res<RawVm> {
        let (child, sock) = spawn_monitor(qemu)?;
        Ok(RawVm {
            child,
            sock: Some(sock),
            next_id: 1,
            input: Vec::with_capacity(4096),
            line: Vec::with_capacity(4096),
        })
    }

    /// Reads the greeting and negotiates capabilities.
    pub fn handshake(&mut self) -> Res<()> {
        self.read_line()?;
        if !self.line.starts_with(b"{\"QMP\"") {
            return Err(format!("bad greeting: {}", self.text()));
        }
        self.execute("qmp_capabilities")?;
        Ok(())
    }

    /// Starts QEMU and waits until QMP is negotiated.
    pub fn launch(qemu: &str) -> Res<RawVm> {
        let mut vm = RawVm::spawn(qemu)?;
        vm.handshake()?;
        Ok(vm)
    }

    /// Blocking read of the next line (up to and including its newline) into `self.line`.
    fn read_line(&mut self) -> Res<()> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.input[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos + 1;
                self.line.clear();
                self.line.extend_from_slice(&self.input[..end]);
                self.input.drain(..end);
                return Ok(());
            }
            scanned = self.input.len();
            let mut chunk = [0u8; 4096];
            let sock = self.sock.as_mut().ok_or("the monitor is closed")?;
            let n = sock
                .read(&mut chunk)
                .map_err(|e| format!("reading the monitor: {e}"))?;
            if n == 0 {
                return Err("the monitor closed".into());
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    /// The last line read, as it came (its newline included).
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The last line read, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.line).trim_end().to_owned()
    }

    /// True when the last line read is an event.
    fn is_event(&self) -> bool {
        self.line.starts_with(b"{\"timestamp\"") || self.contains(b"\"event\": ")
    }

    /// True when the last line read contains `needle`.
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.line.windows(needle.len()).any(|w| w == needle)
    }

    /// Writes a command without waiting; returns its id.
    pub fn send(&mut self, cmd: &str) -> Res<u64> {
        let id = self.next_id;
        self.next_id += 1;
        // No newline, as qm: QEMU parses a complete JSON object without one.
        let msg = format!("{{\"execute\":\"{cmd}\",\"id\":{id}}}");
        self.sock
            .as_mut()
            .ok_or("the monitor is closed")?
            .write_all(msg.as_bytes())
            .map_err(|e| format!("writing {cmd}: {e}"))?;
        Ok(id)
    }

    /// Reads until the reply with `id`; calls `on_event` for each event line on the way.
    /// Leaves the reply in the line buffer.
    pub fn recv_reply(&mut self, id: u64, mut on_event: impl FnMut(&RawVm)) -> Res<()> {
        let tail = format!("\"id\": {id}}}");
        loop {
            self.read_line()?;
            if self.is_event() {
                on_event(self);
                continue;
            }
            let line = self.line.trim_ascii_end();
            if line.ends_with(tail.as_bytes()) {
                if line.starts_with(b"{\"return\"") {
                    return Ok(());
                }
                return Err(format!("command {id} failed: {}", self.text()));
            }
            return Err(format!(
                "unexpected line waiting for id {id}: {}",
                self.text()
            ));
        }
    }

    /// Runs a command, skipping events; the reply is left in the line buffer.
    pub fn execute(&mut self, cmd: &str) -> Res<()> {
        let id = self.send(cmd)?;
        self.recv_reply(id, |_| {})
    }

    /// `k` `query-status` pipelined: all `k` written, then the `k` replies read, each checked.
    /// QMP allows several in-band commands in flight (QEMU takes them one at a time): this is
    /// what QEMU itself can do for a client that never waits between commands.
    pub fn query_status_pipelined(&mut self, k: usize) -> Res<()> {
        let first = self.next_id;
        for _ in 0..k {
            self.send("query-status")?;
        }
        for id in first..first + k as u64 {
            self.recv_reply(id, |_| {})?;
            if !self.contains(b"\"status\": \"running\"") {
                return Err(format!("unexpected query-status reply: {}", self.text()));
            }
        }
        Ok(())
    }

    /// `query-status`, checking that the machine runs.
    pub fn query_status(&mut self) -> Res<()> {
        self.execute("query-status")?;
        if !self.contains(b"\"status\": \"running\"") {
            return Err(format!("unexpected query-status reply: {}", self.text()));
        }
        Ok(())
    }

    /// Sends `stop` (or `cont`) and reads until both its reply and the `event` are in hand.
    pub fn command_and_event(&mut self, cmd: &str, event: &str) -> Res<()> {
        let want = format!("\"event\": \"{event}\"");
        let mut seen = false;
        let id = self.send(cmd)?;
        self.recv_reply(id, |vm| seen |= vm.contains(want.as_bytes()))?;
        while !seen {
            self.read_line()?;
            seen = self.is_event() && self.contains(want.as_bytes());
        }
        Ok(())
    }

    /// Sends `quit` and reads its reply, without waiting for the exit.
    pub fn quit(&mut self) -> Res<()> {
        self.execute("quit")
    }

    /// Closes the monitor and reaps QEMU.
    pub fn reap(mut self) -> Res<()> {
        self.sock = None;
        let status = self.child.wait().map_err(|e| format!("waitpid: {e}"))?;
        if !status.success() {
            return Err(format!("QEMU exited with {status}"));
        }
        Ok(())
    }

    /// Graceful shutdown: `quit`, its reply, then reap.
    pub fn shutdown(mut self) -> Res<()> {
        self.quit()?;
        self.reap()
    }
}

impl Drop for RawVm {
    fn drop(&mut self) {
        // Only on error paths: a RawVm that was reaped has a status and this is a no-op.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
