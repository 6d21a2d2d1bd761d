//! [`Machine`]: one QEMU virtual machine, from configuration to cleanup.
//!
//! The behaviour follows QEMU's Python `QEMUMachine` (python/qemu/machine/machine.py).

mod console;
mod process;
mod tree;
mod vfork;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::event_match;
use crate::log::{debug, warning};
use crate::qmp::{QmpClient, DEFAULT_MAX_MESSAGE};
use crate::wait::{poll, pollfd, Cancel, Wait};
use console::Console;
use process::{Process, Spawn};

/// How long [`Machine::kill`] waits for a SIGKILLed QEMU to disappear, as the seed does.
const HARD_KILL_WAIT: Duration = Duration::from_secs(60);

/// How long qm waits for a QEMU that closed its monitor to exit by itself before killing it.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The graceful-shutdown timeout used when a running machine is dropped, as the seed's default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the QMP monitor lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MonitorAddress {
    /// A socketpair; QEMU gets its end as `-chardev socket,id=mon,fd=N`. No file is created.
    #[default]
    SocketPair,
    /// A unix socket at this path (or, for `None`, at `<sock_dir>/<name>-monitor.sock`):
    /// qm listens (mode 0600) and QEMU connects.
    Unix(Option<PathBuf>),
    /// A TCP address: qm listens and QEMU connects. Port 0 picks a free port.
    Tcp {
        /// Host name or address to listen on, e.g. `127.0.0.1`.
        host: String,
        /// Port, or 0 for any free one.
        port: u16,
    },
}

#[derive(Clone, Debug)]
struct Config {
    binary: String,
    args: Vec<String>,
    wrapper: Vec<String>,
    name: String,
    base_temp_dir: PathBuf,
    sock_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    monitor: MonitorAddress,
    drain_console: bool,
    console_log: Option<PathBuf>,
    qmp_timer: Option<Duration>,
    qmp_enabled: bool,
    machine: Option<String>,
    console: Option<(Option<String>, usize)>,
    /// Descriptors registered with `add_fd`, inherited by QEMU.
    pass_fds: Vec<RawFd>,
    max_message: usize,
}

/// One QEMU virtual machine.
///
/// Every method takes `&self` and is safe to call from many threads at once: commands from
/// several threads run concurrently, each getting its own reply; a shutdown in the middle fails
/// the others with [`Error::Disconnected`]. Configuration changes apply to the next launch.
/// Dropping a running machine shuts it down (gracefully, [`DEFAULT_SHUTDOWN_TIMEOUT`]).
pub struct Machine {
    cfg: Mutex<Config>,
    /// Serialises launch and shutdown; owns what a run created.
    life: Mutex<Life>,
    /// The current QMP connection, kept after it closes so its queued events stay readable.
    qmp: Mutex<Option<Arc<QmpClient>>>,
    proc: Mutex<ProcState>,
    /// The console while launched. Its own lock, so console calls never wait for a shutdown.
    console: Mutex<Option<Console>>,
    temp_dir: Mutex<Option<tempfile::TempDir>>,
    /// Set by a successful `quit`, and by `wait`: QEMU's exit is expected.
    quit_issued: AtomicBool,
    /// The signal a shutdown sent, if any: an exit by it is ours, not worth a warning.
    signal_sent: AtomicI32,
    output: Mutex<RunOutput>,
}

#[derive(Default)]
struct Life {
    launched: bool,
    /// Monitor socket paths created by qm, removed at cleanup.
    remove_files: Vec<PathBuf>,
    /// Where QEMU's stdout and stderr go, read back at cleanup.
    log: Option<QemuLog>,
}

/// QEMU's output: `<log_dir>/<name>.log`, or without a log dir an anonymous memory file, which
/// saves creating, reading back and unlinking a file on disk for every machine.
enum QemuLog {
    File(PathBuf),
    Memory(File),
}

impl QemuLog {
    /// Creates the log for machine `name` and returns the descriptor QEMU writes to.
    fn create(log_dir: Option<&Path>, name: &str) -> Result<(QemuLog, File)> {
        match log_dir {
            Some(dir) => {
                let path = dir.join(format!("{name}.log"));
                let file = create_private(&path, true)?;
                Ok((QemuLog::File(path), file))
            }
            None => {
                let cname = std::ffi::CString::new(format!("qm-{name}.log"))
                    .map_err(|_| Error::Invalid("machine name contains NUL".into()))?;
                // SAFETY: memfd_create with a valid C string; the result is checked.
                let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
                if fd < 0 {
                    return Err(Error::last_os("creating the in-memory log"));
                }
                // SAFETY: a fresh descriptor nobody else owns.
                let file = unsafe { File::from_raw_fd(fd) };
                let ours = file
                    .try_clone()
                    .map_err(|e| Error::io("duplicating the in-memory log", e))?;
                Ok((QemuLog::Memory(ours), file))
            }
        }
    }

    /// Everything QEMU wrote (call once QEMU is gone).
    fn read_back(self) -> String {
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

#[derive(Default)]
enum ProcState {
    #[default]
    None,
    Running(Arc<Process>),
    Exited(i32),
}

#[derive(Default)]
struct RunOutput {
    full_args: Vec<String>,
    log: Option<String>,
}

static NEXT_NAME: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Machine {
    /// A machine that will run `binary` (e.g. `qemu-system-x86_64`, looked up in `PATH`).
    /// Nothing starts until [`launch`](Self::launch).
    pub fn new(binary: impl Into<String>) -> Machine {
        let name = format!(
            "qm-{}-{}",
            std::process::id(),
            NEXT_NAME.fetch_add(1, Ordering::Relaxed)
        );
        Machine {
            cfg: Mutex::new(Config {
                binary: binary.into(),
                args: Vec::new(),
                wrapper: Vec::new(),
                name,
                base_temp_dir: PathBuf::from("/var/tmp"),
                sock_dir: None,
                log_dir: None,
                monitor: MonitorAddress::SocketPair,
                drain_console: false,
                console_log: None,
                qmp_timer: Some(Duration::from_secs(30)),
                qmp_enabled: true,
                machine: None,
                console: None,
                pass_fds: Vec::new(),
                max_message: DEFAULT_MAX_MESSAGE,
            }),
            life: Mutex::new(Life::default()),
            qmp: Mutex::new(None),
            proc: Mutex::new(ProcState::None),
            console: Mutex::new(None),
            temp_dir: Mutex::new(None),
            quit_issued: AtomicBool::new(false),
            signal_sent: AtomicI32::new(0),
            output: Mutex::new(RunOutput::default()),
        }
    }

    // ---- configuration -------------------------------------------------------------------

    /// Appends arguments for QEMU after the ones qm builds.
    pub fn add_args<I, S>(&self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        lock(&self.cfg)
            .args
            .extend(args.into_iter().map(Into::into));
    }

    /// Sets the argv prefix QEMU runs under, e.g. `["strace", "-f"]` (never a shell).
    pub fn set_wrapper<I, S>(&self, wrapper: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        lock(&self.cfg).wrapper = wrapper.into_iter().map(Into::into).collect();
    }

    /// Names the machine: the prefix of its log and socket files. Rejects names that could
    /// escape the log directory (`/`, `..`, NUL) or are empty.
    pub fn set_name(&self, name: &str) -> Result<()> {
        if name.is_empty() || name.contains('/') || name.contains('\0') || name.contains("..") {
            return Err(Error::Invalid(format!(
                "machine name {name:?} must be non-empty without '/', '..' or NUL"
            )));
        }
        lock(&self.cfg).name = name.to_owned();
        Ok(())
    }

    /// Where the temporary directory is created (default `/var/tmp`).
    pub fn set_base_temp_dir(&self, dir: impl Into<PathBuf>) {
        lock(&self.cfg).base_temp_dir = dir.into();
    }

    /// Where qm-chosen socket paths go (default: the temporary directory).
    pub fn set_sock_dir(&self, dir: impl Into<PathBuf>) {
        lock(&self.cfg).sock_dir = Some(dir.into());
    }

    /// Writes QEMU's stdout and stderr to `<dir>/<name>.log`, kept after shutdown. Without it
    /// they go to an anonymous in-memory file. Either way [`get_log`](Self::get_log) returns
    /// them after a shutdown or a failed launch.
    pub fn set_log_dir(&self, dir: impl Into<PathBuf>) {
        lock(&self.cfg).log_dir = Some(dir.into());
    }

    /// Where the QMP monitor lives (default: a socketpair).
    pub fn set_monitor_address(&self, address: MonitorAddress) {
        lock(&self.cfg).monitor = address;
    }

    /// Enables a background drain of the console, so QEMU never blocks on a console nobody
    /// reads; bytes are kept for [`console`](Self::console) readers.
    pub fn set_drain_console(&self, drain: bool) {
        lock(&self.cfg).drain_console = drain;
    }

    /// Appends every console byte to this file (implies the drain).
    pub fn set_console_log(&self, path: Option<PathBuf>) {
        lock(&self.cfg).console_log = path;
    }

    /// Bounds the QMP handshake at launch (accept, greeting, capabilities) and is the default
    /// timeout of [`qmp`](Self::qmp) and [`cmd`](Self::cmd). `None` waits forever. Default 30 s.
    pub fn set_qmp_timer(&self, timer: Option<Duration>) {
        lock(&self.cfg).qmp_timer = timer;
    }

    /// The QMP timer (see [`set_qmp_timer`](Self::set_qmp_timer)); `None` is no limit.
    pub fn qmp_timer(&self) -> Option<Duration> {
        lock(&self.cfg).qmp_timer
    }

    /// Turns the QMP monitor on (default) or off. Without it, shutdown uses SIGTERM.
    pub fn set_qmp_monitor(&self, enabled: bool) {
        lock(&self.cfg).qmp_enabled = enabled;
    }

    /// Adds `-machine TYPE`.
    pub fn set_machine(&self, machine_type: &str) {
        lock(&self.cfg).machine = Some(machine_type.to_owned());
    }

    /// Adds a console on a socketpair: `-serial chardev:console` or, with a device type (e.g.
    /// `isa-serial`), `-device TYPE,chardev=console`; `index` > 0 first adds that many
    /// `-serial null`.
    pub fn set_console(&self, device_type: Option<&str>, index: usize) {
        lock(&self.cfg).console = Some((device_type.map(str::to_owned), index));
    }

    /// Adds an unused `-monitor null`.
    pub fn add_monitor_null(&self) {
        self.add_args(["-monitor", "null"]);
    }

    /// Passes `fd` to QEMU as `-add-fd fd=FD,set=FDSET,opaque=OPAQUE[,OPTS]`. QEMU inherits it
    /// under the same number; the caller keeps ownership and must keep it open until launch.
    /// Commas in `opaque` are escaped; `opts` is passed as it is (more `key=value` options).
    pub fn add_fd(&self, fd: BorrowedFd<'_>, fdset: u32, opaque: &str, opts: &str) {
        let raw = fd.as_raw_fd();
        let mut option = format!("fd={raw},set={fdset},opaque={}", option_value(opaque));
        if !opts.is_empty() {
            option.push(',');
            option.push_str(opts);
        }
        let mut cfg = lock(&self.cfg);
        cfg.pass_fds.push(raw);
        cfg.args.extend(["-add-fd".to_owned(), option]);
    }

    /// Caps the size of one message from QEMU (default [`DEFAULT_MAX_MESSAGE`], 64 MiB): a
    /// larger one fails the connection with [`Error::Protocol`] instead of exhausting memory.
    pub fn set_max_message_size(&self, bytes: usize) {
        lock(&self.cfg).max_message = bytes.max(1024);
    }

    // ---- state -----------------------------------------------------------------------------

    /// The QEMU binary.
    pub fn binary(&self) -> String {
        lock(&self.cfg).binary.clone()
    }

    /// The extra arguments (not the ones qm builds; see [`full_args`](Self::full_args)).
    pub fn args(&self) -> Vec<String> {
        lock(&self.cfg).args.clone()
    }

    /// The machine's name.
    pub fn name(&self) -> String {
        lock(&self.cfg).name.clone()
    }

    /// The whole command line of the last launch: wrapper, binary, qm's arguments, extra ones.
    pub fn full_args(&self) -> Vec<String> {
        lock(&self.output).full_args.clone()
    }

    /// True while QEMU runs.
    pub fn is_running(&self) -> bool {
        match &*lock(&self.proc) {
            ProcState::Running(p) => p.try_status().is_none(),
            _ => false,
        }
    }

    /// QEMU's exit status once it exited (`-N`: killed by signal N); `None` while it runs or
    /// before a launch.
    pub fn exitcode(&self) -> Option<i32> {
        match &*lock(&self.proc) {
            ProcState::Running(p) => p.try_status(),
            ProcState::Exited(code) => Some(*code),
            ProcState::None => None,
        }
    }

    /// QEMU's pid while it runs. Under a [wrapper](Self::set_wrapper): QEMU's own pid if, once
    /// QMP is up, exactly one process of the launch's process group runs the QEMU binary;
    /// otherwise (QMP off, QEMU not found or not alone) the wrapper's pid.
    pub fn pid(&self) -> Option<u32> {
        match &*lock(&self.proc) {
            ProcState::Running(p) if p.try_status().is_none() => Some(p.reported_pid()),
            _ => None,
        }
    }

    /// What QEMU wrote to stdout and stderr, available after a shutdown or a failed launch.
    pub fn get_log(&self) -> Option<String> {
        lock(&self.output).log.clone()
    }

    /// The machine's temporary directory (mode 0700), created on first use under the base
    /// temp dir and removed at shutdown.
    pub fn temp_dir(&self) -> Result<PathBuf> {
        let base = lock(&self.cfg).base_temp_dir.clone();
        let mut dir = lock(&self.temp_dir);
        if dir.is_none() {
            // Checked first so the error carries the OS's errno (tempfile's wraps it).
            std::fs::metadata(&base)
                .map_err(|e| Error::io(format!("creating a temp dir in {}", base.display()), e))?;
            let created = tempfile::Builder::new()
                .prefix("qemu-machine-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(&base)
                .map_err(|e| Error::io(format!("creating a temp dir in {}", base.display()), e))?;
            *dir = Some(created);
        }
        Ok(dir.as_ref().expect("created above").path().to_owned())
    }

    /// Where `<name>.log` goes, if [`set_log_dir`](Self::set_log_dir) was called. Without a log
    /// dir QEMU's output is kept in memory; either way [`get_log`](Self::get_log) has it.
    pub fn log_dir(&self) -> Option<PathBuf> {
        lock(&self.cfg).log_dir.clone()
    }

    /// Where qm-chosen socket paths go: the configured sock dir, or the temporary directory.
    pub fn sock_dir(&self) -> Result<PathBuf> {
        let configured = lock(&self.cfg).sock_dir.clone();
        match configured {
            Some(dir) => Ok(dir),
            None => self.temp_dir(),
        }
    }

    // ---- launch ----------------------------------------------------------------------------

    /// Starts QEMU and, unless QMP is off, connects and negotiates QMP.
    ///
    /// Fails with [`Error::State`] when already launched. Any other failure is an
    /// [`Error::Launch`] carrying QEMU's exit code (if it exited), the command line and its
    /// output; by then the process is gone and everything the launch created is removed. When
    /// QEMU exits before greeting, this returns at once rather than waiting out the QMP timer.
    pub fn launch(&self) -> Result<()> {
        self.launch_inner(None)
    }

    /// [`launch`](Self::launch), also interrupted when `cancel` fires (the launch then fails
    /// with [`Error::Launch`] whose cause is [`Error::Interrupted`], and cleans up as usual).
    /// A token that already fired fails at once with [`Error::Interrupted`], launching nothing.
    pub fn launch_with_cancel(&self, cancel: &Cancel) -> Result<()> {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        self.launch_inner(Some(cancel))
    }

    fn launch_inner(&self, cancel: Option<&Cancel>) -> Result<()> {
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
        match self.launch_locked(&mut life, &cfg, cancel) {
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

    fn launch_locked(&self, life: &mut Life, cfg: &Config, cancel: Option<&Cancel>) -> Result<()> {
        let mut wait = Wait::from(cfg.qmp_timer);
        if let Some(cancel) = cancel {
            wait = wait.cancel(cancel);
        }
        let deadline = wait.start();
        let mut keep_fds = cfg.pass_fds.clone();
        let mut base = vec!["-display", "none", "-vga", "none"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();

        // The monitor: our end (or listener) and what QEMU gets.
        let mut monitor = None;
        if cfg.qmp_enabled {
            let (listen, chardev) = match &cfg.monitor {
                MonitorAddress::SocketPair => {
                    let (ours, theirs) = console::socketpair("monitor")?;
                    let chardev = format!("socket,id=mon,fd={}", theirs.as_raw_fd());
                    keep_fds.push(theirs.as_raw_fd());
                    (Listen::Pair(ours, theirs), chardev)
                }
                MonitorAddress::Unix(path) => {
                    let path = match path {
                        Some(p) => p.clone(),
                        None => self.sock_dir()?.join(format!("{}-monitor.sock", cfg.name)),
                    };
                    let listener = listen_unix(&path)?;
                    life.remove_files.push(path.clone());
                    (
                        Listen::Unix(listener),
                        format!(
                            "socket,id=mon,path={}",
                            option_value(&path.to_string_lossy())
                        ),
                    )
                }
                MonitorAddress::Tcp { host, port } => {
                    let listener = std::net::TcpListener::bind((host.as_str(), *port))
                        .map_err(|e| Error::io(format!("listening on {host}:{port}"), e))?;
                    let port = listener
                        .local_addr()
                        .map_err(|e| Error::io("local_addr", e))?;
                    (
                        Listen::Tcp(listener),
                        format!(
                            "socket,id=mon,host={},port={}",
                            option_value(host),
                            port.port()
                        ),
                    )
                }
            };
            base.extend(["-chardev".into(), chardev]);
            base.extend(["-mon".into(), "chardev=mon,mode=control".into()]);
            monitor = Some(listen);
        }
        if let Some(machine) = &cfg.machine {
            base.extend(["-machine".into(), machine.clone()]);
        }
        let mut console_host = None;
        let mut console_qemu = None;
        if let Some((device, index)) = &cfg.console {
            for _ in 0..*index {
                base.extend(["-serial".into(), "null".into()]);
            }
            let (host, qemu) = console::socketpair("console")?;
            base.extend([
                "-chardev".into(),
                format!("socket,id=console,fd={}", qemu.as_raw_fd()),
            ]);
            match device {
                None => base.extend(["-serial".into(), "chardev:console".into()]),
                Some(dev) => base.extend(["-device".into(), format!("{dev},chardev=console")]),
            }
            keep_fds.push(qemu.as_raw_fd());
            console_host = Some(host);
            console_qemu = Some(qemu);
        }

        let (qemu_log, log) = QemuLog::create(cfg.log_dir.as_deref(), &cfg.name)?;
        life.log = Some(qemu_log);

        let full_args: Vec<String> = cfg
            .wrapper
            .iter()
            .chain([&cfg.binary])
            .chain(&base)
            .chain(&cfg.args)
            .cloned()
            .collect();
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
            let sock = listen.connect(&process, &deadline)?;
            let client = Arc::new(QmpClient::new(sock, &cfg.name, cfg.max_message)?);
            // Published only once the handshake is over (a command from another thread must
            // not overtake qmp_capabilities), and also when it failed: events QEMU sent before
            // stay readable.
            let negotiated = client.handshake_watching(&wait, Some(process.exit_fd()));
            *lock(&self.qmp) = Some(client);
            negotiated?;
        }
        if !cfg.wrapper.is_empty() {
            process.identify(&cfg.binary);
        }
        debug!("{}: launched, pid {}", cfg.name, process.reported_pid());
        Ok(())
    }

    // ---- QMP -------------------------------------------------------------------------------

    fn client(&self) -> Result<Arc<QmpClient>> {
        lock(&self.qmp)
            .clone()
            .ok_or_else(|| Error::State("no QMP connection (not launched, or QMP is off)".into()))
    }

    /// The connection for a new command: a machine that was shut down is a state error, not
    /// a disconnection (calls in flight during the shutdown get [`Error::Disconnected`]).
    fn live_client(&self) -> Result<Arc<QmpClient>> {
        let client = self.client()?;
        if client.is_closed() {
            return Err(Error::State(
                "the machine is not running (it was shut down)".into(),
            ));
        }
        Ok(client)
    }

    fn default_wait(&self) -> Wait {
        Wait::from(lock(&self.cfg).qmp_timer)
    }

    /// Runs a QMP command and returns the raw response, `{"return": …}` or `{"error": …}`,
    /// waiting at most the QMP timer. `args` is sent as it is (see [`conv_keys`](crate::conv_keys)).
    pub fn qmp(&self, cmd: &str, args: Option<&Value>) -> Result<Value> {
        self.qmp_with(cmd, args, self.default_wait())
    }

    /// [`qmp`](Self::qmp) with an explicit wait.
    pub fn qmp_with(
        &self,
        cmd: &str,
        args: Option<&Value>,
        wait: impl Into<Wait>,
    ) -> Result<Value> {
        let response = self.live_client()?.execute(cmd, args, wait)?;
        if cmd == "quit" && response.get("return").is_some() {
            self.quit_issued.store(true, Ordering::SeqCst);
        }
        Ok(response)
    }

    /// Runs a QMP command and returns its `return` value, or [`Error::Qmp`] with QEMU's error
    /// class and description.
    pub fn cmd(&self, cmd: &str, args: Option<&Value>) -> Result<Value> {
        self.cmd_with(cmd, args, self.default_wait())
    }

    /// [`cmd`](Self::cmd) with an explicit wait.
    pub fn cmd_with(
        &self,
        cmd: &str,
        args: Option<&Value>,
        wait: impl Into<Wait>,
    ) -> Result<Value> {
        crate::qmp::into_return(self.qmp_with(cmd, args, wait)?)
    }

    /// Sends a descriptor to QEMU with SCM_RIGHTS, for a following `getfd` or `add-fd`.
    pub fn send_fd_scm(&self, fd: BorrowedFd<'_>) -> Result<()> {
        self.live_client()?.send_fd(fd)
    }

    /// Opens `path` read-only and sends it with [`send_fd_scm`](Self::send_fd_scm).
    pub fn send_file_scm(&self, path: &Path) -> Result<()> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        self.send_fd_scm(file.as_fd())
    }

    // ---- events ----------------------------------------------------------------------------

    /// The oldest queued event. A zero wait returns `None` when there is none; a longer wait
    /// fails with [`Error::Timeout`]. Events received before a shutdown stay readable after it.
    pub fn get_qmp_event(&self, wait: impl Into<Wait>) -> Result<Option<Value>> {
        self.client()?.pull_event(wait)
    }

    /// Every queued event, oldest first; with a non-zero wait, waits for at least one.
    pub fn get_qmp_events(&self, wait: impl Into<Wait>) -> Result<Vec<Value>> {
        self.client()?.get_events(wait)
    }

    /// Drops every queued event.
    pub fn clear_events(&self) {
        if let Some(client) = lock(&self.qmp).as_ref() {
            client.clear_events();
        }
    }

    /// Waits for an event called `name` that matches `filter` (see [`event_match`]).
    pub fn event_wait(
        &self,
        name: &str,
        filter: Option<&Value>,
        wait: impl Into<Wait>,
    ) -> Result<Option<Value>> {
        self.events_wait(&[(name, filter)], wait)
    }

    /// Waits for the first event that matches any `(name, filter)` pair. Queued events are
    /// searched first; events that do not match stay queued, in order. A zero wait returns
    /// `None` when nothing matches; a longer one fails with [`Error::Timeout`].
    pub fn events_wait(
        &self,
        events: &[(&str, Option<&Value>)],
        wait: impl Into<Wait>,
    ) -> Result<Option<Value>> {
        self.client()?.take_event(
            |ev| {
                events.iter().any(|(name, filter)| {
                    ev["event"].as_str() == Some(name) && event_match(ev, *filter)
                })
            },
            wait,
        )
    }

    // ---- console ---------------------------------------------------------------------------

    /// The console descriptor (a connected stream socket), owned by the machine and valid until
    /// shutdown begins. Fails unless [`set_console`](Self::set_console) was called and the
    /// machine is launched.
    pub fn console_fd(&self) -> Result<RawFd> {
        lock(&self.console)
            .as_ref()
            .and_then(Console::fd)
            .ok_or_else(|| Error::State("no console (set_console before launch)".into()))
    }

    /// A new handle on the console (a duplicate of [`console_fd`](Self::console_fd)). Close it
    /// before shutting down a machine without a drain, so QEMU never blocks on it.
    pub fn console(&self) -> Result<UnixStream> {
        let console = lock(&self.console);
        let fd = console
            .as_ref()
            .and_then(Console::fd)
            .ok_or_else(|| Error::State("no console (set_console before launch)".into()))?;
        // SAFETY: fd stays open while we hold the console lock.
        let dup = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicating the console socket", e))?;
        Ok(UnixStream::from(dup))
    }

    // ---- shutdown --------------------------------------------------------------------------

    /// Shuts QEMU down gracefully: `quit` over QMP (SIGTERM without QMP), then waits up to the
    /// wait's timeout for the exit. If that fails, kills QEMU and returns
    /// [`Error::AbnormalShutdown`]. Cleanup always runs. Does nothing when not launched.
    pub fn shutdown(&self, wait: impl Into<Wait>) -> Result<()> {
        self.shutdown_inner(false, wait.into())
    }

    /// Kills QEMU (SIGKILL), reaps it and cleans up. Does nothing when not launched.
    pub fn kill(&self) -> Result<()> {
        self.shutdown_inner(true, Wait::forever())
    }

    /// Waits for QEMU to exit by itself (e.g. the guest powered off), then cleans up; kills it
    /// and returns [`Error::AbnormalShutdown`] when it does not exit in time.
    pub fn wait(&self, wait: impl Into<Wait>) -> Result<()> {
        self.quit_issued.store(true, Ordering::SeqCst);
        self.shutdown_inner(false, wait.into())
    }

    fn shutdown_inner(&self, hard: bool, wait: Wait) -> Result<()> {
        let mut life = lock(&self.life);
        if !life.launched {
            return Ok(());
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
                    Err(Error::AbnormalShutdown(format!(
                        "could not perform graceful shutdown: {cause}"
                    )))
                }
            }
        };
        self.post_shutdown(&mut life);
        result
    }

    /// Before waiting for QEMU: close the console so QEMU can't block writing to it.
    fn early_cleanup(&self) {
        if let Some(console) = lock(&self.console).as_mut() {
            console.close_user();
        }
    }

    fn soft_shutdown(&self, wait: &Wait) -> Result<()> {
        self.early_cleanup();
        let deadline = wait.start();
        if deadline.cancelled() {
            return Err(Error::Interrupted);
        }
        let process = self.process()?;
        let client = lock(&self.qmp).clone();
        match client {
            Some(client) => {
                let quit = if self.quit_issued.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    self.qmp_with("quit", None, deadline.to_wait()).map(drop)
                };
                client.close();
                quit?;
            }
            None if !self.quit_issued.load(Ordering::SeqCst) => {
                self.send_signal(&process, libc::SIGTERM)?
            }
            None => {}
        }
        process.wait(&deadline).map(drop)
    }

    fn hard_shutdown(&self) -> Result<()> {
        self.early_cleanup();
        let process = self.process()?;
        self.send_signal(&process, libc::SIGKILL)?;
        process
            .wait(&Wait::timeout(HARD_KILL_WAIT).start())
            .map(drop)
    }

    /// QEMU's exit status if it has exited, or exits soon: a QEMU that hung up on its monitor
    /// (`cause` is a disconnection) is on its way out, and is given a moment to finish so that
    /// its exit code, its last words and a signal someone else sent are its own, not our
    /// SIGKILL's.
    fn exit_after(&self, cause: &Error) -> Option<i32> {
        let process = self.process().ok()?;
        let grace = match cause {
            Error::Disconnected(_) => EXIT_GRACE,
            _ => Duration::ZERO,
        };
        process.wait(&Wait::timeout(grace).start()).ok()
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

    fn process(&self) -> Result<Arc<Process>> {
        match &*lock(&self.proc) {
            ProcState::Running(p) => Ok(p.clone()),
            _ => Err(Error::State("no QEMU process".into())),
        }
    }

    /// After QEMU exited (or a launch failed): close everything, read the log back, remove
    /// files, and report a death by a signal we did not send.
    fn post_shutdown(&self, life: &mut Life) {
        if let Some(client) = lock(&self.qmp).as_ref() {
            client.close();
        }
        let console = lock(&self.console).take();
        if let Some(console) = console {
            console.finish();
        }
        let exitcode = {
            let mut proc = lock(&self.proc);
            let code = match &*proc {
                ProcState::Running(p) => p.try_status(),
                ProcState::Exited(c) => Some(*c),
                ProcState::None => None,
            };
            // Forget the process (and its pidfd) once reaped.
            if let Some(code) = code {
                *proc = ProcState::Exited(code);
            }
            code
        };
        if let Some(log) = life.log.take() {
            lock(&self.output).log = Some(log.read_back());
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

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.shutdown(DEFAULT_SHUTDOWN_TIMEOUT);
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
                pollfd(listener.as_raw_fd(), libc::POLLIN),
                pollfd(process.exit_fd().as_raw_fd(), libc::POLLIN),
            ];
            if let Some(fd) = deadline.cancel_fd()? {
                fds.push(pollfd(fd, libc::POLLIN));
            }
            if poll(&mut fds, deadline.remaining())? == 0 {
                return Err(Error::Timeout(
                    "waiting for QEMU to connect to the monitor".into(),
                ));
            }
            if fds[0].revents != 0 {
                // SAFETY: accept4 on a listening socket; we don't need the peer address.
                let fd = unsafe {
                    libc::accept4(
                        listener.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if fd >= 0 {
                    // SAFETY: a fresh descriptor.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                return Err(Error::last_os("accepting the monitor connection"));
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

/// A value for QEMU's `key=value,…` option syntax: commas are doubled, so a path or name can
/// never end one option and start another (`path=x,server=on`).
pub(crate) fn option_value(value: &str) -> String {
    value.replace(',', ",,")
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
    // SAFETY: plain socket(2); checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os("creating the monitor socket"));
    }
    // SAFETY: fresh descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // On Linux the socket file takes the mode of the socket inode: set it before bind so the
    // path is never reachable by other users, not even for a moment.
    // SAFETY: fchmod on our socket.
    if unsafe { libc::fchmod(sock.as_raw_fd(), 0o600) } != 0 {
        return Err(Error::last_os("restricting the monitor socket's mode"));
    }
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid empty address.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    use std::os::unix::ffi::OsStrExt;
    for (dst, src) in sun.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: sun is a valid, NUL-terminated sockaddr_un (zeroed beyond the path).
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(Error::last_os(format!("binding {}", path.display())));
    }
    // SAFETY: listen on our bound socket.
    if unsafe { libc::listen(sock.as_raw_fd(), 1) } != 0 {
        return Err(Error::last_os(format!("listening on {}", path.display())));
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(UnixListener::from(sock))
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
