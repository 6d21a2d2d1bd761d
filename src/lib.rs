//! # qm — launch and drive QEMU virtual machines
//!
//! A blocking Rust core that reproduces QEMU's Python `QEMUMachine`: launch QEMU with a QMP
//! monitor, run commands (from many threads at once), wait for events, read the console, pass
//! file descriptors, and shut down — gracefully, or by force — without leaking processes, files
//! or descriptors. The same surface is exported to C (see `include/qm.h`) and Go.
//!
//! ```no_run
//! use std::time::Duration;
//! let vm = qm::Machine::new("qemu-system-x86_64");
//! vm.set_machine("none");
//! vm.launch()?;
//! let status = vm.cmd("query-status", None)?;
//! println!("{status}");
//! vm.shutdown(Duration::from_secs(30))?;
//! # Ok::<(), qm::Error>(())
//! ```
//!
//! Set `QM_LOG=debug` to see every QMP message and lifecycle step on stderr, or route the records
//! elsewhere with [`set_log_callback`].

#![warn(missing_docs)]

mod accept;
pub mod console;
mod conv;
mod error;
mod event;
pub mod fake;
pub mod ffi;
pub mod format;
mod gate;
pub mod guest;
pub mod guest_run;
mod jobs;
pub mod linux_guest;
mod log;
mod machine;
mod opts;
pub mod qga;
pub mod qmp;
pub mod schema;
pub mod snapshot;
mod sys;
pub mod template;
mod wait;

pub use console::RunOutput;
pub use conv::conv_keys;
pub use error::{Error, Result};
pub use event::{event_match, EventFilter};
pub use guest_run::{Channel, Guest};
pub use jobs::DEFAULT_JOB_TIMEOUT;
pub use log::{set_log_callback, set_log_level, LogCallback, LogLevel, LogRecord};
pub use machine::{launch_all, AttachAddress, Machine, MonitorAddress, DEFAULT_SHUTDOWN_TIMEOUT};
pub use qga::{AgentChannel, Exec, ExecOutput, GuestAgent, ShutdownMode};
pub use qmp::{QmpClient, DEFAULT_MAX_MESSAGE};
/// The JSON library of qm's API, re-exported so users need not add it (nor match its version).
pub use serde_json;
/// A JSON value: what QMP commands take and return.
pub use serde_json::Value;
pub use snapshot::{Ready, StateInfo};
pub use template::Template;
pub use wait::{millis_from_secs, Cancel, Wait, DEFAULT_TIMEOUT, MAX_MILLIS};

/// The README's Rust code blocks, compiled and run by `cargo test --doc` (they launch QEMU).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
