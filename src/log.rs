//! Leveled logging: to stderr by default, or to a callback the user installs.
//!
//! Warnings only by default. `QM_LOG` sets the level when the first message is considered (see
//! [`LogLevel`] for the values it accepts); [`set_log_level`] changes it at run time and
//! overrides `QM_LOG`. [`set_log_callback`] sends the records that pass the level to a function
//! instead of stderr (the C ABI's `qm_set_log_callback` and the Go `slog` adapter build on it).

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Once, RwLock};
use std::time::SystemTime;

/// How much the library logs.
///
/// `QM_LOG` accepts, in any case: `off` (also `none`, `0`), `warn` (also `warning`, `error`,
/// `1`) and `debug` (also `info`, `trace`, `2`); the numbers are the C ABI's `QM_LOG_*`
/// values. Any other non-empty value leaves the default (`warn`) and is reported by one
/// warning.
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

/// One log record, as a [log callback](set_log_callback) receives it.
#[derive(Clone, Copy, Debug)]
pub struct LogRecord<'a> {
    /// [`LogLevel::Warn`] or [`LogLevel::Debug`] (never `Off`).
    pub level: LogLevel,
    /// The part of qm that logged, as a Rust module path: `qm::qmp`, `qm::machine::launch` …
    pub target: &'a str,
    /// The message, one line (a QMP message is included whole).
    pub message: &'a str,
    /// When the record was made.
    pub time: SystemTime,
}

/// A function that receives log records (see [`set_log_callback`]).
pub type LogCallback = Box<dyn Fn(&LogRecord<'_>) + Send + Sync>;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warn as u8);
static FROM_ENV: Once = Once::new();
/// The callback; `None` means stderr. Read-locked while a callback runs, so that replacing it
/// waits for calls in progress (see [`set_log_callback`]).
static CALLBACK: RwLock<Option<LogCallback>> = RwLock::new(None);

thread_local! {
    /// This thread is inside the callback: a record it makes meanwhile goes to stderr, so a
    /// callback that calls qm can neither recurse nor deadlock on the callback's lock.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Sets the log level for the whole process, overriding `QM_LOG`.
pub fn set_log_level(level: LogLevel) {
    FROM_ENV.call_once(|| {});
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Sends every record that passes the level ([`set_log_level`], `QM_LOG`) to `callback`
/// instead of stderr, for the whole process; `None` restores stderr.
///
/// The callback runs on the thread that logs: any thread that calls into qm, and qm's own
/// console-drain threads; it may run on several threads at once. It must be quick and must not
/// call back into the machine that logged (a record may be made while that machine holds a
/// lock); records qm makes while the callback runs on the same thread go to stderr. When this
/// function returns, no call to the previous callback is in progress or will start, so what
/// the old callback used may be freed (it waits for calls in progress). Called from inside a
/// callback, where that wait would never end, it changes nothing and fails with
/// [`Error::State`](crate::Error::State). A panic in the callback is caught and the record is
/// lost.
///
/// qm does not depend on the `log` or `tracing` crates; forwarding to them is one line in the
/// callback (e.g. `log::log!(target: r.target, level, "{}", r.message)`):
///
/// ```
/// qm::set_log_callback(Some(Box::new(|r: &qm::LogRecord<'_>| {
///     eprintln!("[{:?} {}] {}", r.level, r.target, r.message);
/// })))?;
/// qm::set_log_callback(None)?; // back to stderr
/// # Ok::<(), qm::Error>(())
/// ```
pub fn set_log_callback(callback: Option<LogCallback>) -> crate::Result<()> {
    if IN_CALLBACK.with(Cell::get) {
        return Err(crate::Error::State(
            "the log callback cannot be changed from inside a log callback".into(),
        ));
    }
    let old = {
        let mut slot = CALLBACK.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, callback)
    };
    drop(old);
    Ok(())
}

/// Parses a `QM_LOG` value (see [`LogLevel`]); `Err` for a value that is not a level.
fn parse_level(value: &str) -> Result<Option<LogLevel>, ()> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "off" | "none" | "0" => Ok(Some(LogLevel::Off)),
        "warn" | "warning" | "error" | "1" => Ok(Some(LogLevel::Warn)),
        "debug" | "info" | "trace" | "2" => Ok(Some(LogLevel::Debug)),
        _ => Err(()),
    }
}

/// True when messages of `level` are logged; cheap enough for every QMP message.
pub(crate) fn enabled(level: LogLevel) -> bool {
    let mut bad = None;
    FROM_ENV.call_once(|| {
        let Some(value) = std::env::var_os("QM_LOG") else {
            return;
        };
        match parse_level(&value.to_string_lossy()) {
            Ok(Some(level)) => LEVEL.store(level as u8, Ordering::Relaxed),
            Ok(None) => {}
            Err(()) => bad = Some(value),
        }
    });
    // Only the thread that read the variable has `bad`: the warning is given once. It is
    // written outside `call_once`, which `write` would otherwise re-enter.
    if let Some(value) = bad {
        write(
            LogLevel::Warn,
            module_path!(),
            format_args!(
                "QM_LOG={value:?} is not a level (off, warn, debug, or 0, 1, 2; any case): \
                 logging warnings only"
            ),
        );
    }
    level != LogLevel::Off && level as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub(crate) fn write(level: LogLevel, target: &str, args: std::fmt::Arguments<'_>) {
    let time = SystemTime::now();
    if !IN_CALLBACK.with(Cell::get) {
        let callback = CALLBACK.read().unwrap_or_else(|e| e.into_inner());
        if let Some(callback) = callback.as_ref() {
            let message = args.to_string();
            let record = LogRecord {
                level,
                target,
                message: &message,
                time,
            };
            IN_CALLBACK.with(|c| c.set(true));
            // The callback's panic must not unwind through qm (which may hold locks).
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&record)));
            IN_CALLBACK.with(|c| c.set(false));
            return;
        }
    }
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
            $crate::log::write($crate::log::LogLevel::Debug, module_path!(), format_args!($($arg)*));
        }
    };
}

macro_rules! warning {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::LogLevel::Warn) {
            $crate::log::write($crate::log::LogLevel::Warn, module_path!(), format_args!($($arg)*));
        }
    };
}

pub(crate) use {debug, warning};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qm_log_values_in_any_case() {
        for (text, level) in [
            ("debug", LogLevel::Debug),
            ("DEBUG", LogLevel::Debug),
            (" Debug\n", LogLevel::Debug),
            ("2", LogLevel::Debug),
            ("info", LogLevel::Debug),
            ("Warn", LogLevel::Warn),
            ("WARNING", LogLevel::Warn),
            ("1", LogLevel::Warn),
            ("OFF", LogLevel::Off),
            ("0", LogLevel::Off),
        ] {
            assert_eq!(parse_level(text), Ok(Some(level)), "{text:?}");
        }
        assert_eq!(parse_level(""), Ok(None));
        for bad in ["verbose", "3", "-1", "debug2"] {
            assert_eq!(parse_level(bad), Err(()), "{bad:?}");
        }
    }
}
