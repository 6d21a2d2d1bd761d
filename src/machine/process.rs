//! The QEMU child process: spawned with exactly the intended descriptors (`sys::spawn`),
//! waited for exactly through its exit descriptor, and signalled without ever hitting a
//! recycled pid (`sys::exit`).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::log::warning;
use crate::sys::exit::{self, ExitWatch};
use crate::sys::{poll, pollfd, POLLIN};
use crate::sys::{spawn, tree};
use crate::wait::Deadline;

pub(crate) use crate::sys::spawn::Spawn;

/// A running (or exited, not yet forgotten) QEMU, or the wrapper that runs it: the leader of a
/// process group that holds everything the launch started (see `sys::tree`).
pub(crate) struct Process {
    /// The spawned process: the group's leader, its pgid.
    pid: u32,
    /// What [`Machine::pid`](super::Machine::pid) reports: QEMU's own pid when it is known.
    reported: AtomicU32,
    /// Readable once the child has exited.
    exit: ExitWatch,
    /// The exit status once reaped; its lock also keeps the pid from being reaped (and so
    /// recycled) while a signal goes out.
    status: Mutex<Option<i32>>,
}

impl Process {
    /// Starts `spawn.argv` with stdin on /dev/null and stdout+stderr on the log.
    pub(crate) fn spawn(spawn: Spawn) -> Result<Process> {
        let program = spawn.argv[0].clone();
        let pid = spawn::spawn(spawn).map_err(|e| Error::io(format!("starting {program:?}"), e))?;
        // The group is killed if the host dies from here on; `exit::try_reap` releases it.
        if let Err(err) = tree::guard(pid) {
            warning!("{program}: the process tree is not guarded against the host's death: {err}");
        }
        let exit = match ExitWatch::new(pid) {
            Ok(exit) => exit,
            Err(err) => {
                exit::kill_and_reap(pid);
                return Err(Error::io("watching QEMU's exit", err));
            }
        };
        Ok(Process {
            pid,
            reported: AtomicU32::new(pid),
            exit,
            status: Mutex::new(None),
        })
    }

    /// The pid to report: QEMU's own once [`identify`](Self::identify) found it under a
    /// wrapper, else the spawned process's.
    pub(crate) fn reported_pid(&self) -> u32 {
        self.reported.load(Ordering::Relaxed)
    }

    /// Under a wrapper: looks for `program` among the processes of the launch's group and
    /// reports its pid from now on, if exactly one is found.
    pub(crate) fn identify(&self, program: &str) {
        if let Some(pid) = tree::find_in_group(self.pid, program) {
            self.reported.store(pid, Ordering::Relaxed);
        }
    }

    /// Readable once the process has exited.
    pub(crate) fn exit_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.exit.fd()
    }

    /// [`exit_fd`](Self::exit_fd) for a user that keeps it (shared, not duplicated).
    pub(crate) fn shared_exit_fd(&self) -> Result<std::sync::Arc<std::os::fd::OwnedFd>> {
        self.exit
            .shared_fd()
            .map_err(|e| Error::io("sharing QEMU's exit descriptor", e))
    }

    /// The exit status if the process has exited (reaping it), `-N` for death by signal N.
    /// What is left of its group is killed first (`exit::try_reap`).
    pub(crate) fn try_status(&self) -> Option<i32> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            *status = exit::try_reap(self.pid);
        }
        *status
    }

    /// Waits for the exit, bounded by `deadline`; wakes the moment the process exits.
    pub(crate) fn wait(&self, deadline: &Deadline<'_>) -> Result<i32> {
        loop {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            if deadline.cancelled() {
                return Err(Error::Interrupted);
            }
            let mut fds = vec![pollfd(self.exit.fd().as_raw_fd(), POLLIN)];
            if let Some(fd) = deadline.cancel_fd()? {
                fds.push(pollfd(fd, POLLIN));
            }
            let ready = poll(&mut fds, deadline.remaining())
                .map_err(|e| Error::io("waiting for QEMU to exit", e))?;
            if ready == 0 {
                return Err(Error::Timeout(format!(
                    "QEMU (pid {}) did not exit {}",
                    self.pid,
                    deadline.within()
                )));
            }
        }
    }

    /// Sends `sig` to the launch's whole process group unless its leader is already reaped.
    /// Never hits a recycled id: the status lock keeps the leader unreaped while the signal
    /// goes out, and an unreaped leader keeps its pid (the group's id) from being reused.
    pub(crate) fn signal(&self, sig: libc::c_int) -> Result<()> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_some() {
            return Ok(());
        }
        let sent = self.exit.signal(sig);
        drop(status);
        sent.map_err(|e| Error::io(format!("signalling QEMU (pid {})", self.pid), e))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Never leave a group behind: a Process is normally reaped before it is dropped, but a
        // launch that failed half-way may drop it running.
        if self.try_status().is_none() {
            let _ = self.signal(libc::SIGKILL);
            let wait = crate::wait::Wait::timeout(std::time::Duration::from_secs(5));
            if let Ok(deadline) = wait.start() {
                let _ = self.wait(&deadline);
            }
        }
    }
}
