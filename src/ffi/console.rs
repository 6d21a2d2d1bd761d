//! Console interaction: `qm_patterns` (what a wait looks for), `qm_console_match` (what it
//! found), and the waits and sends on a machine's console. The rules (one wait at a time, what a
//! wait consumes, the memory cap, the errors) are the core's, in `crate::console`; this file only
//! converts.

use std::ffi::{c_char, c_int, CString};
use std::time::Duration;

use super::boundary::{self, byte_slice, guard, out, string, Result};
use super::cancel::{self, qm_cancel};
use super::error::{call, qm_error, qm_status};
use super::handle::{self, CONSOLE_MATCH, PATTERNS};
use super::machine::{machine, qm_machine};
use crate::console::{Match, Pattern, Patterns};
use crate::Error;

/// What a console wait looks for: success patterns (at least one) and failure patterns, each a
/// literal string or a regular expression (Rust `regex` syntax, linear time: no pattern can make
/// a wait hang). Make one with `qm_patterns_new`, add patterns with `qm_patterns_add`, use it for
/// any number of waits, free it with `qm_patterns_free`. Not thread-safe while being added to;
/// once built, any number of threads may use it at once.
pub struct qm_patterns {
    patterns: Patterns,
}

/// How `qm_patterns_add` reads its pattern.
pub type qm_pattern_kind = u32;

/// The pattern is a literal string, matched byte for byte.
pub const QM_PATTERN_LITERAL: qm_pattern_kind = 0;
/// The pattern is a regular expression (Rust `regex` syntax, over bytes; `(?m)` turns on
/// multi-line `^`/`$`).
pub const QM_PATTERN_REGEX: qm_pattern_kind = 1;

/// What a successful console wait found. Owned by the caller, freed with
/// `qm_console_match_free`; immutable, so any number of threads may read it.
pub struct qm_console_match {
    found: Match,
    /// `found.text` with a NUL after it, for C.
    text: Vec<u8>,
}

/// A console's counters (`qm_console_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct qm_console_counters {
    /// Bytes received from the guest since launch.
    pub received: u64,
    /// Bytes kept in memory (the transcript), at most `cap`.
    pub kept: u64,
    /// Bytes no wait has consumed yet.
    pub unread: u64,
    /// Unread bytes dropped because they exceeded the cap (the console log file has them).
    pub dropped: u64,
    /// Bytes the raw copy (`qm_console_fd`) never got because nobody read it in time.
    pub raw_dropped: u64,
    /// The cap of the console's memory in bytes.
    pub cap: u64,
    /// True once the console reached end of file (QEMU exited or closed it).
    pub closed: bool,
}

/// A new, empty set of patterns; NULL only if memory runs out. Free it with `qm_patterns_free`.
#[no_mangle]
pub extern "C" fn qm_patterns_new() -> *mut qm_patterns {
    guard(std::ptr::null_mut(), || {
        handle::new(
            qm_patterns {
                patterns: Patterns::new(),
            },
            &PATTERNS,
        )
    })
}

/// Adds `pattern` (borrowed, UTF-8) to `p`: a success pattern, or with `failure` a failure
/// pattern (a wait that finds it fails with `QM_ERR_CONSOLE_FAILURE`). `kind` is
/// `QM_PATTERN_LITERAL` or `QM_PATTERN_REGEX`. Indexes count from 0 in the order added, success
/// and failure patterns separately. `QM_ERR_INVALID` for a regular expression that does not
/// compile (the message says why), an unknown kind, NULL or non-UTF-8 text; `p` is then
/// unchanged.
#[no_mangle]
pub unsafe extern "C" fn qm_patterns_add(
    p: *mut qm_patterns,
    pattern: *const c_char,
    kind: qm_pattern_kind,
    failure: bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_patterns_add", err_out, || {
        // SAFETY: NULL, not live (refused before any read), or a live `qm_patterns` that no
        // other thread uses during the call.
        let p = unsafe { handle::borrow_mut(p, &PATTERNS, "p") }?;
        // SAFETY: a NUL-terminated string (the caller's contract).
        let text = unsafe { string(pattern, "pattern") }?;
        let pattern = match kind {
            QM_PATTERN_LITERAL => Pattern::literal(text),
            QM_PATTERN_REGEX => Pattern::regex(text)?,
            other => {
                return Err(Error::Invalid(format!(
                    "kind {other} is not QM_PATTERN_LITERAL or QM_PATTERN_REGEX"
                )))
            }
        };
        if failure {
            p.patterns.push_failure(pattern);
        } else {
            p.patterns.push_success(pattern);
        }
        Ok(())
    })
}

/// Frees a set of patterns. NULL is a no-op. No call using it may still be running.
#[no_mangle]
pub unsafe extern "C" fn qm_patterns_free(p: *mut qm_patterns) {
    guard((), || {
        // SAFETY: NULL, not live (left alone, with a warning), or live and unused elsewhere.
        unsafe { handle::free(p, &PATTERNS, "qm_patterns_free") }
    })
}

/// Which success pattern matched: its index among the success patterns. 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_console_match_index(m: *const qm_console_match) -> usize {
    guard(0, || {
        // SAFETY: NULL, a live match, or one refused (with a warning) before any read.
        unsafe { handle::get(m, &CONSOLE_MATCH, "qm_console_match_index") }
            .map_or(0, |m| m.found.index)
    })
}

/// The text the wait consumed: everything unread before the match, and the match (which ends
/// the text). Exact bytes, which may hold NUL bytes or invalid UTF-8: stores their number in
/// `*len_out` (when `len_out` is not NULL); a NUL follows them. NULL for NULL.
///
/// The bytes belong to `m` and stay valid until `qm_console_match_free(m)`.
#[no_mangle]
pub unsafe extern "C" fn qm_console_match_text(
    m: *const qm_console_match,
    len_out: *mut usize,
) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL, a live match, or one refused (with a warning) before any read.
        let Some(m) = (unsafe { handle::get(m, &CONSOLE_MATCH, "qm_console_match_text") }) else {
            return std::ptr::null();
        };
        if !len_out.is_null() {
            // SAFETY: not NULL; the caller's contract (a writable size_t).
            unsafe { len_out.write(m.found.text.len()) };
        }
        m.text.as_ptr().cast()
    })
}

/// Where the match starts in the text of `qm_console_match_text` (it ends at the end). 0 for
/// NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_console_match_start(m: *const qm_console_match) -> usize {
    guard(0, || {
        // SAFETY: NULL, a live match, or one refused (with a warning) before any read.
        unsafe { handle::get(m, &CONSOLE_MATCH, "qm_console_match_start") }
            .map_or(0, |m| m.found.start)
    })
}

/// Unread bytes dropped (over the console's cap) since the previous wait that returned text:
/// when not 0, this text does not begin where the previous one ended. 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_console_match_dropped(m: *const qm_console_match) -> u64 {
    guard(0, || {
        // SAFETY: NULL, a live match, or one refused (with a warning) before any read.
        unsafe { handle::get(m, &CONSOLE_MATCH, "qm_console_match_dropped") }
            .map_or(0, |m| m.found.dropped)
    })
}

/// Frees a match and the text it lent out. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn qm_console_match_free(m: *mut qm_console_match) {
    guard((), || {
        // SAFETY: NULL, not live (left alone, with a warning), or live and unused elsewhere.
        unsafe { handle::free(m, &CONSOLE_MATCH, "qm_console_match_free") }
    })
}

/// Stores `found` for the caller.
fn write_match(out: boundary::Out<*mut qm_console_match>, found: Match) {
    let mut text = Vec::with_capacity(found.text.len() + 1);
    text.extend_from_slice(&found.text);
    text.push(0);
    out.write(handle::new(
        qm_console_match { found, text },
        &CONSOLE_MATCH,
    ));
}

/// Borrows the patterns behind `p`.
///
/// # Safety
/// A non-NULL `p` must be a live `qm_patterns`.
unsafe fn patterns<'a>(p: *const qm_patterns) -> Result<&'a Patterns> {
    // SAFETY: the caller's contract; a pointer that is not live is refused before any read.
    Ok(&unsafe { handle::borrow(p, &PATTERNS, "patterns") }?.patterns)
}

/// Waits until one of the success patterns of `patterns` shows on the console of `m`, and stores
/// what was found in `*match_out` (free it with `qm_console_match_free`). The text up to and
/// including the match is consumed; what follows stays for the next wait. The earliest match
/// wins (a failure pattern on a tie); a pattern split across reads still matches.
///
/// One wait at a time per console: a wait (or `qm_console_exec`, `qm_console_interrupt_until`)
/// started while another runs fails at once with `QM_ERR_STATE`. Errors, each with the console
/// text in `qm_error_console_text`: `QM_ERR_CONSOLE_FAILURE` when a failure pattern matched
/// (which one: `qm_error_console_pattern`; consumed like a match), `QM_ERR_CONSOLE_CLOSED` at
/// once when the console reaches end of file (QEMU exited or closed it; also for every wait
/// after it, until the next launch), `QM_ERR_TIMEOUT` after `timeout_ms` (the message names the
/// patterns and the time waited; the text stays unread). `timeout_ms` is milliseconds or
/// `QM_WAIT_FOREVER` (this call has no default: `QM_WAIT_DEFAULT` is `QM_ERR_INVALID`); `cancel`
/// (NULL: none) interrupts it from another thread with `QM_ERR_INTERRUPTED`. `QM_ERR_STATE`
/// without a console (`qm_set_console`) or before a launch; `QM_ERR_INVALID` without a success
/// pattern. All pointers are borrowed for the call.
#[no_mangle]
pub unsafe extern "C" fn qm_console_wait(
    m: *mut qm_machine,
    patterns: *const qm_patterns,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    match_out: *mut *mut qm_console_match,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_wait", err_out, || {
        let out = out(match_out, "match_out")?;
        // SAFETY: the handle, patterns and token contracts.
        let (m, patterns, wait) = unsafe {
            (
                machine(m)?,
                self::patterns(patterns)?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        write_match(out, m.vm.console_wait(patterns, wait)?);
        Ok(())
    })
}

/// Sends `len` bytes from `bytes` (borrowed; NULL only when `len` is 0) to the guest's console,
/// waiting up to `timeout_ms` (or `QM_WAIT_FOREVER`; no default) while the console is full.
/// Concurrent sends never interleave within one call's bytes. `QM_ERR_CONSOLE_CLOSED` when the
/// console is gone, `QM_ERR_TIMEOUT` (the message says how much was sent), `QM_ERR_INTERRUPTED`.
#[no_mangle]
pub unsafe extern "C" fn qm_console_send(
    m: *mut qm_machine,
    bytes: *const u8,
    len: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_send", err_out, || {
        // SAFETY: the handle, buffer and token contracts.
        let (m, bytes, wait) = unsafe {
            (
                machine(m)?,
                byte_slice(bytes, len, "bytes")?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        m.vm.console_send(bytes, wait)
    })
}

/// Sends `line` and then `eol` (both borrowed UTF-8; `eol` is the line ending the guest wants,
/// e.g. `"\n"` or `"\r"`) to the guest's console, as `qm_console_send` does.
#[no_mangle]
pub unsafe extern "C" fn qm_console_send_line(
    m: *mut qm_machine,
    line: *const c_char,
    eol: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_send_line", err_out, || {
        // SAFETY: the handle, string and token contracts.
        let (m, line, eol, wait) = unsafe {
            (
                machine(m)?,
                string(line, "line")?,
                string(eol, "eol")?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        m.vm.console_send_line(line, eol, wait)
    })
}

/// Sends `line` + `eol` (as `qm_console_send_line`), then waits for `patterns` (as
/// `qm_console_wait`), both within the one `timeout_ms`. Output left unread before the command
/// is searched too (`qm_console_skip_unread` first ignores it); the text includes the guest's
/// echo of the command, if it echoes.
#[no_mangle]
pub unsafe extern "C" fn qm_console_exec(
    m: *mut qm_machine,
    line: *const c_char,
    eol: *const c_char,
    patterns: *const qm_patterns,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    match_out: *mut *mut qm_console_match,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_exec", err_out, || {
        let out = out(match_out, "match_out")?;
        // SAFETY: the handle, string, patterns and token contracts.
        let (m, line, eol, patterns, wait) = unsafe {
            (
                machine(m)?,
                string(line, "line")?,
                string(eol, "eol")?,
                self::patterns(patterns)?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        write_match(out, m.vm.console_exec(line, eol, patterns, wait)?);
        Ok(())
    })
}

/// Sends the `key_len` bytes of `key` (borrowed) every `interval_ms` milliseconds (> 0), first
/// at once, until one of `patterns` shows (boot menus, "press any key" prompts); then as
/// `qm_console_wait`, within the one `timeout_ms`.
#[no_mangle]
pub unsafe extern "C" fn qm_console_interrupt_until(
    m: *mut qm_machine,
    key: *const u8,
    key_len: usize,
    interval_ms: u32,
    patterns: *const qm_patterns,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    match_out: *mut *mut qm_console_match,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_interrupt_until", err_out, || {
        let out = out(match_out, "match_out")?;
        // SAFETY: the handle, buffer, patterns and token contracts.
        let (m, key, patterns, wait) = unsafe {
            (
                machine(m)?,
                byte_slice(key, key_len, "key")?,
                self::patterns(patterns)?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let interval = Duration::from_millis(u64::from(interval_ms));
        write_match(
            out,
            m.vm.console_interrupt_until(key, interval, patterns, wait)?,
        );
        Ok(())
    })
}

/// Stores the console output kept in memory in `*text_out`: its last `last` bytes, or all of it
/// (up to the cap, `qm_set_console_buffer`) when `last` is 0; and its length in `*len_out` (when
/// not NULL). A NUL-terminated string the caller frees with `qm_string_free`; invalid UTF-8 and
/// NUL bytes become U+FFFD (the console log file has the exact bytes). Readable while the
/// machine runs and after its shutdown, until the next launch; never blocks. `QM_ERR_STATE`
/// without a console or before the first launch.
#[no_mangle]
pub unsafe extern "C" fn qm_console_transcript(
    m: *const qm_machine,
    last: usize,
    text_out: *mut *mut c_char,
    len_out: *mut usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_transcript", err_out, || {
        let out = out(text_out, "text_out")?;
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        let bytes = m.vm.console_transcript((last > 0).then_some(last))?;
        let text = boundary::owned_c_string(String::from_utf8_lossy(&bytes).into_owned());
        if !len_out.is_null() {
            // SAFETY: not NULL; the caller's contract (a writable size_t).
            unsafe { len_out.write(text.as_bytes().len()) };
        }
        out.write(CString::into_raw(text));
        Ok(())
    })
}

/// Stores the console's counters in `*stats_out`. Never blocks. `QM_ERR_STATE` without a
/// console or before the first launch.
#[no_mangle]
pub unsafe extern "C" fn qm_console_stats(
    m: *const qm_machine,
    stats_out: *mut qm_console_counters,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_stats", err_out, || {
        let out = out(stats_out, "stats_out")?;
        // SAFETY: the handle contract.
        let s = unsafe { machine(m) }?.vm.console_stats()?;
        out.write(qm_console_counters {
            received: s.received,
            kept: s.kept as u64,
            unread: s.unread as u64,
            dropped: s.dropped,
            raw_dropped: s.raw_dropped,
            cap: s.cap as u64,
            closed: s.closed,
        });
        Ok(())
    })
}

/// Marks the console output received so far as read, so the next wait only sees newer output;
/// stores how many bytes that skipped in `*skipped_out` (when not NULL). The transcript keeps
/// them.
#[no_mangle]
pub unsafe extern "C" fn qm_console_skip_unread(
    m: *const qm_machine,
    skipped_out: *mut usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_skip_unread", err_out, || {
        // SAFETY: the handle contract.
        let skipped = unsafe { machine(m) }?.vm.console_skip_unread()?;
        if !skipped_out.is_null() {
            // SAFETY: not NULL; the caller's contract (a writable size_t).
            unsafe { skipped_out.write(skipped) };
        }
        Ok(())
    })
}

/// Caps the console's memory, in bytes: the transcript and the output no wait consumed yet
/// (default 1 MiB; values under 4 KiB are raised to 4 KiB; 0 is the default). Output over the cap that no wait consumed is dropped and reported
/// (`qm_console_match_dropped`, `qm_console_stats`); the console log file keeps everything.
/// Applies to the running console at once and to later launches.
#[no_mangle]
pub unsafe extern "C" fn qm_set_console_buffer(
    m: *mut qm_machine,
    bytes: usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_console_buffer", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.set_console_buffer(bytes);
        Ok(())
    })
}

// ---- the console's descriptor ---------------------------------------------------------------------

/// Stores the console's descriptor (a connected stream socket) in `*fd_out`. It is borrowed:
/// owned by the machine and valid until a shutdown begins (or `qm_free`); the caller may read,
/// write and poll it (and set it non-blocking) but must not close it. `QM_ERR_STATE` unless
/// `qm_set_console` was called and the machine is launched.
///
/// It is a raw copy of the console: it receives every byte the guest writes (from launch, as far
/// as the console's memory still holds it) and what is written to it goes to the guest; reading
/// it does not consume what `qm_console_wait` sees. Returns at once, even during a shutdown. Another
/// thread's shutdown may close the descriptor at any moment (and its number be reused): a
/// program that shuts down from another thread should use `qm_console_dup` instead.
#[no_mangle]
pub unsafe extern "C" fn qm_console_fd(
    m: *const qm_machine,
    fd_out: *mut c_int,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_fd", err_out, || {
        let out = out(fd_out, "fd_out")?;
        // SAFETY: the handle contract.
        let fd = unsafe { machine(m) }?.vm.console_fd()?;
        out.write(fd);
        Ok(())
    })
}

/// Stores a new descriptor for the console in `*fd_out`: a close-on-exec duplicate that the
/// caller owns and closes (it stays valid after a shutdown, then reading gives end of file).
/// `QM_ERR_STATE` unless `qm_set_console` was called and the machine is
/// launched. Returns at once, even during a shutdown.
#[no_mangle]
pub unsafe extern "C" fn qm_console_dup(
    m: *const qm_machine,
    fd_out: *mut c_int,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_console_dup", err_out, || {
        let out = out(fd_out, "fd_out")?;
        // SAFETY: the handle contract.
        let console = unsafe { machine(m) }?.vm.console()?;
        out.write(std::os::fd::IntoRawFd::into_raw_fd(console));
        Ok(())
    })
}
