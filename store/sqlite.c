/*
 * sqlite.c — the sqlite backend: one SQLite database file per store.
 *
 * Layout (schema version 1):
 *   mailbox  one row per mailbox; state 0 = visible (moves use others)
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
#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>
#include <sqlite3.h>

#define MS_APP_ID 0x4d41494c /* "MAIL" */
#define MS_CHUNK (128 * 1024)
/* In list cookies, messages come after all folders of the same parent. */
#define COOKIE_MSG (UINT64_C(1) << 48)

typedef struct conn {
    sqlite3 *db;
    GHashTable *stmts; /* static SQL text (by address) -> prepared statement */
} conn;

typedef struct sq {
    char *path;
    bool ro;
    GMutex pool_lock;
    GPtrArray *idle; /* of conn* */
    GMutex write_lock;
} sq;

static sq *S(ms_store *st) { return st->priv; }

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------ errors */

/* Maps an SQLite result to a negative errno, logging what is unexpected. */
static int sq_errno(sqlite3 *db, int rc, const char *what)
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

static void conn_free(conn *c)
{
    if (!c)
        return;
    g_hash_table_destroy(c->stmts);
    sqlite3_close(c->db);
    g_free(c);
}

static int exec(conn *c, const char *sql)
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

static int conn_open(const char *path, bool ro, bool create, conn **out)
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
    sqlite3_busy_timeout(db, 30000);
    conn *c = g_new0(conn, 1);
    c->db = db;
    c->stmts = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, stmt_finalize);
    /* mmap stays off: mapped pages count against the daemon's RSS. */
    rc = sqlite3_exec(db,
                      "PRAGMA synchronous=NORMAL; PRAGMA cache_size=-2048;"
                      "PRAGMA mmap_size=0; PRAGMA foreign_keys=OFF;",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        conn_free(c);
        return rc;
    }
    *out = c;
    return SQLITE_OK;
}

static conn *conn_get(ms_store *st)
{
    sq *s = S(st);
    conn *c = NULL;
    g_mutex_lock(&s->pool_lock);
    if (s->idle->len)
        c = g_ptr_array_steal_index_fast(s->idle, s->idle->len - 1);
    g_mutex_unlock(&s->pool_lock);
    if (c)
        return c;
    if (conn_open(s->path, s->ro, false, &c) != SQLITE_OK) {
        ms_log(LOG_ERR, "%s: cannot open another connection", s->path);
        return NULL;
    }
    return c;
}

static void conn_put(ms_store *st, conn *c)
{
    sq *s = S(st);
    g_mutex_lock(&s->pool_lock);
    g_ptr_array_add(s->idle, c);
    g_mutex_unlock(&s->pool_lock);
}

/*
 * The prepared statement for sql (a string literal: its address is the
 * cache key), reset and with no bindings.  NULL after logging on error.
 */
static sqlite3_stmt *Q(conn *c, const char *sql)
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

static void bind_name(sqlite3_stmt *q, int i, const char *name)
{
    sqlite3_bind_blob(q, i, name, (int)strlen(name), SQLITE_STATIC);
}

/* Runs a statement that returns no rows; 0 or a negative errno. */
static int step_done(conn *c, sqlite3_stmt *q, const char *what)
{
    if (!q)
        return -EIO;
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, what);
}

/*
 * Steps a one-row query: 0 with the row current, -ENOENT for no row, or
 * a negative errno.  The caller resets the statement (Q does it too).
 */
static int step_row(conn *c, sqlite3_stmt *q, const char *what)
{
    if (!q)
        return -EIO;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        return 0;
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? -ENOENT : sq_errno(c->db, rc, what);
}

/* A write transaction; the store's write_lock is held until tx_end. */
static int tx_begin(ms_store *st, conn *c)
{
    g_mutex_lock(&S(st)->write_lock);
    int rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        g_mutex_unlock(&S(st)->write_lock);
        return sq_errno(c->db, rc, "begin");
    }
    return 0;
}

/* Commits when rc is 0, rolls back otherwise; returns the outcome. */
static int tx_end(ms_store *st, conn *c, int rc)
{
    if (rc == 0) {
        int r = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
        if (r != SQLITE_OK)
            rc = sq_errno(c->db, r, "commit");
    }
    if (rc != 0 && !sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    g_mutex_unlock(&S(st)->write_lock);
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
};
#define SCHEMA_VERSION ((int)G_N_ELEMENTS(migrations))

static int pragma_int(conn *c, const char *sql, int *out)
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
static int migrate(conn *c, int v, char **err, const char *path)
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
 * messages, and content no message refers to (unlinked while open).
 */
static int recover_leftovers(conn *c)
{
    return exec(c, "BEGIN IMMEDIATE;"
                   "DELETE FROM message WHERE state = 1;"
                   "DELETE FROM chunk WHERE content IN (SELECT id FROM content WHERE id NOT IN"
                   " (SELECT content FROM message));"
                   "DELETE FROM content WHERE id NOT IN (SELECT content FROM message);"
                   "COMMIT;") == SQLITE_OK
               ? 0
               : -EIO;
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
            *err = e == ENOENT ? g_strdup_printf("%s: store file does not exist (make it with "
                                                 "'mailfsctl store create %s')",
                                                 path, conf->name)
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
    sq *s = g_new0(sq, 1);
    s->path = g_strdup(path);
    s->ro = st->readonly;
    g_mutex_init(&s->pool_lock);
    g_mutex_init(&s->write_lock);
    s->idle = g_ptr_array_new();
    st->priv = s;

    conn *c = NULL;
    int rc = conn_open(path, s->ro && !create, create, &c);
    int app = 0, ver = 0;
    if (rc == SQLITE_OK)
        rc = pragma_int(c, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = pragma_int(c, "PRAGMA user_version", &ver);
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
        if (exec(c, "PRAGMA journal_mode=WAL") != SQLITE_OK) {
            *err = g_strdup_printf("%s: cannot switch to WAL: %s", path, sqlite3_errmsg(c->db));
            ret = -EIO;
        }
        if (!ret && ver < SCHEMA_VERSION)
            ret = migrate(c, ver, err, path);
        if (!ret && create) {
            sqlite3_stmt *q = Q(c, "INSERT INTO meta(key, value) VALUES ('created', ?)");
            sqlite3_bind_int64(q, 1, now_ns() / 1000000000);
            ret = step_done(c, q, "meta");
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
        conn_free(c);
        if (create)
            unlink(path);
        g_ptr_array_free(s->idle, TRUE);
        g_free(s->path);
        g_free(s);
        st->priv = NULL;
        return ret;
    }
    g_ptr_array_add(s->idle, c);
    return 0;
}

static void sq_close(ms_store *st)
{
    sq *s = S(st);
    if (!s)
        return;
    for (guint i = 0; i < s->idle->len; i++)
        conn_free(g_ptr_array_index(s->idle, i));
    g_ptr_array_free(s->idle, TRUE);
    g_mutex_clear(&s->pool_lock);
    g_mutex_clear(&s->write_lock);
    g_free(s->path);
    g_free(s);
}

/* ------------------------------------------------------------- rows */

/*
 * Every attribute query selects the same columns, so one function reads
 * them: id, size, mtime_ns, mode, uid, gid, imap_uid, mailbox, name.
 */
#define MAILBOX_COLS "id, 0, mtime_ns, mode, uid, gid, 0, id, name"
#define FOLDER_COLS "id, 0, mtime_ns, mode, uid, gid, 0, mailbox, name"
#define MESSAGE_COLS "m.id, m.size, m.mtime_ns, m.mode, m.uid, m.gid, m.imap_uid, f.mailbox, m.name"

static void row_attr(sqlite3_stmt *q, ms_kind kind, ms_attr *a)
{
    memset(a, 0, sizeof *a);
    a->node.kind = kind;
    a->node.id = sqlite3_column_int64(q, 0);
    a->size = sqlite3_column_int64(q, 1);
    a->mtime_ns = sqlite3_column_int64(q, 2);
    a->mode = (uint32_t)sqlite3_column_int(q, 3);
    a->uid = (uint32_t)sqlite3_column_int64(q, 4);
    a->gid = (uint32_t)sqlite3_column_int64(q, 5);
    a->imap_uid = sqlite3_column_int64(q, 6);
    a->mailbox = sqlite3_column_int64(q, 7);
}

/* Reads one attribute row of kind from q; resets q. */
static int fetch_attr(conn *c, sqlite3_stmt *q, ms_kind kind, ms_attr *out, const char *what)
{
    int rc = step_row(c, q, what);
    if (rc)
        return rc;
    if (out)
        row_attr(q, kind, out);
    sqlite3_reset(q);
    return 0;
}

static int get_attr(conn *c, ms_node n, ms_attr *out)
{
    sqlite3_stmt *q;
    switch (n.kind) {
    case MS_ROOT:
        memset(out, 0, sizeof *out);
        out->mode = 0755;
        return 0;
    case MS_MAILBOX:
        q = Q(c, "SELECT " MAILBOX_COLS " FROM mailbox WHERE id = ?");
        break;
    case MS_FOLDER:
        q = Q(c, "SELECT " FOLDER_COLS " FROM folder WHERE id = ?");
        break;
    case MS_MESSAGE:
        q = Q(c, "SELECT " MESSAGE_COLS " FROM message m JOIN folder f ON f.id = m.folder"
                 " WHERE m.id = ?");
        break;
    default:
        return -EINVAL;
    }
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, n.id);
    return fetch_attr(c, q, n.kind, out, "getattr");
}

/* Child of parent named name: the visible mailbox, folder or message. */
static int lookup_in(conn *c, ms_node parent, const char *name, ms_attr *out)
{
    sqlite3_stmt *q;
    int rc;
    switch (parent.kind) {
    case MS_ROOT:
        q = Q(c, "SELECT " MAILBOX_COLS " FROM mailbox WHERE name = ? AND state = 0");
        if (!q)
            return -EIO;
        bind_name(q, 1, name);
        return fetch_attr(c, q, MS_MAILBOX, out, "lookup");
    case MS_MAILBOX:
        q = Q(c,
              "SELECT " FOLDER_COLS " FROM folder WHERE mailbox = ? AND parent = 0 AND name = ?");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, parent.id);
        bind_name(q, 2, name);
        return fetch_attr(c, q, MS_FOLDER, out, "lookup");
    case MS_FOLDER:
        q = Q(c, "SELECT " FOLDER_COLS " FROM folder WHERE parent = ? AND name = ?");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, parent.id);
        bind_name(q, 2, name);
        rc = fetch_attr(c, q, MS_FOLDER, out, "lookup");
        if (rc != -ENOENT)
            return rc;
        q = Q(c, "SELECT " MESSAGE_COLS " FROM message m JOIN folder f ON f.id = m.folder"
                 " WHERE m.folder = ? AND m.name = ? AND m.state = 0");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, parent.id);
        bind_name(q, 2, name);
        return fetch_attr(c, q, MS_MESSAGE, out, "lookup");
    default:
        return -ENOTDIR;
    }
}

/* Wraps a read-only operation: takes a connection, returns it. */
#define WITH_CONN(st, c, expr)                                                                     \
    do {                                                                                           \
        conn *c = conn_get(st);                                                                    \
        if (!c)                                                                                    \
            return -EIO;                                                                           \
        int rc_ = (expr);                                                                          \
        conn_put(st, c);                                                                           \
        return rc_;                                                                                \
    } while (0)

static int sq_lookup(ms_store *st, ms_node parent, const char *name, ms_attr *out)
{
    WITH_CONN(st, c, lookup_in(c, parent, name, out));
}

static int sq_getattr(ms_store *st, ms_node node, ms_attr *out)
{
    WITH_CONN(st, c, get_attr(c, node, out));
}

/* ---------------------------------------------------------- listing */

static int list_rows(conn *c, sqlite3_stmt *q, ms_kind kind, uint64_t cookie_base, ms_list_fn fn,
                     void *ctx, bool *stopped)
{
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        ms_attr a;
        row_attr(q, kind, &a);
        int n = sqlite3_column_bytes(q, 8);
        char name[MS_NAME_MAX + 1];
        if (n > MS_NAME_MAX)
            continue; /* cannot happen through the API; never overflow */
        memcpy(name, sqlite3_column_blob(q, 8), (size_t)n);
        name[n] = '\0';
        if (fn(ctx, name, &a, cookie_base + (uint64_t)a.node.id)) {
            *stopped = true;
            break;
        }
    }
    sqlite3_reset(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, "list");
}

static int list_in(conn *c, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx)
{
    bool stopped = false;
    sqlite3_stmt *q;
    int rc;
    switch (parent.kind) {
    case MS_ROOT:
        q = Q(c, "SELECT " MAILBOX_COLS " FROM mailbox WHERE state = 0 AND id > ? ORDER BY id");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, (int64_t)cookie);
        return list_rows(c, q, MS_MAILBOX, 0, fn, ctx, &stopped);
    case MS_MAILBOX:
        q = Q(c, "SELECT " FOLDER_COLS " FROM folder WHERE mailbox = ? AND parent = 0 AND id > ?"
                 " ORDER BY id");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, parent.id);
        sqlite3_bind_int64(q, 2, (int64_t)cookie);
        return list_rows(c, q, MS_FOLDER, 0, fn, ctx, &stopped);
    case MS_FOLDER: {
        ms_attr fa;
        rc = get_attr(c, parent, &fa);
        if (rc)
            return rc;
        if (cookie < COOKIE_MSG) {
            q = Q(c, "SELECT " FOLDER_COLS " FROM folder WHERE parent = ? AND id > ? ORDER BY id");
            if (!q)
                return -EIO;
            sqlite3_bind_int64(q, 1, parent.id);
            sqlite3_bind_int64(q, 2, (int64_t)cookie);
            rc = list_rows(c, q, MS_FOLDER, 0, fn, ctx, &stopped);
            if (rc || stopped)
                return rc;
            cookie = COOKIE_MSG;
        }
        q = Q(c, "SELECT id, size, mtime_ns, mode, uid, gid, imap_uid, ?, name FROM message"
                 " WHERE folder = ? AND state = 0 AND id > ? ORDER BY id");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, fa.mailbox);
        sqlite3_bind_int64(q, 2, parent.id);
        sqlite3_bind_int64(q, 3, (int64_t)(cookie - COOKIE_MSG));
        return list_rows(c, q, MS_MESSAGE, COOKIE_MSG, fn, ctx, &stopped);
    }
    default:
        return -ENOTDIR;
    }
}

static int sq_list(ms_store *st, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx)
{
    WITH_CONN(st, c, list_in(c, parent, cookie, fn, ctx));
}

/* ------------------------------------------------------ directories */

/* The mailbox a directory node belongs to (0 for the store root). */
static int mailbox_of(conn *c, ms_node n, int64_t *out)
{
    if (n.kind == MS_ROOT) {
        *out = 0;
        return 0;
    }
    ms_attr a;
    int rc = get_attr(c, n, &a);
    if (!rc)
        *out = a.mailbox;
    return rc;
}

static int message_named(conn *c, int64_t folder, const char *name, int64_t *id, int64_t *content)
{
    sqlite3_stmt *q =
        Q(c, "SELECT id, content FROM message WHERE folder = ? AND name = ? AND state = 0");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    bind_name(q, 2, name);
    int rc = step_row(c, q, "message");
    if (rc)
        return rc;
    if (id)
        *id = sqlite3_column_int64(q, 0);
    if (content)
        *content = sqlite3_column_int64(q, 1);
    sqlite3_reset(q);
    return 0;
}

/* Any message row named name in folder, reserved ones included. */
static int name_taken_by_message(conn *c, int64_t folder, const char *name)
{
    sqlite3_stmt *q = Q(c, "SELECT 1 FROM message WHERE folder = ? AND name = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    bind_name(q, 2, name);
    int rc = step_row(c, q, "name");
    sqlite3_reset(q);
    return rc == 0 ? 1 : rc == -ENOENT ? 0 : rc;
}

static int mkdir_in(conn *c, ms_node parent, const char *name, uint32_t mode, uint32_t uid,
                    uint32_t gid, ms_attr *out)
{
    sqlite3_stmt *q;
    int64_t now = now_ns();
    int rc;
    if (parent.kind == MS_ROOT) {
        q = Q(c, "INSERT INTO mailbox(name, mode, uid, gid, mtime_ns) VALUES (?, ?, ?, ?, ?)");
        if (!q)
            return -EIO;
        bind_name(q, 1, name);
    } else {
        ms_attr pa;
        rc = get_attr(c, parent, &pa);
        if (rc)
            return rc;
        if (parent.kind == MS_FOLDER) {
            rc = name_taken_by_message(c, parent.id, name);
            if (rc)
                return rc > 0 ? -EEXIST : rc;
        }
        q = Q(c, "INSERT INTO folder(mailbox, parent, name, mode, uid, gid, mtime_ns)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?)");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, pa.mailbox);
        sqlite3_bind_int64(q, 2, parent.kind == MS_FOLDER ? parent.id : 0);
        bind_name(q, 3, name);
    }
    int base = parent.kind == MS_ROOT ? 1 : 3;
    sqlite3_bind_int(q, base + 1, (int)mode);
    sqlite3_bind_int64(q, base + 2, uid);
    sqlite3_bind_int64(q, base + 3, gid);
    sqlite3_bind_int64(q, base + 4, now);
    rc = step_done(c, q, "mkdir");
    if (rc)
        return rc;
    ms_node n = {parent.kind == MS_ROOT ? MS_MAILBOX : MS_FOLDER, sqlite3_last_insert_rowid(c->db)};
    return get_attr(c, n, out);
}

static int sq_mkdir(ms_store *st, ms_node parent, const char *name, uint32_t mode, uint32_t uid,
                    uint32_t gid, ms_attr *out)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc)
        rc = tx_end(st, c, mkdir_in(c, parent, name, mode, uid, gid, out));
    conn_put(st, c);
    return rc;
}

/* 1 if the folder has subfolders or messages (reserved ones count). */
static int folder_busy(conn *c, int64_t folder)
{
    sqlite3_stmt *q = Q(c, "SELECT EXISTS(SELECT 1 FROM folder WHERE parent = ?1)"
                           " OR EXISTS(SELECT 1 FROM message WHERE folder = ?1)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    int rc = step_row(c, q, "rmdir");
    if (rc)
        return rc;
    int busy = sqlite3_column_int(q, 0);
    sqlite3_reset(q);
    return busy;
}

static int mailbox_busy(conn *c, int64_t mailbox)
{
    sqlite3_stmt *q = Q(c, "SELECT EXISTS(SELECT 1 FROM folder WHERE mailbox = ?)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, mailbox);
    int rc = step_row(c, q, "rmdir");
    if (rc)
        return rc;
    int busy = sqlite3_column_int(q, 0);
    sqlite3_reset(q);
    return busy;
}

/* Deletes directory node n if empty: -ENOTEMPTY otherwise. */
static int remove_dir(conn *c, ms_node n)
{
    int busy = n.kind == MS_MAILBOX ? mailbox_busy(c, n.id) : folder_busy(c, n.id);
    if (busy)
        return busy > 0 ? -ENOTEMPTY : busy;
    sqlite3_stmt *q = n.kind == MS_MAILBOX ? Q(c, "DELETE FROM mailbox WHERE id = ?")
                                           : Q(c, "DELETE FROM folder WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, n.id);
    return step_done(c, q, "rmdir");
}

static int rmdir_in(conn *c, ms_node parent, const char *name)
{
    ms_attr a;
    int rc = lookup_in(c, parent, name, &a);
    if (rc)
        return rc;
    if (a.node.kind == MS_MESSAGE)
        return -ENOTDIR;
    return remove_dir(c, a.node);
}

static int sq_rmdir(ms_store *st, ms_node parent, const char *name)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc)
        rc = tx_end(st, c, rmdir_in(c, parent, name));
    conn_put(st, c);
    return rc;
}

static int delete_message(conn *c, int64_t id)
{
    sqlite3_stmt *q = Q(c, "DELETE FROM message WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, id);
    return step_done(c, q, "unlink");
}

static int unlink_in(conn *c, ms_node folder, const char *name, int64_t *content)
{
    int64_t id;
    int rc = message_named(c, folder.id, name, &id, content);
    if (rc == -ENOENT) {
        ms_attr a;
        if (lookup_in(c, folder, name, &a) == 0 && a.node.kind == MS_FOLDER)
            return -EISDIR;
    }
    return rc ? rc : delete_message(c, id);
}

static int sq_unlink(ms_store *st, ms_node folder, const char *name, int64_t *content)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc)
        rc = tx_end(st, c, unlink_in(c, folder, name, content));
    conn_put(st, c);
    return rc;
}

/* Next IMAP UID of folder, reserved (the counter moves on). */
static int take_uid(conn *c, int64_t folder, int64_t *uid)
{
    sqlite3_stmt *q = Q(c, "UPDATE folder SET next_uid = next_uid + 1 WHERE id = ?"
                           " RETURNING next_uid - 1");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    int rc = step_row(c, q, "uid");
    if (rc)
        return rc;
    *uid = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return 0;
}

/* True if folder `anc` is `f` or one of its ancestors. */
static int is_ancestor(conn *c, int64_t anc, int64_t f)
{
    sqlite3_stmt *q = Q(c, "SELECT parent FROM folder WHERE id = ?");
    for (int depth = 0; f && depth < 10000; depth++) {
        if (f == anc)
            return 1;
        if (!q)
            return -EIO;
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, f);
        int rc = step_row(c, q, "rename");
        if (rc)
            return rc == -ENOENT ? 0 : rc;
        f = sqlite3_column_int64(q, 0);
    }
    sqlite3_reset(q);
    return 0;
}

static int rename_mailbox(conn *c, const ms_attr *src, const char *newname, bool noreplace)
{
    ms_attr dst;
    int rc = lookup_in(c, (ms_node){MS_ROOT, 0}, newname, &dst);
    if (rc == 0) {
        if (dst.node.id == src->node.id)
            return 0;
        if (noreplace)
            return -EEXIST;
        rc = remove_dir(c, dst.node);
        if (rc)
            return rc;
    } else if (rc != -ENOENT) {
        return rc;
    }
    sqlite3_stmt *q = Q(c, "UPDATE mailbox SET name = ? WHERE id = ?");
    if (!q)
        return -EIO;
    bind_name(q, 1, newname);
    sqlite3_bind_int64(q, 2, src->node.id);
    return step_done(c, q, "rename");
}

static int rename_in(conn *c, ms_node parent, const char *name, ms_node newparent,
                     const char *newname, bool noreplace, int64_t *replaced)
{
    ms_attr src, dst;
    int rc = lookup_in(c, parent, name, &src);
    if (rc)
        return rc;
    if (parent.kind == MS_ROOT || newparent.kind == MS_ROOT) {
        if (parent.kind == MS_ROOT && newparent.kind == MS_ROOT)
            return rename_mailbox(c, &src, newname, noreplace);
        return -EXDEV; /* a mailbox becoming a folder, or back: copy it */
    }
    int64_t mb_new;
    rc = mailbox_of(c, newparent, &mb_new);
    if (rc)
        return rc;
    if (mb_new != src.mailbox)
        return -EXDEV;
    if (src.node.kind == MS_MESSAGE && newparent.kind != MS_FOLDER)
        return -EPERM; /* messages live in folders only */
    rc = lookup_in(c, newparent, newname, &dst);
    if (rc == 0) {
        if (dst.node.kind == src.node.kind && dst.node.id == src.node.id)
            return 0;
        if (noreplace)
            return -EEXIST;
        if (src.node.kind == MS_MESSAGE && dst.node.kind != MS_MESSAGE)
            return -EISDIR;
        if (src.node.kind == MS_FOLDER && dst.node.kind != MS_FOLDER)
            return -ENOTDIR;
        if (dst.node.kind == MS_MESSAGE) {
            rc = message_named(c, newparent.id, newname, NULL, replaced);
            if (!rc)
                rc = delete_message(c, dst.node.id);
        } else {
            rc = remove_dir(c, dst.node);
        }
        if (rc)
            return rc;
    } else if (rc != -ENOENT) {
        return rc;
    }
    sqlite3_stmt *q;
    if (src.node.kind == MS_MESSAGE) {
        int64_t uid = src.imap_uid;
        if (newparent.id != parent.id) {
            rc = take_uid(c, newparent.id, &uid); /* refiled: a new UID, as IMAP MOVE */
            if (rc)
                return rc;
        }
        q = Q(c, "UPDATE message SET folder = ?, name = ?, imap_uid = ? WHERE id = ?");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, newparent.id);
        bind_name(q, 2, newname);
        sqlite3_bind_int64(q, 3, uid);
        sqlite3_bind_int64(q, 4, src.node.id);
        return step_done(c, q, "rename");
    }
    if (newparent.kind == MS_FOLDER) {
        rc = is_ancestor(c, src.node.id, newparent.id);
        if (rc)
            return rc > 0 ? -EINVAL : rc;
    }
    if (newparent.kind == MS_FOLDER) {
        rc = name_taken_by_message(c, newparent.id, newname);
        if (rc)
            return rc > 0 ? -EEXIST : rc;
    }
    q = Q(c, "UPDATE folder SET parent = ?, name = ? WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, newparent.kind == MS_FOLDER ? newparent.id : 0);
    bind_name(q, 2, newname);
    sqlite3_bind_int64(q, 3, src.node.id);
    return step_done(c, q, "rename");
}

static int sq_rename(ms_store *st, ms_node parent, const char *name, ms_node newparent,
                     const char *newname, bool noreplace, int64_t *replaced)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc)
        rc = tx_end(st, c, rename_in(c, parent, name, newparent, newname, noreplace, replaced));
    conn_put(st, c);
    return rc;
}

/* ------------------------------------------------------- attributes */

static int setattr_in(conn *c, ms_node n, const ms_setattr_req *req, ms_attr *out)
{
    ms_attr a;
    int rc = get_attr(c, n, &a);
    if (rc)
        return rc;
    if (req->mask & MS_SET_MODE)
        a.mode = req->mode & 07777;
    if (req->mask & MS_SET_UID)
        a.uid = req->uid;
    if (req->mask & MS_SET_GID)
        a.gid = req->gid;
    if (req->mask & MS_SET_MTIME)
        a.mtime_ns = req->mtime_ns;
    sqlite3_stmt *q =
        n.kind == MS_MAILBOX
            ? Q(c, "UPDATE mailbox SET mode = ?, uid = ?, gid = ?, mtime_ns = ? WHERE id = ?")
        : n.kind == MS_FOLDER
            ? Q(c, "UPDATE folder SET mode = ?, uid = ?, gid = ?, mtime_ns = ? WHERE id = ?")
            : Q(c, "UPDATE message SET mode = ?, uid = ?, gid = ?, mtime_ns = ? WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int(q, 1, (int)a.mode);
    sqlite3_bind_int64(q, 2, a.uid);
    sqlite3_bind_int64(q, 3, a.gid);
    sqlite3_bind_int64(q, 4, a.mtime_ns);
    sqlite3_bind_int64(q, 5, n.id);
    rc = step_done(c, q, "setattr");
    if (!rc && out)
        *out = a;
    return rc;
}

static int sq_setattr(ms_store *st, ms_node node, const ms_setattr_req *req, ms_attr *out)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc)
        rc = tx_end(st, c, setattr_in(c, node, req, out));
    conn_put(st, c);
    return rc;
}

static const char *xattr_select(ms_xattr_id xa)
{
    return xa == MS_XA_FLAGS         ? "SELECT flags FROM message WHERE id = ?"
           : xa == MS_XA_SPECIAL_USE ? "SELECT special_use FROM folder WHERE id = ?"
                                     : "SELECT acl FROM mailbox WHERE id = ?";
}

static const char *xattr_update(ms_xattr_id xa)
{
    return xa == MS_XA_FLAGS         ? "UPDATE message SET flags = ? WHERE id = ?"
           : xa == MS_XA_SPECIAL_USE ? "UPDATE folder SET special_use = ? WHERE id = ?"
                                     : "UPDATE mailbox SET acl = ? WHERE id = ?";
}

static int xattr_get_in(conn *c, ms_node n, ms_xattr_id xa, char **value, size_t *len)
{
    sqlite3_stmt *q = Q(c, xattr_select(xa));
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, n.id);
    int rc = step_row(c, q, "getxattr");
    if (rc)
        return rc;
    if (sqlite3_column_type(q, 0) == SQLITE_NULL) {
        *value = NULL;
        *len = 0;
    } else {
        const void *b = sqlite3_column_blob(q, 0);
        int n = sqlite3_column_bytes(q, 0);
        *value = g_malloc((size_t)n + 1);
        if (n)
            memcpy(*value, b, (size_t)n);
        (*value)[n] = '\0';
        *len = (size_t)n;
    }
    sqlite3_reset(q);
    return 0;
}

static int sq_xattr_get(ms_store *st, ms_node node, ms_xattr_id xa, char **value, size_t *len)
{
    WITH_CONN(st, c, xattr_get_in(c, node, xa, value, len));
}

static int xattr_set_in(conn *c, ms_node n, ms_xattr_id xa, const char *value, size_t len)
{
    sqlite3_stmt *q = Q(c, xattr_update(xa));
    if (!q)
        return -EIO;
    if (value)
        sqlite3_bind_blob(q, 1, value, (int)len, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 1);
    sqlite3_bind_int64(q, 2, n.id);
    int rc = step_done(c, q, "setxattr");
    if (!rc && sqlite3_changes(c->db) == 0)
        rc = -ENOENT;
    return rc;
}

static int sq_xattr_set(ms_store *st, ms_node node, ms_xattr_id xa, const char *value, size_t len)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc)
        rc = tx_end(st, c, xattr_set_in(c, node, xa, value, len));
    conn_put(st, c);
    return rc;
}

/* ---------------------------------------------------------- content */

static int create_in(conn *c, ms_node folder, const char *name, uint32_t mode, uint32_t uid,
                     uint32_t gid, ms_attr *out)
{
    ms_attr fa;
    int rc = get_attr(c, folder, &fa);
    if (rc)
        return rc;
    ms_attr sub;
    rc = lookup_in(c, folder, name, &sub);
    if (rc == 0 && sub.node.kind == MS_FOLDER)
        return -EEXIST;
    int64_t imap_uid;
    rc = take_uid(c, folder.id, &imap_uid);
    if (rc)
        return rc;
    sqlite3_stmt *q = Q(c, "INSERT INTO message(folder, name, state, imap_uid, mode, uid, gid,"
                           " mtime_ns) VALUES (?, ?, 1, ?, ?, ?, ?, ?)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder.id);
    bind_name(q, 2, name);
    sqlite3_bind_int64(q, 3, imap_uid);
    sqlite3_bind_int(q, 4, (int)mode);
    sqlite3_bind_int64(q, 5, uid);
    sqlite3_bind_int64(q, 6, gid);
    sqlite3_bind_int64(q, 7, now_ns());
    rc = step_done(c, q, "create");
    if (rc)
        return rc;
    return get_attr(c, (ms_node){MS_MESSAGE, sqlite3_last_insert_rowid(c->db)}, out);
}

static int sq_message_create(ms_store *st, ms_node folder, const char *name, uint32_t mode,
                             uint32_t uid, uint32_t gid, ms_attr *out)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc)
        rc = tx_end(st, c, create_in(c, folder, name, mode, uid, gid, out));
    conn_put(st, c);
    return rc;
}

static int content_of_in(conn *c, int64_t message, int64_t *content, int64_t *size)
{
    sqlite3_stmt *q = Q(c, "SELECT content, size FROM message WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, message);
    int rc = step_row(c, q, "open");
    if (rc)
        return rc;
    *content = sqlite3_column_int64(q, 0);
    *size = sqlite3_column_int64(q, 1);
    sqlite3_reset(q);
    return 0;
}

static int sq_content_of(ms_store *st, int64_t message, int64_t *content, int64_t *size)
{
    WITH_CONN(st, c, content_of_in(c, message, content, size));
}

static ssize_t content_read_in(conn *c, int64_t content, char *buf, size_t len, int64_t off)
{
    sqlite3_stmt *q = Q(c, "SELECT data FROM chunk WHERE content = ? AND seq = ?");
    if (!q)
        return -EIO;
    size_t done = 0;
    while (done < len) {
        int64_t pos = off + (int64_t)done;
        int64_t seq = pos / MS_CHUNK;
        size_t in = (size_t)(pos % MS_CHUNK);
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, content);
        sqlite3_bind_int64(q, 2, seq);
        int rc = step_row(c, q, "read");
        if (rc == -ENOENT)
            break; /* past the last chunk */
        if (rc)
            return rc;
        size_t n = (size_t)sqlite3_column_bytes(q, 0);
        if (in >= n)
            break;
        size_t take = MIN(n - in, len - done);
        memcpy(buf + done, (const char *)sqlite3_column_blob(q, 0) + in, take);
        done += take;
        if (in + take < MS_CHUNK && in + take == n)
            break; /* a short chunk is the last one */
    }
    sqlite3_reset(q);
    return (ssize_t)done;
}

static ssize_t sq_content_read(ms_store *st, int64_t content, void *buf, size_t len, int64_t off)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    ssize_t n = content_read_in(c, content, buf, len, off);
    conn_put(st, c);
    return n;
}

static int drop_in(conn *c, int64_t content)
{
    sqlite3_stmt *q = Q(c, "SELECT EXISTS(SELECT 1 FROM message WHERE content = ?)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, content);
    int rc = step_row(c, q, "drop");
    if (rc)
        return rc;
    int used = sqlite3_column_int(q, 0);
    sqlite3_reset(q);
    if (used)
        return 0;
    q = Q(c, "DELETE FROM chunk WHERE content = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, content);
    rc = step_done(c, q, "drop");
    if (rc)
        return rc;
    q = Q(c, "DELETE FROM content WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, content);
    return step_done(c, q, "drop");
}

static int sq_content_drop(ms_store *st, int64_t content)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc)
        rc = tx_end(st, c, drop_in(c, content));
    conn_put(st, c);
    return rc;
}

static int sq_discard_pending(ms_store *st, int64_t message)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc) {
        sqlite3_stmt *q = Q(c, "DELETE FROM message WHERE id = ? AND state = 1");
        if (q)
            sqlite3_bind_int64(q, 1, message);
        rc = tx_end(st, c, step_done(c, q, "discard"));
    }
    conn_put(st, c);
    return rc;
}

/* Copies the spool into new chunks of a new content id; hashes them. */
static int write_content(conn *c, ms_spool *sp, int64_t *content, uint8_t sha[32])
{
    int64_t size = ms_spool_size(sp);
    sqlite3_stmt *q = Q(c, "INSERT INTO content(size) VALUES (?)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, size);
    int rc = step_done(c, q, "content");
    if (rc)
        return rc;
    int64_t id = sqlite3_last_insert_rowid(c->db);
    g_autoptr(GChecksum) ck = g_checksum_new(G_CHECKSUM_SHA256);
    g_autofree char *buf = g_malloc(MS_CHUNK);
    for (int64_t off = 0, seq = 0; off < size; seq++) {
        ssize_t n = ms_spool_pread(sp, buf, MS_CHUNK, off);
        if (n <= 0)
            return n < 0 ? (int)n : -EIO;
        g_checksum_update(ck, (const guchar *)buf, n);
        q = Q(c, "INSERT INTO chunk(content, seq, data) VALUES (?, ?, ?)");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_int64(q, 2, seq);
        sqlite3_bind_blob(q, 3, buf, (int)n, SQLITE_STATIC);
        rc = step_done(c, q, "write");
        if (rc)
            return rc;
        off += n;
    }
    gsize len = 32;
    g_checksum_get_digest(ck, sha, &len);
    *content = id;
    return 0;
}

/* A new visible message named "<uid>.eml" for a delivery. */
static int insert_delivered(conn *c, int64_t folder, int64_t *id)
{
    ms_attr fa;
    int rc = get_attr(c, (ms_node){MS_FOLDER, folder}, &fa);
    if (rc)
        return rc;
    for (int tries = 0; tries < 1000; tries++) {
        int64_t uid;
        rc = take_uid(c, folder, &uid);
        if (rc)
            return rc;
        char name[32];
        snprintf(name, sizeof name, "%lld.eml", (long long)uid);
        rc = name_taken_by_message(c, folder, name);
        if (rc > 0)
            continue; /* somebody created that name by hand: next UID */
        if (rc < 0)
            return rc;
        sqlite3_stmt *q = Q(c, "INSERT INTO message(folder, name, imap_uid, mode, uid, gid,"
                               " mtime_ns) VALUES (?, ?, ?, 384, 0, 0, ?)");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, folder);
        bind_name(q, 2, name);
        sqlite3_bind_int64(q, 3, uid);
        sqlite3_bind_int64(q, 4, now_ns());
        rc = step_done(c, q, "deliver");
        if (rc)
            return rc;
        *id = sqlite3_last_insert_rowid(c->db);
        return 0;
    }
    return -EEXIST;
}

static int commit_in(conn *c, const ms_commit *cm, int64_t *old_content, ms_attr *out)
{
    int64_t id = cm->message, old = 0, size = 0;
    int rc;
    if (id == 0)
        rc = insert_delivered(c, cm->folder.id, &id);
    else
        rc = content_of_in(c, id, &old, &size);
    if (rc)
        return rc;
    int64_t content = 0;
    uint8_t sha[32];
    rc = write_content(c, cm->spool, &content, sha);
    if (rc)
        return rc;
    sqlite3_stmt *q = Q(c, "UPDATE message SET content = ?, size = ?, sha256 = ?, state = 0"
                           " WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, content);
    sqlite3_bind_int64(q, 2, ms_spool_size(cm->spool));
    sqlite3_bind_blob(q, 3, sha, 32, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, id);
    rc = step_done(c, q, "commit");
    ms_node n = {MS_MESSAGE, id};
    if (!rc && cm->flags)
        rc = xattr_set_in(c, n, MS_XA_FLAGS, cm->flags, cm->flags_len);
    if (!rc && cm->attr.mask)
        rc = setattr_in(c, n, &cm->attr, NULL);
    if (!rc)
        rc = get_attr(c, n, out);
    if (!rc)
        *old_content = old;
    return rc;
}

/* fsync of the WAL and the database: everything committed is durable. */
static int sync_files(const char *path)
{
    g_autofree char *wal = g_strconcat(path, "-wal", NULL);
    const char *files[] = {wal, path};
    for (size_t i = 0; i < 2; i++) {
        int fd = open(files[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                continue;
            return -errno;
        }
        int rc = fsync(fd) < 0 ? -errno : 0;
        close(fd);
        if (rc)
            return rc;
    }
    return 0;
}

static int sq_sync(ms_store *st) { return sync_files(S(st)->path); }

static int sq_commit(ms_store *st, const ms_commit *cm, int64_t *old_content, ms_attr *out)
{
    conn *c = conn_get(st);
    if (!c)
        return -EIO;
    int rc = tx_begin(st, c);
    if (!rc)
        rc = tx_end(st, c, commit_in(c, cm, old_content, out));
    conn_put(st, c);
    if (!rc && cm->durable)
        rc = sync_files(S(st)->path);
    return rc;
}

/* ----------------------------------------------------------- stats */

static int stats_in(conn *c, const char *path, ms_store_stats *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *q = Q(c, "SELECT (SELECT count(*) FROM mailbox WHERE state = 0),"
                           " (SELECT count(*) FROM folder),"
                           " (SELECT count(*) FROM message WHERE state = 0),"
                           " (SELECT coalesce(sum(size), 0) FROM message WHERE state = 0)");
    int rc = step_row(c, q, "stats");
    if (rc)
        return rc;
    out->mailboxes = sqlite3_column_int64(q, 0);
    out->folders = sqlite3_column_int64(q, 1);
    out->messages = sqlite3_column_int64(q, 2);
    out->bytes = sqlite3_column_int64(q, 3);
    sqlite3_reset(q);
    int pages = 0, freep = 0, psize = 0;
    pragma_int(c, "PRAGMA page_count", &pages);
    pragma_int(c, "PRAGMA freelist_count", &freep);
    pragma_int(c, "PRAGMA page_size", &psize);
    struct stat sb;
    out->file_bytes = stat(path, &sb) == 0 ? sb.st_size : (int64_t)pages * psize;
    g_autofree char *wal = g_strconcat(path, "-wal", NULL);
    if (stat(wal, &sb) == 0)
        out->file_bytes += sb.st_size;
    out->reclaimable_bytes = (int64_t)freep * psize;
    return 0;
}

static int sq_stats(ms_store *st, ms_store_stats *out)
{
    WITH_CONN(st, c, stats_in(c, S(st)->path, out));
}

const ms_backend ms_sqlite_backend = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .stats = sq_stats,
    .sync = sq_sync,
    .lookup = sq_lookup,
    .getattr = sq_getattr,
    .setattr = sq_setattr,
    .list = sq_list,
    .mkdir = sq_mkdir,
    .rmdir = sq_rmdir,
    .unlink = sq_unlink,
    .rename = sq_rename,
    .xattr_get = sq_xattr_get,
    .xattr_set = sq_xattr_set,
    .message_create = sq_message_create,
    .content_of = sq_content_of,
    .content_read = sq_content_read,
    .content_drop = sq_content_drop,
    .discard_pending = sq_discard_pending,
    .commit = sq_commit,
};
