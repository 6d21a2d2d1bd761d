/*
 * quickstart.c: launch QEMU, run QMP commands, wait for an event, shut down. Results are JSON
 * texts; the qm_json_* accessors read values out of them (RFC 6901 JSON Pointers).
 *
 *   cc -std=c99 quickstart.c $(pkg-config --cflags --libs qm) -o quickstart && ./quickstart
 */
#include <stdio.h>
#include <stdlib.h>

#include <qm.h>

/* Prints a failed call's error, frees it and exits. */
static void die(const char *what, qm_status status, qm_error *err)
{
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)status, qm_error_message(err));
    qm_error_free(err);
    exit(1);
}

int main(void)
{
    qm_machine *vm = NULL;
    qm_error *err = NULL;
    char *json = NULL;
    qm_status st;

    printf("qm %s\n", qm_version());
    if ((st = qm_new("qemu-system-x86_64", &vm, &err)) != QM_OK)
        die("qm_new", st, err);
    qm_set_machine(vm, "none", NULL); /* no guest: QMP only */

    if ((st = qm_launch(vm, QM_WAIT_DEFAULT, NULL, &err)) != QM_OK)
        die("qm_launch", st, err); /* the error has QEMU's exit code, command line and output */
    printf("QEMU runs as pid %lld\n", (long long)qm_pid(vm));

    /* A command's `return` value, as JSON; values read out of it by JSON Pointer. */
    if ((st = qm_cmd(vm, "query-version", NULL, QM_WAIT_DEFAULT, NULL, &json, &err)) != QM_OK)
        die("query-version", st, err);
    {
        int64_t major = 0, minor = 0, micro = 0;
        if ((st = qm_json_get_int(json, "/qemu/major", &major, &err)) != QM_OK ||
            (st = qm_json_get_int(json, "/qemu/minor", &minor, &err)) != QM_OK ||
            (st = qm_json_get_int(json, "/qemu/micro", &micro, &err)) != QM_OK)
            die("qm_json_get_int", st, err);
        printf("QEMU version %lld.%lld.%lld\n", (long long)major, (long long)minor,
               (long long)micro);
    }
    qm_string_free(json);
    if ((st = qm_cmd(vm, "query-status", NULL, QM_WAIT_DEFAULT, NULL, &json, &err)) != QM_OK)
        die("query-status", st, err);
    printf("query-status: %s\n", json);
    qm_string_free(json);

    /* A QMP error carries QEMU's class and description. */
    st = qm_cmd(vm, "no-such-command", NULL, QM_WAIT_DEFAULT, NULL, &json, &err);
    if (st == QM_ERR_QMP) {
        printf("QMP error %s: %s\n", qm_error_qmp_class(err), qm_error_qmp_desc(err));
        qm_error_free(err);
        err = NULL;
    }

    /* Pause the VM and wait (at most 10 s) for the STOP event it causes. */
    if ((st = qm_cmd(vm, "stop", "{}", QM_WAIT_DEFAULT, NULL, &json, &err)) != QM_OK)
        die("stop", st, err);
    qm_string_free(json);
    if ((st = qm_event_wait(vm, "STOP", NULL, 10000, NULL, &json, &err)) != QM_OK)
        die("qm_event_wait", st, err);
    printf("event: %s\n", json);
    qm_string_free(json);

    /* `quit`, then wait up to 30 s for QEMU to exit (killed if it does not). */
    if ((st = qm_shutdown(vm, false, QM_WAIT_DEFAULT, NULL, &err)) != QM_OK)
        die("qm_shutdown", st, err);
    /* The SHUTDOWN event that `quit` caused: its name and its data, read by JSON Pointer. */
    if ((st = qm_event_wait(vm, "SHUTDOWN", NULL, 0, NULL, &json, &err)) != QM_OK)
        die("qm_event_wait", st, err);
    {
        char *name = NULL, *data = NULL, *reason = NULL;
        if ((st = qm_json_get_string(json, "/event", &name, &err)) != QM_OK ||
            (st = qm_json_get(json, "/data", &data, &err)) != QM_OK ||
            (st = qm_json_get_string(data, "/reason", &reason, &err)) != QM_OK)
            die("reading the SHUTDOWN event", st, err);
        printf("%s, data %s (reason: %s)\n", name, data, reason);
        qm_string_free(reason);
        qm_string_free(data);
        qm_string_free(name);
    }
    qm_string_free(json);
    {
        int code = 0;
        if (qm_exit_code(vm, &code))
            printf("QEMU exited with status %d\n", code);
    }
    qm_free(vm);
    return 0;
}
