/*
 * clock.c — the one wall clock of the store library and the daemon.
 */
#include "mailstore.h"

#include <time.h>

int64_t ms_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
