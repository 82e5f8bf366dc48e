/*
 * The crash guard: a small mmapped page beside a read model noting the event being applied,
 * so that a restart knows which event the process died on and how often (see crashguard.h).
 */
#include "crashguard.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_MAGIC 0x45534744u /* "ESGD" */
#define GUARD_TOPIC 192

/* Fields after dead_topic came later: a page of an older release grows with zeros, which
 * is what they start as. */
typedef struct guard_page {
    uint32_t magic;
    uint32_t active; /* 1 while an apply runs: the process died in it if still 1 at start */
    int32_t partition, dead_partition;
    int64_t offset, dead_offset;
    uint32_t deaths, unused;
    char topic[GUARD_TOPIC], dead_topic[GUARD_TOPIC];
    uint32_t stopping;      /* a stop was asked for (a signal): dying in this apply is no crash */
    uint32_t timed_out;     /* the apply watchdog ended the process in this apply */
    uint32_t dead_timeouts; /* how many of the deaths the watchdog caused */
    uint32_t unused2;
} guard_page;

struct es_guard {
    guard_page *page;
    const char *last_topic; /* topic pointer last copied into page->topic */
};

es_err es_guard_open(const char *path, es_guard_t **out, es_error_t *err) {
    *out = NULL;
    int fd = -1;
    es_err e = es_side_file_open(path, "crash guard", &fd, err);
    if (e != ES_OK)
        return e;
    /* Blocks first, then the mapping: a page of a sparse file written on a full disk is a
     * SIGBUS (an older guard, a page shorter, grows here too). */
    e = es_side_file_reserve(fd, path, "crash guard", sizeof(guard_page), err);
    void *map = e == ES_OK
                    ? mmap(NULL, sizeof(guard_page), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                    : MAP_FAILED;
    close(fd);
    if (e == ES_OK && map == MAP_FAILED)
        e = es_fail(err, ES_EIO, "cannot map crash guard %s: %s", path, strerror(errno));
    es_guard_t *g = e == ES_OK ? calloc(1, sizeof *g) : NULL;
    if (e == ES_OK && !g)
        e = es_fail(err, ES_ENOMEM, "out of memory");
    if (e != ES_OK) {
        if (map != MAP_FAILED)
            munmap(map, sizeof(guard_page));
        return e;
    }
    g->page = map;
    if (g->page->magic != GUARD_MAGIC) {
        memset(g->page, 0, sizeof *g->page);
        g->page->magic = GUARD_MAGIC;
    }
    *out = g;
    return ES_OK;
}

void es_guard_close(es_guard_t *g) {
    if (!g)
        return;
    munmap(g->page, sizeof(guard_page));
    free(g);
}

static int same_event(const guard_page *p, const char *topic, int32_t partition, int64_t offset) {
    return p->deaths && p->dead_partition == partition && p->dead_offset == offset &&
           !strncmp(p->dead_topic, topic, GUARD_TOPIC);
}

/* A process stopped by a signal while an apply ran (the operator's second Ctrl-C, a
 * supervisor's SIGKILL after its SIGTERM) did not crash on the event: no death is counted,
 * and the count of earlier deaths stays as it was. The watchdog's end is a death. */
void es_guard_recover(es_guard_t *g) {
    guard_page *p = g->page;
    if (!__atomic_load_n(&p->active, __ATOMIC_ACQUIRE)) {
        p->stopping = p->timed_out = 0;
        return;
    }
    int timed_out = p->timed_out != 0;
    if (p->stopping && !timed_out) {
        /* not a crash */
    } else if (same_event(p, p->topic, p->partition, p->offset)) {
        p->deaths++;
        p->dead_timeouts += (uint32_t)timed_out;
    } else {
        memcpy(p->dead_topic, p->topic, GUARD_TOPIC);
        p->dead_partition = p->partition;
        p->dead_offset = p->offset;
        p->deaths = 1;
        p->dead_timeouts = (uint32_t)timed_out;
    }
    p->active = p->stopping = p->timed_out = 0;
    msync(p, sizeof *p, MS_SYNC);
}

void es_guard_note(es_guard_t *g, const char *topic, int32_t partition, int64_t offset) {
    guard_page *p = g->page;
    if (g->last_topic != topic) {
        snprintf(p->topic, GUARD_TOPIC, "%s", topic);
        g->last_topic = topic;
    }
    p->partition = partition;
    p->offset = offset;
    __atomic_store_n(&p->active, 1, __ATOMIC_RELEASE);
}

void es_guard_clear(es_guard_t *g) {
    __atomic_store_n(&g->page->active, 0, __ATOMIC_RELEASE);
}

void es_guard_stopping(es_guard_t *g, int stopping) {
    __atomic_store_n(&g->page->stopping, stopping ? 1u : 0u, __ATOMIC_RELEASE);
}

void es_guard_timed_out(es_guard_t *g) {
    __atomic_store_n(&g->page->timed_out, 1, __ATOMIC_RELEASE);
}

unsigned es_guard_deaths(const es_guard_t *g, const char *topic, int32_t partition,
                         int64_t offset) {
    return same_event(g->page, topic, partition, offset) ? g->page->deaths : 0;
}

unsigned es_guard_timeouts(const es_guard_t *g, const char *topic, int32_t partition,
                           int64_t offset) {
    return same_event(g->page, topic, partition, offset) ? g->page->dead_timeouts : 0;
}

int es_guard_idle(const es_guard_t *g) {
    return !__atomic_load_n(&g->page->active, __ATOMIC_ACQUIRE) && !g->page->deaths;
}

void es_guard_passed(es_guard_t *g, const es_topic_pos_t *pos, size_t n) {
    guard_page *p = g->page;
    if (!p->deaths)
        return;
    for (size_t i = 0; i < n; i++)
        if (pos[i].partition == p->dead_partition &&
            !strncmp(pos[i].topic, p->dead_topic, GUARD_TOPIC) && pos[i].offset > p->dead_offset) {
            p->deaths = p->dead_timeouts = 0;
            p->dead_topic[0] = '\0';
            return;
        }
}
