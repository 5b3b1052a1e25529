/*
 * fs.h — the mount's context, shared by main.c and ops.c.
 *
 * Inode numbers are derived from store ids, never allocated:
 *   bits 63..60  node kind + 1 (so no derived number is FUSE_ROOT_ID)
 *   bits 59..48  index of the store in the configuration
 *   bits 47..0   the node's id in its store
 * so lookup needs no table and forget has nothing to free.
 */
#ifndef MAILFS_FS_H
#define MAILFS_FS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <glib.h>

#include "mailstore.h"
#include "mutex.h"

#define MFS_ID_BITS MS_ID_BITS
#define MFS_MAX_STORES 4095
/* kind + 1 in 4 bits, the store index in 12, the id in the rest. */
_Static_assert(MS_ID_BITS + 12 + 4 <= 64, "store ids do not fit in an inode number");
_Static_assert(MFS_MAX_STORES < (1 << 12), "store indexes do not fit in an inode number");

typedef struct mfs_lazy mfs_lazy;

typedef struct mfs {
    ms_site *site; /* owns cfg, journal, dir and stores below */
    const ms_config *cfg;
    ms_journal *journal;
    ms_directory *dir; /* NULL without a [directory] group */
    ms_store *const *stores;
    size_t nstores;
    struct fuse_session *se;
    uid_t uid; /* the mounting user: owner of the top two levels */
    gid_t gid;
    int64_t mount_ns;
    /* Held briefly, never across a store call that copies or commits
     * bytes: guards top_mtime_ns, files, opens and each file's refs. */
    ms_mutex lock;
    int64_t top_mtime_ns; /* the top's mtime: the mount time until set */
    GHashTable *files;    /* ino -> mfs_file*: messages open for writing */
    GHashTable *opens;    /* ino -> mfs_opened*: every open message */
    mfs_lazy *lazy;       /* deferred setattrs (lazy.c); its own lock */
} mfs;

extern const struct fuse_lowlevel_ops mfs_ops;

/*
 * lazy.c: setattrs that follow a close, deferred into the mount's next
 * write to the store (see there for what that promises).  lazy_new
 * before serving; lazy_start once in the background for good (it starts
 * a thread: none may cross the daemon's fork); lazy_free after the last
 * request, which writes what is still pending.
 */
void lazy_new(mfs *m);
void lazy_start(mfs *m);
void lazy_free(mfs *m);
/* ino, of store sidx, was just committed by this mount with attributes a. */
void lazy_committed(mfs *m, fuse_ino_t ino, size_t sidx, const ms_attr *a);
/* True when the setattr r of ino was taken, to be written later; *out is
 * what the message now shows.  False: write it now, as usual. */
bool lazy_setattr(mfs *m, fuse_ino_t ino, const ms_setattr_req *r, ms_attr *out);
/* Lays what is pending for ino over a, read from the store. */
void lazy_overlay(mfs *m, fuse_ino_t ino, ms_attr *a);
/* Writes what is pending in store sidx (one transaction where it can):
 * before any other write of the mount to it. */
void lazy_flush(mfs *m, size_t sidx);
void lazy_flush_all(mfs *m);
/* Writes what is pending, then forgets ino: it changed another way. */
void lazy_forget(mfs *m, fuse_ino_t ino, size_t sidx);
/*
 * Around one write of the mount to store sidx: what is pending is
 * written in the same transaction (a batch), before it.  lazy_end
 * returns the write's outcome rc, or the batch's failure to commit.
 */
typedef struct lazy_batch {
    GArray *items; /* NULL: nothing was pending */
    bool batched;
} lazy_batch;
lazy_batch lazy_begin(mfs *m, size_t sidx);
int lazy_end(mfs *m, size_t sidx, lazy_batch *b, int rc);

#endif
