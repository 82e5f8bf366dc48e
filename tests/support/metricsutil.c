/* Series lookup in a Prometheus text exposition (metricsutil.h). */
#include "metricsutil.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

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

typedef struct http_body {
    char *data;
    size_t len;
} http_body;

static size_t take(char *p, size_t size, size_t n, void *opaque) {
    http_body *b = opaque;
    char *grown = realloc(b->data, b->len + size * n + 1);
    if (!grown)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, p, size * n);
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

long mx_http(const char *url, const char *method, char **body, char *ctype, size_t ctype_cap) {
    http_body b = {calloc(1, 1), 0};
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, take);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    if (method)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (ctype && ctype_cap) {
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(ctype, ctype_cap, "%s", ct ? ct : "");
    }
    curl_easy_cleanup(c);
    if (body)
        *body = b.data;
    else
        free(b.data);
    return status;
}
