/*
 * test_schema.c: the QMP schema from C against a real QEMU (`-machine none`): the greeting,
 * feature queries, command descriptions, checks before send (QM_ERR_REFUSED with the JSON path
 * and rule), and commands built with QM_QMPF / QM_JSONF.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"

static void greeting_and_queries(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    qm_schema *schema = NULL;
    bool found = false;
    FAILS(QM_ERR_STATE, qm_greeting(m, &s, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_greeting(m, &s, &err));
    CHECK_HAS(s, "\"major\":");
    CHECK_HAS(s, "\"capabilities\":[\"oob\"]");
    qm_string_free(s);

    OK(qm_schema_get(m, QM_WAIT_DEFAULT, NULL, &schema, &err));
    CHECK(qm_schema_has_command(schema, "blockdev-add"));
    CHECK(!qm_schema_has_command(schema, "blockdev-addd"));
    CHECK(qm_schema_has_event(schema, "SHUTDOWN"));
    CHECK(!qm_schema_has_event(schema, "query-status"));
    CHECK(!qm_schema_has_command(NULL, "x") && !qm_schema_has_command(schema, NULL));
    OK(qm_schema_query(schema, "blockdev-add/arg-type/+file/aio/^io_uring", &found, &err));
    CHECK(found);
    OK(qm_schema_query(schema, "blockdev-add/arg-type/+file/aio/^nope", &found, &err));
    CHECK(!found);
    INVALID(qm_schema_query(schema, "blockdev-add/args/+file", &found, &err), "component 2");

    OK(qm_schema_command(schema, "query-yank", &s, &err));
    CHECK_HAS(s, "\"allow-oob\":true");
    qm_string_free(s);
    OK(qm_schema_command(schema, "no-such-command", &s, &err));
    CHECK_STR(s, "null");
    qm_string_free(s);
    OK(qm_schema_check(schema, "blockdev-add", "{\"driver\": \"file\", \"node_name\": \"x\"}", &s,
                       &err));
    CHECK_HAS(s, "\"path\":\"arguments.filename\"");
    CHECK_HAS(s, "\"rule\":\"unknown-member\"");
    CHECK_HAS(s, "did you mean 'node-name'");
    qm_string_free(s);

    /* The schema outlives the machine. */
    shutdown_free(m);
    CHECK(qm_schema_has_command(schema, "query-status"));
    qm_schema_free(schema);
    qm_schema_free(NULL);
}

static void strict_policy_refuses_with_path_and_rule(void)
{
    qm_machine *m = new_none();
    char *s = NULL;
    qm_error *e = NULL;
    qm_schema_level checks = -1, deprecated = -1, unstable = -1;
    OK(qm_get_schema_policy(m, &checks, &deprecated, &unstable, &err));
    CHECK(checks == QM_SCHEMA_OFF && deprecated == QM_SCHEMA_OFF && unstable == QM_SCHEMA_OFF);
    INVALID(qm_set_schema_policy(m, 7, QM_SCHEMA_OFF, QM_SCHEMA_OFF, &err), "checks 7");
    OK(qm_set_schema_policy(m, QM_SCHEMA_STRICT, QM_SCHEMA_WARN, QM_SCHEMA_OFF, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));

    CHECK(qm_cmd(m, "blockdev-add", "{\"driver\": \"null-co\", \"node_name\": \"n\"}",
                 QM_WAIT_DEFAULT, NULL, &s, &e) == QM_ERR_REFUSED);
    CHECK_STR(qm_error_schema_path(e), "arguments.node_name");
    CHECK_STR(qm_error_schema_rule(e), "unknown-member");
    CHECK_HAS(qm_error_message(e), "did you mean 'node-name'");
    CHECK(qm_error_schema_path(NULL) == NULL);
    qm_error_free(e);
    e = NULL;

    CHECK(qm_event_wait(m, "SHUTDOWNN", NULL, 60000, NULL, &s, &e) == QM_ERR_REFUSED);
    CHECK_STR(qm_error_schema_rule(e), "unknown-event");
    CHECK_STR(qm_status_str(QM_ERR_REFUSED), "QM_ERR_REFUSED");
    qm_error_free(e);
    e = NULL;

    OK(qm_cmd(m, "blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"n\"}",
              QM_WAIT_DEFAULT, NULL, &s, &err));
    qm_string_free(s);
    shutdown_free(m);
}

static void printf_style_commands(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    const char *node = "n0";
    const char *weird = "/we'ird \"path\\";
    int64_t size = 1 << 20;
    OK(QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &s, &err,
               "{'execute': 'blockdev-add', 'arguments': {'driver': 'null-co', "
               "'node-name': %s, 'size': %" PRId64 ", 'read-zeroes': %b}}",
               node, size, true));
    CHECK_STR(s, "{\"return\":{}}");
    qm_string_free(s);
    OK(QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &s, &err, "{'execute': 'query-named-block-nodes'}"));
    CHECK_HAS(s, "\"node-name\":\"n0\"");
    CHECK_HAS(s, "\"read-zeroes\\\": true");
    CHECK_HAS(s, "\"virtual-size\":1048576");
    qm_string_free(s);
    /* Quotes and backslashes reach QEMU intact: it names the path it could not find. */
    OK(QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &s, &err,
               "{'execute': 'qom-get', 'arguments': {'path': %s, 'property': 'type'}}", weird));
    CHECK_HAS(s, "/we'ird \\\"path\\\\");
    qm_string_free(s);

    /* A mismatch is an error naming the conversion; nothing is sent. */
    INVALID(QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &s, &err,
                    "{'execute': 'blockdev-del', 'arguments': {'node-name': %d}}", node),
            "conversion 1 ('%d') was given a string");
    INVALID(QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &s, &err,
                    "{'execute': 'blockdev-del', 'arguments': {'node-name': %s}}"),
            "has no argument");
    INVALID(QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &s, &err, "{'execute': 'stop'}", 1),
            "1 arguments given");
    INVALID(QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &s, &err, "{'execute': %s, 'x': 1}", "stop"),
            "a command has only");
    {
        const char *null_string = NULL;
        INVALID(QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &s, &err, "{'execute': %s}", null_string),
                "argument 1 (a string) is NULL");
    }
    {
        /* A hand-made array with a kind that is not one. */
        qm_arg bad[1] = {{99, NULL, 0, 0, 0.0}};
        INVALID(qm_qmpf(m, "{'execute': %s}", bad, 1, QM_WAIT_DEFAULT, NULL, &s, &err),
                "kind 99");
    }
    OK(QM_QMPF(m, QM_WAIT_DEFAULT, NULL, &s, &err, "{'execute': 'blockdev-del', 'arguments': %j}",
               "{\"node-name\": \"n0\"}"));
    qm_string_free(s);

    OK(QM_JSONF(&s, &err, "{'a': %u, 'b': %g, 'c': [%s, %lld], 'd': '50%'}", 7u, 0.25, "x",
                (long long)-3));
    CHECK_STR(s, "{\"a\":7,\"b\":0.25,\"c\":[\"x\",-3],\"d\":\"50%\"}");
    qm_string_free(s);
    shutdown_free(m);
}

static void out_of_band(void)
{
    qm_machine *m = launch_none();
    char *s = NULL;
    CHECK(!qm_qmp_oob_enabled(m));
    FAILS(QM_ERR_STATE, qm_qmp_oob(m, "query-yank", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    shutdown_free(m);

    m = new_none();
    OK(qm_set_qmp_oob(m, true, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    CHECK(qm_qmp_oob_enabled(m));
    OK(qm_qmp_oob(m, "query-yank", NULL, QM_WAIT_DEFAULT, NULL, &s, &err));
    CHECK_HAS(s, "\"return\":[");
    qm_string_free(s);
    shutdown_free(m);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(greeting_and_queries),
        TEST(strict_policy_refuses_with_path_and_rule),
        TEST(printf_style_commands),
        TEST(out_of_band),
    };
    return RUN_TESTS(tests);
}
