/* SPDX-License-Identifier: MIT */
/* logw.c -- the log writer: a thread that writes what orrery.log hands it,
 * so that a slow or stalled output never blocks the loop. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "host.h"

/* The loop thread hands over a batch of lines (one loop turn's worth) with
 * orrery_ffi_logw_put, which copies the bytes into a queue item (waking
 * the writer only if it sleeps); the writer takes the whole queue at once and
 * writes it with writev(2) outside the lock. The queue is bounded in bytes: a
 * batch that would take it past the bound is dropped and counted, never waited
 * for, so that a full pipe on stderr costs lines, not the loop.
 *
 * A change of output (a file opened, reopened after rotation, closed
 * back to stderr) is an item in the same queue: the lines handed over
 * before it go to the old output, those after it to the new one, and the
 * old descriptor is closed by the writer once it is done with it.
 *
 * Ownership: orrery_ffi_logw_new allocates the writer and starts its
 * thread; orrery_ffi_logw_close is called exactly once (from the log
 * module's exit handler or the cdata's finalizer). It waits, up to a
 * timeout, for the queue to be written, then joins the thread and frees
 * everything. When the output is stalled past the timeout, the thread is
 * detached and frees the writer itself if its write ever returns. At
 * process exit (exit(3), os.exit included), an atexit handler waits a
 * bounded time for every writer still open to drain. */

enum { ITEM_DATA = 0, ITEM_SWITCH = 1 };

/* Waking the writer is a futex wake: 25-50 us of the loop's time per
 * batch on a VM (virtualised IPIs), half the hand-over of a 1000-line
 * batch. So after a batch the writer lingers: it waits LINGER_NS on its
 * own clock for more, and a hand-over in that time does not wake it
 * unless it is urgent (an error line) or the queue holds URGENT_BYTES.
 * Only a writer asleep after a quiet linger is woken at once. */
enum { W_RUNNING = 0, W_LINGER = 1, W_SLEEP = 2 };
#define LINGER_SECS 0.005
#define URGENT_BYTES (256u << 10)

typedef struct item_s {
  struct item_s *next;
  size_t len, cap;
  int32_t lines;
  int kind;
  int fd, owned; /* ITEM_SWITCH: the new output */
  char data[];
} item_t;

struct orrery_logw {
  pthread_mutex_t mu;
  pthread_cond_t work; /* the writer waits here for items */
  pthread_cond_t idle; /* sync and close wait here for the queue to drain */
  pthread_t thread;
  item_t *head, *tail;
  size_t queued;     /* bytes handed over and not yet written */
  size_t max;        /* the bound on queued */
  uint64_t seq_in;   /* items handed over */
  uint64_t seq_done; /* items written (or failed) */
  int waiting;       /* W_*: what the writer is doing */
  int stop;          /* close: finish the queue and end */
  int detached;      /* close gave up waiting: the thread frees the writer */
  int fd, owned;     /* the output the writer writes to now */
  /* Written items kept for reuse: a batch of 1000 lines is 100-300 kB,
   * which malloc maps and unmaps each time (the page faults were 60 ns a
   * line of the hand-over, more than the copy). */
  item_t *pool;
  size_t pool_bytes;
  struct orrery_logw *next_open; /* the list of open writers, for atexit */
  /* Counters, read by orrery_ffi_logw_stats. */
  uint64_t dropped_lines, dropped_bytes, write_errors, written_bytes;
  uint64_t written_lines, batches;
  int last_errno;
};

/* -- Open writers, drained at exit -- */

static void wake(orrery_logw *w) {
  if (w->waiting != W_RUNNING) pthread_cond_signal(&w->work);
}

static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static orrery_logw *open_list;
static int atexit_done;

static void deadline_in(struct timespec *ts, double secs) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  if (secs > 1e6) secs = 1e6;
  if (secs < 0) secs = 0;
  time_t whole = (time_t)secs;
  long ns = ts->tv_nsec + (long)((secs - (double)whole) * 1e9);
  ts->tv_sec += whole + ns / 1000000000L;
  ts->tv_nsec = ns % 1000000000L;
}

/* Waits, with w->mu held, until every item handed over before the call
 * has been written or the timeout passes. 1 when written. */
static int wait_written(orrery_logw *w, double timeout) {
  uint64_t target = w->seq_in;
  if (w->seq_done >= target) return 1;
  if (timeout <= 0) return 0; /* a timed wait that has passed still sleeps */
  struct timespec ts;
  deadline_in(&ts, timeout);
  while (w->seq_done < target) {
    if (pthread_cond_timedwait(&w->idle, &w->mu, &ts) == ETIMEDOUT)
      return w->seq_done >= target;
  }
  return 1;
}

static void drain_at_exit(void) {
  pthread_mutex_lock(&open_mu);
  for (orrery_logw *w = open_list; w; w = w->next_open) {
    pthread_mutex_lock(&w->mu);
    wake(w);
    wait_written(w, 2.0);
    pthread_mutex_unlock(&w->mu);
  }
  pthread_mutex_unlock(&open_mu);
}

static void list_remove(orrery_logw *w) {
  pthread_mutex_lock(&open_mu);
  for (orrery_logw **p = &open_list; *p; p = &(*p)->next_open) {
    if (*p == w) {
      *p = w->next_open;
      break;
    }
  }
  pthread_mutex_unlock(&open_mu);
}

/* -- The writer thread -- */

/* Writes all of iov[0..n) (advancing it), waiting for a descriptor left
 * non-blocking by someone else (a terminal shared with libuv) to take
 * more. 0, or an errno. */
static int write_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    ssize_t r = writev(fd, iov, n);
    if (r >= 0) {
      size_t left = (size_t)r;
      while (n > 0 && left >= iov->iov_len) {
        left -= iov->iov_len;
        iov++;
        n--;
      }
      if (n > 0) {
        iov->iov_base = (char *)iov->iov_base + left;
        iov->iov_len -= left;
      }
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      poll(&pfd, 1, -1);
    } else if (errno != EINTR) {
      return errno;
    }
  }
  return 0;
}

enum { POOL_MAX = 4 << 20, ITEM_MIN = 16384, IOV_RUN = 64 };

static void writer_free(orrery_logw *w) {
  for (item_t *it = w->head, *next; it; it = next) {
    next = it->next;
    if (it->kind == ITEM_SWITCH && it->owned) close(it->fd);
    free(it);
  }
  for (item_t *it = w->pool, *next; it; it = next) {
    next = it->next;
    free(it);
  }
  if (w->owned) close(w->fd);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->work);
  pthread_cond_destroy(&w->idle);
  free(w);
}

static void *writer_main(void *arg) {
  orrery_logw *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    int lingered = 0;
    while (!w->head && !w->stop) {
      if (lingered) {
        w->waiting = W_SLEEP;
        pthread_cond_wait(&w->work, &w->mu);
      } else {
        struct timespec ts;
        deadline_in(&ts, LINGER_SECS);
        w->waiting = W_LINGER;
        pthread_cond_timedwait(&w->work, &w->mu, &ts);
        lingered = 1;
      }
      w->waiting = W_RUNNING;
    }
    if (!w->head) break; /* stop, and nothing left */
    item_t *batch = w->head;
    w->head = w->tail = NULL;
    pthread_mutex_unlock(&w->mu);
    uint64_t n = 0, taken = 0, bytes = 0, lines = 0, errs = 0;
    int err = 0;
    item_t *spent = NULL;
    /* Runs of data items go out in one writev each: a write(2) to a
     * file costs its fixed part (locks, time stamps) per call, and a
     * batch holds one item per loop turn. */
    struct iovec iov[IOV_RUN];
    int niov = 0;
    uint64_t run_bytes = 0, run_lines = 0;
    for (item_t *it = batch, *next;; it = next) {
      next = it ? it->next : NULL;
      if (niov > 0 && (!it || it->kind == ITEM_SWITCH || niov == IOV_RUN)) {
        int e = write_all(w->fd, iov, niov);
        if (e) {
          errs += (uint64_t)niov;
          err = e;
        } else {
          bytes += run_bytes;
          lines += run_lines;
        }
        niov = 0;
        run_bytes = run_lines = 0;
      }
      if (!it) break;
      n++;
      if (it->kind == ITEM_SWITCH) {
        /* Only this thread reads fd and owned once it runs. */
        if (w->owned) close(w->fd);
        w->fd = it->fd;
        w->owned = it->owned;
        free(it);
        continue;
      }
      iov[niov].iov_base = it->data;
      iov[niov].iov_len = it->len;
      niov++;
      run_bytes += it->len;
      run_lines += (uint64_t)it->lines;
      taken += it->len;
      it->next = spent;
      spent = it;
    }
    pthread_mutex_lock(&w->mu);
    for (item_t *it = spent, *next; it; it = next) {
      next = it->next;
      if (w->pool_bytes + it->cap <= POOL_MAX) {
        it->next = w->pool;
        w->pool = it;
        w->pool_bytes += it->cap;
      } else {
        free(it);
      }
    }
    w->queued -= taken;
    w->seq_done += n;
    w->written_bytes += bytes;
    w->written_lines += lines;
    w->batches++;
    w->write_errors += errs;
    if (err) w->last_errno = err;
    pthread_cond_broadcast(&w->idle);
  }
  int detached = w->detached;
  pthread_mutex_unlock(&w->mu);
  if (detached) writer_free(w);
  return NULL;
}

/* -- The FFI surface -- */

orrery_logw *orrery_ffi_logw_new(int32_t fd, int32_t owned, double max_bytes) {
  orrery_logw *w = calloc(1, sizeof(*w));
  if (!w) return NULL;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->work, &ca);
  pthread_cond_init(&w->idle, &ca);
  pthread_condattr_destroy(&ca);
  w->fd = fd;
  w->owned = owned;
  /* Stderr redirected to a file (2>file) is shared with the process's
   * other writers at one file offset; two threads writing it at once lost
   * lines in the sanitizer build's test. In append mode every write goes
   * to the end, whoever makes it (what 2>>file gives). */
  struct stat st;
  int fl = fcntl(fd, F_GETFL);
  if (!owned && fl >= 0 && !(fl & O_APPEND) && fstat(fd, &st) == 0 &&
      S_ISREG(st.st_mode))
    fcntl(fd, F_SETFL, fl | O_APPEND);
  w->max = max_bytes > 0 ? (size_t)max_bytes : 0;
  if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
    w->owned = 0;
    writer_free(w);
    return NULL;
  }
  pthread_mutex_lock(&open_mu);
  if (!atexit_done) atexit_done = atexit(drain_at_exit) == 0 ? 1 : -1;
  w->next_open = open_list;
  open_list = w;
  pthread_mutex_unlock(&open_mu);
  return w;
}

static void enqueue(orrery_logw *w, item_t *it, int urgent) {
  it->next = NULL;
  if (w->tail)
    w->tail->next = it;
  else
    w->head = it;
  w->tail = it;
  w->seq_in++;
  if (w->waiting == W_SLEEP ||
      (w->waiting == W_LINGER && (urgent || w->queued >= URGENT_BYTES)))
    pthread_cond_signal(&w->work);
}

int orrery_ffi_logw_put(orrery_logw *w, const char *p, size_t len,
                        int32_t lines, int32_t urgent) {
  if (len == 0) return 0;
  /* One thread (the loop's) hands over to a writer: the check and the
   * count may be apart, with the copy outside the lock between them. */
  pthread_mutex_lock(&w->mu);
  int over = w->queued + len > w->max;
  item_t *it = NULL;
  if (!over) {
    for (item_t **pp = &w->pool; *pp; pp = &(*pp)->next) {
      if ((*pp)->cap >= len) {
        it = *pp;
        *pp = it->next;
        w->pool_bytes -= it->cap;
        break;
      }
    }
  }
  pthread_mutex_unlock(&w->mu);
  if (!over && !it) {
    size_t cap = len < ITEM_MIN ? ITEM_MIN : len;
    it = malloc(sizeof(*it) + cap);
    if (it) it->cap = cap;
  }
  if (!it) {
    pthread_mutex_lock(&w->mu);
    w->dropped_lines += (uint64_t)(lines > 0 ? lines : 0);
    w->dropped_bytes += len;
    pthread_mutex_unlock(&w->mu);
    return 1;
  }
  memcpy(it->data, p, len);
  it->len = len;
  it->lines = lines;
  it->kind = ITEM_DATA;
  pthread_mutex_lock(&w->mu);
  w->queued += len;
  enqueue(w, it, urgent);
  pthread_mutex_unlock(&w->mu);
  return 0;
}

int orrery_ffi_logw_switch(orrery_logw *w, int32_t fd, int32_t owned) {
  item_t *it = malloc(sizeof(*it));
  if (!it) return -ENOMEM;
  it->len = it->cap = 0;
  it->lines = 0;
  it->kind = ITEM_SWITCH;
  it->fd = fd;
  it->owned = owned;
  pthread_mutex_lock(&w->mu);
  enqueue(w, it, 1);
  pthread_mutex_unlock(&w->mu);
  return 0;
}

int32_t orrery_ffi_logw_open(const char *path) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  return fd >= 0 ? fd : -errno;
}

void orrery_ffi_logw_close_fd(int32_t fd) {
  if (fd > 2) close(fd);
}

const char *orrery_ffi_strerror(int32_t err) {
  return strerror(err < 0 ? -err : err);
}

void orrery_ffi_logw_set_max(orrery_logw *w, double max_bytes) {
  pthread_mutex_lock(&w->mu);
  w->max = max_bytes > 0 ? (size_t)max_bytes : 0;
  pthread_mutex_unlock(&w->mu);
}

int orrery_ffi_logw_sync(orrery_logw *w, double timeout) {
  pthread_mutex_lock(&w->mu);
  if (timeout > 0 && w->seq_done < w->seq_in) wake(w);
  int ok = wait_written(w, timeout);
  pthread_mutex_unlock(&w->mu);
  return ok;
}

void orrery_ffi_logw_stats(orrery_logw *w, orrery_logw_stats *s) {
  pthread_mutex_lock(&w->mu);
  s->queued_bytes = w->queued;
  s->max_bytes = w->max;
  s->dropped_lines = w->dropped_lines;
  s->dropped_bytes = w->dropped_bytes;
  s->write_errors = w->write_errors;
  s->written_bytes = w->written_bytes;
  s->written_lines = w->written_lines;
  s->batches = w->batches;
  s->last_errno = w->last_errno;
  pthread_mutex_unlock(&w->mu);
}

int orrery_ffi_logw_close(orrery_logw *w, double timeout) {
  list_remove(w);
  pthread_mutex_lock(&w->mu);
  wake(w);
  int drained = wait_written(w, timeout);
  w->stop = 1;
  pthread_cond_signal(&w->work);
  if (!drained) {
    /* The output is stalled: leave the writer to its thread, which
     * frees it if the write ever returns (the process is ending). */
    w->detached = 1;
    pthread_detach(w->thread);
    pthread_mutex_unlock(&w->mu);
    return 0;
  }
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  writer_free(w);
  return 1;
}
