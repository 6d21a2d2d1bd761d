/*
 * qm-bench-c METRIC [key=value ...]: the C subject. One run measures one metric, with a raw
 * baseline client (below: fork/exec QEMU on a socketpair, blocking reads and writes, no library)
 * and the qm C API (libqm, include/qm.h) alternating in this same process. It prints samples in
 * the subject protocol of bench/README.md ("raw V", "subject V", "stat NAME SIDE V"); bench's
 * runner computes the statistics. Errors go to stderr with a non-zero exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "qm.h"

#define WAIT_MS 60000

static const char *qemu = "qemu-system-x86_64";

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "qm-bench-c: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- samples, printed at the end (never while timing) ------------------------------------ */

enum side { RAW, QM };
static const char *side_name[] = {"raw", "subject"};

struct sample {
    const char *stat; /* NULL: a plain sample; PAIR: a pair marker */
    enum side side;
    double value;
};
static struct sample *samples;
static size_t n_samples, cap_samples;

static void push_stat(const char *stat, enum side side, double value) {
    if (n_samples == cap_samples) {
        cap_samples = cap_samples ? cap_samples * 2 : 4096;
        samples = realloc(samples, cap_samples * sizeof *samples);
        if (!samples) die("out of memory");
    }
    samples[n_samples++] = (struct sample){stat, side, value};
}
static void push(enum side side, double value) { push_stat(NULL, side, value); }

/* The samples that follow come from a new pair of machines (or a new alternation). */
static const char PAIR[] = "pair";
static void pair_mark(void) { push_stat(PAIR, RAW, 0); }

static void print_samples(void) {
    for (size_t i = 0; i < n_samples; i++) {
        if (samples[i].stat == PAIR)
            printf("pair\n");
        else if (samples[i].stat)
            printf("stat %s %s %.6f\n", samples[i].stat, side_name[samples[i].side],
                   samples[i].value);
        else
            printf("%s %.6f\n", side_name[samples[i].side], samples[i].value);
    }
    fflush(stdout);
}

/* Raw first on even rounds, qm first on odd ones. */
static enum side order(size_t round, int i) { return (enum side)((round + (size_t)i) % 2); }

/* ---- the raw baseline ------------------------------------------------------------------- */

struct raw {
    pid_t pid;
    int fd;
    uint64_t next_id;
    char buf[65536];
    size_t len;      /* bytes in buf */
    size_t consumed; /* bytes of buf taken by the current line */
};

static struct raw *raw_spawn(void) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair: %m");
    char chardev[64];
    snprintf(chardev, sizeof chardev, "socket,id=mon,fd=%d", sv[1]);
    char *argv[] = {(char *)qemu, "-display", "none", "-vga", "none", "-chardev", chardev,
                    "-mon", "chardev=mon,mode=control", "-machine", "none", NULL};
    pid_t pid = fork();
    if (pid < 0) die("fork: %m");
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null < 0 || fcntl(sv[1], F_SETFD, 0) != 0) _exit(127);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execv(qemu, argv);
        _exit(127);
    }
    close(sv[1]);
    struct raw *vm = calloc(1, sizeof *vm);
    if (!vm) die("out of memory");
    vm->pid = pid;
    vm->fd = sv[0];
    vm->next_id = 1;
    return vm;
}

/* Blocking read of the next line; it is vm->buf[0 .. vm->consumed). */
static void raw_read_line(struct raw *vm) {
    if (vm->consumed) {
        memmove(vm->buf, vm->buf + vm->consumed, vm->len - vm->consumed);
        vm->len -= vm->consumed;
        vm->consumed = 0;
    }
    size_t scanned = 0;
    for (;;) {
        char *nl = memchr(vm->buf + scanned, '\n', vm->len - scanned);
        if (nl) {
            vm->consumed = (size_t)(nl - vm->buf) + 1;
            return;
        }
        scanned = vm->len;
        if (vm->len == sizeof vm->buf) die("a QMP line over %zu bytes", sizeof vm->buf);
        ssize_t n = read(vm->fd, vm->buf + vm->len, sizeof vm->buf - vm->len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("reading the monitor: %m");
        if (n == 0) die("the monitor closed");
        vm->len += (size_t)n;
    }
}

static bool raw_line_has(const struct raw *vm, const char *needle) {
    return memmem(vm->buf, vm->consumed, needle, strlen(needle)) != NULL;
}

static bool raw_is_event(const struct raw *vm) {
    return strncmp(vm->buf, "{\"timestamp\"", 12) == 0 || raw_line_has(vm, "\"event\": ");
}

static uint64_t raw_send(struct raw *vm, const char *cmd) {
    char msg[256];
    uint64_t id = vm->next_id++;
    /* No newline, as qm: QEMU parses a complete JSON object without one. */
    int len = snprintf(msg, sizeof msg, "{\"execute\":\"%s\",\"id\":%" PRIu64 "}", cmd, id);
    for (int off = 0; off < len;) {
        ssize_t n = send(vm->fd, msg + off, (size_t)(len - off), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("writing %s: %m", cmd);
        off += (int)n;
    }
    return id;
}

/* Reads until the reply with `id`, skipping events; sets *seen when an event line contains
 * `event` (may be NULL). */
static void raw_recv_reply(struct raw *vm, uint64_t id, const char *event, bool *seen) {
    char tail[48];
    int tail_len = snprintf(tail, sizeof tail, "\"id\": %" PRIu64 "}", id);
    for (;;) {
        raw_read_line(vm);
        if (raw_is_event(vm)) {
            if (event && raw_line_has(vm, event)) *seen = true;
            continue;
        }
        size_t end = vm->consumed;
        while (end > 0 && (vm->buf[end - 1] == '\n' || vm->buf[end - 1] == '\r')) end--;
        if (end >= (size_t)tail_len && memcmp(vm->buf + end - tail_len, tail, (size_t)tail_len) == 0) {
            if (strncmp(vm->buf, "{\"return\"", 9) == 0) return;
            die("command %" PRIu64 " failed: %.*s", id, (int)end, vm->buf);
        }
        die("unexpected line waiting for id %" PRIu64 ": %.*s", id, (int)end, vm->buf);
    }
}

static void raw_execute(struct raw *vm, const char *cmd) {
    raw_recv_reply(vm, raw_send(vm, cmd), NULL, NULL);
}

static void raw_handshake(struct raw *vm) {
    raw_read_line(vm);
    if (strncmp(vm->buf, "{\"QMP\"", 6) != 0) die("bad greeting: %.*s", (int)vm->consumed, vm->buf);
    raw_execute(vm, "qmp_capabilities");
}

static struct raw *raw_launch(void) {
    struct raw *vm = raw_spawn();
    raw_handshake(vm);
    return vm;
}

static void raw_query_status(struct raw *vm) {
    raw_execute(vm, "query-status");
    if (!raw_line_has(vm, "\"status\": \"running\""))
        die("unexpected query-status reply: %.*s", (int)vm->consumed, vm->buf);
}

/* `k` query-status pipelined: all `k` written, then the `k` replies read, each checked. QMP
 * allows several in-band commands in flight (QEMU takes them one at a time): this is what
 * QEMU itself can do for a client that never waits between commands. */
static void raw_query_status_pipelined(struct raw *vm, size_t k) {
    uint64_t first = vm->next_id;
    for (size_t i = 0; i < k; i++) raw_send(vm, "query-status");
    for (uint64_t id = first; id < first + k; id++) {
        raw_recv_reply(vm, id, NULL, NULL);
        if (!raw_line_has(vm, "\"status\": \"running\""))
            die("unexpected query-status reply: %.*s", (int)vm->consumed, vm->buf);
    }
}

/* Sends cmd and reads until both its reply and the event are in hand. */
static void raw_command_and_event(struct raw *vm, const char *cmd, const char *event) {
    char want[64];
    snprintf(want, sizeof want, "\"event\": \"%s\"", event);
    bool seen = false;
    raw_recv_reply(vm, raw_send(vm, cmd), want, &seen);
    while (!seen) {
        raw_read_line(vm);
        seen = raw_is_event(vm) && raw_line_has(vm, want);
    }
}

static void raw_reap(struct raw *vm) {
    close(vm->fd);
    int status;
    while (waitpid(vm->pid, &status, 0) < 0)
        if (errno != EINTR) die("waitpid: %m");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("QEMU exited with status %d", status);
    free(vm);
}

static void raw_shutdown(struct raw *vm) {
    raw_execute(vm, "quit");
    raw_reap(vm);
}

/* ---- qm --------------------------------------------------------------------------------- */

static void check(qm_status st, qm_error *err, const char *what) {
    if (st != QM_OK) die("%s: status %d: %s", what, (int)st, err ? qm_error_message(err) : "?");
}

static qm_machine *qm_up(void) {
    qm_machine *m = NULL;
    qm_error *err = NULL;
    check(qm_new(qemu, &m, &err), err, "qm_new");
    check(qm_set_machine(m, "none", &err), err, "qm_set_machine");
    check(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err), err, "qm_launch");
    return m;
}

/* query-status through qm_cmd; returns false (and prints why) on a wrong reply. */
static bool qm_query_status(qm_machine *m) {
    char *ret = NULL;
    qm_error *err = NULL;
    qm_status st = qm_cmd(m, "query-status", NULL, QM_WAIT_DEFAULT, NULL, &ret, &err);
    if (st != QM_OK) {
        fprintf(stderr, "qm_cmd query-status: %s\n", err ? qm_error_message(err) : "?");
        qm_error_free(err);
        return false;
    }
    bool ok = strstr(ret, "\"status\":\"running\"") && strstr(ret, "\"running\":true");
    if (!ok) fprintf(stderr, "unexpected query-status return: %s\n", ret);
    qm_string_free(ret);
    return ok;
}

static void qm_command_and_event(qm_machine *m, const char *cmd, const char *event) {
    char *out = NULL;
    qm_error *err = NULL;
    check(qm_cmd(m, cmd, NULL, QM_WAIT_DEFAULT, NULL, &out, &err), err, cmd);
    qm_string_free(out);
    check(qm_event_wait(m, event, NULL, WAIT_MS, NULL, &out, &err), err, "qm_event_wait");
    char want[64];
    snprintf(want, sizeof want, "\"event\":\"%s\"", event);
    if (!strstr(out, want)) die("wrong event: %s", out);
    qm_string_free(out);
}

static void qm_down(qm_machine *m) {
    qm_error *err = NULL;
    check(qm_shutdown(m, false, WAIT_MS, NULL, &err), err, "qm_shutdown");
    qm_free(m);
}

/* ---- metrics ---------------------------------------------------------------------------- */

static size_t param(int argc, char **argv, const char *key, size_t dflt) {
    size_t klen = strlen(key);
    for (int i = 2; i < argc; i++)
        if (strncmp(argv[i], key, klen) == 0 && argv[i][klen] == '=')
            return (size_t)strtoull(argv[i] + klen + 1, NULL, 10);
    return dflt;
}

/* A fresh pair of machines (launched in alternating order) for each segment, so that neither
 * side keeps a QEMU that the scheduler happens to treat worse for the whole run. */
struct pair {
    struct raw *raw;
    qm_machine *m;
};

static struct pair pair_up(size_t seg) {
    struct pair p;
    pair_mark();
    if (seg % 2 == 0) {
        p.raw = raw_launch();
        p.m = qm_up();
    } else {
        p.m = qm_up();
        p.raw = raw_launch();
    }
    return p;
}

static void pair_down(struct pair p) {
    raw_shutdown(p.raw);
    qm_down(p.m);
}

static void qmp_rtt(size_t segments, size_t blocks, size_t reps) {
    for (size_t seg = 0; seg < segments; seg++) {
        struct pair p = pair_up(seg);
        for (size_t i = 0; i < 100; i++) {
            raw_query_status(p.raw);
            if (!qm_query_status(p.m)) die("wrong reply");
        }
        for (size_t b = 0; b < blocks; b++)
            for (int k = 0; k < 2; k++) {
                enum side side = order(b, k);
                for (size_t i = 0; i < reps; i++) {
                    double t = now_s();
                    if (side == RAW)
                        raw_query_status(p.raw);
                    else if (!qm_query_status(p.m))
                        die("wrong reply");
                    push(side, (now_s() - t) * 1e6);
                }
            }
        pair_down(p);
    }
}

struct worker {
    qm_machine *m;
    size_t n, ok;
};

static void *worker_run(void *arg) {
    struct worker *w = arg;
    for (size_t i = 0; i < w->n; i++)
        if (qm_query_status(w->m)) w->ok++;
    return NULL;
}

/* threads x per_thread query-status on one machine; returns how many replies were right. */
static size_t qm_threads_block(qm_machine *m, size_t threads, size_t per_thread) {
    pthread_t tid[64];
    struct worker w[64];
    if (threads > 64) die("at most 64 threads");
    for (size_t i = 0; i < threads; i++) {
        w[i] = (struct worker){m, per_thread, 0};
        if (pthread_create(&tid[i], NULL, worker_run, &w[i]) != 0) die("pthread_create");
    }
    size_t ok = 0;
    for (size_t i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        ok += w[i].ok;
    }
    return ok;
}

static void qmp_threads(size_t segments, size_t blocks, size_t reps, size_t threads) {
    size_t per_thread = reps / threads, total = per_thread * threads;
    for (size_t seg = 0; seg < segments; seg++) {
        struct pair p = pair_up(seg);
        for (size_t i = 0; i < 100; i++) raw_query_status(p.raw);
        qm_threads_block(p.m, threads, 100 / threads);
        for (size_t b = 0; b < blocks; b++) {
            double qm_rate = 0;
            for (int k = 0; k < 2; k++) {
                enum side side = order(b, k);
                double t = now_s();
                size_t done;
                if (side == RAW) {
                    for (size_t i = 0; i < total; i++) raw_query_status(p.raw); /* sequential */
                    done = total;
                } else {
                    done = qm_threads_block(p.m, threads, per_thread);
                }
                double rate = (double)done / (now_s() - t);
                if (done != total) die("%zu of %zu replies right", done, total);
                push(side, rate);
                if (side == QM) qm_rate = rate;
            }
            /* The raw client pipelining as many commands as qm has threads: what QEMU itself
             * can do with that many in flight (`stat pipelined`: raw pipelined, and qm's rate
             * of the same block, for their ratio). */
            double t = now_s();
            for (size_t i = 0; i < per_thread; i++) raw_query_status_pipelined(p.raw, threads);
            push_stat("pipelined", RAW, (double)total / (now_s() - t));
            push_stat("pipelined", QM, qm_rate);
        }
        pair_down(p);
    }
}

static void launch_ready(size_t reps) {
    raw_shutdown(raw_launch()); /* warm up */
    qm_down(qm_up());
    for (size_t i = 0; i < reps; i++) {
        pair_mark();
        for (int k = 0; k < 2; k++) {
            enum side side = order(i, k);
            double t = now_s();
            if (side == RAW) {
                struct raw *vm = raw_launch();
                push(side, (now_s() - t) * 1e3);
                raw_shutdown(vm);
            } else {
                qm_machine *m = qm_up();
                push(side, (now_s() - t) * 1e3);
                qm_down(m);
            }
        }
    }
}

static void shutdown_metric(size_t reps) {
    raw_shutdown(raw_launch());
    qm_down(qm_up());
    struct timespec settle = {0, 2000000};
    for (size_t i = 0; i < reps; i++) {
        pair_mark();
        for (int k = 0; k < 2; k++) {
            enum side side = order(i, k);
            if (side == RAW) {
                struct raw *vm = raw_launch();
                raw_query_status(vm);
                nanosleep(&settle, NULL);
                double t = now_s();
                raw_shutdown(vm);
                push(side, (now_s() - t) * 1e3);
            } else {
                qm_machine *m = qm_up();
                if (!qm_query_status(m)) die("wrong reply");
                nanosleep(&settle, NULL);
                qm_error *err = NULL;
                double t = now_s();
                check(qm_shutdown(m, false, WAIT_MS, NULL, &err), err, "qm_shutdown");
                push(side, (now_s() - t) * 1e3);
                qm_free(m); /* after the clock: only the shutdown is timed */
            }
        }
    }
}

static void event_latency(size_t segments, size_t blocks, size_t reps) {
    for (size_t seg = 0; seg < segments; seg++) {
        struct pair p = pair_up(seg);
        for (int i = 0; i < 10; i++) {
            raw_command_and_event(p.raw, "stop", "STOP");
            raw_command_and_event(p.raw, "cont", "RESUME");
            qm_command_and_event(p.m, "stop", "STOP");
            qm_command_and_event(p.m, "cont", "RESUME");
        }
        for (size_t b = 0; b < blocks; b++)
            for (int k = 0; k < 2; k++) {
                enum side side = order(b, k);
                for (size_t i = 0; i < reps; i++) {
                    double t = now_s();
                    if (side == RAW)
                        raw_command_and_event(p.raw, "stop", "STOP");
                    else
                        qm_command_and_event(p.m, "stop", "STOP");
                    push(side, (now_s() - t) * 1e6);
                    if (side == RAW)
                        raw_command_and_event(p.raw, "cont", "RESUME");
                    else
                        qm_command_and_event(p.m, "cont", "RESUME");
                }
            }
        pair_down(p);
    }
}

/* ---- scale ------------------------------------------------------------------------------ */

/* Threads and VmRSS (KiB) from /proc/self/status. */
static void self_status(double *threads, double *rss_kib) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) die("/proc/self/status: %m");
    char line[256];
    *threads = *rss_kib = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "Threads:", 8) == 0) *threads = atof(line + 8);
        if (strncmp(line, "VmRSS:", 6) == 0) *rss_kib = atof(line + 6);
    }
    fclose(f);
    if (*threads < 0 || *rss_kib < 0) die("no Threads/VmRSS in /proc/self/status");
}

static double fd_count(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) die("/proc/self/fd: %m");
    double n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

struct round {
    double wall, up, down, threads, rss_kib, fd_delta;
};

static void emit_round(const struct round *r, enum side side, size_t n) {
    push(side, r->wall * 1e3);
    push_stat("up_ms", side, r->up * 1e3);
    push_stat("down_ms", side, r->down * 1e3);
    push_stat("threads_per_machine", side, r->threads / (double)n);
    push_stat("rss_kib_per_machine", side, r->rss_kib / (double)n);
    push_stat("fd_delta", side, r->fd_delta);
}

/* The baseline: spawn every QEMU from this thread, negotiate with each in turn (they all start
 * meanwhile), then quit to all, and read each reply and reap. */
static struct round scale_raw(size_t n) {
    struct round r;
    double fds0 = fd_count(), th0, rss0, th1, rss1;
    double t0 = now_s();
    self_status(&th0, &rss0);
    struct raw **vms = calloc(n, sizeof *vms);
    uint64_t *ids = calloc(n, sizeof *ids);
    if (!vms || !ids) die("out of memory");
    for (size_t i = 0; i < n; i++) vms[i] = raw_spawn();
    for (size_t i = 0; i < n; i++) raw_handshake(vms[i]);
    r.up = now_s() - t0;
    self_status(&th1, &rss1);
    double t1 = now_s();
    for (size_t i = 0; i < n; i++) ids[i] = raw_send(vms[i], "quit");
    for (size_t i = 0; i < n; i++) {
        raw_recv_reply(vms[i], ids[i], NULL, NULL);
        raw_reap(vms[i]);
    }
    r.down = now_s() - t1;
    r.wall = now_s() - t0;
    free(vms);
    free(ids);
    r.threads = th1 - th0;
    r.rss_kib = rss1 - rss0;
    r.fd_delta = fd_count() - fds0;
    return r;
}

static pthread_barrier_t gate;

static void *scale_worker(void *arg) {
    (void)arg;
    free(malloc(64)); /* make this thread's malloc arena exist before the first reading */
    pthread_barrier_wait(&gate); /* all callers exist */
    pthread_barrier_wait(&gate); /* "before" was read */
    qm_machine *m = qm_up();
    pthread_barrier_wait(&gate); /* all launched */
    pthread_barrier_wait(&gate); /* "after" was read */
    qm_down(m);
    return NULL;
}

/* qm: one caller thread per machine (qm_launch blocks), all started at once; they park on a
 * barrier before creating their machine and after launching it, so threads and RSS are read
 * with the callers alive both times and only the library's share differs. */
static struct round scale_qm(size_t n) {
    struct round r;
    double fds0 = fd_count(), th0, rss0, th1, rss1;
    double t0 = now_s();
    pthread_t *tid = calloc(n, sizeof *tid);
    if (!tid) die("out of memory");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    pthread_barrier_init(&gate, NULL, (unsigned)n + 1);
    for (size_t i = 0; i < n; i++)
        if (pthread_create(&tid[i], &attr, scale_worker, NULL) != 0) die("pthread_create");
    pthread_barrier_wait(&gate);
    self_status(&th0, &rss0);
    pthread_barrier_wait(&gate);
    pthread_barrier_wait(&gate);
    r.up = now_s() - t0;
    self_status(&th1, &rss1);
    double t1 = now_s();
    pthread_barrier_wait(&gate);
    for (size_t i = 0; i < n; i++) pthread_join(tid[i], NULL);
    r.down = now_s() - t1;
    r.wall = now_s() - t0;
    pthread_barrier_destroy(&gate);
    pthread_attr_destroy(&attr);
    free(tid);
    r.threads = th1 - th0;
    r.rss_kib = rss1 - rss0;
    r.fd_delta = fd_count() - fds0;
    return r;
}

/* CPU time (user + system) this process has used so far, ms. */
static double cpu_ms(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) die("getrusage");
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void scale(size_t n, size_t rounds) {
    raw_shutdown(raw_launch());
    qm_down(qm_up());
    for (size_t i = 0; i < rounds; i++) {
        pair_mark();
        for (int k = 0; k < 2; k++) {
            enum side side = order(i, k);
            double cpu0 = cpu_ms();
            struct round r = side == RAW ? scale_raw(n) : scale_qm(n);
            double cpu = cpu_ms() - cpu0;
            emit_round(&r, side, n);
            push_stat("cpu_ms_per_machine", side, cpu / (double)n);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: qm-bench-c METRIC [key=value ...]\n");
        return 2;
    }
    for (int i = 2; i < argc; i++)
        if (strncmp(argv[i], "qemu=", 5) == 0) qemu = argv[i] + 5;
    /* Resolve the binary now: after fork, the child only makes async-signal-safe calls. */
    if (!strchr(qemu, '/')) {
        static char found[4096];
        const char *path = getenv("PATH");
        char *dirs = strdup(path ? path : "/usr/bin:/bin"), *save = NULL;
        for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
            snprintf(found, sizeof found, "%s/%s", d, qemu);
            if (access(found, X_OK) == 0) {
                qemu = found;
                break;
            }
        }
        free(dirs);
        if (!strchr(qemu, '/')) die("%s not found in PATH", qemu);
    }
    const char *metric = argv[1];
    if (strcmp(metric, "qmp_rtt") == 0)
        qmp_rtt(param(argc, argv, "segments", 20), param(argc, argv, "blocks", 2),
                param(argc, argv, "reps", 500));
    else if (strcmp(metric, "qmp_threads") == 0)
        qmp_threads(param(argc, argv, "segments", 20), param(argc, argv, "blocks", 2),
                    param(argc, argv, "reps", 400), param(argc, argv, "threads", 8));
    else if (strcmp(metric, "launch_ready") == 0)
        launch_ready(param(argc, argv, "reps", 40));
    else if (strcmp(metric, "shutdown") == 0)
        shutdown_metric(param(argc, argv, "reps", 40));
    else if (strcmp(metric, "event_latency") == 0)
        event_latency(param(argc, argv, "segments", 20), param(argc, argv, "blocks", 2),
                      param(argc, argv, "reps", 50));
    else if (strcmp(metric, "scale") == 0)
        scale(param(argc, argv, "machines", 200), param(argc, argv, "rounds", 3));
    else
        die("unknown metric %s", metric);
    print_samples();
    return 0;
}
