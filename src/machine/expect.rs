//! The machine's console interaction: waits for patterns, sends, the transcript. The work is
//! done by [`crate::console::Console`]; these methods find the console of the current (or last)
//! run and hand the call over without holding any machine lock while it waits.

use std::sync::Arc;
use std::time::Duration;

use super::{lock, Machine};
use crate::console::{Console, Match, Patterns, Stats};
use crate::error::{Error, Result};
use crate::wait::Wait;

impl Machine {
    /// The console of the current run, or of the last one after a shutdown (whose waits fail
    /// with [`Error::ConsoleClosed`] and whose transcript stays readable until the next launch).
    /// [`Error::State`] before the first launch, or without [`set_console`](Self::set_console).
    pub fn console_handle(&self) -> Result<Arc<Console>> {
        lock(&self.console)
            .clone()
            .ok_or_else(|| Error::State("no console (set_console before launch)".into()))
    }

    /// Caps the console's memory: the transcript and the output no wait consumed yet (default
    /// [`DEFAULT_BUFFER`](crate::console::DEFAULT_BUFFER), 1 MiB; at least
    /// [`MIN_BUFFER`](crate::console::MIN_BUFFER)). Output over the cap that no wait consumed is
    /// dropped and reported ([`Match::dropped`], [`Stats::dropped`]); the console log file keeps
    /// everything. 0 is the default. Applies to the running console at once, and to the next
    /// launches.
    pub fn set_console_buffer(&self, bytes: usize) {
        lock(&self.cfg).console_buffer = bytes;
        if let Some(console) = lock(&self.console).as_ref() {
            // 0 means the default, as at launch.
            console.set_buffer(if bytes == 0 {
                crate::console::DEFAULT_BUFFER
            } else {
                bytes
            });
        }
    }

    /// Waits until one of `patterns`' success patterns shows on the console; see
    /// [`Console::wait_for`] and the [console module](crate::console) for the rules (one wait at
    /// a time, what it consumes, its errors). The wait has no default: give a timeout or
    /// [`Wait::forever`].
    pub fn console_wait(&self, patterns: &Patterns, wait: impl Into<Wait>) -> Result<Match> {
        self.console_handle()?.wait_for(patterns, wait)
    }

    /// Sends `bytes` to the guest's console ([`Console::send`]).
    pub fn console_send(&self, bytes: &[u8], wait: impl Into<Wait>) -> Result<()> {
        self.console_handle()?.send(bytes, wait)
    }

    /// Sends `line` and then `eol` (the caller's line ending) to the guest's console.
    pub fn console_send_line(&self, line: &str, eol: &str, wait: impl Into<Wait>) -> Result<()> {
        self.console_handle()?.send_line(line, eol, wait)
    }

    /// Sends `line` + `eol`, then waits for `patterns` within the same bound ([`Console::exec`]).
    pub fn console_exec(
        &self,
        line: &str,
        eol: &str,
        patterns: &Patterns,
        wait: impl Into<Wait>,
    ) -> Result<Match> {
        self.console_handle()?.exec(line, eol, patterns, wait)
    }

    /// Sends `key` every `interval` until a pattern shows ([`Console::interrupt_until`]).
    pub fn console_interrupt_until(
        &self,
        key: &[u8],
        interval: Duration,
        patterns: &Patterns,
        wait: impl Into<Wait>,
    ) -> Result<Match> {
        self.console_handle()?
            .interrupt_until(key, interval, patterns, wait)
    }

    /// The console output kept in memory: the last `last` bytes, or all of it (up to the cap)
    /// for `None`. Readable while the machine runs and after its shutdown.
    pub fn console_transcript(&self, last: Option<usize>) -> Result<Vec<u8>> {
        Ok(self.console_handle()?.transcript(last))
    }

    /// The console's counters ([`Stats`]).
    pub fn console_stats(&self) -> Result<Stats> {
        Ok(self.console_handle()?.stats())
    }

    /// Marks the console output received so far as read ([`Console::skip_unread`]).
    pub fn console_skip_unread(&self) -> Result<usize> {
        Ok(self.console_handle()?.skip_unread())
    }
}
