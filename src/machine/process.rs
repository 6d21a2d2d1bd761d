//! The QEMU child process: spawned with exactly the intended descriptors (`sys::spawn`),
//! waited for exactly through its exit descriptor, and signalled without ever hitting a
//! recycled pid (`sys::exit`).

use std::os::fd::AsRawFd;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::sys::exit::{self, ExitWatch};
use crate::sys::spawn;
use crate::sys::{poll, pollfd, POLLIN};
use crate::wait::Deadline;

pub(crate) use crate::sys::spawn::Spawn;

/// A running (or exited, not yet forgotten) QEMU.
pub(crate) struct Process {
    pid: u32,
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
        let exit = match ExitWatch::new(pid) {
            Ok(exit) => exit,
            Err(err) => {
                exit::kill_and_reap(pid);
                return Err(Error::io("watching QEMU's exit", err));
            }
        };
        Ok(Process {
            pid,
            exit,
            status: Mutex::new(None),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Readable once the process has exited.
    pub(crate) fn exit_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.exit.fd()
    }

    /// The exit status if the process has exited (reaping it), `-N` for death by signal N.
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

    /// Sends `sig` unless the process is already gone. Never hits a recycled pid: the pidfd
    /// names this process only, and without one the status lock keeps the child unreaped (so
    /// its pid ours) while the signal goes out.
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
