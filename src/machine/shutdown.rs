//! How a run ends: the shutdown ladder (`quit`, then SIGTERM without QMP, then SIGKILL), the
//! wait for QEMU to exit by itself, and the cleanup every path ends in.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::process::Process;
use super::{lock, Life, Machine, ProcState};
use crate::error::{Error, Result};
use crate::log::{debug, warning};
use crate::qmp::QmpClient;
use crate::wait::{Deadline, Wait};

/// How long [`Machine::kill`] waits for a SIGKILLed QEMU to disappear, as the seed does.
const HARD_KILL_WAIT: Duration = Duration::from_secs(60);

/// How long qm waits for a QEMU that closed its monitor to exit by itself before killing it.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The graceful-shutdown timeout used when a running machine is dropped, as the seed's default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = crate::wait::DEFAULT_TIMEOUT;

impl Machine {
    /// Shuts QEMU down gracefully: `quit` over QMP (SIGTERM without QMP), then waits up to the
    /// wait's timeout for the exit. If that fails, kills QEMU and returns
    /// [`Error::AbnormalShutdown`]. Cleanup always runs. When not launched, only releases a
    /// prepared launch (see [`prepare_launch`](Self::prepare_launch)).
    ///
    /// A QEMU that already ended by itself with status 0 (the guest powered off, a reset under
    /// `-no-reboot`, the agent's `guest-shutdown`), or ends so while `quit` goes out, is a clean
    /// ending: `Ok`, and [`exitcode`](Self::exitcode) is `Some(0)`. A nonzero status or a death
    /// by a signal qm did not send is still [`Error::AbnormalShutdown`], and so is a QEMU that
    /// ended by itself after the guest kernel panicked, when a pvpanic device told QEMU (the
    /// cause is [`Error::GuestPanicked`]). (QEMU itself turns a SIGTERM or SIGINT into a
    /// shutdown with status 0; that counts as clean.)
    ///
    /// The wait's default is [`DEFAULT_SHUTDOWN_TIMEOUT`]; a token that fired (before or during
    /// the call) means "do not wait: kill QEMU".
    pub fn shutdown(&self, wait: impl Into<Wait>) -> Result<()> {
        self.shutdown_inner(false, wait.into())
    }

    /// Kills QEMU (SIGKILL), reaps it and cleans up. When not launched, only releases a
    /// prepared launch.
    pub fn kill(&self) -> Result<()> {
        self.shutdown_inner(true, Wait::forever())
    }

    /// Waits for QEMU to exit by itself (e.g. the guest powered off), then cleans up; kills it
    /// and returns [`Error::AbnormalShutdown`] when it does not exit in time.
    ///
    /// The wait's default and its token mean what they mean for [`shutdown`](Self::shutdown).
    pub fn wait(&self, wait: impl Into<Wait>) -> Result<()> {
        self.quit_issued.store(true, Ordering::SeqCst);
        self.shutdown_inner(false, wait.into())
    }

    fn shutdown_inner(&self, hard: bool, wait: Wait) -> Result<()> {
        let wait = wait.or_default(Some(DEFAULT_SHUTDOWN_TIMEOUT));
        let mut life = lock(&self.life);
        if !life.launched {
            self.release_prepared(&mut life);
            return Ok(());
        }
        if self.is_attached() {
            return self.detach_locked(&mut life, hard, &wait);
        }
        debug!("{}: shutting down (hard: {hard})", self.name());
        let result = if hard {
            self.hard_shutdown()
        } else {
            match self.soft_shutdown(&wait) {
                Ok(()) => Ok(()),
                Err(cause) => {
                    debug!(
                        "{}: graceful shutdown failed ({cause}); killing",
                        self.name()
                    );
                    self.exit_after(&cause);
                    let _ = self.hard_shutdown();
                    Err(Error::AbnormalShutdown(Box::new(cause)))
                }
            }
        };
        self.post_shutdown(&mut life);
        result
    }

    /// Before waiting for QEMU: close the console so QEMU can't block writing to it.
    fn early_cleanup(&self) {
        if let Some(console) = lock(&self.console).as_ref() {
            console.close_fd();
        }
    }

    fn soft_shutdown(&self, wait: &Wait) -> Result<()> {
        self.early_cleanup();
        let deadline = wait.start()?;
        let process = self.process()?;
        let client = lock(&self.qmp).clone();
        // A clean ending: QEMU already exited with status 0 by itself (the guest powered off,
        // a reset under `-no-reboot`, the agent's `guest-shutdown`). There is nothing to ask.
        if process.try_status() == Some(0) {
            let panic = client.as_deref().and_then(guest_panic);
            if let Some(client) = client {
                client.close();
            }
            return panic.map_or(Ok(()), Err);
        }
        match client {
            Some(client) => {
                let quit = if self.quit_issued.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    // Within what is left of the deadline, even nothing: then `quit` goes
                    // out only if the socket takes it at once (a zero wait is no command's).
                    client.execute_within("quit", None, &deadline).map(|reply| {
                        if reply.get("return").is_some() {
                            self.quit_issued.store(true, Ordering::SeqCst);
                        }
                    })
                };
                if let Err(cause) = quit {
                    // QEMU was on its way out by itself when `quit` went out (the monitor hung
                    // up or the write failed): a status 0 is still a clean ending.
                    if self.exited_cleanly_after(&cause) {
                        let panic = guest_panic(&client);
                        client.close();
                        return panic.map_or(Ok(()), Err);
                    }
                    client.close();
                    return Err(cause);
                }
                client.close();
            }
            None if !self.quit_issued.load(Ordering::SeqCst) => {
                self.send_signal(&process, libc::SIGTERM)?
            }
            None => {}
        }
        process.wait(&deadline).map(drop)
    }

    pub(super) fn hard_shutdown(&self) -> Result<()> {
        self.early_cleanup();
        let process = self.process()?;
        self.send_signal(&process, libc::SIGKILL)?;
        process.wait(&Deadline::after(HARD_KILL_WAIT)).map(drop)
    }

    /// QEMU's exit status if it has exited, or exits soon: a QEMU that hung up on its monitor
    /// (`cause` is a disconnection) is on its way out, and is given a moment to finish so that
    /// its exit code, its last words and a signal someone else sent are its own, not our
    /// SIGKILL's.
    pub(super) fn exit_after(&self, cause: &Error) -> Option<i32> {
        let process = self.process().ok()?;
        let grace = match cause {
            Error::Disconnected(_) => EXIT_GRACE,
            _ => Duration::ZERO,
        };
        process.wait(&Deadline::after(grace)).ok()
    }

    /// True when `cause` (a failed `quit`) is a lost connection and QEMU has exited, or exits
    /// within [`EXIT_GRACE`], with status 0: it was shutting down by itself.
    fn exited_cleanly_after(&self, cause: &Error) -> bool {
        let lost = match cause {
            Error::Disconnected(_) => true,
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN)
            ),
            _ => false,
        };
        if !lost {
            return false;
        }
        let grace = Error::Disconnected(String::new());
        self.exit_after(&grace) == Some(0)
    }

    /// Signals QEMU unless it already exited, remembering the signal so that its death by it
    /// is not reported as foreign.
    fn send_signal(&self, process: &Process, sig: libc::c_int) -> Result<()> {
        if process.try_status().is_none() {
            self.signal_sent.store(sig, Ordering::SeqCst);
            process.signal(sig)?;
        }
        Ok(())
    }

    pub(super) fn process(&self) -> Result<Arc<Process>> {
        match &*lock(&self.proc) {
            ProcState::Running(p) => Ok(p.clone()),
            _ => Err(Error::State("no QEMU process".into())),
        }
    }

    /// After QEMU exited (or a launch failed): close everything, read the log back, remove
    /// files, and report a death by a signal we did not send.
    pub(super) fn post_shutdown(&self, life: &mut Life) {
        if let Some(client) = lock(&self.qmp).as_ref() {
            client.close();
        }
        if let Some(agent) = lock(&self.agent).take() {
            agent.close();
        }
        // Kept, not taken: its transcript stays readable until the next launch.
        let console = lock(&self.console).clone();
        if let Some(console) = console {
            console.finish();
        }
        let exitcode = {
            let mut proc = lock(&self.proc);
            let code = match &*proc {
                ProcState::Running(p) => p.try_status(),
                ProcState::Exited(c) => Some(*c),
                ProcState::None | ProcState::Attached => None,
            };
            // Forget the process (and its pidfd) once reaped.
            if let Some(code) = code {
                *proc = ProcState::Exited(code);
            }
            code
        };
        if let Some(log) = life.log.take() {
            let mut output = lock(&self.output);
            output.log = Some(log.read_back());
            output.live_log = None;
        }
        *lock(&self.temp_dir) = None;
        for path in life.remove_files.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        if let Some(code) = exitcode {
            let ours = code == -self.signal_sent.load(Ordering::SeqCst);
            if code < 0 && !ours {
                warning!(
                    "qemu received signal {}; command: \"{}\"",
                    -code,
                    lock(&self.output).full_args.join(" ")
                );
            }
        }
        self.quit_issued.store(false, Ordering::SeqCst);
        self.signal_sent.store(0, Ordering::SeqCst);
        life.launched = false;
        debug!("{}: cleaned up (exit code {exitcode:?})", self.name());
    }
}

/// Why a QEMU that ended by itself with status 0 did not end well: the guest kernel panicked,
/// as a pvpanic device reports it (QEMU's `GUEST_PANICKED` event, or a `SHUTDOWN` whose reason
/// is `guest-panic`). Looked up in the event queue without taking anything from it, after
/// reading what QEMU sent before it went. Without a pvpanic device a panic is a reset, which
/// `-no-reboot` turns into an exit like any other: qm cannot tell it from a reboot.
fn guest_panic(client: &QmpClient) -> Option<Error> {
    let mut seen = None;
    client.has_event(
        &|name| name == "GUEST_PANICKED" || name == "SHUTDOWN",
        |ev| {
            let hit = ev["event"] == "GUEST_PANICKED" || ev["data"]["reason"] == "guest-panic";
            if hit && seen.is_none() {
                seen = Some(ev.to_string());
            }
            hit
        },
    );
    seen.map(|event| Error::GuestPanicked(format!("QEMU reported {event}")))
}
