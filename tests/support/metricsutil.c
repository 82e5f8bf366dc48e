/* Series lookup in a Prometheus text exposition (metricsutil.h). */
#include "metricsutil.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <eskit/metrics.h>

#define MAX_LABELS 16
#define MAX_PART 256

typedef struct series {
    char name[MAX_PART];
    size_t n;
    char key[MAX_LABELS][MAX_PART];
    char value[MAX_LABELS][MAX_PART];
} series;

/* Parses "name{k="v",...}" from *p, leaving *p past it; false when malformed. Label values are
 * kept escaped, as both sides are written the same way. */
static bool parse_series(const char **p, series *s) {
    const char *c = *p;
    size_t len = strcspn(c, "{ \n");
    if (!len || len >= MAX_PART)
        return false;
    memcpy(s->name, c, len);
    s->name[len] = '\0';
    s->n = 0;
    c += len;
    if (*c == '{') {
        c++;
        while (*c && *c != '}') {
            if (s->n == MAX_LABELS)
                return false;
            size_t kl = strcspn(c, "=");
            if (!kl || kl >= MAX_PART || c[kl] != '=' || c[kl + 1] != '"')
                return false;
            memcpy(s->key[s->n], c, kl);
            s->key[s->n][kl] = '\0';
            c += kl + 2;
            size_t vl = 0;
            while (c[vl] && c[vl] != '"') {
                if (c[vl] == '\\' && c[vl + 1])
                    vl++;
                vl++;
            }
            if (c[vl] != '"' || vl >= MAX_PART)
                return false;
            memcpy(s->value[s->n], c, vl);
            s->value[s->n][vl] = '\0';
            s->n++;
            c += vl + 1;
            if (*c == ',')
                c++;
        }
        if (*c != '}')
            return false;
        c++;
    }
    *p = c;
    return true;
}

static bool same(const series *a, const series *b) {
    if (strcmp(a->name, b->name) || a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        bool found = false;
        for (size_t j = 0; j < b->n && !found; j++)
            found = !strcmp(a->key[i], b->key[j]) && !strcmp(a->value[i], b->value[j]);
        if (!found)
            return false;
    }
    return true;
}

double mx_value(const char *text, const char *want) {
    series w, s;
    const char *p = want;
    if (!text || !parse_series(&p, &w) || *p)
        return NAN;
    for (const char *line = text; *line; line += strcspn(line, "\n"), line += *line == '\n') {
        if (*line == '#' || *line == '\n')
            continue;
        p = line;
        if (!parse_series(&p, &s) || *p != ' ' || !same(&w, &s))
            continue;
        char *end = NULL;
        double v = strtod(p + 1, &end);
        if (end != p + 1 && (*end == '\n' || *end == '\0'))
            return v;
    }
    return NAN;
}

size_t mx_count(const char *text, const char *prefix) {
    size_t n = 0, len = strlen(prefix);
    for (const char *line = text; line && *line; line += strcspn(line, "\n"), line += *line == '\n')
        if (*line != '#' && !strncmp(line, prefix, len))
            n++;
    return n;
}

char *mx_scrape(void) {
    size_t len = 0;
    es_error_t err = {0};
    cr_assert_eq(es_metrics_write(NULL, 0, &len, &err), ES_OK, "%s", err.message);
    for (;;) {
        size_t cap = len + 4096; /* room for what registers in between */
        char *buf = malloc(cap);
        cr_assert_not_null(buf);
        es_err e = es_metrics_write(buf, cap, &len, &err);
        if (e == ES_OK)
            return buf;
        free(buf);
        cr_assert_eq(e, ES_EINVAL, "%s", err.message);
    }
}
