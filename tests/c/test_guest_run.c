/* Guest tests end to end from C: clean endings (a QEMU that exited by itself with status 0 is
 * not an abnormal shutdown), and `qm_guest_run` in the real Linux guest, the same script over
 * the console and the agent.
 *
 * The Linux guest comes from QM_LINUX_KERNEL + QM_LINUX_INITRD (qm_linux_guest_qemu_args finds
 * them itself), or guest/linux/build --print-paths run from the repository root (as
 * tests/c/run.sh does); without either, those tests say so and skip. */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GUEST_TIMEOUT_MS 60000

/* Polls (a bound, never a timing assertion) until QEMU exited by itself. */
static void until_exited(qm_machine *m)
{
    double until = now_ms() + GUEST_TIMEOUT_MS;
    while (qm_is_running(m)) {
        CHECK(now_ms() < until);
        usleep(10000);
    }
}

/* A guest that ends at once, paused until QMP is up (one that ends during the handshake would
 * fail the launch on a loaded machine), then running. */
static qm_machine *launch_ending_guest(const char *dir, qm_guest_action action, unsigned char v)
{
    const char *paused[] = {"-S"};
    qm_machine *m = new_guest(dir, "bye", action, v, NULL);
    OK(qm_set_drain_console(m, true, &err));
    OK(qm_add_args(m, paused, 1, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    qm_string_free(cmd_ok(m, "cont", NULL));
    return m;
}

static void shutdown_after_poweroff_is_clean(void)
{
    char *dir = make_temp_dir();
    qm_machine *m = launch_ending_guest(dir, QM_GUEST_POWEROFF, 0);
    int code = -1;
    until_exited(m);
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == 0);
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

static void shutdown_after_a_nonzero_exit_is_abnormal(void)
{
    char *dir = make_temp_dir();
    qm_machine *m = launch_ending_guest(dir, QM_GUEST_EXIT, 1);
    int code = -1;
    until_exited(m);
    FAILS(QM_ERR_ABNORMAL_SHUTDOWN, qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == 3);
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

/* The Linux guest's arguments from the core helper, or NULL (after saying why). */
static char *linux_guest_args(void)
{
    char line[4096], kernel[1024], initrd[1024], *args = NULL;
    FILE *p;
    if (getenv("QM_LINUX_KERNEL") && getenv("QM_LINUX_INITRD")) {
        OK(qm_linux_guest_qemu_args(NULL, NULL, &args, &err));
        return args;
    }
    if (access("guest/linux/build", X_OK) != 0) {
        printf("SKIP: no Linux guest: set QM_LINUX_KERNEL and QM_LINUX_INITRD, or run from a "
               "checkout with guest/linux/build\n");
        return NULL;
    }
    p = popen("guest/linux/build --print-paths 2>/dev/null", "r");
    CHECK(p != NULL);
    if (!fgets(line, sizeof line, p)) {
        pclose(p);
        check_fail_(__FILE__, __LINE__, "guest/linux/build --print-paths printed nothing");
    }
    pclose(p);
    CHECK(sscanf(line, "KERNEL=%1023s INITRD=%1023s", kernel, initrd) == 2);
    OK(qm_linux_guest_qemu_args(kernel, initrd, &args, &err));
    return args;
}

static qm_machine *boot_linux(const char *args)
{
    qm_machine *m = NULL;
    OK(qm_new(qemu_binary(), &m, &err));
    add_json_args(m, args);
    OK(qm_set_console(m, NULL, 0, &err));
    OK(qm_set_guest_agent(m, true, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_guest_wait_ready(m, QM_CHANNEL_CONSOLE, 240000, NULL, &err));
    OK(qm_guest_wait_ready(m, QM_CHANNEL_AGENT, 240000, NULL, &err));
    return m;
}

/* Runs `cmd`, checks its status and stdout. */
static void run_expect(qm_machine *m, qm_channel ch, const char *cmd, int status, const void *want,
                       size_t want_len)
{
    qm_run_result *r = NULL;
    size_t len = 0;
    const uint8_t *out;
    OK(qm_guest_run(m, ch, cmd, GUEST_TIMEOUT_MS, NULL, &r, &err));
    CHECK(qm_run_result_status(r) == status);
    out = qm_run_result_stdout(r, &len);
    CHECK(len == want_len);
    CHECK(want_len == 0 || memcmp(out, want, want_len) == 0);
    qm_run_result_free(r);
}

/* The same script over both channels. */
static void script(qm_machine *m, qm_channel ch)
{
    static const uint8_t data[] = {0, 1, 2, '\'', '%', '\\', 0xff, '\r', '\n', 'z'};
    qm_run_result *r = NULL;
    uint8_t *back = NULL;
    size_t len = 0;
    const uint8_t *err_bytes;
    char *km = NULL;
    int code;
    run_expect(m, ch, "echo hello", 0, "hello\n", 6);
    run_expect(m, ch, "printf '\\000\\377a\\r\\n'; (exit 7)", 7, "\0\377a\r\n", 5);
    run_expect(m, ch, "printf 'QM-RUN-%s-E 0\\n' fake; echo z", 0, "QM-RUN-fake-E 0\nz\n", 18);
    for (code = 0; code <= 255; code += 51) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "(exit %d)", code);
        run_expect(m, ch, cmd, code, NULL, 0);
    }
    OK(qm_guest_run(m, ch, "echo out; echo err >&2", GUEST_TIMEOUT_MS, NULL, &r, &err));
    err_bytes = qm_run_result_stderr(r, &len);
    if (ch == QM_CHANNEL_AGENT) {
        CHECK(qm_run_result_has_stderr(r));
        CHECK(len == 4 && memcmp(err_bytes, "err\n", 4) == 0);
    } else {
        CHECK(!qm_run_result_has_stderr(r) && len == 0 && err_bytes == NULL);
        qm_run_result_stdout(r, &len);
        CHECK(len == 8);
    }
    OK(qm_run_result_kernel_messages(r, &km, &err));
    CHECK_STR(km, "[]");
    qm_string_free(km);
    qm_run_result_free(r);
    OK(qm_guest_write_file(m, ch, "/tmp/qm-c", data, sizeof data, GUEST_TIMEOUT_MS, NULL, &err));
    OK(qm_guest_read_file(m, ch, "/tmp/qm-c", 1 << 20, GUEST_TIMEOUT_MS, NULL, &back, &len, &err));
    CHECK(len == sizeof data && memcmp(back, data, len) == 0);
    qm_bytes_free(back, len);
    FAILS(QM_ERR_INVALID, qm_guest_run(m, 7, "true", GUEST_TIMEOUT_MS, NULL, &r, &err));
}

static void run_over_both_channels_in_the_linux_guest(void)
{
    char *args = linux_guest_args();
    qm_machine *m;
    qm_run_result *r = NULL;
    int code = -1;
    if (!args)
        return;
    m = boot_linux(args);
    script(m, QM_CHANNEL_CONSOLE);
    script(m, QM_CHANNEL_AGENT);
    /* A command that never ends: a timeout, Ctrl-C, and the next run works. */
    FAILS(QM_ERR_TIMEOUT, qm_guest_run(m, QM_CHANNEL_CONSOLE, "sleep 1000", 2000, NULL, &r, &err));
    run_expect(m, QM_CHANNEL_CONSOLE, "echo back", 0, "back\n", 5);
    /* The guest powering off during a run ends it at once; QEMU then ended cleanly. */
    FAILS(QM_ERR_CONSOLE_CLOSED, qm_guest_run(m, QM_CHANNEL_CONSOLE, "sleep 1; poweroff -f",
                                               GUEST_TIMEOUT_MS, NULL, &r, &err));
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == 0);
    qm_free(m);
    qm_string_free(args);
}

static void linux_guest_args_from_files(void)
{
    char *args = NULL;
    INVALID(qm_linux_guest_qemu_args("/nonexistent/vmlinuz", "/nonexistent/initrd", &args, &err),
            "no such file");
    INVALID(qm_linux_guest_qemu_args("/x", NULL, &args, &err), "both");
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(shutdown_after_poweroff_is_clean),
        TEST(shutdown_after_a_nonzero_exit_is_abnormal),
        TEST(linux_guest_args_from_files),
        TEST(run_over_both_channels_in_the_linux_guest),
    };
    return RUN_TESTS(tests);
}
