//! How a run starts: the monitor and console sockets, QEMU's log, the process, and the QMP
//! handshake, all bounded by one deadline; a failed launch undoes all of it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::args::{self, MonitorChardev};
use super::config::{Config, MonitorAddress};
use super::console::{self, Console};
use super::process::{Process, Spawn};
use super::{lock, Life, Machine, ProcState, RunOutput};
use crate::error::{Error, Result};
use crate::log::debug;
use crate::qmp::QmpClient;
use crate::sys::{self, poll, pollfd, socket, POLLIN};
use crate::wait::{Cancel, Deadline, Wait};

/// QEMU's output: `<log_dir>/<name>.log`, or without a log dir an anonymous memory file, which
/// saves creating, reading back and unlinking a file on disk for every machine.
pub(super) enum QemuLog {
    File(PathBuf),
    Memory(File),
}

impl QemuLog {
    /// Creates the log for machine `name` and returns the descriptor QEMU writes to.
    pub(super) fn create(log_dir: Option<&Path>, name: &str) -> Result<(QemuLog, File)> {
        match log_dir {
            Some(dir) => {
                let path = dir.join(format!("{name}.log"));
                let file = create_private(&path, true)?;
                Ok((QemuLog::File(path), file))
            }
            None => {
                if name.contains('\0') {
                    return Err(Error::Invalid("machine name contains NUL".into()));
                }
                let file = sys::memfd(&format!("qm-{name}.log"))
                    .map_err(|e| Error::io("creating the in-memory log", e))?;
                let ours = file
                    .try_clone()
                    .map_err(|e| Error::io("duplicating the in-memory log", e))?;
                Ok((QemuLog::Memory(ours), file))
            }
        }
    }

    /// Everything QEMU wrote (call once QEMU is gone).
    pub(super) fn read_back(self) -> String {
        let mut text = Vec::new();
        let _ = match self {
            QemuLog::File(path) => File::open(path).and_then(|mut f| f.read_to_end(&mut text)),
            // QEMU shared this file's offset; start over from the beginning.
            QemuLog::Memory(mut f) => f
                .seek(std::io::SeekFrom::Start(0))
                .and_then(|_| f.read_to_end(&mut text)),
        };
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Machine {
    /// Starts QEMU and, unless QMP is off, connects and negotiates QMP.
    ///
    /// Fails with [`Error::State`] when already launched. Any other failure is an
    /// [`Error::Launch`] carrying QEMU's exit code (if it exited), the command line and its
    /// output; by then the process is gone and everything the launch created is removed. When
    /// QEMU exits before greeting, this returns at once rather than waiting out the QMP timer.
    pub fn launch(&self) -> Result<()> {
        self.launch_with(Wait::call_default())
    }

    /// [`launch`](Self::launch), also interrupted when `cancel` fires; the same as
    /// [`launch_with`](Self::launch_with) and the QMP timer.
    pub fn launch_with_cancel(&self, cancel: &Cancel) -> Result<()> {
        self.launch_with(Wait::call_default().cancel(cancel))
    }

    /// [`launch`](Self::launch) bounded by `wait` (its default is the QMP timer). When the
    /// wait's token fires, the launch fails with [`Error::Launch`] whose cause is
    /// [`Error::Interrupted`], and cleans up as usual; a token that already fired fails at once
    /// with [`Error::Interrupted`], launching nothing.
    pub fn launch_with(&self, wait: impl Into<Wait>) -> Result<()> {
        let wait = wait.into().or_default(self.qmp_timer());
        let deadline = wait.start()?;
        let mut life = lock(&self.life);
        if life.launched {
            return Err(Error::State("the machine is already launched".into()));
        }
        let cfg = lock(&self.cfg).clone();
        self.quit_issued.store(false, Ordering::SeqCst);
        self.signal_sent.store(0, Ordering::SeqCst);
        *lock(&self.output) = RunOutput::default();
        // The last run's exit code must not pass for this run's.
        *lock(&self.proc) = ProcState::None;
        match self.launch_locked(&mut life, &cfg, &deadline) {
            Ok(()) => Ok(()),
            Err(cause) => {
                // A QEMU still running here never became usable: kill it, its code is ours.
                let exited_by_itself = self.exit_after(&cause);
                if exited_by_itself.is_none() {
                    let _ = self.hard_shutdown();
                }
                self.post_shutdown(&mut life);
                let output = lock(&self.output);
                Err(Error::Launch {
                    exitcode: exited_by_itself,
                    command: output.full_args.join(" "),
                    output: output.log.clone().unwrap_or_default(),
                    cause: Box::new(cause),
                })
            }
        }
    }

    fn launch_locked(&self, life: &mut Life, cfg: &Config, deadline: &Deadline<'_>) -> Result<()> {
        let mut keep_fds = cfg.pass_fds.clone();

        // The monitor: our end (or listener), and where QEMU finds it.
        let mut monitor = None;
        let mut monitor_path = None;
        if cfg.qmp_enabled {
            monitor = Some(match &cfg.monitor {
                MonitorAddress::SocketPair => {
                    let (ours, theirs) = console::socketpair("monitor")?;
                    keep_fds.push(theirs.as_raw_fd());
                    Listen::Pair(ours, theirs)
                }
                MonitorAddress::Unix(path) => {
                    let path = match path {
                        Some(p) => p.clone(),
                        None => self.sock_dir()?.join(format!("{}-monitor.sock", cfg.name)),
                    };
                    let listener = listen_unix(&path)?;
                    life.remove_files.push(path.clone());
                    monitor_path = Some(path);
                    Listen::Unix(listener)
                }
                MonitorAddress::Tcp { host, port } => {
                    let listener = std::net::TcpListener::bind((host.as_str(), *port))
                        .map_err(|e| Error::io(format!("listening on {host}:{port}"), e))?;
                    Listen::Tcp(listener)
                }
            });
        }
        let chardev = match (&monitor, &monitor_path, &cfg.monitor) {
            (Some(Listen::Pair(_, theirs)), _, _) => Some(MonitorChardev::Fd(theirs.as_raw_fd())),
            (Some(Listen::Unix(_)), Some(path), _) => Some(MonitorChardev::Path(path)),
            (Some(Listen::Tcp(listener)), _, MonitorAddress::Tcp { host, .. }) => {
                let port = listener
                    .local_addr()
                    .map_err(|e| Error::io("local_addr", e))?
                    .port();
                Some(MonitorChardev::Tcp { host, port })
            }
            _ => None,
        };
        let mut console_host = None;
        let mut console_qemu = None;
        if cfg.console.is_some() {
            let (host, qemu) = console::socketpair("console")?;
            keep_fds.push(qemu.as_raw_fd());
            console_host = Some(host);
            console_qemu = Some(qemu);
        }

        let (qemu_log, log) = QemuLog::create(cfg.log_dir.as_deref(), &cfg.name)?;
        life.log = Some(qemu_log);

        let full_args =
            args::command_line(cfg, chardev, console_qemu.as_ref().map(|fd| fd.as_raw_fd()));
        lock(&self.output).full_args = full_args.clone();
        debug!("{}: launch command: {}", cfg.name, full_args.join(" "));

        let process = Arc::new(Process::spawn(Spawn {
            argv: full_args,
            keep_fds,
            log,
        })?);
        *lock(&self.proc) = ProcState::Running(process.clone());
        life.launched = true;
        // QEMU holds its ends now; ours must go so its exit reads as EOF.
        drop(console_qemu);

        if let Some(console) = console_host {
            *lock(&self.console) = Some(if cfg.drain_console || cfg.console_log.is_some() {
                let log = match &cfg.console_log {
                    Some(path) => Some(create_private(path, false)?),
                    None => None,
                };
                Console::drained(console, log, &cfg.name)?
            } else {
                Console::direct(console)
            });
        }

        if let Some(listen) = monitor {
            let sock = listen.connect(&process, deadline)?;
            let client = Arc::new(QmpClient::new(sock, &cfg.name, cfg.max_message)?);
            // Published only once the handshake is over (a command from another thread must
            // not overtake qmp_capabilities), and also when it failed: events QEMU sent before
            // stay readable.
            let negotiated =
                client.handshake_watching(&deadline.to_wait(), Some(process.exit_fd()));
            *lock(&self.qmp) = Some(client);
            negotiated?;
        }
        if !cfg.wrapper.is_empty() {
            process.identify(&cfg.binary);
        }
        debug!("{}: launched, pid {}", cfg.name, process.reported_pid());
        Ok(())
    }
}

enum Listen {
    /// Our end, and QEMU's end (dropped once QEMU holds it).
    Pair(OwnedFd, OwnedFd),
    Unix(UnixListener),
    Tcp(std::net::TcpListener),
}

impl Listen {
    /// Our connected monitor socket; for listeners, waits for QEMU to connect (failing at once
    /// when QEMU exits).
    fn connect(self, process: &Process, deadline: &crate::wait::Deadline<'_>) -> Result<OwnedFd> {
        let listener: OwnedFd = match self {
            Listen::Pair(ours, theirs) => {
                drop(theirs);
                return Ok(ours);
            }
            Listen::Unix(l) => l.into(),
            Listen::Tcp(l) => l.into(),
        };
        loop {
            let mut fds = vec![
                pollfd(listener.as_raw_fd(), POLLIN),
                pollfd(process.exit_fd().as_raw_fd(), POLLIN),
            ];
            if let Some(fd) = deadline.cancel_fd()? {
                fds.push(pollfd(fd, POLLIN));
            }
            let ready = poll(&mut fds, deadline.remaining())
                .map_err(|e| Error::io("waiting for QEMU to connect to the monitor", e))?;
            if ready == 0 {
                return Err(Error::Timeout(
                    "waiting for QEMU to connect to the monitor".into(),
                ));
            }
            if fds[0].revents != 0 {
                return socket::accept(listener.as_fd())
                    .map_err(|e| Error::io("accepting the monitor connection", e));
            }
            if fds[1].revents != 0 {
                return Err(Error::Disconnected(
                    "QEMU exited before connecting to the monitor".into(),
                ));
            }
            if deadline.cancelled() {
                return Err(Error::Interrupted);
            }
        }
    }
}
/// Listens on a unix socket at `path`, readable and writable by the owner only.
fn listen_unix(path: &Path) -> Result<UnixListener> {
    // Longer paths do not fit sockaddr_un; say so rather than failing obscurely.
    if path.as_os_str().len() >= 108 {
        return Err(Error::Invalid(format!(
            "socket path {} is longer than the 107 bytes a unix socket allows",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(path);
    let listener = socket::listen_unix(path).map_err(|(step, e)| match step {
        "creating" => Error::io("creating the monitor socket", e),
        "restricting" => Error::io("restricting the monitor socket's mode", e),
        step => Error::io(format!("{step} {}", path.display()), e),
    })?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(listener)
}

/// Creates (or truncates / appends to) a file only its owner can read.
fn create_private(path: &Path, truncate: bool) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(truncate)
        .append(!truncate)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))
}
