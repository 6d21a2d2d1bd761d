//! The one error type of the crate.

use std::fmt;
use std::io;

/// Everything that can go wrong when driving a machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The machine could not be launched. Everything the launch created has been cleaned up and
    /// no process is left behind.
    #[error("launch failed: {cause}\n\tExit code: {}\n\tCommand: {command}\n\tOutput: {output}", DisplayExit(*.exitcode))]
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
    #[error("QMP error {class}: {desc}")]
    Qmp {
        /// The QMP error class, e.g. `GenericError` or `CommandNotFound`.
        class: String,
        /// QEMU's human-readable description.
        desc: String,
    },
    /// A wait ran out of time.
    #[error("timed out {0}")]
    Timeout(String),
    /// The QMP connection is gone (QEMU exited or closed it, or the machine shut down).
    #[error("QMP disconnected: {0}")]
    Disconnected(String),
    /// The call was interrupted through its [`Cancel`](crate::Cancel) token.
    #[error("interrupted")]
    Interrupted,
    /// A graceful shutdown (or a wait) did not end well and QEMU had to be killed; the box holds
    /// why (a timeout, an interruption, a QMP error on `quit` ...). Cleanup has run.
    #[error("abnormal shutdown: could not perform graceful shutdown: {0}")]
    AbnormalShutdown(Box<Error>),
    /// The call does not fit the machine's state (e.g. a command before launch, launch twice).
    #[error("wrong state: {0}")]
    State(String),
    /// An argument or setting is invalid.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The peer broke the QMP protocol (bad JSON, oversize message, malformed greeting …).
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
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

struct DisplayExit(Option<i32>);

impl fmt::Display for DisplayExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(code) => write!(f, "{code}"),
            None => f.write_str("none"),
        }
    }
}
