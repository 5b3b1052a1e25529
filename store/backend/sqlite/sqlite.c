/*
 * sqlite.c — the sqlite backend: one SQLite database file per store.
 * This file: errors, the connection pool, the schema and its migrations,
 * open/close, sync and statistics.  sqlite_tree.c holds the namespace,
 * sqlite_content.c the message bytes; sqlite_int.h what they share.
 *
 * Layout (schema version 1):
 *   mailbox  one row per mailbox; state 0 = visible (moves use others;
 *            3 = a mailbox's deleted items, see sqlite_deleted.c)
 *   folder   nested through parent (0 = top level of its mailbox)
 *   message  metadata only; state 1 = reserved by a create, not committed
 *   content  one row per version of a message's bytes, never reused
 *   chunk    the bytes, MS_CHUNK at a time, so a 200 MB message is
 *            written and read in pieces, never held whole in memory
 * Names are BLOBs: any bytes but '/' and NUL round-trip exactly.
 *
 * Threads: a pool of connections (WAL lets readers run beside the one
 * writer); writes take write_lock first so that threads of one process
 * queue in order instead of spinning on SQLITE_BUSY.  Other processes
 * (mailfsctl) are serialised by SQLite's own lock and busy timeout.
 */
#include "sqlite_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MS_APP_ID 0x4d41494c /* "MAIL" */

/* ------------------------------------------------------------ errors */

/* Maps an SQLite result to a negative errno, logging what is unexpected. */
int sq_errno(sqlite3 *db, int rc, const char *what)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_CONSTRAINT:
        return -EEXIST;
    case SQLITE_FULL:
        ms_log(LOG_ERR, "%s: %s: disk full", sqlite3_db_filename(db, "main"), what);
        return -ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        ms_log(LOG_WARNING, "%s: %s: database busy", sqlite3_db_filename(db, "main"), what);
        return -EBUSY;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    default:
        ms_log(LOG_ERR, "%s: %s: %s", sqlite3_db_filename(db, "main"), what, sqlite3_errmsg(db));
        return -EIO;
    }
}

/* ------------------------------------------------------- connections */

static void stmt_finalize(gpointer p) { sqlite3_finalize(p); }

static void sq_conn_free(sq_conn *c)
{
    if (!c)
        return;
    g_hash_table_destroy(c->stmts);
    sqlite3_close(c->db);
    g_free(c);
}

int sq_exec(sq_conn *c, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        ms_log(LOG_ERR, "%s: %s: %s", sqlite3_db_filename(c->db, "main"), sql,
               msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return rc;
}

/*
 * Waits for another process's write transaction: SQLite's own busy
 * handler sleeps up to 100 ms between looks, so a writer waiting behind
 * another process (two movers into one store) woke long after the lock
 * was free.  Short naps instead; the same 30 s limit.
 */
void sq_column_copy(char *dst, size_t size, sqlite3_stmt *q, int col)
{
    size_t n = (size_t)sqlite3_column_bytes(q, col);
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(dst, sqlite3_column_blob(q, col), n);
    dst[n] = '\0';
}

int sq_collect_ids(sq_conn *c, sqlite3_stmt *q, GArray *out, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        g_array_append_val(out, id);
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, what);
}

int sq_busy_wait(void *ctx, int tries)
{
    (void)ctx;
    int64_t slept_us = tries < 200 ? tries * 250LL : 200 * 250LL + (tries - 200) * 2000LL;
    if (slept_us >= 30 * 1000000LL)
        return 0;
    g_usleep(tries < 200 ? 250 : 2000);
    return 1;
}

static int sq_conn_open(const char *path, bool ro, bool create, sq_conn **out)
{
    int oflags = SQLITE_OPEN_NOMUTEX | (ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE);
    if (create)
        oflags |= SQLITE_OPEN_CREATE;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, oflags, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_close(db);
        return rc;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_handler(db, sq_busy_wait, NULL);
    sq_conn *c = g_new0(sq_conn, 1);
    c->db = db;
    c->stmts = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, stmt_finalize);
    /* mmap stays off: mapped pages count against the daemon's RSS.  A
     * checkpoint every 32 MB of log instead of 4 MB: bulk copies spend
     * about 10% less time in checkpoint fsyncs (measured with cp -a of
     * the 10,000-message corpus; 16 KiB pages were slower).  Statement
     * journals (every write that fires the change-sequence triggers in a
     * batch needs one) stay in memory: in temporary files they cost an
     * import of 20 PSTs 0.12 s of its 0.5 s of system time. */
    rc = sqlite3_exec(
        db,
        "PRAGMA synchronous=NORMAL; PRAGMA cache_size=-2048; PRAGMA wal_autocheckpoint=8192;"
        "PRAGMA mmap_size=0; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;",
        NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        sq_conn_free(c);
        return rc;
    }
    *out = c;
    return SQLITE_OK;
}

/* The connection of this thread's batch, if it has one open. */
static sq_conn *batch_of(sq *s)
{
    sq_conn *c = NULL;
    g_mutex_lock(&s->pool_lock);
    if (s->batch_owner == g_thread_self())
        c = s->batch_conn;
    g_mutex_unlock(&s->pool_lock);
    return c;
}

sq_conn *sq_conn_get(ms_store *st)
{
    sq *s = sq_of(st);
    sq_conn *c = batch_of(s);
    if (c)
        return c;
    g_mutex_lock(&s->pool_lock);
    if (s->idle->len)
        c = g_ptr_array_steal_index_fast(s->idle, s->idle->len - 1);
    g_mutex_unlock(&s->pool_lock);
    if (c)
        return c;
    if (sq_conn_open(s->path, s->ro, false, &c) != SQLITE_OK) {
        ms_log(LOG_ERR, "%s: cannot open another connection", s->path);
        return NULL;
    }
    sq_ckpt_attach(s->ckpt, c);
    return c;
}

void sq_conn_put(ms_store *st, sq_conn *c)
{
    if (c == batch_of(sq_of(st)))
        return; /* stays with its batch until ms_batch_end */
    /*
     * A statement left on a row keeps its read transaction, and with it
     * an old snapshot of the store, open forever: this connection would
     * go on seeing the store as it was.  Never let one back in the pool.
     */
    for (sqlite3_stmt *q = sqlite3_next_stmt(c->db, NULL); q; q = sqlite3_next_stmt(c->db, q)) {
        if (sqlite3_stmt_busy(q)) {
            ms_log(LOG_WARNING, "bug: statement left active: %s", sqlite3_sql(q));
            sqlite3_reset(q);
        }
    }
    if (!sqlite3_get_autocommit(c->db)) {
        ms_log(LOG_ERR, "bug: transaction left open; rolled back");
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    }
    sq *s = sq_of(st);
    g_mutex_lock(&s->pool_lock);
    g_ptr_array_add(s->idle, c);
    g_mutex_unlock(&s->pool_lock);
}

/*
 * The prepared statement for sql (a string literal: its address is the
 * cache key), reset and with no bindings.  NULL after logging on error.
 */
sqlite3_stmt *sq_stmt(sq_conn *c, const char *sql)
{
    sqlite3_stmt *st = g_hash_table_lookup(c->stmts, sql);
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return st;
    }
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        ms_log(LOG_ERR, "%s: prepare: %s: %s", sqlite3_db_filename(c->db, "main"),
               sqlite3_errmsg(c->db), sql);
        return NULL;
    }
    g_hash_table_insert(c->stmts, (gpointer)sql, st);
    return st;
}

void sq_bind_name(sqlite3_stmt *q, int i, const char *name)
{
    sqlite3_bind_blob(q, i, name, (int)strlen(name), SQLITE_STATIC);
}

/* Runs a statement that returns no rows; 0 or a negative errno. */
int sq_step_done(sq_conn *c, sqlite3_stmt *q, const char *what)
{
    if (!q)
        return -EIO;
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, what);
}

/*
 * Steps a one-row query: 0 with the row current, -ENOENT for no row, or
 * a negative errno.  The caller resets the statement (sq_stmt does it too).
 */
int sq_step_row(sq_conn *c, sqlite3_stmt *q, const char *what)
{
    if (!q)
        return -EIO;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        return 0;
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? -ENOENT : sq_errno(c->db, rc, what);
}

int sq_query_int(sq_conn *c, const char *sql, int64_t arg, int64_t *out, const char *what)
{
    sqlite3_stmt *q = sq_stmt(c, sql);
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, arg);
    int rc = sq_step_row(c, q, what);
    if (rc)
        return rc;
    *out = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return 0;
}

/*
 * Runs one of the fixed statements that open and close transactions
 * (BEGIN, COMMIT, ROLLBACK, savepoints; not pragmas) from the
 * connection's statement cache, and returns SQLite's code.  Each write
 * runs two or three of them, and sqlite3_exec parsed them anew every time
 * (3.6% of the CPU of an import's copier in a profile).
 */
static int run_control(sq_conn *c, const char *sql)
{
    sqlite3_stmt *q = sq_stmt(c, sql);
    if (!q)
        return SQLITE_ERROR;
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* A write transaction; the store's write_lock is held until sq_tx_end. */
int sq_tx_begin(ms_store *st, sq_conn *c)
{
    if (c == batch_of(sq_of(st))) {
        /* Inside a batch: a savepoint, so one failed write undoes only
         * itself and the batch goes on. */
        int rc = run_control(c, "SAVEPOINT op");
        return rc == SQLITE_OK ? 0 : sq_errno(c->db, rc, "savepoint");
    }
    /* A second transaction of this thread would wait for itself. */
    assert(!ms_mutex_held(&sq_of(st)->write_lock));
    ms_mutex_lock(&sq_of(st)->write_lock);
    int rc = run_control(c, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) {
        ms_mutex_unlock(&sq_of(st)->write_lock);
        return sq_errno(c->db, rc, "begin");
    }
    return 0;
}

/* Commits when rc is 0, rolls back otherwise; returns the outcome. */
int sq_tx_end(ms_store *st, sq_conn *c, int rc)
{
    if (c == batch_of(sq_of(st))) {
        if (rc != 0)
            run_control(c, "ROLLBACK TO op");
        run_control(c, "RELEASE op");
        return rc;
    }
    if (rc == 0) {
        int r = run_control(c, "COMMIT");
        if (r != SQLITE_OK)
            rc = sq_errno(c->db, r, "commit");
    }
    if (rc != 0 && !sqlite3_get_autocommit(c->db))
        run_control(c, "ROLLBACK");
    ms_mutex_unlock(&sq_of(st)->write_lock);
    return rc;
}

/* ------------------------------------------------------------ schema */

/* migrations[v] brings a store from version v to v + 1. */
static const char *const migrations[] = {
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "CREATE TABLE mailbox(id INTEGER PRIMARY KEY AUTOINCREMENT, name BLOB NOT NULL UNIQUE,"
    " state INTEGER NOT NULL DEFAULT 0, acl BLOB, mode INTEGER NOT NULL,"
    " uid INTEGER NOT NULL, gid INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);"
    "CREATE TABLE folder(id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox INTEGER NOT NULL,"
    " parent INTEGER NOT NULL, name BLOB NOT NULL, special_use BLOB,"
    " next_uid INTEGER NOT NULL DEFAULT 1, mode INTEGER NOT NULL, uid INTEGER NOT NULL,"
    " gid INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, UNIQUE(mailbox, parent, name));"
    "CREATE INDEX folder_parent ON folder(parent);"
    "CREATE TABLE message(id INTEGER PRIMARY KEY AUTOINCREMENT, folder INTEGER NOT NULL,"
    " name BLOB NOT NULL, state INTEGER NOT NULL DEFAULT 0, imap_uid INTEGER NOT NULL,"
    " content INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL DEFAULT 0, sha256 BLOB,"
    " flags BLOB, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL, UNIQUE(folder, name));"
    "CREATE INDEX message_folder ON message(folder);"
    "CREATE INDEX message_content ON message(content);"
    "CREATE TABLE content(id INTEGER PRIMARY KEY AUTOINCREMENT, size INTEGER NOT NULL);"
    "CREATE TABLE chunk(content INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,"
    " PRIMARY KEY(content, seq));",
    /* v2: moves.  lock_move: the move that has the mailbox locked (writes
     * get EBUSY); retain_until: when a retained source copy expires. */
    "ALTER TABLE mailbox ADD COLUMN lock_move INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE mailbox ADD COLUMN retain_until INTEGER NOT NULL DEFAULT 0;",
    /* v3: the journal of each lock, and the move (and its journal) each
     * hidden or moved-in mailbox belongs to: recovery settles them even
     * when the journal entry is gone (move ids restart in a new journal). */
    "ALTER TABLE mailbox ADD COLUMN lock_journal TEXT;"
    "ALTER TABLE mailbox ADD COLUMN move_id INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE mailbox ADD COLUMN move_journal TEXT;",
    /* v4: change times (st_ctime), which backups compare.  Until now a
     * node changed only with its mtime, or its change was not recorded:
     * start from the mtime. */
    "ALTER TABLE mailbox ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE folder ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE message ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;"
    "UPDATE mailbox SET ctime_ns = mtime_ns;"
    "UPDATE folder SET ctime_ns = mtime_ns;"
    "UPDATE message SET ctime_ns = mtime_ns;",
    /* v5: deleted items (sqlite_deleted.c).  deleted_ns: when the message,
     * folder or mailbox was deleted through the mount (0: it was not). */
    "ALTER TABLE message ADD COLUMN deleted_ns INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE folder ADD COLUMN deleted_ns INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE mailbox ADD COLUMN deleted_ns INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX message_deleted ON message(deleted_ns) WHERE deleted_ns != 0;",
    /* v6: IMAP UIDVALIDITY per folder (next_uid is its UIDNEXT).  No client
     * has seen a value for the folders there are: they get the upgrade's
     * time, as Dovecot gives a mailbox the time it first sees it.  meta's
     * 'uidvalidity' is the last value given (sq_new_uidvalidity). */
    "ALTER TABLE folder ADD COLUMN uidvalidity INTEGER NOT NULL DEFAULT 0;"
    "UPDATE folder SET uidvalidity = CAST(strftime('%s', 'now') AS INTEGER);"
    "INSERT OR REPLACE INTO meta(key, value)"
    " VALUES ('uidvalidity', CAST(strftime('%s', 'now') AS INTEGER));",
    /* v7: a folder that is only the parent of others (ms_folder_unselect),
     * as a Maildir++ parent a move brought here was: moved on, it is one
     * again.  It stops being one when it holds a message. */
    "ALTER TABLE folder ADD COLUMN noselect INTEGER NOT NULL DEFAULT 0;",
    /*
     * v8: change sequences (ms_attr.modseq, ms_mailbox_modseq), as IMAP
     * CONDSTORE's.  highest_modseq is the mailbox's counter, the last
     * value given; modseq is the row's stamp (a mailbox's: of the mailbox
     * node).  Existing rows get 1, below every floor (counter + 1).
     *
     * Triggers keep them, not the C code: every write of a row, whatever
     * path makes it (tree writes, commits, deleted items, restores,
     * imports, moves), raises its mailbox's counter in the write's own
     * transaction and stamps the row and its parent (a folder, or the
     * mailbox node for a top-level folder) with the new value, so no
     * write path can be forgotten.  The stamping updates change modseq
     * and the counter updates highest_modseq, which the WHEN clauses
     * skip: a trigger never fires on its own bookkeeping.  A row updated
     * without a real change (same value) is stamped too: a false
     * positive, which the floor allows.  A mailbox row made (mkdir, a
     * move's hidden copy, a restore under its old id) starts above every
     * counter of the store, so a floor taken before never sees it go
     * back.  Each statement names one row by its key (=, never IN):
     * an IN list or subquery makes SQLite build a temporary table at
     * every firing, which made a 10,000-message move six times slower.
     */
    "ALTER TABLE mailbox ADD COLUMN modseq INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE mailbox ADD COLUMN highest_modseq INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE folder ADD COLUMN modseq INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE message ADD COLUMN modseq INTEGER NOT NULL DEFAULT 1;"
    "CREATE TRIGGER mailbox_modseq_ins AFTER INSERT ON mailbox BEGIN"
    " UPDATE mailbox SET highest_modseq = (SELECT max(highest_modseq) FROM mailbox) + 1,"
    "  modseq = (SELECT max(highest_modseq) FROM mailbox) + 1 WHERE id = NEW.id;"
    " END;"
    "CREATE TRIGGER mailbox_modseq_upd AFTER UPDATE ON mailbox"
    " WHEN NEW.highest_modseq = OLD.highest_modseq AND NEW.modseq = OLD.modseq BEGIN"
    " UPDATE mailbox SET highest_modseq = highest_modseq + 1, modseq = highest_modseq + 1"
    "  WHERE id = NEW.id;"
    " END;"
    "CREATE TRIGGER folder_modseq_ins AFTER INSERT ON folder BEGIN"
    " UPDATE mailbox SET highest_modseq = highest_modseq + 1 WHERE id = NEW.mailbox;"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE id = NEW.mailbox)"
    "  WHERE id = NEW.id;"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE id = NEW.mailbox)"
    "  WHERE id = NEW.parent;"
    " UPDATE mailbox SET modseq = highest_modseq WHERE id = NEW.mailbox AND NEW.parent = 0;"
    " END;"
    "CREATE TRIGGER folder_modseq_upd AFTER UPDATE ON folder WHEN NEW.modseq = OLD.modseq BEGIN"
    " UPDATE mailbox SET highest_modseq = highest_modseq + 1 WHERE id = NEW.mailbox;"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE id = NEW.mailbox)"
    "  WHERE id = NEW.id;"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE id = NEW.mailbox)"
    "  WHERE id = NEW.parent;"
    " UPDATE mailbox SET modseq = highest_modseq WHERE id = NEW.mailbox AND NEW.parent = 0;"
    " END;"
    /* A folder moved: where it was changed too. */
    "CREATE TRIGGER folder_modseq_from AFTER UPDATE OF mailbox, parent ON folder"
    " WHEN NEW.mailbox != OLD.mailbox OR NEW.parent != OLD.parent BEGIN"
    " UPDATE mailbox SET highest_modseq = highest_modseq + 1 WHERE id = OLD.mailbox;"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE id = OLD.mailbox)"
    "  WHERE id = OLD.parent;"
    " UPDATE mailbox SET modseq = highest_modseq WHERE id = OLD.mailbox AND OLD.parent = 0;"
    " END;"
    "CREATE TRIGGER folder_modseq_del AFTER DELETE ON folder BEGIN"
    " UPDATE mailbox SET highest_modseq = highest_modseq + 1 WHERE id = OLD.mailbox;"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE id = OLD.mailbox)"
    "  WHERE id = OLD.parent;"
    " UPDATE mailbox SET modseq = highest_modseq WHERE id = OLD.mailbox AND OLD.parent = 0;"
    " END;"
    "CREATE TRIGGER message_modseq_ins AFTER INSERT ON message BEGIN"
    " UPDATE mailbox SET highest_modseq = highest_modseq + 1"
    "  WHERE id = (SELECT mailbox FROM folder WHERE id = NEW.folder);"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE mailbox.id = "
    "folder.mailbox)"
    "  WHERE id = NEW.folder;"
    " UPDATE message SET modseq = (SELECT modseq FROM folder WHERE id = NEW.folder) WHERE id = "
    "NEW.id;"
    " END;"
    "CREATE TRIGGER message_modseq_upd AFTER UPDATE ON message WHEN NEW.modseq = OLD.modseq BEGIN"
    " UPDATE mailbox SET highest_modseq = highest_modseq + 1"
    "  WHERE id = (SELECT mailbox FROM folder WHERE id = NEW.folder);"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE mailbox.id = "
    "folder.mailbox)"
    "  WHERE id = NEW.folder;"
    " UPDATE message SET modseq = (SELECT modseq FROM folder WHERE id = NEW.folder) WHERE id = "
    "NEW.id;"
    " END;"
    /* A message refiled (rename, deleted items): its old folder changed too. */
    "CREATE TRIGGER message_modseq_from AFTER UPDATE OF folder ON message"
    " WHEN NEW.folder != OLD.folder BEGIN"
    " UPDATE mailbox SET highest_modseq = highest_modseq + 1"
    "  WHERE id = (SELECT mailbox FROM folder WHERE id = OLD.folder);"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE mailbox.id = "
    "folder.mailbox)"
    "  WHERE id = OLD.folder;"
    " END;"
    "CREATE TRIGGER message_modseq_del AFTER DELETE ON message BEGIN"
    " UPDATE mailbox SET highest_modseq = highest_modseq + 1"
    "  WHERE id = (SELECT mailbox FROM folder WHERE id = OLD.folder);"
    " UPDATE folder SET modseq = (SELECT highest_modseq FROM mailbox WHERE mailbox.id = "
    "folder.mailbox)"
    "  WHERE id = OLD.folder;"
    " END;",
};
#define SCHEMA_VERSION ((int)G_N_ELEMENTS(migrations))

int sq_pragma_int(sq_conn *c, const char *sql, int *out)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int(q, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(q);
    return rc;
}

/* Brings the schema from version v to SCHEMA_VERSION, one step per txn. */
static int migrate(sq_conn *c, int v, char **err, const char *path)
{
    for (; v < SCHEMA_VERSION; v++) {
        g_autofree char *sql = g_strdup_printf(
            "BEGIN IMMEDIATE; %s PRAGMA application_id=%d; PRAGMA user_version=%d; COMMIT;",
            migrations[v], MS_APP_ID, v + 1);
        char *msg = NULL;
        int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            *err = g_strdup_printf("%s: schema upgrade to version %d failed: %s", path, v + 1,
                                   msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            return -EIO;
        }
        if (v > 0)
            ms_log(LOG_INFO, "%s: schema upgraded to version %d", path, v + 1);
    }
    return 0;
}

/*
 * Drops what a daemon that died mid-write left: reserved-but-uncommitted
 * messages, and content no message refers to (replaced or purged while
 * a reader still had it: see sq.pins).
 */
static int recover_leftovers(sq_conn *c)
{
    return sq_exec(c, "BEGIN IMMEDIATE;"
                      "DELETE FROM message WHERE state = 1;"
                      "DELETE FROM chunk WHERE content IN (SELECT id FROM content WHERE id NOT IN"
                      " (SELECT content FROM message));"
                      "DELETE FROM content WHERE id NOT IN (SELECT content FROM message);"
                      "COMMIT;") == SQLITE_OK
               ? 0
               : -EIO;
}

/*
 * Creates the empty database file 0600 whatever the umask: SQLite would
 * make it 0644 (any local user could read the mail) and gives the -wal
 * and -shm files the database's mode.  umask(2) is not an option in a
 * threaded daemon.  An empty file is a valid new database for SQLite.
 */
int sq_create_private(const char *path, char **err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        *err = g_strdup_printf("%s: cannot create: %s", path, g_strerror(e));
        return -e;
    }
    /* The umask can only take bits away, but an ACL default on the folder
     * can add some: say the mode once more. */
    int rc = fchmod(fd, 0600) < 0 ? -errno : 0;
    close(fd);
    if (rc) {
        *err = g_strdup_printf("%s: cannot make it private: %s", path, g_strerror(-rc));
        unlink(path);
    }
    return rc;
}

/* One warning line when others than the owner may read or write path. */
void sq_warn_if_shared(const char *path, const struct stat *sb, const char *what)
{
    if (sb->st_mode & 077)
        ms_log(LOG_WARNING,
               "%s: %s is readable or writable by group or others (mode %04o); "
               "chmod 600 it and its -wal and -shm files",
               path, what, (unsigned)(sb->st_mode & 07777));
}

static int sq_open(ms_store *st, const ms_store_conf *conf, int flags, char **err)
{
    bool create = flags & MS_OPEN_CREATE;
    const char *path = conf->path;
    struct stat sb;
    if (create && stat(path, &sb) == 0) {
        *err = g_strdup_printf("%s: already exists", path);
        return -EEXIST;
    }
    if (!create) {
        if (stat(path, &sb) < 0) {
            int e = errno;
            *err = e == ENOENT   ? g_strdup_printf("%s: store file does not exist (make it with "
                                                     "'mailfsctl store create %s')",
                                                   path, conf->name)
                   : e == EACCES ? g_strdup_printf("%s: permission denied (need read and write on "
                                                   "the file and its folder)",
                                                   path)
                                 : g_strdup_printf("%s: %s", path, g_strerror(e));
            return -e;
        }
        if (!S_ISREG(sb.st_mode)) {
            *err = g_strdup_printf("%s: not a mailfs store (not a regular file)", path);
            return -EINVAL;
        }
        /* WAL needs to write beside the file even to read: check both. */
        g_autofree char *dir = g_path_get_dirname(path);
        int need = st->readonly ? R_OK : R_OK | W_OK;
        if (access(path, need) < 0 || (!st->readonly && access(dir, W_OK | X_OK) < 0)) {
            *err = g_strdup_printf("%s: permission denied (need %s on the file and its folder)",
                                   path, st->readonly ? "read" : "read and write");
            return -EACCES;
        }
    }
    if (create) {
        int rc = sq_create_private(path, err);
        if (rc)
            return rc;
    }
    sq *s = g_new0(sq, 1);
    s->path = g_strdup(path);
    s->ro = st->readonly;
    g_mutex_init(&s->pool_lock);
    ms_mutex_init(&s->write_lock);
    sq_pins_init(s);
    sq_unborn_init(s);
    s->idle = g_ptr_array_new();
    st->priv = s;

    sq_conn *c = NULL;
    int rc = sq_conn_open(path, s->ro && !create, create, &c);
    int app = 0, ver = 0;
    if (rc == SQLITE_OK)
        rc = sq_pragma_int(c, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = sq_pragma_int(c, "PRAGMA user_version", &ver);
    int ret = 0;
    if (rc == SQLITE_NOTADB || (rc == SQLITE_OK && !create && app != MS_APP_ID)) {
        *err = g_strdup_printf("%s: not a mailfs store (%s)", path,
                               rc == SQLITE_NOTADB ? "not an SQLite database"
                                                   : "an SQLite database of another program");
        ret = -EINVAL;
    } else if (rc != SQLITE_OK) {
        *err = g_strdup_printf("%s: cannot open: %s", path,
                               c ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        ret = -EIO;
    } else if (ver > SCHEMA_VERSION) {
        *err = g_strdup_printf("%s: store schema version %d is newer than this mailfs (%d)", path,
                               ver, SCHEMA_VERSION);
        ret = -EPROTO;
    } else if (!s->ro) {
        /* Before anything writes the file's header (switching to WAL
         * does), or SQLite ignores it without an error: compaction can
         * then free pages in small steps while the store is in use (see
         * sq_compact).  Until the audit after issue 14 it came second, and
         * every store was made without it. */
        if (create && sq_exec(c, "PRAGMA auto_vacuum=INCREMENTAL") != SQLITE_OK)
            ret = -EIO;
        if (!ret && sq_exec(c, "PRAGMA journal_mode=WAL") != SQLITE_OK) {
            *err = g_strdup_printf("%s: cannot switch to WAL: %s", path, sqlite3_errmsg(c->db));
            ret = -EIO;
        }
        if (!ret && ver < SCHEMA_VERSION)
            ret = migrate(c, ver, err, path);
        if (!ret && create) {
            sqlite3_stmt *q = sq_stmt(c, "INSERT INTO meta(key, value) VALUES ('created', ?)");
            sqlite3_bind_int64(q, 1, ms_now_ns() / 1000000000);
            ret = sq_step_done(c, q, "meta");
        }
        if (!ret && (flags & MS_OPEN_DAEMON) && recover_leftovers(c)) {
            *err = g_strdup_printf("%s: cannot clean up after a crash: %s", path,
                                   sqlite3_errmsg(c->db));
            ret = -EIO;
        }
    } else if (ver < SCHEMA_VERSION) {
        *err = g_strdup_printf("%s: store needs a schema upgrade; open it read-write once", path);
        ret = -EPROTO;
    }
    if (ret) {
        sq_conn_free(c);
        if (create)
            unlink(path);
        g_ptr_array_free(s->idle, TRUE);
        sq_pins_clear(s);
        sq_unborn_clear(s);
        g_free(s->path);
        g_free(s);
        st->priv = NULL;
        return ret;
    }
    if (!s->ro) {
        s->ckpt = sq_ckpt_start(path);
        sq_ckpt_attach(s->ckpt, c);
    }
    g_ptr_array_add(s->idle, c);
    sq_pins_open_file(s);
    /* Only now that it is known to be a store: a file that is not one
     * gets its own error, and no warning first. */
    if (!create)
        sq_warn_if_shared(path, &sb, "the store");
    return 0;
}

static void sq_close(ms_store *st)
{
    sq *s = sq_of(st);
    if (!s)
        return;
    sq_ckpt_stop(s->ckpt); /* first: the pool's last connection folds the log in as it closes */
    for (guint i = 0; i < s->idle->len; i++)
        sq_conn_free(g_ptr_array_index(s->idle, i));
    g_ptr_array_free(s->idle, TRUE);
    g_mutex_clear(&s->pool_lock);
    ms_mutex_clear(&s->write_lock);
    sq_pins_clear(s);
    sq_unborn_clear(s);
    g_free(s->path);
    g_free(s);
}

/*
 * Durability goes through SQLite, never through our own open(2) of its
 * files: closing any descriptor of a file drops every POSIX lock this
 * process holds on it, SQLite's WAL locks included, and another process
 * would then checkpoint and delete the WAL under our connections.
 *
 * A commit with synchronous=FULL fsyncs the WAL, and with it every frame
 * committed before; so durable writes run that way, and a sync with
 * nothing to commit writes one small row to have something to fsync.
 * SQLite refuses to change the level inside a transaction ("Safety level
 * may not be changed inside a transaction", at prepare): it is switched
 * before BEGIN, and its result checked.  (Until issue 14's review it was
 * switched between the last write and COMMIT, where SQLite refused it
 * without a word: every fsync and every move's sync of its target
 * committed at NORMAL, which syncs nothing.)  Inside a batch the
 * transaction is the batch's, already begun: the batch's end is then
 * made durable instead (sq_batch_end).
 */
/*
 * Sets the connection's synchronous level, parsed anew every time, never
 * from the statement cache: SQLite applies this pragma when it prepares
 * it, so a cached statement would work only because its program expires
 * and is prepared again at each step.  Returns SQLite's code.
 */
static int set_synchronous(sq_conn *c, const char *pragma)
{
    return sqlite3_exec(c->db, pragma, NULL, NULL, NULL);
}

int sq_tx_begin_durable(ms_store *st, sq_conn *c)
{
    sq *s = sq_of(st);
    if (c == batch_of(s)) {
        assert(ms_mutex_held(&s->write_lock));
        s->batch_durable = true;
        return sq_tx_begin(st, c);
    }
    int rc = set_synchronous(c, "PRAGMA synchronous=FULL");
    if (rc != SQLITE_OK)
        return sq_errno(c->db, rc, "durable write");
    int err = sq_tx_begin(st, c);
    if (err)
        set_synchronous(c, "PRAGMA synchronous=NORMAL");
    return err;
}

int sq_tx_end_durable(ms_store *st, sq_conn *c, int rc)
{
    if (c == batch_of(sq_of(st)))
        return sq_tx_end(st, c, rc);
    rc = sq_tx_end(st, c, rc);
    /* Out of the transaction now, so SQLite takes it; a failure leaves
     * FULL on, which is slower but never less safe. */
    set_synchronous(c, "PRAGMA synchronous=NORMAL");
    return rc;
}

static int sq_sync(ms_store *st);

int sq_batch_begin(ms_store *st)
{
    sq *s = sq_of(st);
    if (batch_of(s))
        return -EBUSY;
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c); /* takes write_lock until sq_batch_end */
    if (rc) {
        sq_conn_put(st, c);
        return rc;
    }
    g_mutex_lock(&s->pool_lock);
    s->batch_owner = g_thread_self();
    s->batch_conn = c;
    g_mutex_unlock(&s->pool_lock);
    return 0;
}

int sq_batch_end(ms_store *st, bool commit)
{
    sq *s = sq_of(st);
    sq_conn *c = batch_of(s);
    if (!c)
        return -EINVAL;
    g_mutex_lock(&s->pool_lock);
    s->batch_owner = NULL;
    s->batch_conn = NULL;
    g_mutex_unlock(&s->pool_lock);
    bool durable = s->batch_durable;
    s->batch_durable = false; /* write_lock is still held here */
    int rc = sq_tx_end(st, c, commit ? 0 : -ECANCELED);
    sq_conn_put(st, c);
    if (commit && !rc && durable)
        rc = sq_sync(st); /* a durable write joined the batch */
    return commit ? rc : 0;
}

static int touch_in(sq_conn *c)
{
    sqlite3_stmt *q = sq_stmt(c, "INSERT OR REPLACE INTO meta(key, value) VALUES ('synced', ?)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, ms_now_ns());
    return sq_step_done(c, q, "sync");
}

static int sq_sync(ms_store *st)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin_durable(st, c);
    if (!rc)
        rc = sq_tx_end_durable(st, c, touch_in(c));
    sq_conn_put(st, c);
    return rc;
}

/* ----------------------------------------------------------- stats */

/* The database and its log, as the filesystem counts them. */
static int64_t files_size(const char *path)
{
    struct stat sb;
    int64_t n = stat(path, &sb) == 0 ? sb.st_size : 0;
    g_autofree char *wal = g_strconcat(path, "-wal", NULL);
    return n + (stat(wal, &sb) == 0 ? sb.st_size : 0);
}

/* What deleted items hold (the message_deleted index answers it). */
static int recoverable_in(sq_conn *c, ms_store_stats *out)
{
    sqlite3_stmt *q =
        sq_stmt(c, "SELECT (SELECT count(*) FROM mailbox WHERE state = 3 AND deleted_ns != 0),"
                   " (SELECT count(*) FROM message WHERE deleted_ns != 0),"
                   " (SELECT coalesce(sum(size), 0) FROM message WHERE deleted_ns != 0)");
    if (!q)
        return -EIO;
    int rc = sq_step_row(c, q, "stats");
    if (rc)
        return rc;
    out->recoverable_mailboxes = sqlite3_column_int64(q, 0);
    out->recoverable_messages = sqlite3_column_int64(q, 1);
    out->recoverable_bytes = sqlite3_column_int64(q, 2);
    sqlite3_reset(q);
    return 0;
}

static int stats_in(sq_conn *c, const char *path, ms_store_stats *out)
{
    memset(out, 0, sizeof *out);
    /* Visible mailboxes only, for every count: hidden copies are apart. */
    sqlite3_stmt *q =
        sq_stmt(c, "SELECT (SELECT count(*) FROM mailbox WHERE state = 0),"
                   " (SELECT count(*) FROM folder f JOIN mailbox b ON b.id = f.mailbox"
                   " WHERE b.state = 0),"
                   " count(*), coalesce(sum(m.size), 0) FROM message m"
                   " JOIN folder f ON f.id = m.folder JOIN mailbox b ON b.id = f.mailbox"
                   " WHERE m.state = 0 AND m.deleted_ns = 0 AND b.state = 0");
    int rc = sq_step_row(c, q, "stats");
    if (rc)
        return rc;
    out->mailboxes = sqlite3_column_int64(q, 0);
    out->folders = sqlite3_column_int64(q, 1);
    out->messages = sqlite3_column_int64(q, 2);
    out->bytes = sqlite3_column_int64(q, 3);
    sqlite3_reset(q);
    int rc2 = recoverable_in(c, out);
    if (rc2)
        return rc2;
    rc = sq_retained_stats(c, out);
    if (rc)
        return rc;
    int freep = 0, psize = 0;
    sq_pragma_int(c, "PRAGMA freelist_count", &freep);
    sq_pragma_int(c, "PRAGMA page_size", &psize);
    out->file_bytes = files_size(path);
    out->reclaimable_bytes = (int64_t)freep * psize;
    return 0;
}

/* SQLITE_BUSY means another process holds the store longer than the
 * busy timeout: say so rather than a generic I/O error. */
static int exec_errno(sq_conn *c, const char *sql)
{
    int rc = sq_exec(c, sql);
    return rc == SQLITE_OK ? 0 : rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? -EBUSY : -EIO;
}

/* ms_store_background: checkpoints by the store's own thread from now on. */
static void sq_background(ms_store *st) { sq_ckpt_enable(sq_of(st)->ckpt); }

/*
 * Gives the free pages inside the store back to the filesystem while the
 * store stays in use: freed pages are moved to the end and cut off a few
 * megabytes at a time (incremental vacuum), each step its own short
 * transaction, so the daemon's readers never wait and its writers wait
 * for one step at most.  A store made before auto_vacuum was set needs
 * one full VACUUM first (writers wait for that one).
 */
static int sq_compact(ms_store *st, int64_t *before, int64_t *after)
{
    sq *s = sq_of(st);
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    sq_exec(c, "PRAGMA wal_checkpoint(TRUNCATE)");
    *before = files_size(s->path);
    int mode = 0, freep = 0, rc = 0;
    sq_pragma_int(c, "PRAGMA auto_vacuum", &mode);
    if (mode != 2) {
        ms_log(LOG_INFO, "%s: converting to incremental vacuum (one full rewrite)", s->path);
        rc = exec_errno(c, "PRAGMA auto_vacuum=INCREMENTAL");
        if (!rc)
            rc = exec_errno(c, "VACUUM");
    }
    while (!rc && sq_pragma_int(c, "PRAGMA freelist_count", &freep) == SQLITE_OK && freep > 0)
        rc = exec_errno(c, "PRAGMA incremental_vacuum(2048)");
    /* Readers of the daemon may hold the WAL for a moment: a few tries. */
    for (int i = 0; !rc && i < 50; i++) {
        sqlite3_stmt *q = NULL;
        int busy = 1;
        if (sqlite3_prepare_v2(c->db, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &q, NULL) ==
                SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW)
            busy = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
        if (!busy)
            break;
        g_usleep(20000);
    }
    *after = files_size(s->path);
    sq_conn_put(st, c);
    if (rc)
        ms_log(LOG_ERR, "%s: compaction stopped: %s", s->path, g_strerror(-rc));
    return rc;
}

static int sq_stats(ms_store *st, ms_store_stats *out)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = stats_in(c, sq_of(st)->path, out);
    sq_conn_put(st, c);
    return rc;
}

static const ms_tree_ops sq_tree = {
    .lookup = sq_lookup,
    .getattr = sq_getattr,
    .list = sq_list,
    .xattr_get = sq_xattr_get,
    .setattr = sq_setattr,
    .mkdir = sq_mkdir,
    .rmdir = sq_rmdir,
    .unlink = sq_unlink,
    .rename = sq_rename,
    .xattr_set = sq_xattr_set,
};

static const ms_content_ops sq_content = {
    .message_create = sq_message_create,
    .reader_open = sq_reader_open,
    .reader_pread = sq_reader_pread,
    .reader_close = sq_reader_close,
    .discard_pending = sq_discard_pending,
    .commit = sq_commit,
};

static const ms_admin_ops sq_admin = {
    .stats = sq_stats,
    .compact = sq_compact,
    .background = sq_background,
    .sync = sq_sync,
    .batch_begin = sq_batch_begin,
    .batch_end = sq_batch_end,
    .mailbox_create = sq_mailbox_create,
    .mailbox_find = sq_mailbox_find,
    .mailbox_info = sq_mailbox_info,
    .mailbox_scan = sq_mailbox_scan,
    .mailbox_set = sq_mailbox_set,
    .mailbox_drop = sq_mailbox_drop,
    .mailbox_size = sq_mailbox_size,
    .mailbox_modseq = sq_mailbox_modseq,
    .message_meta = sq_message_meta,
    .deleted_list = sq_deleted_list,
    .deleted_restore = sq_deleted_restore,
    .deleted_purge = sq_deleted_purge,
    .folder_uids_get = sq_folder_uids_get,
    .folder_uids_set = sq_folder_uids_set,
    .folder_unselect = sq_folder_unselect,
    .message_uid_set = sq_message_uid_set,
};

const ms_backend ms_sqlite_backend = {
    .name = "sqlite",
    .groups_writes = true,
    .open = sq_open,
    .close = sq_close,
    .tree = &sq_tree,
    .content = &sq_content,
    .admin = &sq_admin,
};
