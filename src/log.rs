//! Minimal leveled logging to stderr.
//!
//! Off by default except warnings. `QM_LOG=debug` (or `warn`, `off`) sets the level when the
//! first message is considered; [`set_log_level`] changes it at run time.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;

/// How much the library writes to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    /// Nothing.
    Off = 0,
    /// Unexpected events worth a human's attention (e.g. QEMU killed by a foreign signal).
    Warn = 1,
    /// Lifecycle steps and every QMP message.
    Debug = 2,
}

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warn as u8);
static FROM_ENV: Once = Once::new();

/// Sets the log level for the whole process, overriding `QM_LOG`.
pub fn set_log_level(level: LogLevel) {
    FROM_ENV.call_once(|| {});
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// True when messages of `level` are written; cheap enough for every QMP message.
pub(crate) fn enabled(level: LogLevel) -> bool {
    FROM_ENV.call_once(|| {
        let from_env = match std::env::var("QM_LOG").as_deref() {
            Ok("debug") => Some(LogLevel::Debug),
            Ok("warn") => Some(LogLevel::Warn),
            Ok("off") => Some(LogLevel::Off),
            _ => None,
        };
        if let Some(level) = from_env {
            LEVEL.store(level as u8, Ordering::Relaxed);
        }
    });
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub(crate) fn write(level: LogLevel, args: std::fmt::Arguments<'_>) {
    let tag = if level == LogLevel::Warn {
        "warning"
    } else {
        "debug"
    };
    eprintln!("qm {tag}: {args}");
}

macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::LogLevel::Debug) {
            $crate::log::write($crate::log::LogLevel::Debug, format_args!($($arg)*));
        }
    };
}

macro_rules! warning {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::LogLevel::Warn) {
            $crate::log::write($crate::log::LogLevel::Warn, format_args!($($arg)*));
        }
    };
}

pub(crate) use {debug, warning};
