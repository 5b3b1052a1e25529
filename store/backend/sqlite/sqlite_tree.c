/*
 * sqlite_tree.c — the namespace of the sqlite backend: mailboxes,
 * folders and message metadata (lookup, listing, mkdir/rmdir, unlink,
 * rename, attributes and extended attributes).
 */
#include "sqlite_int.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------- rows */

/*
 * Every attribute query selects the same columns, so one function reads
 * them: id, size, mtime_ns, mode, uid, gid, imap_uid, mailbox, name,
 * ctime_ns, modseq (then a folder's noselect).
 */
#define MAILBOX_COLS "id, 0, mtime_ns, mode, uid, gid, 0, id, name, ctime_ns, modseq"
#define FOLDER_COLS                                                                                \
    "id, 0, mtime_ns, mode, uid, gid, 0, mailbox, name, ctime_ns, modseq,"                         \
    " noselect AND NOT EXISTS(SELECT 1 FROM message WHERE message.folder = folder.id)"
#define MESSAGE_COLS                                                                               \
    "m.id, m.size, m.mtime_ns, m.mode, m.uid, m.gid, m.imap_uid, f.mailbox, m.name, m.ctime_ns,"   \
    " m.modseq"

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
    a->ctime_ns = sqlite3_column_int64(q, 9);
    a->modseq = (uint64_t)sqlite3_column_int64(q, 10);
    if (kind == MS_FOLDER)
        a->noselect = sqlite3_column_int(q, 11) != 0;
}

/* Reads one attribute row of kind from q; resets q. */
static int fetch_attr(sq_conn *c, sqlite3_stmt *q, ms_kind kind, ms_attr *out, const char *what)
{
    int rc = sq_step_row(c, q, what);
    if (rc)
        return rc;
    if (out)
        row_attr(q, kind, out);
    sqlite3_reset(q);
    return 0;
}

/*
 * The store's own directory keeps its attributes in meta (root.mode,
 * root.uid, root.gid, root.mtime_ns), each row only once it was set:
 * until then the directory shows 0755, owned by this process's user (the
 * one who mounted), with mtime 0 (the mount shows its mount time).
 */
static int root_attr(sq_conn *c, ms_attr *out)
{
    memset(out, 0, sizeof *out);
    out->mode = 0755;
    out->uid = (uint32_t)getuid();
    out->gid = (uint32_t)getgid();
    sqlite3_stmt *q = sq_stmt(c, "SELECT key, value FROM meta WHERE key IN"
                                 " ('root.mode', 'root.uid', 'root.gid', 'root.mtime_ns')");
    if (!q)
        return -EIO;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        int64_t v = sqlite3_column_int64(q, 1);
        if (!strcmp(k, "root.mode"))
            out->mode = (uint32_t)v & 07777;
        else if (!strcmp(k, "root.uid"))
            out->uid = (uint32_t)v;
        else if (!strcmp(k, "root.gid"))
            out->gid = (uint32_t)v;
        else
            out->mtime_ns = v;
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, "root attributes");
}

/* Writes one root.* row of meta. */
static int root_set(sq_conn *c, const char *key, int64_t value)
{
    sqlite3_stmt *q = sq_stmt(c, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)");
    if (!q)
        return -EIO;
    sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, value);
    return sq_step_done(c, q, "root attributes");
}

/* chmod, chown and utimens of the store's directory, kept in meta. */
static int root_setattr_in(sq_conn *c, const ms_setattr_req *req, ms_attr *out)
{
    int rc = 0;
    if (req->mask & MS_SET_MODE)
        rc = root_set(c, "root.mode", req->mode & 07777);
    if (!rc && (req->mask & MS_SET_UID))
        rc = root_set(c, "root.uid", req->uid);
    if (!rc && (req->mask & MS_SET_GID))
        rc = root_set(c, "root.gid", req->gid);
    if (!rc && (req->mask & MS_SET_MTIME))
        rc = root_set(c, "root.mtime_ns", req->mtime_ns);
    ms_attr a;
    if (!rc)
        rc = root_attr(c, &a);
    if (!rc && out)
        *out = a;
    return rc;
}

int sq_get_attr(sq_conn *c, ms_node n, ms_attr *out)
{
    sqlite3_stmt *q;
    switch (n.kind) {
    case MS_ROOT:
        return root_attr(c, out);
    case MS_MAILBOX:
        q = sq_stmt(c, "SELECT " MAILBOX_COLS " FROM mailbox WHERE id = ?");
        break;
    case MS_FOLDER:
        q = sq_stmt(c, "SELECT " FOLDER_COLS " FROM folder WHERE id = ?");
        break;
    case MS_MESSAGE:
        /* A deleted message is gone from the tree, even for an open file's
         * inode: it can no longer be written or changed. */
        q = sq_stmt(c, "SELECT " MESSAGE_COLS " FROM message m JOIN folder f ON f.id = m.folder"
                       " WHERE m.id = ? AND m.deleted_ns = 0");
        break;
    default:
        return -EINVAL;
    }
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, n.id);
    return fetch_attr(c, q, n.kind, out, "getattr");
}

/*
 * The store-wide rule (ms_mailbox_refusal) for a write into mailbox,
 * read inside the write's own transaction: a move that locks the mailbox
 * (ms_mailbox_set, a transaction of its own) is then either before this
 * write, which is refused, or after it, and copies what it wrote.  A
 * check before the transaction could pass, lose the race to the lock,
 * and write into a mailbox the move has already copied.
 */
int sq_mailbox_writable(sq_conn *c, int64_t mailbox)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT lock_move, state FROM mailbox WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, mailbox);
    int rc = sq_step_row(c, q, "lock");
    if (rc)
        return rc;
    int64_t lock = sqlite3_column_int64(q, 0);
    ms_mb_state state = (ms_mb_state)sqlite3_column_int(q, 1);
    sqlite3_reset(q);
    return ms_mailbox_refusal(lock, state);
}

/*
 * Begins one tree write of mailbox (0: the store's root, no mailbox):
 * its transaction, then the rule for the mailbox store.c named, read
 * inside it.  On failure nothing is left open.
 */
static int write_begin(ms_store *st, sq_conn *c, int64_t mailbox)
{
    int rc = sq_tx_begin(st, c);
    if (rc || !mailbox)
        return rc;
    rc = sq_mailbox_writable(c, mailbox);
    return rc ? sq_tx_end(st, c, rc) : 0;
}

int sq_lookup_in(sq_conn *c, ms_node parent, const char *name, ms_attr *out)
{
    sqlite3_stmt *q;
    int rc;
    switch (parent.kind) {
    case MS_ROOT:
        q = sq_stmt(c, "SELECT " MAILBOX_COLS " FROM mailbox WHERE name = ? AND state = 0");
        if (!q)
            return -EIO;
        sq_bind_name(q, 1, name);
        return fetch_attr(c, q, MS_MAILBOX, out, "lookup");
    case MS_MAILBOX:
        q = sq_stmt(c, "SELECT " FOLDER_COLS
                       " FROM folder WHERE mailbox = ? AND parent = 0 AND name = ?");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, parent.id);
        sq_bind_name(q, 2, name);
        return fetch_attr(c, q, MS_FOLDER, out, "lookup");
    case MS_FOLDER:
        q = sq_stmt(c, "SELECT " FOLDER_COLS " FROM folder WHERE parent = ? AND name = ?");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, parent.id);
        sq_bind_name(q, 2, name);
        rc = fetch_attr(c, q, MS_FOLDER, out, "lookup");
        if (rc != -ENOENT)
            return rc;
        q = sq_stmt(c, "SELECT " MESSAGE_COLS " FROM message m JOIN folder f ON f.id = m.folder"
                       " WHERE m.folder = ? AND m.name = ? AND m.state = 0");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, parent.id);
        sq_bind_name(q, 2, name);
        return fetch_attr(c, q, MS_MESSAGE, out, "lookup");
    default:
        return -ENOTDIR;
    }
}

int sq_lookup(ms_store *st, ms_node parent, const char *name, ms_attr *out)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_lookup_in(c, parent, name, out);
    sq_conn_put(st, c);
    return rc;
}

int sq_getattr(ms_store *st, ms_node node, ms_attr *out)
{
    bool msg = node.kind == MS_MESSAGE;
    if (msg && sq_unborn_attr(st, node.id, true, out))
        return 0;
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_get_attr(c, node, out);
    sq_conn_put(st, c);
    /* Its row written by a transaction that then rolled back. */
    if (rc == -ENOENT && msg && sq_unborn_attr(st, node.id, false, out))
        rc = 0;
    return rc;
}

/* ---------------------------------------------------------- listing */

static int list_rows(sq_conn *c, sqlite3_stmt *q, ms_kind kind, uint64_t cookie_base, ms_list_fn fn,
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

static int list_in(sq_conn *c, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx)
{
    bool stopped = false;
    sqlite3_stmt *q;
    int rc;
    switch (parent.kind) {
    case MS_ROOT:
        q = sq_stmt(c,
                    "SELECT " MAILBOX_COLS " FROM mailbox WHERE state = 0 AND id > ? ORDER BY id");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, (int64_t)cookie);
        return list_rows(c, q, MS_MAILBOX, 0, fn, ctx, &stopped);
    case MS_MAILBOX:
        q = sq_stmt(c,
                    "SELECT " FOLDER_COLS " FROM folder WHERE mailbox = ? AND parent = 0 AND id > ?"
                    " ORDER BY id");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, parent.id);
        sqlite3_bind_int64(q, 2, (int64_t)cookie);
        return list_rows(c, q, MS_FOLDER, 0, fn, ctx, &stopped);
    case MS_FOLDER: {
        ms_attr fa;
        rc = sq_get_attr(c, parent, &fa);
        if (rc)
            return rc;
        if (cookie < COOKIE_MSG) {
            q = sq_stmt(c, "SELECT " FOLDER_COLS
                           " FROM folder WHERE parent = ? AND id > ? ORDER BY id");
            if (!q)
                return -EIO;
            sqlite3_bind_int64(q, 1, parent.id);
            sqlite3_bind_int64(q, 2, (int64_t)cookie);
            rc = list_rows(c, q, MS_FOLDER, 0, fn, ctx, &stopped);
            if (rc || stopped)
                return rc;
            cookie = COOKIE_MSG;
        }
        q = sq_stmt(c,
                    "SELECT id, size, mtime_ns, mode, uid, gid, imap_uid, ?, name, ctime_ns,"
                    " modseq FROM message WHERE folder = ? AND state = 0 AND id > ? ORDER BY id");
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

int sq_list(ms_store *st, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = list_in(c, parent, cookie, fn, ctx);
    sq_conn_put(st, c);
    return rc;
}

/* ------------------------------------------------------ directories */

/* The mailbox a directory node belongs to (0 for the store root). */
static int mailbox_of(sq_conn *c, ms_node n, int64_t *out)
{
    if (n.kind == MS_ROOT) {
        *out = 0;
        return 0;
    }
    ms_attr a;
    int rc = sq_get_attr(c, n, &a);
    if (!rc)
        *out = a.mailbox;
    return rc;
}

static int message_named(sq_conn *c, int64_t folder, const char *name, int64_t *id)
{
    sqlite3_stmt *q =
        sq_stmt(c, "SELECT id FROM message WHERE folder = ? AND name = ? AND state = 0");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    sq_bind_name(q, 2, name);
    int rc = sq_step_row(c, q, "message");
    if (rc)
        return rc;
    *id = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return 0;
}

/* 1 if sql (a SELECT of one parent id and one name) finds a row, else 0
 * or a negative errno. */
static int row_named(sq_conn *c, const char *sql, int64_t parent, const char *name)
{
    sqlite3_stmt *q = sq_stmt(c, sql);
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, parent);
    sq_bind_name(q, 2, name);
    int rc = sq_step_row(c, q, "name");
    sqlite3_reset(q);
    return rc == 0 ? 1 : rc == -ENOENT ? 0 : rc;
}

/* Any message row named name in folder, reserved ones included. */
int sq_name_taken_by_message(sq_conn *c, int64_t folder, const char *name)
{
    return row_named(c, "SELECT 1 FROM message WHERE folder = ? AND name = ?", folder, name);
}

int sq_name_taken_by_subfolder(sq_conn *c, int64_t folder, const char *name)
{
    return row_named(c, "SELECT 1 FROM folder WHERE parent = ? AND name = ?", folder, name);
}

static int mkdir_in(sq_conn *c, ms_node parent, const char *name, uint32_t mode, uint32_t uid,
                    uint32_t gid, ms_attr *out)
{
    sqlite3_stmt *q;
    int64_t now = ms_now_ns();
    int rc;
    if (parent.kind == MS_ROOT) {
        q = sq_stmt(c, "INSERT INTO mailbox(name, mode, uid, gid, mtime_ns, ctime_ns)"
                       " VALUES (?, ?, ?, ?, ?, ?)");
        if (!q)
            return -EIO;
        sq_bind_name(q, 1, name);
    } else {
        ms_attr pa;
        rc = sq_get_attr(c, parent, &pa);
        if (rc)
            return rc;
        if (parent.kind == MS_FOLDER) {
            rc = sq_name_taken_by_message(c, parent.id, name);
            if (rc)
                return rc > 0 ? -EEXIST : rc;
        }
        uint32_t uidvalidity;
        rc = sq_new_uidvalidity(c, &uidvalidity);
        if (rc)
            return rc;
        q = sq_stmt(c, "INSERT INTO folder(mailbox, parent, name, mode, uid, gid, mtime_ns,"
                       " ctime_ns, uidvalidity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, pa.mailbox);
        sqlite3_bind_int64(q, 2, parent.kind == MS_FOLDER ? parent.id : 0);
        sq_bind_name(q, 3, name);
        sqlite3_bind_int64(q, 9, uidvalidity);
    }
    int base = parent.kind == MS_ROOT ? 1 : 3;
    sqlite3_bind_int(q, base + 1, (int)mode);
    sqlite3_bind_int64(q, base + 2, uid);
    sqlite3_bind_int64(q, base + 3, gid);
    sqlite3_bind_int64(q, base + 4, now);
    sqlite3_bind_int64(q, base + 5, now);
    rc = sq_step_done(c, q, "mkdir");
    if (rc)
        return rc;
    ms_node n = {parent.kind == MS_ROOT ? MS_MAILBOX : MS_FOLDER, sqlite3_last_insert_rowid(c->db)};
    if (n.id > MS_ID_MAX)
        return -EOVERFLOW; /* the transaction rolls back: no node the mount cannot number */
    return sq_get_attr(c, n, out);
}

int sq_mkdir(ms_store *st, int64_t mailbox, ms_node parent, const char *name, uint32_t mode,
             uint32_t uid, uint32_t gid, ms_attr *out)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = write_begin(st, c, mailbox);
    if (!rc)
        rc = sq_tx_end(st, c, mkdir_in(c, parent, name, mode, uid, gid, out));
    sq_conn_put(st, c);
    return rc;
}

/* 1 if the folder has subfolders or messages (reserved ones count). */
static int folder_busy(sq_conn *c, int64_t folder)
{
    int64_t busy;
    int rc = sq_query_int(c,
                          "SELECT EXISTS(SELECT 1 FROM folder WHERE parent = ?1)"
                          " OR EXISTS(SELECT 1 FROM message WHERE folder = ?1)",
                          folder, &busy, "rmdir");
    return rc ? rc : (int)busy;
}

static int mailbox_busy(sq_conn *c, int64_t mailbox)
{
    int64_t busy;
    int rc = sq_query_int(c, "SELECT EXISTS(SELECT 1 FROM folder WHERE mailbox = ?)", mailbox,
                          &busy, "rmdir");
    return rc ? rc : (int)busy;
}

/* Deletes directory node n if empty (-ENOTEMPTY otherwise), keeping it
 * recoverable in its mailbox's deleted items. */
static int remove_dir(sq_conn *c, ms_node n)
{
    int busy = n.kind == MS_MAILBOX ? mailbox_busy(c, n.id) : folder_busy(c, n.id);
    if (busy)
        return busy > 0 ? -ENOTEMPTY : busy;
    int rc = n.kind == MS_MAILBOX ? sq_keep_mailbox(c, n.id) : sq_keep_folder(c, n.id);
    if (rc)
        return rc;
    sqlite3_stmt *q = n.kind == MS_MAILBOX ? sq_stmt(c, "DELETE FROM mailbox WHERE id = ?")
                                           : sq_stmt(c, "DELETE FROM folder WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, n.id);
    return sq_step_done(c, q, "rmdir");
}

static int rmdir_in(sq_conn *c, ms_node parent, const char *name)
{
    ms_attr a;
    int rc = sq_lookup_in(c, parent, name, &a);
    if (rc)
        return rc;
    if (a.node.kind == MS_MESSAGE)
        return -ENOTDIR;
    return remove_dir(c, a.node);
}

int sq_rmdir(ms_store *st, int64_t mailbox, ms_node parent, const char *name)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = write_begin(st, c, mailbox);
    if (!rc)
        rc = sq_tx_end(st, c, rmdir_in(c, parent, name));
    sq_conn_put(st, c);
    return rc;
}

/* The message keeps its content as a deleted item: its readers lose nothing. */
static int unlink_in(sq_conn *c, ms_node folder, const char *name)
{
    SQ_ASSERT_TX(c);
    int64_t id;
    int rc = message_named(c, folder.id, name, &id);
    if (rc == -ENOENT) {
        ms_attr a;
        if (sq_lookup_in(c, folder, name, &a) == 0 && a.node.kind == MS_FOLDER)
            return -EISDIR;
    }
    return rc ? rc : sq_keep_message(c, id);
}

int sq_unlink(ms_store *st, int64_t mailbox, ms_node folder, const char *name)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = write_begin(st, c, mailbox);
    if (!rc)
        rc = sq_tx_end(st, c, unlink_in(c, folder, name));
    sq_conn_put(st, c);
    return rc;
}

/* Next IMAP UID of folder, reserved (the counter moves on). */
int sq_take_uid(sq_conn *c, int64_t folder, int64_t *uid)
{
    sqlite3_stmt *q = sq_stmt(c, "UPDATE folder SET next_uid = next_uid + 1 WHERE id = ?"
                                 " RETURNING next_uid - 1");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    int rc = sq_step_row(c, q, "uid");
    if (rc)
        return rc;
    *uid = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return 0;
}

/* True if folder `anc` is `f` or one of its ancestors. */
static int is_ancestor(sq_conn *c, int64_t anc, int64_t f)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT parent FROM folder WHERE id = ?");
    if (!q)
        return -EIO;
    for (int depth = 0; f && depth < 10000; depth++) {
        if (f == anc)
            return 1;
        sqlite3_bind_int64(q, 1, f);
        int rc = sq_step_row(c, q, "rename");
        if (rc)
            return rc == -ENOENT ? 0 : rc;
        f = sqlite3_column_int64(q, 0);
        sqlite3_reset(q);
    }
    return 0;
}

static int rename_mailbox(sq_conn *c, const ms_attr *src, const char *newname, bool noreplace)
{
    ms_attr dst;
    int rc = sq_lookup_in(c, (ms_node){MS_ROOT, 0}, newname, &dst);
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
    rc = sq_rename_deleted_items(c, src->node.id, newname);
    if (rc)
        return rc;
    sqlite3_stmt *q = sq_stmt(c, "UPDATE mailbox SET name = ?, ctime_ns = ? WHERE id = ?");
    if (!q)
        return -EIO;
    sq_bind_name(q, 1, newname);
    sqlite3_bind_int64(q, 2, ms_now_ns());
    sqlite3_bind_int64(q, 3, src->node.id);
    return sq_step_done(c, q, "rename");
}

static int rename_in(sq_conn *c, ms_node parent, const char *name, ms_node newparent,
                     const char *newname, bool noreplace)
{
    SQ_ASSERT_TX(c);
    ms_attr src, dst;
    int rc = sq_lookup_in(c, parent, name, &src);
    if (rc)
        return rc;
    if (parent.kind == MS_ROOT || newparent.kind == MS_ROOT) {
        if (parent.kind == MS_ROOT && newparent.kind == MS_ROOT)
            return rename_mailbox(c, &src, newname, noreplace);
        /* A mailbox becoming a folder, or back: a copy would drop its ACL
         * and escape the journal, so mv must not fall back to one. */
        return -EPERM;
    }
    int64_t mb_new;
    rc = mailbox_of(c, newparent, &mb_new);
    if (rc)
        return rc;
    if (mb_new != src.mailbox)
        return -EXDEV;
    if (src.node.kind == MS_MESSAGE && newparent.kind != MS_FOLDER)
        return -EPERM; /* messages live in folders only */
    rc = sq_lookup_in(c, newparent, newname, &dst);
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
            /* Replacing is deleting: kept with its content, readers too. */
            rc = sq_keep_message(c, dst.node.id);
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
            rc = sq_take_uid(c, newparent.id, &uid); /* refiled: a new UID, as IMAP MOVE */
            if (rc)
                return rc;
        }
        /* A rename within its folder does not name the folder column: an
         * UPDATE that assigns a column rewrites its index entries even to
         * the same value (one page more in the log of every rsync file). */
        q = newparent.id != parent.id
                ? sq_stmt(c, "UPDATE message SET name = ?2, imap_uid = ?3, ctime_ns = ?4,"
                             " folder = ?5 WHERE id = ?1")
                : sq_stmt(c, "UPDATE message SET name = ?2, imap_uid = ?3, ctime_ns = ?4"
                             " WHERE id = ?1");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, src.node.id);
        sq_bind_name(q, 2, newname);
        sqlite3_bind_int64(q, 3, uid);
        sqlite3_bind_int64(q, 4, ms_now_ns());
        if (newparent.id != parent.id)
            sqlite3_bind_int64(q, 5, newparent.id);
        return sq_step_done(c, q, "rename");
    }
    if (newparent.kind == MS_FOLDER) {
        rc = is_ancestor(c, src.node.id, newparent.id);
        if (rc)
            return rc > 0 ? -EINVAL : rc;
    }
    if (newparent.kind == MS_FOLDER) {
        rc = sq_name_taken_by_message(c, newparent.id, newname);
        if (rc)
            return rc > 0 ? -EEXIST : rc;
    }
    q = sq_stmt(c, "UPDATE folder SET parent = ?, name = ?, ctime_ns = ? WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, newparent.kind == MS_FOLDER ? newparent.id : 0);
    sq_bind_name(q, 2, newname);
    sqlite3_bind_int64(q, 3, ms_now_ns());
    sqlite3_bind_int64(q, 4, src.node.id);
    return sq_step_done(c, q, "rename");
}

int sq_rename(ms_store *st, int64_t mailbox, ms_node parent, const char *name, ms_node newparent,
              const char *newname, bool noreplace)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = write_begin(st, c, mailbox);
    if (!rc)
        rc = sq_tx_end(st, c, rename_in(c, parent, name, newparent, newname, noreplace));
    sq_conn_put(st, c);
    return rc;
}

/* ------------------------------------------------------- attributes */

/* Every change of a node moves its ctime to now, whatever it changed. */
int sq_setattr_in(sq_conn *c, ms_node n, const ms_setattr_req *req, ms_attr *out)
{
    if (n.kind == MS_ROOT)
        return root_setattr_in(c, req, out);
    ms_attr a;
    int rc = sq_get_attr(c, n, &a);
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
    a.ctime_ns = ms_now_ns();
    sqlite3_stmt *q =
        n.kind == MS_MAILBOX
            ? sq_stmt(c, "UPDATE mailbox SET mode = ?, uid = ?, gid = ?, mtime_ns = ?,"
                         " ctime_ns = ? WHERE id = ?")
        : n.kind == MS_FOLDER
            ? sq_stmt(c, "UPDATE folder SET mode = ?, uid = ?, gid = ?, mtime_ns = ?,"
                         " ctime_ns = ? WHERE id = ?")
            : sq_stmt(c, "UPDATE message SET mode = ?, uid = ?, gid = ?, mtime_ns = ?,"
                         " ctime_ns = ? WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int(q, 1, (int)a.mode);
    sqlite3_bind_int64(q, 2, a.uid);
    sqlite3_bind_int64(q, 3, a.gid);
    sqlite3_bind_int64(q, 4, a.mtime_ns);
    sqlite3_bind_int64(q, 5, a.ctime_ns);
    sqlite3_bind_int64(q, 6, n.id);
    rc = sq_step_done(c, q, "setattr");
    if (!rc && out)
        *out = a;
    return rc;
}

int sq_setattr(ms_store *st, int64_t mailbox, ms_node node, const ms_setattr_req *req, ms_attr *out)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = write_begin(st, c, mailbox);
    if (!rc) {
        rc = node.kind == MS_MESSAGE ? sq_unborn_materialize_in(sq_of(st), c, node.id) : 0;
        rc = sq_tx_end(st, c, rc ? rc : sq_setattr_in(c, node, req, out));
    }
    sq_conn_put(st, c);
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
    return xa == MS_XA_FLAGS ? "UPDATE message SET flags = ?, ctime_ns = ? WHERE id = ?"
           : xa == MS_XA_SPECIAL_USE
               ? "UPDATE folder SET special_use = ?, ctime_ns = ? WHERE id = ?"
               : "UPDATE mailbox SET acl = ?, ctime_ns = ? WHERE id = ?";
}

static int xattr_get_in(sq_conn *c, ms_node n, ms_xattr_id xa, char **value, size_t *len)
{
    sqlite3_stmt *q = sq_stmt(c, xattr_select(xa));
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, n.id);
    int rc = sq_step_row(c, q, "getxattr");
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

int sq_xattr_get(ms_store *st, ms_node node, ms_xattr_id xa, char **value, size_t *len)
{
    if (node.kind == MS_MESSAGE && sq_unborn_rowless(sq_of(st), node.id)) {
        *value = NULL; /* an unborn message has no flags yet */
        *len = 0;
        return 0;
    }
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = xattr_get_in(c, node, xa, value, len);
    sq_conn_put(st, c);
    return rc;
}

int sq_xattr_set_in(sq_conn *c, ms_node n, ms_xattr_id xa, const char *value, size_t len)
{
    ms_attr a; /* visible: a message gone to deleted items meanwhile is ENOENT */
    int rc = sq_get_attr(c, n, &a);
    if (rc)
        return rc;
    sqlite3_stmt *q = sq_stmt(c, xattr_update(xa));
    if (!q)
        return -EIO;
    if (value)
        sqlite3_bind_blob(q, 1, value, (int)len, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 1);
    sqlite3_bind_int64(q, 2, ms_now_ns());
    sqlite3_bind_int64(q, 3, n.id);
    rc = sq_step_done(c, q, "setxattr");
    if (!rc && sqlite3_changes(c->db) == 0)
        rc = -ENOENT;
    return rc;
}

int sq_xattr_set(ms_store *st, int64_t mailbox, ms_node node, ms_xattr_id xa, const char *value,
                 size_t len)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = write_begin(st, c, mailbox);
    if (!rc) {
        rc = node.kind == MS_MESSAGE ? sq_unborn_materialize_in(sq_of(st), c, node.id) : 0;
        rc = sq_tx_end(st, c, rc ? rc : sq_xattr_set_in(c, node, xa, value, len));
    }
    sq_conn_put(st, c);
    return rc;
}
