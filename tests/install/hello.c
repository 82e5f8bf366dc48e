/*
 * A tiny service outside the eskit tree, built against an installed eskit
 * (pkg-config or find_package). It opens a store in a fresh temp directory,
 * appends one event, reads it back and prints OK; anything else is a failure
 * with the reason on stderr.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eskit/eskit.h>

static int check_event(const es_event_t *ev, void *opaque) {
    int *seen = opaque;
    if (ev->version == 1 && ev->payload_len == 5 && memcmp(ev->payload, "hello", 5) == 0 &&
        strcmp(ev->event_type, "hello.v1.Greeted") == 0)
        (*seen)++;
    return 0;
}

int main(void) {
    char dir[] = "/tmp/eskit-hello-XXXXXX";
    char db[sizeof dir + 16];
    es_error_t err = {0};
    es_config_t *cfg = NULL;
    es_store_t *store = NULL;
    es_new_event_t ev = {
        .event_type = "hello.v1.Greeted",
        .payload = (const uint8_t *)"hello",
        .payload_len = 5,
    };
    int seen = 0, status = 1;
    es_err rc;

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(db, sizeof db, "%s/hello.db", dir);
    cfg = es_config_new();
    if (!cfg || (rc = es_config_set(cfg, "db", db, &err)) != ES_OK ||
        (rc = es_store_new(cfg, &store, &err)) != ES_OK)
        goto out;
    if ((rc = es_store_append(store, "hello.greeting", "world-1", ES_EXPECT_NO_STREAM, 0, &ev, 1,
                              NULL, &err)) != ES_OK ||
        (rc = es_store_read_stream(store, "hello.greeting", "world-1", 1, check_event, &seen,
                                   &err)) != ES_OK)
        goto out;
    if (seen == 1) {
        printf("OK eskit %s\n", ESKIT_VERSION_STRING);
        status = 0;
    } else {
        snprintf(err.message, sizeof err.message, "read back %d matching events, expected 1", seen);
    }
out:
    if (status != 0)
        fprintf(stderr, "hello: %s\n", err.message[0] ? err.message : "es_config_new failed");
    es_store_destroy(store);
    es_config_destroy(cfg);
    /* The store's files: the database and its WAL companions. */
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        char path[sizeof db + 16];
        snprintf(path, sizeof path, "%s%s", db, suffixes[i]);
        unlink(path);
    }
    rmdir(dir);
    return status;
}
