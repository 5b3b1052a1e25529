/*
 * mutex.h — a GMutex that knows which thread holds it (internal to
 * store/ and fs/, not part of the store API).
 *
 * GMutex cannot say whether it is held, so a function that must run with
 * a lock held could only say so in a comment.  With ms_mutex it asserts
 * it, as SQLite's code asserts sqlite3_mutex_held(): a caller that forgot
 * the lock fails the assertion in the tests instead of racing in
 * production.  The holder is written only by the thread holding the lock
 * and read atomically, so the check itself is race-free.
 */
#ifndef MAILFS_MUTEX_H
#define MAILFS_MUTEX_H

#include <assert.h>
#include <stdbool.h>

#include <glib.h>

typedef struct ms_mutex {
    GMutex mu;
    GThread *holder; /* the thread holding mu, or NULL; atomic */
} ms_mutex;

static inline void ms_mutex_init(ms_mutex *m)
{
    g_mutex_init(&m->mu);
    m->holder = NULL;
}

static inline void ms_mutex_clear(ms_mutex *m) { g_mutex_clear(&m->mu); }

static inline void ms_mutex_lock(ms_mutex *m)
{
    g_mutex_lock(&m->mu);
    g_atomic_pointer_set(&m->holder, g_thread_self());
}

/* True when it took m (as g_mutex_trylock). */
static inline bool ms_mutex_trylock(ms_mutex *m)
{
    if (!g_mutex_trylock(&m->mu))
        return false;
    g_atomic_pointer_set(&m->holder, g_thread_self());
    return true;
}

static inline void ms_mutex_unlock(ms_mutex *m)
{
    assert(g_atomic_pointer_get(&m->holder) == g_thread_self());
    g_atomic_pointer_set(&m->holder, NULL);
    g_mutex_unlock(&m->mu);
}

/* g_cond_wait on m, which the caller holds: the wait gives m up and takes
 * it back, and so does the holder record. */
static inline void ms_cond_wait(GCond *c, ms_mutex *m)
{
    assert(g_atomic_pointer_get(&m->holder) == g_thread_self());
    g_atomic_pointer_set(&m->holder, NULL);
    g_cond_wait(c, &m->mu);
    g_atomic_pointer_set(&m->holder, g_thread_self());
}

/* True when the calling thread holds m. */
static inline bool ms_mutex_held(ms_mutex *m)
{
    return g_atomic_pointer_get(&m->holder) == g_thread_self();
}

/* For functions whose callers must hold m (compiled out with NDEBUG). */
#ifdef NDEBUG
#define ms_mutex_assert_held(m) ((void)(m))
#else
#define ms_mutex_assert_held(m) assert(ms_mutex_held(m))
#endif

#endif
