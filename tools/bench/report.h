/*
 * The result table: every figure on one line with its ratio and goal, and the
 * raw baseline it is divided by on the line below it, so no number appears
 * without the one it is compared with.
 */
#ifndef ESKIT_BENCH_REPORT_H
#define ESKIT_BENCH_REPORT_H

#include <stdio.h>

typedef enum report_unit {
    UNIT_EVENTS_S,
    UNIT_ROWS_S,
    UNIT_USEC,
    UNIT_MIB,
    UNIT_SAGAS_S,
    UNIT_MSEC
} report_unit;

typedef enum report_goal {
    GOAL_NONE,
    GOAL_AT_LEAST, /* ratio >= goal passes (throughput) */
    GOAL_AT_MOST,  /* ratio <= goal passes (latency) */
} report_goal;

typedef struct report_fig {
    const char *name;
    double value;
    report_unit unit;
    const char *base_name;
    double base;
    report_unit base_unit;
    report_goal goal_kind;
    double goal;
} report_fig_t;

/* Prints the column headings. */
void report_header(FILE *out);
/* Prints one figure and its baseline. */
void report_figure(FILE *out, const report_fig_t *f);
/* Prints a line under the table, for what a reader needs to judge a figure. */
void report_note(FILE *out, const char *text);

#endif
