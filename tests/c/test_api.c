/*
 * test_api.c: everything that needs no running QEMU: version, constants, the error and cancel
 * objects, event_match, the test guest's helpers, configuration and its getters, and misuse
 * (NULL in every pointer parameter, bad UTF-8, bad JSON, wrong shapes, bad timeouts, calls in
 * the wrong state).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static const char BAD_UTF8[] = {'a', (char)0xff, 'b', '\0'};

static void version_and_constants(void)
{
    char text[32];
    int s;
    /* The header's version macros are the library's version. */
    CHECK_STR(qm_version(), QM_VERSION_STRING);
    snprintf(text, sizeof text, "%d.%d.%d", QM_VERSION_MAJOR, QM_VERSION_MINOR, QM_VERSION_PATCH);
    CHECK_STR(qm_version(), text);
    CHECK_STR(qm_version(), "0.2.0");
    CHECK(qm_version() == qm_version()); /* static */
    /* qm_status_str names every status as check.c's own table does; anything else is unknown. */
    for (s = QM_OK; s <= QM_ERR_REFUSED; s++)
        CHECK_STR(qm_status_str(s), status_name((qm_status)s));
    CHECK_STR(qm_status_str(-1), "QM_ERR_UNKNOWN");
    CHECK_STR(qm_status_str(QM_ERR_REFUSED + 1), "QM_ERR_UNKNOWN");
    CHECK(QM_OK == 0);
    CHECK(QM_ERR_LAUNCH == 1 && QM_ERR_PANIC == 11 && QM_ERR_EVENTS_DROPPED == 12);
    CHECK(QM_WAIT_FOREVER == -1 && QM_WAIT_DEFAULT == -2);
    CHECK(QM_GUEST_MAX_BANNER == 380);
    CHECK(qm_guest_exit_status(0) == 1 && qm_guest_exit_status(1) == 3);
    CHECK(qm_guest_exit_status(200) == ((200 << 1) | 1) % 256);
}

static void free_null_is_a_noop(void)
{
    qm_free(NULL);
    qm_string_free(NULL);
    qm_error_free(NULL);
    qm_cancel_free(NULL);
    qm_cancel_fire(NULL);
    CHECK(!qm_cancel_is_fired(NULL));
}

static void error_accessors_on_null(void)
{
    int code = 42;
    CHECK(qm_error_status(NULL) == QM_OK);
    CHECK(qm_error_message(NULL) == NULL);
    CHECK(qm_error_qmp_class(NULL) == NULL);
    CHECK(qm_error_qmp_desc(NULL) == NULL);
    CHECK(qm_error_command(NULL) == NULL);
    CHECK(qm_error_output(NULL) == NULL);
    CHECK(!qm_error_exit_code(NULL, &code) && code == 42);
    CHECK(!qm_error_os_code(NULL, &code) && code == 42);
    CHECK(qm_error_cause(NULL) == QM_OK);
    CHECK(qm_error_cause_message(NULL) == NULL);
}

static void error_object_of_an_invalid_call(void)
{
    qm_error *err = NULL;
    qm_machine *m = (qm_machine *)0x1; /* must stay untouched */
    int code = 7;
    CHECK(qm_new(NULL, &m, &err) == QM_ERR_INVALID);
    CHECK(m == (qm_machine *)0x1);
    CHECK(err != NULL);
    CHECK(qm_error_status(err) == QM_ERR_INVALID);
    CHECK_HAS(qm_error_message(err), "qm_new");
    CHECK_HAS(qm_error_message(err), "binary is NULL");
    CHECK(qm_error_qmp_class(err) == NULL && qm_error_qmp_desc(err) == NULL);
    CHECK(qm_error_command(err) == NULL && qm_error_output(err) == NULL);
    CHECK(!qm_error_exit_code(err, &code) && code == 7);
    CHECK(!qm_error_os_code(err, &code) && code == 7);
    CHECK(!qm_error_exit_code(err, NULL));
    CHECK(qm_error_cause(err) == QM_OK);
    CHECK(qm_error_cause_message(err) == NULL);
    qm_error_free(err);
    /* A NULL err_out: the status alone. */
    CHECK(qm_new(NULL, &m, NULL) == QM_ERR_INVALID);
}

static void cancel_tokens(void)
{
    qm_cancel *c = qm_cancel_new();
    qm_cancel *d = qm_cancel_new();
    CHECK(c != NULL && d != NULL && c != d);
    CHECK(!qm_cancel_is_fired(c));
    qm_cancel_fire(c);
    CHECK(qm_cancel_is_fired(c));
    qm_cancel_fire(c); /* twice is harmless */
    CHECK(qm_cancel_is_fired(c) && !qm_cancel_is_fired(d));
    qm_cancel_free(c);
    qm_cancel_free(d);
}

static void event_match_rule(void)
{
    bool yes = false;
    /* The examples of QEMUMachine.event_match's docstring. */
    OK(qm_event_match("{\"foo\": 1}", NULL, &yes, &err));
    CHECK(yes);
    OK(qm_event_match("{\"foo\": {\"bar\": 1}}", "{\"foo\": null}", &yes, &err));
    CHECK(yes);
    OK(qm_event_match("{\"foo\": 5}", "{\"foo\": null}", &yes, &err));
    CHECK(yes);
    OK(qm_event_match("{\"foo\": {\"bar\": 1}}", "{\"foo\": {\"abc\": null}}", &yes, &err));
    CHECK(!yes);
    OK(qm_event_match("{\"foo\": {\"bar\": 1, \"rab\": 2}}", "{\"foo\": {\"rab\": 2}}", &yes, &err));
    CHECK(yes);
    OK(qm_event_match("{\"event\": \"STOP\"}", "{\"event\": \"RESUME\"}", &yes, &err));
    CHECK(!yes);
    INVALID(qm_event_match(NULL, NULL, &yes, &err), "event_json is NULL");
    INVALID(qm_event_match("{}", NULL, NULL, &err), "matches_out is NULL");
    INVALID(qm_event_match("{", NULL, &yes, &err), "event_json is not valid JSON");
    INVALID(qm_event_match("{}", "[", &yes, &err), "match_json is not valid JSON");
    INVALID(qm_event_match(BAD_UTF8, NULL, &yes, &err), "event_json is not valid UTF-8");
}

static void log_levels(void)
{
    OK(qm_set_log_level(QM_LOG_OFF, &err));
    OK(qm_set_log_level(QM_LOG_DEBUG, &err));
    OK(qm_set_log_level(QM_LOG_WARN, &err));
    INVALID(qm_set_log_level(3, &err), "level 3");
    INVALID(qm_set_log_level(-1, &err), "level -1");
}

static void guest_helpers(void)
{
    char *dir = make_temp_dir();
    char path[4200], *args = NULL;
    char big[QM_GUEST_MAX_BANNER + 2];
    struct stat st;
    snprintf(path, sizeof path, "%s/g.img", dir);
    OK(qm_guest_write_image(path, "hello", QM_GUEST_POWEROFF, 0, &err));
    CHECK(stat(path, &st) == 0 && st.st_size == 512);
    OK(qm_guest_write_image(path, "", QM_GUEST_EXIT, 5, &err));
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    INVALID(qm_guest_write_image(path, big, QM_GUEST_HALT, 0, &err), "banner");
    big[QM_GUEST_MAX_BANNER] = '\0';
    OK(qm_guest_write_image(path, big, QM_GUEST_HALT, 0, &err));
    INVALID(qm_guest_write_image(path, "x", 9, 0, &err), "action 9");
    INVALID(qm_guest_write_image(NULL, "x", QM_GUEST_ECHO, 0, &err), "path is NULL");
    INVALID(qm_guest_write_image(path, NULL, QM_GUEST_ECHO, 0, &err), "banner is NULL");
    INVALID(qm_guest_write_image(path, BAD_UTF8, QM_GUEST_ECHO, 0, &err), "banner is not valid UTF-8");
    FAILS(QM_ERR_IO, qm_guest_write_image("/nonexistent-dir/x.img", "x", QM_GUEST_ECHO, 0, &err));

    OK(qm_guest_qemu_args(path, &args, &err));
    CHECK(args[0] == '[');
    CHECK_HAS(args, "\"-machine\",\"pc\"");
    CHECK_HAS(args, path);
    CHECK_HAS(args, "isa-debug-exit");
    qm_string_free(args);
    INVALID(qm_guest_qemu_args(NULL, &args, &err), "image_path is NULL");
    INVALID(qm_guest_qemu_args(path, NULL, &err), "json_array_out is NULL");
    remove_dir(dir);
    free(dir);
}

static void configuration_and_getters(void)
{
    qm_machine *m = NULL;
    char *s = NULL, *dir = make_temp_dir(), sub[4200];
    const char *args[] = {"-S", "-name", "hello \"quoted\""};
    const char *wrapper[] = {"env", "A=1"};
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int code = 5;
    CHECK(fd >= 0);

    OK(qm_new("qemu-system-x86_64", &m, &err));
    OK(qm_get_binary(m, &s, &err));
    CHECK_STR(s, "qemu-system-x86_64");
    qm_string_free(s);
    OK(qm_get_name(m, &s, &err));
    CHECK(strncmp(s, "qm-", 3) == 0);
    qm_string_free(s);
    OK(qm_set_name(m, "vm-one", &err));
    OK(qm_get_name(m, &s, &err));
    CHECK_STR(s, "vm-one");
    qm_string_free(s);
    INVALID(qm_set_name(m, "a/b", &err), "machine name");
    INVALID(qm_set_name(m, "..", &err), "machine name");
    INVALID(qm_set_name(m, "", &err), "machine name");

    OK(qm_get_args(m, &s, &err));
    CHECK_STR(s, "[]");
    qm_string_free(s);
    OK(qm_add_args(m, args, 3, &err));
    OK(qm_add_args(m, NULL, 0, &err));
    OK(qm_add_monitor_null(m, &err));
    OK(qm_add_fd(m, fd, 3, "opq", NULL, &err));
    OK(qm_add_fd(m, fd, 4, "opq2", "x=y", &err));
    OK(qm_get_args(m, &s, &err));
    {
        char want[256];
        snprintf(want, sizeof want,
                 "[\"-S\",\"-name\",\"hello \\\"quoted\\\"\",\"-monitor\",\"null\","
                 "\"-add-fd\",\"fd=%d,set=3,opaque=opq\",\"-add-fd\",\"fd=%d,set=4,opaque=opq2,x=y\"]",
                 fd, fd);
        CHECK_STR(s, want);
    }
    qm_string_free(s);

    OK(qm_set_wrapper(m, wrapper, 2, &err));
    OK(qm_set_wrapper(m, NULL, 0, &err));
    OK(qm_set_wrapper(m, wrapper, 2, &err));
    snprintf(sub, sizeof sub, "%s/logs", dir);
    CHECK(mkdir(sub, 0700) == 0);
    OK(qm_set_log_dir(m, sub, &err));
    OK(qm_get_log_dir(m, &s, &err));
    CHECK_STR(s, sub);
    qm_string_free(s);
    snprintf(sub, sizeof sub, "%s/socks", dir);
    OK(qm_set_sock_dir(m, sub, &err));
    OK(qm_get_sock_dir(m, &s, &err));
    CHECK_STR(s, sub);
    qm_string_free(s);
    OK(qm_set_base_temp_dir(m, dir, &err));
    OK(qm_get_temp_dir(m, &s, &err));
    CHECK(strncmp(s, dir, strlen(dir)) == 0);
    CHECK_HAS(s, "qemu-machine-");
    {
        struct stat st;
        CHECK(stat(s, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
    }
    qm_string_free(s);

    OK(qm_set_monitor_socketpair(m, &err));
    OK(qm_set_monitor_unix(m, NULL, &err));
    OK(qm_set_monitor_unix(m, "/tmp/x.sock", &err));
    OK(qm_set_monitor_tcp(m, "127.0.0.1", 0, &err));
    OK(qm_set_drain_console(m, true, &err));
    OK(qm_set_console_log(m, "/tmp/console.log", &err));
    OK(qm_set_console_log(m, NULL, &err));
    OK(qm_set_qmp_timer(m, 1000, &err));
    OK(qm_set_qmp_timer(m, QM_WAIT_FOREVER, &err));
    INVALID(qm_set_qmp_timer(m, QM_WAIT_DEFAULT, &err), "timeout_ms");
    INVALID(qm_set_qmp_timer(m, -7, &err), "timeout_ms is -7");
    OK(qm_set_qmp_monitor(m, false, &err));
    OK(qm_set_qmp_monitor(m, true, &err));
    OK(qm_set_machine(m, "none", &err));
    OK(qm_set_console(m, NULL, 0, &err));
    OK(qm_set_console(m, "isa-serial", 2, &err));
    OK(qm_set_max_message_size(m, 1 << 20, &err));
    OK(qm_set_max_message_size(m, 0, &err));
    OK(qm_set_inherit_fds(m, true, &err));
    OK(qm_set_inherit_fds(m, false, &err));

    /* State before any launch. */
    CHECK(!qm_is_running(m));
    CHECK(qm_pid(m) == -1);
    CHECK(!qm_exit_code(m, &code) && code == 5);
    s = (char *)0x1;
    OK(qm_get_log(m, &s, &err));
    CHECK(s == NULL);
    OK(qm_get_command_line(m, &s, &err));
    CHECK_STR(s, "[]");
    qm_string_free(s);

    qm_free(m);
    close(fd);
    remove_dir(dir);
    free(dir);
}

static void state_queries_on_null(void)
{
    int code = 3;
    CHECK(!qm_is_running(NULL));
    CHECK(qm_pid(NULL) == -1);
    CHECK(!qm_exit_code(NULL, &code) && code == 3);
}

/* NULL in every pointer parameter that may not be NULL. */
static void null_pointers_everywhere(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    int fd = -1;
    bool yes;
    const char *one[] = {"x"}, *with_null[] = {"x", NULL};

    INVALID(qm_new("q", NULL, &err), "machine_out is NULL");
    INVALID(qm_new("", &m, &err), "binary is empty");
    INVALID(qm_new(BAD_UTF8, &m, &err), "binary is not valid UTF-8");

    INVALID(qm_add_args(NULL, one, 1, &err), "m is NULL");
    INVALID(qm_add_args(m, NULL, 1, &err), "args is NULL");
    INVALID(qm_add_args(m, with_null, 2, &err), "args[1] is NULL");
    INVALID(qm_set_wrapper(NULL, one, 1, &err), "m is NULL");
    INVALID(qm_set_wrapper(m, NULL, 2, &err), "argv is NULL");
    INVALID(qm_set_wrapper(m, with_null, 2, &err), "argv[1] is NULL");
    INVALID(qm_set_name(NULL, "n", &err), "m is NULL");
    INVALID(qm_set_name(m, NULL, &err), "name is NULL");
    INVALID(qm_set_base_temp_dir(NULL, "/tmp", &err), "m is NULL");
    INVALID(qm_set_base_temp_dir(m, NULL, &err), "dir is NULL");
    INVALID(qm_set_sock_dir(NULL, "/tmp", &err), "m is NULL");
    INVALID(qm_set_sock_dir(m, NULL, &err), "dir is NULL");
    INVALID(qm_set_log_dir(NULL, "/tmp", &err), "m is NULL");
    INVALID(qm_set_log_dir(m, NULL, &err), "dir is NULL");
    INVALID(qm_set_monitor_socketpair(NULL, &err), "m is NULL");
    INVALID(qm_set_monitor_unix(NULL, NULL, &err), "m is NULL");
    INVALID(qm_set_monitor_tcp(NULL, "h", 1, &err), "m is NULL");
    INVALID(qm_set_monitor_tcp(m, NULL, 1, &err), "host is NULL");
    INVALID(qm_set_drain_console(NULL, true, &err), "m is NULL");
    INVALID(qm_set_console_log(NULL, NULL, &err), "m is NULL");
    INVALID(qm_set_qmp_timer(NULL, 5, &err), "m is NULL");
    INVALID(qm_set_qmp_monitor(NULL, true, &err), "m is NULL");
    INVALID(qm_set_machine(NULL, "none", &err), "m is NULL");
    INVALID(qm_set_machine(m, NULL, &err), "machine_type is NULL");
    INVALID(qm_set_console(NULL, NULL, 0, &err), "m is NULL");
    INVALID(qm_add_monitor_null(NULL, &err), "m is NULL");
    INVALID(qm_add_fd(NULL, 0, 0, "o", NULL, &err), "m is NULL");
    INVALID(qm_add_fd(m, 0, 0, NULL, NULL, &err), "opaque is NULL");
    INVALID(qm_set_max_message_size(NULL, 5, &err), "m is NULL");
    INVALID(qm_set_inherit_fds(NULL, true, &err), "m is NULL");
    INVALID(qm_launch(NULL, QM_WAIT_DEFAULT, NULL, &err), "m is NULL");

    INVALID(qm_qmp(NULL, "c", NULL, 0, NULL, &s, &err), "m is NULL");
    INVALID(qm_qmp(m, NULL, NULL, 0, NULL, &s, &err), "cmd is NULL");
    INVALID(qm_qmp(m, "c", NULL, 0, NULL, NULL, &err), "response_out is NULL");
    INVALID(qm_cmd(NULL, "c", NULL, 0, NULL, &s, &err), "m is NULL");
    INVALID(qm_cmd(m, NULL, NULL, 0, NULL, &s, &err), "cmd is NULL");
    INVALID(qm_cmd(m, "c", NULL, 0, NULL, NULL, &err), "return_out is NULL");
    INVALID(qm_send_fd_scm(NULL, 0, &err), "m is NULL");
    INVALID(qm_send_file_scm(NULL, "/dev/null", &err), "m is NULL");
    INVALID(qm_send_file_scm(m, NULL, &err), "path is NULL");

    INVALID(qm_event_get(NULL, 0, NULL, &s, &err), "m is NULL");
    INVALID(qm_event_get(m, 0, NULL, NULL, &err), "event_out is NULL");
    INVALID(qm_events_get(NULL, 0, NULL, &s, &err), "m is NULL");
    INVALID(qm_events_get(m, 0, NULL, NULL, &err), "events_json_array_out is NULL");
    INVALID(qm_events_clear(NULL, &err), "m is NULL");
    INVALID(qm_event_wait(NULL, "STOP", NULL, 0, NULL, &s, &err), "m is NULL");
    INVALID(qm_event_wait(m, NULL, NULL, 0, NULL, &s, &err), "name is NULL");
    INVALID(qm_event_wait(m, "STOP", NULL, 0, NULL, NULL, &err), "event_out is NULL");
    INVALID(qm_events_wait(NULL, "[{\"name\":\"STOP\"}]", 0, NULL, &s, &err), "m is NULL");
    INVALID(qm_events_wait(m, NULL, 0, NULL, &s, &err), "filters_json is NULL");
    INVALID(qm_events_wait(m, "[{\"name\":\"STOP\"}]", 0, NULL, NULL, &err), "event_out is NULL");

    INVALID(qm_shutdown(NULL, false, 0, NULL, &err), "m is NULL");
    INVALID(qm_kill(NULL, &err), "m is NULL");
    INVALID(qm_wait(NULL, 0, NULL, &err), "m is NULL");

    INVALID(qm_get_log(NULL, &s, &err), "m is NULL");
    INVALID(qm_get_log(m, NULL, &err), "log_out is NULL");
    INVALID(qm_get_temp_dir(NULL, &s, &err), "m is NULL");
    INVALID(qm_get_temp_dir(m, NULL, &err), "dir_out is NULL");
    INVALID(qm_get_log_dir(NULL, &s, &err), "m is NULL");
    INVALID(qm_get_log_dir(m, NULL, &err), "dir_out is NULL");
    INVALID(qm_get_sock_dir(NULL, &s, &err), "m is NULL");
    INVALID(qm_get_sock_dir(m, NULL, &err), "dir_out is NULL");
    INVALID(qm_get_name(NULL, &s, &err), "m is NULL");
    INVALID(qm_get_name(m, NULL, &err), "name_out is NULL");
    INVALID(qm_get_binary(NULL, &s, &err), "m is NULL");
    INVALID(qm_get_binary(m, NULL, &err), "binary_out is NULL");
    INVALID(qm_get_args(NULL, &s, &err), "m is NULL");
    INVALID(qm_get_args(m, NULL, &err), "json_array_out is NULL");
    INVALID(qm_get_command_line(NULL, &s, &err), "m is NULL");
    INVALID(qm_get_command_line(m, NULL, &err), "json_array_out is NULL");
    INVALID(qm_console_fd(NULL, &fd, &err), "m is NULL");
    INVALID(qm_console_fd(m, NULL, &err), "fd_out is NULL");
    INVALID(qm_console_dup(NULL, &fd, &err), "m is NULL");
    INVALID(qm_console_dup(m, NULL, &err), "fd_out is NULL");
    INVALID(qm_event_match(NULL, "{}", &yes, &err), "event_json is NULL");

    CHECK(s == NULL && fd == -1); /* no output was written by a failed call */
    qm_free(m);
}

static void bad_utf8_everywhere(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    const char *args[] = {"ok", BAD_UTF8};
    INVALID(qm_add_args(m, args, 2, &err), "args[1] is not valid UTF-8");
    INVALID(qm_set_wrapper(m, args, 2, &err), "argv[1] is not valid UTF-8");
    INVALID(qm_set_name(m, BAD_UTF8, &err), "name is not valid UTF-8");
    INVALID(qm_set_base_temp_dir(m, BAD_UTF8, &err), "dir is not valid UTF-8");
    INVALID(qm_set_sock_dir(m, BAD_UTF8, &err), "dir is not valid UTF-8");
    INVALID(qm_set_log_dir(m, BAD_UTF8, &err), "dir is not valid UTF-8");
    INVALID(qm_set_monitor_unix(m, BAD_UTF8, &err), "path is not valid UTF-8");
    INVALID(qm_set_monitor_tcp(m, BAD_UTF8, 0, &err), "host is not valid UTF-8");
    INVALID(qm_set_console_log(m, BAD_UTF8, &err), "path is not valid UTF-8");
    INVALID(qm_set_machine(m, BAD_UTF8, &err), "machine_type is not valid UTF-8");
    INVALID(qm_set_console(m, BAD_UTF8, 0, &err), "device_type is not valid UTF-8");
    INVALID(qm_add_fd(m, 0, 0, BAD_UTF8, NULL, &err), "opaque is not valid UTF-8");
    INVALID(qm_add_fd(m, 0, 0, "o", BAD_UTF8, &err), "opts is not valid UTF-8");
    INVALID(qm_qmp(m, BAD_UTF8, NULL, 0, NULL, &s, &err), "cmd is not valid UTF-8");
    INVALID(qm_cmd(m, "query-status", BAD_UTF8, 0, NULL, &s, &err), "args_json is not valid UTF-8");
    INVALID(qm_send_file_scm(m, BAD_UTF8, &err), "path is not valid UTF-8");
    INVALID(qm_event_wait(m, BAD_UTF8, NULL, 0, NULL, &s, &err), "name is not valid UTF-8");
    INVALID(qm_event_wait(m, "STOP", BAD_UTF8, 0, NULL, &s, &err), "match_json is not valid UTF-8");
    INVALID(qm_events_wait(m, BAD_UTF8, 0, NULL, &s, &err), "filters_json is not valid UTF-8");
    CHECK(s == NULL);
    qm_free(m);
}

/* Bad JSON and JSON of the wrong shape are rejected before anything is sent. */
static void bad_json_everywhere(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    INVALID(qm_qmp(m, "query-status", "{", 0, NULL, &s, &err), "args_json is not valid JSON");
    INVALID(qm_qmp(m, "query-status", "", 0, NULL, &s, &err), "args_json is not valid JSON");
    INVALID(qm_cmd(m, "query-status", "[1,2]", 0, NULL, &s, &err), "args_json must be a JSON object");
    INVALID(qm_cmd(m, "query-status", "\"str\"", 0, NULL, &s, &err), "args_json must be a JSON object");
    INVALID(qm_cmd(m, "query-status", "42", 0, NULL, &s, &err), "args_json must be a JSON object");
    INVALID(qm_event_wait(m, "STOP", "{\"a\":", 0, NULL, &s, &err), "match_json is not valid JSON");
    INVALID(qm_event_wait(m, "STOP", "[]", 0, NULL, &s, &err), "match_json must be a JSON object");
    INVALID(qm_events_wait(m, "{}", 0, NULL, &s, &err), "filters_json");
    INVALID(qm_events_wait(m, "[]", 0, NULL, &s, &err), "empty");
    INVALID(qm_events_wait(m, "[1]", 0, NULL, &s, &err), "element 0");
    INVALID(qm_events_wait(m, "[{\"match\":{}}]", 0, NULL, &s, &err), "\"name\"");
    INVALID(qm_events_wait(m, "[{\"name\":\"A\"},{\"name\":\"B\",\"match\":5}]", 0, NULL, &s, &err),
            "element 1");
    INVALID(qm_events_wait(m, "[{\"name\":\"A\",\"mach\":{}}]", 0, NULL, &s, &err), "unknown key");
    INVALID(qm_events_wait(m, "[{\"name\":\"A\"", 0, NULL, &s, &err), "not valid JSON");
    CHECK(s == NULL);
    qm_free(m);
}

static void bad_timeouts_and_descriptors(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    int fds[2];
    INVALID(qm_qmp(m, "query-status", NULL, -3, NULL, &s, &err), "timeout_ms is -3");
    INVALID(qm_event_get(m, QM_WAIT_DEFAULT, NULL, &s, &err), "no default wait");
    INVALID(qm_event_wait(m, "STOP", NULL, -100, NULL, &s, &err), "timeout_ms is -100");
    INVALID(qm_events_get(m, QM_WAIT_DEFAULT, NULL, &s, &err), "no default wait");
    INVALID(qm_shutdown(m, false, -5, NULL, &err), "timeout_ms is -5");
    INVALID(qm_shutdown(m, true, -5, NULL, &err), "timeout_ms is -5");
    INVALID(qm_wait(m, -5, NULL, &err), "timeout_ms is -5");
    INVALID(qm_add_fd(m, -1, 0, "o", NULL, &err), "fd (-1) is not an open file descriptor");
    CHECK(pipe(fds) == 0);
    close(fds[0]);
    close(fds[1]);
    INVALID(qm_add_fd(m, fds[0], 0, "o", NULL, &err), "is not an open file descriptor");
    INVALID(qm_send_fd_scm(m, fds[1], &err), "is not an open file descriptor");
    INVALID(qm_send_fd_scm(m, -1, &err), "fd (-1)");
    CHECK(s == NULL);
    qm_free(m);
}

/* Calls that need a launched machine fail with QM_ERR_STATE before the launch. */
static void wrong_state_before_launch(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    int fd = -1, devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(devnull >= 0);
    FAILS(QM_ERR_STATE, qm_qmp(m, "query-status", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    FAILS(QM_ERR_STATE, qm_cmd(m, "query-status", NULL, 1000, NULL, &s, &err));
    FAILS(QM_ERR_STATE, qm_event_get(m, 0, NULL, &s, &err));
    FAILS(QM_ERR_STATE, qm_events_get(m, 0, NULL, &s, &err));
    FAILS(QM_ERR_STATE, qm_event_wait(m, "STOP", NULL, 10, NULL, &s, &err));
    FAILS(QM_ERR_STATE, qm_events_wait(m, "[{\"name\":\"STOP\"}]", 10, NULL, &s, &err));
    FAILS(QM_ERR_STATE, qm_console_fd(m, &fd, &err));
    FAILS(QM_ERR_STATE, qm_console_dup(m, &fd, &err));
    FAILS(QM_ERR_STATE, qm_send_fd_scm(m, devnull, &err));
    FAILS(QM_ERR_STATE, qm_send_file_scm(m, "/dev/null", &err));
    OK(qm_events_clear(m, &err));
    /* Shutting down a machine that never ran is harmless. */
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_shutdown(m, true, 0, NULL, &err));
    OK(qm_kill(m, &err));
    OK(qm_wait(m, 0, NULL, &err));
    CHECK(s == NULL && fd == -1);
    close(devnull);
    qm_free(m);
}

/* A token that already fired interrupts a call before it does anything, except the shutdown
 * calls, for which an interruption means "stop waiting, kill QEMU". */
static void fired_token_is_sticky(void)
{
    qm_machine *m = new_none();
    qm_cancel *c = qm_cancel_new();
    char *s = NULL;
    int code = 0;
    qm_cancel_fire(c);
    FAILS(QM_ERR_INTERRUPTED, qm_launch(m, QM_WAIT_DEFAULT, c, &err));
    CHECK(!qm_is_running(m));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    FAILS(QM_ERR_INTERRUPTED, qm_qmp(m, "query-status", NULL, QM_WAIT_FOREVER, c, &s, &err));
    FAILS(QM_ERR_INTERRUPTED, qm_event_wait(m, "STOP", NULL, QM_WAIT_FOREVER, c, &s, &err));
    CHECK(s == NULL);
    CHECK(qm_is_running(m));
    {
        /* The error says why QEMU had to be killed. */
        qm_error *e = NULL;
        CHECK(qm_shutdown(m, false, QM_WAIT_DEFAULT, c, &e) == QM_ERR_ABNORMAL_SHUTDOWN);
        CHECK(qm_error_cause(e) == QM_ERR_INTERRUPTED);
        CHECK_HAS(qm_error_cause_message(e), "interrupted");
        qm_error_free(e);
    }
    CHECK(!qm_is_running(m));
    CHECK(qm_exit_code(m, &code) && code == -9);
    OK(qm_wait(m, 0, c, &err)); /* not launched any more: nothing to do */
    qm_cancel_free(c);
    qm_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(version_and_constants),
        TEST(free_null_is_a_noop),
        TEST(error_accessors_on_null),
        TEST(error_object_of_an_invalid_call),
        TEST(cancel_tokens),
        TEST(event_match_rule),
        TEST(log_levels),
        TEST(guest_helpers),
        TEST(configuration_and_getters),
        TEST(state_queries_on_null),
        TEST(null_pointers_everywhere),
        TEST(bad_utf8_everywhere),
        TEST(bad_json_everywhere),
        TEST(bad_timeouts_and_descriptors),
        TEST(wrong_state_before_launch),
        TEST(fired_token_is_sticky),
    };
    return RUN_TESTS(tests);
}
