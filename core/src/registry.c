/*
 * The Schema Registry client (registry.h). One libcurl easy handle per registry, reused, so
 * requests share a connection. The API calls are Confluent's documented ones:
 *
 *   POST /subjects/{subject}/versions                       register: {"id": N}
 *   POST /compatibility/subjects/{subject}/versions/latest  verdict: {"is_compatible": bool}
 *   GET  /schemas/ids/{id}                                  schema: {"schema": "..."}
 *
 * with bodies {"schemaType": "PROTOBUF", "schema": "<.proto text>"}, and errors as
 * {"error_code": N, "message": "..."}. The basic auth credentials are handed to libcurl and
 * never put in a message.
 */
#include "registry.h"

#include "registry_json.h"
#include "registry_proto.h"
#include "eskit/v1/envelope.pb-c.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_MS 100     /* the first retry's wait, doubling */
#define BODY_MAX (1 << 22) /* an answer past 4 MiB is no registry's */
#define CONTENT_TYPE "application/vnd.schemaregistry.v1+json"

typedef struct cached {
    char *subject;
    uint32_t id;
} cached;

struct es_registry {
    char *url; /* without a trailing '/' */
    char *user_info;
    long timeout_ms;
    int retries, framing;
    CURL *curl;
    cached *ids;
    size_t n_ids, cap_ids;
};

/* One answer. */
typedef struct answer {
    long status;
    es_buf_t body;
    int too_big;
} answer;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void init_curl(void) {
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

es_err es_registry_open(const es_config_t *cfg, es_registry_t **out, es_error_t *err) {
    *out = NULL;
    const char *url = es_config_get(cfg, "schema.registry.url"),
               *framing = es_config_get(cfg, "schema.registry.framing"),
               *user = es_config_get(cfg, "schema.registry.basic.auth.user.info");
    int framed = framing && !strcmp(framing, "confluent");
    if (!url)
        return framed ? es_fail(err, ES_EINVAL,
                                "schema.registry.framing=confluent needs schema.registry.url: "
                                "a framed record carries the schema id the registry gave")
                      : ES_OK;
    pthread_once(&curl_once, init_curl);
    if (curl_init_rc != CURLE_OK)
        return es_fail(err, ES_EIO, "schema registry %s: libcurl failed to initialise: %s", url,
                       curl_easy_strerror(curl_init_rc));
    es_registry_t *r = calloc(1, sizeof *r);
    if (r && (r->url = strdup(url)) && (!user || (r->user_info = strdup(user))) &&
        (r->curl = curl_easy_init())) {
        size_t n = strlen(r->url);
        while (n && r->url[n - 1] == '/')
            r->url[--n] = '\0';
        r->timeout_ms = es_config_get_int(cfg, "schema.registry.timeout.ms");
        r->retries = (int)es_config_get_int(cfg, "schema.registry.retries");
        r->framing = framed;
        *out = r;
        return ES_OK;
    }
    es_registry_destroy(r);
    return es_fail(err, ES_ENOMEM, "out of memory opening the schema registry client for %s", url);
}

void es_registry_destroy(es_registry_t *r) {
    if (!r)
        return;
    if (r->curl)
        curl_easy_cleanup(r->curl);
    for (size_t i = 0; i < r->n_ids; i++)
        free(r->ids[i].subject);
    free(r->ids);
    if (r->user_info) /* a secret: not left in freed memory */
        explicit_bzero(r->user_info, strlen(r->user_info));
    free(r->user_info);
    free(r->url);
    free(r);
}

int es_registry_framing(const es_registry_t *r) {
    return r && r->framing;
}

const char *es_registry_url(const es_registry_t *r) {
    return r->url;
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *opaque) {
    answer *a = opaque;
    size_t len = size * n;
    if (a->body.len + len > BODY_MAX) {
        a->too_big = 1;
        return 0;
    }
    return es_buf_append(&a->body, data, len, NULL) == ES_OK ? len : 0;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Worth another attempt: the registry was not reached or did not answer in time. */
static int transient(CURLcode c) {
    return c == CURLE_COULDNT_CONNECT || c == CURLE_COULDNT_RESOLVE_HOST ||
           c == CURLE_OPERATION_TIMEDOUT || c == CURLE_SEND_ERROR || c == CURLE_RECV_ERROR ||
           c == CURLE_GOT_NOTHING || c == CURLE_PARTIAL_FILE;
}

static CURLcode perform(es_registry_t *r, const char *url, const char *body, answer *a) {
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: " CONTENT_TYPE);
    headers = curl_slist_append(headers, "Accept: " CONTENT_TYPE ", application/json");
    CURL *c = r->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (r->user_info) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, r->user_info);
    }
    a->body.len = 0;
    a->too_big = 0;
    a->status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
    curl_slist_free_all(headers);
    return rc;
}

/* One request with its retries; what names it in messages: "registering subject 'x'". The
 * answer's body is NUL-terminated. */
static es_err request(es_registry_t *r, const char *path, const char *body, const char *what,
                      answer *a, es_error_t *err) {
    char url[2048];
    if ((size_t)snprintf(url, sizeof url, "%s%s", r->url, path) >= sizeof url)
        return es_fail(err, ES_EINVAL, "schema registry %s: %s: the request URL is too long",
                       r->url, what);
    CURLcode rc = CURLE_OK;
    long backoff = BACKOFF_MS;
    for (int attempt = 0;; attempt++) {
        rc = perform(r, url, body, a);
        int again = rc != CURLE_OK ? transient(rc) : a->status >= 500;
        if (!again || attempt >= r->retries)
            break;
        sleep_ms(backoff);
        if (backoff < 10000) /* at most 10 s between attempts */
            backoff *= 2;
    }
    int attempts = r->retries + 1;
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return es_fail(err, ES_ETIMEOUT,
                       "schema registry %s: %s: no answer within schema.registry.timeout.ms=%ld "
                       "in %d attempts; check that the registry is up and reachable",
                       r->url, what, r->timeout_ms, attempts);
    if (rc != CURLE_OK)
        return es_fail(err, transient(rc) ? ES_ERETRY : ES_EIO,
                       "schema registry %s: %s: %s (%d attempts); check schema.registry.url and "
                       "that the registry is up",
                       r->url, what, a->too_big ? "an answer past 4 MiB" : curl_easy_strerror(rc),
                       transient(rc) ? attempts : 1);
    if (es_buf_append(&a->body, "", 1, NULL) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory reading the schema registry's answer");
    a->body.len--;
    return ES_OK;
}

/* ---- answers ------------------------------------------------------------------------------- */

/* The body as one line of text a message can quote (es_fail escapes it). */
static const char *quote(const answer *a) {
    return a->body.len ? (const char *)a->body.data : "(empty)";
}

/* The answer's JSON object, checked; ES_EDECODE names what came instead. */
static es_err json_of(es_registry_t *r, const answer *a, const char *what, es_error_t *err) {
    size_t at = 0;
    if (es_json_check((const char *)a->body.data, a->body.len, &at))
        return es_fail(err, ES_EDECODE,
                       "schema registry %s: %s: HTTP %ld with a body that is not JSON (byte %zu): "
                       "%.120s; is schema.registry.url a Schema Registry?",
                       r->url, what, a->status, at, quote(a));
    return ES_OK;
}

/* The registry's error answer: its message and error_code, or the body. */
static es_err http_error(es_registry_t *r, const answer *a, const char *what, es_err code,
                         const char *hint, es_error_t *err) {
    es_json_val_t v;
    long long ec = 0;
    char *msg = NULL;
    const char *doc = (const char *)a->body.data;
    if (!es_json_check(doc, a->body.len, NULL)) {
        if (es_json_member(doc, a->body.len, "message", &v))
            msg = es_json_string(&v);
        if (es_json_member(doc, a->body.len, "error_code", &v))
            es_json_int(&v, &ec);
    }
    es_err e = es_fail(err, code, "schema registry %s: %s: HTTP %ld (error %lld): %.200s%s", r->url,
                       what, a->status, ec, msg ? msg : quote(a), hint);
    free(msg);
    return e;
}

static long long error_code(const answer *a) {
    es_json_val_t v;
    long long ec = 0;
    const char *doc = (const char *)a->body.data;
    if (!es_json_check(doc, a->body.len, NULL) &&
        es_json_member(doc, a->body.len, "error_code", &v))
        es_json_int(&v, &ec);
    return ec;
}

static es_err schema_body(const char *schema, es_buf_t *b, es_error_t *err) {
    es_err e = es_buf_append(b, "{\"schemaType\":\"PROTOBUF\",\"schema\":", 34, NULL);
    if (e == ES_OK)
        e = es_json_put_string(b, schema);
    if (e == ES_OK)
        e = es_buf_append(b, "}", 2, NULL);
    return e == ES_OK ? ES_OK
                      : es_fail(err, ES_ENOMEM, "out of memory building a registry request");
}

/* A subject as a URL path segment. */
static char *escape(es_registry_t *r, const char *subject) {
    return curl_easy_escape(r->curl, subject, 0);
}

/* POST <prefix><subject><suffix>. */
static es_err post_schema(es_registry_t *r, const char *prefix, const char *suffix,
                          const char *subject, const char *schema, const char *what, answer *a,
                          es_error_t *err) {
    char path[1024];
    es_buf_t body = {0};
    char *seg = escape(r, subject);
    es_err e = seg ? schema_body(schema, &body, err)
                   : es_fail(err, ES_ENOMEM, "out of memory building a registry request");
    if (e == ES_OK) {
        snprintf(path, sizeof path, "%s%s%s", prefix, seg, suffix);
        e = request(r, path, (const char *)body.data, what, a, err);
    }
    curl_free(seg);
    es_buf_free(&body);
    return e;
}

es_err es_registry_check(es_registry_t *r, const char *subject, const char *schema,
                         es_error_t *err) {
    char what[400];
    answer a = {0};
    snprintf(what, sizeof what, "asking compatibility for subject '%s'", subject);
    es_err e = post_schema(r, "/compatibility/subjects/", "/versions/latest", subject, schema, what,
                           &a, err);
    es_json_val_t v;
    if (e == ES_OK && a.status == 404 && (error_code(&a) == 40401 || error_code(&a) == 40402))
        e = ES_OK; /* a new subject: anything is compatible with nothing */
    else if (e == ES_OK && a.status == 404)
        e = http_error(r, &a, what, ES_EIO,
                       "; a 404 without the registry's subject or version code: is "
                       "schema.registry.url a Schema Registry?",
                       err);
    else if (e == ES_OK && a.status != 200)
        e = http_error(r, &a, what, a.status == 422 ? ES_EINVAL : ES_EIO,
                       a.status == 422 ? "; the registry finds the schema invalid" : "", err);
    else if (e == ES_OK && (e = json_of(r, &a, what, err)) == ES_OK) {
        if (!es_json_member((const char *)a.body.data, a.body.len, "is_compatible", &v) ||
            (v.kind != ES_JSON_TRUE && v.kind != ES_JSON_FALSE))
            e = es_fail(err, ES_EDECODE,
                        "schema registry %s: %s: the answer has no is_compatible true or false: "
                        "%.160s",
                        r->url, what, quote(&a));
        else if (v.kind == ES_JSON_FALSE)
            e = es_fail(err, ES_EINCOMPATIBLE,
                        "schema registry %s: the schema of subject '%s' is incompatible with the "
                        "registry's latest version of %s (its compatibility level decides); add a "
                        "field instead of changing one, or register a new type",
                        r->url, subject, subject);
    }
    es_buf_free(&a.body);
    return e;
}

es_err es_registry_register(es_registry_t *r, const char *subject, const char *schema, uint32_t *id,
                            es_error_t *err) {
    char what[400];
    answer a = {0};
    snprintf(what, sizeof what, "registering subject '%s'", subject);
    es_err e = post_schema(r, "/subjects/", "/versions", subject, schema, what, &a, err);
    es_json_val_t v;
    long long n = 0;
    if (e == ES_OK && a.status == 409)
        e = es_fail(err, ES_EINCOMPATIBLE,
                    "schema registry %s: the schema of subject '%s' is incompatible with the "
                    "registry's latest version of %s (HTTP 409); add a field instead of changing "
                    "one, or register a new type",
                    r->url, subject, subject);
    else if (e == ES_OK && a.status == 422)
        e = http_error(r, &a, what, ES_EINVAL, "; the registry finds the schema invalid", err);
    else if (e == ES_OK && a.status != 200)
        e = http_error(r, &a, what, a.status == 401 || a.status == 403 ? ES_EINVAL : ES_EIO,
                       a.status == 401 || a.status == 403
                           ? "; check schema.registry.basic.auth.user.info"
                           : "",
                       err);
    else if (e == ES_OK && (e = json_of(r, &a, what, err)) == ES_OK) {
        if (!es_json_member((const char *)a.body.data, a.body.len, "id", &v) ||
            !es_json_int(&v, &n) || n < 0 || n > 0x7fffffffLL)
            e = es_fail(err, ES_EDECODE,
                        "schema registry %s: %s: the answer has no schema id: %.160s", r->url, what,
                        quote(&a));
        else
            *id = (uint32_t)n;
    }
    es_buf_free(&a.body);
    return e;
}

es_err es_registry_schema(es_registry_t *r, uint32_t id, char **schema, es_error_t *err) {
    char what[64], path[64];
    answer a = {0};
    snprintf(what, sizeof what, "fetching schema id %u", id);
    snprintf(path, sizeof path, "/schemas/ids/%u", id);
    es_err e = request(r, path, NULL, what, &a, err);
    es_json_val_t v;
    if (e == ES_OK && a.status == 404)
        e = http_error(r, &a, what, ES_ENOTFOUND, "", err);
    else if (e == ES_OK && a.status != 200)
        e = http_error(r, &a, what, ES_EIO, "", err);
    else if (e == ES_OK && (e = json_of(r, &a, what, err)) == ES_OK) {
        if (!es_json_member((const char *)a.body.data, a.body.len, "schema", &v) ||
            !(*schema = es_json_string(&v)))
            e = es_fail(err, ES_EDECODE, "schema registry %s: %s: the answer has no schema: %.160s",
                        r->url, what, quote(&a));
    }
    es_buf_free(&a.body);
    return e;
}

/* ---- registration at start ----------------------------------------------------------------- */

static cached *find(es_registry_t *r, const char *subject) {
    for (size_t i = 0; i < r->n_ids; i++)
        if (!strcmp(r->ids[i].subject, subject))
            return &r->ids[i];
    return NULL;
}

static es_err remember(es_registry_t *r, const char *subject, uint32_t id, es_error_t *err) {
    char *s = strdup(subject);
    if (!s || es_grow((void **)&r->ids, &r->cap_ids, r->n_ids, sizeof *r->ids, err) != ES_OK) {
        free(s);
        return s ? ES_ENOMEM : es_fail(err, ES_ENOMEM, "out of memory");
    }
    r->ids[r->n_ids].subject = s;
    r->ids[r->n_ids++].id = id;
    return ES_OK;
}

es_err es_registry_put_type(es_registry_t *r, const char *subject,
                            const ProtobufCMessageDescriptor *d, uint32_t *id, es_error_t *err) {
    const cached *c = find(r, subject);
    if (c) {
        if (id)
            *id = c->id;
        return ES_OK;
    }
    char *text = NULL;
    uint32_t got = 0;
    es_err e = es_registry_proto(d, &text, err);
    if (e == ES_OK)
        e = es_registry_check(r, subject, text, err);
    if (e == ES_OK)
        e = es_registry_register(r, subject, text, &got, err);
    if (e == ES_OK)
        e = remember(r, subject, got, err);
    if (e == ES_OK && id)
        *id = got;
    free(text);
    return e;
}

es_err es_registry_envelope_id(es_registry_t *r, const char *topic, uint32_t *id, es_error_t *err) {
    char subject[ES_MAX_TYPE_LEN + 32];
    if ((size_t)snprintf(subject, sizeof subject, "%s-value", topic) >= sizeof subject)
        return es_fail(err, ES_EINVAL, "topic name '%.64s...' is too long", topic);
    return es_registry_put_type(r, subject, &eskit__v1__event_envelope__descriptor, id, err);
}

es_err es_registry_put_aggregate(es_registry_t *r, const char *type,
                                 const ProtobufCMessageDescriptor *const *events, size_t n,
                                 uint32_t *envelope_id, es_error_t *err) {
    char topic[ES_MAX_TYPE_LEN + 16];
    if ((size_t)snprintf(topic, sizeof topic, "%s.events", type) >= sizeof topic)
        return es_fail(err, ES_EINVAL, "aggregate type '%.64s...' is too long", type);
    es_err e = es_registry_envelope_id(r, topic, envelope_id, err);
    for (size_t i = 0; e == ES_OK && i < n; i++)
        e = es_registry_put_type(r, events[i]->name, events[i], NULL, err);
    return e;
}
