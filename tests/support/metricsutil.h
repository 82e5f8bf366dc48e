/* Reading a Prometheus text exposition in tests. */
#ifndef ESKIT_METRICSUTIL_H
#define ESKIT_METRICSUTIL_H

#include <stddef.h>

/* The value of the series written exactly as series (family{labels} as the exposition writes
 * it, labels in its order) in text; NAN when text has no such line. */
double mx_value(const char *text, const char *series);
/* How many times needle occurs in text. */
size_t mx_count(const char *text, const char *needle);

#endif
