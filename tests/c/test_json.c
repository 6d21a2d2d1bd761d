/*
 * test_json.c: the JSON accessors (qm_json_*), with which C programs read results without a
 * JSON library: RFC 6901 pointers, typed getters and their errors, string vectors; then the
 * same on real results: query-version, an event, the test guest's arguments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char BAD_UTF8[] = {'"', 'a', (char)0xff, '"', '\0'};

/* The document of RFC 6901 section 5. */
static const char RFC[] = "{\"foo\": [\"bar\", \"baz\"], \"\": 0, \"a/b\": 1, \"c%d\": 2, "
                          "\"e^f\": 3, \"g|h\": 4, \"i\\\\j\": 5, \"k\\\"l\": 6, \" \": 7, "
                          "\"m~n\": 8}";

static void pointers_of_rfc_6901(void)
{
    static const struct {
        const char *pointer;
        int64_t value;
    } ints[] = {{"/", 0},    {"/a~1b", 1}, {"/c%d", 2}, {"/e^f", 3}, {"/g|h", 4},
                {"/i\\j", 5}, {"/k\"l", 6}, {"/ ", 7},   {"/m~0n", 8}};
    char *s = NULL;
    size_t i, n = 0;
    for (i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v = -1;
        OK(qm_json_get_int(RFC, ints[i].pointer, &v, &err));
        CHECK(v == ints[i].value);
    }
    OK(qm_json_get(RFC, "/foo", &s, &err));
    CHECK_STR(s, "[\"bar\",\"baz\"]");
    qm_string_free(s);
    OK(qm_json_get_string(RFC, "/foo/1", &s, &err));
    CHECK_STR(s, "baz");
    qm_string_free(s);
    OK(qm_json_array_len(RFC, "/foo", &n, &err));
    CHECK(n == 2);
    /* "" is the whole text, re-serialised compactly. */
    OK(qm_json_get(" [1, {\"a\" : null}] ", "", &s, &err));
    CHECK_STR(s, "[1,{\"a\":null}]");
    qm_string_free(s);
}

static void typed_getters(void)
{
    const char *doc = "{\"i\": -42, \"big\": 9223372036854775807, \"huge\": 9223372036854775808,"
                      " \"f\": 1.5, \"e\": 1e3, \"t\": true, \"n\": null, "
                      "\"s\": \"tab\\there \\\"q\\\" \\u00e9 \\ud83d\\ude00\", \"a\": [], \"o\": {}}";
    int64_t i = 0;
    double d = 0;
    bool b = false;
    size_t n = 99;
    char *s = NULL;
    qm_json_kind k = -1;
    OK(qm_json_get_int(doc, "/i", &i, &err));
    CHECK(i == -42);
    OK(qm_json_get_int(doc, "/big", &i, &err));
    CHECK(i == INT64_MAX);
    OK(qm_json_get_double(doc, "/f", &d, &err));
    CHECK(d == 1.5);
    OK(qm_json_get_double(doc, "/i", &d, &err)); /* an integer is a number too */
    CHECK(d == -42.0);
    OK(qm_json_get_double(doc, "/e", &d, &err));
    CHECK(d == 1000.0);
    OK(qm_json_get_bool(doc, "/t", &b, &err));
    CHECK(b);
    OK(qm_json_array_len(doc, "/a", &n, &err));
    CHECK(n == 0);
    /* Strings come back unescaped, as UTF-8. */
    OK(qm_json_get_string(doc, "/s", &s, &err));
    CHECK_STR(s, "tab\there \"q\" \xc3\xa9 \xf0\x9f\x98\x80");
    qm_string_free(s);
    /* What each pointer designates; a missing one is no error. */
    OK(qm_json_type(doc, "/n", &k, &err));
    CHECK(k == QM_JSON_NULL);
    OK(qm_json_type(doc, "/t", &k, &err));
    CHECK(k == QM_JSON_BOOL);
    OK(qm_json_type(doc, "/f", &k, &err));
    CHECK(k == QM_JSON_NUMBER);
    OK(qm_json_type(doc, "/s", &k, &err));
    CHECK(k == QM_JSON_STRING);
    OK(qm_json_type(doc, "/a", &k, &err));
    CHECK(k == QM_JSON_ARRAY);
    OK(qm_json_type(doc, "", &k, &err));
    CHECK(k == QM_JSON_OBJECT);
    OK(qm_json_type(doc, "/nope", &k, &err));
    CHECK(k == QM_JSON_MISSING);
    OK(qm_json_type(doc, "/a/0", &k, &err));
    CHECK(k == QM_JSON_MISSING);
    OK(qm_json_type(doc, "/i/x", &k, &err));
    CHECK(k == QM_JSON_MISSING);
}

static void errors_say_what_is_wrong(void)
{
    const char *doc = "{\"data\": {\"n\": [1, 2, 3], \"s\": \"x\", \"f\": 2.5, "
                      "\"nul\": \"a\\u0000b\", \"mixed\": [\"a\", 1]}}";
    int64_t i = 7;
    double d = 7;
    bool b = true;
    size_t n = 7;
    char *s = (char *)"untouched", **v = (char **)&n;
    qm_json_kind k = 7;
    /* A pointer that designates nothing: where the lookup stopped. */
    INVALID(qm_json_get_int(doc, "/data/x", &i, &err),
            "qm_json_get_int: invalid argument: pointer \"/data/x\" designates nothing: no "
            "member \"x\" in the object at \"/data\"");
    INVALID(qm_json_get(doc, "/data/n/3", &s, &err),
            "index 3 is past the end of the array at \"/data/n\" (3 elements)");
    INVALID(qm_json_get_string(doc, "/data/s/0", &s, &err),
            "the value at \"/data/s\" is a string, which has no member \"0\"");
    /* The wrong type: what it is and what was asked for. */
    INVALID(qm_json_get_int(doc, "/data/s", &i, &err), "the value at \"/data/s\" is a string, not an integer");
    INVALID(qm_json_get_int(doc, "/data/f", &i, &err), "read it with qm_json_get_double");
    INVALID(qm_json_get_int("18446744073709551615", "", &i, &err), "above the range of int64_t");
    INVALID(qm_json_get_double(doc, "/data/s", &d, &err), "is a string, not a number");
    INVALID(qm_json_get_bool(doc, "/data/n/0", &b, &err), "is a number, not a boolean");
    INVALID(qm_json_get_string(doc, "/data/n", &s, &err), "is an array, not a string");
    INVALID(qm_json_array_len(doc, "/data", &n, &err), "is an object, not an array");
    INVALID(qm_json_get_strings(doc, "/data/mixed", &v, &n, &err),
            "the value at \"/data/mixed/1\" is a number, not a string");
    /* A NUL inside a string cannot be a C string: refused, not truncated. */
    INVALID(qm_json_get_string(doc, "/data/nul", &s, &err), "contains a NUL character");
    /* Pointer syntax. */
    INVALID(qm_json_get(doc, "data", &s, &err), "must be \"\" or start with '/'");
    INVALID(qm_json_get(doc, "/data~2", &s, &err), "'~' must be followed by 0 or 1");
    INVALID(qm_json_get(doc, "/data/n/01", &s, &err), "is not an array index");
    INVALID(qm_json_type(doc, "x", &k, &err), "start with '/'");
    /* Arguments. */
    INVALID(qm_json_get(NULL, "", &s, &err), "json is NULL");
    INVALID(qm_json_get(doc, NULL, &s, &err), "pointer is NULL");
    INVALID(qm_json_get(doc, "", NULL, &err), "json_out is NULL");
    INVALID(qm_json_get("{", "", &s, &err), "json is not valid JSON");
    INVALID(qm_json_get(BAD_UTF8, "", &s, &err), "json is not valid UTF-8");
    INVALID(qm_json_get(doc, BAD_UTF8, &s, &err), "pointer is not valid UTF-8");
    INVALID(qm_json_type(doc, "", NULL, &err), "kind_out is NULL");
    INVALID(qm_json_get_int(doc, "", NULL, &err), "value_out is NULL");
    INVALID(qm_json_get_double(doc, "", NULL, &err), "value_out is NULL");
    INVALID(qm_json_get_bool(doc, "", NULL, &err), "value_out is NULL");
    INVALID(qm_json_get_string(doc, "", NULL, &err), "string_out is NULL");
    INVALID(qm_json_array_len(doc, "", NULL, &err), "len_out is NULL");
    INVALID(qm_json_get_strings(doc, "", NULL, &n, &err), "strings_out is NULL");
    /* Outputs are written only on success. */
    CHECK(i == 7 && d == 7 && b && n == 7 && k == 7 && v == (char **)&n);
    CHECK_STR(s, "untouched");
    /* Nesting beyond the parser's limit is refused, not a stack overflow. */
    {
        size_t depth = 100000;
        char *deep = malloc(depth + 1);
        CHECK(deep != NULL);
        memset(deep, '[', depth);
        deep[depth] = '\0';
        INVALID(qm_json_get(deep, "", &s, &err), "recursion limit");
        free(deep);
    }
    /* A NULL err_out is allowed. */
    CHECK(qm_json_get_int(doc, "/data/s", &i, NULL) == QM_ERR_INVALID);
}

static void string_vectors(void)
{
    char **v = NULL;
    size_t n = 99;
    OK(qm_json_get_strings("{\"a\": [\"x\", \"\", \"\\u00e9/\\\"\"]}", "/a", &v, &n, &err));
    CHECK(n == 3);
    CHECK_STR(v[0], "x");
    CHECK_STR(v[1], "");
    CHECK_STR(v[2], "\xc3\xa9/\"");
    CHECK(v[3] == NULL);
    qm_strings_free(v);
    /* An empty array: a vector holding only the NULL; len_out may be NULL. */
    OK(qm_json_get_strings("[]", "", &v, NULL, &err));
    CHECK(v != NULL && v[0] == NULL);
    qm_strings_free(v);
    qm_strings_free(NULL);
}

/* query-version's result gives QEMU's version numbers. */
static void query_version_through_pointers(void)
{
    qm_machine *m = launch_none();
    char *json = cmd_ok(m, "query-version", NULL), *package = NULL;
    int64_t major = -1, minor = -1, micro = -1;
    OK(qm_json_get_int(json, "/qemu/major", &major, &err));
    OK(qm_json_get_int(json, "/qemu/minor", &minor, &err));
    OK(qm_json_get_int(json, "/qemu/micro", &micro, &err));
    OK(qm_json_get_string(json, "/package", &package, &err));
    CHECK(major >= 2 && minor >= 0 && micro >= 0);
    printf("    QEMU %lld.%lld.%lld%s\n", (long long)major, (long long)minor, (long long)micro,
           package);
    qm_string_free(package);
    qm_string_free(json);
    shutdown_free(m);
}

/* An event's name, data and timestamp. */
static void event_through_pointers(void)
{
    qm_machine *m = launch_none();
    char *ev = NULL, *name = NULL, *data = NULL;
    qm_json_kind k = -1;
    int64_t seconds = -1;
    qm_string_free(cmd_ok(m, "stop", NULL));
    OK(qm_event_wait(m, "STOP", NULL, 10000, NULL, &ev, &err));
    OK(qm_json_get_string(ev, "/event", &name, &err));
    CHECK_STR(name, "STOP");
    OK(qm_json_get_int(ev, "/timestamp/seconds", &seconds, &err));
    CHECK(seconds > 0);
    /* STOP has no data member: the type says so, and the getter says where it stopped. */
    OK(qm_json_type(ev, "/data", &k, &err));
    CHECK(k == QM_JSON_MISSING);
    INVALID(qm_json_get(ev, "/data", &data, &err), "no member \"data\" in the object at \"\"");
    qm_string_free(name);
    qm_string_free(ev);
    /* quit's SHUTDOWN event has data: {"guest": false, "reason": "host-qmp-quit"}. */
    OK(qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_event_wait(m, "SHUTDOWN", NULL, 0, NULL, &ev, &err));
    OK(qm_json_get(ev, "/data", &data, &err));
    {
        char *reason = NULL;
        bool guest = true;
        OK(qm_json_get_string(data, "/reason", &reason, &err));
        CHECK_STR(reason, "host-qmp-quit");
        OK(qm_json_get_bool(data, "/guest", &guest, &err));
        CHECK(!guest);
        qm_string_free(reason);
    }
    qm_string_free(data);
    qm_string_free(ev);
    qm_free(m);
}

/* The test guest's arguments as a vector for qm_add_args, then booted. */
static void guest_args_as_a_vector(void)
{
    char *dir = make_temp_dir(), image[512], *json = NULL, **argv = NULL, line[256];
    size_t argc = 0, i;
    qm_machine *m = NULL;
    int fd = -1;
    snprintf(image, sizeof image, "%s/guest.img", dir);
    OK(qm_guest_write_image(image, "vector ok", QM_GUEST_POWEROFF, 0, &err));
    OK(qm_guest_qemu_args(image, &json, &err));
    OK(qm_json_get_strings(json, "", &argv, &argc, &err));
    CHECK(argc > 2);
    for (i = 0; i < argc; i++)
        CHECK(argv[i] != NULL && strchr(argv[i], '"') == NULL);
    CHECK(argv[argc] == NULL);
    OK(qm_new(qemu_binary(), &m, &err));
    OK(qm_add_args(m, (const char *const *)argv, argc, &err));
    OK(qm_set_console(m, NULL, 0, &err));
    OK(qm_launch(m, QM_WAIT_DEFAULT, NULL, &err));
    OK(qm_console_fd(m, &fd, &err));
    CHECK(read_until(fd, "vector ok", line, sizeof line, 30000));
    OK(qm_wait(m, 30000, NULL, &err));
    qm_strings_free(argv);
    qm_string_free(json);
    qm_free(m);
    remove_dir(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(pointers_of_rfc_6901),
        TEST(typed_getters),
        TEST(errors_say_what_is_wrong),
        TEST(string_vectors),
        TEST(query_version_through_pointers),
        TEST(event_through_pointers),
        TEST(guest_args_as_a_vector),
    };
    return RUN_TESTS(tests);
}
