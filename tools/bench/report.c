#include "report.h"

#include "util.h"

#define NAME_W 58
#define VALUE_W 17

static const char *fmt_value(char *buf, size_t cap, double v, report_unit u) {
    char n[32];
    switch (u) {
    case UNIT_EVENTS_S:
        snprintf(buf, cap, "%s ev/s", bench_fmt_count(n, sizeof n, v));
        break;
    case UNIT_ROWS_S:
        snprintf(buf, cap, "%s rows/s", bench_fmt_count(n, sizeof n, v));
        break;
    case UNIT_USEC:
        snprintf(buf, cap, "%.1f us", v);
        break;
    case UNIT_MIB:
        snprintf(buf, cap, "%.1f MiB", v);
        break;
    case UNIT_SAGAS_S:
        snprintf(buf, cap, "%s sagas/s", bench_fmt_count(n, sizeof n, v));
        break;
    case UNIT_MSEC:
        snprintf(buf, cap, "%.1f ms", v);
        break;
    }
    return buf;
}

void report_header(FILE *out) {
    fprintf(out, "%-*s %*s %6s  %-8s %s\n", NAME_W, "figure (indented: its raw baseline)", VALUE_W,
            "value", "ratio", "goal", "result");
    for (int i = 0; i < NAME_W + VALUE_W + 30; i++)
        fputc('-', out);
    fputc('\n', out);
}

static void print_goal(FILE *out, const report_fig_t *f, double ratio) {
    if (f->goal_kind == GOAL_NONE) {
        fprintf(out, "  %-8s %s\n", "-", "-");
        return;
    }
    int pass = f->goal_kind == GOAL_AT_LEAST ? ratio >= f->goal : ratio <= f->goal;
    fprintf(out, "  %s %4.2f %s\n", f->goal_kind == GOAL_AT_LEAST ? ">=" : "<=", f->goal,
            pass ? "PASS" : "MISS");
}

void report_figure(FILE *out, const report_fig_t *f) {
    char v[48], b[48];
    double ratio = f->base > 0 ? f->value / f->base : 0.0;
    fprintf(out, "%-*s %*s %6.2f", NAME_W, f->name, VALUE_W,
            fmt_value(v, sizeof v, f->value, f->unit), ratio);
    print_goal(out, f, ratio);
    fprintf(out, "  %-*s %*s\n", NAME_W - 2, f->base_name, VALUE_W,
            fmt_value(b, sizeof b, f->base, f->base_unit));
}

void report_note(FILE *out, const char *text) {
    fprintf(out, "  * %s\n", text);
}
