/* The crash guard: a small mmapped file noting the event being applied, so a restart knows
 * which event the process died on. Survives the process (page cache), not the machine. The
 * runner keeps one beside its read model. */
#ifndef ESKIT_CRASHGUARD_H
#define ESKIT_CRASHGUARD_H

#include "internal.h"
#include "log/log.h"

typedef struct es_guard es_guard_t;
es_err es_guard_open(const char *path, es_guard_t **out, es_error_t *err);
void es_guard_close(es_guard_t *g);
/* On start: counts a death on the noted event when the last process died applying it. */
void es_guard_recover(es_guard_t *g);
void es_guard_note(es_guard_t *g, const char *topic, int32_t partition, int64_t offset);
void es_guard_clear(es_guard_t *g);
/* Marks (or unmarks) a stop asked for, so that the process ending during this apply is not
 * counted as a crash. Async-signal-safe: one atomic store to the mapped page. */
void es_guard_stopping(es_guard_t *g, int stopping);
/* The apply watchdog is ending the process: this apply's death counts even after a stop. */
void es_guard_timed_out(es_guard_t *g);
/* Deaths counted on this event (0 when it is not the one the process died on). */
unsigned es_guard_deaths(const es_guard_t *g, const char *topic, int32_t partition, int64_t offset);
/* How many of those deaths were the apply watchdog's. */
unsigned es_guard_timeouts(const es_guard_t *g, const char *topic, int32_t partition,
                           int64_t offset);
/* 1 when the guard remembers nothing: no apply running, no death counted. */
int es_guard_idle(const es_guard_t *g);
/* Forgets the death count once the positions have moved past the event. */
void es_guard_passed(es_guard_t *g, const es_topic_pos_t *pos, size_t n);

#endif
