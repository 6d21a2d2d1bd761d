/*
 * guest_console.c: boot the 512-byte test guest, read its banner from the console, ask it to
 * power off through the console, wait for its SHUTDOWN event and for QEMU to exit. Shows the
 * console descriptor, events with a match filter, and a qm_cancel token that a second thread
 * (here: nobody) could fire to interrupt the waits.
 *
 *   cc -std=c99 guest_console.c $(pkg-config --cflags --libs qm) -o guest_console
 */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qm.h>

static int check(const char *what, qm_status status, qm_error *err)
{
    if (status == QM_OK)
        return 0;
    fprintf(stderr, "%s failed: %s\n", what, qm_error_message(err));
    qm_error_free(err);
    return 1;
}

/* Adds the strings of a JSON array (as qm_guest_qemu_args returns) to vm, as a vector. */
static int add_args_from_json(qm_machine *vm, const char *json)
{
    char **args = NULL;
    size_t n = 0;
    qm_error *err = NULL;
    int rc = check("qm_json_get_strings", qm_json_get_strings(json, "", &args, &n, &err), err);
    if (rc == 0)
        rc = check("qm_add_args", qm_add_args(vm, (const char *const *)args, n, &err), err);
    qm_strings_free(args);
    return rc;
}

int main(void)
{
    char dir[] = "/tmp/qm-example-XXXXXX", image[64], line[256], *json = NULL;
    qm_machine *vm = NULL;
    qm_cancel *cancel = qm_cancel_new();
    qm_error *err = NULL;
    size_t len = 0;
    int fd = -1, code = -1, rc = 1;

    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(image, sizeof image, "%s/guest.img", dir);
    if (check("qm_guest_write_image",
              qm_guest_write_image(image, "hello from the guest", QM_GUEST_ECHO, 0, &err), err) ||
        check("qm_guest_qemu_args", qm_guest_qemu_args(image, &json, &err), err) ||
        check("qm_new", qm_new("qemu-system-x86_64", &vm, &err), err) ||
        add_args_from_json(vm, json) ||
        check("qm_set_console", qm_set_console(vm, NULL, 0, &err), err) ||
        check("qm_launch", qm_launch(vm, QM_WAIT_DEFAULT, NULL, &err), err) ||
        check("qm_console_fd", qm_console_fd(vm, &fd, &err), err))
        goto out;

    /* Read the banner line (the descriptor is borrowed: never close it). */
    while (len + 1 < sizeof line && memchr(line, '\n', len) == NULL) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n;
        if (poll(&p, 1, 30000) <= 0 || (n = read(fd, line + len, sizeof line - 1 - len)) <= 0)
            goto out;
        len += (size_t)n;
    }
    line[len] = '\0';
    printf("console: %s", line);

    /* The echo guest powers off when it reads 'p'. */
    if (write(fd, "p", 1) != 1)
        goto out;
    qm_string_free(json);
    json = NULL;
    if (check("qm_event_wait",
              qm_event_wait(vm, "SHUTDOWN", "{\"data\": {\"guest\": true}}", 30000, cancel, &json, &err),
              err))
        goto out;
    {
        /* The event's data, by JSON Pointer: the guest powered off by itself. */
        bool guest = false;
        if (check("qm_json_get_bool", qm_json_get_bool(json, "/data/guest", &guest, &err), err))
            goto out;
        printf("event: %s (guest-initiated: %s)\n", json, guest ? "yes" : "no");
    }
    if (check("qm_wait", qm_wait(vm, 30000, cancel, &err), err))
        goto out;
    if (qm_exit_code(vm, &code))
        printf("QEMU exited with status %d\n", code);
    rc = code == 0 ? 0 : 1;
out:
    qm_string_free(json);
    qm_free(vm); /* shuts QEMU down if it still runs */
    qm_cancel_free(cancel);
    unlink(image);
    rmdir(dir);
    return rc;
}
