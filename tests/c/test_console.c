/*
 * test_console.c: console interaction from C with the 512-byte echo guest: waits for literal
 * and regex patterns, exec, interrupt_until, a failure pattern, a timeout's text, the
 * transcript and counters, cancel from another thread, one wait at a time, a pending wait
 * ended by the guest powering off (QM_ERR_CONSOLE_CLOSED), and every argument check.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define T_MS 60000

static qm_patterns *patterns(const char *literal, const char *regex, const char *failure)
{
    qm_patterns *p = qm_patterns_new();
    CHECK(p != NULL);
    if (literal)
        OK(qm_patterns_add(p, literal, QM_PATTERN_LITERAL, false, &err));
    if (regex)
        OK(qm_patterns_add(p, regex, QM_PATTERN_REGEX, false, &err));
    if (failure)
        OK(qm_patterns_add(p, failure, QM_PATTERN_LITERAL, true, &err));
    return p;
}

/* The text of a match, checked against `want` (exact bytes). */
static void check_match(qm_console_match *mt, size_t index, const char *want)
{
    size_t len = 0;
    const char *text = qm_console_match_text(mt, &len);
    CHECK(text != NULL);
    CHECK(qm_console_match_index(mt) == index);
    CHECK(len == strlen(want) && memcmp(text, want, len) == 0 && text[len] == '\0');
    if (len != strlen(want))
        fprintf(stderr, "    got %zu bytes: \"%.*s\"\n", len, (int)len, text);
}

struct waiter {
    qm_machine *m;
    qm_patterns *p;
    qm_cancel *cancel;
    qm_status status;
    char *text; /* qm_error_console_text, copied */
};

static void *wait_in_thread(void *arg)
{
    struct waiter *w = arg;
    qm_error *err = NULL;
    qm_console_match *mt = NULL;
    /* A probe in the main thread may hold the console for a moment: try again until this
     * one waits. */
    while ((w->status = qm_console_wait(w->m, w->p, T_MS, w->cancel, &mt, &err)) == QM_ERR_STATE) {
        qm_error_free(err);
        err = NULL;
    }
    if (err && qm_error_console_text(err))
        w->text = strdup(qm_error_console_text(err));
    qm_error_free(err);
    qm_console_match_free(mt);
    return NULL;
}

static void wait_exec_interrupt_failure_timeout_transcript_and_poweroff(void)
{
    char *dir = make_temp_dir(), *s = NULL;
    qm_machine *m = new_guest(dir, "C console guest", QM_GUEST_ECHO, 0, NULL);
    qm_patterns *banner = patterns("guest\r\n", NULL, NULL);
    qm_patterns *hello = patterns(NULL, "hel+o;", "boom");
    qm_patterns *kkk = patterns("kkk", NULL, NULL);
    qm_patterns *never = patterns("never", NULL, NULL);
    qm_console_match *mt = NULL;
    qm_console_counters st;
    struct waiter w = {0};
    pthread_t t;
    size_t idx = 99, len = 0;
    qm_error *e = NULL;

    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_console_wait(m, banner, T_MS, NULL, &mt, &err));
    check_match(mt, 0, "C console guest\r\n");
    CHECK(qm_console_match_start(mt) == strlen("C console "));
    CHECK(qm_console_match_dropped(mt) == 0);
    qm_console_match_free(mt);

    /* exec: the echo guest sends the line back; the regex (success pattern 0) matches it. */
    OK(qm_console_exec(m, "hello", ";", hello, T_MS, NULL, &mt, &err));
    check_match(mt, 0, "hello;");
    qm_console_match_free(mt);

    /* A failure pattern: QM_ERR_CONSOLE_FAILURE with its index and the text. */
    CHECK(qm_console_send_line(m, "boom", "\n", T_MS, NULL, &e) == QM_OK);
    CHECK(qm_console_wait(m, hello, T_MS, NULL, &mt, &e) == QM_ERR_CONSOLE_FAILURE);
    CHECK(qm_error_console_pattern(e, &idx) && idx == 0);
    CHECK_STR(qm_error_console_text(e), "boom");
    CHECK_STR(qm_status_str(qm_error_status(e)), "QM_ERR_CONSOLE_FAILURE");
    qm_error_free(e);
    e = NULL;

    /* interrupt_until: "k" every 20 ms until three came back. */
    OK(qm_console_interrupt_until(m, (const uint8_t *)"k", 1, 20, kkk, T_MS, NULL, &mt, &err));
    qm_console_match_text(mt, &len);
    CHECK(len >= 4); /* "\n" left from "boom\n", then the keys */
    qm_console_match_free(mt);

    /* A timeout names the patterns and carries the unread text, which stays unread. */
    OK(qm_console_send(m, (const uint8_t *)"tail", 4, T_MS, NULL, &err));
    CHECK(qm_console_wait(m, never, 300, NULL, &mt, &e) == QM_ERR_TIMEOUT);
    CHECK_HAS(qm_error_message(e), "\"never\"");
    CHECK_HAS(qm_error_console_text(e), "tail");
    CHECK(!qm_error_console_pattern(e, &idx));
    qm_error_free(e);
    e = NULL;

    /* Transcript and counters. */
    OK(qm_console_transcript(m, 0, &s, &len, &err));
    CHECK(strncmp(s, "C console guest\r\nhello;boom\n", 28) == 0 && len == strlen(s));
    qm_string_free(s);
    OK(qm_console_transcript(m, 4, &s, NULL, &err));
    CHECK_STR(s, "tail");
    qm_string_free(s);
    OK(qm_console_stats(m, &st, &err));
    CHECK(st.received == st.kept && st.unread >= 4 && st.dropped == 0 && !st.closed);
    CHECK(st.cap == 1 << 20);
    OK(qm_console_skip_unread(m, &len, &err));
    CHECK(len == st.unread);

    /* A pending wait, then the guest powers off: QM_ERR_CONSOLE_CLOSED, and a SHUTDOWN. */
    w.m = m;
    w.p = never;
    CHECK(pthread_create(&t, NULL, wait_in_thread, &w) == 0);
    usleep(50 * 1000);
    OK(qm_console_send(m, (const uint8_t *)"p", 1, T_MS, NULL, &err));
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(w.status == QM_ERR_CONSOLE_CLOSED);
    free(w.text);
    OK(qm_event_wait(m, "SHUTDOWN", "{\"data\":{\"guest\":true}}", T_MS, NULL, &s, &err));
    qm_string_free(s);
    OK(qm_wait(m, T_MS, NULL, &err));
    /* After the shutdown: waits fail at once, the transcript stays. */
    FAILS(QM_ERR_CONSOLE_CLOSED, qm_console_wait(m, never, T_MS, NULL, &mt, &err));
    OK(qm_console_transcript(m, 4, &s, NULL, &err));
    CHECK_STR(s, "tail");
    qm_string_free(s);
    OK(qm_console_stats(m, &st, &err));
    CHECK(st.closed);

    qm_patterns_free(banner);
    qm_patterns_free(hello);
    qm_patterns_free(kkk);
    qm_patterns_free(never);
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

static void cancel_from_another_thread_and_one_wait_at_a_time(void)
{
    char *dir = make_temp_dir();
    qm_machine *m = new_guest(dir, "cancel guest", QM_GUEST_HALT, 0, NULL);
    qm_patterns *never = patterns("never", NULL, NULL);
    qm_console_match *mt = NULL;
    struct waiter w = {0};
    pthread_t t;
    qm_status st = QM_OK;
    double start, fired;
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    w.m = m;
    w.p = never;
    w.cancel = qm_cancel_new();
    CHECK(pthread_create(&t, NULL, wait_in_thread, &w) == 0);
    /* While it waits, a second wait is refused (QM_ERR_STATE), never queued behind it. */
    start = now_ms();
    do {
        qm_error *e = NULL;
        st = qm_console_wait(m, never, 0, NULL, &mt, &e);
        qm_error_free(e);
        if (st == QM_ERR_TIMEOUT)
            usleep(1000);
    } while (st == QM_ERR_TIMEOUT && now_ms() - start < T_MS);
    CHECK(st == QM_ERR_STATE);
    fired = now_ms();
    qm_cancel_fire(w.cancel);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(w.status == QM_ERR_INTERRUPTED);
    CHECK(now_ms() - fired < T_MS / 2);
    /* A fired token refuses at once. */
    FAILS(QM_ERR_INTERRUPTED, qm_console_wait(m, never, QM_WAIT_FOREVER, w.cancel, &mt, &err));
    qm_cancel_free(w.cancel);
    qm_patterns_free(never);
    OK(qm_kill(m, &err));
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

static void argument_checks(void)
{
    char *dir = make_temp_dir(), *s = NULL;
    qm_machine *m = new_guest(dir, "args guest", QM_GUEST_HALT, 0, NULL);
    qm_machine *none = new_none();
    qm_patterns *p = patterns("x", NULL, NULL), *empty = qm_patterns_new();
    qm_console_match *mt = NULL;
    qm_console_counters st;
    INVALID(qm_patterns_add(p, "(", QM_PATTERN_REGEX, false, &err), "regex");
    INVALID(qm_patterns_add(p, "x", 7, false, &err), "kind");
    INVALID(qm_patterns_add(NULL, "x", QM_PATTERN_LITERAL, false, &err), "p");
    INVALID(qm_patterns_add(p, NULL, QM_PATTERN_LITERAL, false, &err), "pattern");
    /* No console configured, or not launched: a state error. */
    FAILS(QM_ERR_STATE, qm_console_wait(none, p, 0, NULL, &mt, &err));
    FAILS(QM_ERR_STATE, qm_console_transcript(m, 0, &s, NULL, &err));
    FAILS(QM_ERR_STATE, qm_console_stats(m, &st, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    INVALID(qm_console_wait(m, NULL, 0, NULL, &mt, &err), "patterns");
    INVALID(qm_console_wait(m, p, 0, NULL, NULL, &err), "match_out");
    INVALID(qm_console_wait(m, p, QM_WAIT_DEFAULT, NULL, &mt, &err), "default");
    INVALID(qm_console_wait(m, empty, 0, NULL, &mt, &err), "success pattern");
    INVALID(qm_console_send(m, NULL, 3, 0, NULL, &err), "bytes");
    OK(qm_console_send(m, NULL, 0, 0, NULL, &err));
    INVALID(qm_console_send_line(m, "x", NULL, 0, NULL, &err), "eol");
    INVALID(qm_console_transcript(m, 0, NULL, NULL, &err), "text_out");
    INVALID(qm_console_stats(m, NULL, &err), "stats_out");
    OK(qm_set_console_buffer(m, 1, &err));
    OK(qm_console_stats(m, &st, &err));
    CHECK(st.cap == 4096);
    /* NULL is harmless for the accessors and frees. */
    CHECK(qm_console_match_text(NULL, NULL) == NULL);
    CHECK(qm_console_match_index(NULL) == 0);
    CHECK(qm_error_console_text(NULL) == NULL);
    qm_console_match_free(NULL);
    qm_patterns_free(NULL);
    qm_patterns_free(p);
    qm_patterns_free(empty);
    OK(qm_kill(m, &err));
    qm_free(m);
    qm_free(none);
    remove_dir(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(wait_exec_interrupt_failure_timeout_transcript_and_poweroff),
        TEST(cancel_from_another_thread_and_one_wait_at_a_time),
        TEST(argument_checks),
    };
    return RUN_TESTS(tests);
}
