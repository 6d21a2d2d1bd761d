//! What to run: the machine's settings, their defaults and their setters.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use super::{lock, Machine};
use crate::error::{Error, Result};
use crate::opts::option_value;
use crate::qga::AgentChannel;
use crate::qmp::DEFAULT_MAX_MESSAGE;

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
pub(super) struct Config {
    pub(super) binary: String,
    pub(super) args: Vec<String>,
    pub(super) wrapper: Vec<String>,
    pub(super) name: String,
    pub(super) base_temp_dir: PathBuf,
    pub(super) sock_dir: Option<PathBuf>,
    pub(super) log_dir: Option<PathBuf>,
    pub(super) monitor: MonitorAddress,
    pub(super) drain_console: bool,
    pub(super) console_log: Option<PathBuf>,
    /// The console's in-memory cap in bytes (0: the default).
    pub(super) console_buffer: usize,
    pub(super) qmp_timer: Option<Duration>,
    pub(super) qmp_enabled: bool,
    pub(super) machine: Option<String>,
    pub(super) console: Option<(Option<String>, usize)>,
    /// Descriptors registered with `add_fd`, inherited by QEMU.
    pub(super) pass_fds: Vec<RawFd>,
    /// QEMU also inherits every descriptor the host left inheritable (`set_inherit_fds`).
    pub(super) inherit_fds: bool,
    pub(super) max_message: usize,
    /// The guest agent's channel (`set_guest_agent`).
    pub(super) guest_agent: Option<AgentChannel>,
    pub(super) qmp_transcript: Option<PathBuf>,
    /// Ends qm's own command line with `-incoming defer` (a restore; see `incoming.rs`).
    pub(super) incoming_defer: bool,
}

impl Config {
    /// The defaults: those of QEMU's `QEMUMachine`, with a socketpair monitor.
    pub(super) fn new(binary: String, name: String) -> Config {
        Config {
            binary,
            args: Vec::new(),
            wrapper: Vec::new(),
            name,
            base_temp_dir: PathBuf::from("/var/tmp"),
            sock_dir: None,
            log_dir: None,
            monitor: MonitorAddress::SocketPair,
            drain_console: false,
            console_log: None,
            console_buffer: 0,
            qmp_timer: Some(crate::wait::DEFAULT_TIMEOUT),
            qmp_enabled: true,
            machine: None,
            console: None,
            pass_fds: Vec::new(),
            inherit_fds: false,
            max_message: DEFAULT_MAX_MESSAGE,
            guest_agent: None,
            qmp_transcript: None,
            incoming_defer: false,
        }
    }
}

impl Machine {
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

    /// Names the machine: the prefix of its log and socket files. Rejects only names that could
    /// leave the directory: empty, `.` or `..` as the whole name, or with `/` or NUL.
    pub fn set_name(&self, name: &str) -> Result<()> {
        // The name becomes a file name prefix: reject only what could leave the directory.
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(Error::Invalid(format!(
                "machine name {name:?} must be non-empty, not \".\" or \"..\", without '/' or NUL"
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

    /// Kept for the seed's API; the console is always drained now: a reader thread owned by qm
    /// takes every byte as soon as QEMU writes it, so QEMU never blocks on a console nobody
    /// reads, and keeps it for waits, the transcript and [`console`](Self::console) readers.
    pub fn set_drain_console(&self, drain: bool) {
        lock(&self.cfg).drain_console = drain;
    }

    /// Writes every console byte to this file (created mode 0600 if missing). The file is
    /// truncated at each launch, as QEMU's Python `ConsoleSocket` does (and as QEMU's own log is).
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

    /// Lets QEMU inherit every descriptor of this process that is not close-on-exec, as
    /// `subprocess.Popen(close_fds=False)` does (QEMU's Python `QEMUMachine` launches that way,
    /// so harnesses pass descriptors by marking them inheritable). Off by default: QEMU gets
    /// the descriptors qm creates for it, those of [`add_fd`](Self::add_fd) and the extra ones
    /// of [`launch_argv`](Self::launch_argv), and nothing else. qm's own descriptors are all
    /// close-on-exec, so turning it on passes only what the host marked inheritable, as it
    /// stands at the moment QEMU starts.
    pub fn set_inherit_fds(&self, inherit: bool) {
        lock(&self.cfg).inherit_fds = inherit;
    }

    /// Writes every QMP message to and from QEMU to `path` (`None`: no transcript, the default),
    /// one JSON line each: `{"t": <seconds since the Unix epoch>, "dir": "out"|"in"|"event",
    /// "msg": <the message>}`. The console and the guest agent, when the machine has them, are
    /// recorded in the same file, in one order: `{"t": …, "chan": "console", "dir":
    /// "out"|"in", "text": …}` (bytes qm wrote, bytes read from the guest; `"bytes"`, base64,
    /// instead of `"text"` for bytes that are not UTF-8) and `{"t": …, "chan": "agent", "dir":
    /// "out"|"in", "msg": …}` (commands and their replies; the agent's `guest-sync` exchanges
    /// are left out). The file is a script the fake QEMU ([`crate::fake`]) replays. It is
    /// opened (created with mode 0600, appended to) at each launch, which fails if it cannot
    /// be; a later write error is warned about and ends the transcript, not the run.
    pub fn set_qmp_transcript(&self, path: Option<PathBuf>) {
        lock(&self.cfg).qmp_transcript = path;
    }

    /// Caps the size of one message from QEMU (default [`DEFAULT_MAX_MESSAGE`], 64 MiB): a
    /// larger one fails the connection with [`Error::Protocol`] instead of exhausting memory.
    pub fn set_max_message_size(&self, bytes: usize) {
        lock(&self.cfg).max_message = bytes.max(1024);
    }

    /// Gives the guest a channel to `qemu-ga` (or `None`: no channel, the default): a
    /// `virtserialport` named `org.qemu.guest_agent.0` on a chardev qm owns, plus a
    /// `virtio-serial` controller unless the arguments ([`add_args`](Self::add_args)) already
    /// have a `-device virtio-serial…` (then the port goes on the first virtio-serial bus).
    /// These arguments come after the user's. Use it through [`agent`](Self::agent).
    pub fn set_guest_agent(&self, channel: Option<AgentChannel>) {
        lock(&self.cfg).guest_agent = channel;
    }
}
