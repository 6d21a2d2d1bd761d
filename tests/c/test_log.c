/*
 * test_log.c: what a harness sees, from C, against a real QEMU: the log callback (records,
 * user pointer, threads, restoring stderr), the QMP transcript, QEMU's output while it runs,
 * and error messages that lead with what happened.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "check.h"

/* What the callback saw; its own lock, since records come from several threads. */
struct seen {
    pthread_mutex_t lock;
    int records;
    int query_status;  /* debug records of qm::qmp sending query-status */
    int launch_lines;  /* records of qm::machine::launch with the command line */
    int bad;           /* records with a NULL string, an odd level or an odd time */
    double t_min, t_max;
};

static void on_log(void *user, qm_log_level level, const char *target, const char *message,
                   double timestamp)
{
    struct seen *seen = user;
    pthread_mutex_lock(&seen->lock);
    seen->records++;
    if (target == NULL || message == NULL || (level != QM_LOG_WARN && level != QM_LOG_DEBUG)) {
        seen->bad++;
    } else {
        if (level == QM_LOG_DEBUG && strcmp(target, "qm::qmp") == 0 &&
            strstr(message, ">>> {\"execute\":\"query-status\",\"id\":") != NULL)
            seen->query_status++;
        if (strcmp(target, "qm::machine::launch") == 0 && strstr(message, "launch command: "))
            seen->launch_lines++;
    }
    if (seen->t_min == 0 || timestamp < seen->t_min)
        seen->t_min = timestamp;
    if (timestamp > seen->t_max)
        seen->t_max = timestamp;
    pthread_mutex_unlock(&seen->lock);
}

static double epoch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *query_five(void *m)
{
    for (int i = 0; i < 5; i++) {
        char *s = cmd_ok(m, "query-status", NULL);
        qm_string_free(s);
    }
    return NULL;
}

static void callback_gets_records_from_every_thread(void)
{
    static struct seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pthread_t threads[4];
    double t0 = epoch_now(), t1;
    qm_machine *m;
    int before;

    OK(qm_set_log_level(QM_LOG_DEBUG, &err));
    CHECK(qm_set_log_callback(on_log, &seen));
    m = launch_none();
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&threads[i], NULL, query_five, m) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    shutdown_free(m);
    t1 = epoch_now();
    CHECK(qm_set_log_callback(NULL, NULL));
    OK(qm_set_log_level(QM_LOG_WARN, &err));

    pthread_mutex_lock(&seen.lock);
    CHECK(seen.bad == 0);
    CHECK(seen.query_status == 20);
    CHECK(seen.launch_lines == 1);
    /* Seconds since the Unix epoch, taken while the records were made. */
    CHECK(seen.t_min >= t0 - 1 && seen.t_max <= t1 + 1);
    before = seen.records;
    pthread_mutex_unlock(&seen.lock);

    /* Once qm_set_log_callback(NULL, NULL) returned, the callback is never called again. */
    OK(qm_set_log_level(QM_LOG_DEBUG, &err));
    m = launch_none();
    shutdown_free(m);
    OK(qm_set_log_level(QM_LOG_WARN, &err));
    pthread_mutex_lock(&seen.lock);
    CHECK(seen.records == before);
    pthread_mutex_unlock(&seen.lock);
}

/* A callback that drives another machine: the records that machine makes meanwhile go to
 * stderr, not back into the callback (no recursion, no deadlock on the callback's lock). */
static int reentered, depth, nested_ok, nested_done, refused;
static void calls_qm(void *user, qm_log_level level, const char *target, const char *message,
                     double timestamp)
{
    (void)user, (void)level, (void)target, (void)message, (void)timestamp;
    if (depth++ > 0)
        reentered = 1;
    if (!nested_done) {
        nested_done = 1;
        /* Changing the callback from inside it would wait for itself: refused. */
        refused = !qm_set_log_callback(NULL, NULL);
        qm_machine *other = launch_none();
        qm_string_free(cmd_ok(other, "query-status", NULL));
        shutdown_free(other);
        nested_ok = 1;
    }
    depth--;
}

static void callback_may_drive_another_machine(void)
{
    qm_machine *m;
    OK(qm_set_log_level(QM_LOG_DEBUG, &err));
    CHECK(qm_set_log_callback(calls_qm, NULL));
    m = launch_none();
    shutdown_free(m);
    qm_set_log_callback(NULL, NULL);
    OK(qm_set_log_level(QM_LOG_WARN, &err));
    CHECK(nested_ok);
    CHECK(refused);
    CHECK(!reentered);
}

static void transcript_has_every_message(void)
{
    char *dir = make_temp_dir();
    char path[4096];
    char line[8192];
    int greeting = 0, caps = 0, query = 0, replies = 0, events = 0, lines = 0;
    FILE *f;
    qm_machine *m = new_none();
    snprintf(path, sizeof path, "%s/qmp.jsonl", dir);
    OK(qm_set_qmp_transcript(m, path, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    qm_string_free(cmd_ok(m, "query-status", NULL));
    qm_string_free(cmd_ok(m, "stop", NULL));
    shutdown_free(m);

    f = fopen(path, "r");
    CHECK(f != NULL);
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        CHECK(strncmp(line, "{\"t\":", 5) == 0);
        CHECK(line[strlen(line) - 1] == '\n');
        if (strstr(line, "\"dir\":\"in\",\"msg\":{\"QMP\""))
            greeting++;
        if (strstr(line, "\"dir\":\"out\",\"msg\":{\"execute\":\"qmp_capabilities\""))
            caps++;
        if (strstr(line, "\"dir\":\"out\",\"msg\":{\"execute\":\"query-status\""))
            query++;
        if (strstr(line, "\"dir\":\"in\",\"msg\":{") && strstr(line, "\"return\":"))
            replies++;
        /* Events are recorded as QEMU wrote them (with its spacing). */
        if (strstr(line, "\"dir\":\"event\",\"msg\":{") && strstr(line, "\"STOP\""))
            events++;
    }
    if (f)
        fclose(f);
    CHECK(greeting == 1 && caps == 1 && query == 1 && events == 1);
    CHECK(replies == 4); /* qmp_capabilities, query-status, stop, quit */
    CHECK(lines >= 9);
    remove_dir(dir);
    free(dir);
}

static void output_so_far_while_running(void)
{
    char *dir = make_temp_dir();
    char script[4096];
    char *s = NULL;
    const char *wrapper[] = {script};
    FILE *f;
    qm_machine *m = new_none();
    /* A wrapper that speaks on stderr (QEMU's output file) before it becomes QEMU. */
    snprintf(script, sizeof script, "%s/wrapper.sh", dir);
    f = fopen(script, "w");
    CHECK(f != NULL);
    fputs("#!/bin/sh\necho c-says-hello >&2\nexec \"$@\"\n", f);
    fclose(f);
    CHECK(chmod(script, 0700) == 0);
    OK(qm_set_wrapper(m, wrapper, 1, &err));
    OK(qm_get_log_so_far(m, &s, &err));
    CHECK(s == NULL); /* before any launch */
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    /* The wrapper wrote before QEMU greeted: it is there now, while QEMU runs. */
    CHECK(qm_is_running(m));
    OK(qm_get_log_so_far(m, &s, &err));
    CHECK_HAS(s, "c-says-hello");
    qm_string_free(s);
    OK(qm_get_log(m, &s, &err));
    CHECK(s == NULL); /* qm_get_log keeps its meaning: after the run */
    shutdown_free(m);
    remove_dir(dir);
    free(dir);
}

static void errors_lead_with_what_happened(void)
{
    qm_machine *m = new_none();
    const char *args[] = {"-no-such-option-for-qm"};
    qm_error *err = NULL;
    char *s = NULL;
    OK(qm_add_args(m, args, 1, &err));
    CHECK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err) == QM_ERR_LAUNCH);
    CHECK(strncmp(qm_error_message(err), "launch failed: QEMU exited with code 1: ", 40) == 0);
    CHECK_HAS(qm_error_message(err), "-no-such-option-for-qm");
    qm_error_free(err);
    err = NULL;
    qm_free(m);

    m = launch_none();
    CHECK(qm_event_wait(m, "SHUTDOWN", NULL, 300, NULL, &s, &err) == QM_ERR_TIMEOUT);
    CHECK_STR(qm_error_message(err), "timed out: no SHUTDOWN event within 300 ms");
    qm_error_free(err);
    shutdown_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(callback_gets_records_from_every_thread),
        TEST(callback_may_drive_another_machine),
        TEST(transcript_has_every_message),
        TEST(output_so_far_while_running),
        TEST(errors_lead_with_what_happened),
    };
    return RUN_TESTS(tests);
}
