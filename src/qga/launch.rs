//! The agent's channel at launch: QEMU's arguments for it, and the hand-off of qm's end of the
//! socket to a [`GuestAgent`] once QEMU runs.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{GuestAgent, AGENT_PORT_NAME};
use crate::error::{Error, Result};
use crate::qmp::QmpClient;
use crate::wait::Deadline;

/// The chardev id of the agent's channel.
const CHARDEV_ID: &str = "qm-qga";
/// The id of the agent's virtserialport: QEMU names it in `VSERPORT_CHANGE` events.
const PORT_ID: &str = "qm-qga-port";
/// The id of the virtio-serial controller qm adds when the arguments have none.
const CONTROLLER_ID: &str = "qm-qga-serial";

/// Where the guest agent's channel lives (see `Machine::set_guest_agent`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AgentChannel {
    /// A socketpair; QEMU gets its end as `-chardev socket,fd=N`. No file is created.
    #[default]
    SocketPair,
    /// A unix socket at this path (or, for `None`, at `<sock_dir>/<name>-qga.sock`): qm listens
    /// (mode 0600), QEMU connects at startup, and qm accepts it during the launch.
    Unix(Option<PathBuf>),
}

/// The agent's part of a launch: arguments for QEMU, the descriptor QEMU must inherit, and
/// qm's end waiting for QEMU.
pub(crate) struct Planned {
    /// Appended after the user's arguments, so that a virtio-serial controller of theirs
    /// exists before qm's port is plugged into it.
    pub(crate) args: Vec<String>,
    /// QEMU's end of a socketpair, to inherit.
    pub(crate) keep_fd: Option<RawFd>,
    pending: Pending,
}

enum Pending {
    /// Ours, and QEMU's (dropped once QEMU holds it).
    Pair(UnixStream, UnixStream),
    Unix(UnixListener),
}

/// True when `args` already add a virtio-serial controller (`-device virtio-serial…`, in
/// `key=value` or JSON form).
pub(crate) fn has_virtio_serial(args: &[String]) -> bool {
    args.windows(2).any(|w| {
        if w[0] != "-device" && w[0] != "--device" {
            return false;
        }
        let opt = w[1].trim_start();
        let driver = if opt.starts_with('{') {
            serde_json::from_str::<serde_json::Value>(opt)
                .ok()
                .and_then(|v| v["driver"].as_str().map(str::to_owned))
                .unwrap_or_default()
        } else {
            let first = opt.split(',').next().unwrap_or_default();
            first.strip_prefix("driver=").unwrap_or(first).to_owned()
        };
        driver.starts_with("virtio-serial")
    })
}

/// QEMU's arguments for the channel and qm's end of it. `listen` makes the listening socket of
/// a unix path (the machine's, which also arranges its removal at cleanup).
pub(crate) fn plan(
    channel: &AgentChannel,
    user_args: &[String],
    unix: impl FnOnce(&Option<PathBuf>) -> Result<(UnixListener, PathBuf)>,
) -> Result<Planned> {
    let (chardev, keep_fd, pending) = match channel {
        AgentChannel::SocketPair => {
            let (ours, theirs) = UnixStream::pair()
                .map_err(|e| Error::io("creating the guest agent socketpair", e))?;
            let fd = theirs.as_raw_fd();
            (
                format!("socket,id={CHARDEV_ID},fd={fd}"),
                Some(fd),
                Pending::Pair(ours, theirs),
            )
        }
        AgentChannel::Unix(path) => {
            let (listener, path) = unix(path)?;
            (
                format!(
                    "socket,id={CHARDEV_ID},path={}",
                    crate::opts::option_value(&path.to_string_lossy())
                ),
                None,
                Pending::Unix(listener),
            )
        }
    };
    let mut args = vec!["-chardev".to_owned(), chardev];
    let port = format!("virtserialport,chardev={CHARDEV_ID},id={PORT_ID},name={AGENT_PORT_NAME}");
    if has_virtio_serial(user_args) {
        args.extend(["-device".to_owned(), port]);
    } else {
        args.extend([
            "-device".to_owned(),
            format!("virtio-serial,id={CONTROLLER_ID}"),
            "-device".to_owned(),
            format!("{port},bus={CONTROLLER_ID}.0"),
        ]);
    }
    Ok(Planned {
        args,
        keep_fd,
        pending,
    })
}

impl Planned {
    /// Once QEMU runs (it holds its end): qm's end as a [`GuestAgent`]. For a unix path, waits
    /// for QEMU's connection (made at its startup), failing at once if QEMU exits
    /// (`exit_fd` readable).
    ///
    /// With the machine's QMP connection, the agent can also tell that the guest went down
    /// (its agent's port closed, a reset or a shutdown), which is how a `guest-shutdown` that
    /// reboots or halts the guest is known to have worked.
    pub(crate) fn connect(
        self,
        exit_fd: BorrowedFd<'_>,
        deadline: &Deadline<'_>,
        nickname: &str,
        max_reply: usize,
        qmp: Option<&Arc<QmpClient>>,
    ) -> Result<GuestAgent> {
        let sock = match self.pending {
            Pending::Pair(ours, theirs) => {
                drop(theirs);
                ours
            }
            Pending::Unix(listener) => accept(&listener, exit_fd, deadline)?,
        };
        let agent = GuestAgent::new(sock, &format!("{nickname}-qga"), max_reply)?;
        if let Some(qmp) = qmp {
            watch_guest(&agent, qmp);
        }
        Ok(agent)
    }
}

/// Lets `agent` tell from the machine's QMP events that the guest went down (its agent's port
/// closed, a reset or a shutdown), which is how a `guest-shutdown` that reboots or halts the
/// guest is known to have worked.
pub(crate) fn watch_guest(agent: &GuestAgent, qmp: &Arc<QmpClient>) {
    let qmp: Weak<QmpClient> = Arc::downgrade(qmp);
    agent.set_gone_watch(Box::new(move |since| {
        qmp.upgrade().is_some_and(|c| {
            c.has_event(&|name| GONE_EVENTS.contains(&name), |ev| {
                guest_went_down(ev, since)
            })
        })
    }));
}

/// The names of the events [`guest_went_down`] looks at.
const GONE_EVENTS: [&str; 3] = ["VSERPORT_CHANGE", "RESET", "SHUTDOWN"];

/// A QMP event that says the guest (and so its agent) went down at or after `since`: our
/// port closed by the guest (`VSERPORT_CHANGE`), or a reset or shutdown the guest caused.
pub(crate) fn guest_went_down(ev: &Value, since: SystemTime) -> bool {
    let when = &ev["timestamp"];
    let (Some(secs), Some(micros)) = (when["seconds"].as_u64(), when["microseconds"].as_u64())
    else {
        return false;
    };
    let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
    if at < since {
        return false;
    }
    let data = &ev["data"];
    match ev["event"].as_str() {
        Some("VSERPORT_CHANGE") => data["id"] == PORT_ID && data["open"] == false,
        Some("RESET") | Some("SHUTDOWN") => data["guest"] == true,
        _ => false,
    }
}

fn accept(
    listener: &UnixListener,
    exit_fd: BorrowedFd<'_>,
    deadline: &Deadline<'_>,
) -> Result<UnixStream> {
    crate::accept::accept_from_qemu(
        listener.as_fd(),
        exit_fd,
        deadline,
        "the guest agent socket",
        Error::AgentDisconnected,
    )
    .map(UnixStream::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_a_virtio_serial_controller() {
        assert!(has_virtio_serial(&args(&[
            "-device",
            "virtio-serial-pci,id=x"
        ])));
        assert!(has_virtio_serial(&args(&["-device", "virtio-serial"])));
        assert!(has_virtio_serial(&args(&[
            "-device",
            "driver=virtio-serial-device"
        ])));
        assert!(has_virtio_serial(&args(&[
            "-device",
            r#"{"driver":"virtio-serial-pci","id":"v"}"#
        ])));
        assert!(!has_virtio_serial(&args(&["-device", "virtio-net-pci"])));
        assert!(!has_virtio_serial(&args(&["-name", "virtio-serial"])));
        assert!(!has_virtio_serial(&args(&[
            "-device",
            "virtserialport,name=x"
        ])));
    }

    #[test]
    fn guest_going_down_is_read_from_events_after_the_time() {
        let since = UNIX_EPOCH + Duration::from_secs(1000);
        let ev = |name: &str, secs: u64, data: Value| {
            serde_json::json!({"event": name, "data": data,
                               "timestamp": {"seconds": secs, "microseconds": 5}})
        };
        let closed = serde_json::json!({"id": "qm-qga-port", "open": false});
        assert!(guest_went_down(
            &ev("VSERPORT_CHANGE", 1000, closed.clone()),
            since
        ));
        assert!(!guest_went_down(&ev("VSERPORT_CHANGE", 999, closed), since));
        let opened = serde_json::json!({"id": "qm-qga-port", "open": true});
        assert!(!guest_went_down(
            &ev("VSERPORT_CHANGE", 1001, opened),
            since
        ));
        let other = serde_json::json!({"id": "theirs", "open": false});
        assert!(!guest_went_down(&ev("VSERPORT_CHANGE", 1001, other), since));
        let guest = serde_json::json!({"guest": true, "reason": "guest-reset"});
        assert!(guest_went_down(&ev("RESET", 1001, guest), since));
        let host = serde_json::json!({"guest": false, "reason": "host-qmp-system-reset"});
        assert!(!guest_went_down(&ev("RESET", 1001, host), since));
    }

    #[test]
    fn adds_a_controller_only_when_there_is_none() {
        let p = plan(&AgentChannel::SocketPair, &[], |_| unreachable!()).unwrap();
        assert_eq!(p.args.len(), 6);
        assert!(p.args[3].starts_with("virtio-serial,id=qm-qga-serial"));
        assert!(p.args[5].ends_with("name=org.qemu.guest_agent.0,bus=qm-qga-serial.0"));
        assert!(p.args[5].contains(",id=qm-qga-port,"));
        let user = args(&["-device", "virtio-serial-pci"]);
        let p = plan(&AgentChannel::SocketPair, &user, |_| unreachable!()).unwrap();
        assert_eq!(p.args.len(), 4);
        assert_eq!(
            p.args[3],
            "virtserialport,chardev=qm-qga,id=qm-qga-port,name=org.qemu.guest_agent.0"
        );
    }
}
