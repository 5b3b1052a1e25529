/*
 * lazy.c — attribute changes that follow a close, written with the
 * mount's next write instead of in a transaction of their own.
 *
 * rsync -a closes its temporary file and only then sets its owner, mode
 * and times (three setattrs) before it renames the file into place.  In a
 * store where every write is a transaction (ms_store_groups_writes) those
 * are three commits, each writing the message's, its folder's and its
 * mailbox's pages to the log: half the transactions of a restore.  So a
 * setattr of a message this mount committed less than LAZY_FRESH_US ago
 * is answered at once and kept here, pending, and written
 *   - in the same transaction as the mount's next rename in that store
 *     (lazy_begin/lazy_end: a batch), so a message never lands under its
 *     final name without the attributes set before the rename;
 *   - before any other write of the mount to that store (lazy_flush), so
 *     the store sees the mount's changes in the order they were made;
 *   - before fsync, fsyncdir and moves, and at unmount;
 *   - by this file's thread, at most about LAZY_DELAY_US after it was set.
 * Meanwhile every answer of the mount (getattr, lookup, readdirplus)
 * shows it (lazy_overlay).  A daemon killed in that window loses the mode,
 * owner or times just set on those messages, never their bytes, names or
 * flags, and another process reading the store sees them that much later:
 * the bargain a page cache makes for metadata, durable after fsync.
 */
#include "fs.h"

#include <errno.h>
#include <string.h>

/* A setattr this soon after the mount committed the message is deferred. */
#define LAZY_FRESH_US (1 * G_TIME_SPAN_SECOND)
/* A deferred setattr is written within about this long. */
#define LAZY_DELAY_US (100 * G_TIME_SPAN_MILLISECOND)
/* The thread wakes no more often than this. */
#define LAZY_TICK_US (25 * G_TIME_SPAN_MILLISECOND)

typedef struct lazy_entry {
    size_t sidx;
    ms_node node;
    /* The message as the mount shows it: the commit's attributes with
     * req laid over them. */
    ms_attr attr;
    ms_setattr_req req;   /* pending; mask 0 when nothing is */
    uint64_t gen;         /* counts changes of req: a flush settles only what it wrote */
    int64_t committed_us; /* monotonic: when the mount committed the message */
    int64_t pending_us;   /* monotonic: when req became nonzero */
} lazy_entry;

struct mfs_lazy {
    /* A GMutex, not an ms_mutex: the thread waits on cond with it. */
    GMutex lock;         /* guards every field below but thread */
    GCond cond;          /* an entry was added, or stop was set */
    GHashTable *entries; /* fuse_ino_t -> lazy_entry*, freed with it */
    /* Per store, the inos whose entry has a nonzero req: a flush visits
     * those, not every message closed in the last second. */
    GHashTable **pending;
    gint npending; /* their sum; atomic, read without lock */
    bool running;  /* the thread is there: entries are recorded */
    bool stop;
    /* Monotonic time the thread sleeps until (G_MAXINT64: until signalled).
     * Adding an entry or a pending setattr signals only when the thread
     * would otherwise sleep past what it must do: a signal per close woke
     * it to walk every entry, 4% of the daemon during rsync. */
    int64_t wake_at;
    GThread *thread; /* only lazy_start and lazy_free touch it */
};

/* One deferred setattr taken out to be written. */
typedef struct lazy_item {
    fuse_ino_t ino;
    ms_node node;
    ms_setattr_req req;
    uint64_t gen;
} lazy_item;

static void apply_req(ms_attr *a, const ms_setattr_req *r)
{
    if (r->mask & MS_SET_MODE)
        a->mode = r->mode & 07777;
    if (r->mask & MS_SET_UID)
        a->uid = r->uid;
    if (r->mask & MS_SET_GID)
        a->gid = r->gid;
    if (r->mask & MS_SET_MTIME)
        a->mtime_ns = r->mtime_ns;
}

static void merge_req(ms_setattr_req *into, const ms_setattr_req *r)
{
    into->mask |= r->mask;
    if (r->mask & MS_SET_MODE)
        into->mode = r->mode;
    if (r->mask & MS_SET_UID)
        into->uid = r->uid;
    if (r->mask & MS_SET_GID)
        into->gid = r->gid;
    if (r->mask & MS_SET_MTIME)
        into->mtime_ns = r->mtime_ns;
}

static gpointer key(fuse_ino_t ino) { return (gpointer)(uintptr_t)ino; }

void lazy_new(mfs *m)
{
    mfs_lazy *lz = g_new0(mfs_lazy, 1);
    g_mutex_init(&lz->lock);
    g_cond_init(&lz->cond);
    lz->entries = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
    lz->pending = g_new0(GHashTable *, m->nstores ? m->nstores : 1);
    for (size_t s = 0; s < m->nstores; s++)
        lz->pending[s] = g_hash_table_new(g_direct_hash, g_direct_equal);
    m->lazy = lz;
}

/* Copies the pending setattrs of store s, or returns NULL when none. */
static GArray *take_pending(mfs *m, size_t s)
{
    mfs_lazy *lz = m->lazy;
    if (!lz || g_atomic_int_get(&lz->npending) == 0)
        return NULL;
    GArray *items = NULL;
    g_mutex_lock(&lz->lock);
    if (g_hash_table_size(lz->pending[s])) {
        items = g_array_new(FALSE, FALSE, sizeof(lazy_item));
        GHashTableIter it;
        gpointer k;
        g_hash_table_iter_init(&it, lz->pending[s]);
        while (g_hash_table_iter_next(&it, &k, NULL)) {
            lazy_entry *e = g_hash_table_lookup(lz->entries, k);
            lazy_item item = {(fuse_ino_t)(uintptr_t)k, e->node, e->req, e->gen};
            g_array_append_val(items, item);
        }
    }
    g_mutex_unlock(&lz->lock);
    return items;
}

/* Writes the items to store s, each alone: one refused (its mailbox locked
 * by a move meanwhile) does not stop the others. */
static void write_items(mfs *m, size_t s, GArray *items)
{
    for (guint i = 0; i < items->len; i++) {
        lazy_item *it = &g_array_index(items, lazy_item, i);
        int rc = ms_setattr(m->stores[s], it->node, &it->req, NULL);
        if (rc && rc != -ENOENT) /* gone meanwhile: nothing to keep */
            ms_log(LOG_WARNING, "store %s: mode, owner or times set on message %lld not kept: %s",
                   ms_store_name(m->stores[s]), (long long)it->node.id, g_strerror(-rc));
    }
}

/* The items are in the store (or never will be): they stop being pending,
 * unless set again meanwhile. */
static void settle(mfs *m, size_t s, GArray *items)
{
    mfs_lazy *lz = m->lazy;
    g_mutex_lock(&lz->lock);
    for (guint i = 0; i < items->len; i++) {
        lazy_item *it = &g_array_index(items, lazy_item, i);
        lazy_entry *e = g_hash_table_lookup(lz->entries, key(it->ino));
        if (e && e->gen == it->gen && e->req.mask) {
            e->req.mask = 0;
            g_hash_table_remove(lz->pending[s], key(it->ino));
            g_atomic_int_add(&lz->npending, -1);
        }
    }
    g_mutex_unlock(&lz->lock);
    g_array_free(items, TRUE);
}

void lazy_flush(mfs *m, size_t s)
{
    GArray *items = take_pending(m, s);
    if (!items)
        return;
    bool batched = ms_batch_begin(m->stores[s]) == 0;
    write_items(m, s, items);
    if (batched) {
        int rc = ms_batch_end(m->stores[s], true);
        if (rc)
            ms_log(LOG_WARNING, "store %s: mode, owner or times of %u messages not kept: %s",
                   ms_store_name(m->stores[s]), items->len, g_strerror(-rc));
    }
    settle(m, s, items);
}

void lazy_flush_all(mfs *m)
{
    for (size_t s = 0; s < m->nstores; s++)
        lazy_flush(m, s);
}

lazy_batch lazy_begin(mfs *m, size_t s)
{
    lazy_batch b = {.items = take_pending(m, s)};
    if (!b.items)
        return b;
    b.batched = ms_batch_begin(m->stores[s]) == 0;
    write_items(m, s, b.items);
    return b;
}

int lazy_end(mfs *m, size_t s, lazy_batch *b, int rc)
{
    if (!b->items)
        return rc;
    if (b->batched) {
        int erc = ms_batch_end(m->stores[s], true);
        if (erc) {
            ms_log(LOG_WARNING, "store %s: mode, owner or times of %u messages not kept: %s",
                   ms_store_name(m->stores[s]), b->items->len, g_strerror(-erc));
            if (!rc)
                rc = erc; /* the write folded into the batch is lost too */
        }
    }
    settle(m, s, b->items);
    b->items = NULL;
    return rc;
}

void lazy_committed(mfs *m, fuse_ino_t ino, size_t s, const ms_attr *a)
{
    mfs_lazy *lz = m->lazy;
    if (!lz || !ms_store_groups_writes(m->stores[s]))
        return;
    g_mutex_lock(&lz->lock);
    if (lz->running) {
        lazy_entry *e = g_hash_table_lookup(lz->entries, key(ino));
        if (!e) {
            e = g_new0(lazy_entry, 1);
            g_hash_table_insert(lz->entries, key(ino), e);
            if (lz->wake_at == G_MAXINT64)
                g_cond_signal(&lz->cond); /* it must drop the entry some day */
        }
        e->sidx = s;
        e->node = a->node;
        e->attr = *a;
        apply_req(&e->attr, &e->req); /* set while its writer was open but clean */
        e->committed_us = g_get_monotonic_time();
    }
    g_mutex_unlock(&lz->lock);
}

bool lazy_setattr(mfs *m, fuse_ino_t ino, const ms_setattr_req *r, ms_attr *out)
{
    mfs_lazy *lz = m->lazy;
    if (!lz)
        return false;
    g_mutex_lock(&lz->lock);
    lazy_entry *e = g_hash_table_lookup(lz->entries, key(ino));
    int64_t now = g_get_monotonic_time();
    bool taken = e && lz->running && now - e->committed_us < LAZY_FRESH_US;
    if (taken) {
        if (!e->req.mask) {
            e->pending_us = now;
            g_hash_table_add(lz->pending[e->sidx], key(ino));
            g_atomic_int_inc(&lz->npending);
            if (lz->wake_at > now + LAZY_DELAY_US)
                g_cond_signal(&lz->cond); /* due before the thread's next look */
        }
        merge_req(&e->req, r);
        e->gen++;
        apply_req(&e->attr, r);
        e->attr.ctime_ns = ms_now_ns();
        *out = e->attr;
    }
    g_mutex_unlock(&lz->lock);
    return taken;
}

void lazy_overlay(mfs *m, fuse_ino_t ino, ms_attr *a)
{
    mfs_lazy *lz = m->lazy;
    if (!lz || g_atomic_int_get(&lz->npending) == 0)
        return;
    g_mutex_lock(&lz->lock);
    lazy_entry *e = g_hash_table_lookup(lz->entries, key(ino));
    if (e && e->req.mask) {
        apply_req(a, &e->req);
        if (e->attr.ctime_ns > a->ctime_ns)
            a->ctime_ns = e->attr.ctime_ns;
    }
    g_mutex_unlock(&lz->lock);
}

void lazy_forget(mfs *m, fuse_ino_t ino, size_t s)
{
    mfs_lazy *lz = m->lazy;
    if (!lz)
        return;
    lazy_flush(m, s);
    g_mutex_lock(&lz->lock);
    lazy_entry *e = g_hash_table_lookup(lz->entries, key(ino));
    if (e && !e->req.mask) /* set again meanwhile: the thread writes it */
        g_hash_table_remove(lz->entries, key(ino));
    g_mutex_unlock(&lz->lock);
}

/*
 * Writes what has been pending for LAZY_DELAY_US and drops entries past
 * LAZY_FRESH_US; sleeps while there are none.  Called with lz->lock held;
 * returns with it held.
 */
static void lazy_tick(mfs *m)
{
    mfs_lazy *lz = m->lazy;
    int64_t now = g_get_monotonic_time(), next = G_MAXINT64;
    bool *due = g_new0(bool, m->nstores ? m->nstores : 1);
    bool any = false;
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, lz->entries);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        lazy_entry *e = v;
        int64_t t = e->req.mask ? e->pending_us + LAZY_DELAY_US : e->committed_us + LAZY_FRESH_US;
        if (t > now)
            /* An entry past its freshness is harmless (lazy_setattr
             * checks the age itself): dropped at a coarse pace, so that a
             * stream of closes does not wake this thread for each. */
            next = MIN(next, e->req.mask ? t : MAX(t, now + LAZY_FRESH_US / 2));
        else if (e->req.mask)
            any = due[e->sidx] = true;
        else
            g_hash_table_iter_remove(&it);
    }
    if (any) {
        g_mutex_unlock(&lz->lock);
        for (size_t s = 0; s < m->nstores; s++)
            if (due[s])
                lazy_flush(m, s);
        g_mutex_lock(&lz->lock);
    } else if (next == G_MAXINT64) {
        lz->wake_at = G_MAXINT64;
        g_cond_wait(&lz->cond, &lz->lock);
    } else {
        lz->wake_at = MAX(next, now + LAZY_TICK_US);
        g_cond_wait_until(&lz->cond, &lz->lock, lz->wake_at);
    }
    g_free(due);
}

static gpointer lazy_thread(gpointer p)
{
    mfs *m = p;
    mfs_lazy *lz = m->lazy;
    g_mutex_lock(&lz->lock);
    while (!lz->stop)
        lazy_tick(m);
    g_mutex_unlock(&lz->lock);
    return NULL;
}

void lazy_start(mfs *m)
{
    mfs_lazy *lz = m->lazy;
    g_mutex_lock(&lz->lock);
    lz->running = true;
    g_mutex_unlock(&lz->lock);
    lz->thread = g_thread_new("lazy", lazy_thread, m);
}

void lazy_free(mfs *m)
{
    mfs_lazy *lz = m->lazy;
    if (!lz)
        return;
    if (lz->thread) {
        g_mutex_lock(&lz->lock);
        lz->stop = true;
        lz->running = false; /* nothing new is deferred from here on */
        g_cond_signal(&lz->cond);
        g_mutex_unlock(&lz->lock);
        g_thread_join(lz->thread);
    }
    lazy_flush_all(m);
    m->lazy = NULL;
    g_hash_table_destroy(lz->entries);
    for (size_t s = 0; s < m->nstores; s++)
        g_hash_table_destroy(lz->pending[s]);
    g_free(lz->pending);
    g_cond_clear(&lz->cond);
    g_mutex_clear(&lz->lock);
    g_free(lz);
}
