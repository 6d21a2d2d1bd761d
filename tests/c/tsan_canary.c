/*
 * tsan_canary.c: a deliberate data race in C, for tests/c/run.sh (step tsan) to check that
 * tests/c/tsan.supp hides only reports that involve Rust code, not races of the C side.
 *
 * Two threads increment a plain global counter without a lock, then run QMP commands on a shared
 * machine (so qm's Rust code runs on both threads, and its suppressed reports happen around the
 * race). The increments come first: TSan models a write to a socket and a read from it as a
 * release and an acquire, so increments between qm calls on one connection can be ordered
 * through it and not be a race TSan can see. Built with -fsanitize=thread, TSan must report a
 * data race on `racy_counter` in `bump`; run.sh fails the step if it does not. Not a test_*.c
 * file: it is meant to fail under TSan, and is not run by the other steps.
 */
#include <pthread.h>
#include <stdio.h>

#include "check.h"

static long racy_counter; /* the race: no lock, no atomics */

static __attribute__((noinline)) void bump(void)
{
    racy_counter++;
}

static void *hammer(void *arg)
{
    qm_machine *m = arg;
    int i;
    bump();
    for (i = 0; i < 50; i++) {
        char *s = NULL;
        if (qm_cmd(m, "query-status", NULL, QM_WAIT_DEFAULT, NULL, &s, NULL) == QM_OK)
            qm_string_free(s);
    }
    return NULL;
}

static void race_next_to_qm_calls(void)
{
    qm_machine *m = launch_none();
    pthread_t t[2];
    int i;
    for (i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], NULL, hammer, m) == 0);
    for (i = 0; i < 2; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    CHECK(racy_counter > 0);
    shutdown_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(race_next_to_qm_calls),
    };
    return RUN_TESTS(tests);
}
