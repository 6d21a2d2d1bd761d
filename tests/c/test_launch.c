/*
 * test_launch.c: launch failures and their details: a bad QEMU argument (exit code 1 and QEMU's
 * message in the output), a missing binary (an I/O cause with ENOENT), QEMU dying before QMP,
 * an unusable socket path, and relaunching after a failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static void bad_argument_reports_exit_code_and_output(void)
{
    qm_machine *m = new_none();
    const char *args[] = {"-no-such-option-for-qm"};
    qm_error *err = NULL;
    char *s = NULL;
    int code = 0;
    double t0;
    OK(qm_add_args(m, args, 1, &err));
    OK(qm_set_qmp_timer(m, 60000, &err));
    t0 = now_ms();
    CHECK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err) == QM_ERR_LAUNCH);
    /* QEMU exits before greeting: the launch fails at once, not after the QMP timer. */
    CHECK(now_ms() - t0 < 30000);
    CHECK(qm_error_status(err) == QM_ERR_LAUNCH);
    CHECK(qm_error_exit_code(err, &code) && code == 1);
    CHECK_HAS(qm_error_output(err), "-no-such-option-for-qm");
    CHECK_HAS(qm_error_output(err), "invalid option");
    CHECK_HAS(qm_error_command(err), qemu_binary());
    CHECK_HAS(qm_error_command(err), "-no-such-option-for-qm");
    CHECK_HAS(qm_error_message(err), "launch failed");
    CHECK_HAS(qm_error_message(err), "Exit code: 1");
    CHECK_HAS(qm_error_message(err), "invalid option");
    CHECK(qm_error_cause(err) != QM_OK && qm_error_cause(err) != QM_ERR_LAUNCH);
    CHECK(qm_error_qmp_class(err) == NULL);
    qm_error_free(err);

    /* The machine is clean: nothing runs, the log is readable, the exit code is known. */
    CHECK(!qm_is_running(m));
    CHECK(qm_pid(m) == -1);
    CHECK(qm_exit_code(m, &code) && code == 1);
    OK(qm_get_log(m, &s, &err));
    CHECK_HAS(s, "invalid option");
    qm_string_free(s);
    qm_free(m);
}

static void missing_binary_is_an_io_cause(void)
{
    qm_machine *m = NULL;
    qm_error *err = NULL;
    int code = 0;
    OK(qm_new("/nonexistent/qemu-system-x86_64", &m, &err));
    CHECK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err) == QM_ERR_LAUNCH);
    CHECK(qm_error_cause(err) == QM_ERR_IO);
    CHECK(qm_error_os_code(err, &code) && code == ENOENT);
    CHECK(!qm_error_exit_code(err, &code)); /* it never ran */
    CHECK_HAS(qm_error_command(err), "/nonexistent/qemu-system-x86_64");
    CHECK(qm_error_output(err) != NULL);
    CHECK_HAS(qm_error_message(err), "/nonexistent/qemu-system-x86_64");
    qm_error_free(err);
    CHECK(!qm_is_running(m));
    CHECK(!qm_exit_code(m, NULL));
    qm_free(m);
}

static void qemu_dying_before_qmp(void)
{
    /* A wrapper that exits with 7 without running QEMU. */
    qm_machine *m = new_none();
    const char *wrapper[] = {"sh", "-c", "echo wrapper says no >&2; exit 7"};
    qm_error *err = NULL;
    int code = 0;
    OK(qm_set_wrapper(m, wrapper, 3, &err));
    CHECK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err) == QM_ERR_LAUNCH);
    CHECK(qm_error_exit_code(err, &code) && code == 7);
    CHECK_HAS(qm_error_output(err), "wrapper says no");
    CHECK(qm_error_cause(err) == QM_ERR_DISCONNECTED);
    qm_error_free(err);
    qm_free(m);
}

static void unusable_socket_path(void)
{
    qm_machine *m = new_none();
    char path[300];
    qm_error *err = NULL;
    memset(path, 0, sizeof path);
    strcpy(path, "/tmp/");
    memset(path + 5, 'x', 200);
    OK(qm_set_monitor_unix(m, path, &err));
    CHECK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err) == QM_ERR_LAUNCH);
    CHECK(qm_error_cause(err) == QM_ERR_INVALID);
    CHECK_HAS(qm_error_message(err), "longer than the 107 bytes");
    qm_error_free(err);
    OK(qm_set_monitor_unix(m, "/nonexistent-dir/mon.sock", &err));
    FAILS(QM_ERR_LAUNCH, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(!qm_is_running(m));
    qm_free(m);
}

static void relaunch_after_failure(void)
{
    qm_machine *m = NULL;
    const char *bad[] = {"-machine", "no-such-machine-type"};
    char *s = NULL;
    OK(qm_new(qemu_binary(), &m, &err));
    OK(qm_add_args(m, bad, 2, &err));
    FAILS(QM_ERR_LAUNCH, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    qm_free(m);

    /* The same handle launches fine once its configuration is fixed. */
    m = NULL;
    OK(qm_new("/nonexistent/qemu", &m, &err));
    FAILS(QM_ERR_LAUNCH, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    qm_free(m);
    m = new_none();
    OK(qm_set_wrapper(m, (const char *[]){"/nonexistent/wrapper"}, 1, &err));
    FAILS(QM_ERR_LAUNCH, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_set_wrapper(m, NULL, 0, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    s = cmd_ok(m, "query-status", NULL);
    qm_string_free(s);
    shutdown_free(m);
}

static void failed_launch_leaves_no_files(void)
{
    char *base = make_temp_dir(), cmd[4300];
    qm_machine *m = new_none();
    const char *args[] = {"-no-such-option-for-qm"};
    FILE *p;
    char line[64];
    OK(qm_set_base_temp_dir(m, base, &err));
    OK(qm_set_monitor_unix(m, NULL, &err));
    OK(qm_add_args(m, args, 1, &err));
    FAILS(QM_ERR_LAUNCH, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    snprintf(cmd, sizeof cmd, "find '%s' -mindepth 1 | wc -l", base);
    p = popen(cmd, "r");
    CHECK(p != NULL);
    CHECK(fgets(line, sizeof line, p) != NULL);
    pclose(p);
    CHECK(atoi(line) == 0);
    qm_free(m);
    remove_dir(base);
    free(base);
}

/* qm_launch's timeout_ms bounds the launch like every other blocking call: a QEMU that takes
 * longer to come up (here: a wrapper that sleeps first) fails with a timeout as the cause, and
 * overrides the QMP timer, which would have waited for it. */
static void launch_timeout_overrides_the_qmp_timer(void)
{
    qm_machine *m = new_none();
    const char *wrapper[] = {"sh", "-c", "sleep 5; exec \"$@\"", "sh"};
    qm_error *err = NULL;
    OK(qm_set_wrapper(m, wrapper, 4, &err));
    OK(qm_set_qmp_timer(m, 60000, &err));
    INVALID(qm_launch(m, -5, NULL, &err), "timeout_ms is -5");
    CHECK(qm_launch(m, 200, NULL, &err) == QM_ERR_LAUNCH);
    CHECK(qm_error_cause(err) == QM_ERR_TIMEOUT);
    qm_error_free(err);
    CHECK(!qm_is_running(m));
    qm_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(bad_argument_reports_exit_code_and_output),
        TEST(missing_binary_is_an_io_cause),
        TEST(qemu_dying_before_qmp),
        TEST(unusable_socket_path),
        TEST(relaunch_after_failure),
        TEST(failed_launch_leaves_no_files),
        TEST(launch_timeout_overrides_the_qmp_timer),
    };
    return RUN_TESTS(tests);
}
