/*
 * The files eskit writes beside a read model (the projector's lock, its crash
 * guard, a replay's guard) and beside an event store (its head file) as another
 * user who can write their directory would attack them: a symlink or hard link
 * to a victim file, a file of their own, a directory anyone can write. Each is
 * refused, naming the file, and the victim keeps its bytes. And on a full disk
 * they are an error saying so, not a SIGBUS.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "notes.h"
#include "projector_int.h"
#include "testutil.h"

static char *dir;
static char *victim;
static es_config_t *cfg;

static const char precious[] = "root's precious bytes\n";

static void setup(void) {
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    cfg = tu_config(dir, "events.db");
    victim = tu_path(dir, "victim");
    FILE *f = fopen(victim, "w");
    cr_assert_not_null(f);
    fputs(precious, f);
    fclose(f);
}

static void teardown(void) {
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
    free(victim);
}

TestSuite(side_files, .init = setup, .fini = teardown);

/* Puts the read model in dir/sub (created when sub is not NULL) and makes the store. */
static char *use_readmodel(const char *sub, mode_t mode) {
    char *rmdir = sub ? tu_path(dir, sub) : strdup(dir);
    if (sub) {
        cr_assert_eq(mkdir(rmdir, 0700), 0);
        cr_assert_eq(chmod(rmdir, mode), 0);
    }
    char *rm = tu_path(rmdir, "read.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "readmodel.db", rm, &err), ES_OK, "%s", err.message);
    es_store_t *store = NULL;
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_store_destroy(store);
    free(rm);
    return rmdir;
}

static char *side_path(const char *rmdir, const char *suffix) {
    char *p = NULL;
    cr_assert_gt(asprintf(&p, "%s/read.db-notes%s", rmdir, suffix), 0);
    return p;
}

static void assert_victim_unchanged(void) {
    char buf[128] = {0};
    FILE *f = fopen(victim, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    cr_assert_eq(n, strlen(precious), "the victim is now %zu bytes", n);
    cr_assert_str_eq(buf, precious);
}

static void assert_runner_refused(const char *path, const char *why) {
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_neq(es_runner_new(cfg, &notes_v1, &r, &err), ES_OK, "the runner opened");
    cr_assert_null(r);
    cr_assert(strstr(err.message, path) && strstr(err.message, why), "%s", err.message);
}

Test(side_files, a_crash_guard_that_is_a_symlink_is_refused_and_its_target_is_unchanged) {
    char *rmdir = use_readmodel(NULL, 0);
    char *guard = side_path(rmdir, ".guard");
    cr_assert_eq(symlink(victim, guard), 0);
    assert_runner_refused(guard, "symbolic link");
    assert_victim_unchanged();
    free(guard);
    free(rmdir);
}

Test(side_files, a_lock_file_that_is_a_symlink_is_refused_and_its_target_is_unchanged) {
    char *rmdir = use_readmodel(NULL, 0);
    char *lock = side_path(rmdir, ".lock");
    cr_assert_eq(symlink(victim, lock), 0);
    assert_runner_refused(lock, "symbolic link");
    assert_victim_unchanged();
    free(lock);
    free(rmdir);
}

Test(side_files, a_replay_guard_that_is_a_symlink_is_refused_and_its_target_is_unchanged) {
    char *rmdir = use_readmodel(NULL, 0);
    char *guard = side_path(rmdir, ".replay-guard");
    cr_assert_eq(symlink(victim, guard), 0);
    es_error_t err = {0};
    cr_assert_neq(es_replay(cfg, &notes_v1, NULL, NULL, &err), ES_OK, "the replay ran");
    cr_assert(strstr(err.message, guard) && strstr(err.message, "symbolic link"), "%s",
              err.message);
    assert_victim_unchanged();
    free(guard);
    free(rmdir);
}

Test(side_files, a_crash_guard_hard_linked_to_another_file_is_refused) {
    char *rmdir = use_readmodel(NULL, 0);
    char *guard = side_path(rmdir, ".guard");
    cr_assert_eq(link(victim, guard), 0);
    assert_runner_refused(guard, "hard links");
    assert_victim_unchanged();
    free(guard);
    free(rmdir);
}

/* As root the guard is given to uid 65534; a user who cannot chown gets a guard that is not
 * a regular file instead, which is refused the same way. */
Test(side_files, a_crash_guard_another_user_owns_is_refused) {
    char *rmdir = use_readmodel(NULL, 0);
    char *guard = side_path(rmdir, ".guard");
    if (geteuid() == 0) {
        FILE *f = fopen(guard, "w");
        cr_assert_not_null(f);
        fclose(f);
        cr_assert_eq(chown(guard, 65534, 65534), 0);
        assert_runner_refused(guard, "owned by uid 65534");
    } else {
        cr_assert_eq(mkfifo(guard, 0600), 0);
        assert_runner_refused(guard, "named pipe");
    }
    free(guard);
    free(rmdir);
}

Test(side_files, side_files_in_a_directory_every_user_can_write_are_refused) {
    char *rmdir = use_readmodel("shared", 0777);
    char *lock = side_path(rmdir, ".lock");
    assert_runner_refused(lock, "writable by every user");
    es_error_t err = {0};
    cr_assert_neq(es_replay(cfg, &notes_v1, NULL, NULL, &err), ES_OK, "the replay ran");
    cr_assert(strstr(err.message, "writable by every user"), "%s", err.message);
    free(lock);
    free(rmdir);
}

Test(side_files, side_files_in_a_sticky_directory_of_our_own_are_used) {
    char *rmdir = use_readmodel("sticky", 01777);
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(cfg, &notes_v1, &r, &err), ES_OK, "%s", err.message);
    es_runner_destroy(r);
    cr_assert_eq(es_replay(cfg, &notes_v1, NULL, NULL, &err), ES_OK, "%s", err.message);
    free(rmdir);
}

/* A sticky directory protects a file from other users, not from the directory's owner, who can
 * remove or rename anything in it: sticky and world-writable is trusted only when owned by the
 * user or root. As root the directory is given to uid 65534; a user who cannot chown leaves it
 * not sticky, which is refused saying so. */
Test(side_files, side_files_in_a_sticky_directory_another_user_owns_are_refused_saying_so) {
    char *rmdir = use_readmodel("sticky-theirs", 01777);
    char *lock = side_path(rmdir, ".lock");
    const char *why = "not sticky";
    if (geteuid() == 0) {
        cr_assert_eq(chown(rmdir, 65534, 65534), 0);
        why = "sticky but owned by uid 65534, not by you (uid 0) or root";
    } else {
        cr_assert_eq(chmod(rmdir, 0777), 0);
    }
    assert_runner_refused(lock, why);
    es_error_t err = {0};
    cr_assert_neq(es_replay(cfg, &notes_v1, NULL, NULL, &err), ES_OK, "the replay ran");
    cr_assert(strstr(err.message, why), "%s", err.message);
    if (geteuid() == 0)
        cr_assert_null(strstr(err.message, "not sticky"), "%s", err.message);
    free(lock);
    free(rmdir);
}

/* The store made, closed, and its head file replaced by what plant makes at the name. */
static char *plant_head(int (*plant)(const char *target, const char *name)) {
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_store_destroy(store);
    char *head = tu_path(dir, "events.db-head");
    cr_assert_eq(unlink(head), 0, "the store keeps %s", head);
    cr_assert_eq(plant(victim, head), 0);
    return head;
}

static void assert_store_refused(const char *head, const char *why) {
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_neq(es_store_new(cfg, &store, &err), ES_OK, "the store opened");
    cr_assert(strstr(err.message, head) && strstr(err.message, why), "%s", err.message);
    cr_assert_neq(es_store_open(cfg, ES_OPEN_READONLY, &store, &err), ES_OK,
                  "the store opened read-only");
    cr_assert(strstr(err.message, head) && strstr(err.message, why), "%s", err.message);
    cr_assert_neq(es_store_accept_end(cfg, NULL, NULL, &err), ES_OK, "the end was accepted");
    cr_assert(strstr(err.message, head) && strstr(err.message, why), "%s", err.message);
}

/* With fs.protected_hardlinks off (the default in many containers) the owner of the store's
 * directory can link a file of root's there; root's next writer would take it for a new head
 * file and write its first 128 bytes. */
Test(side_files, a_head_file_hard_linked_to_another_file_is_refused_and_its_target_is_unchanged) {
    char *head = plant_head(link);
    assert_store_refused(head, "hard links");
    assert_victim_unchanged();
    free(head);
}

Test(side_files, a_head_file_that_is_a_symlink_is_refused_and_its_target_is_unchanged) {
    char *head = plant_head(symlink);
    assert_store_refused(head, "symbolic link");
    assert_victim_unchanged();
    free(head);
}

/* A file of our own at name that every user may write. */
static int writable_by_all(const char *target, const char *name) {
    (void)target;
    FILE *f = fopen(name, "w");
    if (!f)
        return -1;
    fclose(f);
    return chmod(name, 0666);
}

Test(side_files, a_head_file_every_user_may_write_is_refused) {
    char *head = plant_head(writable_by_all);
    assert_store_refused(head, "every user may write it");
    free(head);
}

Test(side_files, a_store_in_a_directory_every_user_can_write_keeps_no_head_file_there) {
    char *shared = tu_path(dir, "shared");
    cr_assert_eq(mkdir(shared, 0700), 0);
    cr_assert_eq(chmod(shared, 0777), 0);
    char *db = tu_path(shared, "events.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", db, &err), ES_OK, "%s", err.message);
    es_store_t *store = NULL;
    cr_assert_neq(es_store_new(cfg, &store, &err), ES_OK, "the store opened");
    cr_assert(strstr(err.message, "writable by every user"), "%s", err.message);
    char *head = tu_path(shared, "events.db-head");
    cr_assert_neq(access(head, F_OK), 0, "%s was made", head);
    free(head);
    free(db);
    free(shared);
}

/* The guard's page is mapped and written: on a full disk a sparse page is a SIGBUS. */
static int open_guard_on_full_disk(const char *where, void *opaque) {
    (void)opaque;
    char *path = tu_path(where, "read.db-notes.guard");
    es_guard_t *g = NULL;
    es_error_t err = {0};
    es_err e = es_guard_open(path, &g, &err);
    fprintf(stderr, "es_guard_open: %d %s\n", e, err.message);
    int ok = e == ES_EIO && strstr(err.message, path) && strstr(err.message, "disk is full");
    es_guard_close(g);
    free(path);
    return ok ? 0 : 1;
}

Test(side_files, a_crash_guard_on_a_full_disk_is_an_error_saying_so_not_a_crash) {
    int status = tu_on_full_disk(dir, NULL, open_guard_on_full_disk, NULL);
    cr_assert_neq(status, -SIGBUS, "the guard's first write killed the process with SIGBUS");
    cr_assert_eq(status, 0, "exit status %d (see stderr)", status);
}
