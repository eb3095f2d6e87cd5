"""A C echo client and worker on libgearman, built by the suite with gcc.

``bench_gearman worker PORT`` serves ``echo``; ``bench_gearman client PORT SIZE`` speaks the
suite's line protocol (READY, then ``GO START STOP`` -> ``RESULT {json}``), sending sync
foreground jobs (``gearman_client_do``) one at a time.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HEADER = Path("/usr/include/libgearman/gearman.h")

SOURCE = r"""
#include <libgearman/gearman.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SAMPLES (1u << 21)
#define MAX_ERRORS 50

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double seconds) {
    if (seconds <= 0) return;
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
}

static void *echo(gearman_job_st *job, void *context, size_t *size, gearman_return_t *ret) {
    (void)context;
    size_t n = gearman_job_workload_size(job);
    void *out = malloc(n ? n : 1);
    if (out == NULL) {
        *size = 0;
        *ret = GEARMAN_WORK_FAIL;
        return NULL;
    }
    memcpy(out, gearman_job_workload(job), n);
    *size = n;
    *ret = GEARMAN_SUCCESS;
    return out;
}

static int worker(in_port_t port) {
    gearman_worker_st *w = gearman_worker_create(NULL);
    if (w == NULL || gearman_worker_add_server(w, "127.0.0.1", port) != GEARMAN_SUCCESS ||
        gearman_worker_add_function(w, "echo", 0, echo, NULL) != GEARMAN_SUCCESS) {
        fprintf(stderr, "worker setup failed\n");
        return 1;
    }
    printf("READY\n");
    fflush(stdout);
    for (;;) {
        gearman_return_t rc = gearman_worker_work(w);
        if (gearman_failed(rc)) {
            fprintf(stderr, "worker: %s\n", gearman_worker_error(w));
            return 1;
        }
    }
}

static int call(gearman_client_st *c, const char *payload, size_t size) {
    size_t got = 0;
    gearman_return_t rc;
    void *reply = gearman_client_do(c, "echo", NULL, payload, size, &got, &rc);
    free(reply);
    return rc == GEARMAN_SUCCESS && got == size;
}

static int client(in_port_t port, size_t size, double warmup) {
    gearman_client_st *c = gearman_client_create(NULL);
    char *payload = malloc(size ? size : 1);
    uint32_t *lat = malloc(MAX_SAMPLES * sizeof *lat);
    if (c == NULL || payload == NULL || lat == NULL ||
        gearman_client_add_server(c, "127.0.0.1", port) != GEARMAN_SUCCESS) {
        fprintf(stderr, "client setup failed\n");
        return 1;
    }
    gearman_client_set_timeout(c, 10000);
    memset(payload, 'x', size);
    double until = clock_s(CLOCK_MONOTONIC) + warmup;
    while (clock_s(CLOCK_MONOTONIC) < until) {
        if (!call(c, payload, size)) {
            fprintf(stderr, "warm-up call failed: %s\n", gearman_client_error(c));
            return 1;
        }
    }
    printf("READY\n");
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
        double start, stop;
        if (sscanf(line, "GO %lf %lf", &start, &stop) != 2) continue;
        double offset = clock_s(CLOCK_REALTIME) - clock_s(CLOCK_MONOTONIC);
        start -= offset;
        stop -= offset;
        sleep_s(start - clock_s(CLOCK_MONOTONIC));
        size_t n = 0;
        int errors = 0;
        double then = clock_s(CLOCK_MONOTONIC);
        while (then < stop && errors < MAX_ERRORS) {
            if (!call(c, payload, size)) errors++;
            double now = clock_s(CLOCK_MONOTONIC);
            if (n < MAX_SAMPLES) lat[n] = (uint32_t)((now - then) * 1e6 + 0.5);
            n++;
            then = now;
        }
        size_t kept = n < MAX_SAMPLES ? n : MAX_SAMPLES;
        printf("RESULT {\"count\": %zu, \"elapsed\": %.6f, \"errors\": %d, \"lat_us\": [",
               n - (size_t)errors, then - start, errors);
        for (size_t i = 0; i < kept; i++) printf(i ? ",%u" : "%u", lat[i]);
        printf("]}\n");
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "worker") == 0) return worker((in_port_t)atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "client") == 0)
        return client((in_port_t)atoi(argv[2]), (size_t)atol(argv[3]),
                      argc >= 5 ? atof(argv[4]) : 0.3);
    fprintf(stderr, "usage: %s worker PORT | client PORT SIZE [WARMUP_S]\n", argv[0]);
    return 2;
}
"""


def build(out_dir: Path) -> Path:
    """Compile the program into ``out_dir``; CalledProcessError/OSError when it fails."""
    source = out_dir / "bench_gearman.c"
    binary = out_dir / "bench_gearman"
    source.write_text(SOURCE)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source), "-lgearman"],
                   check=True, capture_output=True, timeout=120)
    return binary
