/*
 * test_launch_all.c: qm_launch_all starts several machines from one thread, each answering
 * QMP; a machine with a bad argument fails with its own QM_ERR_LAUNCH while the others work;
 * an entry that is not a live handle, and the same handle twice, are QM_ERR_INVALID for that
 * entry only.
 */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"

#define N 3

static void machines_launched_at_once_all_answer(void)
{
    qm_machine *ms[N];
    qm_error *errs[N];
    size_t i;
    for (i = 0; i < N; i++) {
        ms[i] = new_none();
        errs[i] = (qm_error *)&errs; /* overwritten: NULL for a launched machine */
    }
    CHECK(qm_launch_all(ms, N, 60000, NULL, errs) == QM_OK);
    for (i = 0; i < N; i++) {
        char *status;
        CHECK(errs[i] == NULL);
        CHECK(qm_is_running(ms[i]));
        status = cmd_ok(ms[i], "query-status", NULL);
        CHECK_HAS(status, "\"running\"");
        qm_string_free(status);
    }
    /* Launched already: each gets QM_ERR_STATE, and keeps running. */
    CHECK(qm_launch_all(ms, N, QM_WAIT_DEFAULT, NULL, errs) == QM_ERR_STATE);
    for (i = 0; i < N; i++) {
        CHECK(qm_error_status(errs[i]) == QM_ERR_STATE);
        qm_error_free(errs[i]);
        CHECK(qm_is_running(ms[i]));
    }
    for (i = 0; i < N; i++)
        shutdown_free(ms[i]);
}

static void one_bad_machine_fails_alone(void)
{
    qm_machine *ms[N + 2];
    qm_error *errs[N + 2];
    const char *bad[] = {"-no-such-option-for-batch"};
    int code = 0;
    size_t i;
    for (i = 0; i < N; i++)
        ms[i] = new_none();
    OK(qm_add_args(ms[1], bad, 1, &err));
    ms[N] = ms[0];                       /* the same handle twice */
    ms[N + 1] = (qm_machine *)&code;     /* not a handle qm made */
    CHECK(qm_launch_all(ms, N + 2, 60000, NULL, errs) == QM_ERR_LAUNCH);
    CHECK(errs[0] == NULL && errs[2] == NULL);
    CHECK(qm_error_status(errs[1]) == QM_ERR_LAUNCH);
    CHECK(qm_error_exit_code(errs[1], &code) && code == 1);
    CHECK_HAS(qm_error_output(errs[1]), "-no-such-option-for-batch");
    CHECK(!qm_is_running(ms[1]));
    qm_error_free(errs[1]);
    CHECK(qm_error_status(errs[N]) == QM_ERR_INVALID);
    CHECK_HAS(qm_error_message(errs[N]), "machines[3]");
    qm_error_free(errs[N]);
    CHECK(qm_error_status(errs[N + 1]) == QM_ERR_INVALID);
    CHECK_HAS(qm_error_message(errs[N + 1]), "machines[4]");
    qm_error_free(errs[N + 1]);
    for (i = 0; i < N; i += 2) {
        char *status = cmd_ok(ms[i], "query-status", NULL);
        qm_string_free(status);
    }
    /* NULL errs_out: the status alone. */
    CHECK(qm_launch_all(ms, 1, 60000, NULL, NULL) == QM_ERR_STATE);
    for (i = 0; i < N; i++)
        shutdown_free(ms[i]);
}

static void a_fired_token_launches_nothing(void)
{
    qm_machine *ms[2];
    qm_error *errs[2];
    qm_cancel *cancel = qm_cancel_new();
    size_t i;
    ms[0] = new_none();
    ms[1] = new_none();
    qm_cancel_fire(cancel);
    CHECK(qm_launch_all(ms, 2, QM_WAIT_FOREVER, cancel, errs) == QM_ERR_INTERRUPTED);
    for (i = 0; i < 2; i++) {
        CHECK(qm_error_status(errs[i]) == QM_ERR_INTERRUPTED);
        qm_error_free(errs[i]);
        CHECK(!qm_is_running(ms[i]));
        CHECK(qm_pid(ms[i]) == -1);
        qm_free(ms[i]);
    }
    qm_cancel_free(cancel);
    /* An empty batch is fine, with NULL arrays. */
    CHECK(qm_launch_all(NULL, 0, QM_WAIT_DEFAULT, NULL, NULL) == QM_OK);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(machines_launched_at_once_all_answer),
        TEST(one_bad_machine_fails_alone),
        TEST(a_fired_token_launches_nothing),
    };
    return RUN_TESTS(tests);
}
