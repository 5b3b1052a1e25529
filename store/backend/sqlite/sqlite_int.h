/*
 * sqlite_int.h — what the files of the sqlite backend share (internal).
 */
#ifndef MAILFS_SQLITE_INT_H
#define MAILFS_SQLITE_INT_H

#include "backend.h"
#include "sqlite_util.h"
#include "mutex.h"

#include <assert.h>
#include <sys/stat.h>
#include <time.h>

#include <glib.h>
#include <sqlite3.h>

#define MS_CHUNK (128 * 1024)
/* In list cookies, messages come after all folders of the same parent. */
#define COOKIE_MSG (UINT64_C(1) << 48)

typedef struct sq_conn {
    sqlite3 *db;
    GHashTable *stmts; /* static SQL text (by address) -> prepared statement */
} sq_conn;

typedef struct sq_ckpt sq_ckpt;

typedef struct sq {
    char *path;
    bool ro;
    sq_ckpt *ckpt;    /* NULL for a read-only store; set once at open */
    GMutex pool_lock; /* guards idle, batch_owner and batch_conn */
    GPtrArray *idle;  /* of sq_conn* */
    /* Held from sq_tx_begin to sq_tx_end (for a batch, from sq_batch_begin to
     * sq_batch_end): one write transaction at a time in this process. */
    ms_mutex write_lock;
    /* A batch (ms_batch_begin): one transaction that the owner thread's
     * writes join, each in a savepoint of its own. */
    GThread *batch_owner;
    sq_conn *batch_conn;
    /* A durable write joined the batch: its end syncs.  Guarded by
     * write_lock (the batch holds it from begin to end). */
    bool batch_durable;
    /*
     * Content that readers (and writers copying the current bytes) own:
     * content id -> how many hold it, and the ids among them that no
     * message refers to any more, freed by their last reader.  pin_lock
     * guards both; a reader resolves its message and pins the content
     * under it in one step, and whoever frees content checks the pins
     * under it.  Lock order: write_lock, then pin_lock.
     */
    ms_mutex pin_lock;
    GHashTable *pins;   /* content id -> count (GINT_TO_POINTER) */
    GHashTable *doomed; /* set of content ids */
    /* The store's pins file (see sqlite_content.c), or -1: pins are then
     * seen by this process only.  The OFD locks on it are guarded by
     * pin_lock like the tables; held: the ids write-locked by a purge
     * of this process until its transaction ends. */
    int pin_fd;
    GArray *held; /* of int64_t */
    /*
     * Messages this process created and has not committed yet
     * (sqlite_unborn.c): no row until their first commit.  unborn_lock
     * guards both tables (one record each, owned by unborn) and the
     * block of message ids reserved for this process.  Lock order:
     * write_lock, then unborn_lock; nothing is called with it held.
     */
    ms_mutex unborn_lock;
    GHashTable *unborn;       /* &id -> sq_unborn* */
    GHashTable *unborn_names; /* "<folder>/<name>" -> the same sq_unborn* */
    int64_t id_next, id_end;  /* reserved message ids [id_next, id_end) */
} sq;

static inline sq *sq_of(ms_store *st) { return st->priv; }

/* sqlite_checkpoint.c: the WAL checkpointed by a thread of the store's own
 * once enabled (ms_store_background), inline by the committing writer
 * before.  sq_ckpt_attach replaces a connection's automatic checkpoint;
 * stop joins the thread (NULL: nothing). */
sq_ckpt *sq_ckpt_start(const char *path);
void sq_ckpt_attach(sq_ckpt *k, sq_conn *c);
void sq_ckpt_enable(sq_ckpt *k);
void sq_ckpt_stop(sq_ckpt *k);

/* sqlite.c: errors, connections, statements, transactions */
int sq_errno(sqlite3 *db, int rc, const char *what);
int sq_exec(sq_conn *c, const char *sql);
int sq_pragma_int(sq_conn *c, const char *sql, int *out);
sq_conn *sq_conn_get(ms_store *st);
void sq_conn_put(ms_store *st, sq_conn *c);
sqlite3_stmt *sq_stmt(sq_conn *c, const char *sql);
void sq_bind_name(sqlite3_stmt *q, int i, const char *name);
int sq_step_done(sq_conn *c, sqlite3_stmt *q, const char *what);
int sq_step_row(sq_conn *c, sqlite3_stmt *q, const char *what);
/* First column of the one row sql returns for the id arg: 0, -ENOENT, or an errno. */
/* Appends the first column (an id) of every row q yields to out, then
 * resets q: 0 or an errno (what names the operation in the log). */
int sq_collect_ids(sq_conn *c, sqlite3_stmt *q, GArray *out, const char *what);
int sq_query_int(sq_conn *c, const char *sql, int64_t arg, int64_t *out, const char *what);
int sq_tx_begin(ms_store *st, sq_conn *c);
/* In functions that write: the caller's transaction is open on c. */
#ifdef NDEBUG
#define SQ_ASSERT_TX(c) ((void)(c))
#else
#define SQ_ASSERT_TX(c) assert(!sqlite3_get_autocommit((c)->db))
#endif
int sq_tx_end(ms_store *st, sq_conn *c, int rc);
int sq_batch_begin(ms_store *st);
int sq_batch_end(ms_store *st, bool commit);
/* A transaction whose commit is on stable storage when sq_tx_end_durable
 * returns (inside a batch: when the batch's end returns). */
int sq_tx_begin_durable(ms_store *st, sq_conn *c);
int sq_tx_end_durable(ms_store *st, sq_conn *c, int rc);

/* sqlite_tree.c */
/* ms_mailbox_refusal() for mailbox, read in c's transaction: the tree
 * writes call it once (write_begin) for the mailbox store.c named; the
 * content writes and restore, for the mailbox they touch. */
int sq_mailbox_writable(sq_conn *c, int64_t mailbox);
int sq_get_attr(sq_conn *c, ms_node n, ms_attr *out);
int sq_lookup_in(sq_conn *c, ms_node parent, const char *name, ms_attr *out);
int sq_take_uid(sq_conn *c, int64_t folder, int64_t *uid);
int sq_name_taken_by_message(sq_conn *c, int64_t folder, const char *name);
/* 1 if folder has a subfolder called name (which no message may take), 0, or an errno. */
int sq_name_taken_by_subfolder(sq_conn *c, int64_t folder, const char *name);
int sq_setattr_in(sq_conn *c, ms_node n, const ms_setattr_req *req, ms_attr *out);
int sq_xattr_set_in(sq_conn *c, ms_node n, ms_xattr_id xa, const char *value, size_t len);
int sq_lookup(ms_store *st, ms_node parent, const char *name, ms_attr *out);
int sq_getattr(ms_store *st, ms_node node, ms_attr *out);
int sq_list(ms_store *st, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx);
/* The tree writes: mailbox is the one store.c named (backend.h). */
int sq_mkdir(ms_store *st, int64_t mailbox, ms_node parent, const char *name, uint32_t mode,
             uint32_t uid, uint32_t gid, ms_attr *out);
int sq_rmdir(ms_store *st, int64_t mailbox, ms_node parent, const char *name);
int sq_unlink(ms_store *st, int64_t mailbox, ms_node folder, const char *name);
int sq_rename(ms_store *st, int64_t mailbox, ms_node parent, const char *name, ms_node newparent,
              const char *newname, bool noreplace);
int sq_setattr(ms_store *st, int64_t mailbox, ms_node node, const ms_setattr_req *req,
               ms_attr *out);
int sq_xattr_get(ms_store *st, ms_node node, ms_xattr_id xa, char **value, size_t *len);
int sq_xattr_set(ms_store *st, int64_t mailbox, ms_node node, ms_xattr_id xa, const char *value,
                 size_t len);

/* sqlite_unborn.c: messages created and not committed, without a row */
typedef struct sq_unborn sq_unborn;
void sq_unborn_init(sq *s);
void sq_unborn_clear(sq *s);
/* Reserves name in folder (checked against the table and this process's
 * other unborn messages) and an id; writes nothing to the store. */
int sq_message_create(ms_store *st, ms_node folder, const char *name, uint32_t mode, uint32_t uid,
                      uint32_t gid, ms_attr *out);
/* The attributes of an unborn message (with only_rowless: only while no
 * transaction wrote its row); false if message is not one. */
bool sq_unborn_attr(ms_store *st, int64_t message, bool only_rowless, ms_attr *out);
/* True while message is unborn and no transaction wrote its row (its
 * first commit is then a birth, sq_unborn_birth_in). */
bool sq_unborn_rowless(sq *s, int64_t message);
/* message is committed or discarded: no longer unborn.  True if it had
 * no row (nothing to remove from the table). */
bool sq_unborn_forget(ms_store *st, int64_t message);
/* In c's transaction: writes an unborn message's reserved row (state 1,
 * with a UID), so that a write needing the row can follow; 0 and nothing
 * done for any other message. */
int sq_unborn_materialize_in(sq *s, sq_conn *c, int64_t message);
/* In c's transaction, the first commit of such a message: checks the
 * mailbox and the name again and inserts the row committed, with the
 * bytes' content, size and hash and what cm sets; -EEXIST if another
 * process gave the name away meanwhile (logged). */
int sq_unborn_birth_in(sq *s, sq_conn *c, const ms_commit *cm, int64_t content, int64_t size,
                       const uint8_t sha[32]);

/* sqlite_content.c */
int sq_content_of_in(sq_conn *c, int64_t message, int64_t *content, int64_t *size);
int sq_reader_open(ms_store *st, int64_t message, ms_be_reader **out, int64_t *size, bool *pending);
ssize_t sq_reader_pread(ms_store *st, ms_be_reader *r, void *buf, size_t len, int64_t off);
void sq_reader_close(ms_store *st, ms_be_reader *r);
int sq_discard_pending(ms_store *st, int64_t message);
int sq_commit(ms_store *st, const ms_commit *cm, ms_attr *out);
/* Sets up and tears down sq's pins (sq_open, sq_close). */
void sq_pins_init(sq *s);
void sq_pins_clear(sq *s);
/* Opens the pins file of an opened store (other processes see its pins). */
void sq_pins_open_file(sq *s);
/* After the transaction of sq_content_release_in ended: lets go of the
 * content it freed, for other processes.  pin_lock held. */
void sq_pins_release_held(sq *s);
/*
 * Frees content that the caller's write transaction made unreferenced,
 * unless a reader holds it: then its last reader frees it.  The caller
 * holds pin_lock until its transaction has ended, so that no reader can
 * resolve and pin the content between this check and the commit.
 */
int sq_content_release_in(sq *s, sq_conn *c, int64_t content);

/* sqlite_deleted.c: keeping what is deleted, inside the caller's transaction */
/* Refiles message into its mailbox's deleted items. */
int sq_keep_message(sq_conn *c, int64_t message);
/* Records the (empty) folder's attributes and deletion there; the caller
 * then deletes the folder's row.  Likewise for a mailbox, with its ACL. */
int sq_keep_folder(sq_conn *c, int64_t folder);
int sq_keep_mailbox(sq_conn *c, int64_t mailbox);
/* The deleted items of mailbox follow it to newname. */
int sq_rename_deleted_items(sq_conn *c, int64_t mailbox, const char *newname);
int sq_deleted_list(ms_store *st, const char *mailbox, ms_deleted_fn fn, void *ctx);
int sq_deleted_restore(ms_store *st, const char *mailbox, const char *path, int64_t *restored);
int sq_deleted_purge(ms_store *st, int64_t before_ns, ms_purged *out);

/* sqlite_admin.c */
int sq_mailbox_create(ms_store *st, const char *name, ms_mb_state state, const ms_attr *like,
                      int64_t *id);
int sq_mailbox_find(ms_store *st, const char *name, ms_mb_state state, int64_t *id);
int sq_mailbox_info(ms_store *st, int64_t id, ms_mailbox_info *out);
int sq_mailbox_scan(ms_store *st, ms_mailbox_fn fn, void *ctx);
int sq_mailbox_set(ms_store *st, int64_t id, const ms_mailbox_change *chg);
int sq_mailbox_drop(ms_store *st, int64_t id);
int sq_mailbox_size(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes);
int sq_mailbox_modseq(ms_store *st, int64_t id, uint64_t *out);
/* Fills the retained_* fields of out: moved-away source copies. */
int sq_retained_stats(sq_conn *c, ms_store_stats *out);
int sq_message_meta(ms_store *st, int64_t id, bool hash, ms_message_meta *out);
/*
 * The UIDVALIDITY of a folder made now, in c's write transaction: the
 * time in seconds, or one more than the last value the store gave if that
 * is later, as Dovecot's dovecot-uidvalidity does, so that a folder
 * removed and made again under its name never has its old value.
 */
int sq_new_uidvalidity(sq_conn *c, uint32_t *out);
int sq_folder_uids_get(ms_store *st, ms_node folder, ms_folder_uids *out);
int sq_folder_unselect(ms_store *st, ms_node folder);
int sq_message_uid_set(ms_store *st, int64_t message, int64_t uid);
int sq_folder_uids_set(ms_store *st, ms_node folder, const ms_folder_uids *u);

#endif
