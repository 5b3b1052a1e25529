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
} mfs;

extern const struct fuse_lowlevel_ops mfs_ops;

#endif
