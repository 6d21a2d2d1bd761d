//! [`Console::run`]: run one shell command on the console and get its output and exit status,
//! framed by markers only this call produces ([`frame`](super::frame) has the line typed and
//! what is removed from the output, and why).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::frame::{RunFrame, MAX_LINE};
use super::{CallerReads, Console};
use crate::error::{Error, Result};
use crate::wait::{Deadline, Wait};

/// A run's default wait: qm's one default bound ([`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT),
/// 30 s, as a guest agent call's).
pub const DEFAULT_RUN_WAIT: Duration = crate::wait::DEFAULT_TIMEOUT;

/// How long a run that ended early (timeout, cancel) may take to send Ctrl-C.
const INTERRUPT_SEND: Duration = Duration::from_millis(500);

/// What a command run in the guest printed and how it ended (over the console or the agent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOutput {
    /// What it wrote to stdout — over the console, stdout and stderr together (both are the
    /// terminal), exactly as written (see [`frame`](super::frame)).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr, where the channel keeps it apart (the agent); `None` over the
    /// console.
    pub stderr: Option<Vec<u8>>,
    /// Its exit status as a shell's `$?` has it: 0–255, 128 + N when signal N killed it.
    pub status: i32,
    /// Kernel messages that the console printed while it ran, cut out of `stdout` (console only).
    pub kernel_messages: Vec<String>,
}

impl RunOutput {
    /// True when the status is 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// `stdout` as UTF-8, invalid sequences replaced.
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A nonce no other run (in this process) produces: a random-keyed hash of a counter.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

impl Console {
    /// Runs `command` in the shell on the console (a POSIX shell at its prompt, e.g. busybox
    /// `sh`) and returns its output and exit status.
    ///
    /// qm types one line that frames the command with markers made of a fresh nonce; the output
    /// is what the command printed between them, whatever came before (earlier output, the
    /// prompt, the echo of the line) is consumed and dropped, and what comes after the status
    /// (the next prompt) stays unread for later waits. [`frame`](super::frame) documents the
    /// line and what is removed from the output (kernel messages) and why.
    ///
    /// `command` is one line (no CR or LF); framed, at most [`MAX_LINE`] bytes (about 870 for a
    /// command without `'`); it runs in the
    /// console's shell itself (`cd` and variables stay; `exit` would end that shell). It must
    /// not read the terminal (its stdin is the console).
    ///
    /// Errors: [`Error::Invalid`] for a bad command; [`Error::State`] while another wait runs
    /// on the console; [`Error::ConsoleClosed`] at once when the console ends (QEMU exited:
    /// the guest powered off, rebooted under `-no-reboot` or died) before the status came;
    /// [`Error::ConsoleTimeout`] when the wait runs out and [`Error::Interrupted`] when its
    /// token fires — then qm sends Ctrl-C (`0x03`) to interrupt the command, and the next run
    /// resynchronises by itself (its markers carry a new nonce, so anything the interrupted
    /// command still prints is skipped); a command that ignores SIGINT keeps the shell busy.
    /// Output over the console's cap between two reads (the cap is 1 MiB by default; qm reads
    /// as the bytes arrive) would be lost: then [`Error::Protocol`] says so. The wait's default
    /// is [`DEFAULT_RUN_WAIT`] (30 s).
    pub fn run(&self, command: &str, wait: impl Into<Wait>) -> Result<RunOutput> {
        let wait = wait.into().or_default(Some(DEFAULT_RUN_WAIT));
        if command.contains(['\n', '\r']) {
            return Err(Error::Invalid(
                "run: the command must be one line (no CR or LF)".into(),
            ));
        }
        let nonce = nonce();
        let mut line = RunFrame::line(&nonce, command).into_bytes();
        if line.len() > MAX_LINE {
            return Err(Error::Invalid(format!(
                "run: the command makes a line of {} bytes, over {MAX_LINE} (the shell's line \
                 editor would cut it): copy a script in and run that",
                line.len()
            )));
        }
        line.push(b'\n');
        let _busy = self.busy()?;
        let deadline = wait.start()?;
        {
            // Drops of output no wait read before this run are not this run's to report.
            let mut st = self.shared.lock();
            let read = st.history.read;
            st.history.consume(read);
        }
        let started = Instant::now();
        let mut frame = RunFrame::new(&nonce);
        self.send_deadline(&line, &deadline)?;
        match self.read_frame(&mut frame, &deadline) {
            Ok(true) => {}
            Ok(false) => {
                self.interrupt();
                return Err(self.run_timeout(command, &frame, started));
            }
            Err(e) => {
                if matches!(e, Error::Interrupted) {
                    self.interrupt();
                }
                return Err(e);
            }
        }
        let status = match frame.status() {
            Some(Ok(s)) => s,
            Some(Err(bad)) => {
                return Err(Error::Protocol(format!(
                    "run: the end marker was followed by {bad:?}, not an exit status"
                )))
            }
            None => unreachable!("read_frame returns true only when done"),
        };
        Ok(RunOutput {
            stdout: frame.take_output(),
            stderr: None,
            status,
            kernel_messages: frame.take_kernel_messages(),
        })
    }

    /// Ctrl-C, without waiting long for room (the console may be the thing that is stuck).
    fn interrupt(&self) {
        let _ = self.send_deadline(b"\x03", &Deadline::after(INTERRUPT_SEND));
    }

    fn run_timeout(&self, command: &str, frame: &RunFrame, started: Instant) -> Error {
        let out = frame.output();
        let tail = &out[out.len().saturating_sub(super::TAIL)..];
        Error::ConsoleTimeout {
            waiting_for: format!(
                "the end of `{command}` ({}; Ctrl-C sent)",
                if frame.started() {
                    "it started"
                } else {
                    "it never started: the shell did not run the line"
                }
            ),
            waited: started.elapsed(),
            tail: String::from_utf8_lossy(tail).into_owned(),
        }
    }

    /// Feeds the console's output to `frame` as it arrives, consuming exactly what the frame
    /// used. `Ok(true)` once the frame is done, `Ok(false)` when the deadline passed.
    fn read_frame(&self, frame: &mut RunFrame, deadline: &Deadline<'_>) -> Result<bool> {
        let shared = &*self.shared;
        let cancel_fd = deadline.cancel_fd()?;
        let mut buf = [0u8; 16 << 10];
        let _reads = CallerReads::start(shared);
        let mut st = shared.lock();
        let mut looked = false;
        loop {
            if deadline.cancelled() {
                return Err(Error::Interrupted);
            }
            let read = st.history.read;
            let used = frame.feed(st.history.unread());
            let (_, dropped) = st.history.consume(read + used as u64);
            if dropped > 0 {
                return Err(Error::Protocol(format!(
                    "run: {dropped} bytes of console output were dropped over the console's cap \
                     before qm could read them (raise set_console_buffer)"
                )));
            }
            if frame.is_done() {
                return Ok(true);
            }
            if st.closed {
                return Err(Error::ConsoleClosed {
                    waiting_for: format!(
                        "the end of a run ({}; the guest or QEMU ended)",
                        if frame.started() {
                            "the command had started"
                        } else {
                            "the command had not started"
                        }
                    ),
                    text: String::from_utf8_lossy(frame.output()).into_owned(),
                });
            }
            let left = deadline.remaining();
            if left == Some(Duration::ZERO) {
                if !looked {
                    looked = true;
                    shared.pump(&mut st, &mut buf, true);
                    continue;
                }
                return Ok(false);
            }
            st = shared.sleep_for_output(st, &mut buf, left, cancel_fd)?;
            looked = true;
        }
    }
}
