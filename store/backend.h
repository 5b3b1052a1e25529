/*
 * backend.h — what a store backend implements (internal to store/).
 *
 * store.c validates arguments (names, read-only stores, xattr values) and
 * then dispatches here, so a backend may assume well-formed input.  Every
 * function returns 0 or a negative errno, like the public API.
 */
#ifndef MAILFS_BACKEND_H
#define MAILFS_BACKEND_H

#include "mailstore.h"
#include "spool.h"

/* The three extended attributes, each held by one kind of node. */
typedef enum ms_xattr_id { MS_XA_FLAGS, MS_XA_SPECIAL_USE, MS_XA_ACL } ms_xattr_id;

/* One commit of spooled bytes (see ms_writer_commit). */
typedef struct ms_commit {
    int64_t message;     /* the message to fill or replace; 0: a new one */
    ms_node folder;      /* new: where */
    const char *name;    /* new: its name (NULL: "<uid>.eml") */
    int64_t imap_uid;    /* new, with name: its UID (0: the next one) */
    ms_spool *spool;     /* the bytes */
    ms_setattr_req attr; /* applied in the same transaction */
    const char *flags;   /* NULL: unchanged */
    size_t flags_len;
    bool durable;
} ms_commit;

/*
 * A backend is three vtables, one per concern, as Dovecot's lib-storage
 * splits storage, mailbox and mail: the tree (names, attributes,
 * xattrs), the content (a message's bytes) and administration (the
 * store as a whole, hidden mailboxes for moves, deleted items).
 *
 * A NULL slot means "not supported", and store.c alone decides what the
 * caller sees then (ms_backend_unsupported): a write to a backend that
 * has no write slots is a write to a read-only store, -EROFS; anything
 * else a backend leaves out is -ENOTSUP.  A few slots have a shared
 * default instead, named next to them.  So a read-only backend (pst)
 * fills in its read slots and nothing else.
 *
 * The rules every backend keeps are store.c's, not the backend's: names
 * are checked before dispatch; every tree write names the mailbox it
 * changes (store.c resolves it), and what a locked, retained or deleted
 * mailbox refuses is ms_mailbox_refusal(), which the backend applies to
 * that mailbox inside the write's transaction (mailstore.h, "What a
 * mailbox refuses"); hidden mailbox names are made and recognised by
 * hidden.c.
 */
/* A backend's reader of one message's bytes; each backend defines it. */
typedef struct ms_be_reader ms_be_reader;

typedef struct ms_tree_ops {
    /* Reads: every backend has them. */
    int (*lookup)(ms_store *st, ms_node parent, const char *name, ms_attr *out);
    int (*getattr)(ms_store *st, ms_node node, ms_attr *out);
    int (*list)(ms_store *st, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx);
    /* get: *value NULL/len 0 when unset.  set: len 0 with value NULL unsets. */
    int (*xattr_get)(ms_store *st, ms_node node, ms_xattr_id xa, char **value, size_t *len);
    /*
     * Writes: NULL in a read-only backend.  Each names the mailbox it
     * changes, as store.c found it (0: none, for the store's root and a
     * new mailbox): the backend refuses the write with
     * ms_mailbox_refusal() of that mailbox's lock and state, read inside
     * the write's own transaction, so a lock taken meanwhile is either
     * seen or taken after the write (and the move copies it).
     */
    int (*setattr)(ms_store *st, int64_t mailbox, ms_node node, const ms_setattr_req *req,
                   ms_attr *out);
    int (*mkdir)(ms_store *st, int64_t mailbox, ms_node parent, const char *name, uint32_t mode,
                 uint32_t uid, uint32_t gid, ms_attr *out);
    int (*rmdir)(ms_store *st, int64_t mailbox, ms_node parent, const char *name);
    int (*unlink)(ms_store *st, int64_t mailbox, ms_node folder, const char *name);
    int (*rename)(ms_store *st, int64_t mailbox, ms_node parent, const char *name,
                  ms_node newparent, const char *newname, bool noreplace);
    int (*xattr_set)(ms_store *st, int64_t mailbox, ms_node node, ms_xattr_id xa, const char *value,
                     size_t len);
} ms_tree_ops;

typedef struct ms_content_ops {
    int (*message_create)(ms_store *st, ms_node folder, const char *name, uint32_t mode,
                          uint32_t uid, uint32_t gid, ms_attr *out);
    /*
     * reader_open resolves a message (pending ones included: *pending
     * true, size 0) to its current bytes and makes them the reader's, in
     * one step: they stay readable and unchanged until reader_close,
     * whatever happens to the message meanwhile.  How is the backend's
     * business (the sqlite backend pins a content id).  reader_pread is
     * called with off + len within *size only.
     */
    int (*reader_open)(ms_store *st, int64_t message, ms_be_reader **out, int64_t *size,
                       bool *pending);
    ssize_t (*reader_pread)(ms_store *st, ms_be_reader *r, void *buf, size_t len, int64_t off);
    void (*reader_close)(ms_store *st, ms_be_reader *r);
    /* Removes a created message that was never committed.  NULL: 0. */
    int (*discard_pending)(ms_store *st, int64_t message);
    /* Replaced bytes are freed when no reader has them any more. */
    int (*commit)(ms_store *st, const ms_commit *c, ms_attr *out);
} ms_content_ops;

typedef struct ms_admin_ops {
    int (*stats)(ms_store *st, ms_store_stats *out);
    int (*compact)(ms_store *st, int64_t *before, int64_t *after);
    /* NULL: nothing to sync (0). */
    int (*sync)(ms_store *st);
    /* NULL: the store has no work of its own to run in threads. */
    void (*background)(ms_store *st);
    int (*batch_begin)(ms_store *st);
    /* NULL: no batch can have begun (0). */
    int (*batch_end)(ms_store *st, bool commit);
    /* Mailbox administration for moves: hidden states, locks, removal. */
    int (*mailbox_create)(ms_store *st, const char *name, ms_mb_state state, const ms_attr *like,
                          int64_t *id);
    int (*mailbox_find)(ms_store *st, const char *name, ms_mb_state state, int64_t *id);
    int (*mailbox_info)(ms_store *st, int64_t id, ms_mailbox_info *out);
    /* NULL: the backend has no hidden mailboxes (nothing to scan, 0). */
    int (*mailbox_scan)(ms_store *st, ms_mailbox_fn fn, void *ctx);
    int (*mailbox_set)(ms_store *st, int64_t id, const ms_mailbox_change *chg);
    int (*mailbox_drop)(ms_store *st, int64_t id);
    int (*mailbox_size)(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes);
    /* hash: see ms_message_get_meta. */
    int (*message_meta)(ms_store *st, int64_t id, bool hash, ms_message_meta *out);
    /* Deleted items (mailstore.h); NULL: the backend keeps none. */
    int (*deleted_list)(ms_store *st, const char *mailbox, ms_deleted_fn fn, void *ctx);
    int (*deleted_restore)(ms_store *st, const char *mailbox, const char *path, int64_t *restored);
    int (*deleted_purge)(ms_store *st, int64_t before_ns, ms_purged *out);
    /* IMAP UID state of a folder (mailstore.h, ms_folder_uids). */
    int (*folder_uids_get)(ms_store *st, ms_node folder, ms_folder_uids *out);
    int (*folder_uids_set)(ms_store *st, ms_node folder, const ms_folder_uids *u);
    /* NULL: nothing writes behind the store (-ENOTSUP, see ms_mailbox_stamp). */
    int (*mailbox_stamp)(ms_store *st, int64_t id, uint8_t out[MS_STAMP_LEN]);
    /* NULL: no change sequence (-ENOTSUP, see ms_mailbox_modseq). */
    int (*mailbox_modseq)(ms_store *st, int64_t id, uint64_t *out);
    /* user.mail.uid: message gets uid when no other message of its folder
     * has it, else keeps its own (0 both ways); UIDNEXT rises past it.
     * NULL: UIDs cannot be set (-ENOTSUP). */
    int (*message_uid_set)(ms_store *st, int64_t message, int64_t uid);
    /* NULL: every folder can hold messages (-ENOTSUP, ms_folder_unselect). */
    int (*folder_unselect)(ms_store *st, ms_node folder);
    /* NULL: never shares bytes (-EXDEV, see ms_message_link).  Called
     * only when src has the same backend as st. */
    int (*message_link)(ms_store *st, ms_node folder, const char *name, int64_t uid, ms_store *src,
                        int64_t message, ms_attr *out);
    /* The mailbox's messages and bytes estimated without reading its
     * content (ms_mailbox_size_estimate: bytes meant as an upper estimate,
     * not a bound).  NULL: mailbox_size is cheap, and exact. */
    int (*mailbox_size_estimate)(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes);
} ms_admin_ops;

typedef struct ms_backend {
    const char *name;
    /* Others write the store too (ms_store_shared). */
    bool shared;
    /* Each write is a transaction that a batch can group (see
     * ms_store_groups_writes). */
    bool groups_writes;
    /* True when this backend reads the file at path as a store of one
     * mailbox: how import picks its source's backend.  NULL: never. */
    bool (*reads)(const char *path);
    int (*open)(ms_store *st, const ms_store_conf *conf, int flags, char **err);
    void (*close)(ms_store *st);
    const ms_tree_ops *tree;
    const ms_content_ops *content;
    const ms_admin_ops *admin;
} ms_backend;

/*
 * The one answer to a call whose slot the backend left NULL: -EROFS for
 * a write to a store opened read-only or whose backend cannot write,
 * -ENOTSUP for anything else.
 */
int ms_backend_unsupported(const ms_store *st, bool write);
/*
 * The one rule for writes into a mailbox, given its lock and state: 0,
 * or the errno mailstore.h promises ("What a mailbox refuses").  A
 * writing backend calls it inside the write's transaction.
 */
int ms_mailbox_refusal(int64_t lock_move, ms_mb_state state);

struct ms_store {
    const ms_backend *be;
    char *name;
    char *path;
    char *spool_dir;
    char *directory; /* the store's location spec, or NULL */
    bool readonly;
    void *priv; /* the backend's own state */
};

extern const ms_backend ms_sqlite_backend;
extern const ms_backend ms_pst_backend;
extern const ms_backend ms_maildir_backend;

#endif
