#include "metricsutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double mx_value(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *line = text; line && *line;) {
        if (!strncmp(line, series, n) && line[n] == ' ') {
            char *end = NULL;
            double v = strtod(line + n + 1, &end);
            if (end != line + n + 1 && (*end == '\n' || *end == '\0' || *end == ' '))
                return v;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NAN;
}

size_t mx_count(const char *text, const char *needle) {
    size_t k = 0, n = strlen(needle);
    for (const char *p = text; n && (p = strstr(p, needle)); p += n)
        k++;
    return k;
}
