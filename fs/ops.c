/*
 * ops.c — FUSE low-level operations, translated into store calls.
 *
 * No SQL here, and no knowledge of any backend: every answer comes from
 * the store API.  Caching policy: messages are immutable except through
 * this mount, so their entries and attributes are cached for an hour and
 * their pages are kept across opens; directories are cached for one
 * second, so that mailboxes and folders made by mailfsctl show up
 * promptly.  Listings are never cached: a delivery is visible at once.
 */
#include "fs.h"

#include <errno.h>
#include <stdio.h> /* RENAME_NOREPLACE, RENAME_EXCHANGE */
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>

#define MSG_TIMEOUT 3600.0
#define DIR_TIMEOUT 1.0

/*
 * A message open for writing: one writer per inode, shared by its fds.
 * Lock order: m->lock, then lock.  Nobody waits for lock while holding
 * m->lock: the first open copies the message into w under lock (an
 * append to a 200 MB message), and that must not stall the mount.
 */
typedef struct mfs_file {
    ms_mutex lock; /* guards w, open_rc, known, known_valid and every use of w */
    ms_writer *w;  /* NULL while the first open makes it, or if that failed */
    int open_rc;   /* why the first open failed */
    int refs;      /* guarded by m->lock: handles, and threads using it */
    /* A message this mount just created: its attributes as the create
     * left them, so that the getattr and setattrs a copy sends before its
     * close are answered without a store read (attr_of).  Dropped by any
     * change made to the message some other way (file_forget_known). */
    ms_attr known;
    bool known_valid;
} mfs_file;

/*
 * Every open message, so that stat(2) of one unlinked while open answers
 * with the attributes it had (nlink 0) instead of ENOENT.
 */
typedef struct mfs_opened {
    int count;
    ms_attr attr;
} mfs_opened;

/* What fi->fh points to for an open message. */
typedef struct mfs_handle {
    ms_store *st;
    size_t sidx;
    fuse_ino_t ino;
    ms_reader *r;    /* read-only opens */
    mfs_file *f;     /* opens for writing */
    bool registered; /* counted in m->opens */
} mfs_handle;

static mfs *M(fuse_req_t req) { return fuse_req_userdata(req); }

/* ------------------------------------------------------------ inodes */

static fuse_ino_t ino_of(size_t sidx, ms_node n)
{
    return ((uint64_t)(n.kind + 1) << 60) | ((uint64_t)sidx << MFS_ID_BITS) | (uint64_t)n.id;
}

/*
 * Decodes ino into its store and node.  False for the mount's root (and
 * for numbers this mount never handed out).
 */
static bool node_of(mfs *m, fuse_ino_t ino, size_t *sidx, ms_node *n)
{
    if (ino == FUSE_ROOT_ID)
        return false;
    unsigned kind = (unsigned)(ino >> 60);
    size_t s = (size_t)((ino >> MFS_ID_BITS) & 0xfff);
    if (kind < 1 || kind > MS_MESSAGE + 1 || s >= m->nstores)
        return false;
    *sidx = s;
    n->kind = (ms_kind)(kind - 1);
    n->id = (int64_t)(ino & ((UINT64_C(1) << MFS_ID_BITS) - 1));
    return true;
}

/* ------------------------------------------------------- attributes */

/* ns since the epoch as a timespec; before 1970 too (tv_nsec stays in
 * [0, 1e9), as the kernel wants it). */
static struct timespec ts_of(int64_t ns)
{
    int64_t sec = ns / 1000000000, nsec = ns % 1000000000;
    if (nsec < 0) {
        sec--;
        nsec += 1000000000;
    }
    return (struct timespec){.tv_sec = (time_t)sec, .tv_nsec = (long)nsec};
}

static void fill_stat(mfs *m, size_t sidx, const ms_attr *a, struct stat *sb)
{
    (void)m; /* once the source of unset times; the store has them all now */
    memset(sb, 0, sizeof *sb);
    sb->st_ino = ino_of(sidx, a->node);
    bool dir = a->node.kind != MS_MESSAGE;
    sb->st_mode = (dir ? S_IFDIR : S_IFREG) | (a->mode & 07777);
    /* 1 for directories: "subdirectory count unknown", so find(1) never
     * skips a directory on the old nlink == 2 heuristic. */
    sb->st_nlink = 1;
    sb->st_uid = a->uid;
    sb->st_gid = a->gid;
    sb->st_size = dir ? 4096 : a->size; /* what ext4 shows; tools expect it */
    sb->st_blksize = 128 * 1024;
    sb->st_blocks = (a->size + 511) / 512;
    /* Every time is the store's, 0 and before 1970 included: none means
     * "unset".  atime is not kept (mail has no use for it). */
    sb->st_mtim = ts_of(a->mtime_ns);
    sb->st_atim = sb->st_mtim;
    sb->st_ctim = ts_of(a->ctime_ns);
}

static void fill_top(mfs *m, fuse_ino_t ino, struct stat *sb)
{
    memset(sb, 0, sizeof *sb);
    sb->st_ino = ino;
    sb->st_mode = S_IFDIR | 0755;
    sb->st_nlink = 1;
    sb->st_uid = m->uid;
    sb->st_gid = m->gid;
    sb->st_size = 4096;
    sb->st_blksize = 4096;
    ms_mutex_lock(&m->lock);
    int64_t t = m->top_mtime_ns;
    ms_mutex_unlock(&m->lock);
    sb->st_mtim.tv_sec = t / 1000000000;
    sb->st_mtim.tv_nsec = t % 1000000000;
    sb->st_atim = sb->st_ctim = sb->st_mtim;
}

/* A store's directory changes only through this mount (setattr), whose
 * replies refresh the kernel's copy: cached as long as a message.  A
 * store that others change too (a mail server's Maildir: a flag set, a
 * message expunged) is cached no longer than a directory. */
static double timeout_of(const ms_store *st, ms_kind k)
{
    if (st && ms_store_shared(st) && k == MS_MESSAGE)
        return DIR_TIMEOUT;
    return k == MS_MESSAGE || k == MS_ROOT ? MSG_TIMEOUT : DIR_TIMEOUT;
}

/* The directory of store i (MOUNT/<store>), with the store's attributes. */
static int store_stat(mfs *m, size_t i, struct stat *sb)
{
    ms_attr a;
    int rc = ms_getattr(m->stores[i], (ms_node){MS_ROOT, 0}, &a);
    if (!rc)
        fill_stat(m, i, &a, sb);
    return rc;
}

static void fill_entry(mfs *m, size_t sidx, const ms_attr *a, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    fill_stat(m, sidx, a, &e->attr);
    e->ino = e->attr.st_ino;
    e->attr_timeout = e->entry_timeout = timeout_of(m->stores[sidx], a->node.kind);
}

/* f, counted as used by one more handle or thread; m->lock held. */
static mfs_file *file_ref_locked(mfs *m, mfs_file *f)
{
    ms_mutex_assert_held(&m->lock);
    if (f)
        f->refs++;
    return f;
}

/*
 * Drops one use of ino's writer f; the last one frees it (a create that
 * never committed is forgotten).  Called without f->lock.
 */
static void file_unref(mfs *m, fuse_ino_t ino, mfs_file *f)
{
    ms_mutex_lock(&m->lock);
    bool last = --f->refs == 0;
    gpointer k = (gpointer)(uintptr_t)ino;
    if (last && g_hash_table_lookup(m->files, k) == f)
        g_hash_table_remove(m->files, k);
    ms_mutex_unlock(&m->lock);
    if (!last)
        return;
    ms_mutex_clear(&f->lock);
    ms_writer_close(f->w);
    g_free(f);
}

/*
 * The writer of an inode being written, locked, or NULL.  It holds a
 * reference, so it stays while this thread waits for f->lock outside
 * m->lock; release it with file_unlock.
 */
static mfs_file *file_lock(mfs *m, fuse_ino_t ino)
{
    ms_mutex_lock(&m->lock);
    mfs_file *f = file_ref_locked(m, g_hash_table_lookup(m->files, (gpointer)(uintptr_t)ino));
    ms_mutex_unlock(&m->lock);
    if (!f)
        return NULL;
    ms_mutex_lock(&f->lock);
    if (f->w)
        return f;
    ms_mutex_unlock(&f->lock); /* its first open failed */
    file_unref(m, ino, f);
    return NULL;
}

static void file_unlock(mfs *m, fuse_ino_t ino, mfs_file *f)
{
    ms_mutex_unlock(&f->lock);
    file_unref(m, ino, f);
}

/* Attributes of a node; a message being written shows what it will be. */
static int attr_of(mfs *m, fuse_ino_t ino, size_t sidx, ms_node n, ms_attr *a)
{
    mfs_file *f = n.kind == MS_MESSAGE ? file_lock(m, ino) : NULL;
    int rc = 0;
    if (f && f->known_valid && ms_writer_dirty(f->w))
        *a = f->known; /* created here, not committed yet: nobody else changed it */
    else
        rc = ms_getattr(m->stores[sidx], n, a);
    if (!rc && f)
        ms_writer_overlay(f->w, a);
    if (f)
        file_unlock(m, ino, f);
    if (!rc && n.kind == MS_MESSAGE)
        lazy_overlay(m, ino, a);
    return rc;
}

/* The message ino was changed other than through its writer (or
 * committed): its attributes come from the store again. */
static void file_forget_known(mfs *m, fuse_ino_t ino)
{
    mfs_file *f = file_lock(m, ino);
    if (f) {
        f->known_valid = false;
        file_unlock(m, ino, f);
    }
}

/* --------------------------------------------------------- namespace */

static void mfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    mfs *m = M(req);
    struct fuse_entry_param e;
    if (parent == FUSE_ROOT_ID) {
        for (size_t i = 0; i < m->nstores; i++) {
            if (!strcmp(ms_store_name(m->stores[i]), name)) {
                memset(&e, 0, sizeof e);
                int rc = store_stat(m, i, &e.attr);
                if (rc) {
                    fuse_reply_err(req, -rc);
                    return;
                }
                e.ino = e.attr.st_ino;
                e.attr_timeout = e.entry_timeout = MSG_TIMEOUT;
                fuse_reply_entry(req, &e);
                return;
            }
        }
        fuse_reply_err(req, ENOENT);
        return;
    }
    size_t s;
    ms_node n;
    if (!node_of(m, parent, &s, &n)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    ms_attr a;
    int rc = ms_lookup(m->stores[s], n, name, &a);
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    if (a.node.kind == MS_MESSAGE)
        lazy_overlay(m, ino_of(s, a.node), &a);
    fill_entry(m, s, &a, &e);
    fuse_reply_entry(req, &e);
}

static mfs_handle *H(struct fuse_file_info *fi) { return (mfs_handle *)(uintptr_t)fi->fh; }

static void mfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    mfs *m = M(req);
    struct stat sb;
    size_t s;
    ms_node n;
    if (!node_of(m, ino, &s, &n)) {
        if (ino != FUSE_ROOT_ID) {
            fuse_reply_err(req, ENOENT);
            return;
        }
        fill_top(m, ino, &sb);
        fuse_reply_attr(req, &sb, DIR_TIMEOUT);
        return;
    }
    ms_attr a;
    int rc = attr_of(m, ino, s, n, &a);
    if (!rc && n.kind == MS_MAILBOX) {
        /*
         * Hidden meanwhile: gone from here, but for the source of a move.
         * The kernel moved the mailbox's dentry (and a cwd) along with the
         * rename, still naming this inode until forget_moved_entry drops
         * it; meanwhile it reads as the retained copy, which is what moved
         * (its writes get ESTALE), rather than vanishing under `cd X`.
         */
        ms_mailbox_info info;
        rc = ms_mailbox_get_info(m->stores[s], n.id, &info);
        if (!rc && info.state != MS_MB_VISIBLE && info.state != MS_MB_RETAINED)
            rc = -ENOENT;
    }
    if (rc == -ENOENT && n.kind == MS_MESSAGE) {
        /* An open message unlinked meanwhile: the kernel still has it. */
        ms_mutex_lock(&m->lock);
        mfs_opened *o = g_hash_table_lookup(m->opens, (gpointer)(uintptr_t)ino);
        if (o) {
            fill_stat(m, s, &o->attr, &sb);
            sb.st_nlink = 0;
        }
        ms_mutex_unlock(&m->lock);
        if (o) {
            fuse_reply_attr(req, &sb, 0);
            return;
        }
    }
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    fill_stat(m, s, &a, &sb);
    fuse_reply_attr(req, &sb, timeout_of(m->stores[s], n.kind));
}

/*
 * ts in ns since the epoch, or -EOVERFLOW outside what the store keeps
 * (int64 ns: 1677-09-21 to 2262-04-11): refused, never wrapped.
 */
static int ts_ns(const struct timespec *ts, int64_t *out)
{
    int64_t sec = ts->tv_sec, nsec = ts->tv_nsec, ns;
    if (sec < 0 && nsec > 0) {
        /* The earliest time (INT64_MIN ns) is a negative second plus a
         * positive fraction: multiply the second nearer to zero. */
        sec++;
        nsec -= 1000000000;
    }
    if (__builtin_mul_overflow(sec, INT64_C(1000000000), &ns) ||
        __builtin_add_overflow(ns, nsec, &ns))
        return -EOVERFLOW;
    *out = ns;
    return 0;
}

/* Size changes go through a writer: the store has no partial updates. */
static int truncate_message(mfs *m, fuse_ino_t ino, size_t s, int64_t id, off_t size)
{
    lazy_forget(m, ino, s);
    mfs_file *f = file_lock(m, ino);
    int rc;
    if (f) {
        rc = ms_writer_truncate(f->w, size);
        file_unlock(m, ino, f);
        return rc;
    }
    ms_writer *w;
    rc = ms_writer_open(m->stores[s], id, size == 0, &w);
    if (rc)
        return rc;
    rc = ms_writer_truncate(w, size);
    if (!rc)
        rc = ms_writer_commit(w, false, NULL);
    ms_writer_close(w);
    return rc;
}

/*
 * True when setattr would change the mode, owner or size of the mount's
 * top directory, which has no store to keep them in: refused rather than
 * forgotten.  Its mtime is the mount time, kept in memory when set, so
 * that tar -x and rsync -a of a backup of the whole mount (which set the
 * top's mtime) succeed.  atime and ctime are kept for no node.
 */
static bool top_refuses(mfs *m, const struct stat *attr, int to_set)
{
    struct stat top;
    fill_top(m, FUSE_ROOT_ID, &top);
    if (to_set & FUSE_SET_ATTR_SIZE)
        return true;
    if ((to_set & FUSE_SET_ATTR_MODE) && (attr->st_mode & 07777) != (top.st_mode & 07777))
        return true;
    if ((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != top.st_uid)
        return true;
    return (to_set & FUSE_SET_ATTR_GID) && attr->st_gid != top.st_gid;
}

/* Sets the top's mtime, kept in the site's journal so that it outlives the mount. */
static int top_set_mtime(mfs *m, const struct stat *attr, int to_set)
{
    if (!(to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)))
        return 0;
    int64_t t = ms_now_ns();
    int rc = to_set & FUSE_SET_ATTR_MTIME_NOW ? 0 : ts_ns(&attr->st_mtim, &t);
    if (!rc)
        rc = ms_journal_attr_set(m->journal, "top.mtime_ns", t);
    if (rc)
        return rc;
    ms_mutex_lock(&m->lock);
    m->top_mtime_ns = t;
    ms_mutex_unlock(&m->lock);
    return 0;
}

static void mfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                        struct fuse_file_info *fi)
{
    (void)fi;
    mfs *m = M(req);
    size_t s;
    ms_node n;
    if (!node_of(m, ino, &s, &n)) {
        /* The top: a change of mode or owner would be forgotten at once,
         * so it is refused (EPERM); setting what it already has succeeds. */
        if (ino != FUSE_ROOT_ID || top_refuses(m, attr, to_set)) {
            fuse_reply_err(req, ino == FUSE_ROOT_ID ? EPERM : ENOENT);
            return;
        }
        int trc = top_set_mtime(m, attr, to_set);
        if (trc) {
            fuse_reply_err(req, -trc);
            return;
        }
        struct stat sb;
        fill_top(m, ino, &sb);
        fuse_reply_attr(req, &sb, DIR_TIMEOUT);
        return;
    }
    int rc = 0;
    ms_setattr_req r = {0};
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
        r.mask |= MS_SET_MTIME;
        r.mtime_ns = ms_now_ns();
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
        r.mask |= MS_SET_MTIME;
        rc = ts_ns(&attr->st_mtim, &r.mtime_ns);
    }
    if (rc) { /* before anything changed: all of the request or none */
        fuse_reply_err(req, -rc);
        return;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        rc = n.kind == MS_MESSAGE ? truncate_message(m, ino, s, n.id, attr->st_size) : -EISDIR;
        if (rc) {
            fuse_reply_err(req, -rc);
            return;
        }
    }
    if (to_set & FUSE_SET_ATTR_MODE) {
        r.mask |= MS_SET_MODE;
        r.mode = attr->st_mode & 07777;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        r.mask |= MS_SET_UID;
        r.uid = attr->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        r.mask |= MS_SET_GID;
        r.gid = attr->st_gid;
    }
    /* atime is not kept (mail has no use for it); the store moves ctime. */
    ms_attr a;
    bool have = false;
    if (r.mask) {
        bool pending = false;
        if (n.kind == MS_MESSAGE) {
            mfs_file *f = file_lock(m, ino);
            if (f) {
                if (ms_writer_dirty(f->w)) {
                    ms_writer_setattr(f->w, &r); /* lands with the commit at close */
                    pending = true;
                }
                file_unlock(m, ino, f);
            }
        }
        /* Just after this mount's close of it (rsync's chmod and
         * utimensat): written with the next write (lazy.c). */
        if (!pending && n.kind == MS_MESSAGE && !(to_set & FUSE_SET_ATTR_SIZE))
            pending = have = lazy_setattr(m, ino, &r, &a);
        if (!pending) {
            if (n.kind == MS_MESSAGE)
                file_forget_known(m, ino);
            lazy_flush(m, s);
            /* The store says what it now has: no second read (a writer
             * open without changes has nothing to lay over it). */
            rc = ms_setattr(m->stores[s], n, &r, &a);
            have = rc == 0;
        }
    }
    if (!rc && !have)
        rc = attr_of(m, ino, s, n, &a);
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    struct stat sb;
    fill_stat(m, s, &a, &sb);
    fuse_reply_attr(req, &sb, timeout_of(m->stores[s], n.kind));
}

/* --------------------------------------------------------- listings */

typedef struct dirbuf {
    fuse_req_t req;
    mfs *m;
    size_t sidx;
    bool plus;
    char *buf;
    size_t size, used;
} dirbuf;

/* Adds one entry; false when the reply buffer is full. */
static bool dir_add(dirbuf *d, const char *name, const struct stat *sb, double timeout, off_t off)
{
    size_t n;
    if (d->plus) {
        struct fuse_entry_param e = {.ino = sb->st_ino, .attr = *sb};
        e.attr_timeout = e.entry_timeout = timeout;
        n = fuse_add_direntry_plus(d->req, d->buf + d->used, d->size - d->used, name, &e, off);
    } else {
        n = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name, sb, off);
    }
    if (n > d->size - d->used)
        return false;
    d->used += n;
    return true;
}

static int dir_add_child(void *ctx, const char *name, const ms_attr *a, uint64_t cookie)
{
    dirbuf *d = ctx;
    struct stat sb;
    ms_attr shown;
    if (a->node.kind == MS_MESSAGE) { /* a setattr deferred shows at once */
        shown = *a;
        lazy_overlay(d->m, ino_of(d->sidx, a->node), &shown);
        a = &shown;
    }
    fill_stat(d->m, d->sidx, a, &sb);
    /* Offsets 1 and 2 are "." and ".."; children follow. */
    return dir_add(d, name, &sb, timeout_of(d->m->stores[d->sidx], a->node.kind),
                   (off_t)(cookie + 2))
               ? 0
               : 1;
}

/* "." and "..": offsets 1 and 2.  Their attributes are never cached
 * (readdirplus skips them), so a bare mode is enough. */
static bool dir_add_dots(dirbuf *d, fuse_ino_t ino, off_t off)
{
    struct stat sb = {.st_ino = ino, .st_mode = S_IFDIR};
    if (off < 1 && !dir_add(d, ".", &sb, 0, 1))
        return false;
    if (off < 2 && !dir_add(d, "..", &sb, 0, 2))
        return false;
    return true;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
    mfs *m = M(req);
    dirbuf d = {.req = req, .m = m, .plus = plus, .size = size};
    d.buf = g_malloc(size);
    size_t s;
    ms_node n;
    int rc = 0;
    if (!dir_add_dots(&d, ino, off)) {
        /* nothing more fits */
    } else if (ino == FUSE_ROOT_ID) {
        for (size_t i = off > 2 ? (size_t)off - 2 : 0; i < m->nstores; i++) {
            struct stat sb;
            if ((rc = store_stat(m, i, &sb)) != 0)
                break;
            if (!dir_add(&d, ms_store_name(m->stores[i]), &sb, MSG_TIMEOUT, (off_t)i + 3))
                break;
        }
    } else if (node_of(m, ino, &s, &n)) {
        d.sidx = s;
        rc = ms_list(m->stores[s], n, off > 2 ? (uint64_t)off - 2 : 0, dir_add_child, &d);
    } else {
        rc = -ENOENT;
    }
    if (rc && d.used == 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_buf(req, d.buf, d.used);
    g_free(d.buf);
}

static void mfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                        struct fuse_file_info *fi)
{
    (void)fi;
    do_readdir(req, ino, size, off, false);
}

static void mfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                            struct fuse_file_info *fi)
{
    (void)fi;
    do_readdir(req, ino, size, off, true);
}

/* ----------------------------------------------------- directories */

/*
 * The mode of a new message, folder or mailbox: private (no group or
 * other bits) whatever the creator's umask, since mail is personal.  An
 * explicit chmod afterwards keeps any mode, which is what cp -a, rsync -a
 * and tar do, so copied trees keep theirs.
 */
static uint32_t private_mode(const struct fuse_ctx *ctx, mode_t mode)
{
    return (uint32_t)(mode & ~ctx->umask & ~(mode_t)077 & 07777);
}

/*
 * Resolves a parent directory for a change: the store and node, or an
 * errno.  The mount's root holds only the configured stores: EPERM.
 */
static int parent_of(mfs *m, fuse_ino_t parent, size_t *s, ms_node *n)
{
    if (parent == FUSE_ROOT_ID)
        return -EPERM;
    if (!node_of(m, parent, s, n))
        return -ENOENT;
    return 0;
}

static void mfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    mfs *m = M(req);
    size_t s;
    ms_node n;
    int rc = parent_of(m, parent, &s, &n);
    ms_attr a;
    if (!rc) {
        const struct fuse_ctx *ctx = fuse_req_ctx(req);
        lazy_flush(m, s);
        rc = ms_mkdir(m->stores[s], n, name, private_mode(ctx, mode), ctx->uid, ctx->gid, &a);
    }
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    struct fuse_entry_param e;
    fill_entry(m, s, &a, &e);
    fuse_reply_entry(req, &e);
}

static void mfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    mfs *m = M(req);
    size_t s;
    ms_node n;
    int rc = parent_of(m, parent, &s, &n);
    if (!rc) {
        lazy_flush(m, s);
        rc = ms_rmdir(m->stores[s], n, name);
    }
    fuse_reply_err(req, -rc);
}

static void mfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    mfs *m = M(req);
    size_t s;
    ms_node n;
    int rc = parent_of(m, parent, &s, &n);
    if (!rc && n.kind == MS_FOLDER) {
        /* What was set on it before goes with it into deleted items. */
        lazy_batch b = lazy_begin(m, s);
        rc = lazy_end(m, s, &b, ms_unlink(m->stores[s], n, name));
    } else if (!rc) {
        rc = -EPERM;
    }
    fuse_reply_err(req, -rc);
}

static bool req_interrupted(void *ctx) { return fuse_req_interrupted(ctx); }

/*
 * mv of a mailbox directory into another store: the move engine, run in
 * this request (mv blocks until it committed or rolled back).  ^C on mv
 * arrives as a FUSE interrupt, which cancels and rolls back.
 */
static int move_mailbox(fuse_req_t req, mfs *m, size_t s, const char *name, size_t ns,
                        const char *newname)
{
    ms_move_opts o = {.newname = newname,
                      .retain_days = ms_config_retain_days(m->cfg),
                      .dir = m->dir,
                      .kick = ms_config_kick(m->cfg),
                      .cancelled = req_interrupted,
                      .ctx = req};
    return ms_move(m->journal, m->stores[s], m->stores[ns], name, &o, NULL);
}

typedef struct inval {
    struct fuse_session *se;
    fuse_ino_t parent;
    char *name;
} inval;

static gpointer inval_entry(gpointer p)
{
    inval *iv = p;
    /* Blocks until the kernel has finished the rename (it holds the
     * parents' locks until then), so it drops the moved dentry. */
    fuse_lowlevel_notify_inval_entry(iv->se, iv->parent, iv->name, strlen(iv->name));
    g_free(iv->name);
    g_free(iv);
    return NULL;
}

/*
 * After a move the kernel moves its dentry, which still names the old
 * mailbox's inode, now the retained copy in the source store.  Dropping
 * the dentry makes the next lookup find the mailbox where it is now.  This
 * cannot run inside the rename request (the kernel holds the locks it
 * needs), so a thread does it once the reply is out.
 */
static void forget_moved_entry(mfs *m, fuse_ino_t newparent, const char *newname)
{
    inval *iv = g_new0(inval, 1);
    iv->se = m->se;
    iv->parent = newparent;
    iv->name = g_strdup(newname);
    g_thread_unref(g_thread_new("inval", inval_entry, iv));
}

/*
 * A rename across stores: a mailbox to store level is a move, a message
 * or folder into a folder crosses by copy and delete (EXDEV makes mv do
 * that).  Anything else would turn a mailbox into a folder or back, and
 * mv's copy would drop its ACL and escape the journal: EPERM, so that
 * EXDEV never reaches mv for a mailbox.
 */
static int rename_across(fuse_req_t req, mfs *m, size_t s, ms_node n, const char *name, size_t ns,
                         ms_node nn, const char *newname)
{
    if (n.kind == MS_ROOT && nn.kind == MS_ROOT)
        return move_mailbox(req, m, s, name, ns, newname);
    if (n.kind == MS_ROOT || nn.kind == MS_ROOT)
        return -EPERM;
    return -EXDEV;
}

static void mfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                       const char *newname, unsigned int flags)
{
    mfs *m = M(req);
    size_t s, ns;
    ms_node n, nn;
    int rc = parent_of(m, parent, &s, &n);
    if (!rc)
        rc = parent_of(m, newparent, &ns, &nn);
    if (!rc && (flags & RENAME_EXCHANGE))
        rc = -EINVAL; /* swapping two messages has no meaning in a store */
    if (!rc && s != ns) {
        lazy_flush(m, s); /* a move reads the store: it has all first */
        lazy_flush(m, ns);
        rc = rename_across(req, m, s, n, name, ns, nn, newname);
        fuse_reply_err(req, -rc);
        if (rc == 0 && n.kind == MS_ROOT)
            forget_moved_entry(m, newparent, newname);
        return;
    }
    if (!rc) {
        /* rsync's rename into place carries the chmod and utimensat it
         * sent after closing the file: one transaction for the three. */
        lazy_batch b = lazy_begin(m, s);
        rc = ms_rename(m->stores[s], n, name, nn, newname, flags & RENAME_NOREPLACE);
        rc = lazy_end(m, s, &b, rc);
    }
    fuse_reply_err(req, -rc);
}

/* ------------------------------------------------------------ files */

/* Counts h in m->opens, with the attributes a it has now. */
static void open_register(mfs *m, mfs_handle *h, const ms_attr *a)
{
    gpointer k = (gpointer)(uintptr_t)h->ino;
    ms_mutex_lock(&m->lock);
    mfs_opened *o = g_hash_table_lookup(m->opens, k);
    if (!o) {
        o = g_new0(mfs_opened, 1);
        g_hash_table_insert(m->opens, k, o);
    }
    o->count++;
    o->attr = *a;
    ms_mutex_unlock(&m->lock);
    h->registered = true;
}

static void open_unregister(mfs *m, mfs_handle *h)
{
    if (!h->registered)
        return;
    gpointer k = (gpointer)(uintptr_t)h->ino;
    ms_mutex_lock(&m->lock);
    mfs_opened *o = g_hash_table_lookup(m->opens, k);
    if (o && --o->count == 0) {
        g_hash_table_remove(m->opens, k);
        g_free(o);
    }
    ms_mutex_unlock(&m->lock);
}

static void handle_free(mfs *m, mfs_handle *h)
{
    open_unregister(m, h);
    ms_reader_close(h->r); /* frees bytes replaced or purged meanwhile */
    if (h->f)
        file_unref(m, h->ino, h->f);
    g_free(h);
}

/* Makes the inode's writer, f being new and locked: outside m->lock. */
static void file_fill(mfs_file *f, ms_store *st, ms_node n, bool truncate)
{
    ms_mutex_assert_held(&f->lock);
    f->open_rc = ms_writer_open(st, n.id, truncate, &f->w);
    if (f->open_rc)
        f->w = NULL;
}

/*
 * Attaches h to the inode's shared writer, making one if needed.  The
 * first open enters its writer in m->files at once, locked, and copies
 * the message into it after letting go of m->lock: a second open of the
 * inode waits for that writer (on f->lock) instead of making another,
 * and opens of other inodes do not wait at all.
 */
static int attach_writer(mfs *m, mfs_handle *h, ms_node n, bool truncate)
{
    gpointer k = (gpointer)(uintptr_t)h->ino;
    ms_mutex_lock(&m->lock);
    mfs_file *f = file_ref_locked(m, g_hash_table_lookup(m->files, k));
    bool first = !f;
    if (first) {
        f = g_new0(mfs_file, 1);
        ms_mutex_init(&f->lock);
        f->refs = 1;
        ms_mutex_lock(&f->lock); /* new: nobody else can hold it */
        g_hash_table_insert(m->files, k, f);
    }
    ms_mutex_unlock(&m->lock);
    int rc;
    if (first) {
        file_fill(f, h->st, n, truncate);
        rc = f->open_rc;
    } else {
        ms_mutex_lock(&f->lock);
        rc = f->w ? (truncate ? ms_writer_truncate(f->w, 0) : 0) : f->open_rc;
    }
    ms_mutex_unlock(&f->lock);
    if (rc && first) {
        /* Out of the table, so that the next open tries afresh. */
        ms_mutex_lock(&m->lock);
        if (g_hash_table_lookup(m->files, k) == f)
            g_hash_table_remove(m->files, k);
        ms_mutex_unlock(&m->lock);
    }
    if (rc)
        file_unref(m, h->ino, f);
    else
        h->f = f;
    return rc;
}

/* The reader owns its bytes (ms_reader_open): nothing to track here. */
static int attach_reader(mfs_handle *h, ms_node n) { return ms_reader_open(h->st, n.id, &h->r); }

static void mfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mfs *m = M(req);
    size_t s;
    ms_node n;
    if (!node_of(m, ino, &s, &n)) {
        fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
        return;
    }
    if (n.kind != MS_MESSAGE) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    mfs_handle *h = g_new0(mfs_handle, 1);
    h->st = m->stores[s];
    h->sidx = s;
    h->ino = ino;
    int acc = fi->flags & O_ACCMODE;
    ms_attr a;
    if (acc != O_RDONLY)
        lazy_forget(m, ino, s); /* its writer starts from the store */
    int rc = attr_of(m, ino, s, n, &a);
    if (!rc)
        rc = acc == O_RDONLY ? attach_reader(h, n)
                             : attach_writer(m, h, n, (fi->flags & O_TRUNC) != 0);
    if (!rc)
        open_register(m, h, &a);
    if (rc) {
        handle_free(m, h);
        fuse_reply_err(req, -rc);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    /* Bytes change only through this mount's writers: keep the cache. */
    fi->keep_cache = acc == O_RDONLY;
    fi->noflush = acc == O_RDONLY;
    fuse_reply_open(req, fi);
}

static void mfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                       struct fuse_file_info *fi)
{
    mfs *m = M(req);
    size_t s;
    ms_node n;
    int rc = parent_of(m, parent, &s, &n);
    if (!rc && n.kind != MS_FOLDER)
        rc = -EPERM; /* messages live in folders only */
    if (!rc && !S_ISREG(mode))
        rc = -EPERM;
    ms_attr a;
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    if (!rc) {
        lazy_flush(m, s);
        rc = ms_message_create(m->stores[s], n, name, private_mode(ctx, mode), ctx->uid, ctx->gid,
                               &a);
    }
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    mfs_handle *h = g_new0(mfs_handle, 1);
    h->st = m->stores[s];
    h->sidx = s;
    h->ino = ino_of(s, a.node);
    rc = attach_writer(m, h, a.node, true);
    if (!rc)
        open_register(m, h, &a);
    if (rc) {
        handle_free(m, h);
        fuse_reply_err(req, -rc);
        return;
    }
    ms_mutex_lock(&h->f->lock);
    h->f->known = a;
    h->f->known_valid = true;
    ms_mutex_unlock(&h->f->lock);
    struct fuse_entry_param e;
    fill_entry(m, s, &a, &e);
    fi->fh = (uint64_t)(uintptr_t)h;
    fuse_reply_create(req, &e, fi);
}

/*
 * A regular file made without opening it: tar --xattrs does this so it
 * can set extended attributes before writing.  It becomes an empty
 * message at once; the open and write that follow replace its bytes.
 */
static void mfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    (void)rdev;
    mfs *m = M(req);
    size_t s;
    ms_node n;
    int rc = parent_of(m, parent, &s, &n);
    if (!rc && (n.kind != MS_FOLDER || !S_ISREG(mode)))
        rc = -EPERM; /* no devices, fifos or sockets in a mail store */
    ms_attr a;
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    if (!rc) {
        lazy_flush(m, s);
        rc = ms_message_create(m->stores[s], n, name, private_mode(ctx, mode), ctx->uid, ctx->gid,
                               &a);
    }
    ms_writer *w = NULL;
    if (!rc)
        rc = ms_writer_open(m->stores[s], a.node.id, true, &w);
    if (!rc)
        rc = ms_writer_commit(w, false, &a);
    ms_writer_close(w);
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    struct fuse_entry_param e;
    fill_entry(m, s, &a, &e);
    fuse_reply_entry(req, &e);
}

static void mfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino;
    mfs_handle *h = H(fi);
    char *buf = g_malloc(size ? size : 1);
    ssize_t n;
    if (h->r) {
        n = ms_reader_pread(h->r, buf, size, off);
    } else {
        ms_mutex_lock(&h->f->lock);
        n = ms_writer_pread(h->f->w, buf, size, off);
        ms_mutex_unlock(&h->f->lock);
    }
    if (n < 0)
        fuse_reply_err(req, (int)-n);
    else
        fuse_reply_buf(req, buf, (size_t)n);
    g_free(buf);
}

static void mfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
    (void)ino;
    mfs_handle *h = H(fi);
    if (!h->f) {
        fuse_reply_err(req, EBADF);
        return;
    }
    ms_mutex_lock(&h->f->lock);
    ssize_t n = ms_writer_pwrite(h->f->w, buf, size, off);
    ms_mutex_unlock(&h->f->lock);
    if (n < 0)
        fuse_reply_err(req, (int)-n);
    else
        fuse_reply_write(req, (size_t)n);
}

/*
 * Commits the inode's writer if it holds anything new.  Runs inside
 * close(2) (flush) and fsync(2), so cp sees its message in the store when
 * close returns, and a failure (ENOSPC) reaches the writer's close.
 */
static int commit_file(mfs *m, mfs_handle *h, bool durable)
{
    lazy_flush(m, h->sidx); /* the store sees the mount's writes in order */
    if (!h->f)
        return durable ? ms_store_sync(h->st) : 0;
    int rc = 0;
    ms_attr a;
    ms_mutex_lock(&h->f->lock);
    bool commit = ms_writer_dirty(h->f->w);
    if (commit)
        rc = ms_writer_commit(h->f->w, durable, &a); /* frees the old bytes unless read */
    else if (durable)
        rc = ms_store_sync(h->st);
    h->f->known_valid = false; /* the store has it now (or refused it) */
    ms_mutex_unlock(&h->f->lock);
    if (!rc && commit)
        lazy_committed(m, h->ino, h->sidx, &a);
    /* The commit dated the message (ctime, and mtime unless the writer
     * set one): the kernel may hold attributes from before it for an hour.
     * Attributes only (offset < 0): no page lock, safe inside flush. */
    if (!rc && commit)
        fuse_lowlevel_notify_inval_inode(m->se, h->ino, -1, 0);
    return rc;
}

static void mfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fuse_reply_err(req, -commit_file(M(req), H(fi), false));
}

static void mfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    fuse_reply_err(req, -commit_file(M(req), H(fi), true));
}

static void mfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    handle_free(M(req), H(fi));
    fuse_reply_err(req, 0);
}

static void mfs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    (void)fi;
    mfs *m = M(req);
    size_t s;
    ms_node n;
    int rc = 0;
    if (node_of(m, ino, &s, &n)) {
        lazy_flush(m, s);
        rc = ms_store_sync(m->stores[s]);
    }
    fuse_reply_err(req, -rc);
}

/* ------------------------------------------------------------ xattrs */

/* Replies to a getxattr/listxattr with value, honouring the size probe. */
static void reply_xattr_value(fuse_req_t req, const char *v, size_t len, size_t size)
{
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (size < len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, v, len);
}

static void mfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    mfs *m = M(req);
    size_t s;
    ms_node n;
    if (!node_of(m, ino, &s, &n)) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    char *v = NULL;
    size_t len = 0;
    int rc = ms_xattr_get(m->stores[s], n, name, &v, &len);
    if (rc)
        fuse_reply_err(req, -rc);
    else
        reply_xattr_value(req, v, len, size);
    g_free(v);
}

static void mfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    mfs *m = M(req);
    size_t s;
    ms_node n;
    if (!node_of(m, ino, &s, &n)) {
        reply_xattr_value(req, "", 0, size);
        return;
    }
    char *names = NULL;
    size_t len = 0;
    int rc = ms_xattr_list(m->stores[s], n, &names, &len);
    if (rc)
        fuse_reply_err(req, -rc);
    else
        reply_xattr_value(req, names, len, size);
    g_free(names);
}

static void mfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                         size_t size, int flags)
{
    mfs *m = M(req);
    size_t s;
    ms_node n;
    bool ours = node_of(m, ino, &s, &n);
    if (ours) /* in order; what is deferred stays valid (ctime aside) */
        lazy_flush(m, s);
    int rc = ours ? ms_xattr_set(m->stores[s], n, name, value, size, flags) : -ENOTSUP;
    if (!rc && n.kind == MS_MESSAGE) /* not for a name refused (cp's POSIX ACL) */
        file_forget_known(m, ino);
    fuse_reply_err(req, -rc);
}

static void mfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    mfs *m = M(req);
    size_t s;
    ms_node n;
    bool ours = node_of(m, ino, &s, &n);
    if (ours)
        lazy_flush(m, s);
    int rc = ours ? ms_xattr_remove(m->stores[s], n, name) : -ENODATA;
    if (!rc && n.kind == MS_MESSAGE)
        file_forget_known(m, ino);
    fuse_reply_err(req, -rc);
}

/* ------------------------------------------------------------- misc */

static void mfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
    mfs *m = M(req);
    size_t s = 0;
    ms_node n;
    if (!node_of(m, ino, &s, &n))
        s = 0;
    struct statvfs sv;
    int rc = ms_store_statvfs(m->stores[s], &sv);
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    sv.f_namemax = MS_NAME_MAX;
    fuse_reply_statfs(req, &sv);
}

static void mfs_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    /* O_TRUNC arrives with open, sparing a separate truncate. */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    /* Always readdirplus: listings carry the attributes, so ls -l of a
     * big folder needs no lookup per message (auto mode drops to plain
     * readdir after the first batch). */
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    /* Writes must reach the spool as they happen: no writeback cache. */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    conn->max_write = 1024 * 1024;
}

/*
 * A mail store holds messages and folders only: symbolic and hard links
 * are refused alike with EPERM (as for devices and fifos), not ENOSYS,
 * so that ln, cp -a and rsync -l/-H say "Operation not permitted".
 */
static void mfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    (void)link;
    (void)parent;
    (void)name;
    fuse_reply_err(req, EPERM);
}

static void mfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    (void)ino;
    (void)newparent;
    (void)newname;
    fuse_reply_err(req, EPERM);
}

const struct fuse_lowlevel_ops mfs_ops = {
    .init = mfs_init,
    .lookup = mfs_lookup,
    .getattr = mfs_getattr,
    .setattr = mfs_setattr,
    .readdir = mfs_readdir,
    .readdirplus = mfs_readdirplus,
    .mkdir = mfs_mkdir,
    .mknod = mfs_mknod,
    .symlink = mfs_symlink,
    .link = mfs_link,
    .rmdir = mfs_rmdir,
    .unlink = mfs_unlink,
    .rename = mfs_rename,
    .open = mfs_open,
    .create = mfs_create,
    .read = mfs_read,
    .write = mfs_write,
    .flush = mfs_flush,
    .fsync = mfs_fsync,
    .release = mfs_release,
    .fsyncdir = mfs_fsyncdir,
    .getxattr = mfs_getxattr,
    .listxattr = mfs_listxattr,
    .setxattr = mfs_setxattr,
    .removexattr = mfs_removexattr,
    .statfs = mfs_statfs,
};
