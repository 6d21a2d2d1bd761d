/*
 * test_attach.c: qm_attach to a QEMU this test starts by hand (-qmp unix:PATH,server=on,
 * wait=off): commands and events work, qm_shutdown and qm_free detach and QEMU keeps running;
 * the test kills it itself.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* True once something listens at path: a connection is not refused (QEMU binds the file a
 * moment before it listens). The probe is closed at once; QEMU takes it as a client that left. */
static int listening(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
    CHECK(fd >= 0);
    CHECK(strlen(path) < sizeof addr.sun_path);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    ok = connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    close(fd);
    return ok;
}

/* Starts `qemu -machine none` with its monitor listening at sock; returns its pid once it
 * listens. */
static pid_t start_qemu(const char *sock)
{
    char qmp[1024];
    pid_t pid;
    double t0 = now_ms();
    snprintf(qmp, sizeof qmp, "unix:%s,server=on,wait=off", sock);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execlp(qemu_binary(), qemu_binary(), "-machine", "none", "-display", "none",
               "-nodefaults", "-qmp", qmp, (char *)NULL);
        _exit(127);
    }
    while (!listening(sock)) {
        CHECK(now_ms() - t0 < 60000);
        usleep(20000);
    }
    return pid;
}

/* True while pid runs (not exited; never reaped by anyone but this test). */
static int still_running(pid_t pid)
{
    int status;
    return waitpid(pid, &status, WNOHANG) == 0;
}

static void stop_qemu(pid_t pid)
{
    int status;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
}

static void attach_runs_commands_then_detaches(void)
{
    char *dir = make_temp_dir();
    char sock[512], addr[600];
    pid_t pid;
    qm_machine *m = new_none();
    char *s = NULL;
    snprintf(sock, sizeof sock, "%s/qmp.sock", dir);
    snprintf(addr, sizeof addr, "unix:%s", sock);
    pid = start_qemu(sock);

    INVALID(qm_attach(m, NULL, NULL, QM_WAIT_DEFAULT, NULL, &err), "qmp_address");
    INVALID(qm_attach(m, "tcp:nohost", NULL, QM_WAIT_DEFAULT, NULL, &err), "tcp:HOST:PORT");
    OK(qm_attach(m, addr, NULL, 60000, NULL, &err));
    CHECK(qm_is_attached(m));
    CHECK(qm_is_running(m));
    CHECK(qm_pid(m) == -1);
    FAILS(QM_ERR_STATE, qm_attach(m, addr, NULL, 60000, NULL, &err));
    FAILS(QM_ERR_STATE, qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));

    s = cmd_ok(m, "query-status", NULL);
    CHECK_HAS(s, "\"running\"");
    qm_string_free(s);
    qm_string_free(cmd_ok(m, "stop", NULL));
    OK(qm_event_wait(m, "STOP", NULL, 60000, NULL, &s, &err));
    CHECK_HAS(s, "\"STOP\"");
    qm_string_free(s);

    OK(qm_shutdown(m, true, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(!qm_is_attached(m));
    CHECK(still_running(pid));

    /* Attach again, and let qm_free detach. */
    OK(qm_attach(m, addr, NULL, 60000, NULL, &err));
    qm_string_free(cmd_ok(m, "cont", NULL));
    qm_free(m);
    CHECK(still_running(pid));

    stop_qemu(pid);
    remove_dir(dir);
    free(dir);
}

static void attach_to_nothing_is_an_io_error(void)
{
    char *dir = make_temp_dir();
    char addr[600];
    qm_machine *m = new_none();
    snprintf(addr, sizeof addr, "%s/nobody.sock", dir);
    FAILS(QM_ERR_IO, qm_attach(m, addr, NULL, 1000, NULL, &err));
    CHECK(!qm_is_attached(m));
    CHECK(!qm_is_attached(NULL));
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(attach_runs_commands_then_detaches),
        TEST(attach_to_nothing_is_an_io_error),
    };
    return RUN_TESTS(tests);
}
