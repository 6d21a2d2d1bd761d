//! The command line: what qm adds to the user's arguments, in QEMU's option syntax. Pure: the
//! descriptors and paths it names are made by `launch`.

use std::os::fd::RawFd;
use std::path::Path;

use super::config::Config;
use crate::opts::option_value;

/// Where QEMU finds its monitor.
pub(super) enum MonitorChardev<'a> {
    /// Inherited descriptor (our socketpair's other end).
    Fd(RawFd),
    /// A unix socket qm listens on.
    Path(&'a Path),
    /// A TCP address qm listens on.
    Tcp { host: &'a str, port: u16 },
}

/// The whole command line: wrapper, binary, qm's arguments ([`base_args`]), then the user's.
#[cfg(test)]
pub(super) fn command_line(
    cfg: &Config,
    monitor: Option<MonitorChardev<'_>>,
    console_fd: Option<RawFd>,
) -> Vec<String> {
    around(cfg, &base_args(cfg, monitor, console_fd))
}

/// `base` between the wrapper and binary and the user's arguments.
pub(super) fn around(cfg: &Config, base: &[String]) -> Vec<String> {
    cfg.wrapper
        .iter()
        .chain([&cfg.binary])
        .chain(base)
        .chain(&cfg.args)
        .cloned()
        .collect()
}

/// The arguments qm puts between the binary and the user's. `monitor` is set when QMP is on;
/// `console_fd` is QEMU's end of the console socketpair when a console is configured.
pub(super) fn base_args(
    cfg: &Config,
    monitor: Option<MonitorChardev<'_>>,
    console_fd: Option<RawFd>,
) -> Vec<String> {
    let mut base: Vec<String> = ["-display", "none", "-vga", "none"]
        .into_iter()
        .map(String::from)
        .collect();
    if let Some(monitor) = monitor {
        let chardev = match monitor {
            MonitorChardev::Fd(fd) => format!("socket,id=mon,fd={fd}"),
            MonitorChardev::Path(path) => format!(
                "socket,id=mon,path={}",
                option_value(&path.to_string_lossy())
            ),
            MonitorChardev::Tcp { host, port } => {
                format!("socket,id=mon,host={},port={port}", option_value(host))
            }
        };
        base.extend(["-chardev".into(), chardev]);
        base.extend(["-mon".into(), "chardev=mon,mode=control".into()]);
    }
    if let Some(machine) = &cfg.machine {
        base.extend(["-machine".into(), machine.clone()]);
    }
    if let (Some((device, index)), Some(fd)) = (&cfg.console, console_fd) {
        for _ in 0..*index {
            base.extend(["-serial".into(), "null".into()]);
        }
        base.extend(["-chardev".into(), format!("socket,id=console,fd={fd}")]);
        match device {
            None => base.extend(["-serial".into(), "chardev:console".into()]),
            Some(dev) => base.extend(["-device".into(), format!("{dev},chardev=console")]),
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new("qemu-system-x86_64".into(), "vm".into())
    }

    #[test]
    fn without_qmp_or_console_only_the_display_is_turned_off() {
        assert_eq!(
            command_line(&config(), None, None),
            ["qemu-system-x86_64", "-display", "none", "-vga", "none"]
        );
    }

    #[test]
    fn wrapper_first_user_arguments_last() {
        let mut cfg = config();
        cfg.wrapper = vec!["taskset".into(), "-c".into(), "0".into()];
        cfg.args = vec!["-m".into(), "64".into()];
        cfg.machine = Some("pc".into());
        let line = command_line(&cfg, Some(MonitorChardev::Fd(7)), None);
        assert_eq!(
            line,
            [
                "taskset",
                "-c",
                "0",
                "qemu-system-x86_64",
                "-display",
                "none",
                "-vga",
                "none",
                "-chardev",
                "socket,id=mon,fd=7",
                "-mon",
                "chardev=mon,mode=control",
                "-machine",
                "pc",
                "-m",
                "64"
            ]
        );
    }

    #[test]
    fn paths_and_hosts_cannot_inject_options() {
        let line = command_line(
            &config(),
            Some(MonitorChardev::Path(Path::new("/tmp/a,server=on"))),
            None,
        );
        assert!(line.contains(&"socket,id=mon,path=/tmp/a,,server=on".to_string()));
        let line = command_line(
            &config(),
            Some(MonitorChardev::Tcp {
                host: "h,x=y",
                port: 4444,
            }),
            None,
        );
        assert!(line.contains(&"socket,id=mon,host=h,,x=y,port=4444".to_string()));
    }

    #[test]
    fn console_on_a_later_serial_port_or_a_device() {
        let mut cfg = config();
        cfg.console = Some((None, 2));
        let line = command_line(&cfg, None, Some(9)).join(" ");
        assert!(line.ends_with(
            "-serial null -serial null -chardev socket,id=console,fd=9 -serial chardev:console"
        ));
        cfg.console = Some((Some("isa-serial".into()), 0));
        let line = command_line(&cfg, None, Some(9)).join(" ");
        assert!(
            line.ends_with("-device isa-serial,chardev=console"),
            "{line}"
        );
        // A console that was configured but has no descriptor adds nothing.
        assert!(!command_line(&cfg, None, None).join(" ").contains("console"));
    }
}
