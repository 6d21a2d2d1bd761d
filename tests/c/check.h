/*
 * check.h: the tiny test harness shared by the C tests (no framework); check.c implements it.
 *
 * A test file defines `static void name(void)` functions and a `main` that passes them to
 * RUN_TESTS. The CHECK-style macros print the failing expression and abandon the current test
 * (longjmp back to the runner), which goes on with the next one. They are for the main thread
 * only: worker threads count their own failures and the main thread CHECKs the count.
 *
 * Each test binary ends with a line `<file>: N passed, M failed` and exits non-zero when a test
 * failed; tests/c/run.sh adds the lines up. Set QM_QEMU to use another QEMU binary; pass test
 * names as arguments to run only those.
 */
#ifndef QM_TEST_CHECK_H
#define QM_TEST_CHECK_H

#include <stddef.h>
#include <string.h>

#include "qm.h"

/* Reports a failure in the current test and abandons it (longjmp to the runner). */
void check_fail_(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

/* Checks a status and the error object that came with it, then frees the error. */
void check_status_(const char *file, int line, const char *expr, qm_status want, qm_status got,
                   qm_error *err);

/* Checks for QM_ERR_INVALID with a message containing needle, then frees the error. */
void check_invalid_(const char *file, int line, const char *expr, const char *needle,
                    qm_status got, qm_error *err);

/* The name of a status, e.g. "QM_ERR_STATE". */
const char *status_name(qm_status s);

/* CHECK(cond): the condition holds. */
#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond))                                                                             \
            check_fail_(__FILE__, __LINE__, "%s", #cond);                                        \
    } while (0)

/* CHECK_STR(a, b): two C strings are equal (neither NULL). */
#define CHECK_STR(a, b)                                                                          \
    do {                                                                                         \
        const char *a_ = (a), *b_ = (b);                                                         \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                     \
            check_fail_(__FILE__, __LINE__, "%s == %s (\"%s\" vs \"%s\")", #a, #b,               \
                        a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                 \
    } while (0)

/* CHECK_HAS(s, needle): the string s (not NULL) contains needle. */
#define CHECK_HAS(s, needle)                                                                     \
    do {                                                                                         \
        const char *s_ = (s);                                                                    \
        if (s_ == NULL || strstr(s_, (needle)) == NULL)                                          \
            check_fail_(__FILE__, __LINE__, "%s contains \"%s\" (it is \"%s\")", #s, (needle),   \
                        s_ ? s_ : "(null)");                                                     \
    } while (0)

/*
 * OK(call): the call succeeds and leaves its error untouched. The macro declares the
 * `qm_error *err` the call uses:  OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
 */
#define OK(call)                                                                                 \
    do {                                                                                         \
        qm_error *err = NULL;                                                                    \
        qm_status got_ = (call);                                                                 \
        check_status_(__FILE__, __LINE__, #call, QM_OK, got_, err);                              \
    } while (0)

/* FAILS(status, call): the call fails with that status and a matching error object. */
#define FAILS(want, call)                                                                        \
    do {                                                                                         \
        qm_error *err = NULL;                                                                    \
        qm_status got_ = (call);                                                                 \
        check_status_(__FILE__, __LINE__, #call, (want), got_, err);                             \
    } while (0)

/* INVALID(call, "needle"): QM_ERR_INVALID, with the needle (e.g. a parameter) in the message. */
#define INVALID(call, needle)                                                                    \
    do {                                                                                         \
        qm_error *err = NULL;                                                                    \
        qm_status got_ = (call);                                                                 \
        check_invalid_(__FILE__, __LINE__, #call, (needle), got_, err);                          \
    } while (0)

/* ---- helpers (main thread) ------------------------------------------------------------------ */

/* The QEMU binary the tests run: $QM_QEMU or qemu-system-x86_64. */
const char *qemu_binary(void);
/* Monotonic time in milliseconds. */
double now_ms(void);
/* A new machine running `-machine none` (QMP only, no guest). */
qm_machine *new_none(void);
/* A launched `-machine none` machine. */
qm_machine *launch_none(void);
/* Runs a command that must succeed and returns its `return` JSON (free with qm_string_free). */
char *cmd_ok(qm_machine *m, const char *cmd, const char *args_json);
/* Shuts a machine down gracefully (must succeed) and frees it. */
void shutdown_free(qm_machine *m);
/* A new private temporary directory (free the string with free()). */
char *make_temp_dir(void);
/* Removes a directory tree. */
void remove_dir(const char *dir);
/*
 * Reads from fd until `want` appears in what was read or timeout_ms passes; returns 1 when it
 * appeared. What was read is left in buf, NUL-terminated.
 */
int read_until(int fd, const char *want, char *buf, size_t size, int timeout_ms);
/* Writes all of s to fd. */
void write_all(int fd, const char *s);
/* A guest image in dir (path owned by the caller, free()) and a machine that boots it with a
 * console, not launched. */
qm_machine *new_guest(const char *dir, const char *banner, qm_guest_action action,
                      unsigned char exit_value, char **image_out);
/* Adds the arguments of a JSON array of plain strings (no escapes) to a machine. */
void add_json_args(qm_machine *m, const char *json);
/* Waits up to timeout_ms for fd to be readable; returns 1 when it is. */
int readable(int fd, int timeout_ms);

/* Open descriptors of this process. */
int count_fds(void);

/* ---- the runner ------------------------------------------------------------------------------ */

struct test {
    const char *name;
    void (*fn)(void);
};

#define TEST(fn) {#fn, fn}

int run_tests_(const char *file, const struct test *tests, size_t n, int argc, char **argv);

#define RUN_TESTS(tests) run_tests_(__FILE__, tests, sizeof(tests) / sizeof((tests)[0]), argc, argv)

#endif /* QM_TEST_CHECK_H */
