//! `console_latency`: the 512-byte echo guest writes a marker back → the match is in the
//! caller's hands. qm: `console_send` of the marker, then `console_wait` for it (through qm's
//! reader thread, history and pattern search). The baseline: a QEMU spawned by hand with the
//! same guest and a console socketpair, on which the caller writes the marker and runs a plain
//! blocking `read` loop until it sees it. One sample: from the write to the match.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use qm::console::Patterns;
use qm::guest::{qemu_args, write_image, GuestAction};
use qm::Machine;

use crate::raw::Res;
use crate::{e, order, us, Out, Params, Side, WAIT};

const BANNER: &str = "console bench";
/// Markers the echo guest echoes (not its command bytes `p` and `x`).
const MARKERS: &[u8] = b"abcdefghijklmnoqrstuvwyz";

/// QEMU with the echo guest and a raw console socket; killed on drop.
struct RawConsole {
    child: Child,
    sock: UnixStream,
    seen: Vec<u8>,
}

impl RawConsole {
    fn spawn(qemu: &str, image: &Path) -> Res<RawConsole> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let theirs = OwnedFd::from(theirs);
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(qemu);
        cmd.args(["-display", "none", "-vga", "none"])
            .args(qemu_args(image))
            .arg("-chardev")
            .arg(format!("socket,id=console,fd={fd}"))
            .args(["-serial", "chardev:console"])
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
        let mut raw = RawConsole {
            child,
            sock: ours,
            seen: Vec::new(),
        };
        raw.until(format!("{BANNER}\r\n").as_bytes())?;
        Ok(raw)
    }

    /// The raw read loop: blocking reads until `marker` was read.
    fn until(&mut self, marker: &[u8]) -> Res<()> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = self.seen.windows(marker.len()).position(|w| w == marker) {
                self.seen.drain(..i + marker.len());
                return Ok(());
            }
            let n = self
                .sock
                .read(&mut buf)
                .map_err(|e| format!("reading the console: {e}"))?;
            if n == 0 {
                return Err("the console closed".into());
            }
            self.seen.extend_from_slice(&buf[..n]);
        }
    }

    fn roundtrip(&mut self, marker: u8) -> Res<()> {
        self.sock
            .write_all(&[marker])
            .map_err(|e| format!("writing the console: {e}"))?;
        self.until(&[marker])
    }
}

impl Drop for RawConsole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qm_console(qemu: &str, image: &Path) -> Res<Machine> {
    let vm = Machine::new(qemu);
    vm.add_args(qemu_args(image));
    vm.set_console(None, 0);
    vm.launch().map_err(e)?;
    vm.console_wait(&format!("{BANNER}\r\n").as_str().into(), WAIT)
        .map_err(e)?;
    Ok(vm)
}

fn qm_roundtrip(vm: &Machine, marker: u8, patterns: &Patterns) -> Res<()> {
    vm.console_send(&[marker], WAIT).map_err(e)?;
    let m = vm.console_wait(patterns, WAIT).map_err(e)?;
    if m.matched() != [marker] {
        return Err(format!("matched {:?}", m.text_lossy()));
    }
    Ok(())
}

pub fn console_latency(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 2), p.get("reps", 200));
    let dir = std::env::temp_dir().join(format!("qm-bench-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // One image per side: QEMU locks its disk image for writing.
    let (raw_image, qm_image) = (dir.join("raw.img"), dir.join("qm.img"));
    for image in [&raw_image, &qm_image] {
        write_image(image, BANNER, GuestAction::Echo).map_err(|e| format!("image: {e}"))?;
    }
    let patterns: Vec<Patterns> = MARKERS
        .iter()
        .map(|&b| Patterns::new().success(qm::console::Pattern::literal([b])))
        .collect();
    let result = (|| {
        for seg in 0..p.get("segments", 20) {
            out.pair();
            let (mut raw, vm) = if seg.is_multiple_of(2) {
                let raw = RawConsole::spawn(&p.qemu(), &raw_image)?;
                (raw, qm_console(&p.qemu(), &qm_image)?)
            } else {
                let vm = qm_console(&p.qemu(), &qm_image)?;
                (RawConsole::spawn(&p.qemu(), &raw_image)?, vm)
            };
            for i in 0..50 {
                let k = i % MARKERS.len();
                raw.roundtrip(MARKERS[k])?;
                qm_roundtrip(&vm, MARKERS[k], &patterns[k])?;
            }
            for block in 0..blocks {
                for side in order(block) {
                    for i in 0..reps {
                        let k = i % MARKERS.len();
                        let t = Instant::now();
                        match side {
                            Side::Raw => raw.roundtrip(MARKERS[k])?,
                            Side::Qm => qm_roundtrip(&vm, MARKERS[k], &patterns[k])?,
                        }
                        out.push(side, us(t.elapsed()));
                    }
                }
            }
            drop(raw);
            vm.kill().map_err(e)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
