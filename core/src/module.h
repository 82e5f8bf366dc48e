/*
 * Loadable modules (projector modules, types modules): where a module named by name is looked
 * for, and how a file is opened and its entry point found. One search order for every kind of
 * module, so the trust rules of docs/security.md hold for all of them: the directories of
 * projector.path (the process's own settings only), then projectors/ beside the program, then
 * ../<libdir>/eskit/projectors; never the working directory unless projector.path names it.
 */
#ifndef ESKIT_MODULE_H
#define ESKIT_MODULE_H

#include "internal.h"

#include <limits.h>

/* A module opened with dlopen and its entry point. */
typedef struct es_module {
    void *handle;
    void *entry; /* the entry function's address */
    char path[PATH_MAX];
} es_module;

/* Resolves name_or_path to a file and opens it: a path (it holds a '/' or ends in ".so") as
 * given (a bare "x.so" relative to the working directory, as the caller named it), a name by
 * the search order above. kind names the module in messages ("projector", "types"); entry is
 * the symbol to find and what_entry says what it should return. Errors name the file.
 * Close with es_module_close. */
es_err es_module_open(const es_config_t *cfg, const char *kind, const char *name_or_path,
                      const char *entry, const char *what_entry, es_module *m, es_error_t *err);
void es_module_close(es_module *m);

#endif
