/*
 * test_events.c: QMP events against a real QEMU: get, get all, clear, wait with match filters
 * (matching and not matching, several filters), order of what stays queued, and timeouts.
 * `stop`, `cont`, `system_reset` and `quit` make QEMU emit STOP, RESUME, RESET and SHUTDOWN.
 */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"

static void run(qm_machine *m, const char *cmd)
{
    char *s = cmd_ok(m, cmd, NULL);
    qm_string_free(s);
}

static void get_in_order_and_clear(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    run(m, "stop");
    run(m, "cont");
    run(m, "system_reset");
    /* The replies came after their events, so all three are queued now. */
    OK(qm_event_get(m, 0, NULL, &s, &err));
    CHECK_HAS(s, "\"event\":\"STOP\"");
    qm_string_free(s);
    OK(qm_event_get(m, QM_WAIT_FOREVER, NULL, &s, &err));
    CHECK_HAS(s, "\"event\":\"RESUME\"");
    qm_string_free(s);
    OK(qm_events_get(m, 1000, NULL, &s, &err));
    CHECK(s[0] == '[');
    CHECK_HAS(s, "\"event\":\"RESET\"");
    CHECK(strstr(s, "RESUME") == NULL);
    qm_string_free(s);
    OK(qm_events_get(m, 0, NULL, &s, &err));
    CHECK_STR(s, "[]");
    qm_string_free(s);

    run(m, "stop");
    run(m, "cont");
    OK(qm_events_clear(m, &err));
    s = (char *)0x1;
    OK(qm_event_get(m, 0, NULL, &s, &err));
    CHECK(s == NULL);
    shutdown_free(m);
}

static void wait_with_match_filters(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    run(m, "system_reset");
    /* A filter that does not match leaves the event queued. */
    FAILS(QM_ERR_TIMEOUT,
          qm_event_wait(m, "RESET", "{\"data\":{\"guest\":true}}", 100, NULL, &s, &err));
    OK(qm_event_wait(m, "RESET", "{\"data\":{\"guest\":true}}", 0, NULL, &s, &err));
    CHECK(s == NULL);
    FAILS(QM_ERR_TIMEOUT, qm_event_wait(m, "RESET", "{\"data\":{\"nokey\":null}}", 50, NULL, &s, &err));
    /* null matches any value; a sub-dict matches. */
    OK(qm_event_wait(m, "RESET", "{\"data\":{\"guest\":null,\"reason\":\"host-qmp-system-reset\"}}",
                     5000, NULL, &s, &err));
    CHECK_HAS(s, "\"event\":\"RESET\"");
    CHECK_HAS(s, "\"reason\":\"host-qmp-system-reset\"");
    qm_string_free(s);
    /* It was taken out of the queue. */
    OK(qm_event_wait(m, "RESET", NULL, 0, NULL, &s, &err));
    CHECK(s == NULL);
    shutdown_free(m);
}

static void wait_leaves_other_events_queued_in_order(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    run(m, "stop");
    run(m, "system_reset");
    run(m, "cont");
    OK(qm_event_wait(m, "RESET", "null", 5000, NULL, &s, &err));
    CHECK_HAS(s, "RESET");
    qm_string_free(s);
    OK(qm_events_get(m, 0, NULL, &s, &err));
    {
        const char *stop = strstr(s, "\"STOP\""), *resume = strstr(s, "\"RESUME\"");
        CHECK(stop != NULL && resume != NULL && stop < resume);
        CHECK(strstr(s, "RESET") == NULL);
    }
    qm_string_free(s);
    shutdown_free(m);
}

static void wait_for_any_of_several(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    const char *filters = "[{\"name\":\"RESET\",\"match\":{\"data\":{\"guest\":true}}},"
                          "{\"name\":\"RESUME\"},{\"name\":\"STOP\",\"match\":null}]";
    run(m, "system_reset"); /* guest:false: matches no filter */
    run(m, "stop");
    OK(qm_events_wait(m, filters, 5000, NULL, &s, &err));
    CHECK_HAS(s, "\"event\":\"STOP\"");
    qm_string_free(s);
    FAILS(QM_ERR_TIMEOUT, qm_events_wait(m, filters, 50, NULL, &s, &err));
    run(m, "cont");
    OK(qm_events_wait(m, filters, QM_WAIT_FOREVER, NULL, &s, &err));
    CHECK_HAS(s, "\"event\":\"RESUME\"");
    qm_string_free(s);
    OK(qm_events_wait(m, "[{\"name\":\"RESET\",\"match\":{\"data\":{\"guest\":false}}}]", 0, NULL, &s,
                      &err));
    CHECK_HAS(s, "RESET");
    qm_string_free(s);
    shutdown_free(m);
}

static void wait_blocks_until_the_event_arrives(void)
{
    /* SHUTDOWN is emitted while qm_event_wait blocks: QEMU is asked to quit by hand, so the
     * event arrives after the wait started (the quit reply and the event race; both orders
     * must work). */
    qm_machine *m = launch_none();
    char *s = NULL;
    OK(qm_qmp(m, "quit", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    qm_string_free(s);
    OK(qm_event_wait(m, "SHUTDOWN", "{\"data\":{\"guest\":false}}", 10000, NULL, &s, &err));
    CHECK_HAS(s, "host-qmp-quit");
    qm_string_free(s);
    OK(qm_wait(m, 10000, NULL, &err));
    /* The connection is closed now: a zero wait looks, a longer one says why it can't wait. */
    OK(qm_event_get(m, 0, NULL, &s, &err));
    CHECK(s == NULL);
    FAILS(QM_ERR_DISCONNECTED, qm_event_get(m, 1000, NULL, &s, &err));
    qm_free(m);
}

/* With a cap, the oldest events go; the next reader is told once, then reads the newest. */
static void a_capped_queue_drops_the_oldest_and_says_so_once(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    int i;
    INVALID(qm_set_max_queued_events(m, -2, &err), "max_events is -2");
    OK(qm_set_max_queued_events(m, 3, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    for (i = 0; i < 4; i++) {
        run(m, "stop");
        run(m, "cont");
    }
    /* STOP RESUME x 4 (the replies came after their events): the first 5 were dropped. */
    CHECK(qm_dropped_events(m) == 5);
    FAILS(QM_ERR_EVENTS_DROPPED, qm_events_get(m, 0, NULL, &s, &err));
    OK(qm_events_get(m, 0, NULL, &s, &err));
    CHECK_HAS(s, "[{");
    CHECK(strstr(s, "RESUME") != NULL && strstr(s, "STOP") != NULL);
    CHECK(strstr(strstr(strstr(s, "RESUME") + 1, "STOP") + 1, "RESUME") != NULL);
    qm_string_free(s);
    /* Back to no cap: nothing more is dropped. */
    OK(qm_set_max_queued_events(m, QM_EVENTS_UNLIMITED, &err));
    for (i = 0; i < 4; i++)
        run(m, "stop");
    CHECK(qm_dropped_events(m) == 5);
    CHECK(qm_dropped_events(NULL) == 0);
    shutdown_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(get_in_order_and_clear),
        TEST(wait_with_match_filters),
        TEST(wait_leaves_other_events_queued_in_order),
        TEST(wait_for_any_of_several),
        TEST(wait_blocks_until_the_event_arrives),
        TEST(a_capped_queue_drops_the_oldest_and_says_so_once),
    };
    return RUN_TESTS(tests);
}
