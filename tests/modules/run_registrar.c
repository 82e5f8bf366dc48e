/*
 * run_registrar: registers schema variants in a log's catalogue, the process the catalogue
 * tests start two of at once (tests/integration/test_catalogue.c).
 *
 *   run_registrar --set KEY=VALUE... VARIANT COUNT
 *
 * registers VARIANT (cattest_variants.h) as each of COUNT types ("T0Thing" .. ), one
 * es_schemas_register call per type, after waiting for the file named by the environment's
 * RUN_REGISTRAR_GO to exist (so two processes start together). Prints "<type> <version>" per
 * type; exits 0, or 1 after printing the error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cattest/cattest_variants.h"
#include "run_common.h"

int main(int argc, char **argv) {
    es_config_t *cfg = es_config_new();
    es_config_set_log_cb(cfg, run_log_line, "run_registrar");
    es_error_t err = {0};
    int i = 1;
    for (; i + 1 < argc && !strcmp(argv[i], "--set"); i += 2)
        if (run_set_pair(cfg, argv[i + 1], &err) != ES_OK) {
            fprintf(stderr, "run_registrar: %s\n", err.message);
            return 1;
        }
    if (argc - i != 2) {
        fprintf(stderr, "usage: run_registrar [--set KEY=VALUE]... VARIANT COUNT\n");
        return 2;
    }
    const char *variant = argv[i];
    int count = atoi(argv[i + 1]);
    const char *go = getenv("RUN_REGISTRAR_GO");
    while (go && access(go, F_OK) != 0)
        usleep(1000);
    es_schemas_t *cat = NULL;
    if (es_schemas_open(cfg, 0, &cat, &err) != ES_OK) {
        fprintf(stderr, "run_registrar: %s\n", err.message);
        return 1;
    }
    int rc = 0;
    for (int k = 0; k < count && rc == 0; k++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "T%d", k);
        const ProtobufCMessageDescriptor *d = cattest_variant(variant, prefix);
        uint32_t version = 0;
        if (!d) {
            fprintf(stderr, "run_registrar: no variant '%s'\n", variant);
            rc = 2;
        } else if (es_schemas_register(cat, &d, 1, &version, NULL, &err) != ES_OK) {
            fprintf(stderr, "run_registrar: %s\n", err.message);
            rc = 1;
        } else {
            printf("%s %u\n", d->name, version);
        }
    }
    es_schemas_close(cat);
    es_config_destroy(cfg);
    return rc;
}
