/*
 * esctl replay and esctl lag: rebuilding a projector's read model from the
 * log, and how far each projector's checkpoints are behind the log's end.
 *
 * Replay output: progress goes to stderr as a bar when stderr is a terminal,
 * else to stdout as plain lines (a log a script or CI can keep); parked
 * events and the summary go to stdout. stderr otherwise only ever carries
 * the one-line failure, as for every verb.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "esctl.h"

const char replay_help[] =
    "usage: esctl replay <projector> [--db FILE] [--readmodel FILE]\n"
    "\n"
    "Rebuilds a projector's read model from the start of the log. <projector> is a\n"
    "module name (order_summary) or the path of its .so. The rebuild goes into a\n"
    "shadow database, catches up with the log's end, then replaces the live read\n"
    "model in one transaction: readers keep querying the old one meanwhile, and a\n"
    "failure or Ctrl-C before the swap leaves it untouched. Ctrl-C (or SIGTERM)\n"
    "stops at the next event; a second Ctrl-C exits at once.\n"
    "\n"
    "On a terminal a progress bar (events/s, ETA) is drawn on stderr; otherwise a\n"
    "progress line is printed on stdout every 10% or every 2 seconds. On a long\n"
    "embedded log the total starts as an estimate from positions (so the first\n"
    "batch starts at once) and is refined as the replay goes; it is exact at the\n"
    "end. Every event\n"
    "that fails is parked in the dead-letter queue and printed as one line:\n"
    "  parked: <projector> <topic>[<partition>]@<offset> <event type> (dlq #<id>): <error>\n"
    "The last line sums up: events, parked, ignored, seconds, events/s.\n"
    "\n"
    "Options:\n"
    "  --db FILE         the event store (default: db in the config, eskit.db)\n"
    "  --readmodel FILE  the read model (default: readmodel.db, eskit-read.db)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Example: esctl --db orders.db --readmodel orders-read.db replay order_summary\n"
    "Exits 0 when the rebuild completed (parked events included), 1 when it failed.\n";

const char lag_help[] =
    "usage: esctl lag [--json] [--exact] [--db FILE] [--readmodel FILE]\n"
    "\n"
    "Shows, for every projector of the read model and every partition of the topics\n"
    "it reads: its checkpoint (the next offset it reads), the partition's end offset\n"
    "and the lag (records between the two). On the embedded backend a lag of more\n"
    "than 65,536 positions is estimated from the positions, in milliseconds, and\n"
    "shown as ~N (counting reads every record behind: seconds for millions).\n"
    "\n"
    "Options:\n"
    "  --json            a JSON array of objects with the keys projector, topic,\n"
    "                    partition, checkpoint, end, estimated (true when lag is\n"
    "                    an estimate), lag\n"
    "  --exact           count every lag exactly, however long the backlog\n"
    "  --db FILE         the event store (default: db in the config, eskit.db)\n"
    "  --readmodel FILE  the read model (default: readmodel.db, eskit-read.db)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Example: esctl --readmodel orders-read.db lag --json\n";

#define REDRAW_S 0.1    /* a terminal bar is redrawn at most this often */
#define LINE_EVERY_S 2. /* without a terminal: a progress line at least this often */

static volatile sig_atomic_t interrupted;
/* The runner rebuilding the model, for the signal handler (lock-free: signal-safe). */
static _Atomic(es_runner_t *) rebuilding;

/* The handler resets itself once the stop is noted, not through SA_RESETHAND: that resets it
 * on entry, so a SIGKILL sent as soon as the handler is seen gone (a supervisor's, a test's)
 * could find the crash guard not yet told. The signal stays blocked while the handler runs. */
static void on_stop_signal(int sig) {
    interrupted = 1;
    es_runner_t *r = atomic_load(&rebuilding);
    if (r)
        es_runner_stop(r);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
}

static void on_runner(es_runner_t *r, void *opaque) {
    (void)opaque;
    atomic_store(&rebuilding, r);
    if (r && interrupted) /* a signal came before the runner was there */
        es_runner_stop(r);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct replay_view {
    const char *name;
    bool tty;        /* stderr is a terminal: draw a bar there */
    bool bar_shown;  /* the bar is on screen and must be erased before other output */
    bool out_failed; /* writing stdout failed */
    double start, last_shown;
    int last_decile;
    pb_buf line;
} replay_view;

/* "51.2k" style rates, exact below 1000; padded to 6 columns for the bar. */
static void put_rate(pb_buf *b, double rate, bool pad) {
    char text[32];
    if (rate < 1e3)
        snprintf(text, sizeof(text), "%.0f", rate);
    else if (rate < 1e6)
        snprintf(text, sizeof(text), "%.1fk", rate / 1e3);
    else
        snprintf(text, sizeof(text), "%.2fM", rate / 1e6);
    pb_buf_printf(b, "%*s", pad ? 6 : 0, text);
}

static void put_eta(pb_buf *b, uint64_t done, uint64_t total, double rate) {
    if (done >= total) {
        pb_buf_puts(b, "0:00");
        return;
    }
    if (rate <= 0) {
        pb_buf_puts(b, "-:--");
        return;
    }
    double left = (double)(total - done) / rate;
    if (left > 359999)
        left = 359999;
    unsigned s = (unsigned)(left + 0.5);
    if (s >= 3600)
        pb_buf_printf(b, "%u:%02u:%02u", s / 3600, s / 60 % 60, s % 60);
    else
        pb_buf_printf(b, "%u:%02u", s / 60, s % 60);
}

static int term_width(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

static void erase_bar(replay_view *v) {
    if (v->bar_shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        v->bar_shown = false;
    }
}

/* "<name> [#####.....]  45%  12000/27000  51.2k ev/s  ETA 0:03", fitted to the terminal:
 * a line longer than the terminal would wrap, and '\r' only rewinds the last row. */
static void draw_bar(replay_view *v, uint64_t done, uint64_t total, double rate) {
    uint64_t shown = done < total ? done : total;
    unsigned pct = total ? (unsigned)(shown * 100 / total) : 100;
    pb_buf tail;
    pb_buf_init(&tail);
    /* Fixed-width fields, so the bar does not change length as the numbers grow. */
    int digits = snprintf(NULL, 0, "%" PRIu64, total);
    pb_buf_printf(&tail, " %3u%%  %*" PRIu64 "/%" PRIu64 "  ", pct, digits, done, total);
    put_rate(&tail, rate, true);
    pb_buf_puts(&tail, " ev/s  ETA ");
    put_eta(&tail, done, total, rate);
    int cols = term_width();
    pb_buf_reset(&v->line);
    pb_buf_puts(&v->line, "\r");
    put_clean(&v->line, v->name, 0);
    int room = cols - 1 - (int)strlen(v->name) - (int)tail.len - 3;
    int width = room > 40 ? 40 : room;
    if (width >= 10) {
        int filled = total ? (int)(shown * (uint64_t)width / total) : width;
        pb_buf_puts(&v->line, " [");
        for (int i = 0; i < width; i++)
            pb_buf_putc(&v->line, i < filled ? '#' : '.');
        pb_buf_putc(&v->line, ']');
    }
    pb_buf_puts(&v->line, tail.data ? tail.data : "");
    pb_buf_free(&tail);
    if (cols > 1 && v->line.len > (size_t)cols) /* the '\r' plus cols - 1 characters */
        v->line.len = (size_t)cols;
    pb_buf_puts(&v->line, "\033[K");
    if (!v->line.oom) {
        fwrite(v->line.data, 1, v->line.len, stderr);
        fflush(stderr);
        v->bar_shown = true;
    }
}

static void put_out(replay_view *v) {
    if (v->line.oom || fwrite(v->line.data, 1, v->line.len, stdout) != v->line.len ||
        fflush(stdout) != 0)
        v->out_failed = true;
}

static void print_progress_line(replay_view *v, uint64_t done, uint64_t total, double rate) {
    pb_buf_reset(&v->line);
    pb_buf_puts(&v->line, "replay ");
    put_clean(&v->line, v->name, 0);
    if (done <= total)
        pb_buf_printf(&v->line, ": %" PRIu64 " of %" PRIu64 " events (%u%%), ", done, total,
                      total ? (unsigned)(done * 100 / total) : 100);
    else
        pb_buf_printf(&v->line, ": %" PRIu64 " events (catching up past %" PRIu64 "), ", done,
                      total);
    put_rate(&v->line, rate, false);
    pb_buf_puts(&v->line, " events/s, ETA ");
    put_eta(&v->line, done, total, rate);
    pb_buf_putc(&v->line, '\n');
    put_out(v);
}

static int on_progress(uint64_t done, uint64_t total, void *opaque) {
    replay_view *v = opaque;
    double now = now_s(), elapsed = now - v->start;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    if (v->tty) {
        if (now - v->last_shown >= REDRAW_S) {
            draw_bar(v, done, total, rate);
            v->last_shown = now;
        }
    } else {
        int decile = total ? (int)((done < total ? done : total) * 10 / total) : 10;
        if (decile > v->last_decile || now - v->last_shown >= LINE_EVERY_S) {
            print_progress_line(v, done, total, rate);
            v->last_decile = decile;
            v->last_shown = now;
        }
    }
    return interrupted || v->out_failed;
}

static void on_parked(const es_dlq_entry_t *e, void *opaque) {
    replay_view *v = opaque;
    erase_bar(v);
    v->last_shown = 0; /* redraw the bar at the next progress report */
    pb_buf_reset(&v->line);
    pb_buf_puts(&v->line, "parked: ");
    put_clean(&v->line, e->projector, 0);
    pb_buf_putc(&v->line, ' ');
    put_position(&v->line, e);
    pb_buf_putc(&v->line, ' ');
    put_clean(&v->line, e->event_type[0] ? e->event_type : "(undecodable record)", 0);
    if (e->id > 0)
        pb_buf_printf(&v->line, " (dlq #%" PRId64 ")", e->id);
    pb_buf_puts(&v->line, ": ");
    put_clean(&v->line, e->error, 0);
    pb_buf_putc(&v->line, '\n');
    put_out(v);
}

static void print_summary(replay_view *v, const es_replay_result_t *res) {
    double rate = res->seconds > 0 ? (double)res->events / res->seconds : (double)res->events;
    pb_buf_reset(&v->line);
    pb_buf_puts(&v->line, "replayed ");
    put_clean(&v->line, v->name, 0);
    pb_buf_printf(&v->line,
                  ": %" PRIu64 " events, %" PRIu64 " parked, %" PRIu64
                  " ignored, %.2f s, %.0f events/s\n",
                  res->events, res->parked, res->ignored, res->seconds, rate);
    put_out(v);
}

/* Ctrl-C (or SIGTERM) cancels at the next event: the apply running ends, the shadow copy is
 * dropped, and the crash guard does not count the stop as a crash. A second one ends esctl at
 * once (the handler resets itself), the guard still not counting it; the live read model is
 * safe either way, and the next replay starts the shadow afresh. */
static void catch_stop_signals(struct sigaction old[2]) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old[0]);
    sigaction(SIGTERM, &sa, &old[1]);
}

static int run_replay(const es_config_t *cfg, const es_projector_def *def) {
    replay_view v = {.name = def->name, .tty = isatty(STDERR_FILENO) == 1};
    es_replay_hooks_t hooks = {
        .progress = on_progress, .parked = on_parked, .opaque = &v, .runner = on_runner};
    es_replay_result_t res = {0};
    es_error_t err = {0};
    struct sigaction old[2];
    pb_buf_init(&v.line);
    v.start = now_s();
    catch_stop_signals(old);
    es_err rc = es_replay(cfg, def, &hooks, &res, &err);
    sigaction(SIGINT, &old[0], NULL);
    sigaction(SIGTERM, &old[1], NULL);
    erase_bar(&v);
    int exit = EXIT_OK;
    if (v.out_failed) {
        say("writing the output failed; %s", rc == ES_OK ? "the read model was rebuilt all the same"
                                                         : "the replay was cancelled and the live "
                                                           "read model is unchanged");
        exit = EXIT_FAIL;
    } else if (rc != ES_OK && interrupted) {
        say("replay of %s cancelled; the live read model %s is unchanged", def->name,
            es_config_get(cfg, "readmodel.db"));
        exit = EXIT_FAIL;
    } else if (rc != ES_OK) {
        /* The library's message names the projector and the cause. */
        say("%s; the live read model is unchanged", err.message);
        exit = EXIT_FAIL;
    } else {
        print_summary(&v, &res);
        if (v.out_failed) {
            say("writing the output failed: %s", strerror(errno));
            exit = EXIT_FAIL;
        }
    }
    pb_buf_free(&v.line);
    return exit;
}

int cmd_replay(const options *o) {
    es_config_t *cfg = NULL;
    pb_registry *types = NULL;
    es_projector_module_t *mod = NULL;
    es_error_t err = {0};
    if (o->n_pos == 0) {
        say("'replay' needs a <projector>, a module name or a .so path; run 'esctl replay "
            "--help'");
        return EXIT_USAGE;
    }
    if (o->n_pos > 1)
        return usage_error(o, "unexpected argument", o->pos[1]);
    int rc = load_config(o, &cfg);
    if (rc == EXIT_OK) /* for their upcasters: the projector is given current types */
        rc = load_types(o, cfg, &types);
    if (rc == EXIT_OK && es_projector_load(cfg, o->pos[0], &mod, &err) != ES_OK) {
        say("%s", err.message);
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK)
        rc = check_store_exists(cfg);
    if (rc == EXIT_OK)
        rc = run_replay(cfg, es_projector_module_def(mod));
    es_projector_unload(mod);
    es_config_destroy(cfg);
    pb_registry_destroy(types);
    return rc;
}

typedef struct lag_widths {
    int projector, topic, partition, checkpoint, end, lag;
} lag_widths;

static int max_int(int a, int b) {
    return a > b ? a : b;
}

static lag_widths measure_lag(const es_lag_estimate_t *rows, size_t n) {
    lag_widths w = {9, 5, 9, 10, 3, 3}; /* the headers */
    for (size_t i = 0; i < n; i++) {
        const es_lag_row_t *r = &rows[i].row;
        w.projector = max_int(w.projector, clean_width(r->projector));
        w.topic = max_int(w.topic, clean_width(r->topic));
        w.partition = max_int(w.partition, snprintf(NULL, 0, "%" PRId32, r->partition));
        w.checkpoint = max_int(w.checkpoint, snprintf(NULL, 0, "%" PRId64, r->checkpoint));
        w.end = max_int(w.end, snprintf(NULL, 0, "%" PRId64, r->end));
        w.lag =
            max_int(w.lag, snprintf(NULL, 0, "%s%" PRIu64, rows[i].estimated ? "~" : "", r->lag));
    }
    return w;
}

/* An estimated lag is "~N" (es_lag_estimate), a counted one N. */
static void lag_text(pb_buf *b, const es_lag_estimate_t *rows, size_t n) {
    lag_widths w = measure_lag(rows, n);
    pb_buf_printf(b, "%-*s  %-*s  %*s  %*s  %*s  %*s\n", w.projector, "PROJECTOR", w.topic, "TOPIC",
                  w.partition, "PARTITION", w.checkpoint, "CHECKPOINT", w.end, "END", w.lag, "LAG");
    for (size_t i = 0; i < n; i++) {
        const es_lag_row_t *r = &rows[i].row;
        char lag[32];
        snprintf(lag, sizeof lag, "%s%" PRIu64, rows[i].estimated ? "~" : "", r->lag);
        put_clean(b, r->projector, w.projector);
        pb_buf_puts(b, "  ");
        put_clean(b, r->topic, w.topic);
        pb_buf_printf(b, "  %*" PRId32 "  %*" PRId64 "  %*" PRId64 "  %*s\n", w.partition,
                      r->partition, w.checkpoint, r->checkpoint, w.end, r->end, w.lag, lag);
    }
}

static void lag_json(pb_buf *b, const es_lag_estimate_t *rows, size_t n) {
    pb_buf_puts(b, n ? "[\n" : "[");
    for (size_t i = 0; i < n; i++) {
        const es_lag_row_t *r = &rows[i].row;
        pb_buf_puts(b, "  {\"projector\": ");
        pb_buf_json_string(b, r->projector, strlen(r->projector));
        pb_buf_puts(b, ", \"topic\": ");
        pb_buf_json_string(b, r->topic, strlen(r->topic));
        pb_buf_printf(b,
                      ", \"partition\": %" PRId32 ", \"checkpoint\": %" PRId64 ", \"end\": %" PRId64
                      ", \"estimated\": %s, \"lag\": %" PRIu64 "}%s\n",
                      r->partition, r->checkpoint, r->end, rows[i].estimated ? "true" : "false",
                      r->lag, i + 1 < n ? "," : "");
    }
    pb_buf_puts(b, "]\n");
}

/* The rows es_lag_estimate gives, or with --exact es_lag's, every lag counted. */
static es_err lag_rows(const options *o, const es_config_t *cfg, es_lag_estimate_t **out, size_t *n,
                       es_error_t *err) {
    if (!o->exact)
        return es_lag_estimate(cfg, out, n, err);
    es_lag_row_t *rows = NULL;
    *out = NULL;
    es_err e = es_lag(cfg, &rows, n, err);
    if (e == ES_OK && *n && !(*out = calloc(*n, sizeof **out)))
        e = es_fail(err, ES_ENOMEM, "out of memory");
    for (size_t i = 0; e == ES_OK && i < *n; i++)
        (*out)[i].row = rows[i];
    es_free(rows);
    return e;
}

static int run_lag(const options *o, const es_config_t *cfg) {
    es_lag_estimate_t *rows = NULL;
    size_t n = 0;
    es_error_t err = {0};
    if (lag_rows(o, cfg, &rows, &n, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    pb_buf b;
    pb_buf_init(&b);
    if (o->json)
        lag_json(&b, rows, n);
    else if (n)
        lag_text(&b, rows, n);
    else
        pb_buf_printf(&b, "no projector has run on %s yet\n", es_config_get(cfg, "readmodel.db"));
    int rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
    pb_buf_free(&b);
    free(rows);
    return rc;
}

int cmd_lag(const options *o) {
    es_config_t *cfg = NULL;
    if (o->n_pos > 0)
        return usage_error(o, "unexpected argument", o->pos[0]);
    int rc = load_config(o, &cfg);
    if (rc == EXIT_OK)
        rc = check_store_exists(cfg);
    if (rc == EXIT_OK)
        rc = check_readmodel_exists(cfg);
    if (rc == EXIT_OK)
        rc = run_lag(o, cfg);
    es_config_destroy(cfg);
    return rc;
}
