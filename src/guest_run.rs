//! One shape for guest tests over either channel: [`Guest`] runs a shell command and returns
//! its output and exit status ([`RunOutput`]), copies files in and out, and waits until the
//! guest is ready — over the console (a shell on the serial port, [`Console::run`]) or the
//! guest agent (`guest-exec` and the agent's file calls), chosen by [`Channel`].
//!
//! | | console | agent |
//! |---|---|---|
//! | `run` | the console's shell runs it ([`Console::run`]); stdout and stderr merged; kernel messages cut out | `/bin/sh -c CMD` through `guest-exec`; stderr apart |
//! | exit status | `$?` (128 + N after signal N) | the exit code, or 128 + N after signal N |
//! | `write_file` | `printf` with octal escapes, as many bytes as fit one line (~200–800; slow: for small files) | `guest-file-write`, 1 MiB per round trip |
//! | `read_file` | `cat` through `run` (the bytes verbatim; a file holding a kernel-record-like line ending in CR LF loses it) | `guest-file-read` |
//! | `wait_ready` | a no-op command (`:`) answered, retried with Ctrl-C until the shell runs it | `guest-sync` answered |
//! | state | the shell's: `cd` and variables stay between runs | each run is a fresh `sh` |
//!
//! Each call takes a [`Wait`]; its default is [`DEFAULT_RUN_WAIT`] (30 s, as an agent call's).

use std::time::Duration;

use crate::console::frame::{RunFrame, MAX_LINE};
use crate::console::{Console, RunOutput, DEFAULT_RUN_WAIT};
use crate::error::{Error, Result};
use crate::qga::Exec;
use crate::wait::Wait;
use crate::Machine;

/// A nonce's shape (16 hex digits), to measure a framed line before sending it.
const NONCE_SHAPE: &str = "0000000000000000";

/// The first wait of one readiness probe over the console; doubled per retry, up to
/// [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(1000);
const PROBE_MAX: Duration = Duration::from_secs(8);

/// How a [`Guest`] talks to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// The console (`Machine::set_console`): a shell at its prompt on the serial port.
    Console,
    /// The guest agent (`Machine::set_guest_agent`): `qemu-ga` in the guest.
    Agent,
}

/// A guest seen through one channel; see the [module](self) docs. Cheap: make one per call
/// site if you like ([`Machine::guest`]).
#[derive(Clone, Copy)]
pub struct Guest<'a> {
    machine: &'a Machine,
    channel: Channel,
}

impl Machine {
    /// This machine's guest over `channel` ([`Guest`]).
    pub fn guest(&self, channel: Channel) -> Guest<'_> {
        Guest {
            machine: self,
            channel,
        }
    }

    /// Runs `command` in the shell on the console and returns its output and exit status
    /// ([`Console::run`]: the framing, what is removed, the errors).
    pub fn console_run(&self, command: &str, wait: impl Into<Wait>) -> Result<RunOutput> {
        self.console_handle()?.run(command, wait)
    }
}

/// Single-quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Guest<'_> {
    /// The channel.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    fn console(&self) -> Result<std::sync::Arc<Console>> {
        self.machine.console_handle()
    }

    /// Runs a shell command; see the [module](self) docs for what each channel gives.
    pub fn run(&self, command: &str, wait: impl Into<Wait>) -> Result<RunOutput> {
        let wait = wait.into().or_default(Some(DEFAULT_RUN_WAIT));
        match self.channel {
            Channel::Console => self.console()?.run(command, wait),
            Channel::Agent => {
                let req = Exec::new("/bin/sh").args(["-c", command]).capture(true);
                let out = self.machine.agent()?.exec(&req, wait)?;
                let status = match (out.exit_code, out.signal) {
                    (_, Some(sig)) => 128 + sig,
                    (Some(code), None) => code,
                    (None, None) => {
                        return Err(Error::Protocol(
                            "guest-exec-status reported neither an exit code nor a signal".into(),
                        ))
                    }
                };
                if out.stdout_truncated || out.stderr_truncated {
                    return Err(Error::Invalid(format!(
                        "run: the output of `{command}` was over the agent's cap (16 MiB)"
                    )));
                }
                Ok(RunOutput {
                    stdout: out.stdout,
                    stderr: Some(out.stderr),
                    status,
                    kernel_messages: Vec::new(),
                })
            }
        }
    }

    /// Waits until the channel answers: over the console, until the shell runs a no-op
    /// command (each probe that gets no answer is interrupted with Ctrl-C and sent again, with
    /// a longer wait each time); over the agent, until `guest-sync` is answered.
    pub fn wait_ready(&self, wait: impl Into<Wait>) -> Result<()> {
        let wait = wait.into().or_default(Some(DEFAULT_RUN_WAIT));
        match self.channel {
            Channel::Agent => self.machine.agent()?.sync(wait),
            Channel::Console => {
                let console = self.console()?;
                let deadline = wait.start()?;
                let mut probe = PROBE_FIRST;
                loop {
                    let left = deadline.remaining();
                    let step = left.map_or(probe, |l| l.min(probe));
                    let mut nested = Wait::timeout(step);
                    if let Some(c) = deadline.cancel {
                        nested = nested.cancel(c);
                    }
                    match console.run(":", nested) {
                        Ok(_) => return Ok(()),
                        Err(Error::ConsoleTimeout { .. })
                            if deadline.remaining() != Some(Duration::ZERO) =>
                        {
                            probe = (probe * 2).min(PROBE_MAX);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Writes `data` to the file `path` in the guest, creating or truncating it.
    pub fn write_file(&self, path: &str, data: &[u8], wait: impl Into<Wait>) -> Result<()> {
        let wait = wait.into().or_default(Some(DEFAULT_RUN_WAIT));
        match self.channel {
            Channel::Agent => self.machine.agent()?.file_write(path, data, wait),
            Channel::Console => {
                let deadline = wait.start()?;
                let console = self.console()?;
                let target = quote(path);
                let mut redirect = ">";
                let mut rest = data;
                loop {
                    // As many bytes as fit the line: each is itself or `\ooo`.
                    let empty = format!("printf '' {redirect} {target}");
                    let base = RunFrame::line(NONCE_SHAPE, &empty).len();
                    let mut fmt = String::new();
                    let mut used = 0;
                    for &b in rest {
                        let piece = if b.is_ascii_alphanumeric() || b" ._-/,:=+".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("\\{b:03o}")
                        };
                        if base + fmt.len() + piece.len() > MAX_LINE {
                            break;
                        }
                        fmt.push_str(&piece);
                        used += 1;
                    }
                    if used == 0 && !rest.is_empty() {
                        return Err(Error::Invalid(format!(
                            "write_file over the console: the path {path:?} is too long"
                        )));
                    }
                    let cmd = format!("printf '{fmt}' {redirect} {target}");
                    self.checked(console.run(&cmd, deadline.to_wait()))?;
                    rest = &rest[used..];
                    redirect = ">>";
                    if rest.is_empty() {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Reads the file `path` of the guest (at most `max_bytes`).
    pub fn read_file(
        &self,
        path: &str,
        max_bytes: usize,
        wait: impl Into<Wait>,
    ) -> Result<Vec<u8>> {
        let wait = wait.into().or_default(Some(DEFAULT_RUN_WAIT));
        match self.channel {
            Channel::Agent => self.machine.agent()?.file_read(path, max_bytes, wait),
            Channel::Console => {
                let out = self.checked(
                    self.console()?
                        .run(&format!("cat -- {}", quote(path)), wait),
                )?;
                if out.stdout.len() > max_bytes {
                    return Err(Error::Invalid(format!(
                        "{path} holds {} bytes, over the {max_bytes} asked for",
                        out.stdout.len()
                    )));
                }
                Ok(out.stdout)
            }
        }
    }

    /// A console run that must succeed: a nonzero status is `Error::Invalid` with its output.
    fn checked(&self, run: Result<RunOutput>) -> Result<RunOutput> {
        let out = run?;
        if out.status != 0 {
            return Err(Error::Invalid(format!(
                "the guest's shell failed (status {}): {}",
                out.status,
                out.stdout_lossy().trim_end()
            )));
        }
        Ok(out)
    }
}
