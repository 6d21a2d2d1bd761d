/*
 * test_threads.c: one handle, many threads: 16 threads running 200 commands each, interrupting
 * blocked calls from another thread with qm_cancel_fire, waiters on different events, a
 * shutdown while other threads wait, and two launches racing.
 *
 * Worker threads never use CHECK (it longjmps on the main thread's stack): they count their
 * failures, and the main thread checks the counts.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

#define THREADS 16
#define COMMANDS 200

struct worker {
    qm_machine *m;
    int index;
    int failures;
    char first_failure[512];
};

static void note_failure(struct worker *w, const char *what, qm_error *err)
{
    if (w->failures++ == 0)
        snprintf(w->first_failure, sizeof w->first_failure, "%s: %s", what,
                 err ? qm_error_message(err) : "(no error)");
    qm_error_free(err);
}

static void *run_commands(void *arg)
{
    struct worker *w = arg;
    int i;
    for (i = 0; i < COMMANDS; i++) {
        qm_error *err = NULL;
        char *s = NULL, args[128], want[64];
        /* Each command carries something of its own that comes back in its reply (HMP answers
         * "unknown command: 't3-c7'"), so a reply handed to the wrong caller would show. */
        snprintf(args, sizeof args, "{\"command-line\":\"t%d-c%d\"}", w->index, i);
        snprintf(want, sizeof want, "'t%d-c%d'", w->index, i);
        switch (i % 4) {
        case 0:
            if (qm_cmd(w->m, "human-monitor-command", args, QM_WAIT_DEFAULT, NULL, &s, &err) != QM_OK)
                note_failure(w, "qm_cmd hmp", err);
            else if (strstr(s, want) == NULL)
                note_failure(w, "a reply for another caller", NULL);
            break;
        case 1:
            if (qm_qmp(w->m, "query-status", NULL, 30000, NULL, &s, &err) != QM_OK)
                note_failure(w, "qm_qmp", err);
            else if (strstr(s, "\"running\"") == NULL)
                note_failure(w, "bad query-status reply", NULL);
            break;
        case 2:
            if (qm_cmd(w->m, "no-such-command", NULL, QM_WAIT_FOREVER, NULL, &s, &err) != QM_ERR_QMP)
                note_failure(w, "qm_cmd error", err);
            else if (strcmp(qm_error_qmp_class(err), "CommandNotFound") != 0)
                note_failure(w, "bad error class", err);
            else
                qm_error_free(err);
            break;
        default:
            if (!qm_is_running(w->m) || qm_pid(w->m) <= 0)
                note_failure(w, "state", NULL);
            if (qm_get_name(w->m, &s, &err) != QM_OK)
                note_failure(w, "qm_get_name", err);
            break;
        }
        qm_string_free(s);
    }
    return NULL;
}

static void sixteen_threads_on_one_handle(void)
{
    qm_machine *m = launch_none();
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    int i, failures = 0;
    for (i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){.m = m, .index = i};
        CHECK(pthread_create(&threads[i], NULL, run_commands, &workers[i]) == 0);
    }
    for (i = 0; i < THREADS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        if (workers[i].failures) {
            fprintf(stderr, "thread %d: %d failures, first: %s\n", i, workers[i].failures,
                    workers[i].first_failure);
            failures += workers[i].failures;
        }
    }
    CHECK(failures == 0);
    shutdown_free(m);
}

/* A call blocked in another thread, to be interrupted. */
struct blocked {
    qm_machine *m;
    qm_cancel *cancel;
    int kind; /* 0: qm_event_wait, 1: qm_cmd, 2: qm_shutdown, 3: qm_events_wait, 4: qm_launch */
    qm_status status;
    double returned_at;
    char *out;
};

static void *block(void *arg)
{
    struct blocked *b = arg;
    qm_error *err = NULL;
    switch (b->kind) {
    case 0:
        b->status = qm_event_wait(b->m, "NEVER_EMITTED", NULL, QM_WAIT_FOREVER, b->cancel, &b->out, &err);
        break;
    case 1:
        b->status = qm_cmd(b->m, "query-status", NULL, QM_WAIT_FOREVER, b->cancel, &b->out, &err);
        break;
    case 2:
        b->status = qm_shutdown(b->m, false, QM_WAIT_FOREVER, b->cancel, &err);
        break;
    case 4:
        b->status = qm_launch(b->m, QM_WAIT_DEFAULT, b->cancel, &err);
        /* A launch interrupted by its token is a launch failure caused by the interruption. */
        if (b->status == QM_ERR_LAUNCH && qm_error_cause(err) == QM_ERR_INTERRUPTED)
            b->status = QM_ERR_INTERRUPTED;
        qm_error_free(err);
        err = NULL;
        b->returned_at = now_ms();
        return NULL;
    default:
        b->status = qm_events_wait(b->m, "[{\"name\":\"A\"},{\"name\":\"B\"}]", 600000, b->cancel,
                                   &b->out, &err);
        break;
    }
    b->returned_at = now_ms();
    /* The error object is checked by the status; it must agree. */
    if (err != NULL && qm_error_status(err) != b->status)
        b->status = QM_ERR_PANIC;
    qm_error_free(err);
    return NULL;
}

/* Starts a blocked call, lets it block, fires the token, and returns how long it took to
 * return after the fire. */
static double interrupt(struct blocked *b)
{
    pthread_t t;
    double fired;
    CHECK(pthread_create(&t, NULL, block, b) == 0);
    usleep(200 * 1000);
    fired = now_ms();
    qm_cancel_fire(b->cancel);
    CHECK(pthread_join(t, NULL) == 0);
    return b->returned_at - fired;
}

static void cancel_interrupts_a_blocked_event_wait(void)
{
    qm_machine *m = launch_none();
    struct blocked b = {.m = m, .cancel = qm_cancel_new(), .kind = 0};
    double took = interrupt(&b);
    CHECK(b.status == QM_ERR_INTERRUPTED);
    CHECK(b.out == NULL);
    CHECK(took < 5000); /* promptly: normally well under a millisecond */
    qm_cancel_free(b.cancel);

    b = (struct blocked){.m = m, .cancel = qm_cancel_new(), .kind = 3};
    took = interrupt(&b);
    CHECK(b.status == QM_ERR_INTERRUPTED);
    CHECK(took < 5000);
    qm_cancel_free(b.cancel);

    /* The machine is unharmed. */
    {
        char *s = cmd_ok(m, "query-status", NULL);
        qm_string_free(s);
    }
    shutdown_free(m);
}

static void cancel_interrupts_a_blocked_command_and_shutdown(void)
{
    qm_machine *m = launch_none();
    pid_t pid = (pid_t)qm_pid(m);
    struct blocked b = {.m = m, .cancel = qm_cancel_new(), .kind = 1};
    double took;
    int code = 0;
    /* A stopped QEMU never answers. */
    CHECK(kill(pid, SIGSTOP) == 0);
    took = interrupt(&b);
    CHECK(b.status == QM_ERR_INTERRUPTED);
    CHECK(took < 5000);
    qm_cancel_free(b.cancel);
    CHECK(kill(pid, SIGCONT) == 0);
    /* The late reply is dropped; the next command gets its own. */
    {
        char *s = cmd_ok(m, "query-status", NULL);
        CHECK_HAS(s, "\"status\"");
        qm_string_free(s);
    }

    /* A graceful shutdown that cannot finish, interrupted: QEMU is killed. */
    CHECK(kill(pid, SIGSTOP) == 0);
    b = (struct blocked){.m = m, .cancel = qm_cancel_new(), .kind = 2};
    took = interrupt(&b);
    CHECK(b.status == QM_ERR_ABNORMAL_SHUTDOWN);
    CHECK(took < 10000);
    CHECK(!qm_is_running(m));
    CHECK(qm_exit_code(m, &code) && code == -SIGKILL);
    qm_cancel_free(b.cancel);
    qm_free(m);
}

static void one_token_interrupts_many_calls(void)
{
    qm_machine *m = launch_none();
    qm_cancel *c = qm_cancel_new();
    struct blocked b[4];
    pthread_t t[4];
    int i;
    for (i = 0; i < 4; i++) {
        b[i] = (struct blocked){.m = m, .cancel = c, .kind = i % 2 == 0 ? 0 : 3};
        CHECK(pthread_create(&t[i], NULL, block, &b[i]) == 0);
    }
    usleep(200 * 1000);
    qm_cancel_fire(c);
    for (i = 0; i < 4; i++) {
        CHECK(pthread_join(t[i], NULL) == 0);
        CHECK(b[i].status == QM_ERR_INTERRUPTED);
    }
    qm_cancel_free(c);
    shutdown_free(m);
}

struct waiter {
    qm_machine *m;
    const char *name;
    qm_status status;
    char *event;
};

static void *wait_event(void *arg)
{
    struct waiter *w = arg;
    qm_error *err = NULL;
    w->status = qm_event_wait(w->m, w->name, NULL, 60000, NULL, &w->event, &err);
    qm_error_free(err);
    return NULL;
}

static void waiters_on_different_events(void)
{
    qm_machine *m = launch_none();
    struct waiter w[3] = {{m, "STOP", QM_OK, NULL}, {m, "RESUME", QM_OK, NULL}, {m, "RESET", QM_OK, NULL}};
    pthread_t t[3];
    int i;
    char *s;
    for (i = 0; i < 3; i++)
        CHECK(pthread_create(&t[i], NULL, wait_event, &w[i]) == 0);
    usleep(100 * 1000);
    s = cmd_ok(m, "system_reset", NULL);
    qm_string_free(s);
    s = cmd_ok(m, "stop", NULL);
    qm_string_free(s);
    s = cmd_ok(m, "cont", NULL);
    qm_string_free(s);
    for (i = 0; i < 3; i++) {
        char want[64];
        CHECK(pthread_join(t[i], NULL) == 0);
        CHECK(w[i].status == QM_OK);
        snprintf(want, sizeof want, "\"event\":\"%s\"", w[i].name);
        CHECK_HAS(w[i].event, want);
        qm_string_free(w[i].event);
    }
    shutdown_free(m);
}

static void shutdown_while_others_wait(void)
{
    qm_machine *m = launch_none();
    struct blocked b[3];
    pthread_t t[3];
    int i;
    for (i = 0; i < 3; i++) {
        b[i] = (struct blocked){.m = m, .cancel = NULL, .kind = 0};
        CHECK(pthread_create(&t[i], NULL, block, &b[i]) == 0);
    }
    usleep(200 * 1000);
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    for (i = 0; i < 3; i++) {
        CHECK(pthread_join(t[i], NULL) == 0);
        CHECK(b[i].status == QM_ERR_DISCONNECTED);
    }
    qm_free(m);
}

struct launcher {
    qm_machine *m;
    qm_status status;
};

static void *launch(void *arg)
{
    struct launcher *l = arg;
    qm_error *err = NULL;
    l->status = qm_launch(l->m, QM_WAIT_DEFAULT, NULL, &err);
    qm_error_free(err);
    return NULL;
}

static void racing_launches(void)
{
    qm_machine *m = new_none();
    struct launcher l[2] = {{m, QM_OK}, {m, QM_OK}};
    pthread_t t[2];
    int i;
    char *s;
    for (i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], NULL, launch, &l[i]) == 0);
    for (i = 0; i < 2; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    CHECK((l[0].status == QM_OK) != (l[1].status == QM_OK));
    CHECK(l[0].status == QM_ERR_STATE || l[1].status == QM_ERR_STATE);
    s = cmd_ok(m, "query-status", NULL);
    qm_string_free(s);
    shutdown_free(m);
}

static void cancel_interrupts_a_launch_waiting_for_qemu(void)
{
    /* A wrapper that sleeps before exec'ing QEMU keeps the launch waiting for the greeting. */
    const char *wrapper[] = {"sh", "-c", "exec sleep 60"};
    qm_machine *m = new_none();
    struct blocked b = {.m = m, .cancel = qm_cancel_new(), .kind = 4};
    double took;
    OK(qm_set_wrapper(m, wrapper, 3, &err));
    OK(qm_set_qmp_timer(m, QM_WAIT_FOREVER, &err));
    took = interrupt(&b);
    CHECK(b.status == QM_ERR_INTERRUPTED);
    CHECK(took < 5000);
    CHECK(!qm_is_running(m));
    /* A token that already fired launches nothing. */
    FAILS(QM_ERR_INTERRUPTED, qm_launch(m, QM_WAIT_DEFAULT, b.cancel, &err));
    CHECK(qm_pid(m) == -1);
    qm_cancel_free(b.cancel);
    qm_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(sixteen_threads_on_one_handle),
        TEST(cancel_interrupts_a_blocked_event_wait),
        TEST(cancel_interrupts_a_blocked_command_and_shutdown),
        TEST(one_token_interrupts_many_calls),
        TEST(waiters_on_different_events),
        TEST(shutdown_while_others_wait),
        TEST(racing_launches),
        TEST(cancel_interrupts_a_launch_waiting_for_qemu),
    };
    return RUN_TESTS(tests);
}
