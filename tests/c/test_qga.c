/*
 * test_qga.c: the guest agent calls (qm_set_guest_agent, qm_agent_*, qm_exec_result_*):
 * hostile arguments, a machine whose guest never starts an agent (timeout, cancel), and
 * qemu-ga in the Linux test guest (exec, stdin, capped output, files, errors, guest-shutdown).
 *
 * The Linux guest comes from QM_LINUX_KERNEL + QM_LINUX_INITRD, or guest/linux/build run from
 * the repository root (as tests/c/run.sh does); without either, that test says so and skips.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define T_MS 60000
#define BOOT_MS 180000

static const char *const NO_OS[] = {"-nodefaults", "-accel", "tcg"};

static void hostile_arguments(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    int64_t ns = 0;
    qm_exec_result *r = NULL;
    int code = 0;

    INVALID(qm_set_guest_agent(NULL, true, &err), "m");
    INVALID(qm_agent_ping(NULL, T_MS, NULL, &err), "m");
    INVALID(qm_agent_cmd(m, NULL, NULL, T_MS, NULL, &s, &err), "cmd");
    INVALID(qm_agent_cmd(m, "guest-ping", "{", T_MS, NULL, &s, &err), "args_json");
    INVALID(qm_agent_cmd(m, "guest-ping", "[1]", T_MS, NULL, &s, &err), "args_json");
    INVALID(qm_agent_cmd(m, "guest-ping", NULL, T_MS, NULL, NULL, &err), "return_out");
    INVALID(qm_agent_execute(m, "guest-ping", NULL, -7, NULL, &s, &err), "timeout_ms");
    INVALID(qm_agent_exec(m, NULL, NULL, 0, NULL, 0, NULL, 0, true, 0, QM_WAIT_DEFAULT, T_MS,
                          NULL, &r, &err),
            "path");
    INVALID(qm_agent_exec(m, "true", NULL, 2, NULL, 0, NULL, 0, true, 0, QM_WAIT_DEFAULT, T_MS,
                          NULL, &r, &err),
            "argv");
    INVALID(qm_agent_exec(m, "true", NULL, 0, NULL, 0, NULL, 5, true, 0, QM_WAIT_DEFAULT, T_MS,
                          NULL, &r, &err),
            "input");
    INVALID(qm_agent_exec(m, "true", NULL, 0, NULL, 0, NULL, 0, true, 0, 0, T_MS, NULL, &r, &err),
            "interval_ms");
    INVALID(qm_agent_exec(m, "true", NULL, 0, NULL, 0, NULL, 0, true, 0, QM_WAIT_DEFAULT, T_MS,
                          NULL, NULL, &err),
            "result_out");
    INVALID(qm_agent_file_read(m, "/f", 10, T_MS, NULL, &data, NULL, &err), "len_out");
    INVALID(qm_agent_file_write(m, "/f", NULL, 3, T_MS, NULL, &err), "data");
    INVALID(qm_agent_shutdown(m, "sideways", T_MS, NULL, &err), "mode");
    INVALID(qm_agent_get_time(m, T_MS, NULL, NULL, &err), "ns_out");
    /* Well-formed, but no agent: a state error, outputs untouched. */
    FAILS(QM_ERR_STATE, qm_agent_ping(m, T_MS, NULL, &err));
    FAILS(QM_ERR_STATE, qm_agent_file_read(m, "/f", 10, T_MS, NULL, &data, &len, &err));
    CHECK(data == NULL && len == 0);
    FAILS(QM_ERR_STATE, qm_agent_get_time(m, T_MS, NULL, &ns, &err));
    /* Result accessors and frees take NULL. */
    CHECK(!qm_exec_result_exit_code(NULL, &code));
    CHECK(!qm_exec_result_signal(NULL, &code));
    CHECK(qm_exec_result_pid(NULL) == -1);
    CHECK(qm_exec_result_stdout(NULL, &len) == NULL && len == 0);
    CHECK(!qm_exec_result_stdout_truncated(NULL));
    qm_exec_result_free(NULL);
    qm_bytes_free(NULL, 0);
    qm_free(m);
}

struct canceller {
    qm_cancel *cancel;
    int delay_ms;
};

static void *fire_later(void *arg)
{
    struct canceller *c = arg;
    usleep((useconds_t)c->delay_ms * 1000);
    qm_cancel_fire(c->cancel);
    return NULL;
}

static void no_agent_times_out_and_cancels(void)
{
    qm_machine *m = new_none();
    qm_cancel *cancel = qm_cancel_new();
    struct canceller c = {cancel, 300};
    pthread_t th;
    double t0;
    qm_error *e = NULL;

    /* new_none set -machine none; the agent needs a PCI bus. */
    OK(qm_set_machine(m, "q35", &err));
    OK(qm_add_args(m, (const char *const *)NO_OS, sizeof NO_OS / sizeof NO_OS[0], &err));
    OK(qm_set_guest_agent(m, true, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));

    CHECK(qm_agent_sync(m, 1500, NULL, &e) == QM_ERR_TIMEOUT);
    CHECK_HAS(qm_error_message(e), "is qemu-ga running");
    qm_error_free(e);

    CHECK(pthread_create(&th, NULL, fire_later, &c) == 0);
    t0 = now_ms();
    FAILS(QM_ERR_INTERRUPTED, qm_agent_ping(m, QM_WAIT_FOREVER, cancel, &err));
    CHECK(now_ms() - t0 < 5000);
    pthread_join(th, NULL);
    qm_cancel_free(cancel);

    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    FAILS(QM_ERR_STATE, qm_agent_ping(m, T_MS, NULL, &err));
    qm_free(m);
}

/* The Linux guest's kernel and initrd, or 0 (after saying why). */
static int linux_guest(char *kernel, char *initrd, size_t size)
{
    const char *k = getenv("QM_LINUX_KERNEL"), *i = getenv("QM_LINUX_INITRD");
    char line[4096];
    FILE *p;
    if (k && i) {
        snprintf(kernel, size, "%s", k);
        snprintf(initrd, size, "%s", i);
        return 1;
    }
    if (access("guest/linux/build", X_OK) != 0) {
        printf("SKIP: no Linux guest: set QM_LINUX_KERNEL and QM_LINUX_INITRD, or run from a "
               "checkout with guest/linux/build\n");
        return 0;
    }
    p = popen("guest/linux/build --print-paths 2>/dev/null", "r");
    CHECK(p != NULL);
    if (!fgets(line, sizeof line, p)) {
        pclose(p);
        check_fail_(__FILE__, __LINE__, "guest/linux/build --print-paths printed nothing");
    }
    pclose(p);
    CHECK(sscanf(line, "KERNEL=%1023s INITRD=%1023s", kernel, initrd) == 2);
    return 1;
}

struct pinger {
    qm_machine *m;
    int id;
    int failures;
};

/* A worker thread: its own exec and pings, on the machine all threads share. */
static void *ping_and_echo(void *arg)
{
    struct pinger *p = arg;
    char word[32];
    const char *argv[1] = {word};
    int i;
    for (i = 0; i < 5; i++) {
        qm_exec_result *r = NULL;
        qm_error *e = NULL;
        size_t len = 0;
        const uint8_t *out;
        snprintf(word, sizeof word, "t%d-%d", p->id, i);
        if (qm_agent_exec(p->m, "echo", argv, 1, NULL, 0, NULL, 0, true, 0, QM_WAIT_DEFAULT, T_MS,
                          NULL, &r, &e) != QM_OK) {
            p->failures++;
            qm_error_free(e);
            continue;
        }
        out = qm_exec_result_stdout(r, &len);
        if (len != strlen(word) + 1 || memcmp(out, word, len - 1) != 0)
            p->failures++;
        qm_exec_result_free(r);
        if (qm_agent_ping(p->m, T_MS, NULL, NULL) != QM_OK)
            p->failures++;
    }
    return NULL;
}

static void agent_in_the_linux_guest(void)
{
    char kernel[1024], initrd[1024], *s = NULL;
    qm_machine *m;
    qm_exec_result *r = NULL;
    const uint8_t *out;
    size_t len = 0, i;
    int code = -1;
    int64_t ns = 0;
    uint8_t *back = NULL, *data;
    qm_error *e = NULL;

    if (!linux_guest(kernel, initrd, sizeof kernel))
        return;
    OK(qm_new(qemu_binary(), &m, &err));
    OK(qm_linux_guest_add_args(m, kernel, initrd, &err));
    OK(qm_set_guest_agent(m, true, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_agent_sync(m, BOOT_MS, NULL, &err)); /* while the guest boots */
    OK(qm_agent_ping(m, QM_WAIT_DEFAULT, NULL, &err));

    OK(qm_agent_get_osinfo(m, T_MS, NULL, &s, &err));
    CHECK_HAS(s, "\"id\":\"qm-guest\"");
    qm_string_free(s);
    OK(qm_agent_get_time(m, T_MS, NULL, &ns, &err));
    CHECK(ns > INT64_C(1577836800000000000));

    {
        const char *argv[] = {"-c", "cat; echo oops >&2; exit 3"};
        const char *env[] = {"QM_TEST=1"};
        OK(qm_agent_exec(m, "sh", argv, 2, env, 1, (const uint8_t *)"in\0put", 6, true, 0,
                         QM_WAIT_DEFAULT, T_MS, NULL, &r, &err));
    }
    CHECK(qm_exec_result_exit_code(r, &code) && code == 3);
    CHECK(!qm_exec_result_signal(r, &code));
    CHECK(qm_exec_result_pid(r) > 0);
    out = qm_exec_result_stdout(r, &len);
    CHECK(len == 6 && memcmp(out, "in\0put", 6) == 0);
    out = qm_exec_result_stderr(r, &len);
    CHECK(len == 5 && memcmp(out, "oops\n", 5) == 0);
    CHECK(!qm_exec_result_stdout_truncated(r) && !qm_exec_result_stderr_truncated(r));
    qm_exec_result_free(r);

    {
        const char *argv[] = {"-c", "100000", "/dev/zero"};
        OK(qm_agent_exec(m, "head", argv, 3, NULL, 0, NULL, 0, true, 4096, 5, T_MS, NULL, &r,
                         &err));
    }
    out = qm_exec_result_stdout(r, &len);
    CHECK(len == 4096 && out[0] == 0 && out[4095] == 0);
    CHECK(qm_exec_result_stdout_truncated(r));
    qm_exec_result_free(r);

    /* Files: 1.5 MiB (two round trips) back and forth, every byte value. */
    len = 3 << 19;
    data = malloc(len);
    CHECK(data != NULL);
    for (i = 0; i < len; i++)
        data[i] = (uint8_t)(i * 131 + (i >> 9));
    OK(qm_agent_file_write(m, "/tmp/c-file", data, len, T_MS, NULL, &err));
    {
        size_t got = 0;
        OK(qm_agent_file_read(m, "/tmp/c-file", len, T_MS, NULL, &back, &got, &err));
        CHECK(got == len && memcmp(back, data, len) == 0);
        qm_bytes_free(back, got);
        back = NULL;
        CHECK(qm_agent_file_read(m, "/tmp/c-file", len - 1, T_MS, NULL, &back, &got, &e) ==
              QM_ERR_INVALID);
        CHECK_HAS(qm_error_message(e), "larger than the cap");
        qm_error_free(e);
        e = NULL;
        CHECK(back == NULL);
    }
    free(data);

    /* The agent's errors: QM_ERR_QMP with its class; raw form as a reply. */
    CHECK(qm_agent_cmd(m, "guest-file-open", "{\"path\":\"/no/such/f\"}", T_MS, NULL, &s, &e) ==
          QM_ERR_QMP);
    CHECK_STR(qm_error_qmp_class(e), "GenericError");
    CHECK_HAS(qm_error_qmp_desc(e), "/no/such/f");
    qm_error_free(e);
    OK(qm_agent_execute(m, "guest-nope", NULL, T_MS, NULL, &s, &err));
    CHECK_HAS(s, "CommandNotFound");
    qm_string_free(s);

    /* Four threads at once: each gets its own replies. */
    {
        pthread_t th[4];
        struct pinger p[4];
        for (i = 0; i < 4; i++) {
            p[i].m = m;
            p[i].id = (int)i;
            p[i].failures = 0;
            CHECK(pthread_create(&th[i], NULL, ping_and_echo, &p[i]) == 0);
        }
        for (i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            CHECK(p[i].failures == 0);
        }
    }

    OK(qm_agent_shutdown(m, NULL, T_MS, NULL, &err));
    OK(qm_event_wait(m, "SHUTDOWN", "{\"data\":{\"guest\":true}}", T_MS, NULL, &s, &err));
    CHECK_HAS(s, "guest-shutdown");
    qm_string_free(s);
    OK(qm_wait(m, T_MS, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == 0);
    FAILS(QM_ERR_STATE, qm_agent_ping(m, T_MS, NULL, &err));
    qm_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(hostile_arguments),
        TEST(no_agent_times_out_and_cancels),
        TEST(agent_in_the_linux_guest),
    };
    return RUN_TESTS(tests);
}
