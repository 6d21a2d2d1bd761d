/*
 * valgrind_pidfd_shim.c: linked into the C tests for the valgrind run only, when valgrind does
 * not implement pidfd_open (valgrind 3.19, Debian 12, fails it with ENOSYS), so that the whole
 * suite, launches included, still runs under valgrind.
 *
 * qm's core calls pidfd_open and pidfd_send_signal through libc's syscall(). This file defines
 * syscall() (the executable's definition interposes on libc's for libqm.so) and emulates the
 * two calls; every other system call goes to libc's syscall() unchanged:
 *
 *   pidfd_open(pid)            an eventfd made readable by a watcher thread once `pid` has
 *                              exited (waitid with WNOWAIT: the child is left for qm to reap)
 *   pidfd_send_signal(fd, sig) kill(pid of fd, sig)
 *
 * The watcher writes to its own duplicate of the eventfd, so qm closing its descriptor early
 * can never make the watcher write to a recycled descriptor number. Outside the valgrind run
 * none of this is linked.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

#define MAX_FDS 1024

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t pid_of_fd[MAX_FDS]; /* 0: not one of ours */

struct watch {
    pid_t pid;
    int fd; /* our own duplicate of the eventfd */
};

static void *watch_exit(void *arg)
{
    struct watch w = *(struct watch *)arg;
    siginfo_t info;
    uint64_t one = 1;
    free(arg);
    while (waitid(P_PID, (id_t)w.pid, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR)
        ;
    /* Exited, or already reaped by qm (ECHILD): either way, readable now. */
    if (write(w.fd, &one, sizeof one) != sizeof one) {
        /* nothing to do: the counter cannot overflow with one write */
    }
    close(w.fd);
    return NULL;
}

static long fake_pidfd_open(pid_t pid)
{
    pthread_t thread;
    pthread_attr_t attr;
    struct watch *w;
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), dup_fd;
    if (fd < 0)
        return -1;
    if (fd >= MAX_FDS || (dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0 ||
        (w = malloc(sizeof *w)) == NULL) {
        close(fd);
        errno = EMFILE;
        return -1;
    }
    w->pid = pid;
    w->fd = dup_fd;
    pthread_mutex_lock(&lock);
    pid_of_fd[fd] = pid;
    pthread_mutex_unlock(&lock);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, watch_exit, w) != 0) {
        pthread_attr_destroy(&attr);
        free(w);
        close(dup_fd);
        close(fd);
        errno = EAGAIN;
        return -1;
    }
    pthread_attr_destroy(&attr);
    return fd;
}

static long fake_pidfd_send_signal(int fd, int sig)
{
    pid_t pid = 0;
    pthread_mutex_lock(&lock);
    if (fd >= 0 && fd < MAX_FDS)
        pid = pid_of_fd[fd];
    pthread_mutex_unlock(&lock);
    if (pid <= 0) {
        errno = EBADF;
        return -1;
    }
    /* qm reaps only after the exit is seen, and signals under its own lock: the pid is not
     * recycled while qm may still signal it. */
    return kill(pid, sig);
}

static long (*real_syscall)(long, ...);

static void find_real_syscall(void)
{
    *(void **)&real_syscall = dlsym(RTLD_NEXT, "syscall");
}

long syscall(long number, ...)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    va_list ap;
    long a[6];
    int i;
    va_start(ap, number);
    for (i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_pidfd_open)
        return fake_pidfd_open((pid_t)a[0]);
    if (number == SYS_pidfd_send_signal)
        return fake_pidfd_send_signal((int)a[0], (int)a[1]);
    pthread_once(&once, find_real_syscall);
    return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
