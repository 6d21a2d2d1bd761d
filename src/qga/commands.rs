//! The agent commands harnesses use most, on top of [`GuestAgent::cmd`].

use std::time::Duration;

use serde_json::{json, Value};

use super::base64;
use super::GuestAgent;
use crate::error::{Error, Result};
use crate::log::debug;
use crate::sys::{poll, pollfd, POLLIN};
use crate::wait::{Deadline, Wait};

/// Default interval between two `guest-exec-status` polls of [`GuestAgent::exec`].
pub const DEFAULT_EXEC_INTERVAL: Duration = Duration::from_millis(10);

/// Default cap on each captured stream of [`GuestAgent::exec`]: 16 MiB, what `qemu-ga` itself
/// keeps at most.
pub const DEFAULT_MAX_OUTPUT: usize = 16 << 20;

/// Bytes per `guest-file-read` / `guest-file-write` round trip.
pub const FILE_CHUNK: usize = 1 << 20;

/// A program to run in the guest with [`GuestAgent::exec`] (`guest-exec`).
#[derive(Clone, Debug)]
pub struct Exec {
    path: String,
    args: Vec<String>,
    env: Vec<String>,
    input: Option<Vec<u8>>,
    capture: bool,
    max_output: usize,
    interval: Duration,
}

impl Exec {
    /// Runs `path` (an absolute path in the guest, or a name the agent looks up in its `PATH`)
    /// with no arguments, capturing stdout and stderr up to [`DEFAULT_MAX_OUTPUT`] each, polling
    /// every [`DEFAULT_EXEC_INTERVAL`].
    pub fn new(path: impl Into<String>) -> Exec {
        Exec {
            path: path.into(),
            args: Vec::new(),
            env: Vec::new(),
            input: None,
            capture: true,
            max_output: DEFAULT_MAX_OUTPUT,
            interval: DEFAULT_EXEC_INTERVAL,
        }
    }

    /// Appends arguments (`argv[1..]`).
    pub fn args<I, S>(mut self, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends `NAME=VALUE` environment entries (the agent's environment otherwise).
    pub fn env<I, S>(mut self, env: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env.extend(env.into_iter().map(Into::into));
        self
    }

    /// Bytes for the program's stdin (then closed).
    pub fn input(mut self, input: impl Into<Vec<u8>>) -> Exec {
        self.input = Some(input.into());
        self
    }

    /// Captures stdout and stderr (default), or lets them go to the agent's.
    pub fn capture(mut self, capture: bool) -> Exec {
        self.capture = capture;
        self
    }

    /// Keeps at most `bytes` of each stream; more is dropped and reported as truncated.
    pub fn max_output(mut self, bytes: usize) -> Exec {
        self.max_output = bytes;
        self
    }

    /// How long to sleep between two `guest-exec-status` polls (at least 1 ms).
    pub fn interval(mut self, interval: Duration) -> Exec {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }
}

/// How a program run by [`GuestAgent::exec`] ended, and what it wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its pid in the guest.
    pub pid: i64,
    /// Its exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Its stdout (at most the cap).
    pub stdout: Vec<u8>,
    /// Its stderr (at most the cap).
    pub stderr: Vec<u8>,
    /// Stdout was longer than the cap (qm's, or the agent's own 16 MiB).
    pub stdout_truncated: bool,
    /// Stderr was longer than the cap.
    pub stderr_truncated: bool,
}

/// What [`GuestAgent::shutdown`] asks of the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Power the machine off (the agent's default).
    #[default]
    Powerdown,
    /// Halt without powering off.
    Halt,
    /// Reboot.
    Reboot,
}

impl ShutdownMode {
    /// The agent's name for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Powerdown => "powerdown",
            ShutdownMode::Halt => "halt",
            ShutdownMode::Reboot => "reboot",
        }
    }
}

impl std::str::FromStr for ShutdownMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<ShutdownMode> {
        match s {
            "powerdown" => Ok(ShutdownMode::Powerdown),
            "halt" => Ok(ShutdownMode::Halt),
            "reboot" => Ok(ShutdownMode::Reboot),
            other => Err(Error::Invalid(format!(
                "shutdown mode {other:?} is not powerdown, halt or reboot"
            ))),
        }
    }
}

fn field<'a>(v: &'a Value, name: &str, cmd: &str) -> Result<&'a Value> {
    v.get(name).ok_or_else(|| {
        Error::Protocol(format!(
            "the agent's reply to {cmd} has no {name:?}: {}",
            crate::qmp::preview(&v.to_string())
        ))
    })
}

fn int(v: &Value, name: &str, cmd: &str) -> Result<i64> {
    field(v, name, cmd)?.as_i64().ok_or_else(|| {
        Error::Protocol(format!(
            "the agent's {name:?} in its reply to {cmd} is not an integer"
        ))
    })
}

/// Sleeps `d`, or less if the deadline comes first; a fired token ends it at once.
fn nap(d: Duration, deadline: &Deadline<'_>) -> Result<()> {
    let d = deadline.remaining().map_or(d, |left| left.min(d));
    let mut fds = Vec::new();
    if let Some(fd) = deadline.cancel_fd()? {
        fds.push(pollfd(fd, POLLIN));
    }
    poll(&mut fds, Some(d)).map_err(|e| Error::io("waiting between two polls", e))?;
    if deadline.cancelled() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

impl GuestAgent {
    /// `guest-ping`: succeeds when the agent answers.
    pub fn ping(&self, wait: impl Into<Wait>) -> Result<()> {
        self.cmd("guest-ping", None, wait).map(drop)
    }

    /// `guest-get-osinfo`: the guest's OS (`id`, `kernel-release`, `machine` …) as the agent
    /// reports it.
    pub fn get_osinfo(&self, wait: impl Into<Wait>) -> Result<Value> {
        self.cmd("guest-get-osinfo", None, wait)
    }

    /// `guest-get-time`: the guest's clock, in nanoseconds since the Unix epoch.
    pub fn get_time(&self, wait: impl Into<Wait>) -> Result<i64> {
        let v = self.cmd("guest-get-time", None, wait)?;
        v.as_i64()
            .ok_or_else(|| Error::Protocol(format!("guest-get-time returned {v}, not an integer")))
    }

    /// Runs a program in the guest (`guest-exec`) and polls `guest-exec-status` every
    /// interval until it ends; returns its exit code or signal and its output, decoded and
    /// capped. The wait bounds the whole run; when it ends first (timeout or cancel) the
    /// program keeps running in the guest (the agent cannot kill it) and the error names its
    /// pid. Other callers' commands run between two polls.
    pub fn exec(&self, req: &Exec, wait: impl Into<Wait>) -> Result<ExecOutput> {
        let wait = super::agent_wait(wait);
        let deadline = wait.start()?;
        let mut args = json!({
            "path": req.path,
            "arg": req.args,
            "capture-output": req.capture,
        });
        if !req.env.is_empty() {
            args["env"] = json!(req.env);
        }
        if let Some(input) = &req.input {
            args["input-data"] = json!(base64::encode(input));
        }
        let started = self.cmd("guest-exec", Some(&args), deadline.to_wait())?;
        let pid = int(&started, "pid", "guest-exec")?;
        let status_args = json!({ "pid": pid });
        loop {
            let status = self
                .cmd("guest-exec-status", Some(&status_args), deadline.to_wait())
                .map_err(|e| still_running(e, pid, &deadline))?;
            if status["exited"].as_bool() == Some(true) {
                let (stdout, out_cut) = decode(&status, "out-data", req.max_output)?;
                let (stderr, err_cut) = decode(&status, "err-data", req.max_output)?;
                return Ok(ExecOutput {
                    pid,
                    exit_code: status["exitcode"].as_i64().map(|c| c as i32),
                    signal: status["signal"].as_i64().map(|s| s as i32),
                    stdout,
                    stderr,
                    stdout_truncated: out_cut || status["out-truncated"].as_bool() == Some(true),
                    stderr_truncated: err_cut || status["err-truncated"].as_bool() == Some(true),
                });
            }
            nap(req.interval, &deadline).map_err(|e| still_running(e, pid, &deadline))?;
            if deadline.remaining() == Some(Duration::ZERO) {
                return Err(still_running(Error::Timeout(String::new()), pid, &deadline));
            }
        }
    }

    /// Reads a whole file of the guest (`guest-file-open/read/close`, [`FILE_CHUNK`] bytes per
    /// round trip). Fails with [`Error::Invalid`] if the file holds more than `max_bytes`.
    pub fn file_read(
        &self,
        path: &str,
        max_bytes: usize,
        wait: impl Into<Wait>,
    ) -> Result<Vec<u8>> {
        let wait = super::agent_wait(wait);
        let deadline = wait.start()?;
        let handle = self.open(path, "r", &deadline)?;
        let result = (|| {
            let mut data = Vec::new();
            loop {
                // One byte more than the cap tells "exactly the cap" from "too long".
                let want = FILE_CHUNK.min(max_bytes.saturating_add(1) - data.len());
                let chunk = self.cmd(
                    "guest-file-read",
                    Some(&json!({ "handle": handle, "count": want })),
                    deadline.to_wait(),
                )?;
                let b64 = field(&chunk, "buf-b64", "guest-file-read")?
                    .as_str()
                    .unwrap_or_default();
                let (bytes, _) = base64::decode_capped(b64, want)
                    .map_err(|e| Error::Protocol(format!("guest-file-read: {e}")))?;
                data.extend_from_slice(&bytes);
                if data.len() > max_bytes {
                    return Err(Error::Invalid(format!(
                        "guest file {path} is larger than the cap of {max_bytes} bytes"
                    )));
                }
                if chunk["eof"].as_bool() == Some(true) || bytes.is_empty() {
                    return Ok(data);
                }
            }
        })();
        self.close_file(handle, &result, &deadline)?;
        result
    }

    /// Writes `data` to a file of the guest, creating or truncating it
    /// (`guest-file-open` mode `w`, then [`FILE_CHUNK`] bytes per `guest-file-write`).
    pub fn file_write(&self, path: &str, data: &[u8], wait: impl Into<Wait>) -> Result<()> {
        let wait = super::agent_wait(wait);
        let deadline = wait.start()?;
        let handle = self.open(path, "w", &deadline)?;
        let result = (|| {
            let mut rest = data;
            while !rest.is_empty() {
                let n = rest.len().min(FILE_CHUNK);
                let reply = self.cmd(
                    "guest-file-write",
                    Some(&json!({ "handle": handle, "buf-b64": base64::encode(&rest[..n]) })),
                    deadline.to_wait(),
                )?;
                let written = int(&reply, "count", "guest-file-write")?;
                if written <= 0 || written as usize > n {
                    return Err(Error::Protocol(format!(
                        "guest-file-write wrote {written} of {n} bytes to {path}"
                    )));
                }
                rest = &rest[written as usize..];
            }
            Ok(())
        })();
        self.close_file(handle, &result, &deadline)?;
        result
    }

    fn open(&self, path: &str, mode: &str, deadline: &Deadline<'_>) -> Result<i64> {
        let handle = self.cmd(
            "guest-file-open",
            Some(&json!({ "path": path, "mode": mode })),
            deadline.to_wait(),
        )?;
        handle.as_i64().ok_or_else(|| {
            Error::Protocol(format!("guest-file-open returned {handle}, not a handle"))
        })
    }

    /// Closes a guest file handle. After a failed transfer it is closed only when the channel
    /// still works (an agent error): after a timeout or cancel the caller wants out now, and
    /// the handle stays open in the agent until it restarts.
    fn close_file<T>(
        &self,
        handle: i64,
        result: &Result<T>,
        deadline: &Deadline<'_>,
    ) -> Result<()> {
        let closed = match result {
            Ok(_) | Err(Error::Qmp { .. }) | Err(Error::Invalid(_)) => self
                .cmd(
                    "guest-file-close",
                    Some(&json!({ "handle": handle })),
                    deadline.to_wait(),
                )
                .map(drop),
            Err(_) => {
                debug!("guest file handle {handle} left open in the agent after a failure");
                Ok(())
            }
        };
        match (result, closed) {
            // Closing may flush; its failure matters only when all else worked.
            (Ok(_), Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

fn still_running(err: Error, pid: i64, deadline: &Deadline<'_>) -> Error {
    match err {
        Error::Timeout(_) => Error::Timeout(format!(
            "guest process {pid} did not exit {} (it is still running in the guest)",
            deadline.within()
        )),
        other => other,
    }
}

fn decode(status: &Value, name: &str, cap: usize) -> Result<(Vec<u8>, bool)> {
    match status.get(name).and_then(Value::as_str) {
        None => Ok((Vec::new(), false)),
        Some(text) => base64::decode_capped(text, cap)
            .map_err(|e| Error::Protocol(format!("guest-exec-status {name}: {e}"))),
    }
}
