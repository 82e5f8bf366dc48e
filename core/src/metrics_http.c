/* The metrics.listen server: GET /metrics and GET /healthz from libmicrohttpd's own thread. The
 * socket is bound here rather than by libmicrohttpd, so that a taken port is an error naming it
 * and port 0 tells the port it got. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>
#include <eskit/metrics.h>
#include "internal.h"
#include "metrics_int.h"

struct es_mx_server {
    struct MHD_Daemon *daemon;
    int fd;
    int port;
};

static const char *const KEY = "metrics.listen";

es_err es_mx_listen_parse(const char *listen, char *host, size_t host_cap, int *port,
                          es_error_t *err) {
    const char *colon = NULL, *h = listen;
    size_t hlen = 0;
    if (listen[0] == '[') { /* [v6]:port */
        const char *close = strchr(listen, ']');
        if (close && close[1] == ':') {
            h = listen + 1;
            hlen = (size_t)(close - h);
            colon = close + 1;
        }
    } else if ((colon = strrchr(listen, ':'))) {
        hlen = (size_t)(colon - listen);
        if (memchr(listen, ':', hlen)) /* a bare v6 address: ambiguous */
            colon = NULL;
    }
    char *end = NULL;
    long p = colon && colon[1] ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || !hlen || hlen >= host_cap || !end || *end || p < 0 || p > 65535)
        return es_fail(err, ES_EINVAL,
                       "config key '%s': '%.200s' is not HOST:PORT (e.g. 127.0.0.1:9464, "
                       "[::1]:9464 or 0.0.0.0:9464; port 0 picks a free one)",
                       KEY, listen);
    for (size_t i = 0; i < hlen; i++)
        if ((unsigned char)h[i] <= 0x20 || h[i] == 0x7f || h[i] == '/')
            return es_fail(err, ES_EINVAL, "config key '%s': the host of '%.200s' holds '%c'", KEY,
                           listen, (unsigned char)h[i] > 0x20 ? h[i] : '?');
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return ES_OK;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static char *text_copy(const char *s, size_t *len) {
    *len = strlen(s);
    return strdup(s);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
    (void)cls, (void)version, (void)upload, (void)upload_size, (void)con_cls;
    size_t len = 0;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
                     text_copy("only GET and HEAD\n", &len), len);
    if (!strcmp(url, "/metrics")) {
        es_buf_t out = {0};
        es_error_t err;
        if (es_mx_expose(&out, &err) != ES_OK) {
            es_buf_free(&out);
            char *msg = malloc(sizeof err.message + 1);
            if (msg)
                snprintf(msg, sizeof err.message + 1, "%s\n", err.message);
            return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", msg,
                         msg ? strlen(msg) : 0);
        }
        return reply(c, MHD_HTTP_OK, ES_METRICS_CONTENT_TYPE, (char *)out.data, out.len);
    }
    if (!strcmp(url, "/healthz")) {
        char *body = malloc(16384);
        if (!body)
            return MHD_NO;
        bool ok = es_metrics_health(body, 16384);
        return reply(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", body,
                     strlen(body));
    }
    return reply(c, MHD_HTTP_NOT_FOUND, "text/plain",
                 text_copy("not found: eskit serves /metrics and /healthz\n", &len), len);
}

es_err es_mx_server_start(const char *addr, es_mx_server **out, es_error_t *err) {
    char host[256], port_s[8];
    int port = 0;
    es_err e = es_mx_listen_parse(addr, host, sizeof host, &port, err);
    if (e != ES_OK)
        return e;
    snprintf(port_s, sizeof port_s, "%d", port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(host, port_s, &hints, &ai);
    if (g)
        return es_fail(err, ES_EINVAL, "config key '%s': cannot resolve '%s': %s", KEY, host,
                       gai_strerror(g));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 64)) {
        int saved = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return es_fail(err, ES_EINVAL,
                       "config key '%s': cannot listen on %s: %s; choose a free port (or 0) or "
                       "leave %s unset",
                       KEY, addr, strerror(saved), KEY);
    }
    freeaddrinfo(ai);
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    int got = port;
    if (!getsockname(fd, (struct sockaddr *)&sa, &sl))
        got = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                             : ((struct sockaddr_in *)&sa)->sin_port);
    es_mx_server *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return es_fail(err, ES_ENOMEM, "out of memory starting the metrics server");
    }
    s->fd = fd;
    s->port = got;
    s->daemon =
        MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC, 0, NULL, NULL, handle, NULL,
                         MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    if (!s->daemon) {
        close(fd);
        free(s);
        return es_fail(err, ES_EIO, "config key '%s': libmicrohttpd could not serve on %s", KEY,
                       addr);
    }
    *out = s;
    return ES_OK;
}

void es_mx_server_stop(es_mx_server *s) {
    if (!s)
        return;
    /* Quiescing hands the listening socket back, so that stopping does not close it behind our
     * back; stopping waits for the request under way. */
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    MHD_stop_daemon(s->daemon);
    close(fd != MHD_INVALID_SOCKET ? fd : s->fd);
    free(s);
}

int es_mx_server_port(const es_mx_server *s) {
    return s ? s->port : 0;
}
