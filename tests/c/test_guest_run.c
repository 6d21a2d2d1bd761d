/* Guest tests end to end from C: clean endings (a QEMU that exited by itself with status 0 is
 * not an abnormal shutdown). */
#include "check.h"

#include <stdlib.h>
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

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(shutdown_after_poweroff_is_clean),
        TEST(shutdown_after_a_nonzero_exit_is_abnormal),
    };
    return RUN_TESTS(tests);
}
