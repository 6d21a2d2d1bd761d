//! The console: a socketpair to QEMU's serial chardev, and the drain that keeps QEMU from
//! blocking on it while logging every byte.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::log::{debug, warning};
use crate::sys::{poll, pollfd, socket, EventFd, POLLHUP, POLLIN, POLLOUT};

/// A connected pair of stream sockets, close-on-exec.
pub(crate) fn socketpair(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    socket::pair().map_err(|e| Error::io(format!("creating the {what} socketpair"), e))
}

/// The host side of a console.
pub(crate) struct Console {
    /// What the user reads and writes: QEMU's peer directly, or the user end of the drain.
    user: Option<OwnedFd>,
    drain: Option<Drain>,
}

struct Drain {
    stop: EventFd,
    thread: JoinHandle<()>,
}

impl Console {
    /// Serves `host` (the socket QEMU's chardev talks to) directly.
    pub(crate) fn direct(host: OwnedFd) -> Console {
        Console {
            user: Some(host),
            drain: None,
        }
    }

    /// Starts a drain thread that always reads what QEMU writes, appends it to `log` (if any)
    /// and forwards it to the user's end, buffering in memory what the user has not read yet;
    /// what the user writes goes to QEMU.
    pub(crate) fn drained(host: OwnedFd, log: Option<File>, name: &str) -> Result<Console> {
        let (user, relay_end) = socketpair("console")?;
        let stop =
            EventFd::new().map_err(|e| Error::io("creating the console drain's eventfd", e))?;
        let stop_raw = stop.raw();
        for fd in [&host, &relay_end] {
            socket::set_nonblocking(fd.as_fd())
                .map_err(|e| Error::io("making the console socket non-blocking", e))?;
        }
        let relay = Relay {
            qemu: host,
            user: Some(relay_end),
            log,
            to_user: VecDeque::new(),
            to_qemu: VecDeque::new(),
            name: name.to_owned(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("qm-console-{name}"))
            .spawn(move || relay.run(stop_raw))
            .map_err(|e| Error::io("starting the console drain thread", e))?;
        Ok(Console {
            user: Some(user),
            drain: Some(Drain { stop, thread }),
        })
    }

    /// The descriptor the user reads and writes; `None` once closed.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.user.as_ref().map(AsFd::as_fd)
    }

    /// Closes our end of the user's side, so a console nobody reads can't block QEMU; a drain
    /// keeps reading until [`finish`](Self::finish).
    pub(crate) fn close_user(&mut self) {
        self.user = None;
    }

    /// After QEMU exited: lets the drain take what is left in the socket, then joins it.
    pub(crate) fn finish(mut self) {
        self.user = None;
        if let Some(drain) = self.drain.take() {
            drain.stop.signal();
            if drain.thread.join().is_err() {
                warning!("the console drain thread panicked");
            }
        }
    }
}

struct Relay {
    qemu: OwnedFd,
    user: Option<OwnedFd>,
    log: Option<File>,
    to_user: VecDeque<u8>,
    to_qemu: VecDeque<u8>,
    name: String,
}

enum Io {
    Data(usize),
    WouldBlock,
    Closed,
}

/// What a send or receive on a non-blocking socket came to.
fn outcome(result: std::io::Result<usize>) -> Io {
    match result {
        Ok(0) => Io::Closed,
        Ok(n) => Io::Data(n),
        Err(e) => match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Io::WouldBlock,
            _ => Io::Closed,
        },
    }
}

fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Io {
    outcome(socket::recv(fd, buf))
}

/// Sends from the front of `queue`, removing what was sent.
fn send_from(fd: BorrowedFd<'_>, queue: &mut VecDeque<u8>) -> Io {
    let (front, _) = queue.as_slices();
    if front.is_empty() {
        return Io::Data(0);
    }
    let sent = outcome(socket::send(fd, front));
    if let Io::Data(n) = sent {
        queue.drain(..n);
    }
    sent
}

impl Relay {
    fn run(mut self, stop: RawFd) {
        let mut buf = vec![0u8; 16 << 10];
        let mut qemu_open = true;
        let mut stopping = false;
        loop {
            let qemu = self.qemu.as_raw_fd();
            let user = self.user.as_ref().map(AsRawFd::as_raw_fd);
            if stopping || !qemu_open {
                // QEMU is gone: hand over what is buffered without waiting for the user.
                self.flush_user_now();
                break;
            }
            let mut fds = vec![
                pollfd(stop, POLLIN),
                pollfd(
                    qemu,
                    POLLIN | if self.to_qemu.is_empty() { 0 } else { POLLOUT },
                ),
            ];
            if let Some(user) = user {
                let out = if self.to_user.is_empty() { 0 } else { POLLOUT };
                fds.push(pollfd(user, POLLIN | out));
            }
            if poll(&mut fds, None).is_err() {
                break;
            }
            if fds[0].revents != 0 {
                stopping = true;
            }
            // Read QEMU until it has nothing more: when stopping this is the final drain.
            if fds[1].revents != 0 || stopping {
                qemu_open = self.pump_from_qemu(&mut buf);
            }
            if fds[1].revents & POLLOUT != 0 {
                if let Io::Closed = send_from(self.qemu.as_fd(), &mut self.to_qemu) {
                    self.to_qemu.clear();
                }
            }
            if let Some(user_fd) = fds.get(2) {
                if user_fd.revents & POLLIN != 0 {
                    self.pump_from_user(&mut buf);
                }
                if user_fd.revents & POLLOUT != 0 || user_fd.revents & POLLHUP != 0 {
                    self.send_to_user();
                }
            }
        }
        if let Some(log) = self.log.as_mut() {
            let _ = log.flush();
        }
        debug!("{}: console drain finished", self.name);
    }

    /// Returns false at EOF.
    fn pump_from_qemu(&mut self, buf: &mut [u8]) -> bool {
        loop {
            match recv(self.qemu.as_fd(), buf) {
                Io::Data(n) => {
                    if let Some(log) = self.log.as_mut() {
                        if let Err(e) = log.write_all(&buf[..n]) {
                            warning!("{}: console log write failed: {e}", self.name);
                            self.log = None;
                        }
                    }
                    if self.user.is_some() {
                        self.to_user.extend(&buf[..n]);
                    }
                }
                Io::WouldBlock => return true,
                Io::Closed => return false,
            }
        }
    }

    fn pump_from_user(&mut self, buf: &mut [u8]) {
        let Some(user) = self.user.as_ref() else {
            return;
        };
        match recv(user.as_fd(), buf) {
            Io::Data(n) => {
                self.to_qemu.extend(&buf[..n]);
                let _ = send_from(self.qemu.as_fd(), &mut self.to_qemu);
            }
            Io::WouldBlock => {}
            // The user closed every copy of their end: keep draining QEMU into the log.
            Io::Closed => self.drop_user(),
        }
    }

    fn send_to_user(&mut self) {
        let Some(user) = self.user.as_ref() else {
            return;
        };
        while !self.to_user.is_empty() {
            match send_from(user.as_fd(), &mut self.to_user) {
                Io::Data(_) => {}
                Io::WouldBlock => return,
                Io::Closed => return self.drop_user(),
            }
        }
    }

    fn flush_user_now(&mut self) {
        self.send_to_user();
        if !self.to_user.is_empty() {
            debug!(
                "{}: {} console bytes not read by the user (still in the console log)",
                self.name,
                self.to_user.len()
            );
        }
    }

    fn drop_user(&mut self) {
        self.user = None;
        self.to_user.clear();
    }
}
