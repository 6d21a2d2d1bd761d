//! The one accept loop for a socket QEMU connects to (the monitor on a unix or TCP listener,
//! the guest agent's unix socket): wait for the connection, for QEMU's exit, for the deadline
//! or for the cancel token, whichever comes first.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use crate::error::{Error, Result};
use crate::sys::{poll, pollfd, socket, POLLIN};
use crate::wait::Deadline;

/// Accepts QEMU's connection on `listener` (close-on-exec). `what` names the socket in
/// messages (`"the monitor"`); `exited` is the error when QEMU exits first (its channel's
/// Disconnected variant), given the message. Fails with [`Error::Timeout`] at the deadline and
/// [`Error::Interrupted`] when the token fires. The listener is made non-blocking, so a
/// connection that went away between the poll and the accept never blocks the caller.
pub(crate) fn accept_from_qemu(
    listener: BorrowedFd<'_>,
    qemu_exit: BorrowedFd<'_>,
    deadline: &Deadline<'_>,
    what: &str,
    exited: fn(String) -> Error,
) -> Result<OwnedFd> {
    socket::set_nonblocking(listener)
        .map_err(|e| Error::io(format!("making the listener of {what} non-blocking"), e))?;
    loop {
        match socket::accept(listener) {
            Ok(sock) => return Ok(sock),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => return Err(Error::io(format!("accepting the connection to {what}"), e)),
        }
        let mut fds = vec![
            pollfd(listener.as_raw_fd(), POLLIN),
            pollfd(qemu_exit.as_raw_fd(), POLLIN),
        ];
        if let Some(fd) = deadline.cancel_fd()? {
            fds.push(pollfd(fd, POLLIN));
        }
        let ready = poll(&mut fds, deadline.remaining())
            .map_err(|e| Error::io(format!("waiting for QEMU to connect to {what}"), e))?;
        if ready == 0 {
            return Err(Error::Timeout(format!(
                "QEMU did not connect to {what} {}",
                deadline.within()
            )));
        }
        if fds[0].revents != 0 {
            continue;
        }
        if fds[1].revents != 0 {
            return Err(exited(format!("QEMU exited before connecting to {what}")));
        }
        if deadline.cancelled() {
            return Err(Error::Interrupted);
        }
    }
}
