//! Attaching to a QEMU someone else started: a machine whose QMP connection (and, if given, guest
//! agent channel) goes to sockets another process's QEMU listens on. It has the commands,
//! events and waits of a launched machine, but no process: qm never signals, kills or reaps a
//! QEMU it did not start. Ending an attached machine (shutdown, kill, wait, drop) *detaches*:
//! it closes qm's connections and leaves QEMU running. To stop that QEMU, send it `quit`
//! explicitly, then shut the machine down (which then waits for QEMU to hang up).

use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{lock, Life, Machine, ProcState, RunOutput};
use crate::error::{Error, Result};
use crate::log::debug;
use crate::qga::GuestAgent;
use crate::qmp::QmpClient;
use crate::wait::{Deadline, Wait};

/// Where a QEMU started by someone else listens: its QMP monitor (`-qmp unix:PATH,server=on,
/// wait=off` or `-qmp tcp:HOST:PORT,server=on,wait=off`) or its guest agent's chardev.
///
/// As text (see [`FromStr`]): `unix:PATH`, `tcp:HOST:PORT`, or a bare path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachAddress {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp {
        /// Host name or address, e.g. `127.0.0.1` (IPv6 in brackets: `[::1]`).
        host: String,
        /// Port.
        port: u16,
    },
}

impl FromStr for AttachAddress {
    type Err = Error;

    /// `unix:PATH`, `tcp:HOST:PORT` (as in QEMU's `-qmp` option), or a bare path.
    fn from_str(text: &str) -> Result<AttachAddress> {
        if text.is_empty() {
            return Err(Error::Invalid("empty socket address".into()));
        }
        if let Some(path) = text.strip_prefix("unix:") {
            // QEMU's own form may carry options after the path: `unix:PATH,server=on`.
            let path = path.split(',').next().unwrap_or_default();
            if path.is_empty() {
                return Err(Error::Invalid(format!("no path in {text:?}")));
            }
            return Ok(AttachAddress::Unix(path.into()));
        }
        if let Some(rest) = text.strip_prefix("tcp:") {
            let rest = rest.split(',').next().unwrap_or_default();
            let bad = || Error::Invalid(format!("{text:?} is not tcp:HOST:PORT"));
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || port == 0 {
                return Err(bad());
            }
            return Ok(AttachAddress::Tcp {
                host: host.to_owned(),
                port,
            });
        }
        Ok(AttachAddress::Unix(text.into()))
    }
}

impl fmt::Display for AttachAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            AttachAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            AttachAddress::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

impl AttachAddress {
    /// A connected socket, within `deadline` (connecting to a local socket does not block
    /// long; TCP is bounded by what is left of the deadline).
    fn connect(&self, deadline: &Deadline<'_>) -> Result<OwnedFd> {
        if deadline.cancelled() {
            return Err(Error::Interrupted);
        }
        match self {
            AttachAddress::Unix(path) => UnixStream::connect(path)
                .map(OwnedFd::from)
                .map_err(|e| Error::io(format!("connecting to {}", path.display()), e)),
            AttachAddress::Tcp { host, port } => {
                use std::net::{TcpStream, ToSocketAddrs};
                let what = format!("connecting to {host}:{port}");
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| Error::io(&what, e))?;
                let mut last = None;
                for addr in addrs {
                    let left = deadline.remaining().unwrap_or(Duration::from_secs(3600));
                    if left.is_zero() {
                        return Err(Error::Timeout(format!("{what} {}", deadline.within())));
                    }
                    match TcpStream::connect_timeout(&addr, left) {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            return Ok(stream.into());
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(match last {
                    Some(e) => Error::io(what, e),
                    None => Error::Invalid(format!("{host} resolves to no address")),
                })
            }
        }
    }
}

impl Machine {
    /// Attaches to a QEMU someone else started: connects to its QMP monitor at `qmp` (and to
    /// its guest agent's chardev at `agent`, a unix socket path, when given) and negotiates
    /// QMP, within `wait` (its default is the QMP timer). From then on the machine's commands,
    /// events and waits work as on a launched machine; [`agent`](Self::agent) works when
    /// `agent` was given. The QMP transcript ([`set_qmp_transcript`](Self::set_qmp_transcript))
    /// and the event cap apply; launch settings (arguments, console, log) do not, and there is
    /// no pid, exit code or QEMU log.
    ///
    /// qm never kills or reaps a QEMU it attached to. [`shutdown`](Self::shutdown),
    /// [`kill`](Self::kill) and dropping the machine *detach*: they close qm's connections and
    /// QEMU keeps running (and, with `server=on`, accepts the next client). To stop QEMU, run
    /// `quit` yourself; a shutdown after it (or [`wait`](Self::wait)) waits, bounded by its
    /// wait, for QEMU to close the monitor. [`is_running`](Self::is_running) is true while the
    /// QMP connection is up.
    ///
    /// QEMU serves one client at a time on a monitor socket: while another is connected, the
    /// greeting never comes and this fails with [`Error::Timeout`]. Fails with
    /// [`Error::State`] when the machine is launched, attached or has a prepared launch; with
    /// [`Error::Io`] when nothing listens at the address. On failure nothing stays connected.
    pub fn attach(
        &self,
        qmp: &AttachAddress,
        agent: Option<&Path>,
        wait: impl Into<Wait>,
    ) -> Result<()> {
        let wait = wait.into().or_default(self.qmp_timer());
        let deadline = wait.start()?;
        let mut life = lock(&self.life);
        if life.launched {
            return Err(Error::State(
                "the machine is already launched or attached".into(),
            ));
        }
        if life.prepared.is_some() {
            return Err(Error::State(
                "a launch is prepared: abort it before attaching".into(),
            ));
        }
        let cfg = lock(&self.cfg).clone();
        // Forget the last run: its exit code, pid, command line and log are not this QEMU's.
        self.quit_issued.store(false, Ordering::SeqCst);
        self.signal_sent.store(0, Ordering::SeqCst);
        *lock(&self.output) = RunOutput::default();
        *lock(&self.proc) = ProcState::None;
        self.last_pid.store(0, Ordering::SeqCst);

        let transcript = match &cfg.qmp_transcript {
            Some(path) => Some(crate::qmp::TranscriptFile::open(path)?),
            None => None,
        };
        let sock = qmp.connect(&deadline)?;
        let client = Arc::new(QmpClient::new(sock, &cfg.name, cfg.max_message)?);
        client.set_max_queued_events(self.max_queued_events());
        if let Some(file) = &transcript {
            client.set_transcript(file.clone());
        }
        let greeting = match client.handshake(deadline.to_wait()) {
            Ok(greeting) => greeting,
            Err(err) => {
                client.close();
                return Err(match err {
                    Error::Timeout(what) => Error::Timeout(format!(
                        "{what} from {qmp} (QEMU serves one monitor client at a time: is another \
                     connected?)"
                    )),
                    other => other,
                });
            }
        };
        let agent = match agent {
            Some(path) => {
                let connected = UnixStream::connect(path)
                    .map_err(|e| Error::io(format!("connecting to {}", path.display()), e))
                    .and_then(|sock| {
                        GuestAgent::new(
                            sock,
                            &format!("{}-qga", cfg.name),
                            crate::qga::DEFAULT_MAX_REPLY,
                        )
                    });
                match connected {
                    Ok(agent) => {
                        crate::qga::launch::watch_guest(&agent, &client);
                        if let Some(file) = transcript {
                            agent.set_transcript(file);
                        }
                        Some(Arc::new(agent))
                    }
                    Err(err) => {
                        client.close();
                        return Err(err);
                    }
                }
            }
            None => None,
        };
        // The schema as on a launched machine; no binary is known, so no per-binary cache.
        self.schema_connected(None, &greeting);
        *lock(&self.qmp) = Some(client);
        *lock(&self.agent) = agent;
        *lock(&self.proc) = ProcState::Attached;
        life.launched = true;
        debug!("{}: attached to {qmp}", cfg.name);
        Ok(())
    }

    /// True while the machine is attached to a QEMU it did not start (see
    /// [`attach`](Self::attach)), until it is shut down (detached).
    pub fn is_attached(&self) -> bool {
        matches!(*lock(&self.proc), ProcState::Attached)
    }

    /// The end of an attached machine (with `life` locked): close qm's connections, never
    /// touching QEMU. After a `quit` (or from [`wait`](Self::wait)), first waits within `wait`
    /// for QEMU to close the monitor; [`Error::Timeout`] if it does not (qm detaches anyway).
    pub(super) fn detach_locked(&self, life: &mut Life, hard: bool, wait: &Wait) -> Result<()> {
        let mut result = Ok(());
        let client = lock(&self.qmp).clone();
        if let (Some(client), false) = (client, hard) {
            if self.quit_issued.load(Ordering::SeqCst) {
                // No event matches: this returns when the connection ends, or at the deadline.
                result = match client.take_event(|_| false, wait.clone()) {
                    Err(Error::Disconnected(_)) | Ok(_) => Ok(()),
                    Err(Error::Timeout(_)) => Err(Error::Timeout(format!(
                        "QEMU did not close the monitor {} (detached anyway; qm does not kill \
                         a QEMU it did not start)",
                        wait.start().map(|d| d.within()).unwrap_or_default()
                    ))),
                    Err(other) => Err(other),
                };
            }
        }
        debug!("{}: detaching (QEMU keeps running)", self.name());
        *lock(&self.proc) = ProcState::None;
        self.post_shutdown(life);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_qemu_writes_them() {
        let unix = |p: &str| AttachAddress::Unix(p.into());
        assert_eq!(
            "unix:/tmp/q.sock".parse::<AttachAddress>().unwrap(),
            unix("/tmp/q.sock")
        );
        assert_eq!(
            "unix:/tmp/q.sock,server=on,wait=off"
                .parse::<AttachAddress>()
                .unwrap(),
            unix("/tmp/q.sock")
        );
        assert_eq!(
            "/tmp/q.sock".parse::<AttachAddress>().unwrap(),
            unix("/tmp/q.sock")
        );
        assert_eq!(
            "tcp:127.0.0.1:4444".parse::<AttachAddress>().unwrap(),
            AttachAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 4444
            }
        );
        assert_eq!(
            "tcp:[::1]:4444,server=on".parse::<AttachAddress>().unwrap(),
            AttachAddress::Tcp {
                host: "::1".into(),
                port: 4444
            }
        );
        for bad in ["", "unix:", "tcp:host", "tcp:host:x", "tcp::5", "tcp:h:0"] {
            assert!(
                matches!(bad.parse::<AttachAddress>(), Err(Error::Invalid(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn addresses_print_as_they_parse() {
        for text in ["unix:/tmp/q.sock", "tcp:localhost:4444", "tcp:[::1]:4444"] {
            let addr: AttachAddress = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
    }
}
