/* check.c: the shared test harness and helpers (see check.h). */
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static jmp_buf jump;
static const char *current_test = "(no test)";

void check_fail_(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s:%d: %s: FAILED: ", file, line, current_test);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    longjmp(jump, 1);
}

const char *status_name(qm_status s)
{
    switch (s) {
    case QM_OK: return "QM_OK";
    case QM_ERR_LAUNCH: return "QM_ERR_LAUNCH";
    case QM_ERR_QMP: return "QM_ERR_QMP";
    case QM_ERR_TIMEOUT: return "QM_ERR_TIMEOUT";
    case QM_ERR_DISCONNECTED: return "QM_ERR_DISCONNECTED";
    case QM_ERR_INTERRUPTED: return "QM_ERR_INTERRUPTED";
    case QM_ERR_ABNORMAL_SHUTDOWN: return "QM_ERR_ABNORMAL_SHUTDOWN";
    case QM_ERR_STATE: return "QM_ERR_STATE";
    case QM_ERR_INVALID: return "QM_ERR_INVALID";
    case QM_ERR_PROTOCOL: return "QM_ERR_PROTOCOL";
    case QM_ERR_IO: return "QM_ERR_IO";
    case QM_ERR_PANIC: return "QM_ERR_PANIC";
    case QM_ERR_EVENTS_DROPPED: return "QM_ERR_EVENTS_DROPPED";
    case QM_ERR_CONSOLE_CLOSED: return "QM_ERR_CONSOLE_CLOSED";
    case QM_ERR_CONSOLE_FAILURE: return "QM_ERR_CONSOLE_FAILURE";
    case QM_ERR_REFUSED: return "QM_ERR_REFUSED";
    }
    return "(unknown status)";
}

void check_status_(const char *file, int line, const char *expr, qm_status want, qm_status got,
                   qm_error *err)
{
    char text[8192];
    const char *msg = qm_error_message(err);
    if (got != want) {
        snprintf(text, sizeof text, "%s: want %s, got %s (%s)", expr, status_name(want),
                 status_name(got), msg ? msg : "no error object");
        qm_error_free(err);
        check_fail_(file, line, "%s", text);
    }
    if (want == QM_OK) {
        if (err != NULL) {
            qm_error_free(err);
            check_fail_(file, line, "%s: an error object came with QM_OK", expr);
        }
        return;
    }
    if (err == NULL)
        check_fail_(file, line, "%s: no error object came with %s", expr, status_name(got));
    if (qm_error_status(err) != got || msg == NULL || msg[0] == '\0') {
        qm_error_free(err);
        check_fail_(file, line, "%s: the error object disagrees with the status", expr);
    }
    qm_error_free(err);
}

void check_invalid_(const char *file, int line, const char *expr, const char *needle,
                    qm_status got, qm_error *err)
{
    char text[4096];
    const char *msg = qm_error_message(err);
    if (got != QM_ERR_INVALID || msg == NULL || strstr(msg, needle) == NULL ||
        qm_error_status(err) != QM_ERR_INVALID) {
        snprintf(text, sizeof text, "%s: want QM_ERR_INVALID mentioning \"%s\", got %s (%s)",
                 expr, needle, status_name(got), msg ? msg : "no error object");
        qm_error_free(err);
        check_fail_(file, line, "%s", text);
    }
    qm_error_free(err);
}

const char *qemu_binary(void)
{
    const char *q = getenv("QM_QEMU");
    return q && *q ? q : "qemu-system-x86_64";
}

double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

qm_machine *new_none(void)
{
    qm_machine *m = NULL;
    OK(qm_new(qemu_binary(), &m, &err));
    CHECK(m != NULL);
    OK(qm_set_machine(m, "none", &err));
    return m;
}

qm_machine *launch_none(void)
{
    qm_machine *m = new_none();
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    return m;
}

char *cmd_ok(qm_machine *m, const char *cmd, const char *args_json)
{
    char *ret = NULL;
    OK(qm_cmd(m, cmd, args_json, QM_WAIT_DEFAULT, NULL, &ret, &err));
    CHECK(ret != NULL);
    return ret;
}

void shutdown_free(qm_machine *m)
{
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    qm_free(m);
}

char *make_temp_dir(void)
{
    const char *base = getenv("TMPDIR");
    char *dir = malloc(4096);
    CHECK(dir != NULL);
    snprintf(dir, 4096, "%s/qm-ctest-XXXXXX", base && *base ? base : "/tmp");
    CHECK(mkdtemp(dir) != NULL);
    return dir;
}

void remove_dir(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

int readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    do
        n = poll(&p, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    return n > 0;
}

int read_until(int fd, const char *want, char *buf, size_t size, int timeout_ms)
{
    size_t len = 0;
    double until = now_ms() + timeout_ms;
    buf[0] = '\0';
    while (strstr(buf, want) == NULL) {
        double left = until - now_ms();
        ssize_t n;
        if (left <= 0 || len + 1 >= size)
            return 0;
        if (!readable(fd, (int)left + 1))
            continue;
        n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return 0;
        len += (size_t)n;
        buf[len] = '\0';
    }
    return 1;
}

void write_all(int fd, const char *s)
{
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = write(fd, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        CHECK(n > 0);
        s += n;
        len -= (size_t)n;
    }
}

/* Adds the arguments of a JSON array of plain strings (no escapes) to a machine. */
void add_json_args(qm_machine *m, const char *json)
{
    const char *args[64];
    char *copy = strdup(json), *p = copy;
    size_t n = 0;
    CHECK(copy != NULL);
    while ((p = strchr(p, '"')) != NULL && n < 64) {
        char *end = strchr(p + 1, '"');
        CHECK(end != NULL);
        *end = '\0';
        args[n++] = p + 1;
        p = end + 1;
    }
    OK(qm_add_args(m, args, n, &err));
    free(copy);
}

qm_machine *new_guest(const char *dir, const char *banner, qm_guest_action action,
                      unsigned char exit_value, char **image_out)
{
    qm_machine *m = NULL;
    char *args = NULL;
    char *image = malloc(4200);
    CHECK(image != NULL);
    snprintf(image, 4200, "%s/guest.img", dir);
    OK(qm_guest_write_image(image, banner, action, exit_value, &err));
    OK(qm_guest_qemu_args(image, &args, &err));
    OK(qm_new(qemu_binary(), &m, &err));
    add_json_args(m, args);
    qm_string_free(args);
    OK(qm_set_console(m, NULL, 0, &err));
    if (image_out)
        *image_out = image;
    else
        free(image);
    return m;
}

int run_tests_(const char *file, const struct test *tests, size_t n, int argc, char **argv)
{
    /* volatile: modified between setjmp and longjmp. */
    volatile int passed = 0, failed = 0;
    volatile size_t i;
    const char *slash = strrchr(file, '/');
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (i = 0; i < n; i++) {
        double t0;
        int j, wanted = argc <= 1;
        for (j = 1; j < argc; j++)
            wanted |= strcmp(argv[j], tests[i].name) == 0;
        if (!wanted)
            continue;
        current_test = tests[i].name;
        t0 = now_ms();
        if (setjmp(jump) == 0) {
            tests[i].fn();
            passed++;
            printf("ok   %-44s %6.0f ms\n", tests[i].name, now_ms() - t0);
        } else {
            failed++;
            printf("FAIL %-44s %6.0f ms\n", tests[i].name, now_ms() - t0);
        }
    }
    printf("%s: %d passed, %d failed\n", slash ? slash + 1 : file, passed, failed);
    return failed == 0 ? 0 : 1;
}

int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}
