/*
 * test_fd.c: passing file descriptors to QEMU, and checking that QEMU uses them:
 *   - qm_add_fd at launch (-add-fd), seen in query-fdsets and opened by blockdev-add through
 *     /dev/fdset/N, whose size QEMU reports;
 *   - qm_send_fd_scm then add-fd, the same way;
 *   - qm_send_fd_scm then getfd, checked with closefd (which fails for an unknown name);
 *   - qm_send_file_scm then add-fd.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

/* A file of `size` bytes in dir; returns its path (free()). */
static char *make_file(const char *dir, const char *name, long size)
{
    char *path = malloc(4200);
    int fd;
    CHECK(path != NULL);
    snprintf(path, 4200, "%s/%s", dir, name);
    fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, size) == 0);
    close(fd);
    return path;
}

/* Opens /dev/fdset/<set> read-only in QEMU as block node <node> and checks its size. */
static void check_qemu_reads_fdset(qm_machine *m, int set, const char *node, long size)
{
    char args[512], want[128], *s;
    snprintf(args, sizeof args,
             "{\"driver\":\"raw\",\"node-name\":\"%s\",\"read-only\":true,"
             "\"file\":{\"driver\":\"file\",\"filename\":\"/dev/fdset/%d\"}}",
             node, set);
    s = cmd_ok(m, "blockdev-add", args);
    qm_string_free(s);
    s = cmd_ok(m, "query-named-block-nodes", "{\"flat\":true}");
    snprintf(want, sizeof want, "\"node-name\":\"%s\"", node);
    CHECK_HAS(s, want);
    snprintf(want, sizeof want, "\"virtual-size\":%ld", size);
    CHECK_HAS(s, want);
    qm_string_free(s);
}

static void add_fd_at_launch(void)
{
    char *dir = make_temp_dir(), *path = make_file(dir, "a.img", 1 << 20), *s = NULL;
    qm_machine *m = new_none();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    OK(qm_add_fd(m, fd, 1, "at-launch", NULL, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    close(fd); /* QEMU has its own copy now */
    s = cmd_ok(m, "query-fdsets", NULL);
    CHECK_HAS(s, "\"fdset-id\":1");
    CHECK_HAS(s, "\"opaque\":\"at-launch\"");
    qm_string_free(s);
    check_qemu_reads_fdset(m, 1, "n1", 1 << 20);
    shutdown_free(m);
    remove_dir(dir);
    free(path);
    free(dir);
}

static void send_fd_then_add_fd(void)
{
    char *dir = make_temp_dir(), *path = make_file(dir, "b.img", 2 << 20), *s = NULL;
    qm_machine *m = launch_none();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    OK(qm_send_fd_scm(m, fd, &err));
    close(fd); /* the caller keeps ownership; QEMU got its own copy */
    s = cmd_ok(m, "add-fd", "{\"fdset-id\":2,\"opaque\":\"sent\"}");
    CHECK_HAS(s, "\"fdset-id\":2");
    CHECK_HAS(s, "\"fd\":");
    qm_string_free(s);
    s = cmd_ok(m, "query-fdsets", NULL);
    CHECK_HAS(s, "\"opaque\":\"sent\"");
    qm_string_free(s);
    check_qemu_reads_fdset(m, 2, "n2", 2 << 20);
    shutdown_free(m);
    remove_dir(dir);
    free(path);
    free(dir);
}

static void send_fd_then_getfd(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    int fds[2];
    CHECK(pipe(fds) == 0);
    /* closefd of an unknown name fails: that is how we know getfd took the descriptor. */
    FAILS(QM_ERR_QMP, qm_cmd(m, "closefd", "{\"fdname\":\"myfd\"}", QM_WAIT_DEFAULT, NULL, &s, &err));
    OK(qm_send_fd_scm(m, fds[1], &err));
    s = cmd_ok(m, "getfd", "{\"fdname\":\"myfd\"}");
    qm_string_free(s);
    s = cmd_ok(m, "closefd", "{\"fdname\":\"myfd\"}");
    qm_string_free(s);
    /* getfd without a descriptor sent first fails with a QMP error. */
    FAILS(QM_ERR_QMP, qm_cmd(m, "getfd", "{\"fdname\":\"other\"}", QM_WAIT_DEFAULT, NULL, &s, &err));
    close(fds[0]);
    close(fds[1]);
    shutdown_free(m);
}

static void send_file_then_add_fd(void)
{
    char *dir = make_temp_dir(), *path = make_file(dir, "c.img", 3 << 20), *s = NULL;
    qm_machine *m = launch_none();
    OK(qm_send_file_scm(m, path, &err));
    s = cmd_ok(m, "add-fd", "{\"fdset-id\":3}");
    qm_string_free(s);
    check_qemu_reads_fdset(m, 3, "n3", 3 << 20);
    FAILS(QM_ERR_IO, qm_send_file_scm(m, "/nonexistent/file", &err));
    shutdown_free(m);
    remove_dir(dir);
    free(path);
    free(dir);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(add_fd_at_launch),
        TEST(send_fd_then_add_fd),
        TEST(send_fd_then_getfd),
        TEST(send_file_then_add_fd),
    };
    return RUN_TESTS(tests);
}
