/* The recorder's native ticker: the reads that must happen at the sampling rate, off the Python interpreter.
 *
 * A thread of its own wakes on an absolute schedule (clock_nanosleep, TIMER_ABSTIME) and on each tick:
 *   - preads each registered counter file (a disk's /sys/class/block/<disk>/stat, a RAPL zone's energy_uj) and
 *     parses the unsigned decimal numbers in it (at most SC_MAXV per file);
 *   - keeps the tick in a ring when any number changed since the previous tick, when hold_s passed since the
 *     last kept tick, or on the first tick (a kept tick also carries the time of the tick before it, so the
 *     recorder can end a run of equal readings at its last tick);
 *   - stat()s the marker file and writes one byte to wake_fd when its size changed (the Python thread sleeps in
 *     poll() on the other end, so a marker wakes it at once and nothing else polls the file).
 * The Python side (storagecarbon/record/ticker.py) drains the ring when it wakes for its own, slower sources.
 * Counters are cumulative: a tick the ring had no room for loses time resolution, never bytes or joules.
 *
 * Why: on the KVM guests measured (the lent H200 box, the 2-vCPU CI VM) a Python thread's wake-up alone costs
 * 45-90 us of CPU and each cold Python code path 5-20x its warm cost; this loop costs ~60 us a tick in all
 * (benchmarks/results/recorder_cost.md). Built by storagecarbon/record/ticker.py with the system's C compiler;
 * no Python headers (loaded with ctypes). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SC_MAXV 20
#define SC_BUF 4096

typedef struct {
    double period, hold;
    int nfiles;
    int *fds;
    char *marker_path;
    long long marker_size;
    int wake_fd;
    int cap, head, count;
    double *t, *tprev;
    uint64_t *vals;      /* cap * nfiles * SC_MAXV */
    int32_t *nums;       /* cap * nfiles: numbers parsed, -1 on a read error */
    uint64_t *cur, *last;
    int32_t *cur_n, *last_n;
    double last_kept, last_tick, first_deadline;
    int drop_pending;   /* a tick's numbers found no room: the ring's last entry is not the latest reading */
    uint64_t ticks, overruns, kept, dropped, errors, wakes_sent;
    pthread_t th;
    pthread_mutex_t mu;
    volatile int stop;
    int running;
    double cpu_at_exit;
} sc_ticker;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse(const char *s, ssize_t n, uint64_t *out) {
    int k = 0;
    ssize_t i = 0;
    while (i < n && k < SC_MAXV) {
        while (i < n && (s[i] < '0' || s[i] > '9')) i++;
        if (i >= n) break;
        uint64_t v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') v = v * 10u + (uint64_t)(s[i++] - '0');
        out[k++] = v;
    }
    return k;
}

static void tick(sc_ticker *h, double now) {
    char buf[SC_BUF];
    int changed = h->ticks == 0;
    for (int f = 0; f < h->nfiles; f++) {
        ssize_t r = pread(h->fds[f], buf, SC_BUF - 1, 0);
        uint64_t *c = h->cur + (size_t)f * SC_MAXV;
        int32_t n = r < 0 ? -1 : parse(buf, r, c);
        if (n < 0 && h->errors++ == 0 && h->wake_fd >= 0) {   /* the first failure wakes the Python side */
            char b = 'e';
            if (write(h->wake_fd, &b, 1) != 1) {}
        }
        h->cur_n[f] = n;
        if (n != h->last_n[f] || (n > 0 && memcmp(c, h->last + (size_t)f * SC_MAXV, (size_t)n * sizeof(uint64_t))))
            changed = 1;
    }
    if (h->nfiles > 0 && (changed || now - h->last_kept >= h->hold)) {
        pthread_mutex_lock(&h->mu);
        if (h->count < h->cap) {
            int s = (h->head + h->count) % h->cap;
            h->t[s] = now;
            h->tprev[s] = h->drop_pending ? -1.0 : h->last_tick;
            h->drop_pending = 0;
            memcpy(h->vals + (size_t)s * h->nfiles * SC_MAXV, h->cur, (size_t)h->nfiles * SC_MAXV * sizeof(uint64_t));
            memcpy(h->nums + (size_t)s * h->nfiles, h->cur_n, (size_t)h->nfiles * sizeof(int32_t));
            h->count++;
            h->kept++;
            h->last_kept = now;
            memcpy(h->last, h->cur, (size_t)h->nfiles * SC_MAXV * sizeof(uint64_t));
            memcpy(h->last_n, h->cur_n, (size_t)h->nfiles * sizeof(int32_t));
        } else {
            h->dropped++;   /* kept as "changed" for the next tick: the last values still reach the ring */
            h->drop_pending = 1;
        }
        h->last_tick = now;
        pthread_mutex_unlock(&h->mu);
    } else {
        pthread_mutex_lock(&h->mu);
        h->last_tick = now;
        pthread_mutex_unlock(&h->mu);
    }
    if (h->marker_path) {
        struct stat st;
        if (stat(h->marker_path, &st) == 0 && (long long)st.st_size != h->marker_size) {
            h->marker_size = (long long)st.st_size;
            if (h->wake_fd >= 0) {
                char b = 'm';
                if (write(h->wake_fd, &b, 1) == 1) h->wakes_sent++;
            }
        }
    }
    h->ticks++;
}

static void add_s(struct timespec *ts, double s) {
    long long ns = (long long)(s * 1e9);
    ts->tv_sec += ns / 1000000000LL;
    ts->tv_nsec += ns % 1000000000LL;
    if (ts->tv_nsec >= 1000000000L) { ts->tv_sec++; ts->tv_nsec -= 1000000000L; }
}

static void *loop(void *arg) {
    sc_ticker *h = (sc_ticker *)arg;
    double next = h->first_deadline;
    while (!h->stop) {
        /* sleep to `next` in pieces of at most 0.25 s, so a stop is prompt at any rate */
        for (;;) {
            double left = next - mono();
            if (left <= 0 || h->stop) break;
            struct timespec ts;
            if (left > 0.25) {
                clock_gettime(CLOCK_MONOTONIC, &ts);
                add_s(&ts, 0.25);
            } else {
                double whole = (double)(long long)next;
                ts.tv_sec = (time_t)whole;
                ts.tv_nsec = (long)((next - whole) * 1e9);
            }
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !h->stop) {}
        }
        if (h->stop) break;
        double now = mono();
        tick(h, now);
        next += h->period;
        if (now >= next) {   /* late: skip the deadlines already missed */
            uint64_t missed = (uint64_t)((now - next) / h->period) + 1;
            h->overruns += missed;
            next += (double)missed * h->period;
        }
    }
    h->cpu_at_exit = thread_cpu();
    return NULL;
}

double sc_ticker_cpu(sc_ticker *h);

sc_ticker *sc_ticker_new(double period, double hold, int nfiles, const int *fds, const char *marker_path,
                         int wake_fd, int cap) {
    sc_ticker *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->period = period;
    h->hold = hold;
    h->nfiles = nfiles;
    h->cap = cap > 0 ? cap : 1;
    h->wake_fd = wake_fd;
    h->marker_size = -1;
    h->last_kept = -1e300;
    h->last_tick = -1.0;
    size_t nv = (size_t)(nfiles > 0 ? nfiles : 1) * SC_MAXV;
    h->fds = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(int));
    h->t = calloc((size_t)h->cap, sizeof(double));
    h->tprev = calloc((size_t)h->cap, sizeof(double));
    h->vals = calloc((size_t)h->cap * nv, sizeof(uint64_t));
    h->nums = calloc((size_t)h->cap * (size_t)(nfiles > 0 ? nfiles : 1), sizeof(int32_t));
    h->cur = calloc(nv, sizeof(uint64_t));
    h->last = calloc(nv, sizeof(uint64_t));
    h->cur_n = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(int32_t));
    h->last_n = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(int32_t));
    if (marker_path && marker_path[0]) h->marker_path = strdup(marker_path);
    if (!h->fds || !h->t || !h->tprev || !h->vals || !h->nums || !h->cur || !h->last || !h->cur_n || !h->last_n) {
        free(h->fds); free(h->t); free(h->tprev); free(h->vals); free(h->nums);
        free(h->cur); free(h->last); free(h->cur_n); free(h->last_n); free(h->marker_path); free(h);
        return NULL;
    }
    for (int f = 0; f < nfiles; f++) { h->fds[f] = fds[f]; h->last_n[f] = -2; }
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

int sc_ticker_start(sc_ticker *h, double first_deadline) {
    h->first_deadline = first_deadline;
    h->stop = 0;
    if (pthread_create(&h->th, NULL, loop, h) != 0) return -1;
    h->running = 1;
    return 0;
}

void sc_ticker_stop(sc_ticker *h) {
    if (!h->running) return;
    h->stop = 1;
    pthread_join(h->th, NULL);
    h->running = 0;
}

/* Copy up to `max` kept ticks out (oldest first). A kept tick's t_prev is the tick before it (whose numbers are those
 * of the kept tick before), or -1 when it is the first or ticks were dropped between. out[8]: the latest tick's time
 * when its numbers are those of the last kept tick (-1 when a tick found no room since), the thread's CPU so far (s),
 * ticks, overruns, kept, dropped, read errors, wakes sent. One call per wake of the Python side. */
int sc_ticker_drain(sc_ticker *h, double *t, double *tprev, uint64_t *vals, int32_t *nums, int max, double *out) {
    pthread_mutex_lock(&h->mu);
    int n = h->count < max ? h->count : max;
    size_t nv = (size_t)h->nfiles * SC_MAXV;
    for (int k = 0; k < n; k++) {
        int s = (h->head + k) % h->cap;
        t[k] = h->t[s];
        tprev[k] = h->tprev[s];
        memcpy(vals + (size_t)k * nv, h->vals + (size_t)s * nv, nv * sizeof(uint64_t));
        memcpy(nums + (size_t)k * h->nfiles, h->nums + (size_t)s * h->nfiles, (size_t)h->nfiles * sizeof(int32_t));
    }
    h->head = (h->head + n) % h->cap;
    h->count -= n;
    out[0] = h->drop_pending ? -1.0 : h->last_tick;
    out[2] = (double)h->ticks; out[3] = (double)h->overruns; out[4] = (double)h->kept; out[5] = (double)h->dropped;
    out[6] = (double)h->errors; out[7] = (double)h->wakes_sent;
    pthread_mutex_unlock(&h->mu);
    out[1] = sc_ticker_cpu(h);
    return n;
}

/* The ticker thread's CPU time so far (its whole CPU, sleeps and wake-ups included). */
double sc_ticker_cpu(sc_ticker *h) {
    if (!h->running) return h->cpu_at_exit;
    clockid_t cid;
    struct timespec ts;
    if (pthread_getcpuclockid(h->th, &cid) != 0 || clock_gettime(cid, &ts) != 0) return -1.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int sc_ticker_maxv(void) { return SC_MAXV; }

void sc_ticker_free(sc_ticker *h) {
    if (!h) return;
    sc_ticker_stop(h);
    pthread_mutex_destroy(&h->mu);
    free(h->fds); free(h->t); free(h->tprev); free(h->vals); free(h->nums);
    free(h->cur); free(h->last); free(h->cur_n); free(h->last_n); free(h->marker_path); free(h);
}
