/*
 * test_qmp.c: the life of a machine against a real QEMU (`-machine none`): launch, qmp and cmd,
 * QMP errors, timeouts, state, shutdown variants, monitors on unix and TCP sockets, QMP off,
 * wrappers, the message size cap, and qm_free on a running machine.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static void launch_qmp_event_shutdown(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    int code = -100;
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_is_running(m));
    CHECK(qm_pid(m) > 0);
    CHECK(!qm_exit_code(m, &code) && code == -100);

    OK(qm_qmp(m, "query-status", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    CHECK(s[0] == '{');
    CHECK_HAS(s, "\"return\":{");
    CHECK_HAS(s, "\"status\":\"running\"");
    qm_string_free(s);
    OK(qm_cmd(m, "query-status", "null", 5000, NULL, &s, &err));
    CHECK(s[0] == '{');
    CHECK_HAS(s, "\"running\":true");
    qm_string_free(s);

    OK(qm_cmd(m, "stop", "{}", QM_WAIT_FOREVER, NULL, &s, &err));
    CHECK_STR(s, "{}");
    qm_string_free(s);
    OK(qm_event_wait(m, "STOP", NULL, 10000, NULL, &s, &err));
    CHECK_HAS(s, "\"event\":\"STOP\"");
    CHECK_HAS(s, "\"timestamp\":{");
    qm_string_free(s);

    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(!qm_is_running(m));
    CHECK(qm_pid(m) == -1);
    CHECK(qm_exit_code(m, &code) && code == 0);
    CHECK(qm_exit_code(m, NULL));
    /* The SHUTDOWN event of the quit stays readable after the shutdown. */
    OK(qm_event_wait(m, "SHUTDOWN", "{\"data\":{\"reason\":\"host-qmp-quit\"}}", 0, NULL, &s, &err));
    CHECK(s != NULL);
    CHECK_HAS(s, "\"guest\":false");
    qm_string_free(s);
    s = NULL;
    OK(qm_get_log(m, &s, &err));
    CHECK(s != NULL); /* QEMU printed nothing, but there is a log now */
    qm_string_free(s);
    qm_free(m);
}

static void qmp_errors_have_class_and_desc(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    qm_error *err = NULL;

    /* qm_qmp returns the error response as a success. */
    OK(qm_qmp(m, "no-such-command", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    CHECK_HAS(s, "\"error\":{");
    CHECK_HAS(s, "\"class\":\"CommandNotFound\"");
    qm_string_free(s);
    s = NULL;

    CHECK(qm_cmd(m, "no-such-command", NULL, QM_WAIT_DEFAULT, NULL, &s, &err) == QM_ERR_QMP);
    CHECK(s == NULL);
    CHECK(qm_error_status(err) == QM_ERR_QMP);
    CHECK_STR(qm_error_qmp_class(err), "CommandNotFound");
    CHECK_HAS(qm_error_qmp_desc(err), "no-such-command");
    CHECK_HAS(qm_error_message(err), "CommandNotFound");
    CHECK(qm_error_command(err) == NULL && qm_error_output(err) == NULL);
    qm_error_free(err);
    err = NULL;

    CHECK(qm_cmd(m, "human-monitor-command", "{\"command-line\": 5}", QM_WAIT_DEFAULT, NULL, &s,
                 &err) == QM_ERR_QMP);
    CHECK_STR(qm_error_qmp_class(err), "GenericError");
    CHECK(qm_error_qmp_desc(err)[0] != '\0');
    qm_error_free(err);

    /* The connection is still fine. */
    s = cmd_ok(m, "query-version", NULL);
    CHECK_HAS(s, "\"qemu\":{");
    qm_string_free(s);
    s = cmd_ok(m, "human-monitor-command", "{\"command-line\": \"info version\"}");
    CHECK(s[0] == '"');
    qm_string_free(s);
    shutdown_free(m);
}

static void wrong_state_after_launch(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    int fd = -1;
    FAILS(QM_ERR_STATE, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_is_running(m));
    FAILS(QM_ERR_STATE, qm_console_fd(m, &fd, &err)); /* no console configured */
    CHECK(fd == -1);
    OK(qm_shutdown(m, false, 10000, NULL, &err));
    OK(qm_shutdown(m, false, 10000, NULL, &err)); /* twice: harmless */
    OK(qm_kill(m, &err));
    OK(qm_wait(m, 0, NULL, &err));
    /* After the shutdown commands are a state error; the handle stays usable. */
    FAILS(QM_ERR_STATE, qm_cmd(m, "query-status", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    FAILS(QM_ERR_STATE, qm_send_file_scm(m, "/dev/null", &err));
    OK(qm_events_get(m, 0, NULL, &s, &err)); /* the events queued before stay readable */
    CHECK_HAS(s, "SHUTDOWN");
    qm_string_free(s);
    s = NULL;
    OK(qm_event_get(m, 0, NULL, &s, &err));
    CHECK(s == NULL);
    /* A machine can be launched again after a shutdown. */
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    s = cmd_ok(m, "query-status", NULL);
    qm_string_free(s);
    shutdown_free(m);
}

static void timeouts_and_default_timer(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    double t0;
    OK(qm_set_qmp_timer(m, 20000, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    /* Nothing emits an event here: a bounded wait times out, a zero wait just looks. */
    t0 = now_ms();
    FAILS(QM_ERR_TIMEOUT, qm_event_get(m, 100, NULL, &s, &err));
    CHECK(now_ms() - t0 >= 95);
    FAILS(QM_ERR_TIMEOUT, qm_event_wait(m, "RESUME", NULL, 50, NULL, &s, &err));
    FAILS(QM_ERR_TIMEOUT, qm_events_get(m, 50, NULL, &s, &err));
    FAILS(QM_ERR_TIMEOUT, qm_events_wait(m, "[{\"name\":\"RESUME\"}]", 50, NULL, &s, &err));
    OK(qm_event_get(m, 0, NULL, &s, &err));
    CHECK(s == NULL);
    OK(qm_event_wait(m, "RESUME", NULL, 0, NULL, &s, &err));
    CHECK(s == NULL);
    OK(qm_events_get(m, 0, NULL, &s, &err));
    CHECK_STR(s, "[]");
    qm_string_free(s);
    /* A command cannot "just look": zero is refused and nothing is sent (no STOP, still
     * running). */
    INVALID(qm_cmd(m, "stop", NULL, 0, NULL, &s, &err), "nothing was sent");
    INVALID(qm_qmp(m, "stop", NULL, 0, NULL, &s, &err), "nothing was sent");
    s = cmd_ok(m, "query-status", NULL);
    CHECK_HAS(s, "\"running\"");
    qm_string_free(s);
    /* QM_WAIT_DEFAULT with a cancel token uses the QMP timer too. */
    {
        qm_cancel *c = qm_cancel_new();
        OK(qm_cmd(m, "query-status", NULL, QM_WAIT_DEFAULT, c, &s, &err));
        qm_string_free(s);
        OK(qm_set_qmp_timer(m, QM_WAIT_FOREVER, &err));
        OK(qm_cmd(m, "query-status", NULL, QM_WAIT_DEFAULT, c, &s, &err));
        qm_string_free(s);
        qm_cancel_free(c);
    }
    shutdown_free(m);
}

static void launch_timer_applies_to_handshake(void)
{
    /* A wrapper that sleeps before exec'ing QEMU makes the QMP handshake late. */
    qm_machine *m = new_none();
    const char *wrapper[] = {"sh", "-c", "sleep 5; exec \"$0\" \"$@\""};
    qm_error *err = NULL;
    double t0;
    OK(qm_set_wrapper(m, wrapper, 3, &err));
    OK(qm_set_qmp_timer(m, 300, &err));
    t0 = now_ms();
    CHECK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err) == QM_ERR_LAUNCH);
    CHECK(now_ms() - t0 < 4500);
    CHECK(qm_error_cause(err) == QM_ERR_TIMEOUT);
    CHECK(!qm_error_exit_code(err, NULL)); /* still running at the timeout: killed */
    CHECK_HAS(qm_error_command(err), "sh -c sleep 5");
    qm_error_free(err);
    CHECK(!qm_is_running(m));
    qm_free(m);
}

static void command_line_and_log(void)
{
    char *dir = make_temp_dir(), *s = NULL, path[4200];
    const char *args[] = {"-name", "cline-test"};
    const char *wrapper[] = {"env", "QM_C_TEST=1"};
    qm_machine *m = new_none();
    struct stat st;
    OK(qm_set_name(m, "cline", &err));
    OK(qm_add_args(m, args, 2, &err));
    OK(qm_set_wrapper(m, wrapper, 2, &err));
    OK(qm_set_log_dir(m, dir, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_get_command_line(m, &s, &err));
    CHECK(strncmp(s, "[\"env\",\"QM_C_TEST=1\",\"", 21) == 0);
    CHECK_HAS(s, "\"-machine\",\"none\"");
    CHECK_HAS(s, "\"-name\",\"cline-test\"]");
    CHECK_HAS(s, "mode=control");
    qm_string_free(s);
    snprintf(path, sizeof path, "%s/cline.log", dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    s = cmd_ok(m, "human-monitor-command", "{\"command-line\": \"info name\"}");
    CHECK_HAS(s, "cline-test");
    qm_string_free(s);
    s = (char *)0x1;
    OK(qm_get_log(m, &s, &err));
    CHECK(s == NULL); /* no log while QEMU runs */
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(stat(path, &st) == 0); /* the log dir is the caller's: the log stays */
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

static void monitor_on_unix_socket(void)
{
    char *dir = make_temp_dir(), *s = NULL, path[4200];
    qm_machine *m = new_none();
    struct stat st;
    snprintf(path, sizeof path, "%s/mon.sock", dir);
    OK(qm_set_monitor_unix(m, path, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
    s = cmd_ok(m, "query-status", NULL);
    qm_string_free(s);
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(stat(path, &st) != 0); /* removed at shutdown */

    /* NULL: <sock_dir>/<name>-monitor.sock */
    OK(qm_set_sock_dir(m, dir, &err));
    OK(qm_set_name(m, "unixvm", &err));
    OK(qm_set_monitor_unix(m, NULL, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    snprintf(path, sizeof path, "%s/unixvm-monitor.sock", dir);
    CHECK(stat(path, &st) == 0);
    s = cmd_ok(m, "query-status", NULL);
    qm_string_free(s);
    shutdown_free(m);
    remove_dir(dir);
    free(dir);
}

static void monitor_on_tcp(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    OK(qm_set_monitor_tcp(m, "127.0.0.1", 0, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_get_command_line(m, &s, &err));
    CHECK_HAS(s, "host=127.0.0.1,port=");
    qm_string_free(s);
    s = cmd_ok(m, "query-status", NULL);
    qm_string_free(s);
    shutdown_free(m);
}

static void without_qmp_shutdown_uses_sigterm(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    int code = 1;
    OK(qm_set_qmp_monitor(m, false, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_is_running(m));
    FAILS(QM_ERR_STATE, qm_cmd(m, "query-status", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    FAILS(QM_ERR_STATE, qm_event_get(m, 0, NULL, &s, &err));
    OK(qm_shutdown(m, false, 10000, NULL, &err));
    /* QEMU exits with 0 on SIGTERM, or dies of it when it comes before QEMU set its handler
     * (without QMP, launch returns as soon as QEMU is started). */
    CHECK(qm_exit_code(m, &code));
    CHECK(code == 0 || code == -SIGTERM);
    qm_free(m);
}

static void kill_and_hard_shutdown(void)
{
    qm_machine *m = launch_none();
    int code = 0;
    OK(qm_kill(m, &err));
    CHECK(!qm_is_running(m));
    CHECK(qm_exit_code(m, &code) && code == -SIGKILL);
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_shutdown(m, true, QM_WAIT_FOREVER, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == -SIGKILL);
    qm_free(m);
}

static void wait_for_qemu_to_exit_by_itself(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    int code = 1;
    /* Nothing makes QEMU exit: the wait times out, QEMU is killed. */
    FAILS(QM_ERR_ABNORMAL_SHUTDOWN, qm_wait(m, 100, NULL, &err));
    CHECK(!qm_is_running(m));
    CHECK(qm_exit_code(m, &code) && code == -SIGKILL);
    /* A quit sent by hand: qm_wait then sees a clean exit. */
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_qmp(m, "quit", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    qm_string_free(s);
    OK(qm_wait(m, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == 0);
    qm_free(m);
}

static void shutdown_that_times_out_kills(void)
{
    /* A QEMU stopped with SIGSTOP cannot answer quit: the shutdown kills it. */
    qm_machine *m = launch_none();
    int code = 0;
    CHECK(kill((pid_t)qm_pid(m), SIGSTOP) == 0);
    FAILS(QM_ERR_ABNORMAL_SHUTDOWN, qm_shutdown(m, false, 200, NULL, &err));
    CHECK(!qm_is_running(m));
    CHECK(qm_exit_code(m, &code) && code == -SIGKILL);
    qm_free(m);
}

static void oversize_reply_is_a_protocol_error(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    OK(qm_set_max_message_size(m, 4096, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    /* query-qmp-schema is over 100 KiB. */
    FAILS(QM_ERR_PROTOCOL, qm_cmd(m, "query-qmp-schema", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    CHECK(s == NULL);
    /* The connection is gone; shutdown still ends QEMU (by SIGKILL if quit cannot be sent). */
    qm_shutdown(m, false, 5000, NULL, NULL);
    CHECK(!qm_is_running(m));
    qm_free(m);

    m = launch_none();
    s = cmd_ok(m, "query-qmp-schema", NULL);
    CHECK(strlen(s) > 65536);
    qm_string_free(s);
    shutdown_free(m);
}

static void free_shuts_a_running_machine_down(void)
{
    qm_machine *m = launch_none();
    pid_t pid = (pid_t)qm_pid(m);
    char *dir = NULL;
    struct stat st;
    CHECK(pid > 0);
    OK(qm_get_temp_dir(m, &dir, &err));
    CHECK(stat(dir, &st) == 0);
    qm_free(m);
    /* The process is reaped and the temporary directory removed. */
    CHECK(kill(pid, 0) != 0);
    CHECK(stat(dir, &st) != 0);
    qm_string_free(dir);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(launch_qmp_event_shutdown),
        TEST(qmp_errors_have_class_and_desc),
        TEST(wrong_state_after_launch),
        TEST(timeouts_and_default_timer),
        TEST(launch_timer_applies_to_handshake),
        TEST(command_line_and_log),
        TEST(monitor_on_unix_socket),
        TEST(monitor_on_tcp),
        TEST(without_qmp_shutdown_uses_sigterm),
        TEST(kill_and_hard_shutdown),
        TEST(wait_for_qemu_to_exit_by_itself),
        TEST(shutdown_that_times_out_kills),
        TEST(oversize_reply_is_a_protocol_error),
        TEST(free_shuts_a_running_machine_down),
    };
    return RUN_TESTS(tests);
}
