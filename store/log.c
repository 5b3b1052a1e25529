/*
 * log.c — one log sink for the library, the daemon and the CLI.
 *
 * The sink is chosen once at start-up, before any thread exists, so the
 * two variables below are set-once configuration rather than shared
 * mutable state.
 */
#include "mailstore.h"

#include <stdio.h>
#include <syslog.h>

static int use_syslog;
static int stderr_min = LOG_INFO;

void ms_log_to_stderr(int min_prio)
{
    use_syslog = 0;
    stderr_min = min_prio;
}

void ms_log_to_syslog(const char *ident)
{
    openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
    use_syslog = 1;
}

void ms_log(int prio, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (use_syslog) {
        vsyslog(prio, fmt, ap);
    } else if (prio <= stderr_min) {
        /* One fprintf per line: lines from threads never interleave. */
        char line[2048];
        vsnprintf(line, sizeof line, fmt, ap);
        fprintf(stderr, "mailfs: %s\n", line);
    }
    va_end(ap);
}
