/*
 * test_guest.c: the console and guest-initiated ends, with the 512-byte test guest
 * (qm_guest_*): read the banner from qm_console_fd, echo through it, power off from the guest
 * (SHUTDOWN event with guest:true, then qm_wait), exit through isa-debug-exit with a status,
 * a guest that never stops, the console drain and the console log.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define GUEST_TIMEOUT_MS 60000

static void console_banner_echo_and_poweroff(void)
{
    char *dir = make_temp_dir(), buf[4096], *s = NULL;
    qm_machine *m = new_guest(dir, "hello from the C test guest", QM_GUEST_ECHO, 0, NULL);
    int fd = -1, fd2 = -1, code = -1;
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_console_fd(m, &fd, &err));
    CHECK(fd >= 0);
    OK(qm_console_fd(m, &fd2, &err));
    CHECK(fd2 == fd); /* borrowed: the same descriptor each time */
    CHECK(read_until(fd, "hello from the C test guest\r\n", buf, sizeof buf, GUEST_TIMEOUT_MS));

    write_all(fd, "echo 42"); /* no p or x: those are commands */
    CHECK(read_until(fd, "echo 42", buf, sizeof buf, GUEST_TIMEOUT_MS));

    /* While the guest runs, QMP works too. */
    s = cmd_ok(m, "query-status", NULL);
    CHECK_HAS(s, "\"status\":\"running\"");
    qm_string_free(s);

    write_all(fd, "p"); /* the echo guest powers off on 'p' */
    OK(qm_event_wait(m, "SHUTDOWN", "{\"data\":{\"guest\":true}}", GUEST_TIMEOUT_MS, NULL, &s, &err));
    CHECK_HAS(s, "guest-shutdown");
    qm_string_free(s);
    OK(qm_wait(m, GUEST_TIMEOUT_MS, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == 0);
    /* The console is gone with the shutdown. */
    FAILS(QM_ERR_STATE, qm_console_fd(m, &fd, &err));
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

struct waiter {
    qm_machine *m;
    qm_status status;
    _Atomic int done;
};

static void *wait_for_exit(void *arg)
{
    struct waiter *w = arg;
    qm_error *err = NULL;
    w->status = qm_wait(w->m, 5000, NULL, &err);
    qm_error_free(err);
    w->done = 1;
    return NULL;
}

static void console_dup_is_owned_and_never_waits_for_a_shutdown(void)
{
    char *dir = make_temp_dir(), buf[4096];
    qm_machine *m = new_guest(dir, "dup guest", QM_GUEST_HALT, 0, NULL);
    struct waiter w = {.m = m};
    pthread_t t;
    int fd = -1, fd2 = -1;
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_console_dup(m, &fd, &err));
    CHECK(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC));
    OK(qm_console_fd(m, &fd2, &err));
    CHECK(fd != fd2); /* a new descriptor, the caller's */
    CHECK(read_until(fd, "dup guest\r\n", buf, sizeof buf, GUEST_TIMEOUT_MS));
    /* A halted guest never exits: qm_wait blocks for its 5 s, then kills QEMU. Meanwhile the
     * console calls answer instead of queueing behind it. */
    CHECK(pthread_create(&t, NULL, wait_for_exit, &w) == 0);
    usleep(200 * 1000);
    {
        int fd3 = -1;
        qm_error *e = NULL;
        qm_status st = qm_console_dup(m, &fd3, &e);
        CHECK(st == QM_OK || st == QM_ERR_STATE);
        if (st == QM_OK)
            close(fd3);
        qm_error_free(e);
    }
    CHECK(!w.done); /* answered while the wait was still going on */
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(w.status == QM_ERR_ABNORMAL_SHUTDOWN);
    /* Our copy outlives the machine's console: reading now gives end of file. */
    CHECK(read(fd, buf, sizeof buf) == 0);
    close(fd);
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

static void guest_exit_status(void)
{
    char *dir = make_temp_dir(), buf[256];
    qm_machine *m = new_guest(dir, "exiting", QM_GUEST_EXIT, 21, NULL);
    const char *paused[] = {"-S"};
    int fd = -1, code = -1;
    /* Paused until QMP is up: a guest that ends at boot could otherwise end QEMU during the
     * handshake on a loaded machine. */
    OK(qm_add_args(m, paused, 1, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    qm_string_free(cmd_ok(m, "cont", NULL));
    OK(qm_console_fd(m, &fd, &err));
    /* Read the banner so the guest is never blocked on a full console. */
    CHECK(read_until(fd, "exiting\r\n", buf, sizeof buf, GUEST_TIMEOUT_MS));
    OK(qm_wait(m, GUEST_TIMEOUT_MS, NULL, &err));
    CHECK(qm_exit_code(m, &code));
    CHECK(code == qm_guest_exit_status(21));
    CHECK(code == 43);
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

static void guest_that_never_stops(void)
{
    char *dir = make_temp_dir(), buf[256];
    qm_machine *m = new_guest(dir, "halting", QM_GUEST_HALT, 0, NULL);
    int fd = -1;
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_console_fd(m, &fd, &err));
    CHECK(read_until(fd, "halting\r\n", buf, sizeof buf, GUEST_TIMEOUT_MS));
    FAILS(QM_ERR_ABNORMAL_SHUTDOWN, qm_wait(m, 200, NULL, &err));
    CHECK(!qm_is_running(m));
    /* A graceful shutdown of a halted guest works (quit over QMP). */
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_console_fd(m, &fd, &err));
    CHECK(read_until(fd, "halting\r\n", buf, sizeof buf, GUEST_TIMEOUT_MS));
    OK(qm_shutdown(m, false, GUEST_TIMEOUT_MS, NULL, &err));
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

static void drained_console_and_console_log(void)
{
    char *dir = make_temp_dir(), buf[4096], logpath[4200];
    qm_machine *m = new_guest(dir, "drained banner", QM_GUEST_ECHO, 0, NULL);
    int fd = -1;
    FILE *f;
    size_t n;
    snprintf(logpath, sizeof logpath, "%s/console.log", dir);
    OK(qm_set_console_log(m, logpath, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_console_fd(m, &fd, &err));
    /* The drain keeps what the guest wrote for the reader. */
    CHECK(read_until(fd, "drained banner\r\n", buf, sizeof buf, GUEST_TIMEOUT_MS));
    write_all(fd, "via drain");
    CHECK(read_until(fd, "via drain", buf, sizeof buf, GUEST_TIMEOUT_MS));
    OK(qm_shutdown(m, false, GUEST_TIMEOUT_MS, NULL, &err));
    f = fopen(logpath, "r");
    CHECK(f != NULL);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    CHECK_HAS(buf, "drained banner");
    CHECK_HAS(buf, "via drain");
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

static void drain_without_a_reader(void)
{
    /* With the drain on, a console nobody reads never blocks the guest. */
    char *dir = make_temp_dir(), *s = NULL;
    qm_machine *m = new_guest(dir, "nobody reads this", QM_GUEST_POWEROFF, 0, NULL);
    const char *paused[] = {"-S"};
    int code = -1;
    OK(qm_set_drain_console(m, true, &err));
    /* Paused until QMP is up: a guest that ends at boot could otherwise end QEMU during the
     * handshake on a loaded machine. */
    OK(qm_add_args(m, paused, 1, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    qm_string_free(cmd_ok(m, "cont", NULL));
    OK(qm_event_wait(m, "SHUTDOWN", NULL, GUEST_TIMEOUT_MS, NULL, &s, &err));
    qm_string_free(s);
    OK(qm_wait(m, GUEST_TIMEOUT_MS, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == 0);
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

static void console_on_a_device(void)
{
    /* The console as `-device isa-serial` after one `-serial null` (index 1): the guest writes
     * to COM1, which is then the null backend, so nothing arrives; QMP still shows the chardev. */
    char *dir = make_temp_dir(), *s = NULL, *cl = NULL;
    qm_machine *m = new_guest(dir, "on com1", QM_GUEST_HALT, 0, NULL);
    OK(qm_set_console(m, "isa-serial", 1, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_get_command_line(m, &cl, &err));
    CHECK_HAS(cl, "\"-serial\",\"null\"");
    CHECK_HAS(cl, "\"-device\",\"isa-serial,chardev=console\"");
    qm_string_free(cl);
    s = cmd_ok(m, "query-chardev", NULL);
    CHECK_HAS(s, "\"label\":\"console\"");
    qm_string_free(s);
    shutdown_free(m);
    remove_dir(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(console_banner_echo_and_poweroff),
        TEST(console_dup_is_owned_and_never_waits_for_a_shutdown),
        TEST(guest_exit_status),
        TEST(guest_that_never_stops),
        TEST(drained_console_and_console_log),
        TEST(drain_without_a_reader),
        TEST(console_on_a_device),
    };
    return RUN_TESTS(tests);
}
