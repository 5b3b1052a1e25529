/*
 * sqlite_checkpoint.c — the store's WAL is copied back into the database
 * by a thread of its own, not by the commit that happens to cross the
 * threshold.
 *
 * With SQLite's automatic checkpoint, one write in every few thousand
 * (a cp's close, a move's batch) copied 32 MB of log into the database
 * and synced it while its caller waited: a restore paid it in the middle
 * of its files, and the first move after a restore paid the restore's
 * pages inside its lock.  Here every connection's commit hook only wakes
 * the checkpointer once the log passes SQ_CKPT_PAGES, and the
 * checkpointer also runs when the store has been quiet for a moment, so
 * a restore's log is folded in before the next move starts.  Its
 * checkpoints are PASSIVE: they never wait for, nor hold up, readers and
 * writers.  A log that grows past SQ_CKPT_LIMIT all the same (a
 * checkpointer that cannot keep up) is checkpointed by the committing
 * writer itself, as SQLite would: the log stays bounded.
 */
#include "sqlite_int.h"

#include <unistd.h>

#define SQ_CKPT_PAGES 8192            /* 32 MB of 4 KiB pages: wake the checkpointer */
#define SQ_CKPT_LIMIT (4 * 8192)      /* 128 MB: the writer checkpoints itself */
#define SQ_CKPT_IDLE_US (2 * 1000000) /* a quiet store's log folded in after this */

struct sq_ckpt {
    char *path;
    GMutex lock; /* guards everything below */
    GCond cond;
    /* Started by sq_ckpt_enable, in a process that will not fork any
     * more; NULL before: commits then checkpoint inline. */
    GThread *thread;
    pid_t pid; /* whose thread it is */
    bool wanted, stop;
    int64_t last_commit_us; /* monotonic time of the last commit seen */
};

static gpointer checkpointer(gpointer p);

/* sqlite3_wal_hook: after every commit of a connection of the store. */
static int on_commit(void *ctx, sqlite3 *db, const char *name, int pages)
{
    sq_ckpt *k = ctx;
    if (pages >= SQ_CKPT_LIMIT) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        return SQLITE_OK;
    }
    g_mutex_lock(&k->lock);
    bool mine = k->thread && k->pid == getpid();
    if (!mine) {
        g_mutex_unlock(&k->lock);
        /* No thread of ours (yet): as SQLite's automatic checkpoint. */
        if (pages >= SQ_CKPT_PAGES)
            sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        return SQLITE_OK;
    }
    k->last_commit_us = g_get_monotonic_time();
    if (pages >= SQ_CKPT_PAGES && !k->wanted) {
        k->wanted = true;
        g_cond_signal(&k->cond);
    }
    g_mutex_unlock(&k->lock);
    return SQLITE_OK;
}

/* One PASSIVE checkpoint of the whole log. */
static void checkpoint(sqlite3 *db, const char *path)
{
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
        ms_log(LOG_WARNING, "%s: background checkpoint: %s", path, sqlite3_errmsg(db));
}

static gpointer checkpointer(gpointer p)
{
    sq_ckpt *k = p;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(k->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        ms_log(LOG_WARNING, "%s: no background checkpoints: %s", k->path,
               db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return NULL; /* writers fall back to SQ_CKPT_LIMIT */
    }
    sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    /* Only the idle checkpoint after the last commit seen, not one per
     * wake-up of a store nobody writes. */
    int64_t folded = 0;
    g_mutex_lock(&k->lock);
    while (!k->stop) {
        int64_t deadline = g_get_monotonic_time() + SQ_CKPT_IDLE_US;
        while (!k->stop && !k->wanted && g_cond_wait_until(&k->cond, &k->lock, deadline))
            ;
        if (k->stop)
            break;
        int64_t last = k->last_commit_us;
        bool idle =
            !k->wanted && last != folded && g_get_monotonic_time() - last >= SQ_CKPT_IDLE_US;
        bool run = k->wanted || idle;
        k->wanted = false;
        if (!run)
            continue;
        g_mutex_unlock(&k->lock);
        checkpoint(db, k->path);
        g_mutex_lock(&k->lock);
        folded = last;
    }
    g_mutex_unlock(&k->lock);
    sqlite3_close(db);
    return NULL;
}

sq_ckpt *sq_ckpt_start(const char *path)
{
    sq_ckpt *k = g_new0(sq_ckpt, 1);
    k->path = g_strdup(path);
    g_mutex_init(&k->lock);
    g_cond_init(&k->cond);
    return k;
}

void sq_ckpt_enable(sq_ckpt *k)
{
    if (!k)
        return;
    g_mutex_lock(&k->lock);
    if (!k->stop && !(k->thread && k->pid == getpid())) {
        k->pid = getpid();
        k->thread = g_thread_new("checkpoint", checkpointer, k);
    }
    g_mutex_unlock(&k->lock);
}

void sq_ckpt_attach(sq_ckpt *k, sq_conn *c)
{
    if (k)
        sqlite3_wal_hook(c->db, on_commit, k);
}

void sq_ckpt_stop(sq_ckpt *k)
{
    if (!k)
        return;
    g_mutex_lock(&k->lock);
    k->stop = true;
    g_cond_signal(&k->cond);
    GThread *t = k->pid == getpid() ? k->thread : NULL; /* not another process's */
    g_mutex_unlock(&k->lock);
    if (t)
        g_thread_join(t);
    g_mutex_clear(&k->lock);
    g_cond_clear(&k->cond);
    g_free(k->path);
    g_free(k);
}
