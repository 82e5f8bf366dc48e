/*
 * Reading an exposition in the Prometheus text format (es_metrics_write's text) the way a
 * scraper does: by series, a family name and a set of labels, whatever their order.
 */
#ifndef ESKIT_TEST_METRICSUTIL_H
#define ESKIT_TEST_METRICSUTIL_H

#include <stddef.h>

/* The value of series ("family" or "family{k=\"v\",...}", labels in any order) in text; NAN
 * when no line holds exactly that family with exactly those labels. */
double mx_value(const char *text, const char *series);
/* How many series lines of text have a family name that begins with prefix. */
size_t mx_count(const char *text, const char *prefix);
/* The whole exposition of the process, allocated (caller frees); fails the test on an error. */
char *mx_scrape(void);

/* An HTTP request to url (method NULL: GET) with a 5 s timeout, as a scraper makes it. Returns
 * the status, 0 when no answer came; *body (body may be NULL) gets the body, allocated (caller
 * frees), and ctype (may be NULL) the Content-Type, cut at ctype_cap. */
long mx_http(const char *url, const char *method, char **body, char *ctype, size_t ctype_cap);

#endif
