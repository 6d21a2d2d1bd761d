//! How a run starts, in two phases: prepare (the monitor and console sockets, QEMU's log, and
//! the base arguments naming them) and start (the process from an argv, qm's own or a
//! caller's, and the QMP handshake, bounded by one deadline). `launch` is both; a failed
//! launch undoes all of it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use super::args::{self, MonitorChardev};
use super::config::{Config, MonitorAddress};
use super::console;
use super::process::{Process, Spawn};
use super::{lock, Life, Machine, ProcState, RunOutput};
use crate::console::{Console, ConsoleOptions};
use crate::error::{Error, Result};
use crate::log::debug;
use crate::qmp::QmpClient;
use crate::sys::{self, socket};
use crate::wait::{Cancel, Deadline, Wait};

/// QEMU's output: `<log_dir>/<name>.log`, or without a log dir an anonymous memory file, which
/// saves creating, reading back and unlinking a file on disk for every machine.
pub(super) enum QemuLog {
    File(PathBuf),
    /// Shared with the live reader (`log_so_far`): both read at explicit offsets, so one
    /// descriptor serves both.
    Memory(Arc<File>),
}

/// Appends the whole of `file` to `text`, reading at explicit offsets from the start (the
/// descriptor's own offset is QEMU's, or another reader's). Stops at the end or at an error,
/// keeping what was read.
pub(super) fn read_all_at(file: &File, text: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let start = text.len();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match file.read_at(&mut chunk, (text.len() - start) as u64) {
            Ok(0) => return Ok(text.len() - start),
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl QemuLog {
    /// Creates the log for machine `name` and returns the descriptor QEMU writes to.
    pub(super) fn create(log_dir: Option<&Path>, name: &str) -> Result<(QemuLog, File)> {
        match log_dir {
            Some(dir) => {
                let path = dir.join(format!("{name}.log"));
                let file = create_private(&path)?;
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
                Ok((QemuLog::Memory(Arc::new(ours)), file))
            }
        }
    }

    /// A descriptor to read the output while QEMU writes it (with positioned reads only).
    pub(super) fn reader(&self) -> Result<Arc<File>> {
        match self {
            QemuLog::File(path) => File::open(path)
                .map(Arc::new)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e)),
            QemuLog::Memory(f) => Ok(f.clone()),
        }
    }

    /// Everything QEMU wrote (call once QEMU is gone).
    pub(super) fn read_back(self) -> String {
        let mut text = Vec::new();
        let _ = match self {
            QemuLog::File(path) => File::open(path).and_then(|mut f| f.read_to_end(&mut text)),
            // From the start, at explicit offsets: the live reader may share the descriptor.
            QemuLog::Memory(f) => read_all_at(&f, &mut text),
        };
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// What [`Machine::prepare_launch`] created for the next run, kept in `Life` until QEMU is
/// started with it (or the launch is abandoned): dropping it closes every descriptor.
pub(super) struct Prepared {
    /// The configuration as of the prepare: the run uses it, not later changes.
    cfg: Config,
    /// The monitor: our end (or listener), and QEMU's end for a socketpair.
    monitor: Option<Listen>,
    /// The console socketpair: our end, QEMU's end.
    console: Option<(OwnedFd, OwnedFd)>,
    /// Where QEMU's stdout and stderr go.
    log: File,
    /// What QEMU inherits: the descriptors named in `base_args`, and those of `add_fd`.
    keep_fds: Vec<RawFd>,
    /// The arguments qm puts between the binary and the user's.
    base_args: Vec<String>,
    /// The guest agent's channel (`set_guest_agent`): its arguments go after the user's in
    /// qm's own command line (so that a virtio-serial controller of theirs exists first).
    agent: Option<crate::qga::launch::Planned>,
    /// The transcript file (QMP, console and agent), when asked for.
    transcript: Option<Arc<crate::qmp::TranscriptFile>>,
}

impl Machine {
    /// Starts QEMU and, unless QMP is off, connects and negotiates QMP.
    ///
    /// Fails with [`Error::State`] when already launched. Any other failure is an
    /// [`Error::Launch`] carrying QEMU's exit code (if it exited), the command line and its
    /// output; by then the process is gone and everything the launch created is removed. When
    /// QEMU exits before greeting, this returns at once rather than waiting out the QMP timer.
    ///
    /// This blocks until QEMU answers; to launch many machines at once without a thread for
    /// each, use [`launch_all`](crate::launch_all).
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
    ///
    /// This is [`prepare_launch`](Self::prepare_launch) (or what an earlier call prepared)
    /// then [`launch_argv`](Self::launch_argv) with qm's own command line: wrapper, binary,
    /// the base arguments, the extra ones.
    pub fn launch_with(&self, wait: impl Into<Wait>) -> Result<()> {
        self.launch_inner(None, &[], wait.into())
    }

    /// Prepares the next launch without starting QEMU: creates the monitor socketpair or
    /// listener, the console socketpair and QEMU's log, and returns the arguments qm puts
    /// between the binary and the extra arguments (`-display none … -chardev
    /// socket,id=mon,fd=N …`). The `fd=N` numbers are the descriptors QEMU will inherit under
    /// those numbers. Never blocks on QEMU. With a guest agent channel
    /// ([`set_guest_agent`](Self::set_guest_agent)) its arguments end the list; a
    /// virtio-serial controller of the caller's must then come before them in the argv.
    ///
    /// The run uses the configuration as of this call. Calling it again while prepared returns
    /// the same arguments. [`launch_argv`](Self::launch_argv) or [`launch`](Self::launch)
    /// start QEMU with what was prepared; [`abort_launch`](Self::abort_launch),
    /// [`shutdown`](Self::shutdown), [`kill`](Self::kill) and dropping the machine release it.
    /// A new prepare forgets the last run's exit code, pid, command line and log.
    ///
    /// Fails with [`Error::State`] when launched; any other failure is an [`Error::Launch`],
    /// with everything created so far removed, as for [`launch`](Self::launch).
    pub fn prepare_launch(&self) -> Result<Vec<String>> {
        let mut life = lock(&self.life);
        if life.launched {
            return Err(already_launched());
        }
        match self.prepare_locked(&mut life) {
            Ok(prepared) => {
                let mut base = prepared.base_args.clone();
                if let Some(agent) = &prepared.agent {
                    base.extend(agent.args.iter().cloned());
                }
                Ok(base)
            }
            Err(cause) => Err(self.launch_failed(&mut life, cause)),
        }
    }

    /// Starts exactly `argv` (`argv[0]` looked up in `PATH`; never a shell) instead of the
    /// command line qm builds, then connects and negotiates QMP as
    /// [`launch_with`](Self::launch_with) does: same wait, errors and cleanup. Prepares first
    /// when [`prepare_launch`](Self::prepare_launch) was not called.
    ///
    /// QEMU inherits the prepared descriptors, those of [`add_fd`](Self::add_fd), and
    /// `extra_fds` under their numbers (the caller keeps them open until this returns);
    /// nothing else. [`full_args`](Self::full_args) then returns `argv`.
    ///
    /// Fails with [`Error::Invalid`] for an empty `argv`, an argument holding NUL or an extra
    /// descriptor below 3 (stdin, stdout and stderr are qm's), leaving a prepared launch as it
    /// was; with [`Error::State`] when launched.
    pub fn launch_argv<I, S>(
        &self,
        argv: I,
        extra_fds: &[BorrowedFd<'_>],
        wait: impl Into<Wait>,
    ) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        if argv.is_empty() {
            return Err(Error::Invalid("argv is empty".into()));
        }
        if let Some(arg) = argv.iter().find(|a| a.contains('\0')) {
            return Err(Error::Invalid(format!("argument {arg:?} contains NUL")));
        }
        let extra: Vec<RawFd> = extra_fds.iter().map(AsRawFd::as_raw_fd).collect();
        if let Some(fd) = extra.iter().find(|&&fd| fd < 3) {
            return Err(Error::Invalid(format!(
                "extra descriptor {fd} is stdin, stdout or stderr, which QEMU gets from qm"
            )));
        }
        self.launch_inner(Some(argv), &extra, wait.into())
    }

    /// Releases what [`prepare_launch`](Self::prepare_launch) created, when the caller gives up
    /// before starting QEMU. Does nothing when not prepared; [`Error::State`] when launched.
    /// Never blocks on QEMU.
    pub fn abort_launch(&self) -> Result<()> {
        let mut life = lock(&self.life);
        if life.launched {
            return Err(Error::State(
                "the machine is launched: shut it down instead".into(),
            ));
        }
        self.release_prepared(&mut life);
        Ok(())
    }

    /// Drops a prepared launch and everything it created (sockets, socket files, the log, the
    /// temp dir); nothing when not prepared. Called with `life` locked and not launched.
    pub(super) fn release_prepared(&self, life: &mut Life) {
        if life.prepared.take().is_some() {
            self.post_shutdown(life);
        }
    }

    /// Prepare (unless prepared) and start, with `argv` or qm's own command line: the spawn
    /// half then the connect half, the same two steps [`launch_all`] takes for each machine.
    fn launch_inner(&self, argv: Option<Vec<String>>, extra: &[RawFd], wait: Wait) -> Result<()> {
        let wait = wait.or_default(self.qmp_timer());
        let deadline = wait.start()?;
        let mut life = lock(&self.life);
        if life.launched {
            return Err(already_launched());
        }
        let started = self
            .spawn_locked(&mut life, argv, extra)
            .and_then(|spawned| self.connect_locked(spawned, &deadline));
        started.map_err(|cause| self.launch_failed(&mut life, cause))
    }

    /// The [`Error::Launch`] for `cause`, once a QEMU still running is killed (it never became
    /// usable: its exit code is ours) and everything the launch created is removed.
    fn launch_failed(&self, life: &mut Life, cause: Error) -> Error {
        let exited_by_itself = self.exit_after(&cause);
        if exited_by_itself.is_none() {
            let _ = self.hard_shutdown();
        }
        life.prepared = None;
        self.post_shutdown(life);
        let output = lock(&self.output);
        Error::Launch {
            exitcode: exited_by_itself,
            command: output.full_args.join(" "),
            output: output.log.clone().unwrap_or_default(),
            cause: Box::new(cause),
        }
    }

    /// Creates what a run needs before QEMU starts, unless already prepared.
    fn prepare_locked<'l>(&self, life: &'l mut Life) -> Result<&'l Prepared> {
        if life.prepared.is_none() {
            self.quit_issued.store(false, Ordering::SeqCst);
            self.signal_sent.store(0, Ordering::SeqCst);
            *lock(&self.output) = RunOutput::default();
            // The last run's exit code and pid must not pass for this run's.
            *lock(&self.proc) = ProcState::None;
            self.last_pid.store(0, Ordering::SeqCst);
            let cfg = lock(&self.cfg).clone();
            let prepared = self.prepare_run(life, cfg)?;
            life.prepared = Some(prepared);
        }
        Ok(life.prepared.as_ref().expect("prepared above"))
    }

    fn prepare_run(&self, life: &mut Life, cfg: Config) -> Result<Prepared> {
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
        let mut console = None;
        if cfg.console.is_some() {
            let (host, qemu) = console::socketpair("console")?;
            keep_fds.push(qemu.as_raw_fd());
            console = Some((host, qemu));
        }

        let agent = match &cfg.guest_agent {
            Some(channel) => {
                let planned = crate::qga::launch::plan(channel, &cfg.args, |path| {
                    let path = match path {
                        Some(p) => p.clone(),
                        None => self.sock_dir()?.join(format!("{}-qga.sock", cfg.name)),
                    };
                    let listener = listen_unix(&path)?;
                    life.remove_files.push(path.clone());
                    Ok((listener, path))
                })?;
                keep_fds.extend(planned.keep_fd);
                Some(planned)
            }
            None => None,
        };

        let (qemu_log, log) = QemuLog::create(cfg.log_dir.as_deref(), &cfg.name)?;
        lock(&self.output).live_log = Some(qemu_log.reader()?);
        life.log = Some(qemu_log);
        // Opened before QEMU starts: a bad path fails the launch before there is a QEMU to kill.
        let transcript = match &cfg.qmp_transcript {
            Some(path) if cfg.qmp_enabled || console.is_some() || agent.is_some() => {
                Some(crate::qmp::TranscriptFile::open(path)?)
            }
            _ => None,
        };

        let base_args = args::base_args(
            &cfg,
            chardev,
            console.as_ref().map(|(_, qemu)| qemu.as_raw_fd()),
        );
        Ok(Prepared {
            cfg,
            monitor,
            console,
            log,
            keep_fds,
            base_args,
            agent,
            transcript,
        })
    }

    /// The spawn half of a launch: prepares (unless prepared), starts `argv` (`None`: qm's own
    /// command line) and the console's reader. Never waits for QEMU. On error the caller
    /// undoes it with [`launch_failed`](Self::launch_failed).
    fn spawn_locked(
        &self,
        life: &mut Life,
        argv: Option<Vec<String>>,
        extra_fds: &[RawFd],
    ) -> Result<Spawned> {
        self.prepare_locked(life)?;
        let Prepared {
            cfg,
            monitor,
            console,
            log,
            mut keep_fds,
            base_args,
            agent,
            transcript,
        } = life.prepared.take().expect("prepared above");
        let argv = argv.unwrap_or_else(|| {
            let mut own = args::around(&cfg, &base_args);
            if let Some(agent) = &agent {
                own.extend(agent.args.iter().cloned());
            }
            if cfg.incoming_defer {
                own.extend(["-incoming".to_owned(), "defer".to_owned()]);
            }
            own
        });
        keep_fds.extend_from_slice(extra_fds);
        lock(&self.output).full_args = argv.clone();
        // The schema cache's key: the binary, when the command line runs it.
        let runs_binary = argv.contains(&cfg.binary);
        debug!("{}: launch command: {}", cfg.name, argv.join(" "));

        let process = Arc::new(Process::spawn(Spawn {
            argv,
            keep_fds,
            inherit_all: cfg.inherit_fds,
            log,
        })?);
        self.last_pid
            .store(process.reported_pid(), Ordering::SeqCst);
        *lock(&self.proc) = ProcState::Running(process.clone());
        life.launched = true;
        // QEMU holds its ends now; ours must go so its exit reads as EOF.
        let console_host = console.map(|(host, _qemu)| host);

        // The console's reader starts here, not in the connect half: it never waits for QEMU,
        // and a batch launch then drains every console while it negotiates with the others.
        if let Some(console) = console_host {
            let log = match &cfg.console_log {
                Some(path) => Some(create_private(path)?),
                None => None,
            };
            let options = ConsoleOptions {
                log,
                buffer: cfg.console_buffer,
                name: cfg.name.clone(),
            };
            *lock(&self.console) = Some(Arc::new(Console::start_recorded(
                console,
                options,
                transcript.clone(),
            )?));
        }
        Ok(Spawned {
            cfg,
            process,
            monitor,
            agent,
            transcript,
            runs_binary,
        })
    }

    /// The connect half of a launch: the monitor's connection and QMP handshake, then the
    /// guest agent's channel, bounded by `deadline` (failing at once when QEMU exits). Called
    /// with `life` locked, after [`spawn_locked`](Self::spawn_locked) succeeded; on error the
    /// caller undoes the launch with [`launch_failed`](Self::launch_failed).
    fn connect_locked(&self, spawned: Spawned, deadline: &Deadline<'_>) -> Result<()> {
        let Spawned {
            cfg,
            process,
            monitor,
            agent,
            transcript,
            runs_binary,
        } = spawned;
        if let Some(listen) = monitor {
            let sock = listen.connect(&process, deadline)?;
            let client = Arc::new(QmpClient::new(sock, &cfg.name, cfg.max_message)?);
            client.set_max_queued_events(self.max_queued_events());
            if let Some(file) = &transcript {
                client.set_transcript(file.clone());
            }
            client.request_oob(self.qmp_oob_requested());
            // Published only once the handshake is over (a command from another thread must
            // not overtake qmp_capabilities), and also when it failed: events QEMU sent before
            // stay readable.
            let negotiated =
                client.handshake_watching(&deadline.to_wait(), Some(process.shared_exit_fd()?));
            if let Ok(greeting) = &negotiated {
                self.schema_connected(runs_binary.then_some(cfg.binary.as_str()), greeting);
            }
            *lock(&self.qmp) = Some(client);
            negotiated?;
        }
        if !cfg.wrapper.is_empty() {
            process.identify(&cfg.binary);
            self.last_pid
                .store(process.reported_pid(), Ordering::SeqCst);
        }
        if let Some(planned) = agent {
            let qmp = lock(&self.qmp).clone();
            let agent = planned.connect(
                process.exit_fd(),
                deadline,
                &cfg.name,
                crate::qga::DEFAULT_MAX_REPLY,
                qmp.as_ref(),
            )?;
            if let Some(file) = transcript {
                agent.set_transcript(file);
            }
            *lock(&self.agent) = Some(Arc::new(agent));
        }
        debug!("{}: launched, pid {}", cfg.name, process.reported_pid());
        Ok(())
    }
}

/// What the spawn half of a launch hands to its connect half: a running QEMU and the ends
/// still to connect.
struct Spawned {
    cfg: Config,
    process: Arc<Process>,
    monitor: Option<Listen>,
    agent: Option<crate::qga::launch::Planned>,
    transcript: Option<Arc<crate::qmp::TranscriptFile>>,
    runs_binary: bool,
}

impl Spawned {
    /// The descriptors whose readiness means the connect half can start without waiting for
    /// QEMU: the monitor (readable once QEMU greeted or connected) and QEMU's exit. Without a
    /// monitor, none: nothing to wait for before connecting the rest.
    fn ready_fds(&self) -> Option<[RawFd; 2]> {
        let monitor = match self.monitor.as_ref()? {
            Listen::Pair(ours, _) => ours.as_raw_fd(),
            Listen::Unix(l) => l.as_raw_fd(),
            Listen::Tcp(l) => l.as_raw_fd(),
        };
        Some([monitor, self.process.exit_fd().as_raw_fd()])
    }
}

/// Launches every machine in `machines` at once, from the calling thread, and returns one
/// result per machine, in the same order: the cheaper path for many machines, which needs no
/// thread per machine.
///
/// Every QEMU is started first (what [`Machine::prepare_launch`] creates, then the process;
/// nothing here waits for QEMU), then each is connected and negotiated as
/// [`Machine::launch`] does, in the order they become ready (greeted, or exited), so a QEMU
/// slow to greet does not hold up the others. All of it is bounded by one deadline: `wait`,
/// whose default is the largest QMP timer of the machines (no limit when one of them has none):
/// they start together, so the batch needs as long as its slowest machine.
///
/// Each result is what [`Machine::launch_with`] with the same wait would give that machine,
/// and one machine's failure leaves the others alone:
/// - [`Error::State`] when it is already launched;
/// - [`Error::Invalid`] for a machine that appears earlier in the slice too (it is launched
///   once, for its first place);
/// - [`Error::Launch`] for a launch that failed, with QEMU's exit code, command line and
///   output, and everything it created removed (a token fired during the batch gives the
///   machines not yet connected an [`Error::Launch`] whose cause is [`Error::Interrupted`]);
/// - [`Error::Interrupted`] for every machine when the wait's token had already fired, and for
///   those not started yet when it fires while starting: nothing of theirs was launched.
///
/// Each machine's launch lock is held from its start to the end of the batch (a shutdown
/// from another thread waits for the batch); they are taken in one stable order (by address),
/// so batches sharing machines, in any order, never deadlock with each other.
///
/// A machine prepared with [`Machine::prepare_launch`] starts with what was prepared and qm's
/// own command line; [`Machine::launch_argv`] has no batch form.
pub fn launch_all(machines: &[&Machine], wait: impl Into<Wait>) -> Vec<Result<()>> {
    let default = machines.iter().try_fold(Duration::ZERO, |longest, m| {
        m.qmp_timer().map(|t| longest.max(t))
    });
    let wait = wait.into().or_default(default);
    let Ok(deadline) = wait.start() else {
        // A fired token: the same error for each, launching nothing.
        return machines.iter().map(|_| wait.start().map(drop)).collect();
    };
    let n = machines.len();
    let mut results: Vec<Option<Result<()>>> = (0..n).map(|_| None).collect();

    // The launch locks, taken in the order of the machines' addresses; the first place of a
    // machine that appears twice takes it, the others are refused.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (std::ptr::from_ref(machines[i]) as usize, i));
    let mut lives: Vec<Option<MutexGuard<'_, Life>>> = (0..n).map(|_| None).collect();
    let mut first: Option<usize> = None;
    for &i in &order {
        match first {
            Some(j) if std::ptr::eq(machines[i], machines[j]) => {
                results[i] = Some(Err(Error::Invalid(format!(
                    "machines[{i}] is the same machine as machines[{j}], which this batch \
                     launches"
                ))));
            }
            _ => {
                first = Some(i);
                lives[i] = Some(lock(&machines[i].life));
            }
        }
    }

    // Start every QEMU.
    let mut spawned: Vec<Option<Spawned>> = (0..n).map(|_| None).collect();
    for (i, life) in lives.iter_mut().enumerate() {
        let Some(life) = life.as_mut() else { continue };
        let m = machines[i];
        if life.launched {
            results[i] = Some(Err(already_launched()));
        } else if deadline.cancelled() {
            results[i] = Some(Err(Error::Interrupted));
        } else {
            match m.spawn_locked(life, None, &[]) {
                Ok(s) => spawned[i] = Some(s),
                Err(cause) => results[i] = Some(Err(m.launch_failed(life, cause))),
            }
        }
    }

    // Connect each, the ready ones first.
    let mut pending: Vec<usize> = (0..n).filter(|&i| spawned[i].is_some()).collect();
    while !pending.is_empty() {
        let ready = ready_to_connect(&pending, &spawned, &deadline);
        for i in ready {
            let m = machines[i];
            let life = lives[i].as_mut().expect("locked above");
            let s = spawned[i].take().expect("spawned above");
            let connected = m
                .connect_locked(s, &deadline)
                .map_err(|cause| m.launch_failed(life, cause));
            results[i] = Some(connected);
        }
        pending.retain(|&i| spawned[i].is_some());
    }
    drop(lives);
    results
        .into_iter()
        .map(|r| r.expect("every machine has a result"))
        .collect()
}

/// Which of the `pending` machines can be connected now without waiting for their QEMU; waits
/// (within `deadline`) until there is one. All of them once the deadline passed or the token
/// fired (each then fails as its own launch would), and when polling fails (then each is
/// connected in turn).
fn ready_to_connect(
    pending: &[usize],
    spawned: &[Option<Spawned>],
    deadline: &Deadline<'_>,
) -> Vec<usize> {
    let mut watched = Vec::with_capacity(pending.len());
    for &i in pending {
        match spawned[i].as_ref().and_then(Spawned::ready_fds) {
            Some(fds) => watched.push((i, fds)),
            // No monitor: nothing to wait for.
            None => return vec![i],
        }
    }
    let mut fds: Vec<sys::PollFd> = watched
        .iter()
        .flat_map(|(_, fds)| fds.map(|fd| sys::pollfd(fd, sys::POLLIN)))
        .collect();
    if let Ok(Some(fd)) = deadline.cancel_fd() {
        fds.push(sys::pollfd(fd, sys::POLLIN));
    }
    let ready: Vec<usize> = match sys::poll(&mut fds, deadline.remaining()) {
        Ok(n) if n > 0 && !deadline.cancelled() => watched
            .iter()
            .zip(fds.chunks(2))
            .filter(|(_, pair)| pair.iter().any(|p| p.revents != 0))
            .map(|((i, _), _)| *i)
            .collect(),
        _ => Vec::new(),
    };
    if ready.is_empty() {
        pending.to_vec()
    } else {
        ready
    }
}

fn already_launched() -> Error {
    Error::State("the machine is already launched".into())
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
        crate::accept::accept_from_qemu(
            listener.as_fd(),
            process.exit_fd(),
            deadline,
            "the monitor",
            Error::Disconnected,
        )
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

/// Creates (or truncates) a file only its owner can read.
fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))
}
