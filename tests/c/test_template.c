/*
 * test_template.c: fast start from C (qm_template_*, qm_save_state, qm_restore_state,
 * qm_run_job): hostile arguments; the Linux test guest prepared once as a template, two clones
 * that each find the template's tmpfs file and not each other's; a restore refused for other
 * arguments before anything is launched; a block job run to its end.
 *
 * The Linux guest comes from QM_LINUX_KERNEL + QM_LINUX_INITRD, or guest/linux/build run from
 * the repository root (as tests/c/run.sh does); without either, that test says so and skips.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define T_MS 300000

static void hostile_arguments(void)
{
    qm_template *t = NULL;
    qm_machine *m = new_none();
    bool b = false;
    char *s = NULL;
    INVALID(qm_template_new(NULL, "/tmp", &t, &err), "binary");
    INVALID(qm_template_new(qemu_binary(), "/tmp", NULL, &err), "template_out");
    INVALID(qm_template_add_args(NULL, NULL, 0, &err), "t");
    INVALID(qm_template_prepare(NULL, QM_READY_AGENT, NULL, NULL, T_MS, NULL, &b, &err), "t");
    INVALID(qm_template_clone(NULL, T_MS, NULL, NULL, &err), "machine_out");
    INVALID(qm_save_state(m, NULL, T_MS, NULL, &s, &err), "path");
    INVALID(qm_restore_state(m, "/x", 7, NULL, NULL, T_MS, NULL, &err), "ready");
    INVALID(qm_restore_state(m, "/x", QM_READY_CONSOLE, NULL, NULL, T_MS, NULL, &err),
            "console_text");
    INVALID(qm_run_job(m, NULL, T_MS, NULL, &s, &err), "id");
    INVALID(qm_wait_migration(m, QM_WAIT_DEFAULT, NULL, &s, &err), "no default wait");
    /* Not a state file: refused before launching. */
    FAILS(QM_ERR_IO, qm_restore_state(m, "/nonexistent/state", QM_READY_RUNNING, NULL, NULL,
                                      T_MS, NULL, &err));
    qm_template_free(NULL);
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

/* `sh -c script` in the guest: its exit code, its stdout in out (NUL-terminated). */
static int guest_sh(qm_machine *m, const char *script, char *out, size_t size)
{
    const char *argv[] = {"-c", script};
    qm_exec_result *r = NULL;
    const uint8_t *o;
    size_t len = 0;
    int code = -1;
    OK(qm_agent_exec(m, "sh", argv, 2, NULL, 0, NULL, 0, true, 0, QM_WAIT_DEFAULT, T_MS, NULL,
                     &r, &err));
    o = qm_exec_result_stdout(r, &len);
    snprintf(out, size, "%.*s", (int)len, (const char *)o);
    CHECK(qm_exec_result_exit_code(r, &code));
    qm_exec_result_free(r);
    return code;
}

static void template_and_clones(void)
{
    char kernel[1024], initrd[1024], out[256], *dir, *state = NULL, *info = NULL;
    qm_template *t = NULL;
    qm_machine *boot = NULL, *a = NULL, *b = NULL, *other = NULL;
    bool booted = false;

    if (!linux_guest(kernel, initrd, sizeof kernel))
        return;
    dir = make_temp_dir();
    {
        const char *args[] = {"-nodefaults", "-machine", "q35", "-accel", "tcg", "-m", "256",
                              "-kernel", kernel, "-initrd", initrd, "-append",
                              "console=ttyS0 quiet loglevel=1 panic=-1 no_timer_check", "-no-reboot"};
        OK(qm_template_new(qemu_binary(), dir, &t, &err));
        OK(qm_template_add_args(t, args, sizeof args / sizeof args[0], &err));
        OK(qm_template_set_console(t, NULL, 0, &err));
        OK(qm_template_set_guest_agent(t, true, &err));
        /* A machine configured the same, with a marker in its tmpfs, saved by hand. */
        OK(qm_new(qemu_binary(), &boot, &err));
        OK(qm_add_args(boot, args, sizeof args / sizeof args[0], &err));
        OK(qm_set_console(boot, NULL, 0, &err));
        OK(qm_set_guest_agent(boot, true, &err));
    }
    OK(qm_template_prepare(t, QM_READY_AGENT, NULL, NULL, T_MS, NULL, &booted, &err));
    CHECK(booted);
    OK(qm_template_prepare(t, QM_READY_AGENT, NULL, NULL, T_MS, NULL, &booted, &err));
    CHECK(!booted);

    OK(qm_template_clone(t, T_MS, NULL, &a, &err));
    OK(qm_template_clone(t, T_MS, NULL, &b, &err));
    CHECK(guest_sh(a, "echo only-in-a > /tmp/a", out, sizeof out) == 0);
    CHECK(guest_sh(b, "cat /tmp/a", out, sizeof out) != 0);
    shutdown_free(a);
    shutdown_free(b);

    /* save and restore by hand */
    OK(qm_launch(boot, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_agent_sync(boot, T_MS, NULL, &err));
    CHECK(guest_sh(boot, "echo saved > /tmp/m", out, sizeof out) == 0);
    state = malloc(strlen(dir) + 16);
    sprintf(state, "%s/vm.state", dir);
    OK(qm_save_state(boot, state, T_MS, NULL, &info, &err));
    CHECK_HAS(info, "\"stream_bytes\":");
    qm_string_free(info);
    shutdown_free(boot);
    OK(qm_new(qemu_binary(), &other, &err));
    FAILS(QM_ERR_INVALID, qm_restore_state(other, state, QM_READY_AGENT, NULL, NULL, T_MS, NULL,
                                           &err));
    CHECK(!qm_is_running(other));
    qm_free(other);

    qm_template_free(t);
    free(state);
    remove_dir(dir);
    free(dir);
}

static void a_block_job_runs_to_its_end(void)
{
    char *dir = make_temp_dir(), cmdline[4096], *job = NULL, args[4096];
    qm_machine *m = launch_none();
    snprintf(cmdline, sizeof cmdline,
             "qemu-img create -q -f qcow2 %s/s.qcow2 1M && qemu-img create -q -f qcow2 "
             "%s/d.qcow2 1M",
             dir, dir);
    CHECK(system(cmdline) == 0);
    snprintf(args, sizeof args,
             "{\"driver\":\"qcow2\",\"node-name\":\"s\",\"file\":{\"driver\":\"file\","
             "\"filename\":\"%s/s.qcow2\"}}",
             dir);
    qm_string_free(cmd_ok(m, "blockdev-add", args));
    snprintf(args, sizeof args,
             "{\"driver\":\"qcow2\",\"node-name\":\"d\",\"file\":{\"driver\":\"file\","
             "\"filename\":\"%s/d.qcow2\"}}",
             dir);
    qm_string_free(cmd_ok(m, "blockdev-add", args));
    qm_string_free(cmd_ok(m, "blockdev-mirror",
                          "{\"job-id\":\"j\",\"device\":\"s\",\"target\":\"d\",\"sync\":\"full\","
                          "\"auto-dismiss\":false}"));
    OK(qm_run_job(m, "j", QM_WAIT_DEFAULT, NULL, &job, &err));
    CHECK_HAS(job, "\"status\":\"concluded\"");
    qm_string_free(job);
    FAILS(QM_ERR_STATE, qm_run_job(m, "j", QM_WAIT_DEFAULT, NULL, &job, &err));
    shutdown_free(m);
    remove_dir(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(hostile_arguments),
        TEST(a_block_job_runs_to_its_end),
        TEST(template_and_clones),
    };
    return RUN_TESTS(tests);
}
