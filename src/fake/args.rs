//! The fake's command line: the parts of QEMU's that qm writes (see `machine/args.rs` and
//! `qga/launch.rs`), and the fake's own `-qm-fake-script PATH`. Everything else is ignored, so
//! the user's QEMU arguments may stay as they are.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Where a channel's socket is: inherited, or to connect to (qm listens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// An inherited descriptor (`fd=N`).
    Fd(RawFd),
    /// A unix socket path (`path=P`).
    Unix(PathBuf),
    /// A TCP address (`host=H,port=P`).
    Tcp(String, u16),
}

/// What the fake takes from its command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FakeArgs {
    /// The QMP monitor (`-chardev` named by `-mon chardev=ID,mode=control`).
    pub monitor: Option<Endpoint>,
    /// The console (`-serial chardev:ID`, or a serial `-device …,chardev=ID`).
    pub console: Option<Endpoint>,
    /// The guest agent's channel (a `virtserialport` named `org.qemu.guest_agent.0`).
    pub agent: Option<Endpoint>,
    /// The script (`-qm-fake-script PATH`).
    pub script: Option<PathBuf>,
}

/// QEMU's `key=value,…` syntax, with `,,` for a comma inside a value. The first item may be a
/// bare word (the backend or driver), returned with the key `""`.
fn options(text: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let push = |cur: &mut String, items: &mut Vec<(String, String)>| {
        let item = std::mem::take(cur);
        match item.split_once('=') {
            Some((k, v)) => items.push((k.to_owned(), v.to_owned())),
            None => items.push((String::new(), item)),
        }
    };
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                push(&mut cur, &mut items);
            }
        } else {
            cur.push(c);
        }
    }
    push(&mut cur, &mut items);
    items
}

fn get<'a>(opts: &'a [(String, String)], key: &str) -> Option<&'a str> {
    opts.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Reads the arguments (without the program name). Errors name what cannot be understood in
/// an option the fake needs.
pub fn parse(args: &[String]) -> Result<FakeArgs, String> {
    let mut chardevs: HashMap<String, Endpoint> = HashMap::new();
    let (mut monitor, mut console, mut agent) = (None, None, None);
    let mut out = FakeArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let opt = if arg.starts_with("--") {
            &arg[1..]
        } else {
            arg.as_str()
        };
        let value = match opt {
            "-chardev" | "-mon" | "-serial" | "-device" | "-qm-fake-script" => {
                it.next().ok_or_else(|| format!("{arg} needs a value"))?
            }
            _ => continue,
        };
        match opt {
            "-qm-fake-script" => out.script = Some(PathBuf::from(value)),
            "-chardev" => {
                let o = options(value);
                if get(&o, "") != Some("socket") {
                    continue;
                }
                let Some(id) = get(&o, "id") else { continue };
                let endpoint = if let Some(fd) = get(&o, "fd") {
                    Endpoint::Fd(
                        fd.parse()
                            .map_err(|_| format!("bad fd in -chardev {value}"))?,
                    )
                } else if let Some(path) = get(&o, "path") {
                    Endpoint::Unix(PathBuf::from(path))
                } else if let (Some(host), Some(port)) = (get(&o, "host"), get(&o, "port")) {
                    let port = port
                        .parse()
                        .map_err(|_| format!("bad port in -chardev {value}"))?;
                    Endpoint::Tcp(host.to_owned(), port)
                } else {
                    continue;
                };
                chardevs.insert(id.to_owned(), endpoint);
            }
            "-mon" => {
                let o = options(value);
                if get(&o, "mode") == Some("control") {
                    monitor = get(&o, "chardev").map(str::to_owned);
                }
            }
            "-serial" => {
                if let Some(id) = value.strip_prefix("chardev:") {
                    console = Some(id.to_owned());
                }
            }
            _ => {
                let o = options(value);
                let Some(id) = get(&o, "chardev") else {
                    continue;
                };
                let driver = get(&o, "driver")
                    .or_else(|| get(&o, ""))
                    .unwrap_or_default();
                if driver == "virtserialport" {
                    if get(&o, "name") == Some(crate::qga::AGENT_PORT_NAME) {
                        agent = Some(id.to_owned());
                    }
                } else {
                    console = Some(id.to_owned());
                }
            }
        }
    }
    let mut take = |id: Option<String>, what: &str| match id {
        None => Ok(None),
        Some(id) => chardevs.remove(&id).map(Some).ok_or_else(|| {
            format!("the {what} names chardev {id:?}, which no -chardev socket defines")
        }),
    };
    out.monitor = take(monitor, "monitor")?;
    out.console = take(console, "console")?;
    out.agent = take(agent, "guest agent port")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn what_qm_writes_for_each_channel() {
        let a = parse(&strings(&[
            "-display", "none", "-vga", "none",
            "-chardev", "socket,id=mon,fd=7",
            "-mon", "chardev=mon,mode=control",
            "-machine", "none",
            "-serial", "null",
            "-chardev", "socket,id=console,fd=9",
            "-serial", "chardev:console",
            "-m", "64",
            "-chardev", "socket,id=qm-qga,path=/tmp/a,,b.sock",
            "-device", "virtio-serial,id=qm-qga-serial",
            "-device", "virtserialport,chardev=qm-qga,id=qm-qga-port,name=org.qemu.guest_agent.0,bus=qm-qga-serial.0",
            "-qm-fake-script", "/s.jsonl",
        ]))
        .unwrap();
        assert_eq!(a.monitor, Some(Endpoint::Fd(7)));
        assert_eq!(a.console, Some(Endpoint::Fd(9)));
        assert_eq!(a.agent, Some(Endpoint::Unix("/tmp/a,b.sock".into())));
        assert_eq!(a.script, Some(PathBuf::from("/s.jsonl")));
    }

    #[test]
    fn tcp_monitor_and_console_device() {
        let a = parse(&strings(&[
            "-chardev",
            "socket,id=mon,host=127.0.0.1,port=4444",
            "--mon",
            "chardev=mon,mode=control",
            "-chardev",
            "socket,id=console,fd=5",
            "-device",
            "isa-serial,chardev=console",
        ]))
        .unwrap();
        assert_eq!(a.monitor, Some(Endpoint::Tcp("127.0.0.1".into(), 4444)));
        assert_eq!(a.console, Some(Endpoint::Fd(5)));
        assert_eq!(a.agent, None);
    }

    #[test]
    fn missing_chardev_and_values_are_errors() {
        assert!(parse(&strings(&["-mon", "chardev=mon,mode=control"]))
            .unwrap_err()
            .contains("\"mon\""));
        assert!(parse(&strings(&["-chardev"]))
            .unwrap_err()
            .contains("needs a value"));
        assert_eq!(parse(&[]).unwrap(), FakeArgs::default());
    }
}
