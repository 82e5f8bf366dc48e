/*
 * A damaged store as an operator meets it: a page overwritten, a -wal whose tail was damaged
 * after the events in it were acknowledged, rows changed behind eskit's back, and bytes in the
 * file that a terminal would act on. esctl must say the file is damaged, where, and what to
 * do, and `esctl verify` must find each kind of damage.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "domain.h"
#include "testutil.h"

static char *dir;
static char *db;

static void setup(void) {
    static const char *const vars[] = {"ESKIT_DB", "ESKIT_CONFIG", "ESKIT_BROKERS", "ESKIT_BACKEND",
                                       "ESKIT_SAGA_DB"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    db = tu_path(dir, "events.db");
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
    free(db);
}

TestSuite(esctl_corruption, .init = setup, .fini = teardown, .timeout = 120);

static void assert_one_line_error(const tu_result *r) {
    cr_expect_eq(tu_count_lines(r->err), 1, "stderr should be one line, got: %s", r->err);
    cr_expect_eq(strncmp(r->err, "esctl: ", 7), 0, "stderr: %s", r->err);
}

static es_store_t *open_store(const char *path) {
    es_config_t *cfg = es_config_new();
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", path, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    return store;
}

static void append(es_store_t *store, const char *id, const char *event_type) {
    es_new_event_t ev = {.event_type = event_type, .command_id = "cmd"};
    es_error_t err = {0};
    cr_assert_eq(es_store_append(store, "orders.order", id, ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
                 ES_OK, "%s", err.message);
}

/* orders.order/o-1 with versions 1 and 2, o-2 and o-3 with one event each: positions 1..4. */
static void write_store(void) {
    es_store_t *store = open_store(db);
    append(store, "o-1", "orders.v1.OrderPlaced");
    append(store, "o-1", "orders.v1.OrderConfirmed");
    append(store, "o-2", "orders.v1.OrderPlaced");
    append(store, "o-3", "orders.v1.OrderPlaced");
    es_store_destroy(store);
}

static void exec_sql(const char *path, const char *sql) {
    sqlite3 *h = NULL;
    char *msg = NULL;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK, "%s", path);
    cr_assert_eq(sqlite3_exec(h, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", sql, msg);
    sqlite3_close(h);
}

/* Overwrites len bytes of the file at offset. */
static void write_at(const char *path, off_t offset, const void *bytes, size_t len) {
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0, "%s", path);
    cr_assert_eq(pwrite(fd, bytes, len, offset), (ssize_t)len, "%s", path);
    close(fd);
}

/* The first page of the table or index name in the store. */
static off_t page_offset(const char *name) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT rootpage FROM sqlite_master WHERE name = '%s'", name);
    long long page = tu_query_int(db, sql);
    long long size = tu_query_int(db, "PRAGMA page_size");
    return (off_t)((page - 1) * size);
}

/* Replaces the first occurrence of from with to (as long) in the page at offset. */
static void patch_page(off_t offset, const char *from, const char *to) {
    long long size = tu_query_int(db, "PRAGMA page_size");
    char *page = malloc((size_t)size);
    int fd = open(db, O_RDWR);
    cr_assert(page && fd >= 0);
    cr_assert_eq(pread(fd, page, (size_t)size, offset), size);
    char *at = memmem(page, (size_t)size, from, strlen(from));
    cr_assert_not_null(at, "'%s' is not in the page", from);
    cr_assert_eq(pwrite(fd, to, strlen(to), offset + (at - page)), (ssize_t)strlen(to));
    close(fd);
    free(page);
}

Test(esctl_corruption, a_damaged_index_is_reported_as_corruption_not_as_no_events) {
    write_store();
    /* The type's name in the index changes: the lookup by name misses, the table still has it. */
    patch_page(page_offset("sqlite_autoindex_es_types_1"), "orders.order", "orders.ordeR");
    tu_result r = TU_ESCTL("--db", db, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1, "stdout: %s", r.out);
    assert_one_line_error(&r);
    cr_expect_null(strstr(r.err, "no events"), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "corrupt"), "%s", r.err);
    cr_expect_not_null(strstr(r.err, db), "names the file: %s", r.err);
    cr_expect_not_null(strstr(r.err, "backup"), "says what to do: %s", r.err);
    cr_expect_not_null(strstr(r.err, "esctl verify"), "%s", r.err);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "verify");
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect_not_null(strstr(r.out, "[integrity]"), "%s", r.out);
    tu_result_free(&r);
}

Test(esctl_corruption, a_damaged_page_of_the_events_table_is_reported_as_corruption) {
    write_store();
    static const unsigned char junk[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                           0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    write_at(db, page_offset("es_events"), junk, sizeof junk);
    tu_result r = TU_ESCTL("--db", db, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1, "stdout: %s", r.out);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "is corrupt"), "%s", r.err);
    cr_expect_not_null(strstr(r.err, db), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "restore it from a backup"), "%s", r.err);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "verify");
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect_not_null(strstr(r.out, "[integrity]"), "%s", r.out);
    assert_one_line_error(&r);
    tu_result_free(&r);
}

/* The bytes of the file at path (len of them). */
static char *file_bytes(const char *path, size_t *len) {
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s", path);
    char *buf = malloc((size_t)st.st_size + 1);
    int fd = open(path, O_RDONLY);
    cr_assert(buf && fd >= 0);
    cr_assert_eq(read(fd, buf, (size_t)st.st_size), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

/* --accept-end writes the end it read; one it could not read is not an end to write. */
Test(esctl_corruption, accepting_the_end_of_a_log_whose_end_cannot_be_read_writes_nothing) {
    write_store();
    char head[4096];
    snprintf(head, sizeof head, "%s-head", db);
    size_t len = 0, after_len = 0;
    char *before = file_bytes(head, &len);
    static const unsigned char junk[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                           0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    write_at(db, page_offset("es_events"), junk, sizeof junk);
    tu_result r = TU_ESCTL("--db", db, "verify", "--accept-end");
    cr_expect_eq(r.status, 1, "stdout: %s", r.out);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "cannot accept the end"), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "nothing was written"), "%s", r.err);
    tu_result_free(&r);
    char *after = file_bytes(head, &after_len);
    cr_assert(after_len == len && !memcmp(before, after, len), "%s was rewritten", head);
    free(before);
    free(after);
}

static void copy_file(const char *from, const char *to) {
    struct stat st;
    cr_assert_eq(stat(from, &st), 0, "%s", from);
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(in >= 0 && out >= 0);
    char *buf = malloc((size_t)st.st_size + 1);
    cr_assert_eq(read(in, buf, (size_t)st.st_size), st.st_size);
    cr_assert_eq(tu_write_full(out, buf, (size_t)st.st_size), 0);
    free(buf);
    close(in);
    close(out);
}

/* Copies from<suffix> to to<suffix>, when there is one. */
static void copy_with_suffix(const char *from, const char *to, const char *suffix) {
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s%s", from, suffix);
    snprintf(b, sizeof b, "%s%s", to, suffix);
    if (access(a, F_OK) == 0)
        copy_file(a, b);
}

Test(esctl_corruption, events_lost_with_a_damaged_wal_tail_fail_the_open_naming_both_ends) {
    /* Ten acknowledged appends, one commit each, still in the -wal of an open store: copied
     * with it (as a backup tool or a disk would keep them), then the copy's last frame damaged.
     * SQLite drops that commit at recovery and integrity_check passes. */
    es_store_t *live = open_store(db);
    for (int i = 0; i < 10; i++)
        append(live, "o-1", "orders.v1.OrderConfirmed");
    char *copy = tu_path(dir, "copy.db");
    copy_file(db, copy);
    copy_with_suffix(db, copy, "-wal");
    copy_with_suffix(db, copy, "-head");
    es_store_destroy(live);
    char wal[4096];
    snprintf(wal, sizeof wal, "%s-wal", copy);
    struct stat st;
    cr_assert_eq(stat(wal, &st), 0);
    long long frame = 24 + tu_query_int(db, "PRAGMA page_size");
    long long frames = (st.st_size - 32) / frame;
    cr_assert_gt(frames, 10, "the appends are in the -wal");
    unsigned char junk[64];
    memset(junk, 0xa5, sizeof junk);
    write_at(wal, (off_t)(32 + (frames - 1) * frame + 24 + 1000), junk, sizeof junk);

    es_config_t *cfg = es_config_new();
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", copy, &err), ES_OK);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_EIO, "the open must fail: %s", err.message);
    cr_expect_not_null(strstr(err.message, copy), "names the file: %s", err.message);
    cr_expect_not_null(strstr(err.message, "ends at position 9"), "%s", err.message);
    cr_expect_not_null(strstr(err.message, "position 10 as committed"), "%s", err.message);
    cr_expect_not_null(strstr(err.message, "backup"), "%s", err.message);
    cr_expect_not_null(strstr(err.message, "verify --accept-end"), "%s", err.message);

    tu_result r = TU_ESCTL("--db", copy, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1, "stdout: %s", r.out);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "ends at position 9"), "%s", r.err);
    tu_result_free(&r);
    r = TU_ESCTL("--db", copy, "verify");
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect_not_null(strstr(r.out, "[end]"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "1 acknowledged event(s) are gone"), "%s", r.out);
    tu_result_free(&r);

    /* The operator restored what there is and accepts the loss. */
    r = TU_ESCTL("--db", copy, "verify", "--accept-end");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect_not_null(strstr(r.out, "events 10..10 are accepted as lost"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\nok\n"), "%s", r.out);
    tu_result_free(&r);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    cr_expect_eq(tu_assert_stream_contiguous(store, "orders.order", "o-1"), 9);
    es_store_destroy(store);
    es_config_destroy(cfg);
    free(copy);
}

/* The envelope of the event at pos with from replaced by to (as long), behind eskit's back. */
static void patch_envelope(long long pos, const char *from, const char *to) {
    sqlite3 *h = NULL;
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_open(db, &h), SQLITE_OK);
    cr_assert_eq(
        sqlite3_prepare_v2(h, "SELECT envelope FROM es_events WHERE pos = ?1", -1, &s, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(s, 1, pos);
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    size_t len = (size_t)sqlite3_column_bytes(s, 0);
    char *env = malloc(len);
    memcpy(env, sqlite3_column_blob(s, 0), len);
    sqlite3_finalize(s);
    char *at = memmem(env, len, from, strlen(from));
    cr_assert_not_null(at, "'%s' is not in the envelope", from);
    cr_assert_eq(strlen(from), strlen(to), "the envelope keeps its length");
    memcpy(at, to, strlen(to));
    cr_assert_eq(
        sqlite3_prepare_v2(h, "UPDATE es_events SET envelope = ?1 WHERE pos = ?2", -1, &s, NULL),
        SQLITE_OK);
    sqlite3_bind_blob(s, 1, env, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, pos);
    cr_assert_eq(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    sqlite3_close(h);
    free(env);
}

/* Twelve bytes a terminal would act on or cannot show: ESC [2J (clear screen), a byte that is
 * not UTF-8, the C1 control CSI in UTF-8, and plain text. */
#define HOSTILE                                                                                    \
    "\x1b[2J\xff\xc2\x9b"                                                                          \
    "abcde"
#define HOSTILE_SHOWN "\\x1b[2J\\xff\\xc2\\x9babcde"

static void assert_no_raw_controls(const char *s, const char *what) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        cr_assert(*p == '\n' || (*p >= 0x20 && *p != 0x7f && *p != 0xff && *p != 0x9b),
                  "%s holds the raw byte 0x%02x: %s", what, *p, s);
}

Test(esctl_corruption, control_bytes_stored_in_the_log_are_shown_escaped) {
    es_store_t *store = open_store(db);
    append(store, "o-1", "orders.v1.Placeholder1");
    es_new_event_t ev = {.event_type = "eskit.v1.SagaTransition", .payload = NULL};
    es_error_t err = {0};
    cr_assert_eq(es_store_append(store, "orders.fulfilment.saga", "o-9", ES_EXPECT_ANY, 0, &ev, 1,
                                 NULL, &err),
                 ES_OK, "%s", err.message);
    es_store_destroy(store);
    patch_envelope(1, "Placeholder1", HOSTILE);
    patch_envelope(2, "SagaTransition", HOSTILE "XY");

    tu_result r = TU_ESCTL("--db", db, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "orders.v1." HOSTILE_SHOWN), "%s", r.out);
    assert_no_raw_controls(r.out, "events' output");
    tu_result_free(&r);

    /* A library message quoting the stored event type, on the one error line: the library
     * escaped it where it made the message, and esctl leaves those escapes as they are. */
    r = TU_ESCTL("--db", db, "sagas", "show", "o-9", "--saga", "orders.fulfilment");
    cr_expect_eq(r.status, 1, "%s", r.out);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "eskit.v1.\\x1b[2J\\xff\\xc2\\x9babcdeXY"), "%s", r.err);
    assert_no_raw_controls(r.err, "the error line");
    tu_result_free(&r);

    /* A stream id changed in the file: verify reports the row against its envelope. */
    exec_sql(db, "UPDATE es_streams SET agg_id = 'o-1' || char(27) || '[2J' WHERE agg_id = 'o-1'");
    r = TU_ESCTL("--db", db, "verify");
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect_not_null(strstr(r.out, "orders.order/o-1\\x1b[2J"), "%s", r.out);
    assert_no_raw_controls(r.out, "verify's output");
    tu_result_free(&r);
}

Test(esctl_corruption, verify_passes_a_clean_store) {
    write_store();
    tu_result r = TU_ESCTL("--db", db, "verify");
    cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect_not_null(strstr(r.out, "4 events at positions 1..4, 3 aggregates, head file at 4"),
                       "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\nok\n"), "%s", r.out);
    cr_expect_eq(strlen(r.err), 0, "%s", r.err);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "verify", "--json");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "\"ok\": true, \"events\": 4"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"problems\": []"), "%s", r.out);
    tu_result_free(&r);
}

typedef struct damage {
    const char *sql;   /* what was done to the file */
    const char *check; /* what verify must report */
    const char *says;
} damage;

Test(esctl_corruption, verify_names_each_kind_of_damage_with_its_place) {
    static const damage cases[] = {
        {"UPDATE es_events SET version = 1 WHERE pos = 2", "[version] position 2 orders.order/o-1",
         "version 1 again"},
        {"UPDATE es_events SET version = 4 WHERE pos = 2", "[version] position 2 orders.order/o-1",
         "versions 2 to 3 are missing"},
        {"UPDATE es_events SET prev = 3 WHERE pos = 2", "[version] position 2",
         "links to position 3"},
        {"UPDATE es_events SET envelope = x'ffff' WHERE pos = 3",
         "[envelope] position 3 orders.order/o-2", "does not decode"},
        {"UPDATE es_heads SET version = 5 WHERE stream = 1", "[heads]", "at version 5"},
        {"DELETE FROM es_heads WHERE stream = 2", "[heads]", "no row for the stream"},
        {"DELETE FROM es_streams WHERE id = 3", "[stream] position 4",
         "which es_streams does not hold"},
    };
    char *clean = tu_path(dir, "clean.db");
    write_store();
    copy_file(db, clean);
    copy_with_suffix(db, clean, "-head");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        copy_file(clean, db);
        copy_with_suffix(clean, db, "-head");
        exec_sql(db, cases[i].sql);
        tu_result r = TU_ESCTL("--db", db, "verify");
        cr_expect_eq(r.status, 1, "case %zu (%s): %s", i, cases[i].sql, r.out);
        cr_expect_not_null(strstr(r.out, cases[i].check), "case %zu (%s): %s", i, cases[i].sql,
                           r.out);
        cr_expect_not_null(strstr(r.out, cases[i].says), "case %zu (%s): %s", i, cases[i].sql,
                           r.out);
        assert_one_line_error(&r);
        cr_expect_not_null(strstr(r.err, "problem"), "case %zu: %s", i, r.err);
        tu_result_free(&r);
        r = TU_ESCTL("--db", db, "verify", "--json");
        cr_expect_eq(r.status, 1, "case %zu: %s", i, r.out);
        cr_expect_not_null(strstr(r.out, "\"ok\": false"), "case %zu: %s", i, r.out);
        tu_result_free(&r);
    }
    free(clean);
}
