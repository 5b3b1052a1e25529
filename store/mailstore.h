/*
 * mailstore.h — the whole public API of the mailfs store library.
 *
 * A site (one configuration file) names stores; each store is opened
 * through a backend (sqlite now; pst and maildir later) behind a vtable
 * that callers never see.  Everything a store holds is addressed by a
 * node: (kind, id).  Ids are positive, unique per kind within one store,
 * never reused while the object lives, and below 2^MS_ID_BITS, so callers
 * may derive stable inode numbers from them.
 *
 * Conventions, everywhere:
 *  - functions return 0 or a negative errno; never a positive value
 *    unless documented (counts, byte totals);
 *  - names are NUL-terminated byte strings; any bytes are allowed except
 *    '/' and NUL, and "." and ".." are refused (EINVAL);
 *  - out-parameters are written only on success;
 *  - an error that deserves an explanation is logged with ms_log() before
 *    returning.
 */
#ifndef MAILFS_MAILSTORE_H
#define MAILFS_MAILSTORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <syslog.h> /* LOG_ERR etc. for ms_log */

#define MS_VERSION "0.1.0"
/*
 * Every node id fits in MS_ID_BITS bits: the mount packs an id, its
 * store's index and its kind into one 64-bit inode number (fs/fs.h checks
 * at compile time that it has room).  A backend that would hand out a
 * larger id gets -EOVERFLOW from the call that made it, instead of a
 * node the mount would show under another's inode.
 */
#define MS_ID_BITS 48
#define MS_ID_MAX ((INT64_C(1) << MS_ID_BITS) - 1)
#define MS_NAME_MAX 255
/* Largest value accepted for any user.mail.* extended attribute. */
#define MS_XATTR_MAX 65536

/* --------------------------------------------------------------- clock */

/* The wall clock in nanoseconds since the epoch: the one clock of the
 * library (internal dates, ctimes, journal times), and of the daemon. */
int64_t ms_now_ns(void);

/* ------------------------------------------------------------- process */

/* Sets up the process for the library (memory allocation); called once
 * at the start of main, before any thread. */
void ms_process_init(void);

/* ---------------------------------------------------------------- logs */

/* Priorities are syslog's (LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG). */
void ms_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Send logs to stderr (foreground, CLI) or to syslog under ident. */
void ms_log_to_stderr(int min_prio);
void ms_log_to_syslog(const char *ident);

/* -------------------------------------------------------------- config */

typedef struct ms_config ms_config;

/*
 * Idle PST helper processes (mailfs-pst), handed from one pst store to the
 * next: a store opened with them takes an idle helper, which opens its
 * file, instead of starting a process, and gives it back when the store
 * closes.  A helper that failed (libpst crashed, the file could not be
 * opened, it hung) is never given back: the next file gets a new one.
 * Thread-safe; imports of several files share one (mailfsctl import).
 */
typedef struct ms_pst_helpers ms_pst_helpers;
ms_pst_helpers *ms_pst_helpers_new(void);
/* Ends the idle helpers (each exits at the end of its input). */
void ms_pst_helpers_free(ms_pst_helpers *h);

/* Per-store configuration, as parsed from a [store NAME] group. */
typedef struct ms_store_conf {
    char *name;      /* the NAME of [store NAME] */
    char *backend;   /* "sqlite" (default), "maildir" or "pst" */
    char *path;      /* absolute path of the database (or folder) */
    char *directory; /* "attr=value;attr=value" or NULL */
    char *spool;     /* [mailfs] spool, or NULL for $TMPDIR */
    char *layout;    /* maildir: "maildir++" (NULL: the default) or "fs" */
    bool readonly;   /* read-only = true in the group */
    /* pst: helpers to take and give back (NULL: the store's own); never
     * from the configuration file. */
    ms_pst_helpers *pst_helpers;
} ms_store_conf;

/*
 * Parse the configuration file at path.  On failure returns a negative
 * errno and, in *err (caller frees with g_free), one line that names the
 * file and the problem, e.g. "/etc/mailfs.conf: [store x]: unknown key
 * 'pth'".  Relative paths in the file are resolved against its folder.
 */
int ms_config_load(const char *path, ms_config **out, char **err);
/*
 * Refuses (-EINVAL, one line in *err naming the file, group and key) a
 * journal, spool, store or directory file under mountpoint: the daemon
 * would wait on its own mount.  Paths are compared canonically.
 */
int ms_config_check_mount(const ms_config *cfg, const char *mountpoint, char **err);
void ms_config_free(ms_config *cfg);
size_t ms_config_store_count(const ms_config *cfg);
/* The i-th store in file order, or NULL past the end. */
const ms_store_conf *ms_config_store(const ms_config *cfg, size_t i);
/* The store named name, or NULL. */
const ms_store_conf *ms_config_find_store(const ms_config *cfg, const char *name);
/* Path of the sidecar journal database (default: beside the config). */
const char *ms_config_journal(const ms_config *cfg);
/* [mailfs] retain-days: how long retained and deleted copies are kept. */
#define MS_RETAIN_DAYS_DEFAULT 7
int ms_config_retain_days(const ms_config *cfg);
/* Folder for spool files of messages being written (default: $TMPDIR). */
const char *ms_config_spool(const ms_config *cfg);

/* The [directory] group (DESIGN 2); NULL when there is none. */
typedef struct ms_directory_conf {
    char *uri;           /* ldap://host:port or ldapi://%2Fpath */
    char *bind_dn;       /* NULL: SASL EXTERNAL (ldapi) or anonymous */
    char *password_file; /* the bind password, first line; never logged */
    char *base;
    char *filter; /* "%s" is the LDAP-escaped mailbox name; default (uid=%s) */
    bool starttls;
    char *tls_cacert; /* CA certificates for ldaps/StartTLS; NULL: ldap.conf's */
    /* allow-cleartext: a password may cross ldap:// in clear (tests only) */
    bool allow_cleartext;
    /* lock: ATTRIBUTE=VALUE pairs (';') put on the user's entry for a
     * move's cutover and removed after it, so that the site's proxy holds
     * the user off (DESIGN 10); %t in a value is the Unix time
     * lock-seconds ahead (Dovecot's delay_until).  NULL: no hold. */
    char *lock;
    int lock_seconds;
} ms_directory_conf;
const ms_directory_conf *ms_config_directory(const ms_config *cfg);
/* [mailfs] kick: the command a cutover runs to drop the user's sessions
 * (ms_move_opts.kick), or NULL. */
const char *ms_config_kick(const ms_config *cfg);

/* --------------------------------------------------------------- nodes */

typedef enum ms_kind {
    MS_ROOT = 0,    /* the store itself: its children are mailboxes */
    MS_MAILBOX = 1, /* children: top-level folders */
    MS_FOLDER = 2,  /* children: subfolders and messages */
    MS_MESSAGE = 3,
} ms_kind;

typedef struct ms_node {
    ms_kind kind;
    int64_t id; /* 0 for MS_ROOT */
} ms_node;

/* Attributes of a node.  Directories are MS_ROOT, MS_MAILBOX, MS_FOLDER. */
typedef struct ms_attr {
    ms_node node;
    int64_t size;     /* message: exact byte count; directories: 0 */
    int64_t mtime_ns; /* message: internal date; others: last change */
    uint32_t mode;    /* permission bits only (07777) */
    uint32_t uid, gid;
    int64_t imap_uid; /* message: its UID in the folder; others: 0 */
    int64_t mailbox;  /* owning mailbox id (0 for MS_ROOT) */
    /* When the node last changed in any way (bytes, mode, owner, xattrs,
     * name, mtime): st_ctime, which backups compare.  Never set by hand. */
    int64_t ctime_ns;
    /* A folder that is only the parent of others and can hold no message
     * (IMAP's \Noselect): a Maildir++ parent implied by ".a.b" alone. */
    bool noselect;
    /*
     * The mailbox's change sequence at the node's last change, as IMAP
     * CONDSTORE's MODSEQ: a message's moves with any change of it (bytes,
     * flags, name, mode, owner, dates, UID); a folder's or mailbox's with
     * any change of its own and of any direct child (added, changed,
     * renamed, removed).  Compared only with ms_mailbox_modseq of the same
     * mailbox; 0: the backend keeps none (pst).
     */
    uint64_t modseq;
} ms_attr;

/*
 * What ms_setattr changes; a mask of MS_SET_* and the values.  Times are
 * nanoseconds since the epoch, negative before 1970: int64 holds
 * 1677-09-21 to 2262-04-11, and callers refuse others (EOVERFLOW).
 */
enum { MS_SET_MODE = 1, MS_SET_UID = 2, MS_SET_GID = 4, MS_SET_MTIME = 8 };
typedef struct ms_setattr_req {
    unsigned mask;
    uint32_t mode, uid, gid;
    int64_t mtime_ns;
} ms_setattr_req;

/* ---------------------------------------------------------------- store */

typedef struct ms_store ms_store;

enum {
    MS_OPEN_CREATE = 1,   /* create the database if missing (store create) */
    MS_OPEN_READONLY = 2, /* never write, whatever the configuration says */
    MS_OPEN_DAEMON = 4,   /* the mount: clean up after a crashed daemon */
};

/*
 * Open the store described by conf.  Fails with a negative errno and a
 * one-line *err (g_free) naming the file and the problem: missing file
 * (ENOENT), not a mailfs store (EINVAL), no permission (EACCES), newer
 * schema than this build knows (EPROTO).  With MS_OPEN_DAEMON, leftovers
 * of a crashed writer (half-written messages, content of unlinked files
 * that were still open) are dropped: only one daemon may mount a store.
 */
int ms_store_open(const ms_store_conf *conf, int flags, ms_store **out, char **err);
void ms_store_close(ms_store *st);
const char *ms_store_name(const ms_store *st);
/* True when opened read-only, configured so, or its backend cannot write
 * (pst): every write then fails with -EROFS. */
bool ms_store_readonly(const ms_store *st);
/*
 * The name of the backend that reads the file at path as a store of one
 * mailbox (a .pst or .ost file: "pst"), or NULL when none does; import
 * opens its source with it.
 */
const char *ms_store_backend_for(const char *path);
/* True when others change the store behind this library (a mail server
 * delivering into a Maildir): what was read may be stale at once. */
bool ms_store_shared(const ms_store *st);
/*
 * True when every write is a transaction of the store's own, which
 * ms_batch_begin/end can fold any writes of one thread into (the sqlite
 * store): a write there costs a commit, so the mount defers attribute
 * changes that follow a close into its next write (fs/lazy.c).  False
 * where a write is a cheap system call of its own (maildir).
 */
bool ms_store_groups_writes(const ms_store *st);
/* The store's location in the directory ("attr=value;..."), or NULL. */
const char *ms_store_directory(const ms_store *st);

typedef struct ms_store_stats {
    int64_t mailboxes, folders, messages, bytes;
    int64_t file_bytes;        /* size of the store's files on disk */
    int64_t reclaimable_bytes; /* free pages inside them */
    /* Deleted through the mount and still recoverable (ms_deleted_list);
     * not counted in mailboxes, folders, messages and bytes above. */
    int64_t recoverable_mailboxes, recoverable_messages, recoverable_bytes;
    /* Source copies of finished moves, kept for undo until retain-days;
     * not in mailboxes, folders, messages and bytes above. */
    int64_t retained_mailboxes, retained_messages, retained_bytes;
} ms_store_stats;
int ms_store_stats_get(ms_store *st, ms_store_stats *out);
/*
 * Gives the store's free space (left by deleted, moved-out and purged
 * mailboxes) back to the filesystem, while the store stays in use.
 * *before and *after: the size of its files.  -EBUSY when another
 * process kept it locked too long.  Callers refuse it during moves.
 */
int ms_store_compact(ms_store *st, int64_t *before, int64_t *after);
/* Space of the filesystem holding the store, for statfs and preflight. */
int ms_store_statvfs(ms_store *st, struct statvfs *out);
/*
 * Make everything committed so far durable (fsync of the database and
 * its log).  Commits are atomic without it; durable only after it.
 */
/*
 * Lets the store run work of its own in threads from now on (the sqlite
 * store's log checkpoints, off the path of the writes: see
 * sqlite_checkpoint.c); until then it does that work inline, as SQLite
 * would.  For a process that will not fork any more: the daemon calls it
 * once it is in the background (a thread does not cross a fork, and one
 * inside SQLite at the fork would leave its locks held in the child).
 */
void ms_store_background(ms_store *st);
int ms_store_sync(ms_store *st);
/*
 * Groups this thread's following writes to st into one transaction until
 * ms_batch_end: bulk copies (moves, imports) then write each page once
 * instead of once per message.  Each write still succeeds or fails alone.
 * The store's other writers wait for the batch, so keep batches short.
 * Without commit, ms_batch_end discards everything the batch wrote.
 */
int ms_batch_begin(ms_store *st);
int ms_batch_end(ms_store *st, bool commit);

/* ----------------------------------------------------------- namespace */

/* Child of parent named name.  -ENOENT when there is none. */
int ms_lookup(ms_store *st, ms_node parent, const char *name, ms_attr *out);
int ms_getattr(ms_store *st, ms_node node, ms_attr *out);
int ms_setattr(ms_store *st, ms_node node, const ms_setattr_req *req, ms_attr *out);

/*
 * Calls fn for each child of parent in a stable order, starting after
 * cookie (0 = from the start).  Each child carries its own cookie, so a
 * listing can resume.  fn returns nonzero to stop early.  Returns 0 or a
 * negative errno.
 */
typedef int (*ms_list_fn)(void *ctx, const char *name, const ms_attr *attr, uint64_t cookie);
int ms_list(ms_store *st, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx);

/* Create a mailbox (parent MS_ROOT) or folder (parent mailbox or folder). */
int ms_mkdir(ms_store *st, ms_node parent, const char *name, uint32_t mode, uint32_t uid,
             uint32_t gid, ms_attr *out);
/* Remove an empty mailbox or folder: -ENOTEMPTY otherwise.  Kept as a
 * deleted item (with its ACL or special-use) where the backend has them. */
int ms_rmdir(ms_store *st, ms_node parent, const char *name);
/*
 * Delete a message.  Readers that have it open keep reading its bytes
 * (see ms_reader_open).  A backend with deleted items keeps the message
 * there (ms_deleted_list), bytes included, until it is purged.
 */
int ms_unlink(ms_store *st, ms_node folder, const char *name);
/*
 * Rename or refile a message or folder within one mailbox, or rename a
 * mailbox within the store (parent and newparent MS_ROOT).  Replaces an
 * existing message at the destination unless noreplace (its readers
 * keep their bytes); a folder replaces only an empty folder.  What is
 * replaced is deleted as by ms_unlink / ms_rmdir (and kept likewise).
 * Crossing mailboxes: -EXDEV.  A mailbox never becomes a folder nor a
 * folder a mailbox: a rename between store level and below it is -EPERM.
 */
int ms_rename(ms_store *st, ms_node parent, const char *name, ms_node newparent,
              const char *newname, bool noreplace);

/* Resolve "MAILBOX" or "MAILBOX/FOLDER/SUB" ('/'-separated) to a node. */
int ms_resolve(ms_store *st, const char *path, ms_node *out);

/* ---------------------------------------------------------------- xattrs */

/*
 * user.mail.flags (messages), user.mail.special-use (folders) and
 * user.mail.acl (mailboxes).  get: -ENODATA when unset or not applicable;
 * the value is g_malloc'd, not NUL-terminated, length in *len.  set:
 * -EINVAL for a malformed value, -ENOTSUP for any other name.  list:
 * the names present, each NUL-terminated, in a g_malloc'd buffer.
 */
/*
 * Values are checked strictly and stored in a canonical form that getxattr
 * then returns (see ms_flags_normalize; user.mail.acl: "grantee rights"
 * lines, one per grantee, no blank line, without a final newline).  With
 * MS_XATTR_VERBATIM in flags, a value copied from a store (a move) is
 * stored byte for byte with the looser checks values had before.
 */
#define MS_XATTR_VERBATIM 0x100
int ms_xattr_get(ms_store *st, ms_node node, const char *name, char **value, size_t *len);
int ms_xattr_set(ms_store *st, ms_node node, const char *name, const char *value, size_t len,
                 int flags /* XATTR_CREATE / XATTR_REPLACE or 0 */);
/*
 * The canonical form of a user.mail.flags value (g_free *out): flags
 * separated by one space, each once (case-insensitively, the first
 * spelling kept), system flags spelled as RFC 3501 does.  -EINVAL for
 * anything that is not a storable flag: \Recent, unknown system flags,
 * keywords that are not IMAP atoms (non-ASCII, control characters,
 * atom-specials).
 */
int ms_flags_normalize(const char *v, size_t len, char **out, size_t *out_len);
int ms_xattr_list(ms_store *st, ms_node node, char **names, size_t *len);
int ms_xattr_remove(ms_store *st, ms_node node, const char *name);

/* ------------------------------------------------------------- content */

/*
 * A reader owns one version of a message's bytes from ms_reader_open to
 * ms_reader_close: a rewrite, unlink, rename over it, purge or drop of
 * the message, in this process or another one (mailfsctl purge beside
 * the daemon), does not change what it reads, nor how much.  The bytes
 * it opened are resolved and pinned in one step, so there is no moment
 * at which they can go away under it.  (The sqlite backend shows its
 * pins to other processes through byte-range locks on "<store>-pins";
 * should the bytes go anyway, without that file, reads fail with -EIO
 * and a log line: never short or changed bytes.)
 */
typedef struct ms_reader ms_reader;
int ms_reader_open(ms_store *st, int64_t message, ms_reader **out);
/* Bytes read (short only at end of message) or a negative errno. */
ssize_t ms_reader_pread(ms_reader *r, void *buf, size_t len, int64_t off);
int64_t ms_reader_size(const ms_reader *r);
/* Releases the bytes: replaced or deleted ones are freed with the last reader. */
void ms_reader_close(ms_reader *r);

/*
 * Writers.  A message being written is held in a spool (memory while
 * small and sequential, an unlinked temporary file beyond that) and
 * reaches the store in one transaction at ms_writer_commit: no reader
 * ever sees half a message.
 *
 * ms_message_create reserves name in folder for a new message (so a
 * second create of the same name fails with -EEXIST) and returns the
 * node of the message-to-be; it stays invisible to lookup and list until
 * its first commit.  A backend may keep the reservation in this process
 * only (sqlite: no row until the first commit, so a restore pays one
 * transaction per file less); should another process give the name to a
 * message meanwhile, the first commit fails with -EEXIST and replaces
 * nothing.  ms_writer_open opens a writer on that message, or on
 * an existing one (then the commit replaces its bytes atomically; unless
 * truncate, the writer starts from the current bytes, which it reads as
 * a reader would: a concurrent rewrite or unlink cannot cut them short).
 */
typedef struct ms_writer ms_writer;
int ms_message_create(ms_store *st, ms_node folder, const char *name, uint32_t mode, uint32_t uid,
                      uint32_t gid, ms_attr *out);
int ms_writer_open(ms_store *st, int64_t message, bool truncate, ms_writer **out);
/* A writer for a new message that gets the name "<uid>.eml" at commit. */
int ms_writer_deliver(ms_store *st, ms_node folder, ms_writer **out);
ssize_t ms_writer_pwrite(ms_writer *w, const void *buf, size_t len, int64_t off);
int ms_writer_truncate(ms_writer *w, int64_t size);
/* Reads what the writer holds now (read-after-write on one open file). */
ssize_t ms_writer_pread(ms_writer *w, void *buf, size_t len, int64_t off);
int64_t ms_writer_size(const ms_writer *w);
/* The message id (0 for a delivery not yet committed). */
int64_t ms_writer_message(const ms_writer *w);
bool ms_writer_dirty(const ms_writer *w);
/* Attributes applied with the next commit (mode, owner, internal date). */
void ms_writer_setattr(ms_writer *w, const ms_setattr_req *req);
/*
 * Shows a's message as it will be after the next commit: the spooled size
 * and any pending attributes.  No-op unless the writer is dirty.
 */
void ms_writer_overlay(const ms_writer *w, ms_attr *a);
/* Flags applied with the next commit (space-separated IMAP flags). */
int ms_writer_set_flags(ms_writer *w, const char *flags, size_t len);
/*
 * Commit the spooled bytes as the message's content.  Its ctime becomes
 * now.  A writer of ms_writer_open whose bytes changed after the last
 * mtime it set (through ms_writer_setattr) also sets the mtime to now,
 * so backups see the rewrite; deliveries and imports keep the date they
 * were given (or their arrival).  The bytes replaced are freed once no
 * reader has them open.  With durable, returns only
 * once the commit is on stable storage.  *out (may be NULL) gets the
 * committed attributes.
 */
int ms_writer_commit(ms_writer *w, bool durable, ms_attr *out);
/*
 * Free the writer.  A message created by ms_message_create that was never
 * committed is removed again.
 */
void ms_writer_close(ms_writer *w);

/* ------------------------------------------- mailbox administration */

/*
 * What moves need beyond the tree.  A mailbox is visible, or hidden as
 * the incoming copy of a move in its target store, or hidden as the
 * retained source copy of a finished move.
 *
 * Hidden names (ms_hidden_name) are "~mailfs~move~<id>~<name>" and
 * "~mailfs~retained~<id>~<name>": no '/', so a Maildir directory or an
 * IMAP name can hold them; a visible mailbox cannot be named with the
 * reserved prefix "~mailfs~" (ms_mkdir and ms_rename refuse it, EINVAL),
 * so they never clash.  Stores made before keep "move/<id>/<name>" and
 * "retained/<id>/<name>": both forms are found (ms_hidden_find) and
 * recognised (ms_hidden_parse).
 *
 * What a mailbox refuses, in every backend (store.c's ms_mailbox_refusal,
 * checked inside each write's transaction so that no write slips past a
 * lock taken meanwhile): every write into a mailbox (mkdir, rmdir,
 * unlink, rename, setattr, xattrs, message create and commit, restore of
 * its deleted items) names the mailbox it changes, and is refused with
 *  - -EBUSY while a move holds the mailbox's lock (lock_move != 0), until
 *    the move ends; ms_mailbox_set bypasses the lock, being how a move
 *    takes and drops it;
 *  - -ESTALE in a retained source copy: frozen, a write would be lost to
 *    the user, who sees the mailbox in its new store;
 *  - -ENOENT in deleted items, which are gone from the tree.
 * A move's incoming copy is written by its move only (it is hidden, so no
 * path reaches it).
 */
typedef enum ms_mb_state {
    MS_MB_VISIBLE = 0,
    MS_MB_INCOMING = 1,
    MS_MB_RETAINED = 2,
    /* The deleted items of one mailbox ("~mailfs~deleted~<mailbox id>~<name>"):
     * see ms_deleted_list. */
    MS_MB_DELETED = 3,
} ms_mb_state;

/* Length of a journal id (ms_journal_id) with its NUL. */
#define MS_JOURNAL_ID_LEN 40

typedef struct ms_mailbox_info {
    int64_t id;
    ms_mb_state state;
    int64_t lock_move;    /* the move holding the lock, or 0 */
    int64_t retain_until; /* retained copies: expiry (seconds since epoch) */
    /*
     * Which journal the lock's move is in ("" for locks taken before
     * journals had ids: taken to be the site's journal).  Move ids restart
     * in a new journal, so a lock or hidden copy names its journal too:
     * recovery then settles it even when its journal entry is gone.
     */
    char lock_journal[MS_JOURNAL_ID_LEN];
    /* The move this mailbox is the incoming, retained or finished copy
     * of, and that move's journal (0 and "": none known). */
    int64_t move_id;
    char move_journal[MS_JOURNAL_ID_LEN];
    char name[2 * MS_NAME_MAX + 64];
} ms_mailbox_info;

/* ms_mailbox_set changes what is set: name NULL, state < 0, lock < 0,
 * retain_until < 0 and move_id <= 0 mean "unchanged".  journal names the
 * journal of the lock being taken (lock_move > 0; a lock dropped forgets
 * its journal) and of move_id (move_id > 0). */
typedef struct ms_mailbox_change {
    const char *name;
    int state;
    int64_t lock_move;
    int64_t retain_until;
    const char *journal;
    int64_t move_id;
} ms_mailbox_change;

typedef struct ms_message_meta {
    uint8_t sha256[32]; /* of the bytes (see ms_message_get_meta) */
    char *flags;        /* g_malloc'd, NUL-terminated; NULL when unset */
    /* A store of files (maildir): the file's identity, 0 in others.  Two
     * messages with one identity share their bytes (a hard link): the
     * same bytes, whatever a hash would say. */
    uint64_t dev, ino;
} ms_message_meta;

/* The hidden name of move's copy of mailbox name in state MS_MB_INCOMING
 * or MS_MB_RETAINED (g_free). */
char *ms_hidden_name(ms_mb_state state, int64_t move, const char *name);
/* Move's copy of name in state, under its name or the one older stores
 * gave it; -ENOENT if none. */
int ms_hidden_find(ms_store *st, ms_mb_state state, int64_t move, const char *name, int64_t *id);
/* True when hidden is a hidden move name of either form: *move gets the
 * move's id, *name the mailbox's own name (a pointer into hidden). */
bool ms_hidden_parse(const char *hidden, int64_t *move, const char **name);
/* True when a visible mailbox may not be called name (the prefix of
 * hidden names): ms_mkdir and ms_rename refuse it with -EINVAL. */
bool ms_hidden_reserved(const char *name);

/* A mailbox created directly in a hidden state (a move's incoming copy). */
int ms_mailbox_create(ms_store *st, const char *name, ms_mb_state state, const ms_attr *like,
                      int64_t *id);
/* The mailbox named name in state; -ENOENT if none. */
int ms_mailbox_find(ms_store *st, const char *name, ms_mb_state state, int64_t *id);
int ms_mailbox_get_info(ms_store *st, int64_t id, ms_mailbox_info *out);
/*
 * Calls fn for every mailbox of the store, hidden ones included, in id
 * order; fn returns nonzero to stop.  Backends without hidden mailboxes
 * (read-only ones) list nothing.
 */
typedef int (*ms_mailbox_fn)(void *ctx, const ms_mailbox_info *info);
int ms_mailbox_scan(ms_store *st, ms_mailbox_fn fn, void *ctx);
/* Bypasses the lock on purpose: it is how a move takes and drops it. */
int ms_mailbox_set(ms_store *st, int64_t id, const ms_mailbox_change *chg);
/* Deletes the mailbox with all its folders, messages and bytes. */
int ms_mailbox_drop(ms_store *st, int64_t id);
int ms_mailbox_size(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes);
/*
 * ms_mailbox_size, or the backend's estimate when exact totals would cost
 * reading the whole mailbox (a PST file, known exactly only once every
 * item is rendered): then *estimated is true.  An estimate's bytes are
 * meant to be above the real size but are not a bound: a caller that
 * promises space from them checks again once the real bytes pass them.
 */
int ms_mailbox_size_estimate(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes,
                             bool *estimated);
/* With hash, sha256 is the bytes' SHA-256 (read now from a store that
 * keeps none, as a Maildir); without, it is what the store keeps, or
 * zeros (flags and identity only, as the store's listing last saw them:
 * cheap). */
int ms_message_get_meta(ms_store *st, int64_t id, bool hash, ms_message_meta *out);
/* A writer for a new message named name with IMAP UID uid (0: next). */
int ms_writer_import(ms_store *st, ms_node folder, const char *name, int64_t uid, ms_writer **out);

/*
 * A folder's IMAP UID state: its UIDVALIDITY and the UID its next message
 * gets (UIDNEXT).  Every backend that keeps UIDs keeps these per folder,
 * so a move can give the target's folders the source's values and an
 * IMAP client's cache stays valid.  uidnext is never below any UID the
 * folder holds (set raises it past them); set may also lower it down to
 * there, as a move or a restore states the source's values (an admin's
 * act: clients of the folder being restored over may have seen more);
 * uidvalidity is nonzero.
 */
typedef struct ms_folder_uids {
    uint32_t uidvalidity;
    int64_t uidnext;
} ms_folder_uids;
/* -ENODATA: the folder has no UID state yet (a Maildir folder no one
 * numbered a message in): a copy starts its own. */
int ms_folder_uids_get(ms_store *st, ms_node folder, ms_folder_uids *out);
int ms_folder_uids_set(ms_store *st, ms_node folder, const ms_folder_uids *u);

/*
 * A digest of everything in mailbox id that a move copies (folders,
 * messages, their flags and UIDs).  A move takes it after locking and
 * again before its commit point: a difference means something wrote into
 * the mailbox behind the store's own lock (a mail server delivering into
 * a Maildir), and the move rolls back with -EAGAIN.  -ENOTSUP from a
 * backend that every write reaches through the store (sqlite): nothing
 * can change there behind the lock.
 */
#define MS_STAMP_LEN 32
int ms_mailbox_stamp(ms_store *st, int64_t id, uint8_t out[MS_STAMP_LEN]);

/*
 * A floor of mailbox id's change sequence (ms_attr.modseq): every change
 * made in the mailbox after this returns gives the nodes it changes (and
 * their parents) a modseq >= *out.  Changes made before may too (false
 * positives), but none made after is missed: a move's delta pass takes
 * the floor first and, at the next pass, re-reads only nodes at or above
 * it.  -ENOTSUP: the backend keeps no sequence (pst); -ENOENT: no such
 * mailbox.
 */
int ms_mailbox_modseq(ms_store *st, int64_t id, uint64_t *out);

/*
 * Makes message (of store src) a new message name with IMAP UID uid in
 * folder of st, sharing its bytes instead of copying them (a hard link
 * between two maildir stores on one filesystem), with its flags, date,
 * mode and owner.  -EXDEV when st cannot share src's bytes (another
 * backend, another filesystem): the caller copies.  -ENOENT when the
 * message's file was renamed or removed meanwhile (a mail server behind
 * the store): the caller may copy it through a reader, which finds it
 * under its new name if it still exists.  *out (may be NULL) gets the new
 * message's attributes.  Inside a batch like any write.
 */
int ms_message_link(ms_store *st, ms_node folder, const char *name, int64_t uid, ms_store *src,
                    int64_t message, ms_attr *out);

/*
 * Makes folder a mere parent of its subfolders again (ms_attr.noselect),
 * as the move's source folder was: in a Maildir, its own directory goes
 * when it holds no message.  -ENOTSUP where every folder can hold
 * messages (sqlite): the folder stays as it is.  -ENOTEMPTY when it holds
 * messages.
 */
int ms_folder_unselect(ms_store *st, ms_node folder);

/* -------------------------------------------------------- deleted items */

/*
 * What is deleted through the mount stays recoverable until purged, as
 * Exchange keeps deleted mailboxes and Dovecot's lazy_expunge deleted mail.
 * unlink, and a rename that replaces a message, refile the message (its
 * bytes, UID, flags, mode, owner and date unchanged) into its mailbox's
 * hidden deleted items, under the path of the folder it was in; rmdir of
 * a folder or a mailbox records its attributes (special-use, ACL) there.
 * Rewriting a message's bytes in place keeps nothing.  The pst backend
 * has no deleted items (-ENOTSUP).
 */
typedef struct ms_deleted {
    ms_kind kind;        /* MS_MAILBOX, MS_FOLDER or MS_MESSAGE */
    const char *mailbox; /* the mailbox's name */
    const char *folder;  /* the folder's path ('/'-separated), "" for a mailbox */
    const char *name;    /* a message's name; NULL for folders and mailboxes */
    int64_t id;          /* a message's id; 0 otherwise */
    int64_t messages;    /* messages kept (in a folder: its subfolders too) */
    int64_t bytes;       /* their size */
    int64_t deleted_ns;  /* when it was deleted */
    /* Inside a deleted folder or mailbox: restored with it. */
    bool inside;
} ms_deleted;
typedef int (*ms_deleted_fn)(void *ctx, const ms_deleted *d);
/*
 * Calls fn for every deleted mailbox, folder and message of the store (of
 * mailbox only, unless NULL), each mailbox's items after it, folders
 * before what they hold.  fn returns nonzero to stop.
 */
int ms_deleted_list(ms_store *st, const char *mailbox, ms_deleted_fn fn, void *ctx);
/*
 * Brings back what was deleted of mailbox: everything (path NULL), the
 * folder at path ("Archive/2019", with what it held) or the message at
 * path ("INBOX/12.eml"), with names, UIDs, flags, modes, owners, dates,
 * special-use and ACL.  A mailbox that is gone is recreated.  Of a name
 * deleted more than once, the newest deletion comes back (older ones stay
 * recoverable).  A name taken in the visible tree refuses the whole
 * restore with -EEXIST (logged, naming it): nothing is overwritten.
 * -ENOENT when nothing deleted matches.  *restored (may be NULL): how
 * many messages came back.
 */
int ms_deleted_restore(ms_store *st, const char *mailbox, const char *path, int64_t *restored);

typedef struct ms_purged {
    int64_t mailboxes, folders, messages, bytes;
} ms_purged;
/*
 * Drops deleted items deleted more than retain_days ago (all of them with
 * all), bytes included; ms_store_compact then gives the space back.
 * Bytes a reader (of any process) has open stay until it closes them.
 */
int ms_deleted_purge(ms_store *st, int retain_days, bool all, ms_purged *out);

/* ------------------------------------------------------------ directory */

/*
 * The LDAP directory (DESIGN 5).  A "spec" is "attr=value;attr=value", as
 * in a store's `directory` key; an empty value means "absent".  Every
 * function returns 0 or a negative errno (-EIO: unreachable or refused,
 * -ENOENT: no such entry) and, with err non-NULL, one line saying why
 * (g_free).  Operations reconnect once if the server went away.
 */
typedef struct ms_directory ms_directory;
/* Succeeds while the server is merely unreachable (operations reconnect);
 * fails for an unusable configuration, e.g. an unreadable password file. */
int ms_directory_open(const ms_directory_conf *conf, ms_directory **out, char **err);
void ms_directory_close(ms_directory *d);
/* 0 if the server answers now (reconnecting if needed). */
int ms_directory_ping(ms_directory *d, char **err);
/* The DN of the one entry matching the configured filter for mailbox. */
int ms_directory_entry(ms_directory *d, const char *mailbox, char **dn, char **err);
/* The current values of the spec's attributes, as a spec (g_free). */
int ms_directory_read(ms_directory *d, const char *dn, const char *spec, char **current,
                      char **err);
/* Replaces the spec's attributes of dn with its values. */
int ms_directory_write(ms_directory *d, const char *dn, const char *spec, char **err);
/* True when spec is ATTRIBUTE=VALUE pairs separated by ';'. */
bool ms_directory_spec_valid(const char *spec);
/*
 * The spec that puts the configured hold (conf lock) on an entry, %t
 * expanded (on), or the one that removes it (every attribute emptied);
 * NULL when no hold is configured.  g_free.
 */
char *ms_directory_hold_spec(ms_directory *d, bool on);
/*
 * Every entry under base that the filter could match (its %s as *), in
 * one paged search: fn gets the mailbox name (the filter's attribute),
 * the DN and the values of attrs as a spec.  fn returns nonzero to stop.
 */
typedef int (*ms_dir_entry_fn)(void *ctx, const char *name, const char *dn, const char *spec);
int ms_directory_scan(ms_directory *d, const char *const *attrs, ms_dir_entry_fn fn, void *ctx,
                      char **err);

/* ---------------------------------------------------------------- moves */

/*
 * The journal is the sidecar SQLite database of moves (DESIGN section 4).
 * A move copies a mailbox into a hidden mailbox of the target store,
 * verifies every message's SHA-256, passes one durable commit point in
 * the journal, then shows the target and hides (retains) the source.
 * Before the commit point any failure or crash rolls back; after it the
 * move rolls forward.  ms_recover does either for every unfinished move
 * whose process is gone; the daemon runs it at every mount.
 */
typedef struct ms_journal ms_journal;
typedef struct ms_site ms_site;
typedef struct _GArray GArray;
typedef struct _GPtrArray GPtrArray;
int ms_journal_open(const char *path, ms_journal **out, char **err);
void ms_journal_close(ms_journal *j);
/* The journal's id, made once when its file is created: stores name it
 * next to every lock and hidden copy a move leaves in them. */
const char *ms_journal_id(const ms_journal *j);
/*
 * 0 while the journal's path still names the file that was opened; else
 * -ENOENT (deleted) or -ESTALE (replaced), with one line in *err (g_free).
 * A move refuses to start, or to pass its commit point, without it: its
 * record would go to a file nobody can read after a crash.
 */
int ms_journal_verify(ms_journal *j, char **err);
/*
 * Site-wide values kept in the journal's meta table (the mount's top
 * directory has no store of its own: its mtime lives here).  get:
 * -ENOENT when unset.  set: durable once it returns 0.
 */
int ms_journal_attr_get(ms_journal *j, const char *key, int64_t *value);
int ms_journal_attr_set(ms_journal *j, const char *key, int64_t value);

/*
 * Where a move stands.  The journal keeps each as its name (a TEXT column,
 * so journals written before these enums read the same); a name this
 * build does not know reads as MS_MOVE_UNKNOWN, which no recovery, undo
 * or purge acts on.
 */
typedef enum ms_move_state {
    MS_MOVE_UNKNOWN = 0,
    MS_MOVE_RUNNING,     /* before its commit point: a crash rolls it back */
    MS_MOVE_COMMITTED,   /* past it, not finished: a crash rolls it forward */
    MS_MOVE_DONE,        /* finished; the source copy retained for undo */
    MS_MOVE_ROLLED_BACK, /* failed or cancelled; the source as before */
    MS_MOVE_UNDONE,      /* moved back by ms_undo */
    MS_MOVE_PURGED,      /* done, and its retained copy dropped */
    /* Copied and kept in step with the source, which stays unlocked and
     * writable, waiting for its cutover (ms_move with MS_MOVE_PREPARE):
     * recovery leaves it; the next ms_move of it does the cutover. */
    MS_MOVE_PREPARED,
} ms_move_state;

/* The last step a move reached, in the order a move passes them. */
typedef enum ms_move_step {
    MS_STEP_UNKNOWN = 0,
    MS_STEP_RECORDED,  /* journal row written */
    MS_STEP_LOCKED,    /* source locked (a move_step row only) */
    MS_STEP_COPYING,   /* into the hidden incoming copy (the bulk pass) */
    MS_STEP_SYNCING,   /* delta passes, the source still writable */
    MS_STEP_CUTOVER,   /* locked (mount, directory): the final passes */
    MS_STEP_COPIED,    /* the target synced */
    MS_STEP_VERIFIED,  /* every message compared */
    MS_STEP_DIRECTORY, /* step 4: the entry pointed at the target */
    MS_STEP_COMMITTED, /* the commit point passed */
    MS_STEP_FINISHED,  /* target shown, source retained */
} ms_move_step;

/* The journal's name of a state or step ("rolled-back"); "unknown" for
 * MS_*_UNKNOWN or a value out of range.  Never NULL. */
const char *ms_move_state_name(ms_move_state s);
const char *ms_move_step_name(ms_move_step s);

typedef struct ms_move_info {
    int64_t id;
    char mailbox[MS_NAME_MAX + 1];
    char newname[MS_NAME_MAX + 1]; /* its name in the target */
    char source[MS_NAME_MAX + 1], target[MS_NAME_MAX + 1];
    ms_move_state state;
    ms_move_step step; /* the last step reached */
    int64_t total_messages, total_bytes, done_messages, done_bytes;
    int64_t started_ns, updated_ns, finished_ns;
    int64_t lock_ns;       /* how long writes were refused */
    int64_t lock_start_ns; /* when the source was locked; 0: never (imports) */
    int64_t retain_until;  /* done moves: when the source copy expires */
    char error[256];
} ms_move_info;

/*
 * One pass of an online move over the source (DESIGN 10): "bulk" copies
 * everything with the source writable, "delta" carries over what changed
 * since the pass before, "final" runs under the cutover's lock.
 */
typedef struct ms_move_pass {
    int pass; /* 1, 2, ... */
    char phase[8];
    int64_t messages, bytes; /* copied */
    int64_t removed;         /* messages and folders dropped from the copy */
    int64_t updated;         /* flags, dates, folder attributes changed */
    int64_t started_ns, ended_ns;
    /* The source's change sequence when the pass began: the next pass
     * re-checks what changed at or after it. */
    uint64_t floor;
} ms_move_pass;
/* The passes of move id, in order (g_free *out). */
int ms_journal_passes(ms_journal *j, int64_t id, ms_move_pass **out, size_t *n);

/* True while a move is not settled: running, or past its commit point
 * but not finished; recovery (or the mover) still owes it a step. */
bool ms_move_unsettled(const ms_move_info *m);
/* All moves, newest first; free with g_free. */
int ms_journal_list(ms_journal *j, ms_move_info **out, size_t *n);
int ms_journal_get(ms_journal *j, int64_t id, ms_move_info *out);

/* Required by ms_move and ms_import (-EINVAL without). */
typedef struct ms_move_opts {
    const char *newname; /* the name in the target (NULL: the same) */
    int retain_days;     /* how long the source copy is kept: the config's */
    /* With a directory: step 4 points the mailbox's entry at the target. */
    ms_directory *dir;
    /* Polled between messages: true cancels the move (it rolls back, -EINTR). */
    bool (*cancelled)(void *ctx);
    void *ctx;
    /* MS_MOVE_WHOLE: the whole move; with a prepared move of the mailbox
     * into that store, its cutover alone.  MS_MOVE_PREPARE: bulk copy and
     * delta passes only, the move left prepared (MS_MOVE_PREPARED) for a
     * later call; again on a prepared move: its delta passes.
     * MS_MOVE_COMPLETE: as WHOLE, but -ENOENT without a prepared move.
     * MS_MOVE_OFFLINE: DESIGN 4's move, the mailbox locked for all of it
     * (one copy, no passes): for a mailbox that must not change meanwhile,
     * and the benchmark's baseline. */
    enum { MS_MOVE_WHOLE, MS_MOVE_PREPARE, MS_MOVE_COMPLETE, MS_MOVE_OFFLINE } mode;
    /* The command that drops the user's sessions at the cutover (argv
     * split by shell rules, %s the mailbox name; run without a shell);
     * NULL: none.  A failure is logged, the move goes on: the directory's
     * hold and the final passes catch what the sessions still write. */
    const char *kick;
    /* ms_import: the PST helpers to reuse (NULL: one started for it). */
    ms_pst_helpers *pst_helpers;
} ms_move_opts;

/*
 * Moves mailbox from src to dst.  Blocks until the move committed (0) or
 * rolled back (negative errno: DESIGN's preflight table, -EINTR when
 * cancelled, -EIO when verification failed or the journal could not be
 * written durably, -ENOSPC when the disk filled, -EAGAIN when the source
 * changed behind its lock meanwhile (ms_mailbox_stamp): retry).
 * -EINPROGRESS: it passed its commit point but could not finish (logged);
 * it is handed to recovery, which rolls it forward (the mailbox may stay
 * hidden in the target until then).  *id (may be NULL) gets the journal
 * id once there is one.
 */
int ms_move(ms_journal *j, ms_store *src, ms_store *dst, const char *mailbox,
            const ms_move_opts *opts, int64_t *id);
/*
 * Imports the .pst/.ost file as mailbox in dst through the move protocol
 * (journaled, verified, all or nothing), the file untouched.  An import
 * interrupted before its commit point (its process gone) is resumed: what
 * it had copied stays.  spool: where rendered items wait (NULL: $TMPDIR).
 * A file libpst cannot read fails with -EIO and a log line naming it.
 */
int ms_import(ms_journal *j, const char *file, ms_store *dst, const char *mailbox,
              const char *spool, const ms_move_opts *opts, int64_t *id);
/*
 * Rolls back or forward every unfinished move; returns how many it
 * settled.  keep_imports leaves interrupted imports for ms_import to
 * resume (the daemon at mount); without it they are rolled back.  Then
 * settles what the stores hold that j has no entry for (ms_orphans with
 * fix): locks and hidden copies of moves whose journal was deleted or
 * replaced.  *left (may be NULL) gets the ids of moves it could not
 * settle (each logged with the reason), which stay for the next try.
 */
int ms_recover(ms_journal *j, ms_store *const *stores, size_t n, ms_directory *dir, int retain_days,
               bool keep_imports, GArray *left);
/* True when ms_recover has something to do: a move whose process is gone
 * (or that was handed to recovery), or a hold on a user left to lift. */
bool ms_journal_needs_recovery(ms_journal *j);
/*
 * Locks and hidden copies in stores that j does not account for: the
 * journal holding their move was deleted or replaced (or the move never
 * reached its journal).  Each becomes an ms_finding (MS_FIND_ORPHAN_LOCK
 * or MS_FIND_ORPHAN_COPY) appended to findings.  With fix, each is
 * settled as recovery would have: a move whose target was never shown is
 * rolled back (hidden copy dropped, source unlocked, directory pointed at
 * the source's store); one whose target was shown is finished; a lock
 * with nothing behind it is dropped; a retained copy is entered in j as
 * a finished move, so that `moves`, undo and purge know it again.
 * Returns the number of findings left unfixed, or a negative errno.
 */
int ms_orphans(ms_journal *j, ms_store *const *stores, size_t n, ms_directory *dir, int retain_days,
               bool fix, GPtrArray *findings);
/*
 * Reverses finished move id: the mailbox goes back to its source store,
 * with everything that arrived in the target since.  Refuses (-ESTALE)
 * once the retained source copy has expired or was purged.  When the
 * target mailbox was deleted since, the retained copy becomes the visible
 * mailbox again (*new_id 0; -EEXIST if the source has one of that name)
 * and the deleted one stays in the target's deleted items.  The site
 * gives the journal, the stores, the directory and retain-days; a store
 * or directory that cannot be opened fails the undo (logged).  Undoing a
 * prepared move abandons it (its copy dropped; *new_id 0; -EBUSY while
 * its passes run).
 */
int ms_undo(ms_site *site, int64_t id, int64_t *new_id);
/*
 * Carries mail that reached a moved mailbox's old place after its move
 * (DESIGN 10: a delivery routed by a lookup made before the directory
 * switched) into the mailbox where it lives now, for finished moves whose
 * source copy is still retained.  Each message is copied durably before
 * it is removed from the old place; *carried (may be NULL) gets how many.
 */
int ms_carry_late(ms_journal *j, ms_store *const *stores, size_t n, int64_t *carried);
/* Drops retained source copies past their time (all of them with all).
 * Moves whose source store cannot be opened (logged) are left for later. */
int ms_purge(ms_site *site, bool all);

/* ----------------------------------------------------------------- site */

/*
 * A site: one configuration file with its stores, its journal and its
 * directory, as the daemon, mailfsctl and recovery use them.  Each is
 * opened once, when first asked for, and closed with the site; so a
 * command opens only what it needs (reading the journal needs no
 * directory, and so no LDAP password).  Opening is not thread-safe: open
 * what the threads will use (ms_site_stores, ms_site_journal) before
 * sharing the site; what is open may then be used from any thread.
 */
/* Loads the configuration (see ms_config_load); opens nothing else.
 * store_flags (MS_OPEN_*) apply to every store the site opens. */
int ms_site_open(const char *config, int store_flags, ms_site **out, char **err);
void ms_site_close(ms_site *s);
const ms_config *ms_site_config(const ms_site *s);
/* The store called name, opened on first use: -ENOENT when the
 * configuration has none, or ms_store_open's errors, with *err. */
int ms_site_store(ms_site *s, const char *name, ms_store **out, char **err);
/* Every store, in configuration order (the site owns the array). */
int ms_site_stores(ms_site *s, ms_store *const **stores, size_t *n, char **err);
/* The journal, opened on first use (ms_journal_open). */
int ms_site_journal(ms_site *s, ms_journal **out, char **err);
/* The directory, opened on first use; *out NULL (and 0) when the
 * configuration has no [directory].  A failed open is retried next call. */
int ms_site_directory(ms_site *s, ms_directory **out, char **err);
/* Closes the stores and the journal (not the directory), to be opened
 * again on next use: SQLite handles must not cross fork(). */
void ms_site_release(ms_site *s);

/*
 * What an errno returned by a move or an administrative command means, in
 * words an admin acts on: one table for the CLI, the daemon's log and the
 * journal's error column.  op says which operation returned it (the same
 * errno means different things for each); errnos without a meaning of
 * their own get strerror's text.  Never NULL.
 */
typedef enum ms_op {
    MS_OP_ANY = 0,
    MS_OP_MOVE,    /* ms_move, and a mailbox mv between stores */
    MS_OP_IMPORT,  /* ms_import */
    MS_OP_UNDO,    /* ms_undo */
    MS_OP_RESTORE, /* ms_deleted_restore */
    MS_OP_COMPACT, /* ms_store_compact */
    MS_OP_CREATE,  /* ms_mkdir of a mailbox (mailfsctl mailbox create) */
} ms_op;
const char *ms_strerror(ms_op op, int rc);

/* ---------------------------------------------------------------- check */

typedef enum ms_finding_kind {
    MS_FIND_ORPHAN,          /* a mailbox with no directory entry */
    MS_FIND_MISSING,         /* an entry naming a store that lacks the mailbox */
    MS_FIND_MISMATCH,        /* the entry names one store, the mailbox is in another */
    MS_FIND_DUPLICATE,       /* the same mailbox visible in two stores */
    MS_FIND_UNKNOWN_GRANTEE, /* an ACL grant to a name the directory does not know */
    MS_FIND_PENDING_MOVE,    /* a move the journal has not settled */
    MS_FIND_EXPIRED_COPY,    /* a retained source copy past retain-days */
    MS_FIND_ORPHAN_LOCK,     /* a mailbox locked by a move its journal does not know */
    MS_FIND_ORPHAN_COPY,     /* a hidden move copy its journal does not know */
} ms_finding_kind;

typedef struct ms_finding {
    ms_finding_kind kind;
    char *mailbox, *store, *dn, *detail;
    bool fixed; /* a --fix option repaired it */
} ms_finding;

typedef struct ms_check_opts {
    bool fix_location;            /* point mismatched entries where the mailbox is */
    bool remove_unknown_grantees; /* drop ACL grants to unknown names */
    bool fix_orphans;             /* settle orphan locks and copies (ms_orphans) */
    int retain_days;              /* for retained copies entered in the journal */
} ms_check_opts;

/*
 * Compares directory (may be NULL) and stores, and reads the journal (may
 * be NULL) for unsettled moves and expired copies.  *findings: a
 * GPtrArray of ms_finding* (free with g_ptr_array_free).  One paged LDAP
 * search in all.
 */
int ms_check(ms_store *const *stores, size_t n, ms_directory *dir, ms_journal *j,
             const ms_check_opts *o, GPtrArray **findings, char **err);
const char *ms_finding_name(ms_finding_kind k);
void ms_finding_free(void *f);

/*
 * Fault injection for crash tests (builds with MS_FAULT_INJECTION): when
 * $MAILFS_FAULT names this point ("point" or "point:N" for its N-th
 * passage), the process kills itself with SIGKILL right there.  With
 * $MAILFS_STALL naming it, the mover waits there while the file
 * $MAILFS_STALL_FILE exists.
 */
void ms_fault(const char *point);

#endif
