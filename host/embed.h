/* SPDX-License-Identifier: MIT */
/* embed.h -- Lua modules and the FFI declarations compiled into the binary. */
#ifndef ORRERY_EMBED_H
#define ORRERY_EMBED_H

#include <stddef.h>

typedef struct embed_s {
  const char *name; /* module name, e.g. "orrery.chan"; "@cdef" for FFI */
  const char *path; /* path under lua/, used as the chunk name */
  const char *src;
  size_t len;
} embed_t;

extern const embed_t embed_modules[]; /* ends with a NULL name */

const embed_t *embed_find(const char *name);

#endif
