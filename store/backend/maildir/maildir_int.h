/*
 * maildir_int.h — what the files of the maildir backend share (internal).
 *
 * A maildir store is a folder whose subfolders are mailboxes, each a
 * Maildir root as Dovecot keeps one: INBOX is the root's cur/new/tmp, the
 * other folders are ".Sent", ".Archive.2019" (maildir++) or "Sent",
 * "Archive/2019" (fs).  The files are the truth; this process keeps only
 * a cache of them, checked against directory mtimes at every use, as
 * Dovecot's maildir code checks its index:
 *  - ids: a mailbox by its directory name, a folder by its tree path, a
 *    message by its base name, each given an id the first time this
 *    process sees it and kept while the object lives (inode numbers are
 *    stable for the mount's life: a flag change renames the file but
 *    keeps the base, and so the id);
 *  - a folder's listing: its files in new/ and cur/, with UIDs from
 *    dovecot-uidlist, re-read when either directory or the uidlist
 *    changed, or changed within a second of the last read (a second
 *    change in the same timestamp tick would not show otherwise).
 * What mailfs keeps beyond Dovecot's files is kept beside them in files
 * and attributes Dovecot ignores: a mailbox's lock and move state in
 * "mailfs-mailbox" in its root, a folder's special-use in
 * "mailfs-special-use", a mode or owner set through the mount in the
 * file's "user.mailfs.attr" extended attribute (the real file stays the
 * mail server's, with its modes, so the server can read it).
 */
#ifndef MAILFS_MAILDIR_INT_H
#define MAILFS_MAILDIR_INT_H

#include "backend.h"
#include "maildir_format.h"
#include "mutex.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include <glib.h>

#define MD_META_FILE "mailfs-mailbox"
#define MD_SPECIAL_USE_FILE "mailfs-special-use"
#define MD_ATTR_XATTR "user.mailfs.attr"
/* INBOX is the mailbox root's own directory: its attributes apart. */
#define MD_INBOX_XATTR "user.mailfs.inbox"
#define MD_CHUNK (128 * 1024)

typedef struct md_mbox md_mbox;
typedef struct md_folder md_folder;

/* A mode or owner given through the mount (see maildir_int.h's head). */
typedef struct md_over {
    bool set;
    uint32_t mode, uid, gid;
    /* Directories only: the mtime given (0: none; the directory's own
     * changes with every delivery, and INBOX shares the mailbox's). */
    int64_t mtime_ns;
} md_over;

/* A file name's tail after its base (":2,S") fits here in most folders. */
#define MD_TAIL_INLINE 20

/* A message of a folder's listing: tens of thousands per folder, so its
 * fields are ordered to waste no padding and its file name is not kept
 * whole (its base and tail are). */
typedef struct md_msg {
    int64_t id;
    md_folder *f;
    char *base;      /* the key: the file name up to ':' */
    char *name;      /* its name in the tree: base itself when the same */
    char *tail_long; /* the file name after base, when too long for tail */
    char *pflags;    /* pending: flags set before the first commit, or NULL */
    size_t pflags_len;
    /* When this process saw its UID change (0: never): its modseq. */
    int64_t uid_ns;
    /* From the last stat of the file (files never change once in place). */
    int64_t size, mtime_ns, ctime_ns;
    uint64_t dev, ino;
    uint32_t mode, fuid, fgid;
    uint32_t uid;  /* 0: dovecot-uidlist does not list it yet */
    uint32_t puid; /* pending: the UID asked for (user.mail.uid), or 0 */
    md_over over;
    bool in_new;
    bool pending;    /* reserved by message_create: no file yet */
    bool uid_pinned; /* its UID was given through user.mail.uid */
    bool seen;       /* scan bookkeeping */
    bool uid_read;   /* read_uids bookkeeping */
    bool stated;
    char tail[MD_TAIL_INLINE]; /* the file name after base ("" or ":2,S") */
} md_msg;

struct md_folder {
    int64_t id;
    md_mbox *mb;
    char *path;  /* in the tree: "INBOX", "Archive/2019" */
    char *dir;   /* relative to the mailbox root: "" for INBOX */
    bool exists; /* maildir++ parents of ".a.b" may have no ".a" */
    /* Made a mere parent by this process (ms_folder_unselect): kept in
     * the tree while it has no subfolder yet (a restore makes those
     * next), until the process ends. */
    bool parent_only;
    bool seen;
    /* The listing, valid while the stamps below hold (folder_refresh). */
    bool scanned;
    /* A move's hidden copy (MS_MB_INCOMING), which only its mover writes,
     * one process at a time: the stamps this process's own writes leave
     * are taken as they are (md_track_*), not read again. */
    bool sole_writer;
    int64_t scanned_ns, cur_mtime_ns, new_mtime_ns;
    int64_t checked_ns, kw_checked_ns; /* when last checked against the files */
    /* Moves with every change of the listing: a message added, dropped,
     * or its file renamed (flags).  md_mailbox_stamp keeps the folder's
     * part of a stamp while it stays. */
    uint64_t gen, stamp_gen;
    uint8_t stamp[32];
    GHashTable *by_base; /* base -> md_msg* (owned) */
    /* name -> md_msg* for the messages whose name is not their base
     * (most are: they are found by_base); md_msg_named reads both. */
    GHashTable *by_name;
    /* dovecot-uidlist's header as last read (its records are in the
     * messages' uid), or NULL */
    md_uidlist *ul;
    md_keywords kw;
    int64_t kw_mtime_ns;
    bool kw_loaded;
    /* Inside a batch: the uidlist lock held from the first new message to
     * the batch's end, the list being built, and the files put in place
     * (unlinked again if the batch is discarded). */
    md_lock *batch_lock;
    md_uidlist *batch_ul;
    GPtrArray *batch_files;
    /* Records the batch adds, merged into batch_ul in UID order at its
     * end (a move hands UIDs over in its source's listing order), and
     * every UID taken, so none is given twice. */
    GArray *batch_adds;     /* md_uid_rec */
    GHashTable *batch_uids; /* set of uids (GUINT_TO_POINTER) */
    bool batch_any_uid;     /* a move's hidden copy: any free UID may be kept */
    /* batch_ul is the list's header alone and the batch's records are
     * appended at its end (can_append in maildir_write.c) */
    bool batch_append;
    /* A message of it left the cache in this process (its uidlist record
     * may remain): no appending batch (can_append). */
    bool dropped;
};

/* A mailbox's own state, kept in MD_META_FILE. */
typedef struct md_meta {
    ms_mb_state state;
    int64_t lock_move, retain_until, move_id;
    char lock_journal[MS_JOURNAL_ID_LEN], move_journal[MS_JOURNAL_ID_LEN];
} md_meta;

struct md_mbox {
    int64_t id;
    char *name; /* its directory */
    bool seen;
    GHashTable *folders; /* path -> md_folder* (owned) */
    int64_t folders_scanned_ns, root_mtime_ns;
    /* md_meta_cached: the state read, valid while the file's inode, size
     * and mtime (and the mailbox's name) stay. */
    bool meta_valid;
    md_meta meta;
    int64_t meta_key[3];
    char *meta_name;
    /* The root's stamp before and after this process last wrote
     * MD_META_FILE (root_stamp in maildir.c). */
    int64_t meta_stamp_before, meta_stamp_after;
    /* When md_refresh_folders last saw its folders change. */
    int64_t folders_changed_ns;
    /* INBOX's mode, uid and gid as last seen, and when they changed
     * (inbox_attr_stamp in maildir.c). */
    uint32_t inbox_attr[3];
    int64_t inbox_attr_ns;
};

typedef struct md_store {
    char *path; /* absolute */
    md_layout layout;
    bool ro;
    /* Guards every field below and everything reached from them: the
     * caches, and the files while a write changes them (a write holds it
     * from its first check to its last rename, so two writes of this
     * process never interleave; Dovecot is kept out by its own lock). */
    ms_mutex lock;
    GHashTable *mb_by_name; /* name -> md_mbox* (owned) */
    /* id (the object's own field) -> md_mbox*, md_folder* or md_msg*
     * with its kind in the low bits (maildir.c: tagged) */
    GHashTable *by_id;
    int64_t next_id;
    int64_t root_mtime_ns, root_scanned_ns;
    bool root_scanned;
    GThread *batch_owner; /* ms_batch_begin's thread, or NULL */
    GPtrArray *batch_folders;
    bool xattr_warned;
    unsigned tmp_seq;
    uint32_t last_uidvalidity; /* md_new_uidvalidity */
} md_store;

static inline md_store *md_of(ms_store *st) { return st->priv; }

static inline int64_t ts_ns(const struct timespec *t)
{
    return t->tv_sec * 1000000000LL + t->tv_nsec;
}

/* maildir.c: caches, lookups, attributes */
void md_new_id(md_store *s, ms_kind kind, void *obj, int64_t *idp);
void md_forget_id(md_store *s, int64_t id);
void *md_by_id(md_store *s, ms_kind kind, int64_t id);
int md_refresh_root(md_store *s);
int md_refresh_folders(md_store *s, md_mbox *mb);
int md_refresh_folder(md_store *s, md_folder *f, bool force);
int md_dir_mtime(const char *path, int64_t *out);
md_mbox *md_mbox_get(md_store *s, const char *name);
md_folder *md_folder_get(md_store *s, md_mbox *mb, const char *path);
md_folder *md_folder_parent(md_store *s, md_folder *f);
char *md_mbox_path(md_store *s, md_mbox *mb);
char *md_folder_path_abs(md_store *s, md_folder *f);
char *md_msg_path(md_store *s, md_msg *m);
/* Its file name now (in new/ or cur/): base and tail, g_free. */
char *md_msg_fname(const md_msg *m);
/* Makes fname (base, then any tail) its file name now. */
void md_msg_set_fname(md_msg *m, const char *fname);
/* The letters after ":2," in its file name (md_filename_split), or NULL. */
const char *md_msg_info(const md_msg *m);
int md_msg_stat(md_store *s, md_msg *m);
int md_msg_find(md_store *s, int64_t id, md_msg **out);
/* A message's name in the tree for its base (md_name_of_base): base
 * itself when they are the same, so that most messages keep one string
 * for both (a folder may hold tens of thousands); msg_free knows. */
char *md_msg_name(char *base, size_t base_len);
void md_msg_attr(md_store *s, md_msg *m, ms_attr *out);
int md_folder_attr(md_store *s, md_folder *f, ms_attr *out);
int md_mbox_attr(md_store *s, md_mbox *mb, ms_attr *out);
int md_stat_attr(const char *path, const char *xa, ms_attr *out);
/* ms_mailbox_modseq (the floor; maildir.c says what the stamps are). */
int md_mailbox_modseq(ms_store *st, int64_t id, uint64_t *out);
int md_over_get(const char *path, const char *xa, md_over *o);
int md_over_set(md_store *s, const char *path, const char *xa, const md_over *o);
const char *md_folder_xattr(const md_folder *f);
void md_pin_dir(md_store *s, const char *path, const char *xa);
void md_pin_folder(md_store *s, md_folder *f);
int md_meta_read(md_store *s, md_mbox *mb, md_meta *out);
int md_meta_cached(md_store *s, md_mbox *mb, md_meta *out);
int md_meta_write(md_store *s, md_mbox *mb, const md_meta *m);
int md_keywords_refresh(md_store *s, md_folder *f);
int md_flags_of(md_store *s, md_msg *m, char **flags, size_t *len);
void md_msg_drop(md_store *s, md_msg *m);
/* The message (pending or not) named name in f's listing, or NULL. */
md_msg *md_msg_named(md_folder *f, const char *name);
/* Makes m, just put in f->by_base, findable by its name. */
void md_msg_name_add(md_folder *f, md_msg *m);
void md_msg_reid(md_store *s, md_msg *m, int64_t keep);
void md_folder_drop_cache(md_store *s, md_folder *f);
/* The owner and modes of what mailfs creates in mailbox mb. */
int md_owner(md_store *s, md_mbox *mb, uid_t *uid, gid_t *gid, mode_t *dmode);

/* A reader of a message: its open file (-1 for one not yet written). */
struct ms_be_reader {
    int fd;
};

/* maildir.c: the reads, which maildir_write.c puts in the vtables */
int md_lookup(ms_store *st, ms_node parent, const char *name, ms_attr *out);
int md_getattr(ms_store *st, ms_node node, ms_attr *out);
int md_list(ms_store *st, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx);
int md_xattr_get(ms_store *st, ms_node node, ms_xattr_id xa, char **value, size_t *len);
int md_reader_open(ms_store *st, int64_t message, ms_be_reader **out, int64_t *size, bool *pending);
ssize_t md_reader_pread(ms_store *st, ms_be_reader *r, void *buf, size_t len, int64_t off);
void md_reader_close(ms_store *st, ms_be_reader *r);

/* maildir_write.c: writes */
extern const ms_tree_ops md_tree_ops;
extern const ms_content_ops md_content_ops;
int md_refuse(md_store *s, md_mbox *mb);
int md_ensure_folder(md_store *s, md_folder *f);
int md_mkdir_maildir(const char *path, uid_t uid, gid_t gid, mode_t mode, bool folder_marker);
int md_mkdir_subdirs(const char *path, uid_t uid, gid_t gid, mode_t mode, bool folder_marker);
int md_make_dir(const char *path, uid_t uid, gid_t gid, mode_t mode);
int md_rm_tree(const char *path);
int md_remove_maildir(const char *path, bool keep_dir);
uint32_t md_new_uidvalidity(md_store *s);
int md_assign_uids(md_store *s, md_folder *f);
int md_uids_begin(md_store *s, md_folder *f, md_uidlist **ul, md_lock **lk);
int md_uids_end(md_store *s, md_folder *f, md_uidlist *ul, md_lock *lk, bool write);
md_uidlist *md_batch_merged(md_folder *f);
/* Writes what f's batch added into dovecot-uidlist (appended, or the list
 * written whole) and releases its lock. */
int md_batch_commit(md_store *s, md_folder *f);
void md_batch_clear(md_folder *f);
/* How md_put_file brings a file into cur/. */
typedef enum md_put_how {
    MD_PUT_RENAME,  /* renamed; -EEXIST if the folder has a message of that base */
    MD_PUT_LINK,    /* hard-linked (a move within one filesystem); the same */
    MD_PUT_REPLACE, /* renamed over the folder's message of that base (a rewrite) */
} md_put_how;
int md_put_file(md_store *s, md_folder *f, const char *src_path, md_put_how how, const char *base,
                const char *flags, size_t flags_len, uint32_t want_uid, const char *drop_base,
                bool durable, md_msg **out);
bool md_uid_taken(const md_uidlist *ul, uint32_t uid);
int md_base_of_file(const char *name, const char *path, int64_t size, char **out);
int md_uidlist_put(md_uidlist **ul, const char *base, uint32_t uid, const char *fname);

/* maildir_admin.c */
extern const ms_admin_ops md_admin_ops;

#endif
