/*
 * The files eskit writes beside a read model (the projector's lock, its crash
 * guard, a replay's guard) as another user who can write their directory would
 * attack them: a symlink or hard link to a victim file, a file of their own, a
 * directory anyone can write. Each is refused, naming the file, and the victim
 * keeps its bytes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "notes.h"
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
