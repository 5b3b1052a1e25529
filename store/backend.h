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

/* A backend's reader of one message's bytes; each backend defines it. */
typedef struct ms_be_reader ms_be_reader;

typedef struct ms_backend {
    const char *name;
    int (*open)(ms_store *st, const ms_store_conf *conf, int flags, char **err);
    void (*close)(ms_store *st);
    int (*stats)(ms_store *st, ms_store_stats *out);
    int (*compact)(ms_store *st, int64_t *before, int64_t *after);
    int (*sync)(ms_store *st);
    int (*batch_begin)(ms_store *st);
    int (*batch_end)(ms_store *st, bool commit);
    int (*lookup)(ms_store *st, ms_node parent, const char *name, ms_attr *out);
    int (*getattr)(ms_store *st, ms_node node, ms_attr *out);
    int (*setattr)(ms_store *st, ms_node node, const ms_setattr_req *req, ms_attr *out);
    int (*list)(ms_store *st, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx);
    int (*mkdir)(ms_store *st, ms_node parent, const char *name, uint32_t mode, uint32_t uid,
                 uint32_t gid, ms_attr *out);
    int (*rmdir)(ms_store *st, ms_node parent, const char *name);
    int (*unlink)(ms_store *st, ms_node folder, const char *name);
    int (*rename)(ms_store *st, ms_node parent, const char *name, ms_node newparent,
                  const char *newname, bool noreplace);
    /* get: *value NULL/len 0 when unset.  set: len 0 with value NULL unsets. */
    int (*xattr_get)(ms_store *st, ms_node node, ms_xattr_id xa, char **value, size_t *len);
    int (*xattr_set)(ms_store *st, ms_node node, ms_xattr_id xa, const char *value, size_t len);
    int (*message_create)(ms_store *st, ms_node folder, const char *name, uint32_t mode,
                          uint32_t uid, uint32_t gid, ms_attr *out);
    /*
     * Content.  reader_open resolves a message (pending ones included:
     * *pending true, size 0) to its current bytes and makes them the
     * reader's, in one step: they stay readable and unchanged until
     * reader_close, whatever happens to the message meanwhile.  How is
     * the backend's business (the sqlite backend pins a content id).
     * reader_pread is called with off + len within *size only.
     */
    int (*reader_open)(ms_store *st, int64_t message, ms_be_reader **out, int64_t *size,
                       bool *pending);
    ssize_t (*reader_pread)(ms_store *st, ms_be_reader *r, void *buf, size_t len, int64_t off);
    void (*reader_close)(ms_store *st, ms_be_reader *r);
    /* Removes a created message that was never committed. */
    int (*discard_pending)(ms_store *st, int64_t message);
    /* Replaced bytes are freed when no reader has them any more. */
    int (*commit)(ms_store *st, const ms_commit *c, ms_attr *out);
    /* Mailbox administration for moves: hidden states, locks, removal. */
    int (*mailbox_create)(ms_store *st, const char *name, ms_mb_state state, const ms_attr *like,
                          int64_t *id);
    int (*mailbox_find)(ms_store *st, const char *name, ms_mb_state state, int64_t *id);
    int (*mailbox_info)(ms_store *st, int64_t id, ms_mailbox_info *out);
    /* NULL: the backend has no hidden mailboxes (nothing to scan). */
    int (*mailbox_scan)(ms_store *st, ms_mailbox_fn fn, void *ctx);
    int (*mailbox_set)(ms_store *st, int64_t id, const ms_mailbox_change *chg);
    int (*mailbox_drop)(ms_store *st, int64_t id);
    int (*mailbox_size)(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes);
    int (*message_meta)(ms_store *st, int64_t id, ms_message_meta *out);
    /* Deleted items (mailstore.h); NULL: the backend keeps none. */
    int (*deleted_list)(ms_store *st, const char *mailbox, ms_deleted_fn fn, void *ctx);
    int (*deleted_restore)(ms_store *st, const char *mailbox, const char *path, int64_t *restored);
    int (*deleted_purge)(ms_store *st, int64_t before_ns, ms_purged *out);
} ms_backend;

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

#endif
