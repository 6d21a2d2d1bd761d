/*
 * qm: launch and drive QEMU virtual machines: the C API.
 *
 * Link with `pkg-config --cflags --libs qm` (add `--static` for libqm.a).
 *
 * Conventions, which every function follows unless its documentation says otherwise:
 *
 * Errors. A fallible function returns a qm_status: QM_OK (0) on success. Its last parameter,
 *   `qm_error **err_out`, may be NULL; when it is not and the call fails, `*err_out` receives a
 *   new error object (message and structured details) that the caller owns and frees with
 *   qm_error_free (a previous value of `*err_out` is overwritten, not freed). On success
 *   `*err_out` is left untouched. There is no thread-local "last error": errors are safe to
 *   read from any thread, and from Go, whose goroutines move between threads.
 *
 * Outputs. Results go through `*_out` parameters, which must not be NULL (QM_ERR_INVALID) and
 *   are written only on success. A `char *` result is a NUL-terminated UTF-8 string owned by
 *   the caller, freed with qm_string_free (never free()). Strings returned by qm_error_* are
 *   borrowed from the error object.
 *
 * Inputs. Strings are NUL-terminated UTF-8, borrowed for the duration of the call only. JSON
 *   parameters are UTF-8 JSON texts. A NULL pointer where one is not allowed, bad UTF-8, text
 *   that is not JSON or JSON of the wrong shape give QM_ERR_INVALID with a message naming the
 *   parameter, never a crash.
 *
 * Handles. qm_machine, qm_error and qm_cancel are opaque; each comes from its own function and
 *   is freed with its own _free function, once; _free(NULL) is a no-op. qm records the handles
 *   it made, so a handle used after its _free (or a pointer qm never returned) is refused
 *   without being read: QM_ERR_INVALID naming the parameter, or for a call without err_out
 *   (a second _free, an accessor) its NULL-case result and a warning in the log. A freed
 *   handle whose address a later _new reused names the new object and cannot be told apart.
 *
 * Timeouts. `int64_t timeout_ms` is in milliseconds. QM_WAIT_FOREVER (-1) waits as long as it
 *   takes; 0 does not block (look only); QM_WAIT_DEFAULT (-2) is the call's own default where
 *   documented. Any other negative value is QM_ERR_INVALID.
 *
 * Blocking. Only the calls that take a timeout (qm_qmp, qm_cmd, the event calls, qm_shutdown,
 *   qm_wait, the qm_agent_* calls) and qm_launch, qm_kill and qm_free wait for QEMU or its
 *   guest; each says how long. Every other call returns at once.
 *
 * Cancellation. Every call that takes a timeout also takes a `qm_cancel *cancel` (may be NULL):
 *   qm_cancel_fire from another thread makes it return QM_ERR_INTERRUPTED at once.
 *
 * Threads. All functions are thread-safe. Any number of threads may call functions on one
 *   qm_machine at once, except qm_free, which must be the last call on it.
 *
 * Panics. A bug inside qm never unwinds into C: it is reported as QM_ERR_PANIC.
 */

#ifndef QM_H
#define QM_H

/*
 * Generated from src/ffi by tools/header (cbindgen 0.29.0). Do not edit: change the Rust
 * doc comments and run `make header`. CI (`make check-header`) fails when it is out of date.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

/* The version of this header (the library's at run time: qm_version()). */
#define QM_VERSION_MAJOR 0
#define QM_VERSION_MINOR 2
#define QM_VERSION_PATCH 0
#define QM_VERSION_STRING "0.2.0"


/**
 * `timeout_ms` value: wait as long as it takes (a `qm_cancel` can still interrupt the call).
 */
#define QM_WAIT_FOREVER -1

/**
 * `timeout_ms` value: the call's own default. For `qm_qmp` and `qm_cmd` that is the machine's
 * QMP timer (`qm_set_qmp_timer`, 30 s unless changed); for `qm_shutdown` and `qm_wait` it is
 * 30 s. Other calls reject it with `QM_ERR_INVALID`.
 */
#define QM_WAIT_DEFAULT -2

/**
 * `qm_set_max_queued_events` value: no cap (the default); events are never dropped.
 */
#define QM_EVENTS_UNLIMITED -1

/**
 * The longest banner `qm_guest_write_image` accepts, in bytes.
 */
#define QM_GUEST_MAX_BANNER 380

/**
 * The result of every fallible call. The values are stable: they never change, and new ones
 * are only ever added at the end.
 */
typedef enum {
    /**
     * Success.
     */
    QM_OK = 0,
    /**
     * The machine could not be launched. The error object has QEMU's exit code (if it exited),
     * the command line, QEMU's output and the cause (`qm_error_cause`); everything the launch
     * created is cleaned up.
     */
    QM_ERR_LAUNCH = 1,
    /**
     * QEMU answered a command with an error: see `qm_error_qmp_class` / `qm_error_qmp_desc`.
     */
    QM_ERR_QMP = 2,
    /**
     * A wait ran out of time.
     */
    QM_ERR_TIMEOUT = 3,
    /**
     * The QMP connection, or for a `qm_agent_*` call the guest agent's channel, is gone
     * (QEMU exited or closed it, or the machine shut down); the message names which.
     */
    QM_ERR_DISCONNECTED = 4,
    /**
     * The call was interrupted through its `qm_cancel` token.
     */
    QM_ERR_INTERRUPTED = 5,
    /**
     * A graceful shutdown (or wait) did not end in time, or was interrupted: QEMU was killed.
     * Cleanup has run. `qm_error_cause` says why.
     */
    QM_ERR_ABNORMAL_SHUTDOWN = 6,
    /**
     * The call does not fit the machine's state (a command before launch, launch twice ...).
     */
    QM_ERR_STATE = 7,
    /**
     * An invalid argument: a NULL pointer, a string that is not UTF-8, text that is not JSON
     * (or JSON of the wrong shape), an out-of-range number, an invalid setting.
     */
    QM_ERR_INVALID = 8,
    /**
     * QEMU broke the QMP protocol (bad JSON, a message over the size cap, a bad greeting).
     */
    QM_ERR_PROTOCOL = 9,
    /**
     * An operating-system call failed: see `qm_error_os_code`.
     */
    QM_ERR_IO = 10,
    /**
     * A bug in qm: a Rust panic was caught at the C boundary. The handle stays usable but its
     * state may be inconsistent; please report the message.
     */
    QM_ERR_PANIC = 11,
    /**
     * QMP events were dropped because more than the cap set with `qm_set_max_queued_events`
     * were queued (the oldest go first). Reported once, to the next call that reads events;
     * `qm_dropped_events` counts them all.
     */
    QM_ERR_EVENTS_DROPPED = 12,
    /**
     * The console reached end of file (QEMU exited or closed it) before a console wait found
     * its pattern, or a send could not be delivered: see `qm_error_console_text`.
     */
    QM_ERR_CONSOLE_CLOSED = 13,
    /**
     * A console wait found one of its failure patterns: see `qm_error_console_text` and
     * `qm_error_console_pattern`.
     */
    QM_ERR_CONSOLE_FAILURE = 14,
    /**
     * A check before send refused a command (or an event wait) under a strict schema policy
     * (`qm_set_schema_policy`); nothing was sent. `qm_error_schema_path` says where
     * (`arguments.file.filename`), `qm_error_schema_rule` which rule.
     */
    QM_ERR_REFUSED = 15,
} qm_status;

/**
 * A cancellation token. Pass it to blocking calls (`qm_qmp`, `qm_event_wait`, `qm_shutdown` ...);
 * `qm_cancel_fire` from any thread makes every call waiting with it return
 * `QM_ERR_INTERRUPTED` at once. Firing is sticky: a call that starts after the token fired
 * returns `QM_ERR_INTERRUPTED` before doing anything — except `qm_shutdown` and `qm_wait`,
 * for which a fired token means "do not wait: kill QEMU" (`QM_ERR_ABNORMAL_SHUTDOWN`, QEMU
 * gone, cleanup done). A token is not tied to one machine and
 * may be shared by many calls and threads; make a new one to start over.
 */
typedef struct qm_cancel qm_cancel;

/**
 * What a successful console wait found. Owned by the caller, freed with
 * `qm_console_match_free`; immutable, so any number of threads may read it.
 */
typedef struct qm_console_match qm_console_match;

/**
 * An error: status, message and structured details. Created by a failed call and owned by the
 * caller, who frees it with `qm_error_free`. Immutable: any number of threads may read it at
 * once; it is tied to no thread and no handle (it outlives the machine that produced it).
 */
typedef struct qm_error qm_error;

/**
 * The result of `qm_agent_exec`: how the guest program ended and what it wrote. Owned by the
 * caller, freed with `qm_exec_result_free`; immutable, readable from any thread.
 */
typedef struct qm_exec_result qm_exec_result;

/**
 * A QEMU virtual machine: its configuration, and while launched the QEMU process, its QMP
 * connection, its event queue and its console.
 *
 * Thread-safety: every function that takes a `qm_machine *` may be called from any number of
 * threads at once on the same handle, except `qm_free`, which must be the last call. Commands
 * from several threads run concurrently, each getting its own reply; a shutdown in the middle
 * fails the others with `QM_ERR_DISCONNECTED` (or `QM_ERR_STATE` once it is over).
 * Configuration calls apply to the next launch.
 */
typedef struct qm_machine qm_machine;

/**
 * What a console wait looks for: success patterns (at least one) and failure patterns, each a
 * literal string or a regular expression (Rust `regex` syntax, linear time: no pattern can make
 * a wait hang). Make one with `qm_patterns_new`, add patterns with `qm_patterns_add`, use it for
 * any number of waits, free it with `qm_patterns_free`. Not thread-safe while being added to;
 * once built, any number of threads may use it at once.
 */
typedef struct qm_patterns qm_patterns;

/**
 * The result of `qm_guest_run`: what the command printed and how it ended. Owned by the
 * caller, freed with `qm_run_result_free`; immutable, readable from any thread.
 */
typedef struct qm_run_result qm_run_result;

/**
 * The parsed QMP schema of a running QEMU, from `qm_schema_get`. Immutable: any number of
 * threads may read it at once. It stays valid after the machine shuts down or is freed; free
 * it with `qm_schema_free`.
 */
typedef struct qm_schema qm_schema;

/**
 * A template: a machine description and the directory its saved state lives in (see
 * `qm_template_new`). Owned by the caller, freed with `qm_template_free`. Thread-safe: clones
 * may be started from many threads at once.
 */
typedef struct qm_template qm_template;

/**
 * How much qm logs (`qm_set_log_level`), to stderr or to a `qm_set_log_callback` callback.
 */
typedef int qm_log_level;

/**
 * What the test guest does after writing its banner line to the serial port.
 */
typedef int qm_guest_action;

/**
 * Which channel a `qm_guest_*` call uses.
 */
typedef int qm_channel;

/**
 * How `qm_patterns_add` reads its pattern.
 */
typedef uint32_t qm_pattern_kind;

/**
 * A console's counters (`qm_console_stats`).
 */
typedef struct {
    /**
     * Bytes received from the guest since launch.
     */
    uint64_t received;
    /**
     * Bytes kept in memory (the transcript), at most `cap`.
     */
    uint64_t kept;
    /**
     * Bytes no wait has consumed yet.
     */
    uint64_t unread;
    /**
     * Unread bytes dropped because they exceeded the cap (the console log file has them).
     */
    uint64_t dropped;
    /**
     * Bytes the raw copy (`qm_console_fd`) never got because nobody read it in time.
     */
    uint64_t raw_dropped;
    /**
     * The cap of the console's memory in bytes.
     */
    uint64_t cap;
    /**
     * True once the console reached end of file (QEMU exited or closed it).
     */
    bool closed;
} qm_console_counters;

/**
 * What a JSON Pointer designates (`qm_json_type`).
 */
typedef int qm_json_kind;

/**
 * A function that receives qm's log records (see `qm_set_log_callback`).
 *
 * - `user`: the pointer given to `qm_set_log_callback`, unchanged.
 * - `level`: `QM_LOG_WARN` or `QM_LOG_DEBUG`.
 * - `target`: the part of qm that logged, e.g. `"qm::qmp"`, `"qm::machine::launch"` (Rust
 *   module paths: a Python adapter may map `::` to `.` for logger names).
 * - `message`: one line of UTF-8 (a QMP message is included whole).
 * - `timestamp`: when the record was made, in seconds since the Unix epoch (like Python's
 *   `time.time()`).
 *
 * `target` and `message` are borrowed for the duration of the call only: copy them to keep
 * them.
 */
typedef void (*qm_log_fn)(void *user,
                          qm_log_level level,
                          const char *target,
                          const char *message,
                          double timestamp);

/**
 * What a check before send does with what it finds (`qm_set_schema_policy`).
 */
typedef int qm_schema_level;

/**
 * The type of a `qm_arg`.
 */
typedef int qm_arg_kind;

/**
 * One argument of a format: its kind and its value in the field the kind names. Make them
 * with `QM_ARG(x)` (the kind follows x's C type) or `qm_arg_str`, `qm_arg_int`,
 * `qm_arg_uint`, `qm_arg_double`, `qm_arg_bool`; the other fields are ignored.
 */
typedef struct {
    /**
     * A `QM_ARG_*` value.
     */
    qm_arg_kind kind;
    /**
     * The string of `QM_ARG_STR`.
     */
    const char *s;
    /**
     * The value of `QM_ARG_INT` and `QM_ARG_BOOL`.
     */
    int64_t i;
    /**
     * The value of `QM_ARG_UINT`.
     */
    uint64_t u;
    /**
     * The value of `QM_ARG_DOUBLE`.
     */
    double d;
} qm_arg;

/**
 * When a restored machine (or a template's first boot) counts as ready.
 */
typedef int qm_ready;

/**
 * Log nothing.
 */
#define QM_LOG_OFF 0

/**
 * Log warnings only (e.g. QEMU killed by a signal qm did not send). The default, unless the
 * environment variable `QM_LOG` says otherwise: `off`, `warn` or `debug` in any case, or the
 * number of a `QM_LOG_*` constant (`0`, `1`, `2`); any other value gets one warning.
 */
#define QM_LOG_WARN 1

/**
 * Log every lifecycle step and every QMP message.
 */
#define QM_LOG_DEBUG 2

/**
 * Power off through ACPI: QEMU emits a `SHUTDOWN` event with `"guest": true` and exits with 0.
 */
#define QM_GUEST_POWEROFF 0

/**
 * Echo every byte read from the serial port, except two commands (not echoed): `'p'` powers
 * off (as `QM_GUEST_POWEROFF`), `'x'` exits QEMU with status 3 (isa-debug-exit value 1).
 */
#define QM_GUEST_ECHO 1

/**
 * Exit QEMU at once through isa-debug-exit with `exit_value`: QEMU's exit status is then
 * `qm_guest_exit_status(exit_value)`.
 */
#define QM_GUEST_EXIT 2

/**
 * Halt forever: a guest that never stops by itself.
 */
#define QM_GUEST_HALT 3

/**
 * The console (`qm_set_console`): a shell at its prompt on the serial port. qm types one line
 * that frames the command with markers made of a fresh nonce; stdout and stderr come merged;
 * kernel messages are cut out of the output (`qm_run_result_kernel_messages`); the shell keeps
 * its state (`cd`, variables) between runs. A timeout or cancel sends Ctrl-C, and the next run
 * resynchronises by itself.
 */
#define QM_CHANNEL_CONSOLE 0

/**
 * The guest agent (`qm_set_guest_agent`): `/bin/sh -c COMMAND` through `guest-exec`; stderr
 * apart; each run is a fresh shell.
 */
#define QM_CHANNEL_AGENT 1

/**
 * The pattern is a literal string, matched byte for byte.
 */
#define QM_PATTERN_LITERAL 0

/**
 * The pattern is a regular expression (Rust `regex` syntax, over bytes; `(?m)` turns on
 * multi-line `^`/`$`).
 */
#define QM_PATTERN_REGEX 1

/**
 * The pointer designates nothing (a missing member, an index past the end).
 */
#define QM_JSON_MISSING 0

/**
 * `null`.
 */
#define QM_JSON_NULL 1

/**
 * `true` or `false`.
 */
#define QM_JSON_BOOL 2

/**
 * A number.
 */
#define QM_JSON_NUMBER 3

/**
 * A string.
 */
#define QM_JSON_STRING 4

/**
 * An array.
 */
#define QM_JSON_ARRAY 5

/**
 * An object.
 */
#define QM_JSON_OBJECT 6

/**
 * Not looked at.
 */
#define QM_SCHEMA_OFF 0

/**
 * Logged as a warning (see `qm_set_log_callback`); the command is sent all the same.
 */
#define QM_SCHEMA_WARN 1

/**
 * Refused with `QM_ERR_REFUSED`; the command is never sent.
 */
#define QM_SCHEMA_STRICT 2

/**
 * Ends an argument list (the macros add one; never read as an argument).
 */
#define QM_ARG_END 0

/**
 * `s`: a NUL-terminated UTF-8 string (borrowed for the call), for `%s` or `%j`.
 */
#define QM_ARG_STR 1

/**
 * `i`: a signed integer, for `%d %i %ld %li %lld %lli` (and `%u …` when not negative, `%b`).
 */
#define QM_ARG_INT 2

/**
 * `u`: an unsigned integer, for `%u %lu %llu` (and `%d …` when it fits, `%b`).
 */
#define QM_ARG_UINT 3

/**
 * `d`: a double, for `%f %g %e`.
 */
#define QM_ARG_DOUBLE 4

/**
 * `i` (0 or 1): a bool, for `%b`.
 */
#define QM_ARG_BOOL 5

/**
 * As soon as the guest runs (`cont` answered). For `qm_template_prepare`: at once after launch.
 */
#define QM_READY_RUNNING 0

/**
 * When the guest agent answers `guest-sync` (the machine needs a guest agent channel).
 */
#define QM_READY_AGENT 1

/**
 * When the literal text `console_text` shows on the console, after sending `console_send`
 * (may be NULL; e.g. `"\n"` brings back the prompt of a guest saved at a shell prompt).
 */
#define QM_READY_CONSOLE 2

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The version of the qm library, e.g. `"0.2.0"`: a static string, never freed. Thread-safe.
 */
const char *qm_version(void);

/**
 * Frees a string returned by qm (every `char *` a `*_out` parameter receives). NULL is a
 * no-op. Only for strings qm returned, once each, and never with `free()`: qm's allocator is
 * its own. Strings borrowed from a `qm_error` are freed with the error, not here.
 */
void qm_string_free(char *s);

/**
 * Sets how much qm logs (to stderr or the `qm_set_log_callback` callback), for the whole process (it overrides `QM_LOG`).
 * Thread-safe. `QM_ERR_INVALID` for a value that is not a `QM_LOG_*` constant (the level is
 * then unchanged).
 */
qm_status qm_set_log_level(qm_log_level level,
                           qm_error **err_out);

/**
 * Tells whether an event matches a filter, by the rule of QEMU's `QEMUMachine.event_match`:
 * the filter is a sub-dict: every key of the filter must be in the event, recursively, with
 * an equal value wherever the filter's value is not `null` (`null` matches anything). For
 * example the filter `{"data": {"reason": "host-qmp-quit"}}` matches a `SHUTDOWN` event caused
 * by `quit`.
 *
 * `event_json` is any JSON text; `match_json` is any JSON text, or NULL (matches everything).
 * On success stores the answer in `*matches_out`. `QM_ERR_INVALID` when a text is not valid
 * UTF-8 JSON or `event_json`/`matches_out` is NULL. Pure function: thread-safe, never blocks.
 */
qm_status qm_event_match(const char *event_json,
                         const char *match_json,
                         bool *matches_out,
                         qm_error **err_out);

/**
 * The error's status (never `QM_OK` for an error a call returned). `QM_OK` for NULL.
 *
 * `err` is borrowed.
 */
qm_status qm_error_status(const qm_error *err);

/**
 * The error's message: one line or more of UTF-8 for humans (for a launch failure it includes
 * the exit code, the command line and QEMU's output). NULL for NULL.
 *
 * The string belongs to `err` and stays valid until `qm_error_free(err)`; do not free it.
 */
const char *qm_error_message(const qm_error *err);

/**
 * The QMP error class (e.g. `"GenericError"`, `"CommandNotFound"`) of a `QM_ERR_QMP` error;
 * NULL for any other error and for NULL.
 *
 * The string belongs to `err` and stays valid until `qm_error_free(err)`.
 */
const char *qm_error_qmp_class(const qm_error *err);

/**
 * QEMU's description of a `QM_ERR_QMP` error; NULL for any other error and for NULL.
 *
 * The string belongs to `err` and stays valid until `qm_error_free(err)`.
 */
const char *qm_error_qmp_desc(const qm_error *err);

/**
 * For a `QM_ERR_LAUNCH` error where QEMU exited by itself: stores QEMU's exit status in
 * `*code_out` (negative: killed by that signal) and returns true. Returns false, and leaves
 * `*code_out` untouched, for other errors, for a launch where QEMU never ran or was still
 * running (and was killed), and when `err` or `code_out` is NULL.
 */
bool qm_error_exit_code(const qm_error *err, int *code_out);

/**
 * The command line of a `QM_ERR_LAUNCH` error (the arguments joined by spaces, for humans;
 * never run by a shell); NULL for other errors and for NULL.
 *
 * The string belongs to `err` and stays valid until `qm_error_free(err)`.
 */
const char *qm_error_command(const qm_error *err);

/**
 * What QEMU wrote to stdout and stderr before a `QM_ERR_LAUNCH` error (possibly empty); NULL
 * for other errors and for NULL.
 *
 * The string belongs to `err` and stays valid until `qm_error_free(err)`.
 */
const char *qm_error_output(const qm_error *err);

/**
 * The status of what caused an error that has a cause: for `QM_ERR_LAUNCH` what made the
 * launch fail (e.g. `QM_ERR_IO` when the binary could not be started, `QM_ERR_DISCONNECTED`
 * when QEMU exited before QMP was up, `QM_ERR_TIMEOUT` when the time ran out), for
 * `QM_ERR_ABNORMAL_SHUTDOWN` why QEMU had to be killed (`QM_ERR_TIMEOUT`,
 * `QM_ERR_INTERRUPTED`, ...). `QM_OK` for other errors and for NULL.
 */
qm_status qm_error_cause(const qm_error *err);

/**
 * The message of the cause (see `qm_error_cause`), e.g. `"timed out: QEMU (pid 42) did not
 * exit within 3000 ms"`; NULL when the error has no cause and for NULL.
 *
 * The string belongs to `err` and stays valid until `qm_error_free(err)`.
 */
const char *qm_error_cause_message(const qm_error *err);

/**
 * For an error caused by a failed operating-system call (`QM_ERR_IO`, or an error whose
 * cause is one, see `qm_error_cause`), stores the `errno` value in `*code_out` and returns true (e.g. `ENOENT`
 * for a QEMU binary that does not exist). Returns false, leaving `*code_out` untouched,
 * otherwise and when `err` or `code_out` is NULL.
 */
bool qm_error_os_code(const qm_error *err,
                      int *code_out);

/**
 * The console output a console error carries: for `QM_ERR_CONSOLE_FAILURE` the text consumed
 * up to and including the failure pattern's match, for `QM_ERR_CONSOLE_CLOSED` the output nobody
 * consumed, for a console wait's `QM_ERR_TIMEOUT` the last (up to 2 KiB) unread output. NULL for
 * other errors and for NULL. Invalid UTF-8 and NUL bytes are replaced by U+FFFD.
 *
 * The string belongs to `err` and stays valid until `qm_error_free(err)`.
 */
const char *qm_error_console_text(const qm_error *err);

/**
 * For a `QM_ERR_CONSOLE_FAILURE` error: stores the index of the failure pattern that matched
 * (in the order they were added to the `qm_patterns`) in `*index_out` and returns true. Returns
 * false, leaving `*index_out` untouched, for other errors and when `err` or `index_out` is NULL.
 */
bool qm_error_console_pattern(const qm_error *err, size_t *index_out);

/**
 * Where a `QM_ERR_REFUSED` error's first problem is, as a JSON path: `"execute"` (the
 * command's name), `"arguments.file.filename"`, `"arguments.children[1]"`, `"event"` (an
 * event wait). NULL for other errors and for NULL.
 *
 * The string belongs to `err` and stays valid until `qm_error_free(err)`.
 */
const char *qm_error_schema_path(const qm_error *err);

/**
 * The rule a `QM_ERR_REFUSED` error's first problem breaks: `"unknown-command"`,
 * `"unknown-event"`, `"unknown-member"`, `"missing-member"`, `"wrong-type"`, `"enum-value"`,
 * `"deprecated"` or `"unstable"`. NULL for other errors and for NULL.
 *
 * The string belongs to `err` and stays valid until `qm_error_free(err)`.
 */
const char *qm_error_schema_rule(const qm_error *err);

/**
 * Frees an error and the strings it lent out. NULL is a no-op. Call it once per error.
 */
void qm_error_free(qm_error *err);

/**
 * The name of a `qm_status` value, e.g. `"QM_ERR_TIMEOUT"` for `QM_ERR_TIMEOUT`, and
 * `"QM_ERR_UNKNOWN"` for a value that is not a `qm_status` (`status` is an `int` so that any
 * value is safe to pass). A static string: never freed, never NULL. Pure function,
 * thread-safe. The error's own message is `qm_error_message`.
 */
const char *qm_status_str(int status);

/**
 * The default bound, in milliseconds, of the calls that have one (30000): what
 * `QM_WAIT_DEFAULT` means for `qm_shutdown`, `qm_wait` and the `qm_agent_*` calls, and the QMP
 * timer's initial value (`qm_set_qmp_timer`). Pure function, thread-safe.
 */
int64_t qm_default_timeout_ms(void);

/**
 * Converts a timeout in seconds (a binding's float) to the `timeout_ms` of the C API, by the
 * one rule every binding uses: rounded *up* to a whole millisecond, so a positive timeout
 * never becomes 0 ("do not block": 0.0004 s is 1 ms, 0 stays 0); `+inf` is
 * `QM_WAIT_FOREVER`; at most 2^62. Stores the result in `*ms_out`. `QM_ERR_INVALID` for NaN
 * and negative values (the message names the value). Pure function, thread-safe.
 */
qm_status qm_timeout_ms_from_seconds(double seconds, int64_t *ms_out, qm_error **err_out);

/**
 * The keyword convention of QEMU's Python harness: `_` in the top-level keys of `args_json`
 * (borrowed, any JSON text) becomes `-` (`{"node_name": ...}` → `{"node-name": ...}`); nested
 * keys and values that are not objects are left as they are. Stores the result as JSON in
 * `*json_out` (owned: free with `qm_string_free`). `QM_ERR_INVALID` for text that is not
 * UTF-8 JSON. Pure function, thread-safe.
 */
qm_status qm_conv_keys(const char *args_json, char **json_out, qm_error **err_out);

/**
 * A new token that has not fired; NULL only if memory runs out. Free it with `qm_cancel_free`.
 */
qm_cancel *qm_cancel_new(void);

/**
 * Fires the token: every call waiting with it returns `QM_ERR_INTERRUPTED`, now and later.
 * Thread-safe and non-blocking (safe from any thread, also while other threads wait on the
 * token); firing twice is harmless. NULL is a no-op.
 */
void qm_cancel_fire(const qm_cancel *cancel);

/**
 * True once the token has fired. False for NULL.
 */
bool qm_cancel_is_fired(const qm_cancel *cancel);

/**
 * Frees a token. NULL is a no-op. No call that was passed the token may still be running
 * (fire it and wait for those calls to return first).
 */
void qm_cancel_free(qm_cancel *cancel);

/**
 * Creates a machine that will run `binary` (e.g. `"qemu-system-x86_64"`, looked up in `PATH`;
 * borrowed, non-empty UTF-8). Nothing starts until `qm_launch`. On success `*machine_out`
 * receives a handle the caller owns and frees with `qm_free`.
 *
 * Defaults: a QMP monitor on a socketpair, a 30 s QMP timer, no console, temporary files under
 * `/var/tmp`, `-display none -vga none`.
 */
qm_status qm_new(const char *binary, qm_machine **machine_out, qm_error **err_out);

/**
 * Frees a machine. A launched machine is shut down first, gracefully (`quit`, up to 30 s, then
 * SIGKILL), so this may block. NULL is a no-op.
 *
 * Must be the last call on the handle: no other thread may be using it or start to (fire the
 * `qm_cancel` of blocked calls and wait for them to return first). Borrowed descriptors (the
 * console) and strings borrowed from the handle are invalid afterwards; owned strings and
 * `qm_error` objects stay valid.
 *
 * A handle that is not live (freed already, or never returned by qm) is left alone with a
 * warning in the log, so freeing twice is reported instead of undefined; a freed handle whose
 * address a later `qm_new` reused cannot be told apart from that new machine.
 */
void qm_free(qm_machine *m);

/**
 * Appends `n` arguments for QEMU after the ones qm builds. `args` points to `n` borrowed UTF-8
 * strings (it may be NULL when `n` is 0). Applies to the next launch.
 */
qm_status qm_add_args(qm_machine *m, const char *const *args, size_t n, qm_error **err_out);

/**
 * Sets the argv prefix QEMU runs under, e.g. `{"strace", "-f"}` (never a shell), replacing
 * the previous one; `n` = 0 removes it. `argv` points to `n` borrowed UTF-8 strings (NULL is
 * allowed when `n` is 0).
 */
qm_status qm_set_wrapper(qm_machine *m, const char *const *argv, size_t n, qm_error **err_out);

/**
 * Names the machine: the prefix of its log file (`<name>.log`) and socket files. Default
 * `qm-<pid>-<n>`. `QM_ERR_INVALID` only for a name that could leave the directory: empty,
 * `.` or `..` as the whole name, with `/` (or bad UTF-8).
 */
qm_status qm_set_name(qm_machine *m, const char *name, qm_error **err_out);

/**
 * Sets the directory under which the machine's temporary directory is created (default
 * `/var/tmp`). Takes effect when the temporary directory is first created.
 */
qm_status qm_set_base_temp_dir(qm_machine *m, const char *dir, qm_error **err_out);

/**
 * Sets the directory for socket files qm names itself (default: the temporary directory).
 */
qm_status qm_set_sock_dir(qm_machine *m, const char *dir, qm_error **err_out);

/**
 * Sets the directory of `<name>.log`, QEMU's stdout and stderr, kept after shutdown (default:
 * none, the output is kept in an anonymous in-memory file). Either way `qm_get_log` returns
 * it after a shutdown or a failed launch.
 */
qm_status qm_set_log_dir(qm_machine *m, const char *dir, qm_error **err_out);

/**
 * Puts the QMP monitor on a socketpair (the default; no file is created).
 */
qm_status qm_set_monitor_socketpair(qm_machine *m, qm_error **err_out);

/**
 * Puts the QMP monitor on a unix socket at `path` (borrowed; NULL: `<sock_dir>/<name>-monitor.sock`).
 * qm listens (mode 0600) and QEMU connects; the file is removed at shutdown. The path must be
 * shorter than 108 bytes (checked at launch).
 */
qm_status qm_set_monitor_unix(qm_machine *m,
                              const char *path,
                              qm_error **err_out);

/**
 * Puts the QMP monitor on TCP: qm listens on `host` (borrowed, e.g. `"127.0.0.1"`) and `port`
 * (0: any free port) and QEMU connects.
 */
qm_status qm_set_monitor_tcp(qm_machine *m, const char *host, uint16_t port, qm_error **err_out);

/**
 * Kept for the seed's API; it changes nothing now: a reader thread owned by qm always reads
 * the console, so QEMU never blocks on a console nobody reads, and keeps the bytes for the
 * console waits (`qm_console_wait`), the transcript and readers of `qm_console_fd`.
 */
qm_status qm_set_drain_console(qm_machine *m, bool drain, qm_error **err_out);

/**
 * Writes every console byte to the file at `path` (borrowed; created mode 0600 if missing,
 * truncated at each launch); NULL turns the console log off.
 */
qm_status qm_set_console_log(qm_machine *m, const char *path, qm_error **err_out);

/**
 * Writes every QMP message to and from QEMU to the file at `path` (borrowed), one JSON line
 * each: `{"t": <seconds since the Unix epoch, a float>, "dir": "out"|"in"|"event", "msg":
 * <the message>}` (`out`: sent by qm; `in`: the greeting and replies; `event`: QEMU's
 * events). The console and the guest agent, when the machine has them, go to the same file
 * (lines with `"chan": "console"` or `"agent"`; see the README's "Record, then replay"),
 * which the fake QEMU replays. NULL turns it off (the default). The file is opened at each
 * launch (created mode 0600, appended to; a launch fails with `QM_ERR_LAUNCH` if it cannot be
 * opened).
 */
qm_status qm_set_qmp_transcript(qm_machine *m, const char *path, qm_error **err_out);

/**
 * Sets the QMP timer, in milliseconds, or `QM_WAIT_FOREVER`: it bounds the QMP handshake at
 * launch and is what `QM_WAIT_DEFAULT` means for `qm_qmp` and `qm_cmd`. Default 30000.
 */
qm_status qm_set_qmp_timer(qm_machine *m, int64_t timeout_ms, qm_error **err_out);

/**
 * Stores the QMP timer (`qm_set_qmp_timer`) in `*timeout_ms_out`, in milliseconds (rounded
 * up), or `QM_WAIT_FOREVER` when it has no limit.
 */
qm_status qm_get_qmp_timer(const qm_machine *m, int64_t *timeout_ms_out, qm_error **err_out);

/**
 * Turns the QMP monitor on (the default) or off. Without it, QMP calls fail with
 * `QM_ERR_STATE` and a graceful shutdown sends SIGTERM.
 */
qm_status qm_set_qmp_monitor(qm_machine *m, bool enabled, qm_error **err_out);

/**
 * Adds `-machine TYPE` (`machine_type` borrowed, e.g. `"none"`, `"pc"`, `"q35"`).
 */
qm_status qm_set_machine(qm_machine *m, const char *machine_type, qm_error **err_out);

/**
 * Adds a console on a socketpair (see `qm_console_fd`): `-serial chardev:console`, or with a
 * `device_type` (borrowed, e.g. `"isa-serial"`; NULL for the default serial port)
 * `-device TYPE,chardev=console`. An `index` above 0 first adds that many `-serial null`.
 */
qm_status qm_set_console(qm_machine *m,
                         const char *device_type,
                         uint32_t index,
                         qm_error **err_out);

/**
 * Adds an unused `-monitor null`.
 */
qm_status qm_add_monitor_null(qm_machine *m, qm_error **err_out);

/**
 * Passes the open descriptor `fd` to QEMU as `-add-fd fd=FD,set=FDSET,opaque=OPAQUE[,OPTS]`
 * (`opaque` borrowed; `opts` borrowed or NULL for none). QEMU inherits it under the same
 * number. The caller keeps ownership and must keep it open until `qm_launch` returns.
 * `QM_ERR_INVALID` when `fd` is not an open descriptor.
 */
qm_status qm_add_fd(qm_machine *m,
                    int fd,
                    uint32_t fdset,
                    const char *opaque,
                    const char *opts,
                    qm_error **err_out);

/**
 * Lets QEMU inherit every descriptor of this process that is not close-on-exec (as
 * `subprocess.Popen(close_fds=False)` does), besides those qm passes. Off by default: QEMU
 * gets qm's own descriptors for it, those of `qm_add_fd` and the `extra_fds` of
 * `qm_launch_argv`, nothing else. Takes effect at the next prepare or launch.
 */
qm_status qm_set_inherit_fds(qm_machine *m, bool inherit, qm_error **err_out);

/**
 * Caps the size of one message from QEMU, in bytes (default 64 MiB; values under 1024 count
 * as 1024). A larger message fails the connection with `QM_ERR_PROTOCOL`.
 */
qm_status qm_set_max_message_size(qm_machine *m, size_t bytes, qm_error **err_out);

/**
 * Starts QEMU and, unless QMP is off, connects and negotiates QMP.
 *
 * Blocks until QMP is up, at most `timeout_ms` milliseconds (`QM_WAIT_DEFAULT`: the QMP timer,
 * `qm_set_qmp_timer`; `QM_WAIT_FOREVER`), or until `cancel` (may be NULL) fires; returns at
 * once when QEMU exits early. A token that had fired fails with `QM_ERR_INTERRUPTED`, launching
 * nothing. `QM_ERR_STATE` when already launched. Any other failure is `QM_ERR_LAUNCH`, whose
 * error object has QEMU's exit code (`qm_error_exit_code`), the command line and QEMU's output,
 * and the cause (`qm_error_cause`); by then no process is left and everything the launch
 * created is removed, and the machine can be launched again.
 */
qm_status qm_launch(qm_machine *m, int64_t timeout_ms, const qm_cancel *cancel, qm_error **err_out);

/**
 * Launches the `n` machines of `machines` at once from the calling thread, so launching many
 * machines needs no thread per machine: every QEMU is started first, then each is connected
 * and negotiated as `qm_launch` does, in the order they become ready, all within one
 * `timeout_ms` (`QM_WAIT_DEFAULT`: the largest QMP timer of the machines, or no limit when one
 * of them has none; `QM_WAIT_FOREVER`) and until `cancel` (may be NULL) fires.
 *
 * `machines` holds `n` borrowed handles (NULL only when `n` is 0). `errs_out` (may be NULL:
 * then only the status reports failures) points to an array of `n` `qm_error *`: each
 * `errs_out[i]` is set to NULL when machine i launched, or to an error the caller owns and
 * frees with `qm_error_free`, the one `qm_launch` would give that machine:
 * `QM_ERR_STATE` when already launched, `QM_ERR_LAUNCH` (cleaned up as for `qm_launch`),
 * `QM_ERR_INTERRUPTED` when the token fired before the machine started, `QM_ERR_INVALID`
 * for an entry that is not a live handle or is the same handle as an earlier entry (launched
 * once, for its first place). One machine's failure leaves the others alone. A `timeout_ms`
 * or `cancel` that is invalid fails every machine with `QM_ERR_INVALID`, launching nothing.
 *
 * Returns `QM_OK` when every machine launched, otherwise the status of the first failed one
 * (in array order). Each machine's launch blocks shutdowns of it until the whole call returns.
 */
qm_status qm_launch_all(qm_machine *const *machines,
                        size_t n,
                        int64_t timeout_ms,
                        const qm_cancel *cancel,
                        qm_error **errs_out);

/**
 * Prepares the next launch without starting QEMU: creates what `qm_launch` creates before
 * starting it (the monitor socketpair or listener, the console socketpair, QEMU's log) and
 * stores in `*base_args_out` (owned: free with `qm_string_free`) the arguments qm puts between
 * the binary and the extra arguments, as a JSON array of strings, e.g.
 * `["-display","none","-vga","none","-chardev","socket,id=mon,fd=5",
 * "-mon","chardev=mon,mode=control"]`. The `fd=N` numbers are the descriptors QEMU will
 * inherit, under those numbers. Never blocks on QEMU.
 *
 * The run uses the configuration as of this call. Calling it again while prepared returns the
 * same array. `qm_launch_argv` or `qm_launch` start QEMU with what was prepared;
 * `qm_launch_abort`, `qm_shutdown`, `qm_kill`, `qm_wait` and `qm_free` release it. A new
 * prepare forgets the last run's exit code, pid, command line and log. `QM_ERR_STATE` when
 * launched; any other failure is `QM_ERR_LAUNCH` as for `qm_launch`, with nothing left over.
 */
qm_status qm_launch_prepare(qm_machine *m, char **base_args_out, qm_error **err_out);

/**
 * Starts `argv` (`n` borrowed UTF-8 strings, `n` > 0; `argv[0]` looked up in `PATH`; never a
 * shell) exactly as given instead of the command line `qm_launch` builds, then connects and
 * negotiates QMP as `qm_launch` does: same `timeout_ms` and `cancel` (may be NULL), same
 * errors, same cleanup on `QM_ERR_LAUNCH`. Prepares first when `qm_launch_prepare` was not
 * called. `qm_get_command_line` then returns `argv`.
 *
 * QEMU inherits the prepared descriptors, those of `qm_add_fd`, and `extra_fds` (`n_fds`
 * borrowed open descriptors, each 3 or above, kept open by the caller until the call returns;
 * NULL when `n_fds` is 0) under their numbers; nothing else. `QM_ERR_INVALID` (a prepared
 * launch stays prepared) for an empty or non-UTF-8 `argv`, or a bad descriptor;
 * `QM_ERR_STATE` when launched.
 */
qm_status qm_launch_argv(qm_machine *m,
                         const char *const *argv,
                         size_t n,
                         const int *extra_fds,
                         size_t n_fds,
                         int64_t timeout_ms,
                         const qm_cancel *cancel,
                         qm_error **err_out);

/**
 * Releases what `qm_launch_prepare` created (descriptors, socket files, the log, the temporary
 * directory) when the caller gives up before `qm_launch_argv`. Does nothing when not
 * prepared; `QM_ERR_STATE` when launched. Never blocks.
 */
qm_status qm_launch_abort(qm_machine *m, qm_error **err_out);

/**
 * Runs the QMP command `cmd` (borrowed) with the arguments `args_json` (borrowed: a JSON
 * object, or NULL / `"null"` for none; sent as it is) and stores QEMU's raw response, a JSON
 * object `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`, in `*response_out`
 * (owned: free with `qm_string_free`). A QMP error response is a success here.
 *
 * Blocks until the reply, at most `timeout_ms` milliseconds (`QM_WAIT_DEFAULT`: the QMP timer;
 * `QM_WAIT_FOREVER`), or until `cancel` (may be NULL) fires. Any number of threads may run
 * commands on one machine at once. Errors: `QM_ERR_STATE` (not launched, or QMP off),
 * `QM_ERR_TIMEOUT`, `QM_ERR_INTERRUPTED`, `QM_ERR_DISCONNECTED`, `QM_ERR_INVALID`,
 * `QM_ERR_PROTOCOL`. A reply that arrives after a timeout is dropped; the connection stays
 * usable. `timeout_ms` 0 is `QM_ERR_INVALID` and nothing is sent: 0 means "never block", and
 * a command always waits for its reply.
 *
 * Another thread's command stuck in a full socket (QEMU not reading) never delays this one:
 * its timeout and `cancel` hold. A command that times out (or is cancelled) before any of it
 * was sent is withdrawn and never reaches QEMU (the message says "nothing was sent"); one
 * that was partly or wholly sent may still run, and its reply is dropped.
 */
qm_status qm_qmp(qm_machine *m,
                 const char *cmd,
                 const char *args_json,
                 int64_t timeout_ms,
                 const qm_cancel *cancel,
                 char **response_out,
                 qm_error **err_out);

/**
 * Like `qm_qmp`, but stores only the value of `return` as JSON in `*return_out` (owned: free
 * with `qm_string_free`; e.g. `{}` or `{"status": "running", ...}`), and turns an error response
 * into `QM_ERR_QMP` with its class and description on the error object
 * (`qm_error_qmp_class`, `qm_error_qmp_desc`).
 */
qm_status qm_cmd(qm_machine *m,
                 const char *cmd,
                 const char *args_json,
                 int64_t timeout_ms,
                 const qm_cancel *cancel,
                 char **return_out,
                 qm_error **err_out);

/**
 * Sends the open descriptor `fd` (borrowed; the caller keeps it) to QEMU over the QMP socket
 * with SCM_RIGHTS, for a following `getfd` or `add-fd` command, which take the descriptor that
 * arrived last. The monitor must be a unix socket or socketpair (the default).
 * `QM_ERR_INVALID` when `fd` is not open; `QM_ERR_STATE` when not launched. Sent in order
 * with the commands of every thread, waiting at most the QMP timer for room in the socket
 * (`QM_ERR_TIMEOUT`: it was not sent).
 *
 * Two threads that each send a descriptor and then run `getfd`/`add-fd` must not interleave:
 * serialise such pairs.
 */
qm_status qm_send_fd_scm(qm_machine *m, int fd, qm_error **err_out);

/**
 * Opens the file at `path` (borrowed) read-only and sends it with `qm_send_fd_scm`; qm closes
 * its descriptor afterwards. `QM_ERR_IO` when the file cannot be opened.
 */
qm_status qm_send_file_scm(qm_machine *m, const char *path, qm_error **err_out);

/**
 * Takes the oldest queued QMP event and stores it as a JSON object (`{"event": "STOP",
 * "data": ..., "timestamp": ...}`) in `*event_out` (owned: free with `qm_string_free`).
 *
 * `timeout_ms` 0 only looks: when no event is queued, `*event_out` is set to NULL and the call
 * succeeds (also after the connection closed). Otherwise it blocks until an event arrives, at
 * most `timeout_ms` (or `QM_WAIT_FOREVER`), failing with `QM_ERR_TIMEOUT`, or until `cancel`
 * (may be NULL) fires. Events received before a shutdown stay readable after it; before the
 * first launch this is `QM_ERR_STATE`.
 */
qm_status qm_event_get(qm_machine *m,
                       int64_t timeout_ms,
                       const qm_cancel *cancel,
                       char **event_out,
                       qm_error **err_out);

/**
 * Takes every queued event and stores them, oldest first, as a JSON array in
 * `*events_json_array_out` (owned: free with `qm_string_free`). With `timeout_ms` 0 the array
 * may be empty (`[]`); otherwise it waits for at least one event as `qm_event_get` does.
 */
qm_status qm_events_get(qm_machine *m,
                        int64_t timeout_ms,
                        const qm_cancel *cancel,
                        char **events_json_array_out,
                        qm_error **err_out);

/**
 * Caps the number of queued, unread QMP events at `max_events` (>= 0), or
 * `QM_EVENTS_UNLIMITED` (the default: events are never dropped, as in QEMU's Python
 * `QEMUMachine`). Applies at once and to later launches; other negative values are
 * `QM_ERR_INVALID`.
 *
 * When an event arrives and `max_events` are queued, the oldest is dropped to make room (a
 * caller waiting for an event waits for one yet to come). The next call that reads events
 * (`qm_event_get`, `qm_events_get`, `qm_event_wait`, `qm_events_wait`), or one already
 * waiting, fails once with `QM_ERR_EVENTS_DROPPED`; the calls after it read the events that
 * were kept. `qm_dropped_events` counts the drops.
 */
qm_status qm_set_max_queued_events(qm_machine *m, int64_t max_events, qm_error **err_out);

/**
 * How many QMP events the cap of `qm_set_max_queued_events` dropped since the last launch;
 * 0 for a NULL `m`. Never blocks.
 */
uint64_t qm_dropped_events(const qm_machine *m);

/**
 * Drops every queued event. Never blocks; does nothing before the first launch.
 */
qm_status qm_events_clear(qm_machine *m, qm_error **err_out);

/**
 * Waits for the first event called `name` (borrowed) that matches `match_json` (borrowed: a
 * JSON object, or NULL / `"null"` for any; see `qm_event_match`), takes it out of the queue and
 * stores it as a JSON object in `*event_out` (owned: free with `qm_string_free`). Queued
 * events are searched first; events that do not match stay queued, in order.
 *
 * Blocking as for `qm_event_get`: with `timeout_ms` 0, `*event_out` is set to NULL when no
 * queued event matches; a longer wait fails with `QM_ERR_TIMEOUT`. `cancel` (may be NULL)
 * interrupts it from another thread with `QM_ERR_INTERRUPTED`.
 */
qm_status qm_event_wait(qm_machine *m,
                        const char *name,
                        const char *match_json,
                        int64_t timeout_ms,
                        const qm_cancel *cancel,
                        char **event_out,
                        qm_error **err_out);

/**
 * Like `qm_event_wait`, for the first event that matches any of several filters:
 * `filters_json` (borrowed) is a non-empty JSON array of objects
 * `{"name": "EVENT", "match": {...}}` (`"match"` optional, as `match_json`).
 */
qm_status qm_events_wait(qm_machine *m,
                         const char *filters_json,
                         int64_t timeout_ms,
                         const qm_cancel *cancel,
                         char **event_out,
                         qm_error **err_out);

/**
 * Shuts QEMU down. Gracefully (`hard` false): `quit` over QMP (SIGTERM without QMP), then
 * waits for QEMU to exit, at most `timeout_ms` (`QM_WAIT_DEFAULT`: 30 s; `QM_WAIT_FOREVER`);
 * if it does not exit in time, or `cancel` (may be NULL) fires meanwhile or had fired before
 * the call, QEMU is killed and
 * the call fails with `QM_ERR_ABNORMAL_SHUTDOWN`. Hard (`hard` true): SIGKILL at once
 * (`timeout_ms` is then ignored, but must be valid).
 *
 * Cleanup always runs (console closed, temp dir and socket files removed, log read back). A
 * machine that is not launched (never, or already shut down) is left alone and the call
 * succeeds, so a second shutdown is harmless. Calls blocked on the machine in other threads
 * fail with `QM_ERR_DISCONNECTED`.
 */
qm_status qm_shutdown(qm_machine *m,
                      bool hard,
                      int64_t timeout_ms,
                      const qm_cancel *cancel,
                      qm_error **err_out);

/**
 * Kills QEMU with SIGKILL, reaps it and cleans up; the same as `qm_shutdown(m, true, ...)`.
 * Blocks until QEMU is gone (normally milliseconds). Succeeds when not launched.
 */
qm_status qm_kill(qm_machine *m, qm_error **err_out);

/**
 * Waits for QEMU to exit by itself (e.g. the guest powered off), at most `timeout_ms`
 * (`QM_WAIT_DEFAULT`: 30 s; `QM_WAIT_FOREVER`), then cleans up. When it does not exit in time
 * or `cancel` (may be NULL) fires (or had fired), QEMU is killed and the call fails with
 * `QM_ERR_ABNORMAL_SHUTDOWN`. Succeeds at once when not launched.
 */
qm_status qm_wait(qm_machine *m, int64_t timeout_ms, const qm_cancel *cancel, qm_error **err_out);

/**
 * True while QEMU runs (false for NULL). Never blocks.
 */
bool qm_is_running(const qm_machine *m);

/**
 * QEMU's process id while it runs; -1 when it does not (or for NULL). Never blocks. Under a
 * wrapper: QEMU's own pid when qm found exactly one process of the launch's process group
 * running the QEMU binary once QMP was up; otherwise the wrapper's.
 */
int64_t qm_pid(const qm_machine *m);

/**
 * The process id of the last run's QEMU, while it runs and after it exited (unlike `qm_pid`),
 * until the next launch is prepared; -1 before any process was started, when the last launch
 * failed before starting one, and for NULL. Never blocks.
 */
int64_t qm_last_pid(const qm_machine *m);

/**
 * Once QEMU has exited (after a shutdown, a wait, or a failed launch where it ran): stores its
 * exit status in `*code_out` (when not NULL; negative: killed by that signal) and returns
 * true. Returns false while it runs, before a launch, and for a NULL `m`. Never blocks.
 */
bool qm_exit_code(const qm_machine *m, int *code_out);

/**
 * What QEMU wrote to stdout and stderr during the last run, read back after a shutdown or a
 * failed launch, in `*log_out` (owned: free with `qm_string_free`). While QEMU runs, and
 * before any run, there is no log yet: `*log_out` is set to NULL and the call succeeds
 * (`qm_get_log_so_far` reads the output while QEMU runs).
 */
qm_status qm_get_log(const qm_machine *m, char **log_out, qm_error **err_out);

/**
 * What QEMU has written to stdout and stderr so far, in `*log_out` (owned: free with
 * `qm_string_free`): while QEMU runs, its output up to now (read afresh on each call); after a
 * shutdown or a failed launch, the same as `qm_get_log`; NULL before any launch.
 */
qm_status qm_get_log_so_far(const qm_machine *m, char **log_out, qm_error **err_out);

/**
 * The machine's temporary directory (mode 0700) in `*dir_out` (owned). It is created on first
 * use (so this may fail with `QM_ERR_IO`) and removed at shutdown.
 */
qm_status qm_get_temp_dir(const qm_machine *m, char **dir_out, qm_error **err_out);

/**
 * The directory of the log file in `*dir_out` (owned): the one set with `qm_set_log_dir`, or
 * NULL when none was set (QEMU's output is then kept in memory; `qm_get_log` has it).
 */
qm_status qm_get_log_dir(const qm_machine *m, char **dir_out, qm_error **err_out);

/**
 * The directory of socket files in `*dir_out` (owned): the one set with `qm_set_sock_dir`, or
 * the temporary directory (created on first use).
 */
qm_status qm_get_sock_dir(const qm_machine *m, char **dir_out, qm_error **err_out);

/**
 * The machine's name in `*name_out` (owned).
 */
qm_status qm_get_name(const qm_machine *m, char **name_out, qm_error **err_out);

/**
 * The QEMU binary given to `qm_new` in `*binary_out` (owned).
 */
qm_status qm_get_binary(const qm_machine *m, char **binary_out, qm_error **err_out);

/**
 * The extra arguments added with `qm_add_args` (and `qm_add_fd`, `qm_add_monitor_null`), as a
 * JSON array of strings in `*json_array_out` (owned).
 */
qm_status qm_get_args(const qm_machine *m, char **json_array_out, qm_error **err_out);

/**
 * The whole command line of the last launch (wrapper, binary, qm's arguments, extra ones) as a
 * JSON array of strings in `*json_array_out` (owned); `[]` before the first launch.
 */
qm_status qm_get_command_line(const qm_machine *m, char **json_array_out, qm_error **err_out);

/**
 * Attaches the machine to a QEMU someone else started, instead of launching one: connects to
 * its QMP monitor at `qmp_address` (borrowed UTF-8: `"unix:PATH"`, `"tcp:HOST:PORT"` or a bare
 * path; QEMU listening with e.g. `-qmp unix:PATH,server=on,wait=off`) and negotiates QMP,
 * and, when `agent_path` (borrowed; may be NULL) is given, connects to its guest agent's
 * chardev, a unix socket (`-chardev socket,path=PATH,server=on,wait=off` behind a
 * `virtserialport` named `org.qemu.guest_agent.0`).
 *
 * Blocks at most `timeout_ms` (`QM_WAIT_DEFAULT`: the QMP timer; `QM_WAIT_FOREVER`) or until
 * `cancel` (may be NULL) fires. Then every QMP, event and `qm_agent_*` call works as on a
 * launched machine; there is no pid, exit code, console or QEMU log, and the QMP transcript
 * (`qm_set_qmp_transcript`) and event cap apply.
 *
 * qm never kills or reaps a QEMU it did not start: `qm_shutdown` (hard or not), `qm_kill`,
 * `qm_wait` and `qm_free` *detach*, closing qm's connections and leaving QEMU running. To stop
 * it, send `quit` yourself; a `qm_shutdown` or `qm_wait` after it waits (bounded by its
 * timeout) for QEMU to close the monitor, and fails with `QM_ERR_TIMEOUT` if it does not
 * (detached all the same). `qm_is_running` is true while the QMP connection is up.
 *
 * QEMU serves one monitor client at a time: while another is connected no greeting comes and
 * the call fails with `QM_ERR_TIMEOUT`. `QM_ERR_STATE` when launched, attached or prepared;
 * `QM_ERR_IO` when nothing listens; `QM_ERR_INVALID` for a malformed address. On failure
 * nothing stays connected.
 */
qm_status qm_attach(qm_machine *m,
                    const char *qmp_address,
                    const char *agent_path,
                    int64_t timeout_ms,
                    const qm_cancel *cancel,
                    qm_error **err_out);

/**
 * True while the machine is attached by `qm_attach` (false for NULL), until it detaches.
 * Never blocks.
 */
bool qm_is_attached(const qm_machine *m);

/**
 * Writes the test guest's boot image (512 bytes, raw) to `path`, replacing any file there.
 * The guest prints `banner` and `"\r\n"` on its first serial port, then does `action`
 * (`exit_value` is used only by `QM_GUEST_EXIT`). Boot it with the arguments of
 * `qm_guest_qemu_args` plus a console (`qm_set_console`).
 *
 * `path` and `banner` are borrowed UTF-8 strings. `QM_ERR_INVALID` for NULL, bad UTF-8, a
 * banner over `QM_GUEST_MAX_BANNER` bytes or an unknown action; `QM_ERR_IO` when the file
 * cannot be written. Thread-safe; does file I/O only.
 */
qm_status qm_guest_write_image(const char *path,
                               const char *banner,
                               qm_guest_action action,
                               uint8_t exit_value,
                               qm_error **err_out);

/**
 * The QEMU arguments (after the binary) that boot an image written by
 * `qm_guest_write_image`, as a JSON array of strings in `*json_array_out` (owned: free with
 * `qm_string_free`). They select `-machine pc` with TCG; add them with `qm_add_args` and add
 * a console with `qm_set_console(m, NULL, 0, ...)`.
 *
 * `QM_ERR_INVALID` for NULL or bad UTF-8. Thread-safe, never blocks.
 */
qm_status qm_guest_qemu_args(const char *image_path, char **json_array_out, qm_error **err_out);

/**
 * The exit status QEMU reports when the guest exits through isa-debug-exit with `value`
 * (`QM_GUEST_EXIT`): `((value << 1) | 1) & 0xff`. Pure function.
 */
int qm_guest_exit_status(uint8_t value);

/**
 * The QEMU arguments (after the binary) that boot the Linux test guest (`guest/linux/`), as a
 * JSON array of strings in `*json_array_out` (owned: free with `qm_string_free`): `-nodefaults
 * -machine q35 -accel tcg -m 256 -kernel K -initrd I -append "console=ttyS0 quiet loglevel=1
 * panic=-1 no_timer_check" -no-reboot`. Add them with `qm_add_args`; qm adds the console (ttyS0, its
 * default) and, with `qm_set_guest_agent`, the agent's port. The guest prints
 * `qm-guest: ready` on its console once up and its shell prompt is `qm-guest# `.
 *
 * `kernel` and `initrd` are borrowed UTF-8 paths; both NULL means "find it": the files named
 * by `QM_LINUX_KERNEL` and `QM_LINUX_INITRD`, else the newest build under
 * `QM_LINUX_GUEST_DIR` (what `guest/linux/build --out DIR` wrote). `QM_ERR_INVALID` when only
 * one is NULL, for bad UTF-8, or when the files are missing (the message says what to set).
 * Thread-safe; looks at the file system only.
 */
qm_status qm_linux_guest_qemu_args(const char *kernel,
                                   const char *initrd,
                                   char **json_array_out,
                                   qm_error **err_out);

/**
 * Adds the arguments of `qm_linux_guest_qemu_args(kernel, initrd, ...)` to `m`, as
 * `qm_add_args` would (applies to the next launch). The same errors; `QM_ERR_INVALID` for a
 * NULL `m`.
 */
qm_status qm_linux_guest_add_args(qm_machine *m,
                                  const char *kernel,
                                  const char *initrd,
                                  qm_error **err_out);

/**
 * Runs the shell command `command` (borrowed UTF-8) in the guest over `chan`, within
 * `timeout_ms` (`QM_WAIT_DEFAULT`: 30 s). On success `*result_out` receives a result the
 * caller frees with `qm_run_result_free` — also when the command failed: its status is in
 * `qm_run_result_status`.
 *
 * Over the console the command is one line (no CR or LF) that, framed, fits 1000 bytes
 * (about 870 without `'`), else `QM_ERR_INVALID`; `QM_ERR_STATE` while another console wait
 * runs; `QM_ERR_CONSOLE_CLOSED` at once when QEMU exits (the guest powered off or died) before
 * the status came; `QM_ERR_TIMEOUT` / `QM_ERR_INTERRUPTED` when the wait ends first
 * (Ctrl-C has then been sent). Over the agent, the errors of `qm_agent_exec` (a program still
 * running when the wait ends keeps running: the agent cannot kill it).
 */
qm_status qm_guest_run(qm_machine *m,
                       qm_channel chan,
                       const char *command,
                       int64_t timeout_ms,
                       const qm_cancel *cancel,
                       qm_run_result **result_out,
                       qm_error **err_out);

/**
 * Waits until the guest answers over `chan`, within `timeout_ms` (`QM_WAIT_DEFAULT`: 30 s):
 * over the console until its shell runs a no-op command (a probe that gets no answer is
 * interrupted with Ctrl-C and sent again); over the agent until `guest-sync` is answered.
 */
qm_status qm_guest_wait_ready(qm_machine *m,
                              qm_channel chan,
                              int64_t timeout_ms,
                              const qm_cancel *cancel,
                              qm_error **err_out);

/**
 * Writes `len` bytes of `data` (borrowed; NULL when `len` is 0) to the guest file `path`
 * (borrowed), creating or truncating it. Over the agent: `guest-file-write`. Over the console:
 * `printf` lines with octal escapes, a few hundred bytes each — fine for small files.
 */
qm_status qm_guest_write_file(qm_machine *m,
                              qm_channel chan,
                              const char *path,
                              const uint8_t *data,
                              size_t len,
                              int64_t timeout_ms,
                              const qm_cancel *cancel,
                              qm_error **err_out);

/**
 * Reads the whole guest file `path` (borrowed). On success `*data_out` receives the bytes
 * (owned: free with `qm_bytes_free(data, len)`; NULL for an empty file) and `*len_out` their
 * number. `QM_ERR_INVALID` when the file holds more than `max_bytes`, and over the console
 * when `cat` fails (the message has its error). Over the console the bytes come verbatim
 * through `cat` (a line shaped like a kernel record and ending in CR LF would be cut out).
 */
qm_status qm_guest_read_file(qm_machine *m,
                             qm_channel chan,
                             const char *path,
                             size_t max_bytes,
                             int64_t timeout_ms,
                             const qm_cancel *cancel,
                             uint8_t **data_out,
                             size_t *len_out,
                             qm_error **err_out);

/**
 * The command's exit status as a shell's `$?` has it: 0–255, 128 + N when signal N killed
 * it; -1 for NULL.
 */
int qm_run_result_status(const qm_run_result *r);

/**
 * What the command wrote to stdout (over the console: stdout and stderr together, exactly as
 * written): `*len_out` (may be NULL) receives the length; the bytes (not NUL-terminated; NULL
 * when empty) belong to `r` and stay valid until `qm_run_result_free`.
 */
const uint8_t *qm_run_result_stdout(const qm_run_result *r, size_t *len_out);

/**
 * What the command wrote to stderr, as `qm_run_result_stdout`; `*len_out` is 0 and the result
 * NULL over the console, which has no separate stderr (see `qm_run_result_has_stderr`).
 */
const uint8_t *qm_run_result_stderr(const qm_run_result *r, size_t *len_out);

/**
 * True when the channel kept stderr apart (the agent); false over the console, or for NULL.
 */
bool qm_run_result_has_stderr(const qm_run_result *r);

/**
 * The kernel messages the console printed during the run, cut out of stdout, as a JSON array
 * of strings in `*json_array_out` (owned: free with `qm_string_free`; `[]` over the agent).
 */
qm_status qm_run_result_kernel_messages(const qm_run_result *r,
                                        char **json_array_out,
                                        qm_error **err_out);

/**
 * Frees a result of `qm_guest_run`; NULL is a no-op. Its stdout/stderr pointers are invalid
 * afterwards.
 */
void qm_run_result_free(qm_run_result *r);

/**
 * Gives the guest a channel to its agent, or removes it (`enabled` false; the default is
 * none): a `virtserialport` named `org.qemu.guest_agent.0` on a socketpair qm owns, plus a
 * `virtio-serial` controller unless the machine's arguments (`qm_add_args`) already have a
 * `-device virtio-serial...` (the port then goes on the first virtio-serial bus). qm adds these
 * arguments after the user's. Applies to the next launch.
 */
qm_status qm_set_guest_agent(qm_machine *m, bool enabled, qm_error **err_out);

/**
 * Like `qm_set_guest_agent(m, true)`, but the channel is a unix socket at `path` (borrowed;
 * NULL: `<sock dir>/<name>-qga.sock`): qm listens on it (mode 0600), QEMU connects at startup,
 * qm accepts during `qm_launch` and removes the file at cleanup.
 */
qm_status qm_set_guest_agent_unix(qm_machine *m, const char *path, qm_error **err_out);

/**
 * Waits until the guest agent answers `guest-sync-delimited` (sent again every 500 ms while
 * it is silent; stale data in the channel is dropped). Use it right after `qm_launch` to wait
 * for the guest to boot and start `qemu-ga`; other agent calls sync by themselves when needed.
 * `QM_ERR_TIMEOUT` says whether the agent answered at all.
 */
qm_status qm_agent_sync(qm_machine *m,
                        int64_t timeout_ms,
                        const qm_cancel *cancel,
                        qm_error **err_out);

/**
 * Runs the agent command `cmd` (borrowed) with `args_json` (borrowed JSON object, or NULL /
 * `"null"` for none) and stores the agent's raw reply, `{"return": ...}` or
 * `{"error": {"class": ..., "desc": ...}}`, in `*response_out` (owned: `qm_string_free`). An
 * agent error is a success here. A reply that comes after a timeout is dropped, never taken
 * for a later command's.
 */
qm_status qm_agent_execute(qm_machine *m,
                           const char *cmd,
                           const char *args_json,
                           int64_t timeout_ms,
                           const qm_cancel *cancel,
                           char **response_out,
                           qm_error **err_out);

/**
 * Like `qm_agent_execute`, but stores only the `return` value (JSON, owned) in `*return_out`;
 * an agent error is `QM_ERR_QMP`, with the agent's class and description in
 * `qm_error_qmp_class` / `qm_error_qmp_desc`.
 */
qm_status qm_agent_cmd(qm_machine *m,
                       const char *cmd,
                       const char *args_json,
                       int64_t timeout_ms,
                       const qm_cancel *cancel,
                       char **return_out,
                       qm_error **err_out);

/**
 * `guest-ping`: `QM_OK` when the agent answers.
 */
qm_status qm_agent_ping(qm_machine *m,
                        int64_t timeout_ms,
                        const qm_cancel *cancel,
                        qm_error **err_out);

/**
 * Runs `path` (borrowed; absolute, or looked up in the agent's `PATH`) in the guest with the
 * `argc` arguments `argv` (borrowed; `argv[0]` is the first argument, not the program; NULL
 * when `argc` is 0), the `envc` `NAME=VALUE` entries `env` (NULL when 0), and `input_len`
 * bytes of `input` on its stdin (NULL when 0). Polls `guest-exec-status` every
 * `interval_ms` (`QM_WAIT_DEFAULT`: 10 ms) until the program ends, all within `timeout_ms`.
 *
 * With `capture`, stdout and stderr are kept, at most `max_output` bytes each (0: 16 MiB, the
 * agent's own cap; more is dropped and reported by `qm_exec_result_*_truncated`). On success `*result_out` receives
 * a result the caller frees with `qm_exec_result_free`. When the wait ends first
 * (`QM_ERR_TIMEOUT`, `QM_ERR_INTERRUPTED`), the program keeps running in the guest: the
 * agent cannot kill it; the error message names its pid.
 */
qm_status qm_agent_exec(qm_machine *m,
                        const char *path,
                        const char *const *argv,
                        size_t argc,
                        const char *const *env,
                        size_t envc,
                        const uint8_t *input,
                        size_t input_len,
                        bool capture,
                        size_t max_output,
                        int64_t interval_ms,
                        int64_t timeout_ms,
                        const qm_cancel *cancel,
                        qm_exec_result **result_out,
                        qm_error **err_out);

/**
 * The program's exit status in `*code_out`: true when it exited (false when a signal killed
 * it, or for NULL).
 */
bool qm_exec_result_exit_code(const qm_exec_result *r, int *code_out);

/**
 * The signal that killed the program in `*signal_out`: true when one did (false otherwise,
 * or for NULL).
 */
bool qm_exec_result_signal(const qm_exec_result *r, int *signal_out);

/**
 * The program's pid in the guest; -1 for NULL.
 */
int64_t qm_exec_result_pid(const qm_exec_result *r);

/**
 * The captured stdout: `*len_out` (may be NULL) receives its length; the bytes (not
 * NUL-terminated; NULL when empty) belong to `r` and stay valid until `qm_exec_result_free`.
 */
const uint8_t *qm_exec_result_stdout(const qm_exec_result *r, size_t *len_out);

/**
 * The captured stderr, as `qm_exec_result_stdout`.
 */
const uint8_t *qm_exec_result_stderr(const qm_exec_result *r, size_t *len_out);

/**
 * True when stdout was longer than the cap (qm's `max_output`, or the agent's own 16 MiB).
 */
bool qm_exec_result_stdout_truncated(const qm_exec_result *r);

/**
 * True when stderr was longer than the cap.
 */
bool qm_exec_result_stderr_truncated(const qm_exec_result *r);

/**
 * Frees a result of `qm_agent_exec`; NULL is a no-op. Its stdout/stderr pointers are invalid
 * afterwards.
 */
void qm_exec_result_free(qm_exec_result *r);

/**
 * Reads the whole guest file `path` (borrowed) in 1 MiB round trips. On success `*data_out`
 * receives the bytes (owned: free with `qm_bytes_free(data, len)`; NULL for an empty file)
 * and `*len_out` their number. `QM_ERR_INVALID` when the file holds more than `max_bytes`;
 * `QM_ERR_QMP` for the agent's errors (no such file ...).
 */
qm_status qm_agent_file_read(qm_machine *m,
                             const char *path,
                             size_t max_bytes,
                             int64_t timeout_ms,
                             const qm_cancel *cancel,
                             uint8_t **data_out,
                             size_t *len_out,
                             qm_error **err_out);

/**
 * Frees bytes returned by `qm_agent_file_read`, given their length. NULL is a no-op.
 */
void qm_bytes_free(uint8_t *data, size_t len);

/**
 * Writes `len` bytes of `data` (borrowed; NULL when `len` is 0) to the guest file `path`
 * (borrowed), creating or truncating it, in 1 MiB round trips.
 */
qm_status qm_agent_file_write(qm_machine *m,
                              const char *path,
                              const uint8_t *data,
                              size_t len,
                              int64_t timeout_ms,
                              const qm_cancel *cancel,
                              qm_error **err_out);

/**
 * `guest-shutdown` with `mode` (borrowed: `"powerdown"`, `"halt"`, `"reboot"`; NULL:
 * `"powerdown"`). The agent does not answer a shutdown that works: `QM_OK` means it took the
 * command (it answered the sync qm sends after it) or the channel closed (QEMU exited with the
 * guest). `QM_ERR_QMP` when the agent reports a failure. Wait for QEMU's `SHUTDOWN` event or
 * its exit separately.
 */
qm_status qm_agent_shutdown(qm_machine *m,
                            const char *mode,
                            int64_t timeout_ms,
                            const qm_cancel *cancel,
                            qm_error **err_out);

/**
 * `guest-get-osinfo`: a JSON object (owned: `qm_string_free`) in `*json_out`.
 */
qm_status qm_agent_get_osinfo(qm_machine *m,
                              int64_t timeout_ms,
                              const qm_cancel *cancel,
                              char **json_out,
                              qm_error **err_out);

/**
 * `guest-get-time`: the guest's clock in nanoseconds since the Unix epoch, in `*ns_out`.
 */
qm_status qm_agent_get_time(qm_machine *m,
                            int64_t timeout_ms,
                            const qm_cancel *cancel,
                            int64_t *ns_out,
                            qm_error **err_out);

/**
 * A new, empty set of patterns; NULL only if memory runs out. Free it with `qm_patterns_free`.
 */
qm_patterns *qm_patterns_new(void);

/**
 * Adds `pattern` (borrowed, UTF-8) to `p`: a success pattern, or with `failure` a failure
 * pattern (a wait that finds it fails with `QM_ERR_CONSOLE_FAILURE`). `kind` is
 * `QM_PATTERN_LITERAL` or `QM_PATTERN_REGEX`. Indexes count from 0 in the order added, success
 * and failure patterns separately. `QM_ERR_INVALID` for a regular expression that does not
 * compile (the message says why), an unknown kind, NULL or non-UTF-8 text; `p` is then
 * unchanged.
 */
qm_status qm_patterns_add(qm_patterns *p,
                          const char *pattern,
                          qm_pattern_kind kind,
                          bool failure,
                          qm_error **err_out);

/**
 * Frees a set of patterns. NULL is a no-op. No call using it may still be running.
 */
void qm_patterns_free(qm_patterns *p);

/**
 * Which success pattern matched: its index among the success patterns. 0 for NULL.
 */
size_t qm_console_match_index(const qm_console_match *m);

/**
 * The text the wait consumed: everything unread before the match, and the match (which ends
 * the text). Exact bytes, which may hold NUL bytes or invalid UTF-8: stores their number in
 * `*len_out` (when `len_out` is not NULL); a NUL follows them. NULL for NULL.
 *
 * The bytes belong to `m` and stay valid until `qm_console_match_free(m)`.
 */
const char *qm_console_match_text(const qm_console_match *m, size_t *len_out);

/**
 * Where the match starts in the text of `qm_console_match_text` (it ends at the end). 0 for
 * NULL.
 */
size_t qm_console_match_start(const qm_console_match *m);

/**
 * Unread bytes dropped (over the console's cap) since the previous wait that returned text:
 * when not 0, this text does not begin where the previous one ended. 0 for NULL.
 */
uint64_t qm_console_match_dropped(const qm_console_match *m);

/**
 * Frees a match and the text it lent out. NULL is a no-op.
 */
void qm_console_match_free(qm_console_match *m);

/**
 * Waits until one of the success patterns of `patterns` shows on the console of `m`, and stores
 * what was found in `*match_out` (free it with `qm_console_match_free`). The text up to and
 * including the match is consumed; what follows stays for the next wait. The earliest match
 * wins (a failure pattern on a tie); a pattern split across reads still matches.
 *
 * One wait at a time per console: a wait (or `qm_console_exec`, `qm_console_interrupt_until`)
 * started while another runs fails at once with `QM_ERR_STATE`. Errors, each with the console
 * text in `qm_error_console_text`: `QM_ERR_CONSOLE_FAILURE` when a failure pattern matched
 * (which one: `qm_error_console_pattern`; consumed like a match), `QM_ERR_CONSOLE_CLOSED` at
 * once when the console reaches end of file (QEMU exited or closed it; also for every wait
 * after it, until the next launch), `QM_ERR_TIMEOUT` after `timeout_ms` (the message names the
 * patterns and the time waited; the text stays unread). `timeout_ms` is milliseconds or
 * `QM_WAIT_FOREVER` (this call has no default: `QM_WAIT_DEFAULT` is `QM_ERR_INVALID`); `cancel`
 * (NULL: none) interrupts it from another thread with `QM_ERR_INTERRUPTED`. `QM_ERR_STATE`
 * without a console (`qm_set_console`) or before a launch; `QM_ERR_INVALID` without a success
 * pattern. All pointers are borrowed for the call.
 */
qm_status qm_console_wait(qm_machine *m,
                          const qm_patterns *patterns,
                          int64_t timeout_ms,
                          const qm_cancel *cancel,
                          qm_console_match **match_out,
                          qm_error **err_out);

/**
 * Sends `len` bytes from `bytes` (borrowed; NULL only when `len` is 0) to the guest's console,
 * waiting up to `timeout_ms` (or `QM_WAIT_FOREVER`; no default) while the console is full.
 * Concurrent sends never interleave within one call's bytes. `QM_ERR_CONSOLE_CLOSED` when the
 * console is gone, `QM_ERR_TIMEOUT` (the message says how much was sent), `QM_ERR_INTERRUPTED`.
 */
qm_status qm_console_send(qm_machine *m,
                          const uint8_t *bytes,
                          size_t len,
                          int64_t timeout_ms,
                          const qm_cancel *cancel,
                          qm_error **err_out);

/**
 * Sends `line` and then `eol` (both borrowed UTF-8; `eol` is the line ending the guest wants,
 * e.g. `"\n"` or `"\r"`) to the guest's console, as `qm_console_send` does.
 */
qm_status qm_console_send_line(qm_machine *m,
                               const char *line,
                               const char *eol,
                               int64_t timeout_ms,
                               const qm_cancel *cancel,
                               qm_error **err_out);

/**
 * Sends `line` + `eol` (as `qm_console_send_line`), then waits for `patterns` (as
 * `qm_console_wait`), both within the one `timeout_ms`. Output left unread before the command
 * is searched too (`qm_console_skip_unread` first ignores it); the text includes the guest's
 * echo of the command, if it echoes.
 */
qm_status qm_console_exec(qm_machine *m,
                          const char *line,
                          const char *eol,
                          const qm_patterns *patterns,
                          int64_t timeout_ms,
                          const qm_cancel *cancel,
                          qm_console_match **match_out,
                          qm_error **err_out);

/**
 * Sends the `key_len` bytes of `key` (borrowed) every `interval_ms` milliseconds (> 0), first
 * at once, until one of `patterns` shows (boot menus, "press any key" prompts); then as
 * `qm_console_wait`, within the one `timeout_ms`.
 */
qm_status qm_console_interrupt_until(qm_machine *m,
                                     const uint8_t *key,
                                     size_t key_len,
                                     uint32_t interval_ms,
                                     const qm_patterns *patterns,
                                     int64_t timeout_ms,
                                     const qm_cancel *cancel,
                                     qm_console_match **match_out,
                                     qm_error **err_out);

/**
 * Stores the console output kept in memory in `*text_out`: its last `last` bytes, or all of it
 * (up to the cap, `qm_set_console_buffer`) when `last` is 0; and its length in `*len_out` (when
 * not NULL). A NUL-terminated string the caller frees with `qm_string_free`; invalid UTF-8 and
 * NUL bytes become U+FFFD (the console log file has the exact bytes). Readable while the
 * machine runs and after its shutdown, until the next launch; never blocks. `QM_ERR_STATE`
 * without a console or before the first launch.
 */
qm_status qm_console_transcript(const qm_machine *m,
                                size_t last,
                                char **text_out,
                                size_t *len_out,
                                qm_error **err_out);

/**
 * Stores the console's counters in `*stats_out`. Never blocks. `QM_ERR_STATE` without a
 * console or before the first launch.
 */
qm_status qm_console_stats(const qm_machine *m, qm_console_counters *stats_out, qm_error **err_out);

/**
 * Marks the console output received so far as read, so the next wait only sees newer output;
 * stores how many bytes that skipped in `*skipped_out` (when not NULL). The transcript keeps
 * them.
 */
qm_status qm_console_skip_unread(const qm_machine *m, size_t *skipped_out, qm_error **err_out);

/**
 * Caps the console's memory, in bytes: the transcript and the output no wait consumed yet
 * (default 1 MiB; values under 4 KiB are raised to 4 KiB; 0 is the default). Output over the cap that no wait consumed is dropped and reported
 * (`qm_console_match_dropped`, `qm_console_stats`); the console log file keeps everything.
 * Applies to the running console at once and to later launches.
 */
qm_status qm_set_console_buffer(qm_machine *m,
                                size_t bytes,
                                qm_error **err_out);

/**
 * Stores the console's descriptor (a connected stream socket) in `*fd_out`. It is borrowed:
 * owned by the machine and valid until a shutdown begins (or `qm_free`); the caller may read,
 * write and poll it (and set it non-blocking) but must not close it. `QM_ERR_STATE` unless
 * `qm_set_console` was called and the machine is launched.
 *
 * It is a raw copy of the console: it receives every byte the guest writes (from launch, as far
 * as the console's memory still holds it) and what is written to it goes to the guest; reading
 * it does not consume what `qm_console_wait` sees. Returns at once, even during a shutdown. Another
 * thread's shutdown may close the descriptor at any moment (and its number be reused): a
 * program that shuts down from another thread should use `qm_console_dup` instead.
 */
qm_status qm_console_fd(const qm_machine *m, int *fd_out, qm_error **err_out);

/**
 * Stores a new descriptor for the console in `*fd_out`: a close-on-exec duplicate that the
 * caller owns and closes (it stays valid after a shutdown, then reading gives end of file).
 * `QM_ERR_STATE` unless `qm_set_console` was called and the machine is
 * launched. Returns at once, even during a shutdown.
 */
qm_status qm_console_dup(const qm_machine *m, int *fd_out, qm_error **err_out);

/**
 * Stores in `*kind_out` what the RFC 6901 JSON Pointer `pointer` designates in the JSON text
 * `json`: a `QM_JSON_*` kind, `QM_JSON_MISSING` when nothing is there (which is not an
 * error). A way to test for an optional member before reading it.
 *
 * `json` and `pointer` are borrowed UTF-8 strings; `pointer` is `""` (the whole text) or
 * starts with `/` (`"/data/reason"`, `"/return/0/name"`; `~1` stands for `/` and `~0` for `~`
 * in a member name). `QM_ERR_INVALID` for NULL, bad UTF-8, a text that is not JSON or a
 * pointer that is not RFC 6901 syntax. Pure function: thread-safe, never blocks.
 */
qm_status qm_json_type(const char *json,
                       const char *pointer,
                       qm_json_kind *kind_out,
                       qm_error **err_out);

/**
 * The value at the RFC 6901 JSON Pointer `pointer` in the JSON text `json`, as JSON text
 * (compact) in `*json_out` (owned: free with `qm_string_free`). For example the pointer
 * `"/data"` of an event gives its `data` object, `""` the whole text.
 *
 * `json` and `pointer` are as for `qm_json_type`. `QM_ERR_INVALID` for NULL, bad UTF-8, a
 * text that is not JSON, a pointer that is not RFC 6901 syntax, or a pointer that designates
 * nothing (the message says where the lookup stopped). Pure function: thread-safe, never
 * blocks. The same holds for the other `qm_json_get_*` functions.
 */
qm_status qm_json_get(const char *json, const char *pointer, char **json_out, qm_error **err_out);

/**
 * The string at `pointer` in `json`, unescaped (`"a\"b"` gives `a"b`), as a new UTF-8 string
 * in `*string_out` (owned: free with `qm_string_free`).
 *
 * `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not a string or contains a NUL
 * character (`\u0000`), which a C string cannot hold.
 */
qm_status qm_json_get_string(const char *json,
                             const char *pointer,
                             char **string_out,
                             qm_error **err_out);

/**
 * The integer at `pointer` in `json`, in `*value_out`.
 *
 * `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not a number, has a fraction
 * or an exponent (`1.5`, `1e3`: read those with `qm_json_get_double`) or is outside the range
 * of `int64_t`.
 */
qm_status qm_json_get_int(const char *json,
                          const char *pointer,
                          int64_t *value_out,
                          qm_error **err_out);

/**
 * The number at `pointer` in `json`, as a `double` in `*value_out` (an integer beyond 2^53
 * is rounded to the nearest `double`).
 *
 * `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not a number.
 */
qm_status qm_json_get_double(const char *json,
                             const char *pointer,
                             double *value_out,
                             qm_error **err_out);

/**
 * The boolean at `pointer` in `json`, in `*value_out`.
 *
 * `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not `true` or `false`.
 */
qm_status qm_json_get_bool(const char *json,
                           const char *pointer,
                           bool *value_out,
                           qm_error **err_out);

/**
 * The number of elements of the array at `pointer` in `json`, in `*len_out` (elements are
 * then read with the pointers `<pointer>/0` ... `<pointer>/<len - 1>`).
 *
 * `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not an array.
 */
qm_status qm_json_array_len(const char *json,
                            const char *pointer,
                            size_t *len_out,
                            qm_error **err_out);

/**
 * The array of strings at `pointer` in `json` as a vector C can use directly, e.g. the
 * result of `qm_guest_qemu_args` for `qm_add_args`: `*strings_out` receives a new array of
 * `n` new UTF-8 strings (unescaped) followed by a NULL pointer, and `*len_out` receives `n`
 * (`len_out` may be NULL: the array is NULL-terminated). The caller owns the array and its
 * strings and frees both with one `qm_strings_free(*strings_out)` (never `free()` or
 * `qm_string_free`).
 *
 * `QM_ERR_INVALID` as for `qm_json_get`, and when the value is not an array, an element is
 * not a string or a string contains a NUL character (the message names the element).
 */
qm_status qm_json_get_strings(const char *json,
                              const char *pointer,
                              char ***strings_out,
                              size_t *len_out,
                              qm_error **err_out);

/**
 * Frees an array returned by `qm_json_get_strings`, and every string in it. NULL is a no-op.
 * Only for such arrays, once each, unmodified (the NULL at its end tells its length).
 */
void qm_strings_free(char **strings);

/**
 * Sends qm's log records to `callback` instead of stderr, for the whole process; NULL
 * restores stderr (the default). Only records that pass the level (`qm_set_log_level`,
 * `QM_LOG`) are sent: with the default level, warnings only. Thread-safe.
 *
 * The callback runs on the thread that logs: any thread calling into qm, and qm's own
 * console-drain threads. It may run on several threads at once, so it and `user` must be
 * usable from any thread. It must return quickly and must not call back into the machine
 * that logged (qm may hold that machine's locks while logging; such a call can deadlock); a
 * record qm makes while the callback runs on the same thread goes to stderr instead.
 *
 * Returns true. When it returns, no call to the previous callback is in progress or will
 * start: the previous `user` may then be freed (it waits for calls in progress to return).
 * Called from inside a callback, where that wait would never end, it changes nothing and
 * returns false.
 */
bool qm_set_log_callback(qm_log_fn callback, void *user);

/**
 * Sets what checks before send do on this machine, at once and for later launches: `checks`
 * for what QEMU would refuse (unknown commands, events and members, missing members, wrong
 * JSON types, values outside an enum), `deprecated` and `unstable` for the use of what the
 * schema marks so (QEMU's `-compat deprecated-input=` / `unstable-input=`). Each is a
 * `QM_SCHEMA_*` level. The default is all `QM_SCHEMA_OFF`: nothing checked, no schema loaded.
 * A good setting for tests: `QM_SCHEMA_STRICT, QM_SCHEMA_WARN, QM_SCHEMA_OFF`.
 *
 * When checks are on, the first checked call (`qm_qmp`, `qm_cmd`, `qm_qmpf`, the event
 * waits) loads the schema within its own timeout: one `query-qmp-schema` per QEMU binary per
 * process. A refused call returns `QM_ERR_REFUSED` and sends nothing; the error names the JSON
 * path (`qm_error_schema_path`) and the rule (`qm_error_schema_rule`). A schema that cannot be
 * loaded turns the checks off for that launch, with a logged warning.
 * `QM_ERR_INVALID` for a value that is not a `QM_SCHEMA_*` level (nothing changes).
 */
qm_status qm_set_schema_policy(qm_machine *m,
                               qm_schema_level checks,
                               qm_schema_level deprecated,
                               qm_schema_level unstable,
                               qm_error **err_out);

/**
 * Stores the machine's schema policy (see `qm_set_schema_policy`) in `*checks_out`,
 * `*deprecated_out` and `*unstable_out`, none of which may be NULL.
 */
qm_status qm_get_schema_policy(const qm_machine *m,
                               qm_schema_level *checks_out,
                               qm_schema_level *deprecated_out,
                               qm_schema_level *unstable_out,
                               qm_error **err_out);

/**
 * Stores what QEMU's greeting said at the last launch as JSON in `*json_out` (owned: free
 * with `qm_string_free`): `{"version": {"major": 7, "minor": 2, "micro": 0}, "package": "…",
 * "capabilities": ["oob"]}`. No I/O: the greeting is kept from the launch. `QM_ERR_STATE`
 * before a launch with QMP.
 */
qm_status qm_greeting(const qm_machine *m, char **json_out, qm_error **err_out);

/**
 * Gets the running QEMU's QMP schema: from the per-binary cache, or with `query-qmp-schema`
 * (then parsed and cached), within `timeout_ms` (`QM_WAIT_DEFAULT`: the QMP timer) unless
 * `cancel` fires. Stores a new handle in `*schema_out` (owned: free with `qm_schema_free`).
 * Errors: `QM_ERR_STATE` (not launched, or QMP off), `QM_ERR_PROTOCOL` (a damaged schema: the
 * message names the entry), `QM_ERR_QMP`, `QM_ERR_TIMEOUT`, `QM_ERR_INTERRUPTED`,
 * `QM_ERR_DISCONNECTED`.
 */
qm_status qm_schema_get(const qm_machine *m,
                        int64_t timeout_ms,
                        const qm_cancel *cancel,
                        qm_schema **schema_out,
                        qm_error **err_out);

/**
 * Frees a schema handle. NULL is a no-op.
 */
void qm_schema_free(qm_schema *s);

/**
 * True when QEMU has a command called `name` (borrowed). False for NULL arguments.
 */
bool qm_schema_has_command(const qm_schema *s, const char *name);

/**
 * True when QEMU has an event called `name` (borrowed). False for NULL arguments.
 */
bool qm_schema_has_event(const qm_schema *s, const char *name);

/**
 * Answers a feature question in libvirt's query-path syntax (`path`, borrowed), e.g.
 * `"blockdev-add/arg-type/+file/aio/^io_uring"`: stores true in `*found_out` when the path
 * exists in this QEMU's schema, false when not. The grammar: a command or event name; then
 * `arg-type` or `ret-type` (events: `arg-type`); then per step a member `name`, an optional
 * member `*name`, a union variant `+case`, an enum value `^value`, a JSON type `!type`
 * (`string`, `int`, `number`, `boolean`, `null`, `value`, `object`, `array`), or a feature
 * `$feature` of what was selected last. Arrays are looked through; alternates are entered
 * (the path holds through any branch). `QM_ERR_INVALID` for a malformed path, naming the
 * component. Never blocks.
 */
qm_status qm_schema_query(const qm_schema *s,
                          const char *path,
                          bool *found_out,
                          qm_error **err_out);

/**
 * Describes the command `name` (borrowed) as JSON in `*json_out` (owned: free with
 * `qm_string_free`): `{"name": …, "allow-oob": false, "features": […], "arguments": [{"name":
 * …, "optional": true, "type": "str", "variants": […], "features": […]}, …]}` (`type` in
 * words: a builtin, `enum (a, b)`, `object`, `array of …`, `alternate (… | …)`; `variants`:
 * the cases of a union's discriminator). `null` when QEMU has no such command. Never blocks.
 */
qm_status qm_schema_command(const qm_schema *s,
                            const char *name,
                            char **json_out,
                            qm_error **err_out);

/**
 * Checks the command `cmd` with the arguments `args_json` (a JSON object, or NULL / `"null"`
 * for none; both borrowed) against the schema without sending anything, and stores every
 * finding as a JSON array in `*findings_json_out` (owned: free with `qm_string_free`; `[]`
 * when all is well): `[{"path": "arguments.node_name", "rule": "unknown-member", "message":
 * "unexpected member 'node_name' (did you mean 'node-name'?)"}, …]`. Rules:
 * `unknown-command`, `unknown-member`, `missing-member`, `wrong-type`, `enum-value`,
 * `deprecated`, `unstable`. Never blocks.
 */
qm_status qm_schema_check(const qm_schema *s,
                          const char *cmd,
                          const char *args_json,
                          char **findings_json_out,
                          qm_error **err_out);

/**
 * Builds JSON from the printf-style `format` and `nargs` arguments `args` (both borrowed),
 * and stores it in `*json_out` (owned: free with `qm_string_free`). Use the `QM_JSONF` macro,
 * which builds the argument array from plain C values.
 *
 * The format is JSON text where strings may also be single-quoted (`'a'`). Outside strings,
 * each conversion takes the next argument: `%s` a string, escaped as a JSON string; `%d %i
 * %ld %li %lld %lli` a signed and `%u %lu %llu` an unsigned integer (`PRId64` / `PRIu64`
 * expand to these); `%f %g %e` a finite double; `%b` a bool (or an integer: non-zero is
 * true); `%j` a string holding JSON text, spliced in as one value. Inside a string `%` is
 * an ordinary character. `QM_ERR_INVALID`, naming the byte offset and the conversion, when a
 * conversion is unknown, an argument has the wrong kind, does not fit, is missing or left
 * over, a string is NULL or not UTF-8, or the result is not JSON. Never blocks.
 */
qm_status qm_jsonf(const char *format,
                   const qm_arg *args,
                   size_t nargs,
                   char **json_out,
                   qm_error **err_out);

/**
 * Runs the QMP command that the printf-style `format` and its `nargs` arguments `args` build
 * (see `qm_jsonf` for the format), e.g. `"{'execute': 'blockdev-add', 'arguments':
 * {'driver': 'file', 'node-name': %s, 'filename': %s}}"`, and stores QEMU's raw response as
 * `qm_qmp` does in `*response_out` (owned: free with `qm_string_free`). Use the `QM_QMPF`
 * macro. The JSON must be an object with a string `"execute"` and, optionally, an object
 * `"arguments"`, nothing else. The command goes through the machine's schema checks
 * (`qm_set_schema_policy`) like any `qm_qmp`. Blocks like `qm_qmp`; errors: those of
 * `qm_qmp`, and `QM_ERR_INVALID` for a format that does not fit (nothing is sent).
 */
qm_status qm_qmpf(qm_machine *m,
                  const char *format,
                  const qm_arg *args,
                  size_t nargs,
                  int64_t timeout_ms,
                  const qm_cancel *cancel,
                  char **response_out,
                  qm_error **err_out);

/**
 * Asks for out-of-band execution (the QMP `oob` capability) at later launches (default: off).
 * It is enabled when QEMU's greeting offers it (QEMU 7.2 does): then `qm_qmp_oob` runs the
 * commands that allow it while in-band ones are pending. With OOB on, QEMU queues at most 8
 * in-band commands and drops more: keep at most 8 in flight.
 */
qm_status qm_set_qmp_oob(qm_machine *m, bool on, qm_error **err_out);

/**
 * True when the machine's current connection negotiated out-of-band execution. False for
 * NULL.
 */
bool qm_qmp_oob_enabled(const qm_machine *m);

/**
 * Runs `cmd` out-of-band (`exec-oob`) with `args_json` (as `qm_qmp`; both borrowed) and
 * stores QEMU's raw response in `*response_out` (owned: free with `qm_string_free`). QEMU may
 * answer it while in-band commands sent earlier are still running. Blocks like `qm_qmp`.
 * `QM_ERR_STATE` when OOB was not negotiated (`qm_set_qmp_oob` before launch);
 * `QM_ERR_INVALID`, once the schema is loaded, for a command that does not allow OOB (QEMU
 * 7.2: `migrate-recover`, `migrate-pause`, `yank`, `query-yank` do); otherwise QEMU answers
 * such a command with an error response. Nothing is sent when qm refuses.
 */
qm_status qm_qmp_oob(qm_machine *m,
                     const char *cmd,
                     const char *args_json,
                     int64_t timeout_ms,
                     const qm_cancel *cancel,
                     char **response_out,
                     qm_error **err_out);

/**
 * Where the fake QEMU binary is, to give `qm_new` in place of `qemu-system-*`: the
 * environment variable `QM_FAKE_QEMU` when set; else `qm-fake-qemu` beside the qm library
 * (or the program it is linked into), in its parent directory or in `../bin` from it (where
 * `make install` puts it), the first that exists; else the bare name `qm-fake-qemu` (looked
 * up in `PATH` at launch). Stored in `*path_out` (owned: free with `qm_string_free`).
 *
 * `QM_ERR_INVALID` when `path_out` is NULL. Thread-safe, never blocks.
 */
qm_status qm_fake_qemu_path(char **path_out, qm_error **err_out);

/**
 * Creates a template of machines running `binary`, whose saved state lives under `dir` (both
 * borrowed; `dir` is created when needed, one subdirectory per key). On success
 * `*template_out` receives a handle the caller owns and frees with `qm_template_free`.
 *
 * The key covers what the state depends on: the QEMU binary (path, size, modification time),
 * the settings and arguments, every file the arguments name and the disks' base images. A
 * second process with the same description finds the state and boots nothing.
 */
qm_status qm_template_new(const char *binary,
                          const char *dir,
                          qm_template **template_out,
                          qm_error **err_out);

/**
 * Frees a template (never its saved state, nor the machines cloned from it). NULL is a no-op;
 * a handle that is not live is left alone with a warning. Must be the last call on the handle.
 */
void qm_template_free(qm_template *t);

/**
 * Appends `n` QEMU arguments (`args`: `n` borrowed UTF-8 strings, NULL when `n` is 0), as
 * `qm_add_args`.
 */
qm_status qm_template_add_args(qm_template *t,
                               const char *const *args,
                               size_t n,
                               qm_error **err_out);

/**
 * `-machine TYPE` (borrowed), as `qm_set_machine`.
 */
qm_status qm_template_set_machine(qm_template *t, const char *machine_type, qm_error **err_out);

/**
 * A console on every machine, as `qm_set_console` (`device_type` borrowed, may be NULL).
 */
qm_status qm_template_set_console(qm_template *t,
                                  const char *device_type,
                                  size_t index,
                                  qm_error **err_out);

/**
 * A guest agent channel (a socketpair) on every machine, or none, as `qm_set_guest_agent`.
 */
qm_status qm_template_set_guest_agent(qm_template *t, bool enabled, qm_error **err_out);

/**
 * Adds a disk: `-drive file=OVERLAY,format=qcow2,OPTS` on a qcow2 overlay of `base` (format
 * `format`, e.g. `"raw"`), so `base` is only ever read; each clone writes an overlay of its
 * own, removed at its shutdown. Strings borrowed; `opts` may be NULL. Needs `qemu-img`.
 */
qm_status qm_template_add_disk(qm_template *t,
                               const char *base,
                               const char *format,
                               const char *opts,
                               qm_error **err_out);

/**
 * What `qm_template_clone` waits for (`QM_READY_*`; strings borrowed, used only by
 * `QM_READY_CONSOLE`). Default: the agent when the template has one, else the guest running.
 */
qm_status qm_template_set_clone_ready(qm_template *t,
                                      qm_ready ready_kind,
                                      const char *console_send,
                                      const char *console_text,
                                      qm_error **err_out);

/**
 * Makes sure the template's state is saved: when it is not, boots a machine, waits until
 * `ready_kind` (strings borrowed, as `qm_template_set_clone_ready`), saves it and shuts it
 * down. `*booted_out` is true when it booted, false when the state was found (made by this
 * process or another). `QM_WAIT_DEFAULT` is 120 s for all of it.
 */
qm_status qm_template_prepare(qm_template *t,
                              qm_ready ready_kind,
                              const char *console_send,
                              const char *console_text,
                              int64_t timeout_ms,
                              const qm_cancel *cancel,
                              bool *booted_out,
                              qm_error **err_out);

/**
 * Whether the template's state is saved (`*saved_out`). Never blocks on QEMU.
 */
qm_status qm_template_is_saved(qm_template *t, bool *saved_out, qm_error **err_out);

/**
 * The directory of the template's state (`<dir>/<key>`) in `*path_out` (owned: free with
 * `qm_string_free`), whether or not it is saved yet.
 */
qm_status qm_template_state_dir(qm_template *t, char **path_out, qm_error **err_out);

/**
 * Starts a running machine from the template's saved state (`QM_ERR_STATE` when it was not
 * prepared), with its own sockets, console, agent channel and disk overlays, and waits until
 * it is ready (`qm_template_set_clone_ready`). On success `*machine_out` receives a launched
 * machine the caller owns and frees with `qm_free` (a clone is for one run: its overlays go
 * at its shutdown). On failure nothing is left running. Safe to call from many threads at
 * once. `QM_WAIT_DEFAULT` is 120 s.
 */
qm_status qm_template_clone(qm_template *t,
                            int64_t timeout_ms,
                            const qm_cancel *cancel,
                            qm_machine **machine_out,
                            qm_error **err_out);

/**
 * Saves the running machine's state to `path` (borrowed; created mode 0600, replaced) and
 * stores what was recorded with it, as a JSON object, in `*info_out` (owned: free with
 * `qm_string_free`): `stream_bytes`, `qemu_version`, `binary`, `settings`. The guest is paused
 * and stays paused (QEMU's `postmigrate`: `cont` resumes it). On failure no file is left at
 * `path`; a failed migration is `QM_ERR_QMP` with QEMU's reason. `QM_WAIT_DEFAULT` is 120 s.
 * Do not pass descriptors (`qm_send_fd_scm`) from another thread meanwhile.
 */
qm_status qm_save_state(qm_machine *m,
                        const char *path,
                        int64_t timeout_ms,
                        const qm_cancel *cancel,
                        char **info_out,
                        qm_error **err_out);

/**
 * Launches the (configured, not launched) machine from a state saved by `qm_save_state` at
 * `path` (borrowed), resumes the guest and waits until `ready_kind` (strings borrowed, as
 * `qm_template_set_clone_ready`). The machine must be configured as the saved one was:
 * otherwise `QM_ERR_INVALID` naming what differs, before anything is launched; so is a
 * truncated file or one that is not a qm state file (`QM_ERR_IO` when it cannot be opened).
 * A stream QEMU cannot load is `QM_ERR_LAUNCH` with QEMU's output; no QEMU is left running.
 * `QM_WAIT_DEFAULT` is 120 s.
 */
qm_status qm_restore_state(qm_machine *m,
                           const char *path,
                           qm_ready ready_kind,
                           const char *console_send,
                           const char *console_text,
                           int64_t timeout_ms,
                           const qm_cancel *cancel,
                           qm_error **err_out);

/**
 * Launches the machine waiting for an incoming migration (`-incoming defer`), for
 * `qm_migrate_to`. Otherwise as `qm_launch_with`.
 */
qm_status qm_launch_incoming(qm_machine *m,
                             int64_t timeout_ms,
                             const qm_cancel *cancel,
                             qm_error **err_out);

/**
 * Live-migrates the running machine `m` to `dest` (launched with `qm_launch_incoming`, same
 * devices) over a socketpair qm hands to both, and waits until both report it completed:
 * `dest` runs the guest, `m` is paused. A failure is `QM_ERR_QMP` with QEMU's reason; a
 * timeout or cancel cancels the migration. `QM_WAIT_DEFAULT` is 300 s.
 */
qm_status qm_migrate_to(qm_machine *m,
                        qm_machine *dest,
                        int64_t timeout_ms,
                        const qm_cancel *cancel,
                        qm_error **err_out);

/**
 * Waits for the machine's migration (outgoing, or incoming) to end; on completion stores the
 * last `query-migrate` reply (JSON, owned: `qm_string_free`) in `*info_out`. A failed or
 * cancelled migration is `QM_ERR_QMP` with QEMU's reason. No default wait: `QM_WAIT_DEFAULT`
 * is `QM_ERR_INVALID`.
 */
qm_status qm_wait_migration(qm_machine *m,
                            int64_t timeout_ms,
                            const qm_cancel *cancel,
                            char **info_out,
                            qm_error **err_out);

/**
 * Runs job `id` (borrowed; a block job the caller started) to its end: completes it when
 * ready, finalizes and dismisses it as needed, and stores its last `query-jobs` entry (JSON,
 * owned: `qm_string_free`; `null` when QEMU dismissed it itself) in `*job_out`. A job that
 * ends with an error is `QM_ERR_QMP` holding it; on a timeout or cancel the job is cancelled.
 * `QM_WAIT_DEFAULT` is 300 s.
 */
qm_status qm_run_job(qm_machine *m,
                     const char *id,
                     int64_t timeout_ms,
                     const qm_cancel *cancel,
                     char **job_out,
                     qm_error **err_out);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* QM_H */

/*
 * Printf-style commands (qm_qmpf, qm_jsonf) from plain C values. Each argument becomes a
 * typed qm_arg through C11 _Generic, so the type the compiler saw travels with the value:
 * an argument of a type qm cannot take (a struct, an int *, NULL) does not compile, and a
 * conversion that does not fit its argument (%d given a string, %s given an int, too few or
 * too many arguments) is QM_ERR_INVALID naming the conversion, before anything is sent.
 * That is what stands in for __attribute__((format)), which only knows printf's own formats.
 * At most 16 arguments per call through the macros; call qm_qmpf / qm_jsonf with your own
 * qm_arg array for more. C only (not C++).
 *
 *   char *resp = NULL;
 *   qm_status st = QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &resp, &err,
 *       "{'execute': 'blockdev-add', 'arguments': {'driver': 'file', 'node-name': %s, "
 *       "'filename': %s, 'read-only': %b}}", node, path, true);
 */
#if !defined(__cplusplus) && !defined(QM_H_FORMAT)
#define QM_H_FORMAT
static inline qm_arg qm_arg_str(const char *s) { qm_arg a = {QM_ARG_STR, s, 0, 0, 0.0}; return a; }
static inline qm_arg qm_arg_int(int64_t i) { qm_arg a = {QM_ARG_INT, NULL, i, 0, 0.0}; return a; }
static inline qm_arg qm_arg_uint(uint64_t u) { qm_arg a = {QM_ARG_UINT, NULL, 0, u, 0.0}; return a; }
static inline qm_arg qm_arg_double(double d) { qm_arg a = {QM_ARG_DOUBLE, NULL, 0, 0, d}; return a; }
static inline qm_arg qm_arg_bool(bool b) { qm_arg a = {QM_ARG_BOOL, NULL, b ? 1 : 0, 0, 0.0}; return a; }
static inline qm_arg qm_arg_end(void) { qm_arg a = {QM_ARG_END, NULL, 0, 0, 0.0}; return a; }

/* The qm_arg for x, by its C type. */
#define QM_ARG(x) _Generic((x), \
    char *: qm_arg_str, const char *: qm_arg_str, \
    _Bool: qm_arg_bool, \
    char: qm_arg_int, signed char: qm_arg_int, short: qm_arg_int, int: qm_arg_int, \
    long: qm_arg_int, long long: qm_arg_int, \
    unsigned char: qm_arg_uint, unsigned short: qm_arg_uint, unsigned int: qm_arg_uint, \
    unsigned long: qm_arg_uint, unsigned long long: qm_arg_uint, \
    float: qm_arg_double, double: qm_arg_double)(x)

#define QM__CAT(a, b) QM__CAT_(a, b)
#define QM__CAT_(a, b) a##b
#define QM__FIRST(a, ...) a
#define QM__PICK(_0, _1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, n, ...) n
/* How many arguments follow the format (0 to 16). */
#define QM__COUNT(...) QM__PICK(__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, ~)
#define QM__MAP_0(f)
#define QM__MAP_1(f, a1) QM_ARG(a1),
#define QM__MAP_2(f, a1, a2) QM_ARG(a1), QM_ARG(a2),
#define QM__MAP_3(f, a1, a2, a3) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3),
#define QM__MAP_4(f, a1, a2, a3, a4) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4),
#define QM__MAP_5(f, a1, a2, a3, a4, a5) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5),
#define QM__MAP_6(f, a1, a2, a3, a4, a5, a6) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6),
#define QM__MAP_7(f, a1, a2, a3, a4, a5, a6, a7) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7),
#define QM__MAP_8(f, a1, a2, a3, a4, a5, a6, a7, a8) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7), QM_ARG(a8),
#define QM__MAP_9(f, a1, a2, a3, a4, a5, a6, a7, a8, a9) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7), QM_ARG(a8), QM_ARG(a9),
#define QM__MAP_10(f, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7), QM_ARG(a8), QM_ARG(a9), QM_ARG(a10),
#define QM__MAP_11(f, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7), QM_ARG(a8), QM_ARG(a9), QM_ARG(a10), QM_ARG(a11),
#define QM__MAP_12(f, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7), QM_ARG(a8), QM_ARG(a9), QM_ARG(a10), QM_ARG(a11), QM_ARG(a12),
#define QM__MAP_13(f, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7), QM_ARG(a8), QM_ARG(a9), QM_ARG(a10), QM_ARG(a11), QM_ARG(a12), QM_ARG(a13),
#define QM__MAP_14(f, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7), QM_ARG(a8), QM_ARG(a9), QM_ARG(a10), QM_ARG(a11), QM_ARG(a12), QM_ARG(a13), QM_ARG(a14),
#define QM__MAP_15(f, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7), QM_ARG(a8), QM_ARG(a9), QM_ARG(a10), QM_ARG(a11), QM_ARG(a12), QM_ARG(a13), QM_ARG(a14), QM_ARG(a15),
#define QM__MAP_16(f, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16) QM_ARG(a1), QM_ARG(a2), QM_ARG(a3), QM_ARG(a4), QM_ARG(a5), QM_ARG(a6), QM_ARG(a7), QM_ARG(a8), QM_ARG(a9), QM_ARG(a10), QM_ARG(a11), QM_ARG(a12), QM_ARG(a13), QM_ARG(a14), QM_ARG(a15), QM_ARG(a16),
/* A compound-literal array of the arguments after the format, ended by qm_arg_end(). */
#define QM__ARGS(...) \
    ((const qm_arg[]){QM__CAT(QM__MAP_, QM__COUNT(__VA_ARGS__))(__VA_ARGS__) qm_arg_end()})

/* qm_qmpf(m, format, args..., timeout_ms, cancel, response_out, err_out) from plain values. */
#define QM_QMPF(m, timeout_ms, cancel, response_out, err_out, ...) \
    qm_qmpf((m), QM__FIRST(__VA_ARGS__, ~), QM__ARGS(__VA_ARGS__), \
            (size_t)QM__COUNT(__VA_ARGS__), (timeout_ms), (cancel), (response_out), (err_out))

/* qm_jsonf(format, args..., json_out, err_out) from plain values. */
#define QM_JSONF(json_out, err_out, ...) \
    qm_jsonf(QM__FIRST(__VA_ARGS__, ~), QM__ARGS(__VA_ARGS__), \
             (size_t)QM__COUNT(__VA_ARGS__), (json_out), (err_out))
#endif /* !__cplusplus && !QM_H_FORMAT */
