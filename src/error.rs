//! The one error type of the crate.

use std::fmt::{self, Write as _};
use std::io;

/// Everything that can go wrong when driving a machine.
#[derive(Debug)]
pub enum Error {
    /// The machine could not be launched. Everything the launch created has been cleaned up and
    /// no process is left behind.
    ///
    /// The message leads with what happened: `launch failed: QEMU exited with code 1: <the first
    /// line QEMU printed>` when QEMU exited by itself, else `launch failed: <cause>`; then the
    /// cause, exit code, command line and output, one per line. The cause is also
    /// [`source`](std::error::Error::source).
    Launch {
        /// QEMU's exit status when it exited by itself (negative: killed by that signal).
        exitcode: Option<i32>,
        /// The full command line, arguments joined by spaces (for humans; never run by a shell).
        command: String,
        /// What QEMU wrote to stdout and stderr.
        output: String,
        /// What went wrong.
        cause: Box<Error>,
    },
    /// QEMU answered a command with an error.
    Qmp {
        /// The QMP error class, e.g. `GenericError` or `CommandNotFound`.
        class: String,
        /// QEMU's human-readable description.
        desc: String,
    },
    /// A wait ran out of time; the text names what did not happen and the limit, e.g.
    /// `no SHUTDOWN event within 3000 ms`, `query-status: no reply within 500 ms`.
    Timeout(String),
    /// The QMP connection is gone (QEMU exited or closed it, or the machine shut down).
    Disconnected(String),
    /// The guest agent's channel is gone (QEMU exited, the machine shut down, or the agent
    /// went away before answering). The same status as [`Error::Disconnected`]
    /// (`QM_ERR_DISCONNECTED`), but named for the channel that failed.
    AgentDisconnected(String),
    /// The call was interrupted through its [`Cancel`](crate::Cancel) token.
    Interrupted,
    /// A graceful shutdown (or a wait) did not end well and QEMU had to be killed; the box holds
    /// why (a timeout, an interruption, a QMP error on `quit` ...), also as
    /// [`source`](std::error::Error::source). Cleanup has run.
    AbnormalShutdown(Box<Error>),
    /// The guest kernel panicked and QEMU ended by itself (a pvpanic device reported the
    /// panic); the cause of an [`AbnormalShutdown`](Error::AbnormalShutdown), with the event.
    /// C and the bindings see it as `QM_ERR_ABNORMAL_SHUTDOWN`.
    GuestPanicked(String),
    /// The call does not fit the machine's state (e.g. a command before launch, launch twice).
    State(String),
    /// An argument or setting is invalid.
    Invalid(String),
    /// The peer broke the QMP protocol (bad JSON, oversize message, malformed greeting …).
    Protocol(String),
    /// Events were dropped because more than the cap set with `set_max_queued_events` were
    /// queued (the oldest go first). Reported once, to the next call that reads events; the
    /// events that were kept stay readable.
    EventsDropped {
        /// How many were dropped since the last report.
        dropped: u64,
        /// The cap at the time of the report.
        max: usize,
    },
    /// The console reached end of file (QEMU exited or closed it) before a console wait found
    /// its pattern, or a send could not be delivered.
    ConsoleClosed {
        /// The patterns waited for (or the send that failed).
        waiting_for: String,
        /// The output nobody consumed (invalid UTF-8 replaced).
        text: String,
    },
    /// A console wait found one of its failure patterns.
    ConsoleFailure {
        /// The index of the failure pattern that matched.
        index: usize,
        /// The failure pattern, as displayed by [`Pattern`](crate::console::Pattern).
        pattern: String,
        /// The output consumed, up to and including the match (invalid UTF-8 replaced).
        text: String,
    },
    /// A console wait ran out of time. The output it looked at stays unread.
    ConsoleTimeout {
        /// The patterns waited for.
        waiting_for: String,
        /// How long the wait lasted.
        waited: std::time::Duration,
        /// The last (up to 2 KiB) unread output (invalid UTF-8 replaced).
        tail: String,
    },
    /// A check before send (see [`SchemaPolicy`](crate::schema::SchemaPolicy)) refused a
    /// command, or an event wait, under a strict policy: nothing was sent.
    Refused {
        /// What was checked: `'blockdev-add'`, `event wait for 'SHUTDOWNN'`.
        subject: String,
        /// Where the first problem is, as a JSON path: `arguments.file.filename`.
        path: String,
        /// The rule it breaks.
        rule: crate::schema::Rule,
        /// What is wrong, with a did-you-mean or the allowed values when there are.
        message: String,
        /// The other refused findings, one line each.
        more: Vec<String>,
    },
    /// An operating-system call failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

// Written out rather than derived: a derived `source` of a `Box<Error>` is the box, which
// `downcast_ref::<Error>()` does not see through.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Launch {
                exitcode,
                command,
                output,
                cause,
            } => write!(
                f,
                "launch failed: {}",
                launch_message(*exitcode, command, output, cause)
            ),
            Error::Qmp { class, desc } => write!(f, "QMP error {class}: {desc}"),
            Error::Timeout(what) => write!(f, "timed out: {what}"),
            Error::Disconnected(why) => write!(f, "QMP disconnected: {why}"),
            Error::AgentDisconnected(why) => write!(f, "guest agent disconnected: {why}"),
            Error::Interrupted => f.write_str("interrupted"),
            Error::GuestPanicked(what) => write!(f, "the guest panicked: {what}"),
            Error::AbnormalShutdown(cause) => write!(
                f,
                "abnormal shutdown: could not perform graceful shutdown: {cause}"
            ),
            Error::State(why) => write!(f, "wrong state: {why}"),
            Error::Invalid(why) => write!(f, "invalid argument: {why}"),
            Error::Protocol(why) => write!(f, "QMP protocol error: {why}"),
            Error::EventsDropped { dropped, max } => write!(
                f,
                "{dropped} QMP events were dropped: more than {max} were queued unread \
                 (see set_max_queued_events)"
            ),
            Error::ConsoleClosed { waiting_for, text } => write!(
                f,
                "console closed while waiting for {waiting_for}; unread output: {}",
                Tail(text)
            ),
            Error::ConsoleFailure { pattern, text, .. } => write!(
                f,
                "console failure pattern {pattern} matched; output: {}",
                Tail(text)
            ),
            Error::ConsoleTimeout {
                waiting_for,
                waited,
                tail,
            } => write!(
                f,
                "timed out after {waited:.1?} waiting on the console for {waiting_for}; last \
                 output: {}",
                Tail(tail)
            ),
            Error::Refused {
                subject,
                path,
                rule,
                message,
                more,
            } => {
                write!(
                    f,
                    "refused by the schema check of {subject} (not sent): {path}: {message} \
                     [{rule}]"
                )?;
                if !more.is_empty() {
                    write!(f, "; and {}: {}", more.len(), more.join("; "))?;
                }
                Ok(())
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    /// The cause of a launch failure or an abnormal shutdown (a `qm::Error`), the OS error of
    /// an [`Error::Io`].
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Launch { cause, .. } | Error::AbnormalShutdown(cause) => Some(&**cause),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an OS error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl Error {
    /// The console output a console error carries: the unread text of
    /// [`ConsoleClosed`](Error::ConsoleClosed), the consumed text of
    /// [`ConsoleFailure`](Error::ConsoleFailure), the tail of
    /// [`ConsoleTimeout`](Error::ConsoleTimeout); `None` for other errors.
    pub fn console_text(&self) -> Option<&str> {
        match self {
            Error::ConsoleClosed { text, .. } | Error::ConsoleFailure { text, .. } => Some(text),
            Error::ConsoleTimeout { tail, .. } => Some(tail),
            _ => None,
        }
    }

    /// True for [`Timeout`](Error::Timeout) and [`ConsoleTimeout`](Error::ConsoleTimeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::ConsoleTimeout { .. })
    }
}

/// At most the last 400 characters of console text in a message, quoted; the error's field has
/// all of it.
struct Tail<'a>(&'a str);

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 400;
        let n = self.0.chars().count();
        if n <= SHOWN {
            write!(f, "{:?}", self.0)
        } else {
            let cut: String = self.0.chars().skip(n - SHOWN).collect();
            write!(f, "…{cut:?}")
        }
    }
}

/// The text of [`Error::Launch`] after `launch failed: `.
fn launch_message(exitcode: Option<i32>, command: &str, output: &str, cause: &Error) -> String {
    let mut text = String::new();
    if let Some(code) = exitcode {
        // QEMU's own words say why far better than the disconnection they caused.
        let _ = match code {
            c if c < 0 => write!(text, "QEMU was killed by signal {}", -c),
            c => write!(text, "QEMU exited with code {c}"),
        };
        match output.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(line) => {
                let _ = write!(text, ": {line}\n\tCause: {cause}");
            }
            None => {
                let _ = write!(text, " (no output)\n\tCause: {cause}");
            }
        }
    } else {
        let _ = write!(text, "{cause}");
    }
    let exit = match exitcode {
        Some(code) => code.to_string(),
        None => "none".to_owned(),
    };
    let _ = write!(
        text,
        "\n\tExit code: {exit}\n\tCommand: {command}\n\tOutput: {output}"
    );
    text
}
