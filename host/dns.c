/* SPDX-License-Identifier: MIT */
/* dns.c -- name resolution: getaddrinfo as a thread-pool job (work.h). */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "net_int.h"

/* getaddrinfo's errors as libuv's codes, which net_errstr knows. */
static int eai_to_uv(int e) {
  switch (e) {
  case 0:
    return 0;
  case EAI_AGAIN:
    return UV_EAI_AGAIN;
  case EAI_BADFLAGS:
    return UV_EAI_BADFLAGS;
  case EAI_FAIL:
    return UV_EAI_FAIL;
  case EAI_FAMILY:
    return UV_EAI_FAMILY;
  case EAI_MEMORY:
    return UV_EAI_MEMORY;
  case EAI_NONAME:
    return UV_EAI_NONAME;
#ifdef EAI_NODATA
  case EAI_NODATA:
    return UV_EAI_NODATA;
#endif
  case EAI_SERVICE:
    return UV_EAI_SERVICE;
  case EAI_SOCKTYPE:
    return UV_EAI_SOCKTYPE;
  case EAI_SYSTEM:
    return errno ? -errno : UV_EAI_FAIL;
  default:
    return UV_EAI_FAIL;
  }
}

/* On a pool thread: touches only the job. */
static void dns_work(work_t *w) {
  net_dns_t *d = (net_dns_t *)w;
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  d->status = eai_to_uv(getaddrinfo(d->name, NULL, &hints, &d->res));
}

static void dns_done(work_t *w, int status) {
  net_dns_t *d = (net_dns_t *)w;
  if (status) d->status = status; /* cancelled before it ran */
}

static void dns_free(work_t *w) {
  net_dns_t *d = (net_dns_t *)w;
  if (d->res) freeaddrinfo(d->res);
  free(d);
}

static const work_type_t dns_type = {"dns", dns_work, dns_done, dns_free};

int net_dns_start(host_t *h, const char *name, net_dns_t **out) {
  size_t n = strlen(name);
  net_dns_t *d = calloc(1, sizeof(*d) + n + 1);
  if (!d) return UV_ENOMEM;
  memcpy(d->name, name, n + 1);
  int r = work_start(h, &d->w, &dns_type);
  if (r) {
    free(d);
    return r;
  }
  *out = d;
  return 0;
}
