//! Boot the `qm::guest` boot-sector guest under qemu-system-x86_64 directly
//! (std::process::Command, not the qm launcher) to check that each
//! `GuestAction` behaves as documented on the real emulator.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use qm::guest::{debug_exit_status, qemu_args, write_image, GuestAction};

const QEMU: &str = "qemu-system-x86_64";
/// Generous: a boot takes ~0.1 s, but CI machines may be loaded.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("qm-guest-raw-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running QEMU whose COM1 is its stdio. The guest's serial output is
/// collected by a thread so QEMU never blocks on a full pipe; the process is
/// killed on drop so a failing test leaves nothing behind.
struct Qemu {
    child: Child,
    stdin: Option<ChildStdin>,
    serial: Receiver<Vec<u8>>,
    /// Everything read from the guest's serial port so far.
    seen: Vec<u8>,
    /// How much of `seen` `expect` has consumed.
    consumed: usize,
    stderr: Option<JoinHandle<String>>,
    started: Instant,
    _dir: TempDir,
}

impl Qemu {
    fn boot(name: &str, banner: &str, action: GuestAction) -> Qemu {
        let dir = TempDir::new(name);
        let image = dir.0.join("guest.img");
        write_image(&image, banner, action).expect("write image");
        let started = Instant::now();
        let mut child = Command::new(QEMU)
            .args(qemu_args(&image))
            .args(["-display", "none", "-serial", "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {QEMU}: {e}"));
        let mut stdout = child.stdout.take().unwrap();
        let (tx, serial) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Qemu {
            stdin: child.stdin.take(),
            child,
            serial,
            seen: Vec::new(),
            consumed: 0,
            stderr: Some(stderr),
            started,
            _dir: dir,
        }
    }

    /// Wait until the serial output (after what earlier calls consumed)
    /// contains `needle`, and consume up to its end.
    fn expect(&mut self, needle: &[u8]) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(pos) = self.seen[self.consumed..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                self.consumed += pos + needle.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.serial.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(e) => self.fail(&format!(
                    "waiting for {:?}: {e}",
                    String::from_utf8_lossy(needle)
                )),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).expect("write to guest serial");
        stdin.flush().unwrap();
    }

    /// Wait for QEMU to exit by itself; kill it and fail after `TIMEOUT`.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                self.fail("QEMU did not exit by itself");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Serial output received so far, including what arrives until EOF
    /// (call after QEMU has exited).
    fn drain(&mut self) -> &[u8] {
        while let Ok(chunk) = self.serial.recv_timeout(TIMEOUT) {
            self.seen.extend_from_slice(&chunk);
        }
        &self.seen
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }

    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let serial = String::from_utf8_lossy(&self.seen).into_owned();
        panic!(
            "{what}\nserial so far: {serial:?}\nstderr: {}",
            self.stderr()
        );
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn poweroff_exits_qemu_with_status_0() {
    let mut q = Qemu::boot("poweroff", "guest poweroff", GuestAction::Poweroff);
    let status = q.wait_exit();
    let elapsed = q.started.elapsed();
    let stderr = q.stderr();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    // SeaBIOS prints nothing on COM1, so the banner is the whole output.
    assert_eq!(q.drain(), b"guest poweroff\r\n");
    eprintln!("poweroff boot took {elapsed:?} (QEMU start to exit)");
}

#[test]
fn exit_reports_debug_exit_status() {
    let mut q = Qemu::boot("exit5", "guest exit 5", GuestAction::Exit(5));
    q.expect(b"guest exit 5\r\n");
    let status = q.wait_exit();
    assert_eq!(status.code(), Some(11));
    assert_eq!(debug_exit_status(5), 11);
}

#[test]
fn echo_returns_input_then_x_exits_with_3() {
    let mut q = Qemu::boot("echo", "guest echo", GuestAction::Echo);
    q.expect(b"guest echo\r\n");
    q.send(b"hello");
    q.expect(b"hello");
    q.send(b"x");
    let status = q.wait_exit();
    assert_eq!(status.code(), Some(3));
    // 'x' is a command, not echoed.
    assert_eq!(q.drain(), b"guest echo\r\nhello");
}

#[test]
fn echo_keeps_every_byte_of_a_burst() {
    let mut q = Qemu::boot("burst", "guest burst", GuestAction::Echo);
    q.expect(b"guest burst\r\n");
    // Far more than the 16-byte UART FIFO, written in one go; every byte
    // value except the two command bytes.
    let burst: Vec<u8> = (0..16 * 1024)
        .map(|i| (i % 256) as u8)
        .filter(|b| !matches!(b, b'p' | b'x'))
        .collect();
    q.send(&burst);
    q.expect(&burst);
    q.send(b"p");
    let status = q.wait_exit();
    assert_eq!(status.code(), Some(0), "'p' powers off");
    let echoed = &q.drain()[b"guest burst\r\n".len()..];
    assert_eq!(echoed.len(), burst.len(), "nothing extra, nothing lost");
}

#[test]
fn echo_keeps_input_sent_before_the_guest_runs() {
    let mut q = Qemu::boot("early", "guest early", GuestAction::Echo);
    // Written at once, long before SeaBIOS hands over to the guest.
    q.send(b"early");
    q.expect(b"guest early\r\nearly");
    q.send(b"x");
    assert_eq!(q.wait_exit().code(), Some(3));
}

#[test]
fn halt_keeps_running() {
    let mut q = Qemu::boot("halt", "guest halt", GuestAction::Halt);
    q.expect(b"guest halt\r\n");
    thread::sleep(Duration::from_secs(1));
    assert!(
        q.child.try_wait().unwrap().is_none(),
        "halted guest must not stop QEMU"
    );
    q.child.kill().unwrap();
    q.child.wait().unwrap();
}

#[test]
fn image_is_one_sector() {
    let dir = TempDir::new("image");
    let path: &Path = &dir.0.join("guest.img");
    write_image(path, "x", GuestAction::Halt).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), 512);
}
