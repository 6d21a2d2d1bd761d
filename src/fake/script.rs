//! The fake's script: JSON lines, parsed and checked whole before anything runs.
//!
//! The format (version 1) is documented in the README ("Testing without QEMU"). In short, every
//! line is a JSON object; a transcript written by qm (QMP, console, agent) is a valid script as
//! it is.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

/// The script format version this fake understands.
pub const SCRIPT_VERSION: u64 = 1;

/// The fake's idle limit when the script does not set one: with no message from qm for this
/// long, the fake reports where it stood and exits (status 4), so it never hangs a test.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);

/// A channel between qm and the fake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chan {
    /// The QMP monitor.
    Qmp,
    /// The serial console.
    Console,
    /// The guest agent's channel.
    Agent,
}

impl Chan {
    fn parse(s: &str) -> Option<Chan> {
        Some(match s {
            "qmp" => Chan::Qmp,
            "console" => Chan::Console,
            "agent" => Chan::Agent,
            _ => return None,
        })
    }

    /// The channel's name in scripts.
    pub fn name(self) -> &'static str {
        match self {
            Chan::Qmp => "qmp",
            Chan::Console => "console",
            Chan::Agent => "agent",
        }
    }
}

/// How an expected command is compared with what qm sends (the `"match"` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// Same command, same arguments (the default). The `id` is never compared.
    Exact,
    /// Same command; every argument the script names has that value (objects compared the same
    /// way, recursively); qm may send more.
    Subset,
    /// Same command; arguments not compared.
    Name,
}

/// What one script line does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Wait for this command from qm (`"dir": "out"` on `qmp` or `agent`).
    Expect {
        /// Which channel it arrives on.
        chan: Chan,
        /// The command as written in the script.
        msg: Value,
        /// How it is compared.
        how: Match,
    },
    /// Answer the oldest command not answered yet (`"dir": "in"`), with its id.
    Reply {
        /// `qmp` or `agent`.
        chan: Chan,
        /// The reply (`return` or `error`).
        msg: Value,
    },
    /// Send a QMP event (`"dir": "event"`); a missing timestamp is the current time.
    Event(Value),
    /// Write these bytes to the console (`"chan": "console", "dir": "in"`, from `"text"` or
    /// `"bytes"`); nonces bound by earlier waits are replaced (see [`ConsoleWait`](Self::ConsoleWait)).
    ConsoleWrite(Vec<u8>),
    /// Wait until qm has written these bytes to the console (`"chan": "console", "dir":
    /// "out"`). A nonce-shaped token in them (16 lowercase hex digits standing alone, as in
    /// the line `Console::run` types) matches any such token, and binds the recorded one to
    /// what qm sent: later console bytes the fake writes or waits for have it replaced.
    ConsoleWait(Vec<u8>),
    /// Close the channel (`"do": "disconnect"`).
    Disconnect(Chan),
    /// Write these bytes as they are (`"do": "garbage"`).
    Garbage(Chan, String),
    /// Stop answering anything until killed or the idle limit (`"do": "hang"`).
    Hang,
    /// Exit now with this status (`"do": "exit"`).
    Exit(i32),
    /// Only the line's delay (`"do": "sleep"`).
    Sleep,
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The line of the script it came from (1-based).
    pub line: usize,
    /// Waited before the step is carried out (`"delay"`, seconds).
    pub delay: Duration,
    /// What it does.
    pub action: Action,
}

/// A parsed script.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    /// The QMP greeting: the script's first QMP message when it has a `QMP` key, otherwise a
    /// QEMU 7.2 one.
    pub greeting: Value,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The idle limit (`"idle"` in the header line).
    pub idle: Duration,
    /// Whether the script expects `qmp_capabilities` itself; if not, the fake answers it.
    pub expects_capabilities: bool,
}

/// A malformed script: the line (1-based; 0 for the file as a whole) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    /// The line.
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "script line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for ScriptError {}

/// The greeting of QEMU 7.2, sent when the script has none.
pub fn default_greeting() -> Value {
    serde_json::json!({"QMP": {
        "version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "qm-fake-qemu"},
        "capabilities": ["oob"]
    }})
}

const KEYS: &[&str] = &[
    "t", "dir", "msg", "chan", "match", "delay", "text", "bytes", "do", "status", "comment",
];

impl Script {
    /// Parses and checks a whole script; the first problem found is the error.
    pub fn parse(text: &str) -> Result<Script, ScriptError> {
        let mut script = Script {
            greeting: default_greeting(),
            steps: Vec::new(),
            idle: DEFAULT_IDLE,
            expects_capabilities: false,
        };
        // Commands sent but not answered yet, per channel: a reply needs one.
        let (mut open_qmp, mut open_agent) = (0usize, 0usize);
        let mut seen_qmp = false;
        let mut first = true;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |problem: String| ScriptError { line, problem };
            if raw.trim().is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(raw).map_err(|e| err(format!("not JSON: {e}")))?;
            let Value::Object(obj) = value else {
                return Err(err("not a JSON object".into()));
            };
            let was_first = std::mem::replace(&mut first, false);
            if obj.contains_key("qm-fake") {
                if !was_first {
                    return Err(err("the header must be the first line".into()));
                }
                script.idle = header(&obj).map_err(err)?;
                continue;
            }
            if let Some(key) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(err(format!("unknown key {key:?}")));
            }
            let delay = match obj.get("delay") {
                None => Duration::ZERO,
                Some(d) => d
                    .as_f64()
                    .filter(|d| d.is_finite() && *d >= 0.0 && *d < 1e9)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| err("\"delay\" must be a number of seconds >= 0".into()))?,
            };
            let chan = match obj.get("chan") {
                None => Chan::Qmp,
                Some(c) => c.as_str().and_then(Chan::parse).ok_or_else(|| {
                    err("\"chan\" must be \"qmp\", \"console\" or \"agent\"".into())
                })?,
            };
            let action = if let Some(what) = obj.get("do") {
                if obj.contains_key("dir") {
                    return Err(err("a line has either \"do\" or \"dir\", not both".into()));
                }
                action(what, chan, &obj).map_err(err)?
            } else if obj.contains_key("comment") && !obj.contains_key("dir") {
                continue;
            } else {
                let dir = obj
                    .get("dir")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err("missing \"dir\" (or \"do\")".into()))?;
                let msg = obj.get("msg");
                match (chan, dir) {
                    (Chan::Console, "in" | "out") => {
                        let text = console_bytes(&obj).map_err(err)?;
                        if dir == "in" {
                            Action::ConsoleWrite(text)
                        } else if text.is_empty() {
                            return Err(err("waiting for empty console text".into()));
                        } else {
                            Action::ConsoleWait(text)
                        }
                    }
                    (Chan::Console, _) => {
                        return Err(err("console lines are \"in\" or \"out\"".into()))
                    }
                    (_, "out") => {
                        let msg = command(msg).map_err(err)?;
                        let how = match obj.get("match").map(|m| m.as_str()) {
                            None | Some(Some("exact")) => Match::Exact,
                            Some(Some("subset")) => Match::Subset,
                            Some(Some("name")) => Match::Name,
                            _ => {
                                return Err(err(
                                    "\"match\" must be \"exact\", \"subset\" or \"name\"".into(),
                                ))
                            }
                        };
                        if chan == Chan::Qmp {
                            seen_qmp = true;
                            open_qmp += 1;
                            if msg["execute"] == "qmp_capabilities" {
                                script.expects_capabilities = true;
                            }
                        } else {
                            open_agent += 1;
                        }
                        Action::Expect { chan, msg, how }
                    }
                    (Chan::Qmp, "in")
                        if !seen_qmp && msg.is_some_and(|m| m.get("QMP").is_some()) =>
                    {
                        seen_qmp = true;
                        script.greeting = msg.cloned().unwrap_or_default();
                        continue;
                    }
                    (_, "in") => {
                        let msg = reply(msg).map_err(err)?;
                        let open = if chan == Chan::Qmp {
                            &mut open_qmp
                        } else {
                            &mut open_agent
                        };
                        if *open == 0 {
                            return Err(err(format!(
                                "a reply on {} with no command before it to answer",
                                chan.name()
                            )));
                        }
                        *open -= 1;
                        seen_qmp |= chan == Chan::Qmp;
                        Action::Reply { chan, msg }
                    }
                    (Chan::Qmp, "event") => {
                        let msg = msg
                            .filter(|m| m.get("event").is_some_and(Value::is_string))
                            .ok_or_else(|| {
                                err("an event needs \"msg\" with an \"event\" name".into())
                            })?;
                        Action::Event(msg.clone())
                    }
                    (_, "event") => return Err(err("events are on the qmp channel".into())),
                    (_, other) => {
                        return Err(err(format!(
                            "\"dir\" must be \"out\", \"in\" or \"event\", not {other:?}"
                        )))
                    }
                }
            };
            if matches!(action, Action::Expect { .. } | Action::ConsoleWait(_)) && !delay.is_zero()
            {
                return Err(err(
                    "\"delay\" is for what the fake does, not what it waits for".into(),
                ));
            }
            script.steps.push(Step {
                line,
                delay,
                action,
            });
        }
        Ok(script)
    }
}

/// A console line's bytes: `"text"` (a string, as UTF-8) or `"bytes"` (standard base64, for
/// bytes that are not UTF-8), exactly one of them.
fn console_bytes(obj: &Map<String, Value>) -> Result<Vec<u8>, String> {
    match (obj.get("text"), obj.get("bytes")) {
        (Some(Value::String(t)), None) => Ok(t.clone().into_bytes()),
        (None, Some(Value::String(b))) => crate::qga::base64::decode_capped(b, usize::MAX)
            .map(|(bytes, _)| bytes)
            .map_err(|e| format!("\"bytes\" is not base64: {e}")),
        (Some(_), Some(_)) => Err("a console line has \"text\" or \"bytes\", not both".into()),
        _ => Err("a console line needs a \"text\" string (or \"bytes\", base64)".into()),
    }
}

/// The header line: `{"qm-fake": 1, "idle": SECONDS}`; returns the idle limit.
fn header(obj: &Map<String, Value>) -> Result<Duration, String> {
    if obj["qm-fake"].as_u64() != Some(SCRIPT_VERSION) {
        return Err(format!(
            "unsupported script version {} (this fake reads version {SCRIPT_VERSION})",
            obj["qm-fake"]
        ));
    }
    if let Some(key) = obj
        .keys()
        .find(|k| !["qm-fake", "idle", "comment"].contains(&k.as_str()))
    {
        return Err(format!("unknown header key {key:?}"));
    }
    match obj.get("idle") {
        None => Ok(DEFAULT_IDLE),
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| "\"idle\" must be a number of seconds > 0".into()),
    }
}

fn action(what: &Value, chan: Chan, obj: &Map<String, Value>) -> Result<Action, String> {
    let text = || {
        obj.get("text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "\"garbage\" needs a \"text\" string".to_owned())
    };
    Ok(match what.as_str() {
        Some("disconnect") => Action::Disconnect(chan),
        Some("garbage") => Action::Garbage(chan, text()?),
        Some("hang") => Action::Hang,
        Some("sleep") => Action::Sleep,
        Some("exit") => Action::Exit(
            obj.get("status")
                .and_then(Value::as_i64)
                .filter(|s| (0..=255).contains(s))
                .map(|s| s as i32)
                .ok_or("\"exit\" needs a \"status\" from 0 to 255")?,
        ),
        _ => {
            return Err(format!(
                "\"do\" must be \"disconnect\", \"garbage\", \"hang\", \"sleep\" or \"exit\", not {what}"
            ))
        }
    })
}

/// An expected command: `{"execute": NAME, "arguments": {...}}` (or `exec-oob`).
fn command(msg: Option<&Value>) -> Result<Value, String> {
    let msg = msg.ok_or("an \"out\" line needs \"msg\": the command qm sends")?;
    if command_name(msg).is_none() {
        return Err("the command needs an \"execute\" name".into());
    }
    if msg.get("arguments").is_some_and(|a| !a.is_object()) {
        return Err("\"arguments\" must be an object".into());
    }
    Ok(msg.clone())
}

/// A reply: an object with `return`, or `error` with `class` and `desc` strings.
fn reply(msg: Option<&Value>) -> Result<Value, String> {
    let msg = msg.ok_or("an \"in\" line needs \"msg\": the reply")?;
    if msg.get("return").is_some() {
        return Ok(msg.clone());
    }
    match msg.get("error") {
        Some(e) if e["class"].is_string() && e["desc"].is_string() => Ok(msg.clone()),
        Some(_) => Err("an error reply needs \"class\" and \"desc\" strings".into()),
        None => Err("a reply needs \"return\" or \"error\"".into()),
    }
}

/// The name of a command message (`execute` or `exec-oob`).
pub fn command_name(msg: &Value) -> Option<&str> {
    msg.get("execute")
        .or_else(|| msg.get("exec-oob"))
        .and_then(Value::as_str)
}

/// Whether `received` is the command `expected` describes, compared as `how` says.
pub fn matches(expected: &Value, how: Match, received: &Value) -> bool {
    if command_name(expected) != command_name(received) {
        return false;
    }
    let empty = Value::Object(Map::new());
    let want = expected.get("arguments").unwrap_or(&empty);
    let got = received.get("arguments").unwrap_or(&empty);
    match how {
        Match::Name => true,
        Match::Exact => want == got,
        Match::Subset => subset(want, got),
    }
}

fn subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| subset(v, gv))),
        _ => want == got,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transcript_is_a_script() {
        let text = r#"{"t":1.0,"dir":"in","msg":{"QMP":{"version":{},"capabilities":[]}}}
{"t":1.1,"dir":"out","msg":{"execute":"qmp_capabilities","id":1}}
{"t":1.2,"dir":"in","msg":{"return":{},"id":1}}
{"t":1.3,"dir":"event","msg":{"event":"STOP","timestamp":{"seconds":1,"microseconds":0}}}
"#;
        let s = Script::parse(text).unwrap();
        assert_eq!(s.greeting["QMP"]["capabilities"], json!([]));
        assert!(s.expects_capabilities);
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.steps[0].line, 2);
        assert!(matches!(s.steps[2].action, Action::Event(_)));
    }

    #[test]
    fn header_comments_channels_and_actions() {
        let text = r#"{"qm-fake":1,"idle":2.5}
{"comment":"hand written"}

{"dir":"out","msg":{"execute":"device_add","arguments":{"id":"d"}},"match":"subset"}
{"dir":"in","msg":{"error":{"class":"GenericError","desc":"no"}},"delay":0.1}
{"chan":"console","dir":"in","text":"login: "}
{"chan":"console","dir":"out","text":"root\n"}
{"chan":"agent","dir":"out","msg":{"execute":"guest-ping"}}
{"chan":"agent","dir":"in","msg":{"return":{}}}
{"do":"garbage","text":"}{"}
{"do":"exit","status":7}
{"chan":"console","dir":"in","bytes":"/wBvaw=="}
"#;
        let s = Script::parse(text).unwrap();
        assert_eq!(s.idle, Duration::from_millis(2500));
        assert!(!s.expects_capabilities);
        let actions: Vec<_> = s.steps.iter().map(|s| (s.line, s.action.clone())).collect();
        assert_eq!(actions[0].0, 4);
        assert_eq!(s.steps[1].delay, Duration::from_millis(100));
        assert_eq!(actions[2].1, Action::ConsoleWrite(b"login: ".to_vec()));
        assert_eq!(actions[3].1, Action::ConsoleWait(b"root\n".to_vec()));
        assert_eq!(actions[6].1, Action::Garbage(Chan::Qmp, "}{".into()));
        assert_eq!(actions[7].1, Action::Exit(7));
        assert_eq!(actions[8].1, Action::ConsoleWrite(b"\xff\x00ok".to_vec()));
    }

    #[test]
    fn malformed_lines_are_named() {
        let cases = [
            ("{\"dir\":\"out\"", 1, "not JSON"),
            ("[1]", 1, "not a JSON object"),
            ("\n{\"dir\":\"in\",\"msg\":{\"return\":{}}}", 2, "no command before it"),
            ("{\"dir\":\"out\",\"msg\":{\"exec\":\"x\"}}", 1, "\"execute\""),
            ("{\"dir\":\"out\",\"msg\":{\"execute\":\"x\"},\"match\":\"fuzzy\"}", 1, "\"match\""),
            ("{\"dir\":\"event\",\"msg\":{}}", 1, "\"event\" name"),
            ("{\"dir\":\"sideways\"}", 1, "\"dir\""),
            ("{\"dri\":\"out\"}", 1, "unknown key \"dri\""),
            ("{\"do\":\"exit\"}", 1, "\"status\""),
            ("{\"do\":\"explode\"}", 1, "\"do\""),
            ("{\"do\":\"hang\"}\n{\"qm-fake\":1}", 2, "first line"),
            ("{\"qm-fake\":2}", 1, "unsupported script version"),
            ("{\"dir\":\"out\",\"msg\":{\"execute\":\"x\"},\"delay\":1}", 1, "\"delay\""),
            ("{\"dir\":\"out\",\"msg\":{\"execute\":\"x\"}}\n{\"dir\":\"in\",\"msg\":{\"error\":{}}}", 2, "\"class\""),
            ("{\"chan\":\"serial\",\"dir\":\"in\"}", 1, "\"chan\""),
            ("{\"chan\":\"console\",\"dir\":\"in\",\"bytes\":\"*\"}", 1, "not base64"),
            ("{\"chan\":\"console\",\"dir\":\"in\",\"bytes\":\"AA==\",\"text\":\"\"}", 1, "not both"),
        ];
        for (text, line, needle) in cases {
            let e = Script::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.problem.contains(needle), "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("script line {line}:")));
        }
    }

    #[test]
    fn matching_exact_subset_and_name() {
        let want = json!({"execute":"blockdev-add","arguments":{"node-name":"n","file":{"driver":"file"}}});
        let got = json!({"execute":"blockdev-add","id":9,"arguments":{"node-name":"n","driver":"raw","file":{"driver":"file","filename":"/x"}}});
        assert!(!matches(&want, Match::Exact, &got));
        assert!(matches(&want, Match::Subset, &got));
        assert!(matches(&want, Match::Name, &got));
        assert!(matches(&got, Match::Exact, &got));
        let other = json!({"execute":"device_add"});
        assert!(!matches(&want, Match::Name, &other));
        // Missing and empty arguments are the same; the id is never compared.
        assert!(matches(
            &json!({"execute":"stop"}),
            Match::Exact,
            &json!({"execute":"stop","arguments":{},"id":3})
        ));
    }
}
