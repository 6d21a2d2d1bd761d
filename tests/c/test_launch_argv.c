/*
 * test_launch_argv.c: the two-phase launch from C. qm_launch_prepare creates qm's descriptors
 * and returns the base arguments that name them; qm_launch_argv starts a caller-composed
 * command line around them, with extra inherited descriptors (a qtest socket, as QEMU's
 * QEMUQtestMachine adds); qm_launch_abort releases a prepared run. Also qm_last_pid and
 * qm_get_qmp_timer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

#define MAX_ARGS 64

/*
 * Splits a JSON array of strings (as qm_launch_prepare returns it) into `out`, copies the
 * caller frees with free_args. Handles the escapes \" and \\, which is all base arguments use.
 */
static size_t parse_args(const char *json, char **out, size_t max)
{
    size_t n = 0;
    const char *p = json;
    CHECK(*p == '[');
    p++;
    while (*p && *p != ']') {
        char *s, *w;
        if (*p == ',' || *p == ' ') {
            p++;
            continue;
        }
        CHECK(*p == '"');
        CHECK(n < max);
        s = w = malloc(strlen(p) + 1);
        CHECK(s != NULL);
        for (p++; *p && *p != '"'; p++) {
            if (*p == '\\')
                p++;
            *w++ = *p;
        }
        CHECK(*p == '"');
        p++;
        *w = '\0';
        out[n++] = s;
    }
    CHECK(*p == ']');
    return n;
}

static void free_args(char **args, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(args[i]);
}

static void prepare_then_launch_argv_with_a_qtest_socket(void)
{
    qm_machine *m = new_none();
    char *base = NULL, *again = NULL, *line = NULL, *chardevs;
    char *args[MAX_ARGS], buf[256], qtest_chardev[64];
    const char *argv[MAX_ARGS];
    size_t n, argc = 0;
    int sv[2];
    int64_t pid;

    OK(qm_set_console(m, NULL, 0, &err));
    OK(qm_launch_prepare(m, &base, &err));
    CHECK_HAS(base, "\"-mon\"");
    CHECK_HAS(base, "socket,id=mon,fd=");
    CHECK_HAS(base, "socket,id=console,fd=");
    /* Again while prepared: the same arguments. */
    OK(qm_launch_prepare(m, &again, &err));
    CHECK_STR(again, base);
    qm_string_free(again);

    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    snprintf(qtest_chardev, sizeof qtest_chardev, "socket,id=qtest,fd=%d", sv[1]);
    n = parse_args(base, args, MAX_ARGS);
    argv[argc++] = qemu_binary();
    for (size_t i = 0; i < n; i++)
        argv[argc++] = args[i];
    argv[argc++] = "-chardev";
    argv[argc++] = qtest_chardev;
    argv[argc++] = "-qtest";
    argv[argc++] = "chardev:qtest";
    OK(qm_launch_argv(m, argv, argc, &sv[1], 1, QM_WAIT_DEFAULT, NULL, &err));
    close(sv[1]);

    /* QEMU speaks qtest on the inherited descriptor, and QMP on the prepared one. */
    write_all(sv[0], "endianness\n");
    CHECK(read_until(sv[0], "\n", buf, sizeof buf, 30000));
    CHECK(strncmp(buf, "OK ", 3) == 0);
    chardevs = cmd_ok(m, "query-chardev", NULL);
    CHECK_HAS(chardevs, "\"qtest\"");
    CHECK_HAS(chardevs, "\"console\"");
    qm_string_free(chardevs);
    OK(qm_get_command_line(m, &line, &err));
    CHECK_HAS(line, "chardev:qtest");
    CHECK_HAS(line, qtest_chardev);
    qm_string_free(line);

    /* The pid stays readable through qm_last_pid after the exit. */
    pid = qm_pid(m);
    CHECK(pid > 0);
    CHECK(qm_last_pid(m) == pid);
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_pid(m) == -1);
    CHECK(qm_last_pid(m) == pid);
    close(sv[0]);
    free_args(args, n);
    qm_string_free(base);
    qm_free(m);
}

static void abort_and_free_release_a_prepared_run(void)
{
    qm_machine *m = new_none();
    char *base = NULL, *dir = NULL;
    int fds = count_fds();

    OK(qm_set_monitor_unix(m, NULL, &err));
    OK(qm_set_console(m, NULL, 0, &err));
    OK(qm_launch_prepare(m, &base, &err));
    CHECK(count_fds() > fds);
    OK(qm_get_temp_dir(m, &dir, &err));
    CHECK(access(dir, F_OK) == 0);
    OK(qm_launch_abort(m, &err));
    CHECK(count_fds() == fds);
    CHECK(access(dir, F_OK) != 0 && errno == ENOENT);
    /* Nothing prepared any more: aborting again does nothing. */
    OK(qm_launch_abort(m, &err));
    qm_string_free(base);
    qm_string_free(dir);

    /* qm_free releases a prepared run too. */
    OK(qm_launch_prepare(m, &base, &err));
    qm_string_free(base);
    qm_free(m);
    CHECK(count_fds() == fds);
}

static void a_missing_binary_is_the_usual_launch_error(void)
{
    qm_machine *m = new_none();
    qm_error *err = NULL;
    char *base = NULL, *args[MAX_ARGS];
    const char *argv[MAX_ARGS];
    size_t n, argc = 0;
    int code = 0, fds = count_fds();

    OK(qm_launch_prepare(m, &base, &err));
    n = parse_args(base, args, MAX_ARGS);
    argv[argc++] = "/nonexistent/qemu-system-x86_64";
    for (size_t i = 0; i < n; i++)
        argv[argc++] = args[i];
    CHECK(qm_launch_argv(m, argv, argc, NULL, 0, QM_WAIT_DEFAULT, NULL, &err) == QM_ERR_LAUNCH);
    CHECK(qm_error_cause(err) == QM_ERR_IO);
    CHECK(qm_error_os_code(err, &code) && code == ENOENT);
    CHECK(!qm_error_exit_code(err, &code));
    CHECK_HAS(qm_error_command(err), "/nonexistent/qemu-system-x86_64");
    qm_error_free(err);
    CHECK(qm_last_pid(m) == -1);
    CHECK(count_fds() == fds);
    free_args(args, n);
    qm_string_free(base);

    /* The failed launch released the prepared run: qm_launch starts afresh. */
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    shutdown_free(m);
}

static void launch_argv_without_prepare(void)
{
    qm_machine *m = new_none();
    const char *argv[] = {qemu_binary(), "-display", "none", "-machine", "none"};
    char *line = NULL;
    OK(qm_set_qmp_monitor(m, false, &err));
    OK(qm_launch_argv(m, argv, 5, NULL, 0, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_is_running(m));
    OK(qm_get_command_line(m, &line, &err));
    CHECK(strstr(line, "\"-display\",\"none\",\"-machine\",\"none\"]") != NULL);
    CHECK(strstr(line, "-vga") == NULL);
    qm_string_free(line);
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    qm_free(m);
}

static void wrong_state_and_bad_arguments(void)
{
    qm_machine *m = new_none();
    char *base = NULL, *again = NULL, *args[MAX_ARGS];
    const char *argv[MAX_ARGS];
    const char *nul_arg[] = {NULL};
    int stdout_fd[] = {1}, closed_fd[] = {-1};
    size_t n, argc = 0;
    qm_cancel *fired = qm_cancel_new();

    INVALID(qm_launch_prepare(NULL, &base, &err), "m");
    INVALID(qm_launch_prepare(m, NULL, &err), "base_args_out");
    INVALID(qm_launch_abort(NULL, &err), "m");
    OK(qm_launch_prepare(m, &base, &err));
    n = parse_args(base, args, MAX_ARGS);
    argv[argc++] = qemu_binary();
    for (size_t i = 0; i < n; i++)
        argv[argc++] = args[i];

    INVALID(qm_launch_argv(m, argv, 0, NULL, 0, QM_WAIT_DEFAULT, NULL, &err), "argv");
    INVALID(qm_launch_argv(m, NULL, 3, NULL, 0, QM_WAIT_DEFAULT, NULL, &err), "argv");
    INVALID(qm_launch_argv(m, nul_arg, 1, NULL, 0, QM_WAIT_DEFAULT, NULL, &err), "argv");
    INVALID(qm_launch_argv(m, argv, argc, NULL, 2, QM_WAIT_DEFAULT, NULL, &err), "extra_fds");
    INVALID(qm_launch_argv(m, argv, argc, closed_fd, 1, QM_WAIT_DEFAULT, NULL, &err),
            "extra_fds[0]");
    INVALID(qm_launch_argv(m, argv, argc, stdout_fd, 1, QM_WAIT_DEFAULT, NULL, &err), "stdout");
    INVALID(qm_launch_argv(m, argv, argc, NULL, 0, -7, NULL, &err), "timeout_ms");
    qm_cancel_fire(fired);
    FAILS(QM_ERR_INTERRUPTED,
          qm_launch_argv(m, argv, argc, NULL, 0, QM_WAIT_DEFAULT, fired, &err));
    /* None of those touched the prepared run. */
    OK(qm_launch_prepare(m, &again, &err));
    CHECK_STR(again, base);
    qm_string_free(again);

    OK(qm_launch_argv(m, argv, argc, NULL, 0, QM_WAIT_DEFAULT, NULL, &err));
    FAILS(QM_ERR_STATE, qm_launch_prepare(m, &again, &err));
    FAILS(QM_ERR_STATE, qm_launch_argv(m, argv, argc, NULL, 0, QM_WAIT_DEFAULT, NULL, &err));
    FAILS(QM_ERR_STATE, qm_launch_abort(m, &err));
    qm_string_free(cmd_ok(m, "query-status", NULL));
    free_args(args, n);
    qm_string_free(base);
    qm_cancel_free(fired);
    shutdown_free(m);
}

static void qmp_timer_getter(void)
{
    qm_machine *m = new_none();
    int64_t ms = 0;
    OK(qm_get_qmp_timer(m, &ms, &err));
    CHECK(ms == 30000);
    OK(qm_set_qmp_timer(m, QM_WAIT_FOREVER, &err));
    OK(qm_get_qmp_timer(m, &ms, &err));
    CHECK(ms == QM_WAIT_FOREVER);
    OK(qm_set_qmp_timer(m, 1234, &err));
    OK(qm_get_qmp_timer(m, &ms, &err));
    CHECK(ms == 1234);
    INVALID(qm_get_qmp_timer(m, NULL, &err), "timeout_ms_out");
    INVALID(qm_get_qmp_timer(NULL, &ms, &err), "m");
    CHECK(qm_last_pid(NULL) == -1);
    CHECK(qm_last_pid(m) == -1);
    qm_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(prepare_then_launch_argv_with_a_qtest_socket),
        TEST(abort_and_free_release_a_prepared_run),
        TEST(a_missing_binary_is_the_usual_launch_error),
        TEST(launch_argv_without_prepare),
        TEST(wrong_state_and_bad_arguments),
        TEST(qmp_timer_getter),
    };
    return RUN_TESTS(tests);
}
