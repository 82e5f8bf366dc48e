/*
 * esctl's inspection verbs (events, state, lag, dlq list/show, sagas list/show, metrics) as an
 * operator meets them on files they may not or must not write: a read-only directory, files owned
 * by another user, and the wrong kind of eskit file. Inspection must work there and leave every
 * file and the directory exactly as they were. As root, permission bits stop nothing, so what esctl
 * does is checked instead: the directory's listing and every file's bytes and mtime before and
 * after.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "domain.h"
#include "eskit/v1/saga.pb-c.h"
#include "saga_int.h"
#include "testutil.h"

#define NOBODY 65534

static char *dir;
static char *db;     /* the event store */
static char *rm;     /* the read model, built by esctl replay */
static char *sagadb; /* a saga coordinator's database */

static void setup(void) {
    static const char *const vars[] = {
        "ESKIT_DB",      "ESKIT_CONFIG",       "ESKIT_BROKERS",       "ESKIT_BACKEND",
        "ESKIT_SAGA_DB", "ESKIT_READMODEL_DB", "ESKIT_PROJECTOR_PATH"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    /* The demo's payloads decode through its types module, found by name beside esctl. */
    setenv("ESKIT_TYPES_MODULES", "order_saga_types", 1);
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    db = tu_path(dir, "events.db");
    rm = tu_path(dir, "read.db");
    sagadb = tu_path(dir, "saga.db");
}

static void teardown(void) {
    chmod(dir, 0700); /* so a non-root run can remove what it made read-only */
    tu_rmtree(dir);
    free(dir);
    free(db);
    free(rm);
    free(sagadb);
}

TestSuite(esctl_readonly, .init = setup, .fini = teardown, .timeout = 120);

static void exec_sql(const char *path, const char *sql) {
    sqlite3 *h = NULL;
    char *msg = NULL;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK, "%s", path);
    cr_assert_eq(sqlite3_exec(h, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", sql, msg);
    sqlite3_close(h);
}

static void place_orders(void) {
    es_config_t *cfg = tu_config(dir, "events.db");
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "A";
    item.quantity = 2;
    item.unit_price_cents = 150;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder place = ORDERS__V1__PLACE_ORDER__INIT;
    place.customer_id = "c-1";
    place.n_items = 1;
    place.items = items;
    place.currency = "EUR";
    for (int i = 1; i <= 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "o-%d", i);
        es_command_t cmd = {
            .aggregate_type = "orders.order", .aggregate_id = id, .message = &place.base};
        es_result_t res = {0};
        cr_assert_eq(es_execute(engine, &cmd, &res, &err), ES_OK, "%s: %s", id, err.message);
        es_result_clear(&res);
    }
    es_engine_destroy(engine);
    es_config_destroy(cfg);
}

/* An OrderConfirmed of an order never placed (order_summary parks it: dlq entry 1), and the
 * transitions of saga instance orders.fulfilment/o-1. */
static void append_extra(void) {
    es_config_t *cfg = tu_config(dir, "events.db");
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_new_event_t ghost = {.event_type = "orders.v1.OrderConfirmed"};
    cr_assert_eq(
        es_store_append(store, "orders.order", "o-ghost", ES_EXPECT_ANY, 0, &ghost, 1, NULL, &err),
        ES_OK, "%s", err.message);
    const char *kinds[] = {"started", "completed"};
    for (int i = 0; i < 2; i++) {
        Eskit__V1__SagaTransition t = ESKIT__V1__SAGA_TRANSITION__INIT;
        t.saga = "orders.fulfilment";
        t.instance_id = "o-1";
        t.kind = (char *)kinds[i];
        t.state = i ? ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPLETED
                    : ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING;
        t.at_us = 1714564800000000LL + i;
        uint8_t buf[256];
        size_t len = eskit__v1__saga_transition__pack(&t, buf);
        es_new_event_t ev = {.event_type = ES_SAGA_EVENT_TYPE, .payload = buf, .payload_len = len};
        cr_assert_eq(es_store_append(store, "orders.fulfilment.saga", "o-1", ES_EXPECT_ANY, 0, &ev,
                                     1, NULL, &err),
                     ES_OK, "%s", err.message);
    }
    es_store_destroy(store);
    es_config_destroy(cfg);
}

/* An event store, its read model (with a parked event) and a saga database, all closed. */
static void make_files(void) {
    place_orders();
    append_extra();
    tu_result r = TU_ESCTL("--db", db, "--readmodel", rm, "replay", "order_summary");
    cr_assert_eq(r.status, 0, "replay: %s%s", r.out, r.err);
    tu_result_free(&r);
    exec_sql(sagadb, "PRAGMA journal_mode=WAL");
    exec_sql(sagadb, ES_SAGA_SCHEMA);
    exec_sql(sagadb, "INSERT INTO es_saga_instances (saga, id, state, step, started_at, "
                     "updated_at, deadline, reason, seq, start_event) VALUES ('orders.fulfilment', "
                     "'o-1', 'completed', 3, 1714564800000000, 1714564800000001, 0, '', 2, x'00')");
}

/* What a directory holds: names, sizes, modes, mtimes and every byte. */
#define MAX_FILES 32
typedef struct file_state {
    char name[256];
    struct stat st;
    char *bytes;
} file_state;

typedef struct dir_state {
    struct stat st;
    file_state files[MAX_FILES];
    size_t n;
} dir_state;

static int by_name(const void *a, const void *b) {
    return strcmp(((const file_state *)a)->name, ((const file_state *)b)->name);
}

static char *slurp(const char *path, size_t len) {
    char *buf = malloc(len + 1);
    FILE *f = fopen(path, "rb");
    cr_assert(buf && f, "reading %s", path);
    cr_assert_eq(fread(buf, 1, len, f), len, "reading %s", path);
    fclose(f);
    return buf;
}

static dir_state snapshot(void) {
    dir_state s = {0};
    cr_assert_eq(stat(dir, &s.st), 0);
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        cr_assert_lt(s.n, MAX_FILES);
        file_state *f = &s.files[s.n++];
        snprintf(f->name, sizeof f->name, "%s", e->d_name);
        char *path = tu_path(dir, e->d_name);
        cr_assert_eq(lstat(path, &f->st), 0, "%s", path);
        f->bytes = slurp(path, (size_t)f->st.st_size);
        free(path);
    }
    closedir(d);
    qsort(s.files, s.n, sizeof *s.files, by_name);
    return s;
}

static void snapshot_free(dir_state *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->files[i].bytes);
}

static int same_time(const struct timespec *a, const struct timespec *b) {
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* The directory holds the same files with the same bytes, modes and mtimes, and itself is
 * unmodified (no file was created and removed in it meanwhile either). */
static void assert_unchanged(const dir_state *before, const char *what) {
    dir_state after = snapshot();
    for (size_t i = 0, j = 0; i < before->n || j < after.n;) {
        int c = i == before->n ? 1
                : j == after.n ? -1
                               : by_name(&before->files[i], &after.files[j]);
        cr_assert_geq(c, 0, "%s: %s is gone", what, before->files[i].name);
        cr_assert_leq(c, 0, "%s: %s was created", what, after.files[j].name);
        const file_state *x = &before->files[i++], *y = &after.files[j++];
        cr_assert_eq(x->st.st_size, y->st.st_size, "%s: %s changed size", what, x->name);
        cr_assert_eq(memcmp(x->bytes, y->bytes, (size_t)x->st.st_size), 0, "%s: %s was written",
                     what, x->name);
        cr_assert(same_time(&x->st.st_mtim, &y->st.st_mtim), "%s: %s was modified", what, x->name);
        cr_assert_eq(x->st.st_mode, y->st.st_mode, "%s: %s changed mode", what, x->name);
    }
    cr_assert(same_time(&before->st.st_mtim, &after.st.st_mtim),
              "%s: the directory's listing changed", what);
    snapshot_free(&after);
}

/* Every file of the directory gets mode file_mode, the directory dir_mode. */
static void chmod_all(mode_t file_mode, mode_t dir_mode) {
    chmod(dir, 0700);
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *path = tu_path(dir, e->d_name);
        cr_assert_eq(chmod(path, file_mode), 0, "%s", path);
        free(path);
    }
    closedir(d);
    cr_assert_eq(chmod(dir, dir_mode), 0);
}

typedef struct inspection {
    const char *args[6];
    const char *shows; /* a piece of its output */
} inspection;

static const inspection inspections[] = {
    {{"events", "orders.order", "o-1"}, "orders.v1.OrderPlaced"},
    {{"state", "orders.order", "o-1"}, "status: ORDER_STATUS_"},
    {{"lag"}, "order_summary"},
    {{"dlq", "list"}, "o-ghost"},
    {{"dlq", "show", "1"}, "o-ghost"},
    {{"sagas", "list"}, "orders.fulfilment"},
    {{"sagas", "show", "o-1"}, "completed"},
    {{"metrics"}, "eskit_saga_instances{saga=\"orders.fulfilment\",state=\"completed\"}"},
};
#define N_INSPECTIONS (sizeof inspections / sizeof *inspections)

static void inspection_args(const inspection *in, const char **args) {
    const char *globals[] = {"--db", db, "--readmodel", rm, "--saga-db", sagadb};
    size_t n = 0;
    for (; n < 6; n++)
        args[n] = globals[n];
    for (size_t i = 0; in->args[i]; i++)
        args[n++] = in->args[i];
    args[n] = NULL;
}

static void assert_inspected(const inspection *in, const tu_result *r, const char *how) {
    cr_assert_eq(r->status, 0, "%s %s %s: status %d, stderr: %s", how, in->args[0],
                 in->args[1] ? in->args[1] : "", r->status, r->err);
    cr_expect_not_null(strstr(r->out, in->shows), "%s %s: %s", how, in->args[0], r->out);
    cr_expect_eq(strlen(r->err), 0, "%s %s: %s", how, in->args[0], r->err);
}

Test(esctl_readonly, inspection_verbs_work_in_a_read_only_directory_and_change_nothing) {
    make_files();
    chmod_all(0444, 0555);
    dir_state before = snapshot();
    for (size_t i = 0; i < N_INSPECTIONS; i++) {
        const char *args[16];
        inspection_args(&inspections[i], args);
        tu_result r = tu_esctl(NULL, args);
        assert_inspected(&inspections[i], &r, "read-only directory:");
        tu_result_free(&r);
        assert_unchanged(&before, inspections[i].args[0]);
    }
    snapshot_free(&before);
}

static void copy_file(const char *from, const char *to);

/* esctl, its library and the demo's types module copied where any user may run them: uid NOBODY may
 * not be able to reach the build tree (a checkout under a private home). The copy's library is
 * found through LD_LIBRARY_PATH, which comes before the build tree's RUNPATH. */
static char *esctl_for_anyone(void) {
    char *bin = tu_tempdir();
    cr_assert_eq(chmod(bin, 0755), 0);
    char *exe = tu_path(bin, "esctl"), *lib = tu_path(bin, ESKIT_LIB_SONAME);
    copy_file(ESCTL_PATH, exe);
    cr_assert_eq(chmod(exe, 0755), 0);
    copy_file(ESKIT_LIB_SONAME_PATH, lib);
    /* The demo's types module, where esctl finds it by name: projectors/ beside it. */
    char *mods = tu_path(bin, "projectors"), *types = tu_path(mods, "order_saga_types.so");
    cr_assert_eq(mkdir(mods, 0755), 0);
    copy_file(ESKIT_BINARY_DIR "/tools/esctl/projectors/order_saga_types.so", types);
    cr_assert_eq(chmod(types, 0755), 0);
    free(types);
    free(mods);
    free(lib);
    free(bin);
    return exe;
}

/* Runs esctl with args as uid NOBODY (when we are root; as ourselves otherwise, where the
 * modes alone keep us from writing). */
static tu_result run_as_nobody(const char *const *args) {
    char outpath[] = "/tmp/eskit-ro-out-XXXXXX", errpath[] = "/tmp/eskit-ro-err-XXXXXX";
    int ofd = mkstemp(outpath), efd = mkstemp(errpath);
    cr_assert(ofd >= 0 && efd >= 0);
    unlink(outpath);
    unlink(errpath);
    char *exe = esctl_for_anyone(), libdir[4096];
    snprintf(libdir, sizeof libdir, "LD_LIBRARY_PATH=%.*s", (int)(strrchr(exe, '/') - exe), exe);
    const char *argv[32] = {exe};
    for (size_t i = 0; args[i]; i++)
        argv[i + 1] = args[i];
    pid_t pid = fork();
    if (pid == 0) {
        dup2(ofd, 1);
        dup2(efd, 2);
        if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 ||
                               setuid(NOBODY) != 0 || getuid() != NOBODY))
            _exit(125);
        putenv(libdir);
        execv(argv[0], (char *const *)argv);
        _exit(126); /* e.g. the build directory is not readable by uid NOBODY */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    tu_result r = {WIFEXITED(status) ? WEXITSTATUS(status) : -1, NULL, NULL};
    cr_assert_neq(r.status, 125, "could not become uid %d", NOBODY);
    cr_assert_neq(r.status, 126, "uid %d cannot run %s", NOBODY, exe);
    *strrchr(exe, '/') = '\0';
    tu_rmtree(exe);
    free(exe);
    for (int k = 0; k < 2; k++) {
        int fd = k ? efd : ofd;
        off_t len = lseek(fd, 0, SEEK_END);
        char *buf = calloc(1, (size_t)len + 1);
        cr_assert_eq(pread(fd, buf, (size_t)len, 0), len);
        *(k ? &r.err : &r.out) = buf;
        close(fd);
    }
    return r;
}

Test(esctl_readonly, inspection_verbs_work_as_another_user_on_files_they_cannot_write) {
    make_files();
    chmod_all(0644, 0755); /* the case: root's files, readable by all */
    dir_state before = snapshot();
    for (size_t i = 0; i < N_INSPECTIONS; i++) {
        const char *args[16];
        inspection_args(&inspections[i], args);
        tu_result r = run_as_nobody(args);
        assert_inspected(&inspections[i], &r, "as another user:");
        tu_result_free(&r);
        assert_unchanged(&before, inspections[i].args[0]);
    }
    snapshot_free(&before);
}

Test(esctl_readonly, events_reads_a_store_a_writer_holds_open) {
    make_files();
    es_config_t *cfg = tu_config(dir, "events.db");
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_new_event_t ev = {.event_type = "orders.v1.OrderConfirmed"};
    cr_assert_eq(
        es_store_append(store, "orders.order", "o-2", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err), ES_OK,
        "%s", err.message);
    char *wal = tu_path(dir, "events.db-wal");
    cr_assert_eq(access(wal, F_OK), 0, "the writer has the store open in WAL mode");
    tu_result r = TU_ESCTL("--db", db, "events", "orders.order", "o-2");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "orders.v1.OrderConfirmed"), "%s", r.out);
    tu_result_free(&r);
    es_store_destroy(store);
    es_config_destroy(cfg);
    free(wal);
}

typedef struct wrong_file {
    const char *flag, *file; /* the option pointed at the wrong file, and the file */
    const char *args[4];
    const char *says;
} wrong_file;

Test(esctl_readonly, a_verb_pointed_at_the_wrong_file_names_what_it_is_and_creates_nothing) {
    make_files();
    char *foreign = tu_path(dir, "foreign.db"), *notes = tu_path(dir, "notes.txt");
    exec_sql(foreign, "CREATE TABLE t(x)");
    FILE *f = fopen(notes, "w");
    cr_assert_not_null(f);
    fputs("not a database at all, but long enough to hold a database header.......\n", f);
    fclose(f);
    free(foreign);
    free(notes);
    static const wrong_file cases[] = {
        {"--db",
         "read.db",
         {"events", "orders.order", "o-1"},
         "is an eskit read model, not an event store"},
        {"--db",
         "saga.db",
         {"events", "orders.order", "o-1"},
         "is an eskit saga database, not an event store"},
        {"--db",
         "foreign.db",
         {"events", "orders.order", "o-1"},
         "without eskit's tables, not an event store"},
        {"--db", "notes.txt", {"events", "orders.order", "o-1"}, "is not an SQLite database"},
        {"--readmodel", "events.db", {"lag"}, "is an eskit event store, not a read model"},
        {"--db", "read.db", {"lag"}, "is an eskit read model, not an event store"},
        {"--readmodel", "events.db", {"dlq", "list"}, "is an eskit event store, not a read model"},
        {"--readmodel",
         "saga.db",
         {"dlq", "show", "1"},
         "is an eskit saga database, not a read model"},
        {"--saga-db", "read.db", {"sagas", "list"}, "is an eskit read model, not a saga database"},
        {"--saga-db",
         "events.db",
         {"sagas", "show", "o-1"},
         "is an eskit event store, not a saga database"},
        {"--db", "read.db", {"sagas", "show", "o-1"}, "is an eskit read model, not an event store"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const wrong_file *c = &cases[i];
        char *wrong = tu_path(dir, c->file);
        const char *args[16] = {"--db", db, "--readmodel", rm, "--saga-db", sagadb};
        for (size_t k = 0; k < 6; k += 2)
            if (!strcmp(args[k], c->flag))
                args[k + 1] = wrong;
        size_t n = 6;
        for (size_t k = 0; c->args[k]; k++)
            args[n++] = c->args[k];
        dir_state before = snapshot();
        tu_result r = tu_esctl(NULL, args);
        cr_expect_eq(r.status, 1, "case %zu (%s %s %s): status %d, stdout %s", i, c->flag, c->file,
                     c->args[0], r.status, r.out);
        cr_expect_eq(tu_count_lines(r.err), 1, "case %zu: stderr: %s", i, r.err);
        cr_expect_not_null(strstr(r.err, c->says), "case %zu: %s", i, r.err);
        cr_expect_not_null(strstr(r.err, wrong), "case %zu names the file: %s", i, r.err);
        cr_expect_not_null(strstr(r.err, c->flag), "case %zu says which option: %s", i, r.err);
        tu_result_free(&r);
        assert_unchanged(&before, c->args[0]);
        snapshot_free(&before);
        free(wrong);
    }
}

static void copy_file(const char *from, const char *to) {
    struct stat st;
    cr_assert_eq(stat(from, &st), 0, "%s", from);
    char *bytes = slurp(from, (size_t)st.st_size);
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0, "%s", to);
    cr_assert_eq(tu_write_full(fd, bytes, (size_t)st.st_size), 0);
    close(fd);
    free(bytes);
}

Test(esctl_readonly, a_store_copied_with_its_wal_but_not_its_shm_is_refused_not_given_a_shm) {
    make_files();
    es_config_t *cfg = tu_config(dir, "events.db");
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_new_event_t ev = {.event_type = "orders.v1.OrderConfirmed"};
    cr_assert_eq(
        es_store_append(store, "orders.order", "o-2", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err), ES_OK,
        "%s", err.message);
    char *copy = tu_path(dir, "copy.db"), *wal = tu_path(dir, "events.db-wal"),
         *copy_wal = tu_path(dir, "copy.db-wal"), *copy_shm = tu_path(dir, "copy.db-shm");
    copy_file(db, copy);
    copy_file(wal, copy_wal);
    es_store_destroy(store);
    es_config_destroy(cfg);
    tu_result r = TU_ESCTL("--db", copy, "events", "orders.order", "o-2");
    cr_expect_eq(r.status, 1, "%s", r.out);
    cr_expect_eq(tu_count_lines(r.err), 1, "%s", r.err);
    cr_expect_not_null(strstr(r.err, "has a -wal file but no -shm"), "%s", r.err);
    cr_expect_neq(access(copy_shm, F_OK), 0, "esctl created %s", copy_shm);
    tu_result_free(&r);
    free(copy);
    free(wal);
    free(copy_wal);
    free(copy_shm);
}
