//! The guest agent metrics: `qga_rtt` (one `guest-ping` round trip, µs) and `qga_exec`
//! (`guest-exec` of `true` until its exit status is known, polling `guest-exec-status` every
//! 2 ms, ms), on `qemu-ga` in the Linux test guest.
//!
//! Both sides use the same channel: one Linux guest whose agent port is a unix socket QEMU
//! listens on; the bench connects once, and qm's `GuestAgent` and the raw client below take
//! turns on that one connection (the raw client on a duplicate of the descriptor). Neither side
//! leaves anything unread, so each finds the channel as the other left it.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use qm::linux_guest::LinuxGuest;
use qm::{Exec, GuestAgent, Machine};
use serde_json::Value;

use super::{e, ms, order, us, Out, Params, Res, Side, WAIT};

/// Both sides poll guest-exec-status every 2 ms: with qm's default of 10 ms the times come in
/// 10 ms steps (how many polls it took), which swamps any difference in the client's cost.
pub(crate) const EXEC_INTERVAL: Duration = Duration::from_millis(2);

/// The Linux test guest: `QM_LINUX_KERNEL` + `QM_LINUX_INITRD`, or `guest/linux/build
/// --print-paths` (bench/run runs from the repository root).
pub(crate) fn linux_guest() -> Res<LinuxGuest> {
    let (kernel, initrd) = match (
        std::env::var("QM_LINUX_KERNEL"),
        std::env::var("QM_LINUX_INITRD"),
    ) {
        (Ok(k), Ok(i)) => (k, i),
        _ => {
            let out = Command::new("guest/linux/build")
                .arg("--print-paths")
                .output()
                .map_err(|err| {
                    format!(
                        "no Linux guest (set QM_LINUX_KERNEL and QM_LINUX_INITRD, or run from a \
                         checkout with guest/linux/build): {err}"
                    )
                })?;
            let line = String::from_utf8_lossy(&out.stdout);
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name).map(str::to_owned))
                    .ok_or_else(|| {
                        format!("guest/linux/build --print-paths: no {name} in {line:?}")
                    })
            };
            (field("KERNEL=")?, field("INITRD=")?)
        }
    };
    Ok(LinuxGuest::new(kernel, initrd))
}

/// The Linux guest's QEMU arguments, from the core's one list (`LinuxGuest::qemu_args`).
fn guest_args() -> Res<Vec<String>> {
    Ok(linux_guest()?.qemu_args())
}

/// A minimal agent client: writes a command, waits (poll) and reads until the reply line with
/// its id. The descriptor is non-blocking (qm's client shares it), hence the poll.
pub(crate) struct RawAgent {
    sock: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl RawAgent {
    fn wait_readable(&self) -> Res<()> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 60_000) };
        if n <= 0 {
            return Err(format!("raw agent: poll returned {n}"));
        }
        Ok(())
    }

    /// Reads until a complete line is buffered and returns it (after `sentinel`: skips to 0xFF
    /// first).
    fn line(&mut self, sentinel: bool) -> Res<Vec<u8>> {
        let mut chunk = [0u8; 65536];
        loop {
            if sentinel {
                if let Some(i) = self.buf.iter().position(|&b| b == 0xFF) {
                    self.buf.drain(..=i);
                    return self.line(false);
                }
                self.buf.clear();
            } else if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..=i);
                return Ok(line);
            }
            self.wait_readable()?;
            match (&self.sock).read(&mut chunk) {
                Ok(0) => return Err("raw agent: end of stream".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(format!("raw agent: read: {err}")),
            }
        }
    }

    fn sync(&mut self) -> Res<()> {
        self.next_id += 1;
        let id = self.next_id;
        // 0xFF first (a raw byte): resets the agent's parser.
        let mut bytes = vec![0xFF];
        bytes.extend_from_slice(
            format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}")
                .as_bytes(),
        );
        self.write(&bytes)?;
        loop {
            let v: Value = serde_json::from_slice(&self.line(true)?).unwrap_or_default();
            if v["return"].as_u64() == Some(id) {
                return Ok(());
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Res<()> {
        self.sock
            .write_all(bytes)
            .map_err(|err| format!("raw agent: write: {err}"))
    }

    /// Runs a command and returns its `return` value.
    pub(crate) fn cmd(&mut self, cmd: &str, args: &str) -> Res<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let line = if args.is_empty() {
            format!("{{\"execute\":\"{cmd}\",\"id\":{id}}}")
        } else {
            format!("{{\"execute\":\"{cmd}\",\"arguments\":{args},\"id\":{id}}}")
        };
        self.write(line.as_bytes())?;
        loop {
            let mut v: Value = serde_json::from_slice(&self.line(false)?)
                .map_err(|err| format!("raw agent: bad reply: {err}"))?;
            if v["id"].as_u64() == Some(id) {
                return match v.get_mut("return") {
                    Some(ret) => Ok(ret.take()),
                    None => Err(format!("raw agent: {cmd}: {v}")),
                };
            }
        }
    }

    fn ping(&mut self) -> Res<()> {
        self.cmd("guest-ping", "").map(drop)
    }

    /// `guest-exec` of `true` (as qm's `Exec::new("true")` sends it), then
    /// `guest-exec-status` every interval until it exited.
    fn exec_true(&mut self) -> Res<i64> {
        let started = self.cmd(
            "guest-exec",
            r#"{"path":"true","arg":[],"capture-output":true}"#,
        )?;
        let pid = started["pid"]
            .as_i64()
            .ok_or_else(|| format!("raw agent: guest-exec returned {started}"))?;
        let args = format!("{{\"pid\":{pid}}}");
        loop {
            let status = self.cmd("guest-exec-status", &args)?;
            if status["exited"] == true {
                return status["exitcode"]
                    .as_i64()
                    .ok_or_else(|| format!("raw agent: no exit code in {status}"));
            }
            std::thread::sleep(EXEC_INTERVAL);
        }
    }
}

/// The guest, the connection both sides share, qm's client and the raw one.
pub(crate) fn setup(p: &Params) -> Res<(Machine, GuestAgent, RawAgent)> {
    let vm = Machine::new(p.qemu());
    let dir = vm.temp_dir().map_err(e)?;
    let path = dir.join("qga.sock");
    vm.add_args(guest_args()?);
    vm.add_args([
        "-chardev".to_owned(),
        format!(
            "socket,id=bench-qga,path={},server=on,wait=off",
            path.display()
        ),
        "-device".to_owned(),
        "virtio-serial-pci".to_owned(),
        "-device".to_owned(),
        "virtserialport,chardev=bench-qga,name=org.qemu.guest_agent.0".to_owned(),
    ]);
    vm.launch().map_err(e)?;
    let sock = UnixStream::connect(&path).map_err(|err| format!("connecting {path:?}: {err}"))?;
    let theirs = sock.try_clone().map_err(|err| format!("dup: {err}"))?;
    let agent = GuestAgent::new(sock, "bench", qm::qga::DEFAULT_MAX_REPLY).map_err(e)?;
    // Boot: qm's sync waits for the agent, then the raw client syncs on its own.
    agent.sync(Duration::from_secs(300)).map_err(e)?;
    let mut raw = RawAgent {
        sock: theirs,
        buf: Vec::new(),
        next_id: 0,
    };
    raw.sync()?;
    Ok((vm, agent, raw))
}

pub(crate) fn qga_rtt(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 10), p.get("reps", 200));
    let (vm, agent, mut raw) = setup(p)?;
    for _ in 0..50 {
        raw.ping()?;
        agent.ping(WAIT).map_err(e)?;
    }
    for block in 0..blocks {
        out.pair();
        for side in order(block) {
            for _ in 0..reps {
                let t = Instant::now();
                match side {
                    Side::Raw => raw.ping()?,
                    Side::Qm => agent.ping(WAIT).map_err(e)?,
                }
                out.push(side, us(t.elapsed()));
            }
        }
    }
    drop(agent);
    vm.shutdown(WAIT).map_err(e)
}

pub(crate) fn qga_exec(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 10), p.get("reps", 10));
    let (vm, agent, mut raw) = setup(p)?;
    let req = Exec::new("true").interval(EXEC_INTERVAL);
    for _ in 0..3 {
        raw.exec_true()?;
        agent.exec(&req, WAIT).map_err(e)?;
    }
    for block in 0..blocks {
        out.pair();
        for side in order(block) {
            for _ in 0..reps {
                let t = Instant::now();
                let code = match side {
                    Side::Raw => raw.exec_true()?,
                    Side::Qm => i64::from(
                        agent
                            .exec(&req, WAIT)
                            .map_err(e)?
                            .exit_code
                            .ok_or("qm: true did not exit")?,
                    ),
                };
                out.push(side, ms(t.elapsed()));
                if code != 0 {
                    return Err(format!("true exited with {code}"));
                }
            }
        }
    }
    drop(agent);
    vm.shutdown(WAIT).map_err(e)
}
