/*
 * status.c — error status, thread-local error messages, logging callback, aborts.
 * Tested indirectly by every test that checks an error path (e.g. tests/test_safetensors.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

static _Thread_local char last_error[1024];

const char *nu_last_error(void) { return last_error; }

void nu_clear_error(void) { last_error[0] = 0; }

nu_status nu_error(nu_status s, const char *fmt, ...) {
    /* format into a temporary first: callers may pass nu_last_error() as an argument to prefix
     * it ("unet: %s"), and formatting a buffer into itself is undefined */
    char tmp[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(last_error, tmp, sizeof tmp);
    return s;
}

const char *nu_status_name(nu_status s) {
    static const char *names[NU_STATUS_COUNT] = {
        "ok", "invalid argument", "I/O error", "bad format", "unsupported",
        "out of memory", "not found", "cancelled", "numeric error",
    };
    return (unsigned)s < NU_STATUS_COUNT ? names[s] : "unknown status";
}

static nu_log_fn log_fn;
static void *log_user;
static nu_log_level log_min = NU_LOG_INFO;

void nu_log_set_callback(nu_log_fn fn, void *user, nu_log_level min_level) {
    log_fn = fn;
    log_user = user;
    log_min = min_level;
}

void nu_log(nu_log_level level, const char *fmt, ...) {
    if (!log_fn || level < log_min) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_fn(level, buf, log_user);
}

void nu_abort(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "nuance: internal error at %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}
