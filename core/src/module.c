/*
 * The module loader every kind of module shares (module.h): the search for a module named by
 * name, dlopen, and the entry point's lookup, with errors naming the file.
 */
#include "module.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Fills out with dir/name.so when that file exists. */
static int probe(const char *dir, size_t dir_len, const char *name, char *out, size_t cap) {
    int n = snprintf(out, cap, "%.*s/%s.so", (int)dir_len, dir, name);
    return n > 0 && (size_t)n < cap && access(out, R_OK) == 0;
}

/* Directory of the running executable, for modules installed beside esctl. */
static int exe_dir(char *out, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0)
        return 0;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    return 1;
}

static es_err find_module(const es_config_t *cfg, const char *kind, const char *name, char *out,
                          size_t cap, es_error_t *err) {
    const char *path = es_config_get(cfg, "projector.path");
    for (const char *p = path; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        if (len && probe(p, len, name, out, cap))
            return ES_OK;
        p = colon ? colon + 1 : p + len;
    }
    char dir[PATH_MAX], sub[PATH_MAX + 32];
    if (exe_dir(dir, sizeof dir)) {
        snprintf(sub, sizeof sub, "%s/projectors", dir);
        if (probe(sub, strlen(sub), name, out, cap))
            return ES_OK;
        snprintf(sub, sizeof sub, "%s/../" ESKIT_INSTALL_LIBDIR "/eskit/projectors", dir);
        if (probe(sub, strlen(sub), name, out, cap))
            return ES_OK;
    }
    return es_fail(err, ES_ENOTFOUND,
                   "no %s module '%s' (looked for %s.so in projector.path%s%s, beside the "
                   "program in projectors/ and in ../" ESKIT_INSTALL_LIBDIR
                   "/eskit/projectors); give "
                   "its path",
                   kind, name, name, path ? " = " : "", path ? path : "");
}

es_err es_module_open(const es_config_t *cfg, const char *kind, const char *name_or_path,
                      const char *entry, const char *what_entry, es_module *m, es_error_t *err) {
    memset(m, 0, sizeof *m);
    if (!name_or_path || !*name_or_path)
        return es_fail(err, ES_EINVAL, "no %s module named", kind);
    es_err e = ES_OK;
    if (strchr(name_or_path, '/'))
        snprintf(m->path, sizeof m->path, "%s", name_or_path);
    else if (has_suffix(name_or_path, ".so")) /* dlopen would search the library path */
        snprintf(m->path, sizeof m->path, "./%s", name_or_path);
    else
        e = find_module(cfg, kind, name_or_path, m->path, sizeof m->path, err);
    if (e == ES_OK && !(m->handle = dlopen(m->path, RTLD_NOW | RTLD_LOCAL)))
        e = es_fail(err, access(m->path, R_OK) ? ES_ENOTFOUND : ES_EINVAL,
                    "cannot load %s module %s: %s", kind, m->path, dlerror());
    if (e == ES_OK && !(m->entry = dlsym(m->handle, entry)))
        e = es_fail(err, ES_EINVAL,
                    "%s is not a %s module: it does not export %s() (define it to return %s)",
                    m->path, kind, entry, what_entry);
    if (e != ES_OK)
        es_module_close(m);
    return e;
}

void es_module_close(es_module *m) {
    if (m->handle)
        dlclose(m->handle);
    m->handle = m->entry = NULL;
}
