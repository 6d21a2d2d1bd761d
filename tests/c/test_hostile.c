/*
 * test_hostile.c: misuse and hostile input at the C ABI, beyond what test_api.c (NULL in every
 * pointer, bad UTF-8, basic bad JSON, bad timeouts, wrong state before launch) and
 * test_threads.c (16 threads running commands, cancellation, one shutdown under waiters) cover:
 *
 *   - huge strings (64 MiB by default) everywhere a string is taken: command names, argument
 *     objects, event names and match filters, filter lists, machine names, arguments, wrappers,
 *     paths: every call returns a clear status (or works) in bounded time and memory;
 *   - JSON of the wrong shape everywhere JSON is taken, including nesting deeper than the
 *     parser's limit, trailing data, non-finite numbers and lone surrogates; odd but valid JSON
 *     goes to QEMU, which answers with a QMP error, and the connection stays usable;
 *   - a table of every call in every state: never launched, running, shut down, killed, launch
 *     failed (before and after QEMU ran), QMP off;
 *   - the hammer: 16 threads on one handle (commands, stop/cont, event waits with and without
 *     cancel tokens and timeouts, getters, the console) while one thread shuts the machine down,
 *     kills it, waits it out, relaunches it ... over 10 rounds; every call must return a
 *     documented status, and afterwards no QEMU, no descriptor and no thread is left over;
 *   - regression_*: bugs found in src/, each a failing test that says what the fix is.
 *
 * Environment: QM_TEST_HUGE_MIB sizes the huge strings (default 64; 1 under valgrind, where
 * copying 64 MiB a few times takes minutes); QM_TEST_ROUNDS the hammer rounds (default 10; 8,
 * one per variant, under valgrind). A watchdog (alarm) ends the binary if a call hangs, so a
 * hang shows as a missing result line rather than a stuck run.
 *
 * Worker threads never use CHECK (it longjmps on the main thread's stack): they count their
 * failures, and the main thread checks the counts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* True under valgrind (its preload library is in LD_PRELOAD). */
static bool under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

/* 64 MiB; 1 MiB under valgrind, where copying 64 MiB a few times takes minutes. */
static size_t huge_size(void)
{
    const char *mib = getenv("QM_TEST_HUGE_MIB");
    long n = mib && *mib ? atol(mib) : under_valgrind() ? 1 : 64;
    return (size_t)(n > 0 ? n : 64) << 20;
}

/* 10 hammer rounds; under valgrind one per variant (8). */
static int rounds(void)
{
    const char *r = getenv("QM_TEST_ROUNDS");
    int n = r && *r ? atoi(r) : under_valgrind() ? 8 : 10;
    return n > 0 ? n : 10;
}

/* A new string: prefix, n copies of c, suffix (free()). */
static char *repeat(const char *prefix, char c, size_t n, const char *suffix)
{
    size_t a = strlen(prefix), b = strlen(suffix);
    char *s = malloc(a + n + b + 1);
    CHECK(s != NULL);
    memcpy(s, prefix, a);
    memset(s + a, c, n);
    memcpy(s + a + n, suffix, b + 1);
    return s;
}

/* a, b and c joined (free()). */
static char *concat(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);
    CHECK(s != NULL);
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

/* `depth` nested objects {"a":{"a":...1...}} (free()). */
static char *nested(size_t depth)
{
    char *s = malloc(depth * 6 + 2), *p = s;
    size_t i;
    CHECK(s != NULL);
    for (i = 0; i < depth; i++) {
        memcpy(p, "{\"a\":", 5);
        p += 5;
    }
    *p++ = '1';
    for (i = 0; i < depth; i++)
        *p++ = '}';
    *p = '\0';
    return s;
}

/* Peak resident set size of the process, in bytes. */
static size_t peak_rss(void)
{
    struct rusage u;
    CHECK(getrusage(RUSAGE_SELF, &u) == 0);
    return (size_t)u.ru_maxrss * 1024;
}

/* Processes whose parent is this process (QEMUs left behind). */
/* Whether process `pid` is qm's watchdog (one per host process, started by the first launch
 * and alive as long as the host, like the spawner thread): its command line ends in
 * "qm-watchdog". */
static int is_qm_watchdog(const char *pid)
{
    char path[300], buf[4096];
    size_t len;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%s/cmdline", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return len >= 13 && memcmp(buf + len - 13, "\0qm-watchdog\0", 13) == 0;
}

/* Our child processes, but qm's watchdog. */
static int count_children(void)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    pid_t self = getpid();
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[512], *p;
        FILE *f;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        f = fopen(path, "r");
        if (f == NULL)
            continue;
        p = fgets(buf, sizeof buf, f) ? strrchr(buf, ')') : NULL;
        fclose(f);
        /* "pid (comm) state ppid ...": comm may hold spaces and parentheses. */
        if (p != NULL && atoi(p + 4) == self && !is_qm_watchdog(e->d_name))
            n++;
    }
    closedir(d);
    return n;
}

/* Threads of this process (/proc/self/task). */
static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* The watchdog: a call that hangs ends the binary with a message (no result line: the runner
 * counts a failure) instead of hanging the whole run. */
static const char *volatile watchdog_test = "";

/* Says what each hammer thread is in (set by the hammer; async-signal-safe). */
static void (*volatile watchdog_report)(void);

static void say(const char *s)
{
    if (write(2, s, strlen(s)) < 0)
        _exit(3);
}

static void watchdog_fired(int sig)
{
    (void)sig;
    say("\ntest_hostile: WATCHDOG: a call hung in test ");
    say(watchdog_test);
    say("\n");
    if (watchdog_report)
        watchdog_report();
    _exit(3);
}

static void watchdog(const char *test, unsigned seconds)
{
    watchdog_test = test;
    signal(SIGALRM, watchdog_fired);
    alarm(seconds);
}

/* ---- huge strings ------------------------------------------------------------------------ */

/*
 * A 64 MiB command name, and a 64 MiB argument object (valid JSON: one huge string value).
 * What QEMU does with it: it reads its QMP monitor one byte per main-loop iteration (about
 * 250 KB/s with TCG here), so a 64 MiB message would take it minutes to swallow, and its own
 * cap on JSON input (MAX_TOKEN_SIZE, 64 MiB of tokens per message in qobject/json-streamer.c:
 * "JSON token size limit exceeded") is only reached after that. So the outcome is qm's timeout: QM_ERR_TIMEOUT, promptly, in bounded
 * memory. (A smaller message that QEMU swallows in time is answered with a QMP error, which
 * qm_qmp returns as QM_OK.) The connection is left with a half-written message
 * (regression_write_timeout_desyncs_the_connection), so the machine is killed afterwards.
 */
static void huge_command_name_and_args(void)
{
    size_t n = huge_size(), rss0 = peak_rss();
    char *name = repeat("", 'c', n, "");
    char *args = repeat("{\"command-line\":\"", 'a', n, "\"}");
    char *s = NULL;
    qm_machine *m;
    qm_error *err = NULL;
    qm_status st;
    double t0;
    watchdog(__func__, 300);

    m = launch_none();
    t0 = now_ms();
    st = qm_qmp(m, name, NULL, 300, NULL, &s, &err);
    CHECK(st == QM_ERR_TIMEOUT || (st == QM_OK && strstr(s, "\"error\"") != NULL));
    CHECK(st == QM_OK || (s == NULL && qm_error_status(err) == st));
    /* The timeout counts from the start of the wait; copying and serialising 64 MiB (a debug
     * build, under a sanitizer) comes on top. */
    CHECK(now_ms() - t0 < 60000);
    qm_string_free(s);
    qm_error_free(err);
    OK(qm_kill(m, &err));
    CHECK(!qm_is_running(m));
    qm_free(m);

    m = launch_none();
    s = NULL;
    err = NULL;
    t0 = now_ms();
    st = qm_cmd(m, "human-monitor-command", args, 300, NULL, &s, &err);
    CHECK(st == QM_ERR_TIMEOUT || st == QM_OK || st == QM_ERR_QMP);
    CHECK(now_ms() - t0 < 60000);
    qm_string_free(s);
    qm_error_free(err);
    OK(qm_kill(m, &err));
    qm_free(m);

    /* Bounded memory: a few copies of the payload (the C string, the parsed value, the
     * serialised message), not a runaway. */
    CHECK(peak_rss() - rss0 < 12 * n + (128u << 20));
    free(name);
    free(args);
}

/* Huge event names, match filters, filter lists and event texts: parsed, compared, and
 * answered with the statuses of ordinary ones. */
static void huge_event_names_and_filters(void)
{
    size_t n = huge_size(), i, count = under_valgrind() ? 2000 : 20000;
    char *name = repeat("", 'E', n, "");
    char *filter = repeat("{\"data\":{\"reason\":\"", 'r', n, "\"}}");
    char *event = repeat("{\"event\":\"STOP\",\"data\":{\"reason\":\"", 'r', n, "\"}}");
    char *many = malloc(count * 40 + 64), *p = many;
    char *s = NULL;
    bool yes = false;
    qm_machine *m;
    watchdog(__func__, 300);
    CHECK(many != NULL);
    *p++ = '[';
    for (i = 0; i < count; i++)
        p += sprintf(p, "%s{\"name\":\"E%zu\",\"match\":null}", i ? "," : "", i);
    strcpy(p, ",{\"name\":\"STOP\"}]");

    OK(qm_event_match(event, filter, &yes, &err));
    CHECK(yes);
    OK(qm_event_match("{\"event\":\"STOP\",\"data\":{\"reason\":\"r\"}}", filter, &yes, &err));
    CHECK(!yes);

    m = launch_none();
    s = cmd_ok(m, "stop", NULL);
    qm_string_free(s);
    s = (char *)1;
    /* Nothing matches: a zero wait looks, a short one times out; STOP stays queued. */
    OK(qm_event_wait(m, name, NULL, 0, NULL, &s, &err));
    CHECK(s == NULL);
    FAILS(QM_ERR_TIMEOUT, qm_event_wait(m, "STOP", filter, 20, NULL, &s, &err));
    CHECK(s == NULL);
    /* A long list of filters, the last one matching. */
    OK(qm_events_wait(m, many, 5000, NULL, &s, &err));
    CHECK_HAS(s, "\"event\":\"STOP\"");
    qm_string_free(s);
    s = NULL;
    /* A filter list holding one huge name (and RESUME). */
    free(many);
    many = repeat("[{\"name\":\"", 'E', n, "\"},{\"name\":\"RESUME\"}]");
    s = cmd_ok(m, "cont", NULL);
    qm_string_free(s);
    OK(qm_events_wait(m, many, 5000, NULL, &s, &err));
    CHECK_HAS(s, "RESUME");
    qm_string_free(s);
    shutdown_free(m);
    free(name);
    free(filter);
    free(event);
    free(many);
}

/* A launch that must fail: QM_ERR_LAUNCH with its cause, an error object that agrees, and
 * nothing left running. */
static void check_launch_fails(qm_machine *m, qm_status cause)
{
    qm_error *err = NULL;
    CHECK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err) == QM_ERR_LAUNCH);
    CHECK(qm_error_status(err) == QM_ERR_LAUNCH);
    CHECK(qm_error_message(err) != NULL);
    /* Under valgrind a failed execve ends the child with valgrind's own exit code (101): the
     * cause is then QEMU "exiting" before QMP rather than the exec's errno. */
    if (cause != QM_OK && !under_valgrind())
        CHECK(qm_error_cause(err) == cause);
    else
        CHECK(qm_error_cause(err) != QM_OK);
    qm_error_free(err);
    CHECK(!qm_is_running(m));
    CHECK(qm_pid(m) == -1);
    CHECK(count_children() == 0);
}

/* Huge names, arguments, wrappers and paths in the configuration: accepted (they are just
 * strings), read back intact, and at launch a clear QM_ERR_LAUNCH (E2BIG, ENAMETOOLONG, a socket
 * path over 107 bytes ...), never a crash or a process left behind. */
static void huge_configuration(void)
{
    /* Fewer arguments under valgrind, where copying 200000 strings a few times takes long. */
    size_t n = huge_size(), many_n = under_valgrind() ? 20000 : 200000, i;
    char *huge = repeat("", 'x', n, "");
    /* 1 MiB (256 KiB under valgrind) is far beyond every limit on the way (a file name's 255
     * bytes, PATH_MAX, 108 bytes of a socket path, 249 of a memfd name, 128 KiB of one execve
     * argument) and keeps the many copies a launch makes cheap. */
    size_t b = under_valgrind() ? 256u << 10 : 1u << 20;
    char *big = repeat("", 'b', b, "");
    char *bigpath = repeat("/nonexistent-qm/", 'b', b, "");
    char *name = repeat("vm-", 'n', b, "");
    char *dir = make_temp_dir(), *s = NULL;
    const char **many = malloc(many_n * sizeof *many);
    const char *one[1];
    qm_machine *m;
    int code = 0, fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    watchdog(__func__, 300);
    CHECK(many != NULL && fd >= 0);
    for (i = 0; i < many_n; i++)
        many[i] = "-no-such-option-for-qm";

    /* A huge machine name: the in-memory log's name is too long (memfd_create: EINVAL). */
    m = new_none();
    OK(qm_set_name(m, name, &err));
    OK(qm_get_name(m, &s, &err));
    CHECK(strlen(s) == strlen(name));
    qm_string_free(s);
    check_launch_fails(m, QM_ERR_IO);
    /* ... and its log file name is too long (ENAMETOOLONG). */
    OK(qm_set_log_dir(m, dir, &err));
    check_launch_fails(m, QM_ERR_IO);
    /* ... and so is the unix socket path made from it. */
    OK(qm_set_monitor_unix(m, NULL, &err));
    OK(qm_set_sock_dir(m, dir, &err));
    check_launch_fails(m, QM_ERR_INVALID);
    /* The same handle launches once the name is sane. */
    OK(qm_set_name(m, "hostile-sane", &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    shutdown_free(m);

    /* One huge argument: execve fails with E2BIG. The error keeps it whole. */
    m = new_none();
    one[0] = huge;
    OK(qm_add_args(m, one, 1, &err));
    {
        qm_error *err = NULL;
        CHECK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err) == QM_ERR_LAUNCH);
        CHECK(under_valgrind() || qm_error_cause(err) == QM_ERR_IO);
        CHECK(under_valgrind() || (qm_error_os_code(err, &code) && code == E2BIG));
        CHECK(strlen(qm_error_command(err)) > n);
        qm_error_free(err);
    }
    qm_free(m);

    /* The getters give a big argument back whole (the 64 MiB one too, slowly: serialising
     * 64 MiB of JSON takes seconds in a debug build under a sanitizer). */
    m = new_none();
    one[0] = big;
    OK(qm_add_args(m, one, 1, &err));
    OK(qm_get_args(m, &s, &err));
    CHECK(strlen(s) == strlen(big) + 4); /* ["..."] */
    qm_string_free(s);
    check_launch_fails(m, QM_ERR_IO);
    OK(qm_get_command_line(m, &s, &err));
    CHECK(strlen(s) > strlen(big));
    qm_string_free(s);
    qm_free(m);

    /* A huge argument list (200000 arguments, 6 MB with the pointers: E2BIG, or QEMU
     * rejecting the first one if the stack limit allows that much). */
    m = new_none();
    OK(qm_add_args(m, many, many_n, &err));
    check_launch_fails(m, QM_OK);
    qm_free(m);

    /* Huge wrappers: a huge program name, and a huge wrapper list. (Under valgrind the name
     * has a slash: glibc's execvp truncates a name looked up in PATH to NAME_MAX bytes without
     * a terminating NUL, in the child, which valgrind reports; the kernel refuses it anyway.) */
    m = new_none();
    one[0] = under_valgrind() ? bigpath : big;
    OK(qm_set_wrapper(m, one, 1, &err));
    check_launch_fails(m, QM_ERR_IO);
    OK(qm_get_command_line(m, &s, &err));
    CHECK(strlen(s) > strlen(big));
    qm_string_free(s);
    OK(qm_set_wrapper(m, many, many_n, &err));
    check_launch_fails(m, QM_ERR_IO);
    OK(qm_set_wrapper(m, NULL, 0, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    shutdown_free(m);

    /* A huge binary, machine type, console device and -add-fd opaque. */
    OK(qm_new(under_valgrind() ? bigpath : big, &m, &err));
    OK(qm_get_binary(m, &s, &err));
    CHECK(strlen(s) >= strlen(big));
    qm_string_free(s);
    check_launch_fails(m, QM_ERR_IO);
    qm_free(m);
    m = new_none();
    OK(qm_set_machine(m, big, &err));
    check_launch_fails(m, QM_ERR_IO);
    OK(qm_set_machine(m, "none", &err));
    OK(qm_set_console(m, big, 0, &err));
    check_launch_fails(m, QM_ERR_IO);
    OK(qm_set_console(m, NULL, 0, &err));
    OK(qm_add_fd(m, fd, 1, big, NULL, &err));
    check_launch_fails(m, QM_ERR_IO);
    qm_free(m);

    /* Huge paths and host names: each fails where it is used. */
    m = new_none();
    OK(qm_set_console(m, NULL, 0, &err));
    OK(qm_set_log_dir(m, name, &err));
    check_launch_fails(m, QM_ERR_IO);
    OK(qm_set_log_dir(m, dir, &err));
    OK(qm_set_monitor_tcp(m, name, 0, &err));
    check_launch_fails(m, QM_ERR_IO);
    OK(qm_set_monitor_unix(m, name, &err));
    check_launch_fails(m, QM_ERR_INVALID);
    OK(qm_set_monitor_socketpair(m, &err));
    OK(qm_set_base_temp_dir(m, name, &err));
    FAILS(QM_ERR_IO, qm_get_temp_dir(m, &s, &err));
    OK(qm_set_sock_dir(m, name, &err));
    OK(qm_get_sock_dir(m, &s, &err));
    CHECK(strlen(s) == strlen(name));
    qm_string_free(s);
    s = NULL;
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err)); /* a socketpair monitor needs none of those directories */
    FAILS(QM_ERR_IO, qm_send_file_scm(m, name, &err));
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    /* Last (a launch that fails before QEMU runs after one that ran trips
     * regression_failed_launch_keeps_the_previous_exit_code): the console log is opened once
     * QEMU runs, so this one is killed. */
    OK(qm_set_console_log(m, name, &err));
    check_launch_fails(m, QM_ERR_IO);
    qm_free(m);

    /* The test guest's helpers. */
    FAILS(QM_ERR_IO, qm_guest_write_image(name, "x", QM_GUEST_HALT, 0, &err));
    INVALID(qm_guest_write_image("/dev/null", big, QM_GUEST_HALT, 0, &err), "banner");
    OK(qm_guest_qemu_args(big, &s, &err));
    CHECK(strlen(s) > strlen(big));
    qm_string_free(s);

    CHECK(count_children() == 0);
    close(fd);
    remove_dir(dir);
    free(dir);
    free(many);
    free(name);
    free(big);
    free(bigpath);
    free(huge);
}

/* ---- JSON of the wrong shape -------------------------------------------------------------- */

/* Every JSON parameter rejects what test_api.c does not try: trailing data, non-finite and
 * out-of-range numbers, lone surrogates, raw control characters, a byte-order mark, nesting
 * deeper than the parser's limit (a million levels: no stack overflow), and every wrong shape
 * of a filter list. Checked before anything is sent, so an unlaunched machine will do. */
static void json_of_the_wrong_shape(void)
{
    qm_machine *m = new_none();
    char *s = NULL, *deep = nested(1000000), *deep_filter;
    bool yes = true;
    size_t i;
    static const char *const not_json[] = {
        "{} {}", "{}x", "{\"a\":NaN}", "{\"a\":Infinity}", "{\"a\":1e999}", "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\x01\"}", "\xef\xbb\xbf{}", "   ", "{'a':1}", "{\"a\":1,}", "{\"a\" 1}", "nul",
    };
    static const char *const not_object[] = {
        "true", "false", "0", "-1.5", "\"null\"", "[]", "[{}]",
    };
    static const struct {
        const char *json, *needle;
    } bad_filters[] = {
        {"null", "must be a JSON array"},
        {"\"STOP\"", "must be a JSON array"},
        {"5", "must be a JSON array"},
        {"[null]", "element 0 is null"},
        {"[[]]", "element 0 is an array"},
        {"[\"STOP\"]", "element 0 is a string"},
        {"[{}]", "element 0 needs a string \"name\""},
        {"[{\"name\":null}]", "element 0 needs a string \"name\""},
        {"[{\"name\":5}]", "element 0 needs a string \"name\""},
        {"[{\"name\":[\"STOP\"]}]", "element 0 needs a string \"name\""},
        {"[{\"name\":\"A\",\"match\":[1]}]", "\"match\" is an array"},
        {"[{\"name\":\"A\",\"match\":\"x\"}]", "\"match\" is a string"},
        {"[{\"name\":\"A\",\"match\":true}]", "\"match\" is a boolean"},
        {"[{\"name\":\"A\"},1]", "element 1 is a number"},
        {"[{\"name\":\"A\",\"name\":\"B\",\"Name\":\"C\"}]", "unknown key"},
    };
    watchdog(__func__, 60);

    for (i = 0; i < sizeof not_json / sizeof *not_json; i++) {
        const char *bad = not_json[i];
        INVALID(qm_qmp(m, "query-status", bad, 0, NULL, &s, &err), "args_json is not valid JSON");
        INVALID(qm_cmd(m, "query-status", bad, 0, NULL, &s, &err), "args_json is not valid JSON");
        INVALID(qm_event_wait(m, "STOP", bad, 0, NULL, &s, &err), "match_json is not valid JSON");
        INVALID(qm_events_wait(m, bad, 0, NULL, &s, &err), "filters_json");
        INVALID(qm_event_match(bad, NULL, &yes, &err), "event_json is not valid JSON");
        INVALID(qm_event_match("{}", bad, &yes, &err), "match_json is not valid JSON");
    }
    for (i = 0; i < sizeof not_object / sizeof *not_object; i++) {
        const char *bad = not_object[i];
        INVALID(qm_qmp(m, "query-status", bad, 0, NULL, &s, &err), "args_json must be a JSON");
        INVALID(qm_event_wait(m, "STOP", bad, 0, NULL, &s, &err), "match_json must be a JSON");
        /* qm_event_match takes any JSON text: an answer, not an error. */
        OK(qm_event_match(bad, bad, &yes, &err));
    }
    for (i = 0; i < sizeof bad_filters / sizeof *bad_filters; i++)
        INVALID(qm_events_wait(m, bad_filters[i].json, 0, NULL, &s, &err), bad_filters[i].needle);

    /* A million levels of nesting: the parser's depth limit, not a stack overflow. */
    INVALID(qm_qmp(m, "query-status", deep, 0, NULL, &s, &err), "recursion limit");
    INVALID(qm_event_wait(m, "STOP", deep, 0, NULL, &s, &err), "recursion limit");
    INVALID(qm_event_match(deep, NULL, &yes, &err), "recursion limit");
    INVALID(qm_event_match("{}", deep, &yes, &err), "recursion limit");
    deep_filter = concat("[{\"name\":\"STOP\",\"match\":", deep, "}]");
    INVALID(qm_events_wait(m, deep_filter, 0, NULL, &s, &err), "recursion limit");
    memset(deep, '[', 1000000);
    memset(deep + 1000000, ']', 1000000);
    deep[2000000] = '\0';
    INVALID(qm_event_match(deep, deep, &yes, &err), "recursion limit");

    /* Whitespace around null is still null (no arguments, any event). */
    FAILS(QM_ERR_STATE, qm_qmp(m, "query-status", "  null\n", 0, NULL, &s, &err));
    FAILS(QM_ERR_STATE, qm_event_wait(m, "STOP", "\tnull ", 0, NULL, &s, &err));
    CHECK(s == NULL);
    qm_free(m);
    free(deep);
    free(deep_filter);
}

/* Odd but valid JSON and odd command names reach QEMU, which answers each with a QMP error;
 * qm passes it on and the connection stays in step (each caller gets its own reply). */
static void odd_but_valid_json_reaches_qemu(void)
{
    qm_machine *m = launch_none();
    char *s = NULL, *deep = nested(100), *long_key = repeat("{\"", 'k', 100000, "\":1}");
    static const char *const odd_args[] = {
        "{\"\":1}", "{\"id\":5}", "{\"arguments\":{}}", "{\"execute\":\"quit\"}",
        "{\"a\":1e308}", "{\"a\":123456789012345678901234567890}", "{\"a\":\"\\u0000\"}",
        "{\"a\":1,\"a\":2}", "{\"a\":\"\xf0\x9f\x98\x80\"}",
    };
    static const char *const odd_names[] = {
        "", " ", "query-status ", "query-status\nquit", "quit\"}", "\\", "\xc3\xa9",
        "qmp_capabilities",
    };
    size_t i;
    watchdog(__func__, 60);
    for (i = 0; i < sizeof odd_args / sizeof *odd_args; i++)
        FAILS(QM_ERR_QMP, qm_cmd(m, "query-status", odd_args[i], 10000, NULL, &s, &err));
    FAILS(QM_ERR_QMP, qm_cmd(m, "query-status", deep, 10000, NULL, &s, &err));
    FAILS(QM_ERR_QMP, qm_cmd(m, "query-status", long_key, 10000, NULL, &s, &err));
    for (i = 0; i < sizeof odd_names / sizeof *odd_names; i++)
        FAILS(QM_ERR_QMP, qm_cmd(m, odd_names[i], NULL, 10000, NULL, &s, &err));
    CHECK(s == NULL);
    /* A NUL in a reply (escaped in JSON) survives as an escape. */
    s = cmd_ok(m, "human-monitor-command", "{\"command-line\":\"a\\u0000b\"}");
    CHECK_HAS(s, "\\u0000");
    qm_string_free(s);
    s = cmd_ok(m, "query-status", NULL);
    CHECK_HAS(s, "\"status\":\"running\"");
    qm_string_free(s);
    CHECK(qm_is_running(m));
    shutdown_free(m);
    free(deep);
    free(long_key);
}

/* ---- every call in every state ------------------------------------------------------------- */

enum state { NEW, RUNNING, SHUT, KILLED, FAILED_SPAWN, FAILED_RAN, QMP_OFF, NSTATES };
static const char *const state_names[NSTATES] = {
    "never launched", "running", "shut down", "killed", "launch failed (no binary)",
    "launch failed (QEMU exited)", "running, QMP off",
};

/* Not called in that state (it would change the state; covered elsewhere). */
#define SKIP ((qm_status)-1)
/* QM_ERR_STATE, as documented; QM_ERR_DISCONNECTED is accepted here until
 * regression_command_after_shutdown_is_state_not_disconnected is fixed (that test fails meanwhile). */
#define SD ((qm_status)-2)

static int devnull_fd = -1;
static char hygiene[512];

/* Checks what a call left behind: outputs only on success, an error object agreeing with the
 * status. Returns the status. */
static qm_status seen(const char *call, qm_status st, qm_error *err, const void *out_on_error)
{
    if (hygiene[0] == '\0') {
        if (st == QM_OK && err != NULL)
            snprintf(hygiene, sizeof hygiene, "%s: an error object came with QM_OK", call);
        else if (st != QM_OK && (err == NULL || qm_error_status(err) != st ||
                                 qm_error_message(err) == NULL || !qm_error_message(err)[0]))
            snprintf(hygiene, sizeof hygiene, "%s: the error object disagrees with %s", call,
                     status_name(st));
        else if (st != QM_OK && out_on_error != NULL)
            snprintf(hygiene, sizeof hygiene, "%s: an output was written with %s", call,
                     status_name(st));
    }
    qm_error_free(err);
    return st;
}

/* One call, its output freed. */
#define STR_CALL(call)                                                                           \
    do {                                                                                         \
        char *s = NULL;                                                                          \
        qm_error *err = NULL;                                                                    \
        qm_status st = (call);                                                                   \
        st = seen(#call, st, err, s);                                                            \
        qm_string_free(s);                                                                       \
        return st;                                                                               \
    } while (0)
#define PLAIN_CALL(call)                                                                         \
    do {                                                                                         \
        qm_error *err = NULL;                                                                    \
        qm_status st = (call);                                                                   \
        return seen(#call, st, err, NULL);                                                       \
    } while (0)

static qm_cancel *fired_token;

static qm_status c_launch(qm_machine *m)
{
    PLAIN_CALL(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
}
static qm_status c_qmp(qm_machine *m)
{
    STR_CALL(qm_qmp(m, "query-status", NULL, 10000, NULL, &s, &err));
}
static qm_status c_cmd(qm_machine *m)
{
    STR_CALL(qm_cmd(m, "query-status", "{}", QM_WAIT_DEFAULT, NULL, &s, &err));
}
static qm_status c_cmd_error(qm_machine *m)
{
    STR_CALL(qm_cmd(m, "no-such-command", NULL, 10000, NULL, &s, &err));
}
static qm_status c_cmd_fired(qm_machine *m)
{
    STR_CALL(qm_cmd(m, "query-status", NULL, QM_WAIT_FOREVER, fired_token, &s, &err));
}
static qm_status c_wait_fired(qm_machine *m)
{
    STR_CALL(qm_event_wait(m, "STOP", NULL, QM_WAIT_FOREVER, fired_token, &s, &err));
}
static qm_status c_send_fd(qm_machine *m)
{
    PLAIN_CALL(qm_send_fd_scm(m, devnull_fd, &err));
}
static qm_status c_send_file(qm_machine *m)
{
    PLAIN_CALL(qm_send_file_scm(m, "/dev/null", &err));
}
static qm_status c_event_look(qm_machine *m)
{
    STR_CALL(qm_event_get(m, 0, NULL, &s, &err));
}
static qm_status c_event_get(qm_machine *m)
{
    STR_CALL(qm_event_get(m, 20, NULL, &s, &err));
}
static qm_status c_events_look(qm_machine *m)
{
    STR_CALL(qm_events_get(m, 0, NULL, &s, &err));
}
static qm_status c_events_get(qm_machine *m)
{
    STR_CALL(qm_events_get(m, 20, NULL, &s, &err));
}
static qm_status c_wait_look(qm_machine *m)
{
    STR_CALL(qm_event_wait(m, "NEVER", NULL, 0, NULL, &s, &err));
}
static qm_status c_wait(qm_machine *m)
{
    STR_CALL(qm_event_wait(m, "NEVER", "{}", 20, NULL, &s, &err));
}
static qm_status c_waits_look(qm_machine *m)
{
    STR_CALL(qm_events_wait(m, "[{\"name\":\"NEVER\"}]", 0, NULL, &s, &err));
}
static qm_status c_waits(qm_machine *m)
{
    STR_CALL(qm_events_wait(m, "[{\"name\":\"NEVER\"}]", 20, NULL, &s, &err));
}
static qm_status c_clear(qm_machine *m)
{
    PLAIN_CALL(qm_events_clear(m, &err));
}
static qm_status c_console_fd(qm_machine *m)
{
    int fd = -1;
    qm_error *err = NULL;
    qm_status st = qm_console_fd(m, &fd, &err);
    return seen("qm_console_fd", st, err, fd == -1 ? NULL : &fd);
}
static qm_status c_console_dup(qm_machine *m)
{
    int fd = -1;
    qm_error *err = NULL;
    qm_status st = qm_console_dup(m, &fd, &err);
    st = seen("qm_console_dup", st, err, fd == -1 ? NULL : &fd);
    if (fd >= 0)
        close(fd);
    return st;
}
static qm_status c_get_log(qm_machine *m)
{
    STR_CALL(qm_get_log(m, &s, &err));
}
static qm_status c_temp_dir(qm_machine *m)
{
    STR_CALL(qm_get_temp_dir(m, &s, &err));
}
static qm_status c_log_dir(qm_machine *m)
{
    STR_CALL(qm_get_log_dir(m, &s, &err));
}
static qm_status c_sock_dir(qm_machine *m)
{
    STR_CALL(qm_get_sock_dir(m, &s, &err));
}
static qm_status c_name(qm_machine *m)
{
    STR_CALL(qm_get_name(m, &s, &err));
}
static qm_status c_binary(qm_machine *m)
{
    STR_CALL(qm_get_binary(m, &s, &err));
}
static qm_status c_args(qm_machine *m)
{
    STR_CALL(qm_get_args(m, &s, &err));
}
static qm_status c_command_line(qm_machine *m)
{
    STR_CALL(qm_get_command_line(m, &s, &err));
}
/* Configuration applies to the next launch, in any state (no machine here is launched again). */
static qm_status c_add_args(qm_machine *m)
{
    PLAIN_CALL(qm_add_args(m, NULL, 0, &err));
}
static qm_status c_set_timer(qm_machine *m)
{
    PLAIN_CALL(qm_set_qmp_timer(m, 30000, &err));
}
static qm_status c_set_max(qm_machine *m)
{
    PLAIN_CALL(qm_set_max_message_size(m, 64u << 20, &err));
}
static qm_status c_set_drain(qm_machine *m)
{
    PLAIN_CALL(qm_set_drain_console(m, false, &err));
}
static qm_status c_set_console(qm_machine *m)
{
    PLAIN_CALL(qm_set_console(m, NULL, 0, &err));
}
static qm_status c_set_machine(qm_machine *m)
{
    PLAIN_CALL(qm_set_machine(m, "none", &err));
}
static qm_status c_set_base(qm_machine *m)
{
    PLAIN_CALL(qm_set_base_temp_dir(m, "/var/tmp", &err));
}
static qm_status c_set_wrapper(qm_machine *m)
{
    PLAIN_CALL(qm_set_wrapper(m, NULL, 0, &err));
}
static qm_status c_set_sock_dir(qm_machine *m)
{
    PLAIN_CALL(qm_set_sock_dir(m, "/tmp", &err));
}
static qm_status c_set_log_dir(qm_machine *m)
{
    PLAIN_CALL(qm_set_log_dir(m, "/tmp", &err));
}
static qm_status c_set_pair(qm_machine *m)
{
    PLAIN_CALL(qm_set_monitor_socketpair(m, &err));
}
static qm_status c_set_unix(qm_machine *m)
{
    PLAIN_CALL(qm_set_monitor_unix(m, NULL, &err));
}
static qm_status c_set_tcp(qm_machine *m)
{
    PLAIN_CALL(qm_set_monitor_tcp(m, "127.0.0.1", 0, &err));
}
static qm_status c_set_console_log(qm_machine *m)
{
    PLAIN_CALL(qm_set_console_log(m, NULL, &err));
}
static qm_status c_set_qmp(qm_machine *m)
{
    PLAIN_CALL(qm_set_qmp_monitor(m, true, &err));
}
static qm_status c_monitor_null(qm_machine *m)
{
    PLAIN_CALL(qm_add_monitor_null(m, &err));
}
static qm_status c_add_fd(qm_machine *m)
{
    PLAIN_CALL(qm_add_fd(m, devnull_fd, 7, "o", NULL, &err));
}
static qm_status c_set_name(qm_machine *m)
{
    char *name = NULL;
    qm_error *err = NULL;
    qm_status st = qm_get_name(m, &name, NULL);
    if (st == QM_OK) {
        st = qm_set_name(m, name, &err); /* the same name: changes nothing */
        st = seen("qm_set_name", st, err, NULL);
    }
    qm_string_free(name);
    return st;
}
/* Teardown: harmless when not launched (in the running states it would end the machine). */
static qm_status c_shutdown(qm_machine *m)
{
    PLAIN_CALL(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
}
static qm_status c_shutdown_fired(qm_machine *m)
{
    PLAIN_CALL(qm_shutdown(m, false, QM_WAIT_FOREVER, fired_token, &err));
}
static qm_status c_hard(qm_machine *m)
{
    PLAIN_CALL(qm_shutdown(m, true, 0, NULL, &err));
}
static qm_status c_kill(qm_machine *m)
{
    PLAIN_CALL(qm_kill(m, &err));
}
static qm_status c_wait_exit(qm_machine *m)
{
    PLAIN_CALL(qm_wait(m, 0, NULL, &err));
}

#define O QM_OK
#define ST QM_ERR_STATE
#define DC QM_ERR_DISCONNECTED
#define TO QM_ERR_TIMEOUT
#define IN QM_ERR_INTERRUPTED
#define QE QM_ERR_QMP

static const struct row {
    const char *name;
    qm_status (*call)(qm_machine *m);
    /* NEW, RUNNING, SHUT, KILLED, FAILED_SPAWN, FAILED_RAN, QMP_OFF */
    qm_status want[NSTATES];
} table[] = {
    /* A launched machine cannot be launched again (the others would launch: test_launch.c). */
    {"qm_launch", c_launch, {SKIP, ST, SKIP, SKIP, SKIP, SKIP, ST}},
    /* Commands need a live QMP connection: QM_ERR_STATE otherwise (QMP off included). */
    {"qm_qmp", c_qmp, {ST, O, ST, ST, ST, SD, ST}},
    {"qm_cmd", c_cmd, {ST, O, ST, ST, ST, SD, ST}},
    {"qm_cmd (QMP error)", c_cmd_error, {ST, QE, ST, ST, ST, SD, ST}},
    {"qm_send_fd_scm", c_send_fd, {ST, O, ST, ST, ST, SD, ST}},
    {"qm_send_file_scm", c_send_file, {ST, O, ST, ST, ST, SD, ST}},
    /* A token that fired interrupts before anything is looked at, in every state. */
    {"qm_cmd (fired token)", c_cmd_fired, {IN, IN, IN, IN, IN, IN, IN}},
    {"qm_event_wait (fired token)", c_wait_fired, {IN, IN, IN, IN, IN, IN, IN}},
    /* Events: QM_ERR_STATE before a connection ever existed; afterwards a zero wait looks
     * (what was queued stays readable) and a real wait says the connection is gone. */
    {"qm_event_get (0)", c_event_look, {ST, O, O, O, ST, O, ST}},
    {"qm_event_get (20 ms)", c_event_get, {ST, TO, DC, DC, ST, DC, ST}},
    {"qm_events_get (0)", c_events_look, {ST, O, O, O, ST, O, ST}},
    {"qm_events_get (20 ms)", c_events_get, {ST, TO, DC, DC, ST, DC, ST}},
    {"qm_event_wait (0)", c_wait_look, {ST, O, O, O, ST, O, ST}},
    {"qm_event_wait (20 ms)", c_wait, {ST, TO, DC, DC, ST, DC, ST}},
    {"qm_events_wait (0)", c_waits_look, {ST, O, O, O, ST, O, ST}},
    {"qm_events_wait (20 ms)", c_waits, {ST, TO, DC, DC, ST, DC, ST}},
    {"qm_events_clear", c_clear, {O, O, O, O, O, O, O}},
    /* The console exists while launched (every machine here has one configured). */
    {"qm_console_fd", c_console_fd, {ST, O, ST, ST, ST, ST, O}},
    {"qm_console_dup", c_console_dup, {ST, O, ST, ST, ST, ST, O}},
    /* Getters and configuration work in every state. */
    {"qm_get_log", c_get_log, {O, O, O, O, O, O, O}},
    {"qm_get_temp_dir", c_temp_dir, {O, O, O, O, O, O, O}},
    {"qm_get_log_dir", c_log_dir, {O, O, O, O, O, O, O}},
    {"qm_get_sock_dir", c_sock_dir, {O, O, O, O, O, O, O}},
    {"qm_get_name", c_name, {O, O, O, O, O, O, O}},
    {"qm_get_binary", c_binary, {O, O, O, O, O, O, O}},
    {"qm_get_args", c_args, {O, O, O, O, O, O, O}},
    {"qm_get_command_line", c_command_line, {O, O, O, O, O, O, O}},
    {"qm_add_args", c_add_args, {O, O, O, O, O, O, O}},
    {"qm_set_qmp_timer", c_set_timer, {O, O, O, O, O, O, O}},
    {"qm_set_max_message_size", c_set_max, {O, O, O, O, O, O, O}},
    {"qm_set_drain_console", c_set_drain, {O, O, O, O, O, O, O}},
    {"qm_set_console", c_set_console, {O, O, O, O, O, O, O}},
    {"qm_set_machine", c_set_machine, {O, O, O, O, O, O, O}},
    {"qm_set_base_temp_dir", c_set_base, {O, O, O, O, O, O, O}},
    {"qm_set_wrapper", c_set_wrapper, {O, O, O, O, O, O, O}},
    {"qm_set_name", c_set_name, {O, O, O, O, O, O, O}},
    {"qm_set_sock_dir", c_set_sock_dir, {O, O, O, O, O, O, O}},
    {"qm_set_log_dir", c_set_log_dir, {O, O, O, O, O, O, O}},
    {"qm_set_monitor_unix", c_set_unix, {O, O, O, O, O, O, O}},
    {"qm_set_monitor_tcp", c_set_tcp, {O, O, O, O, O, O, O}},
    {"qm_set_monitor_socketpair", c_set_pair, {O, O, O, O, O, O, O}},
    {"qm_set_console_log", c_set_console_log, {O, O, O, O, O, O, O}},
    {"qm_set_qmp_monitor", c_set_qmp, {O, O, O, O, O, O, O}},
    {"qm_add_monitor_null", c_monitor_null, {O, O, O, O, O, O, O}},
    {"qm_add_fd", c_add_fd, {O, O, O, O, O, O, O}},
    /* Ending a machine that is not launched succeeds and does nothing, also with a fired
     * token; a second time too (each row runs after the previous ones). */
    {"qm_shutdown", c_shutdown, {O, SKIP, O, O, O, O, SKIP}},
    {"qm_shutdown (fired token)", c_shutdown_fired, {O, SKIP, O, O, O, O, SKIP}},
    {"qm_shutdown (hard)", c_hard, {O, SKIP, O, O, O, O, SKIP}},
    {"qm_kill", c_kill, {O, SKIP, O, O, O, O, SKIP}},
    {"qm_wait", c_wait_exit, {O, SKIP, O, O, O, O, SKIP}},
};

/* A machine in each state, each with a console configured. */
static qm_machine *machine_in(enum state st)
{
    qm_machine *m = NULL;
    const char *bad[] = {"-no-such-option-for-qm"};
    if (st == FAILED_SPAWN) {
        OK(qm_new("/nonexistent/qemu-system-x86_64", &m, &err));
        OK(qm_set_machine(m, "none", &err));
    } else {
        m = new_none();
    }
    OK(qm_set_console(m, NULL, 0, &err));
    switch (st) {
    case NEW:
        break;
    case RUNNING:
        OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
        break;
    case SHUT:
        OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
        OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
        break;
    case KILLED:
        OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
        OK(qm_kill(m, &err));
        break;
    case FAILED_SPAWN:
        FAILS(QM_ERR_LAUNCH, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
        break;
    case FAILED_RAN:
        OK(qm_add_args(m, bad, 1, &err));
        FAILS(QM_ERR_LAUNCH, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
        break;
    case QMP_OFF:
        OK(qm_set_qmp_monitor(m, false, &err));
        OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
        break;
    case NSTATES:
        break;
    }
    return m;
}

static void every_call_in_every_state(void)
{
    qm_machine *m[NSTATES];
    size_t r;
    int s, mismatches = 0, code;
    char *log;
    watchdog(__func__, 120);
    devnull_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(devnull_fd >= 0);
    fired_token = qm_cancel_new();
    qm_cancel_fire(fired_token);
    /* The failed spawn first, while no QEMU runs: under valgrind its child reports the memory
     * of the other threads (qm's exit watchers) as lost when it exits after the failed exec. */
    m[FAILED_SPAWN] = machine_in(FAILED_SPAWN);
    for (s = 0; s < NSTATES; s++)
        if (s != FAILED_SPAWN)
            m[s] = machine_in((enum state)s);

    /* The state queries. */
    for (s = 0; s < NSTATES; s++) {
        bool running = s == RUNNING || s == QMP_OFF;
        bool exited = s == SHUT || s == KILLED || s == FAILED_RAN;
        code = 12345;
        if (qm_is_running(m[s]) != running || (qm_pid(m[s]) > 0) != running ||
            qm_exit_code(m[s], &code) != exited || (!exited && code != 12345)) {
            fprintf(stderr, "state %s: is_running %d, pid %lld, exit_code %d (%d)\n",
                    state_names[s], qm_is_running(m[s]), (long long)qm_pid(m[s]),
                    qm_exit_code(m[s], NULL), code);
            mismatches++;
        }
        log = (char *)1;
        OK(qm_get_log(m[s], &log, &err));
        /* The log is read back when a run ends (a spawn that failed has an empty one). */
        if ((log != NULL) != (exited || s == FAILED_SPAWN)) {
            fprintf(stderr, "state %s: log %s\n", state_names[s], log ? "present" : "absent");
            mismatches++;
        }
        qm_string_free(log);
    }

    for (r = 0; r < sizeof table / sizeof *table; r++)
        for (s = 0; s < NSTATES; s++) {
            qm_status got;
            if (table[r].want[s] == SKIP)
                continue;
            hygiene[0] = '\0';
            got = table[r].call(m[s]);
            if (got != table[r].want[s] &&
                !(table[r].want[s] == SD && (got == QM_ERR_STATE || got == QM_ERR_DISCONNECTED))) {
                fprintf(stderr, "%s in state \"%s\": want %s, got %s\n", table[r].name,
                        state_names[s],
                        table[r].want[s] == SD ? "QM_ERR_STATE" : status_name(table[r].want[s]),
                        status_name(got));
                mismatches++;
            }
            if (hygiene[0] != '\0') {
                fprintf(stderr, "%s in state \"%s\": %s\n", table[r].name, state_names[s], hygiene);
                mismatches++;
            }
        }
    /* The states were left as they were: the running ones still run and answer. */
    if (qm_qmp(m[RUNNING], "query-status", NULL, 10000, NULL, &log, NULL) != QM_OK ||
        !qm_is_running(m[QMP_OFF])) {
        fprintf(stderr, "the running machines did not survive the table\n");
        mismatches++;
    } else {
        qm_string_free(log);
    }
    /* Cleaned up before checking, so a failure here leaves no QEMU to the next tests. */
    for (s = 0; s < NSTATES; s++) {
        if (qm_shutdown(m[s], false, 10000, NULL, NULL) != QM_OK)
            mismatches++;
        qm_free(m[s]);
    }
    qm_cancel_free(fired_token);
    close(devnull_fd);
    CHECK(mismatches == 0);
    CHECK(count_children() == 0);
}

/* ---- the hammer -------------------------------------------------------------------------- */

#define HAMMER_THREADS 16
#define B(s) (1u << (s))
#define NSTATUS 12

/* How the teardown thread ends the machine in the middle of the hammering. */
enum variant {
    V_SHUTDOWN,   /* qm_shutdown, graceful */
    V_KILL,       /* qm_kill */
    V_HARD,       /* qm_shutdown, hard */
    V_WAIT,       /* qm_wait, 100 ms: QEMU does not exit by itself, so it is killed */
    V_CANCELLED,  /* qm_shutdown, graceful, its token fired by the canceller thread */
    V_DOUBLE,     /* qm_shutdown and qm_kill from two threads at once */
    V_RELAUNCH,   /* qm_shutdown, qm_launch, then qm_kill, all while the others hammer */
    V_QUIT,       /* quit by hand (QEMU exits by itself), then qm_wait */
    NVARIANTS
};
static const char *const variant_names[NVARIANTS] = {
    "shutdown", "kill", "hard shutdown", "wait (times out)", "cancelled shutdown",
    "shutdown + kill", "shutdown, relaunch, kill", "quit by hand + wait",
};

enum role {
    COMMANDS, STOP_CONT, TIMED_WAITS, TOKEN_WAITS, FOREVER_WAIT, CANCELLER, MISC, TEARDOWN, SECOND,
};
static const enum role roles[HAMMER_THREADS] = {
    COMMANDS, COMMANDS, COMMANDS, COMMANDS, COMMANDS, STOP_CONT, STOP_CONT, TIMED_WAITS,
    TIMED_WAITS, TOKEN_WAITS, TOKEN_WAITS, FOREVER_WAIT, CANCELLER, MISC, TEARDOWN, SECOND,
};

struct hammer {
    qm_machine *m;
    enum variant variant;
    atomic_int stop;      /* the round is over: every thread returns */
    atomic_int torn_down; /* the teardown thread is done */
    pthread_mutex_t lock; /* guards tokens */
    qm_cancel *tokens[HAMMER_THREADS];
    qm_cancel *fired;     /* fired before the round */
    int delay_ms;         /* when the teardown starts */
    /* A graceful shutdown that returned QM_ERR_ABNORMAL_SHUTDOWN, and QEMU's exit code then
     * (0: it quit cleanly; regression_write_error_loses_what_qemu_sent). */
    int abnormal, abnormal_code;
    /* A pause between calls: under valgrind, which runs one thread at a time, 15 threads
     * calling flat out starve the one that shuts down (rounds of minutes). */
    int throttle_us;
};

struct hthread {
    struct hammer *h;
    int index;
    enum role role;
    unsigned seed;
    long calls;
    int failures;
    char first_failure[600];
    long statuses[NSTATUS];
    long send_fd_io; /* QM_ERR_IO from qm_send_file_scm (regression_send_fd_to_exited_qemu_is_io) */
    const char *volatile in; /* the call in progress, for the watchdog's report */
};

/* The threads of the current round, for the watchdog's report. */
static struct hthread *volatile hammer_threads;

static void hfail(struct hthread *t, const char *what, qm_status st, qm_error *err)
{
    if (t->failures++ == 0)
        snprintf(t->first_failure, sizeof t->first_failure, "thread %d (%s): %s: got %s (%s)",
                 t->index, variant_names[t->h->variant], what, status_name(st),
                 err ? qm_error_message(err) : "no error object");
}

/* Checks one call: a status in `allowed`, an error object that agrees with it, outputs only on
 * success. Frees the error; returns the status. */
static qm_status hcheck(struct hthread *t, const char *what, qm_status st, qm_error *err,
                        const void *out, unsigned allowed)
{
    t->calls++;
    if ((unsigned)st < NSTATUS)
        t->statuses[st]++;
    if ((unsigned)st >= NSTATUS || !(allowed & B(st)))
        hfail(t, what, st, err);
    else if (st == QM_OK && err != NULL)
        hfail(t, "an error object came with QM_OK", st, err);
    else if (st != QM_OK && (err == NULL || qm_error_status(err) != st))
        hfail(t, "the error object disagrees with the status", st, err);
    else if (st != QM_OK && out != NULL)
        hfail(t, "an output was written on failure", st, err);
    qm_error_free(err);
    return st;
}

/* HC(what, call, out, allowed): runs the call (then reads `err` and the output: sequenced),
 * checks it with hcheck and leaves the status in `st`. Needs `t`, `st` and `err` in scope. */
#define HC(what, call, out, allowed)                                                             \
    (t->in = (what), err = NULL, st = (call), t->in = NULL,                                      \
     hcheck(t, (what), st, err, (out), (allowed)))

static void pause_ms(struct hthread *t, int max)
{
    usleep((useconds_t)(rand_r(&t->seed) % (unsigned)(max * 1000 + 1)));
}

/* While the teardown thread relaunches the machine, commands overtake the QMP handshake and
 * QEMU answers CommandNotFound ("Expecting capabilities negotiation"): tolerated until
 * regression_command_during_launch_overtakes_the_handshake is fixed (QM_ERR_STATE then). */
static unsigned qmp_error_if_relaunch(struct hthread *t)
{
    return t->h->variant == V_RELAUNCH ? B(QM_ERR_QMP) : 0;
}

static void commands(struct hthread *t)
{
    qm_machine *m = t->h->m;
    char *s = NULL, args[128], want[64];
    qm_error *err;
    qm_status st;
    const unsigned gone = B(QM_ERR_DISCONNECTED) | B(QM_ERR_STATE) | qmp_error_if_relaunch(t);
    switch (t->calls % 5) {
    case 0: /* each caller gets its own reply: HMP echoes the unknown command back */
        snprintf(args, sizeof args, "{\"command-line\":\"h%d-%ld\"}", t->index, t->calls);
        snprintf(want, sizeof want, "'h%d-%ld'", t->index, t->calls);
        HC("qm_cmd hmp", qm_cmd(m, "human-monitor-command", args, QM_WAIT_DEFAULT, NULL, &s, &err),
           s, B(QM_OK) | gone);
        if (st == QM_OK && strstr(s, want) == NULL)
            hfail(t, "a reply for another caller", st, NULL);
        break;
    case 1:
        HC("qm_qmp", qm_qmp(m, "query-status", NULL, 30000, NULL, &s, &err), s, B(QM_OK) | gone);
        if (st == QM_OK && strstr(s, "\"return\"") == NULL &&
            !(t->h->variant == V_RELAUNCH && strstr(s, "CommandNotFound") != NULL))
            hfail(t, "a bad query-status reply", st, NULL);
        break;
    case 2:
        err = NULL;
        st = qm_cmd(m, "no-such-command", NULL, QM_WAIT_FOREVER, NULL, &s, &err);
        if (st == QM_ERR_QMP && strcmp(qm_error_qmp_class(err), "CommandNotFound") != 0)
            hfail(t, "a bad error class", st, NULL);
        hcheck(t, "qm_cmd error", st, err, s, B(QM_ERR_QMP) | gone);
        break;
    case 3: /* a 1 ms timeout: the late reply is dropped, the next caller unaffected */
        HC("qm_cmd 1 ms", qm_cmd(m, "query-status", NULL, 1, NULL, &s, &err), s,
           B(QM_OK) | B(QM_ERR_TIMEOUT) | gone);
        break;
    default:
        HC("qm_cmd fired token",
           qm_cmd(m, "query-status", NULL, QM_WAIT_FOREVER, t->h->fired, &s, &err), s,
           B(QM_ERR_INTERRUPTED));
        break;
    }
    qm_string_free(s);
}

static void stop_cont(struct hthread *t)
{
    char *s = NULL;
    qm_error *err;
    qm_status st;
    const char *cmd = t->calls % 2 ? "cont" : "stop";
    HC(cmd, qm_cmd(t->h->m, cmd, NULL, QM_WAIT_DEFAULT, NULL, &s, &err), s,
       B(QM_OK) | B(QM_ERR_DISCONNECTED) | B(QM_ERR_STATE) | qmp_error_if_relaunch(t));
    if (st == QM_OK && strcmp(s, "{}") != 0)
        hfail(t, "a bad stop/cont reply", st, NULL);
    qm_string_free(s);
    pause_ms(t, 5);
}

static void timed_waits(struct hthread *t)
{
    qm_machine *m = t->h->m;
    char *s = NULL;
    qm_error *err;
    qm_status st;
    const unsigned waited = B(QM_OK) | B(QM_ERR_TIMEOUT) | B(QM_ERR_DISCONNECTED);
    switch (t->calls % 5) {
    case 0:
        HC("qm_event_wait STOP", qm_event_wait(m, "STOP", NULL, 50, NULL, &s, &err), s, waited);
        if (st == QM_OK && strstr(s, "\"STOP\"") == NULL)
            hfail(t, "qm_event_wait returned another event", st, NULL);
        break;
    case 1:
        HC("qm_events_wait",
           qm_events_wait(m, "[{\"name\":\"RESUME\"},{\"name\":\"STOP\",\"match\":{}}]", 50, NULL,
                          &s, &err),
           s, waited);
        if (st == QM_OK && strstr(s, "\"STOP\"") == NULL && strstr(s, "\"RESUME\"") == NULL)
            hfail(t, "qm_events_wait returned another event", st, NULL);
        break;
    case 2: /* a look never fails, before or after the end */
        HC("qm_event_get 0", qm_event_get(m, 0, NULL, &s, &err), NULL, B(QM_OK));
        break;
    case 3:
        HC("qm_events_get", qm_events_get(m, 20, NULL, &s, &err), s, waited);
        if (st == QM_OK && s[0] != '[')
            hfail(t, "qm_events_get did not return an array", st, NULL);
        break;
    default:
        HC("qm_event_wait 0", qm_event_wait(m, "RESUME", "null", 0, NULL, &s, &err), NULL,
           B(QM_OK));
        break;
    }
    qm_string_free(s);
}

/* Waits that only a token (fired by the canceller), an event or the end can finish. */
static void token_waits(struct hthread *t)
{
    struct hammer *h = t->h;
    qm_cancel *c = qm_cancel_new();
    char *s = NULL;
    qm_error *err;
    qm_status st;
    pthread_mutex_lock(&h->lock);
    h->tokens[t->index] = c;
    pthread_mutex_unlock(&h->lock);
    if (t->calls % 2)
        HC("qm_event_wait forever + token",
           qm_event_wait(h->m, "NEVER", NULL, QM_WAIT_FOREVER, c, &s, &err), s,
           B(QM_ERR_INTERRUPTED) | B(QM_ERR_DISCONNECTED));
    else
        HC("qm_events_wait + token",
           qm_events_wait(h->m, "[{\"name\":\"NEVER\"},{\"name\":\"STOP\"}]", 5000, c, &s, &err),
           s, B(QM_OK) | B(QM_ERR_INTERRUPTED) | B(QM_ERR_DISCONNECTED) | B(QM_ERR_TIMEOUT));
    pthread_mutex_lock(&h->lock);
    h->tokens[t->index] = NULL;
    pthread_mutex_unlock(&h->lock);
    qm_cancel_free(c);
    qm_string_free(s);
}

/* Ended only by the teardown; afterwards it fails at once, every time. */
static void forever_wait(struct hthread *t)
{
    char *s = NULL;
    qm_error *err;
    qm_status st;
    HC("qm_event_wait forever",
       qm_event_wait(t->h->m, "NEVER", NULL, QM_WAIT_FOREVER, NULL, &s, &err), s,
       B(QM_ERR_DISCONNECTED));
    qm_string_free(s);
    usleep(1000);
}

static void canceller(struct hthread *t)
{
    struct hammer *h = t->h;
    int i;
    pause_ms(t, 10);
    pthread_mutex_lock(&h->lock);
    for (i = 0; i < HAMMER_THREADS; i++)
        if (h->tokens[i] != NULL)
            qm_cancel_fire(h->tokens[i]);
    pthread_mutex_unlock(&h->lock);
    t->calls++;
}

static void misc(struct hthread *t)
{
    qm_machine *m = t->h->m;
    char *s = NULL;
    qm_error *err;
    qm_status st;
    int fd = -1, code;
    int64_t pid;
    switch (t->calls % 6) {
    case 0:
        (void)qm_is_running(m);
        (void)qm_exit_code(m, &code);
        pid = qm_pid(m);
        if (pid == 0 || pid < -1)
            hfail(t, "a bad pid", QM_OK, NULL);
        t->calls++;
        break;
    case 1:
        HC("qm_get_log", qm_get_log(m, &s, &err), NULL, B(QM_OK));
        break;
    case 2:
        HC("qm_get_command_line", qm_get_command_line(m, &s, &err), s, B(QM_OK));
        break;
    case 3:
        HC("qm_events_clear", qm_events_clear(m, &err), NULL, B(QM_OK));
        break;
    case 4:
        /* QM_ERR_IO (EPIPE once QEMU is gone) only until regression_send_fd_to_exited_qemu_is_io
         * is fixed: it should be QM_ERR_DISCONNECTED. Counted, reported. */
        HC("qm_send_file_scm", qm_send_file_scm(m, "/dev/null", &err), NULL,
           B(QM_OK) | B(QM_ERR_DISCONNECTED) | B(QM_ERR_STATE) | B(QM_ERR_IO));
        if (st == QM_ERR_IO)
            t->send_fd_io++;
        break;
    default:
        HC("qm_console_dup", qm_console_dup(m, &fd, &err), fd == -1 ? NULL : "fd",
           B(QM_OK) | B(QM_ERR_STATE));
        if (st == QM_OK) {
            char buf[64];
            fcntl(fd, F_SETFL, O_NONBLOCK);
            if (read(fd, buf, sizeof buf) < 0 && errno != EAGAIN)
                hfail(t, "reading the console", st, NULL);
            close(fd);
        }
        break;
    }
    qm_string_free(s);
}

/* A graceful shutdown: QM_OK. QM_ERR_ABNORMAL_SHUTDOWN happens when another thread's command
 * fails to write (EPIPE) after QEMU quit but before the reply to quit was read: tolerated while
 * regression_write_error_loses_what_qemu_sent is open, provided QEMU did exit cleanly (code 0). */
static void graceful(struct hthread *t)
{
    struct hammer *h = t->h;
    qm_error *err;
    qm_status st;
    HC("qm_shutdown", qm_shutdown(h->m, false, 20000, NULL, &err), NULL,
       B(QM_OK) | B(QM_ERR_ABNORMAL_SHUTDOWN));
    if (st == QM_ERR_ABNORMAL_SHUTDOWN) {
        h->abnormal = 1;
        h->abnormal_code = -1000;
        qm_exit_code(h->m, &h->abnormal_code);
    }
}

static void teardown(struct hthread *t, int second)
{
    struct hammer *h = t->h;
    qm_machine *m = h->m;
    qm_error *err;
    qm_status st;
    char *s = NULL;
    usleep((useconds_t)h->delay_ms * 1000);
    if (second) { /* V_DOUBLE only */
        HC("racing qm_kill", qm_kill(m, &err), NULL, B(QM_OK));
        return;
    }
    switch (h->variant) {
    case V_SHUTDOWN:
    case V_DOUBLE:
        graceful(t);
        break;
    case V_KILL:
        HC("qm_kill", qm_kill(m, &err), NULL, B(QM_OK));
        break;
    case V_HARD:
        HC("qm_shutdown hard", qm_shutdown(m, true, 0, NULL, &err), NULL, B(QM_OK));
        break;
    case V_WAIT:
        HC("qm_wait 100 ms", qm_wait(m, 100, NULL, &err), NULL, B(QM_ERR_ABNORMAL_SHUTDOWN));
        break;
    case V_CANCELLED: {
        qm_cancel *c = qm_cancel_new();
        pthread_mutex_lock(&h->lock);
        h->tokens[t->index] = c;
        pthread_mutex_unlock(&h->lock);
        HC("qm_shutdown cancelled", qm_shutdown(m, false, QM_WAIT_FOREVER, c, &err), NULL,
           B(QM_OK) | B(QM_ERR_ABNORMAL_SHUTDOWN));
        pthread_mutex_lock(&h->lock);
        h->tokens[t->index] = NULL;
        pthread_mutex_unlock(&h->lock);
        qm_cancel_free(c);
        break;
    }
    case V_RELAUNCH:
        graceful(t);
        usleep(20 * 1000);
        HC("qm_launch again", qm_launch(m, QM_WAIT_DEFAULT, NULL, &err), NULL, B(QM_OK));
        usleep((useconds_t)h->delay_ms * 1000);
        HC("qm_kill", qm_kill(m, &err), NULL, B(QM_OK));
        break;
    case V_QUIT:
        HC("quit", qm_qmp(m, "quit", NULL, 20000, NULL, &s, &err), s,
           B(QM_OK) | B(QM_ERR_DISCONNECTED));
        qm_string_free(s);
        HC("qm_wait", qm_wait(m, 20000, NULL, &err), NULL, B(QM_OK));
        break;
    case NVARIANTS:
        break;
    }
}

static void *hammer_thread(void *arg)
{
    struct hthread *t = arg;
    struct hammer *h = t->h;
    if (t->role == TEARDOWN || (t->role == SECOND && h->variant == V_DOUBLE)) {
        teardown(t, t->role == SECOND);
        atomic_fetch_add(&h->torn_down, 1);
        return NULL;
    }
    while (!atomic_load(&h->stop)) {
        switch (t->role) {
        case COMMANDS: commands(t); break;
        case STOP_CONT: stop_cont(t); break;
        case SECOND: /* fall through: without a second teardown, more timed waits */
        case TIMED_WAITS: timed_waits(t); break;
        case TOKEN_WAITS: token_waits(t); break;
        case FOREVER_WAIT: forever_wait(t); break;
        case CANCELLER: canceller(t); break;
        case MISC: misc(t); break;
        case TEARDOWN: break;
        }
        if (h->throttle_us)
            usleep((useconds_t)h->throttle_us);
    }
    return NULL;
}

static void hammer_report(void)
{
    static const char digits[] = "0123456789";
    struct hthread *t = hammer_threads;
    int i;
    for (i = 0; t != NULL && i < HAMMER_THREADS; i++) {
        const char *in = t[i].in;
        char num[4] = {digits[i / 10], digits[i % 10], ' ', '\0'};
        say("  thread ");
        say(num);
        say(in ? in : "(between calls, or finished)");
        say("\n");
    }
}

/* One round: launch, 16 threads, the teardown in the middle, then everything checked. */
struct tally {
    long statuses[NSTATUS];
    long calls, send_fd_io, abnormal;
};

static void hammer_round(int round, enum variant variant, struct tally *tally, int *threads)
{
    static struct hammer h;
    static struct hthread t[HAMMER_THREADS];
    pthread_t tid[HAMMER_THREADS];
    int i, failures = 0, fds, code = 0, children;
    unsigned seed = (unsigned)round * 7919u + 17u;
    double t0, free_ms;
    bool running, exited;
    int64_t pid;

    /* The first launch of a process starts qm's watchdog, whose socket lives as long as the
     * process: start it (once) before counting, so a round run alone counts only its own fds. */
    static bool watchdog_started;
    if (!watchdog_started) {
        shutdown_free(launch_none());
        watchdog_started = true;
    }
    fds = count_fds();

    memset(&h, 0, sizeof h);
    h.variant = variant;
    h.delay_ms = 50 + (int)(rand_r(&seed) % 200);
    h.throttle_us = under_valgrind() ? 2000 : 0;
    h.fired = qm_cancel_new();
    qm_cancel_fire(h.fired);
    CHECK(pthread_mutex_init(&h.lock, NULL) == 0);
    h.m = new_none();
    OK(qm_set_console(h.m, NULL, 0, &err));
    OK(qm_launch(h.m, QM_WAIT_DEFAULT, NULL, &err));

    hammer_threads = t;
    watchdog_report = hammer_report;
    for (i = 0; i < HAMMER_THREADS; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].h = &h;
        t[i].index = i;
        t[i].role = roles[i];
        t[i].seed = seed + (unsigned)i;
        CHECK(pthread_create(&tid[i], NULL, hammer_thread, &t[i]) == 0);
    }
    /* The teardown (and the racing second one) end; the others go on a little while, seeing
     * the end, then stop. */
    while (atomic_load(&h.torn_down) < (variant == V_DOUBLE ? 2 : 1))
        usleep(1000);
    usleep(30 * 1000);
    atomic_store(&h.stop, 1);
    for (i = 0; i < HAMMER_THREADS; i++) {
        int s;
        CHECK(pthread_join(tid[i], NULL) == 0);
        for (s = 0; s < NSTATUS; s++)
            tally->statuses[s] += t[i].statuses[s];
        tally->calls += t[i].calls;
        tally->send_fd_io += t[i].send_fd_io;
        if (t[i].failures) {
            fprintf(stderr, "round %d (%s): %d failures, first: %s\n", round,
                    variant_names[variant], t[i].failures, t[i].first_failure);
            failures += t[i].failures;
        }
    }
    /* Nothing left: no QEMU, the handle reports the end, freeing is prompt. Observed first,
     * checked once the handle is freed, so a failure leaves nothing behind. */
    watchdog_report = NULL;
    running = qm_is_running(h.m);
    pid = qm_pid(h.m);
    exited = qm_exit_code(h.m, &code);
    children = count_children();
    if (failures) {
        char *log = NULL;
        qm_get_log(h.m, &log, NULL);
        fprintf(stderr, "round %d (%s): QEMU's exit code %d, its output: %s\n", round,
                variant_names[variant], code, log ? log : "(none)");
        qm_string_free(log);
    }
    t0 = now_ms();
    qm_free(h.m);
    free_ms = now_ms() - t0;
    qm_cancel_free(h.fired);
    pthread_mutex_destroy(&h.lock);
    tally->abnormal += h.abnormal;
    if (h.abnormal && h.abnormal_code != 0)
        fprintf(stderr, "round %d (%s): graceful shutdown: QM_ERR_ABNORMAL_SHUTDOWN, exit %d\n",
                round, variant_names[variant], h.abnormal_code);
    CHECK(failures == 0);
    CHECK(!h.abnormal || h.abnormal_code == 0);
    CHECK(!running && pid == -1 && exited);
    CHECK(children == 0);
    CHECK(free_ms < 5000);
    /* No descriptor leaked; no thread left over: as many as after the first round (which may
     * start qm's spawner thread, and a sanitizer's background thread, for good). qm's helper
     * threads (e.g. a waitid watcher under valgrind) end soon after QEMU: give them a moment. */
    CHECK(count_fds() == fds);
    if (*threads < 0) {
        usleep(200 * 1000);
        *threads = count_threads();
    }
    for (i = 0; count_threads() > *threads && i < 500; i++)
        usleep(10 * 1000);
    CHECK(count_threads() <= *threads);
}

static void hammer_one_handle(void)
{
    struct tally tally;
    int r, n = rounds(), s, threads = -1;
    memset(&tally, 0, sizeof tally);
    for (r = 0; r < n; r++) {
        double t0 = now_ms();
        long calls = tally.calls;
        watchdog(__func__, 120);
        hammer_round(r, (enum variant)(r % NVARIANTS), &tally, &threads);
        printf("hammer round %d (%s): %ld calls, %.0f ms\n", r, variant_names[r % NVARIANTS],
               tally.calls - calls, now_ms() - t0);
    }
    printf("hammer: %d rounds, %ld calls:", n, tally.calls);
    for (s = 0; s < NSTATUS; s++)
        if (tally.statuses[s])
            printf(" %s %ld", status_name((qm_status)s), tally.statuses[s]);
    printf("\n");
    if (tally.send_fd_io || tally.abnormal)
        printf("hammer: known src bugs seen: qm_send_file_scm QM_ERR_IO %ld times "
               "(regression_send_fd_to_exited_qemu_is_io), graceful shutdown "
               "QM_ERR_ABNORMAL_SHUTDOWN with exit code 0 %ld times "
               "(regression_write_error_loses_what_qemu_sent)\n",
               tally.send_fd_io, tally.abnormal);
    /* The rounds went through the interesting paths. */
    CHECK(tally.statuses[QM_OK] > 0 && tally.statuses[QM_ERR_QMP] > 0);
    CHECK(tally.statuses[QM_ERR_INTERRUPTED] > 0 && tally.statuses[QM_ERR_TIMEOUT] > 0);
    CHECK(tally.statuses[QM_ERR_DISCONNECTED] > 0 && tally.statuses[QM_ERR_STATE] > 0);
}

/* ---- bugs in src/ (failing until fixed) -------------------------------------------------- */

/*
 * regression_write_timeout_desyncs_the_connection: a command that cannot be written within its
 * timeout (QEMU reads its monitor one byte per main-loop iteration, ~250 KB/s, and the socket
 * buffer holds ~200 KB) is abandoned half-written: QmpClient::write_all returns
 * Error::Timeout with part of the message sent and the rest dropped. QEMU then parses the next
 * command as the continuation of the half one and answers "JSON parse error" without an id,
 * which qm files under the only command in flight: the next caller gets a reply that is not
 * its own (every later one too, until the stream happens to resynchronise). The header
 * promises that after a timeout "the connection stays usable". The same happens when a
 * qm_cancel fires during the write.
 *
 * Fix (src/qmp/mod.rs, QmpClient::write_all / execute_until): never leave a partial message in
 * the stream: keep the unsent tail and send it first, under the writer lock, before any other
 * message (the abandoned command's reply is then dropped as late); or, more simply, once a
 * write stopped after its first byte, fail the connection (Broken::Protocol/Io: the caller
 * and everyone after get QM_ERR_DISCONNECTED/QM_ERR_PROTOCOL, a clear status, and a shutdown
 * kills QEMU) instead of writing the next command into the middle of the old one.
 */
static void regression_write_timeout_desyncs_the_connection(void)
{
    char *big = repeat("{\"command-line\":\"", 'a', 512u << 10, "\"}");
    qm_machine *m = launch_none();
    char *s = NULL;
    qm_error *err = NULL;
    qm_status st;
    bool ok;
    watchdog(__func__, 120);
    /* 512 KiB take QEMU two seconds to read: the write times out after 200 ms. */
    FAILS(QM_ERR_TIMEOUT, qm_cmd(m, "human-monitor-command", big, 200, NULL, &s, &err));
    /* The next command must get its own reply, or a clear connection error: not a reply to
     * what is left of the abandoned message. */
    st = qm_qmp(m, "query-status", NULL, 20000, NULL, &s, &err);
    ok = (st == QM_OK && strstr(s, "\"status\"") != NULL) || st == QM_ERR_DISCONNECTED ||
         st == QM_ERR_PROTOCOL;
    if (!ok)
        fprintf(stderr, "query-status after a write timeout: %s %.200s\n", status_name(st),
                st == QM_OK ? s : qm_error_message(err));
    qm_string_free(s);
    qm_error_free(err);
    OK(qm_kill(m, &err));
    qm_free(m);
    free(big);
    CHECK(ok);
}

/*
 * regression_command_after_shutdown_is_state_not_disconnected: once a machine's run is over
 * (qm_wait or qm_shutdown returned, nothing runs), a command is QM_ERR_STATE ("not launched";
 * qm_machine: "QM_ERR_DISCONNECTED (or QM_ERR_STATE once it is over)"), as it is after a
 * plain shutdown (test_qmp.c, wrong_state_after_launch). But when a reader saw QEMU close the
 * monitor before qm's cleanup closed it (here: an event wait while QEMU quits; in general any
 * thread reading at that moment), every later command and qm_send_*_scm gets
 * QM_ERR_DISCONNECTED instead, for good: Machine::live_client asks QmpClient::is_closed(),
 * which is true only when qm's close() came first (Broken::Closed), not after Broken::Eof.
 *
 * Fix (src/qmp/mod.rs or src/machine/mod.rs): record in QmpClient::close() that qm closed the
 * connection even when the peer had already hung up (a `closed` flag that is_closed() reads,
 * separate from the first cause kept in `broken`), or have live_client decide from the
 * machine's own lifecycle (not launched => QM_ERR_STATE).
 */
/* A command and both descriptor sends on a machine whose run is over; frees the machine. */
static int over_but_not_state(qm_machine *m, int devnull, const char *when)
{
    char *s = NULL;
    qm_status cmd = qm_cmd(m, "query-status", NULL, QM_WAIT_DEFAULT, NULL, &s, NULL);
    qm_status fd = qm_send_fd_scm(m, devnull, NULL);
    qm_status file = qm_send_file_scm(m, "/dev/null", NULL);
    qm_string_free(s);
    qm_free(m);
    if (cmd == QM_ERR_STATE && fd == QM_ERR_STATE && file == QM_ERR_STATE)
        return 0;
    fprintf(stderr, "%s: qm_cmd %s, qm_send_fd_scm %s, qm_send_file_scm %s (want QM_ERR_STATE)\n",
            when, status_name(cmd), status_name(fd), status_name(file));
    return 1;
}

static void regression_command_after_shutdown_is_state_not_disconnected(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC), wrong = 0;
    watchdog(__func__, 60);
    CHECK(devnull >= 0);
    OK(qm_qmp(m, "quit", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    qm_string_free(s);
    /* Read until QEMU hangs up: the SHUTDOWN event, then the end of the connection. */
    OK(qm_event_wait(m, "SHUTDOWN", NULL, 10000, NULL, &s, &err));
    qm_string_free(s);
    s = NULL;
    FAILS(QM_ERR_DISCONNECTED, qm_event_get(m, 10000, NULL, &s, &err));
    OK(qm_wait(m, 10000, NULL, &err));
    CHECK(!qm_is_running(m));
    /* The run is over: a state error, as after any other shutdown. */
    wrong += over_but_not_state(m, devnull, "after quit, an event wait, qm_wait");

    /* The same after a launch that failed once QEMU ran: the handshake saw QEMU hang up. (A
     * launch that failed before spawning QEMU gives QM_ERR_STATE, as it should.) */
    m = new_none();
    OK(qm_add_args(m, (const char *[]){"-no-such-option-for-qm"}, 1, &err));
    FAILS(QM_ERR_LAUNCH, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    wrong += over_but_not_state(m, devnull, "after a launch that failed once QEMU ran");
    close(devnull);
    CHECK(wrong == 0);
}

/* Waits until QEMU (our unreaped child) has exited: a zombie, not reaped (qm reaps it). */
static void wait_exited(pid_t pid)
{
    char path[64], buf[512], *p = NULL;
    int i;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (i = 0; i < 1000; i++) {
        FILE *f = fopen(path, "r");
        CHECK(f != NULL);
        p = fgets(buf, sizeof buf, f) ? strrchr(buf, ')') : NULL;
        fclose(f);
        if (p != NULL && p[2] == 'Z')
            return;
        usleep(10 * 1000);
    }
    CHECK(!"QEMU exited");
}

/* Makes QEMU quit without anyone reading what it sends (the SHUTDOWN event, the reply to quit)
 * and waits until it has exited. QEMU is stopped while `quit` is sent, so that the short wait
 * cannot see the reply. */
static void quit_unread(qm_machine *m)
{
    pid_t pid = (pid_t)qm_pid(m);
    char *s = NULL;
    CHECK(pid > 0 && kill(pid, SIGSTOP) == 0);
    FAILS(QM_ERR_TIMEOUT, qm_qmp(m, "quit", NULL, 100, NULL, &s, &err));
    CHECK(kill(pid, SIGCONT) == 0);
    wait_exited(pid);
}

/*
 * regression_write_error_loses_what_qemu_sent: when a command cannot be written because QEMU has
 * closed the monitor (EPIPE), QmpClient::write_all marks the whole connection broken at once
 * (self.fail(Broken::Io)), before anyone has read what QEMU sent before it closed: replies and
 * events still in the socket are lost, although the design is "events are never dropped" and
 * "a reply that arrived before EOF is still delivered". Here the SHUTDOWN event QEMU sent
 * after `quit` is lost (without the failed write it is delivered). In the hammer (16 threads),
 * the same makes a graceful qm_shutdown fail with QM_ERR_ABNORMAL_SHUTDOWN although QEMU quit
 * cleanly with exit code 0: another thread's command hit EPIPE after QEMU quit, before the
 * reply to `quit` was read (the header says QM_ERR_ABNORMAL_SHUTDOWN means "QEMU was killed";
 * it was not).
 *
 * Fix (src/qmp/mod.rs, QmpClient::write_all): a failed send fails that command only (return
 * Error::Disconnected without self.fail()); the reader ends the connection when it reaches the
 * end of what QEMU sent (EOF / ECONNRESET), so replies and events sent before are delivered.
 */
static void regression_write_error_loses_what_qemu_sent(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    watchdog(__func__, 60);
    /* quit, without waiting for the reply: nobody reads what QEMU sends from now on. */
    quit_unread(m);
    /* A command cannot be written any more: fine, the connection is gone. */
    FAILS(QM_ERR_DISCONNECTED, qm_cmd(m, "query-status", NULL, 5000, NULL, &s, &err));
    /* But the SHUTDOWN event QEMU sent before it closed is still in the socket. */
    {
        qm_error *err = NULL;
        qm_status st = qm_event_wait(m, "SHUTDOWN", NULL, 5000, NULL, &s, &err);
        bool ok = st == QM_OK && s != NULL && strstr(s, "host-qmp-quit") != NULL;
        if (!ok)
            fprintf(stderr, "the SHUTDOWN event QEMU sent: %s (%s)\n", status_name(st),
                    st == QM_OK ? (s ? s : "none") : qm_error_message(err));
        qm_error_free(err);
        qm_string_free(s);
        OK(qm_kill(m, &err));
        qm_free(m);
        CHECK(ok);
    }
}

/*
 * regression_send_fd_to_exited_qemu_is_io: qm_send_fd_scm / qm_send_file_scm to a QEMU that has
 * exited (or is exiting: a shutdown in another thread) fails with QM_ERR_IO ("Broken pipe"),
 * where every other call that needs the connection says QM_ERR_DISCONNECTED ("the QMP
 * connection is gone"); the hammer sees it whenever a shutdown overtakes a send.
 *
 * Fix (src/qmp/mod.rs, QmpClient::send_fd): map a failed sendmsg on a connection the peer
 * closed (EPIPE, ECONNRESET) to Error::Disconnected, as write_all does.
 */
static void regression_send_fd_to_exited_qemu_is_io(void)
{
    qm_machine *m = launch_none();
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    watchdog(__func__, 60);
    CHECK(devnull >= 0);
    quit_unread(m);
    {
        qm_status fd_st = qm_send_fd_scm(m, devnull, NULL);
        qm_status file_st = qm_send_file_scm(m, "/dev/null", NULL);
        if (fd_st != QM_ERR_DISCONNECTED || file_st != QM_ERR_DISCONNECTED)
            fprintf(stderr, "sending a descriptor to an exited QEMU: %s, %s\n",
                    status_name(fd_st), status_name(file_st));
        close(devnull);
        OK(qm_kill(m, &err));
        qm_free(m);
        CHECK(fd_st == QM_ERR_DISCONNECTED && file_st == QM_ERR_DISCONNECTED);
    }
}

/*
 * regression_failed_launch_keeps_the_previous_exit_code: a launch that fails before QEMU is
 * started (here: the log directory does not exist) leaves the exit code of the previous run
 * in place, so qm_exit_code says QEMU exited (-9, the earlier qm_kill) although this launch
 * never ran it, and the cleanup prints a bogus warning "qm warning: qemu received signal 9;
 * command: """ (signal_sent was reset for the new launch, the old exit code was not).
 *
 * Fix (src/machine/mod.rs, Machine::launch_inner): forget the previous run's process state
 * (*lock(&self.proc) = ProcState::None) when a launch starts, along with the output and
 * signal_sent it already resets.
 */
static void regression_failed_launch_keeps_the_previous_exit_code(void)
{
    qm_machine *m = launch_none();
    char warnings[4096] = "";
    int code = 0, saved = dup(2), tmp;
    bool stale;
    char path[] = "/tmp/qm-hostile-stderr-XXXXXX";
    ssize_t n;
    watchdog(__func__, 60);
    OK(qm_kill(m, &err));
    CHECK(qm_exit_code(m, &code) && code == -9);
    OK(qm_set_log_dir(m, "/nonexistent-qm-log-dir", &err));
    /* Capture stderr around the failed launch (qm logs there). */
    tmp = mkstemp(path);
    CHECK(saved >= 0 && tmp >= 0);
    unlink(path);
    fflush(stderr);
    CHECK(dup2(tmp, 2) == 2);
    {
        qm_error *err = NULL;
        qm_status st = qm_launch(m, QM_WAIT_DEFAULT, NULL, &err);
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        CHECK(st == QM_ERR_LAUNCH && qm_error_cause(err) == QM_ERR_IO);
        CHECK(!qm_error_exit_code(err, &code)); /* right: it never ran */
        qm_error_free(err);
    }
    n = pread(tmp, warnings, sizeof warnings - 1, 0);
    close(tmp);
    warnings[n > 0 ? n : 0] = '\0';
    if (warnings[0] != '\0')
        fprintf(stderr, "qm wrote during the failed launch: %s", warnings);
    stale = qm_exit_code(m, &code); /* this launch ran nothing: no exit code */
    if (stale)
        fprintf(stderr, "qm_exit_code after a launch that ran nothing: %d\n", code);
    qm_free(m);
    CHECK(strstr(warnings, "received signal") == NULL);
    CHECK(!stale);
}

struct launcher {
    qm_machine *m;
    qm_status status;
};

static void *launch_in_thread(void *arg)
{
    struct launcher *l = arg;
    l->status = qm_launch(l->m, QM_WAIT_DEFAULT, NULL, NULL);
    return NULL;
}

/*
 * regression_command_during_launch_overtakes_the_handshake: while qm_launch waits for QEMU's QMP
 * greeting, a command from another thread is written to the monitor at once: Machine::
 * launch_locked publishes the connection (self.qmp) before the handshake. QEMU reads it before
 * qm's qmp_capabilities and answers CommandNotFound "Expecting capabilities negotiation with
 * 'qmp_capabilities'": qm_cmd fails with QM_ERR_QMP, and qm_qmp returns that error response
 * as a success, for a command that is fine. Until qm_launch returns, the machine is not
 * launched: QM_ERR_STATE (or the command could wait for the launch). The hammer sees it in
 * every relaunch round.
 *
 * Fix (src/machine/mod.rs, Machine::launch_locked): run the handshake on a client that is not
 * yet in self.qmp, and store it there only once qmp_capabilities succeeded (the launch's error
 * path then closes it itself); or have live_client() refuse (QM_ERR_STATE) until a "ready"
 * flag set after the handshake.
 */
static void regression_command_during_launch_overtakes_the_handshake(void)
{
    /* QEMU starts half a second late: the launch waits for the greeting meanwhile. */
    const char *wrapper[] = {"sh", "-c", "sleep 0.5; exec \"$0\" \"$@\""};
    qm_machine *m = new_none();
    struct launcher l = {m, QM_ERR_PANIC};
    pthread_t t;
    char *s = NULL;
    qm_error *err = NULL;
    qm_status st;
    watchdog(__func__, 60);
    OK(qm_set_wrapper(m, wrapper, 3, &err));
    CHECK(pthread_create(&t, NULL, launch_in_thread, &l) == 0);
    usleep(200 * 1000);
    st = qm_cmd(m, "query-status", NULL, 10000, NULL, &s, &err);
    CHECK(pthread_join(t, NULL) == 0);
    if (st == QM_ERR_QMP)
        fprintf(stderr, "a command during qm_launch: QM_ERR_QMP %s: %s\n",
                qm_error_qmp_class(err), qm_error_qmp_desc(err));
    qm_error_free(err);
    qm_string_free(s);
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    qm_free(m);
    CHECK(l.status == QM_OK);
    CHECK(st == QM_ERR_STATE || st == QM_OK);
}

struct big_writer {
    qm_machine *m;
    const char *args;
    qm_cancel *cancel;
    qm_status status;
};

static void *write_big_command(void *arg)
{
    struct big_writer *w = arg;
    char *s = NULL;
    w->status = qm_cmd(w->m, "human-monitor-command", w->args, QM_WAIT_FOREVER, w->cancel, &s,
                       NULL);
    qm_string_free(s);
    return NULL;
}

static void *fire_later(void *arg)
{
    usleep(1000 * 1000);
    qm_cancel_fire(arg);
    return NULL;
}

/*
 * regression_timeout_not_honoured_while_another_thread_writes: QmpClient::write_all held the
 * writer mutex for the whole message, also while it waited (poll) for room in the socket, and
 * the next caller blocked on that mutex with no deadline and no cancel. So while one thread
 * wrote a big command (QEMU reads its monitor at ~250 KB/s) or QEMU did not read (stopped,
 * busy), every other command ignored its timeout and its qm_cancel, and so did a graceful
 * qm_shutdown, whose `quit` waited behind it. Here: QEMU is stopped, a thread writes a 1 MiB
 * command (QM_WAIT_FOREVER; its token fires after a second), and a query-status with a 200 ms
 * timeout must return on time. Fixed by an outgoing queue sent without blocking, the waiting
 * for room being done by whichever caller does the I/O, within its own deadline (see
 * src/qmp/mod.rs; tests/blocked_writer.rs has the 16 MiB scenario of issue #12).
 */
static void regression_timeout_not_honoured_while_another_thread_writes(void)
{
    char *big = repeat("{\"command-line\":\"", 'a', 1u << 20, "\"}");
    qm_machine *m = launch_none();
    pid_t pid = (pid_t)qm_pid(m);
    struct big_writer w = {m, big, qm_cancel_new(), QM_OK};
    pthread_t writer, rescuer;
    char *s = NULL;
    qm_status st;
    double t0, took;
    watchdog(__func__, 60);
    CHECK(kill(pid, SIGSTOP) == 0);
    CHECK(pthread_create(&writer, NULL, write_big_command, &w) == 0);
    /* Let the writer serialise its 1 MiB and fill the socket (slower under valgrind). */
    usleep((under_valgrind() ? 1500 : 300) * 1000);
    CHECK(pthread_create(&rescuer, NULL, fire_later, w.cancel) == 0);
    t0 = now_ms();
    st = qm_cmd(m, "query-status", NULL, 200, NULL, &s, NULL);
    took = now_ms() - t0;
    CHECK(pthread_join(rescuer, NULL) == 0);
    CHECK(pthread_join(writer, NULL) == 0);
    kill(pid, SIGCONT);
    qm_string_free(s);
    OK(qm_kill(m, &err));
    qm_free(m);
    qm_cancel_free(w.cancel);
    free(big);
    if (took > 700)
        fprintf(stderr, "a command with a 200 ms timeout returned %s after %.0f ms\n",
                status_name(st), took);
    CHECK(w.status == QM_ERR_INTERRUPTED);
    CHECK(st == QM_ERR_TIMEOUT && took < 700);
}

/*
 * regression_temp_dir_error_has_no_errno: qm_get_temp_dir (and a launch that creates the
 * temporary directory, e.g. for a unix socket monitor) fails with QM_ERR_IO whose message says
 * "No such file or directory (os error 2)", but qm_error_os_code returns false, although the
 * header promises the errno for every QM_ERR_IO "caused by a failed operating-system call"
 * (e.g. ENAMETOOLONG for a huge base directory). The tempfile crate wraps the io::Error in its
 * PathError (io::Error::new(kind, PathError{..})), whose raw_os_error() is None.
 *
 * Fix (src/ffi/error.rs, fn os_code): look through a wrapped error, e.g.
 * `source.raw_os_error().or_else(|| source.get_ref().and_then(|e| e.source())
 *     .and_then(|e| e.downcast_ref::<std::io::Error>()).and_then(|e| e.raw_os_error()))`
 * (or unwrap tempfile's error where it is created, in Machine::temp_dir).
 */
static void regression_temp_dir_error_has_no_errno(void)
{
    qm_machine *m = new_none();
    qm_error *err = NULL;
    char *s = NULL;
    int code = 0;
    bool has;
    watchdog(__func__, 60);
    OK(qm_set_base_temp_dir(m, "/nonexistent-qm-base-dir", &err));
    CHECK(qm_get_temp_dir(m, &s, &err) == QM_ERR_IO);
    qm_free(m);
    CHECK(s == NULL);
    has = qm_error_os_code(err, &code);
    if (!has || code != ENOENT)
        fprintf(stderr, "qm_error_os_code: %s, %d; the message: %s\n", has ? "true" : "false",
                code, qm_error_message(err));
    qm_error_free(err);
    CHECK(has && code == ENOENT);
}

/* qm_free twice on one handle used to hang forever (the second drop waited on the freed
 * machine's lock). qm records its live handles (src/ffi/handle.rs): a second free is refused
 * with a warning naming the call and the type, and a call on a freed handle fails with
 * QM_ERR_INVALID naming the parameter, without reading the freed memory (ASan and valgrind
 * would report it). The same holds for qm_cancel, qm_error and qm_patterns, and for a pointer
 * of another handle type. */
struct misuse_log {
    pthread_mutex_t lock;
    char last[512];
    int warnings;
};

static void on_misuse_log(void *user, qm_log_level level, const char *target,
                          const char *message, double timestamp)
{
    struct misuse_log *log = user;
    (void)target;
    (void)timestamp;
    if (level != QM_LOG_WARN || strstr(message, "is not a live") == NULL)
        return;
    pthread_mutex_lock(&log->lock);
    log->warnings++;
    snprintf(log->last, sizeof log->last, "%s", message);
    pthread_mutex_unlock(&log->lock);
}

static void regression_double_free_hangs(void)
{
    static struct misuse_log log = {.lock = PTHREAD_MUTEX_INITIALIZER};
    qm_error *err = NULL;
    watchdog(__func__, 120);
    CHECK(qm_set_log_callback(on_misuse_log, &log));

    qm_machine *m = launch_none();
    qm_free(m);
    qm_free(m); /* hung here */
    CHECK(log.warnings == 1);
    CHECK_HAS(log.last, "qm_free");
    CHECK_HAS(log.last, "is not a live qm_machine (freed already, or not from qm_new)");
    INVALID(qm_set_name(m, "x", &err), "m: 0x");
    INVALID(qm_set_name(m, "x", &err), "is not a live qm_machine");
    CHECK(!qm_is_running(m));
    CHECK(qm_pid(m) == -1);
    CHECK(log.warnings == 3);
    CHECK_HAS(log.last, "qm_pid: ");
    CHECK(log.warnings == 3);
    CHECK_HAS(log.last, "qm_pid: ");

    qm_cancel *c = qm_cancel_new();
    qm_cancel_free(c);
    qm_cancel_free(c);
    CHECK(log.warnings == 4);
    CHECK_HAS(log.last, "qm_cancel_free: ");
    CHECK_HAS(log.last, "is not a live qm_cancel");
    CHECK(!qm_cancel_is_fired(c));

    /* A handle of another type where a machine is expected. */
    qm_patterns *p = qm_patterns_new();
    INVALID(qm_set_name((qm_machine *)p, "x", &err), "is not a live qm_machine");
    qm_patterns_free(p);
    qm_patterns_free(p);
    CHECK_HAS(log.last, "is not a live qm_patterns");

    m = new_none();
    CHECK(qm_set_name(m, "", &err) == QM_ERR_INVALID);
    qm_free(m);
    qm_error_free(err);
    int before = log.warnings;
    qm_error_free(err);
    CHECK(log.warnings == before + 1);
    CHECK_HAS(log.last, "is not a live qm_error");
    CHECK(qm_error_message(err) == NULL);

    CHECK(qm_set_log_callback(NULL, NULL));
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(huge_command_name_and_args),
        TEST(huge_event_names_and_filters),
        TEST(huge_configuration),
        TEST(json_of_the_wrong_shape),
        TEST(odd_but_valid_json_reaches_qemu),
        TEST(every_call_in_every_state),
        TEST(hammer_one_handle),
        TEST(regression_write_timeout_desyncs_the_connection),
        TEST(regression_command_after_shutdown_is_state_not_disconnected),
        TEST(regression_write_error_loses_what_qemu_sent),
        TEST(regression_send_fd_to_exited_qemu_is_io),
        TEST(regression_failed_launch_keeps_the_previous_exit_code),
        TEST(regression_command_during_launch_overtakes_the_handshake),
        TEST(regression_timeout_not_honoured_while_another_thread_writes),
        TEST(regression_temp_dir_error_has_no_errno),
        TEST(regression_double_free_hangs),
    };
    int rc = RUN_TESTS(tests);
    alarm(0);
    return rc;
}
