/*
 * What the library exports. libeskit is built with hidden symbol visibility: only declarations
 * marked ES_API (every function of the public headers) are in its dynamic symbol table, so
 * nothing internal can be linked against by accident and become a promise
 * (docs/abi.md says what the promise is). ES_EXPORT marks what a loadable module exports to
 * eskit (ES_PROJECTOR_EXPORT and ES_TYPES_EXPORT use it).
 */
#ifndef ESKIT_API_H
#define ESKIT_API_H

#if defined(__GNUC__) || defined(__clang__)
#define ES_EXPORT __attribute__((visibility("default")))
#else
#define ES_EXPORT
#endif
#define ES_API ES_EXPORT

#endif
