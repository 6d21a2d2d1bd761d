/*
 * test_fake.c: the fake QEMU (qm-fake-qemu) from C: found with qm_fake_qemu_path, run on a
 * script that answers a command, refuses a hot-plug with GenericError and sends an event;
 * a command the script does not expect is an error and the fake's exit status 3.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static const char SCRIPT[] =
    "{\"qm-fake\":1,\"idle\":30}\n"
    "{\"dir\":\"out\",\"msg\":{\"execute\":\"query-status\"}}\n"
    "{\"dir\":\"in\",\"msg\":{\"return\":{\"status\":\"running\",\"running\":true}}}\n"
    "{\"dir\":\"out\",\"msg\":{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"virtio-blk-pci\"}},"
    "\"match\":\"subset\"}\n"
    "{\"dir\":\"in\",\"msg\":{\"error\":{\"class\":\"GenericError\",\"desc\":\"Duplicate device ID 'd0'\"}}}\n"
    "{\"dir\":\"event\",\"msg\":{\"event\":\"DEVICE_DELETED\",\"data\":{\"device\":\"d0\"}}}\n";

/* A machine running the fake on SCRIPT (written to a file under the machine's temp dir). */
static qm_machine *fake_machine(char *script_path, size_t size)
{
    char *fake = NULL;
    qm_machine *m = NULL;
    OK(qm_fake_qemu_path(&fake, &err));
    CHECK(fake != NULL && strstr(fake, "qm-fake-qemu") != NULL);
    OK(qm_new(fake, &m, &err));
    qm_string_free(fake);
    char *dir = NULL;
    OK(qm_get_temp_dir(m, &dir, &err));
    snprintf(script_path, size, "%s/script.jsonl", dir);
    qm_string_free(dir);
    FILE *f = fopen(script_path, "w");
    CHECK(f != NULL);
    CHECK(fputs(SCRIPT, f) >= 0);
    CHECK(fclose(f) == 0);
    const char *args[] = {"-qm-fake-script", script_path};
    OK(qm_add_args(m, args, 2, &err));
    return m;
}

static void script_replies_errors_and_events(void)
{
    char path[4096];
    qm_machine *m = fake_machine(path, sizeof path);
    char *s = NULL;
    int code = -100;
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_cmd(m, "query-status", NULL, 10000, NULL, &s, &err));
    CHECK_HAS(s, "\"running\":true");
    qm_string_free(s);

    qm_error *e = NULL;
    CHECK(qm_cmd(m, "device_add", "{\"driver\":\"virtio-blk-pci\",\"id\":\"d0\"}", 10000, NULL,
                 &s, &e) == QM_ERR_QMP);
    CHECK_STR(qm_error_qmp_class(e), "GenericError");
    CHECK_HAS(qm_error_qmp_desc(e), "Duplicate device ID");
    qm_error_free(e);

    OK(qm_event_wait(m, "DEVICE_DELETED", "{\"data\":{\"device\":\"d0\"}}", 10000, NULL, &s, &err));
    CHECK(s != NULL);
    qm_string_free(s);
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == 0);
    qm_free(m);
}

static void unexpected_command_is_reported(void)
{
    char path[4096];
    qm_machine *m = fake_machine(path, sizeof path);
    char *s = NULL;
    int code = -100;
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    qm_error *e = NULL;
    CHECK(qm_cmd(m, "query-kvm", NULL, 10000, NULL, &s, &e) == QM_ERR_QMP);
    CHECK_HAS(qm_error_qmp_desc(e), "script line 2");
    qm_error_free(e);
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_exit_code(m, &code) && code == 3);
    OK(qm_get_log(m, &s, &err));
    CHECK_HAS(s, "unexpected qmp message");
    CHECK_HAS(s, "never happened");
    qm_string_free(s);
    qm_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(script_replies_errors_and_events),
        TEST(unexpected_command_is_reported),
    };
    return RUN_TESTS(tests);
}
