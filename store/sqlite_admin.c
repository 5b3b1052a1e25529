/*
 * sqlite_admin.c — mailbox administration for moves in the sqlite
 * backend: finding hidden mailboxes, changing state, name and lock, sizes,
 * per-message checksums, and dropping a whole mailbox.
 */
#include "sqlite_int.h"

#include <errno.h>
#include <string.h>

static int create_in(conn *c, const char *name, ms_mb_state state, const ms_attr *like, int64_t *id)
{
    sqlite3_stmt *q = Q(c, "INSERT INTO mailbox(name, state, mode, uid, gid, mtime_ns)"
                           " VALUES (?, ?, ?, ?, ?, ?)");
    if (!q)
        return -EIO;
    bind_name(q, 1, name);
    sqlite3_bind_int(q, 2, (int)state);
    sqlite3_bind_int(q, 3, (int)like->mode);
    sqlite3_bind_int64(q, 4, like->uid);
    sqlite3_bind_int64(q, 5, like->gid);
    sqlite3_bind_int64(q, 6, like->mtime_ns);
    int rc = step_done(c, q, "create mailbox");
    if (!rc)
        *id = sqlite3_last_insert_rowid(c->db);
    return rc;
}

int sq_mailbox_create(ms_store *st, const char *name, ms_mb_state state, const ms_attr *like,
                      int64_t *id)
{
    WITH_TX(st, c, create_in(c, name, state, like, id));
}

static int find_in(conn *c, const char *name, ms_mb_state state, int64_t *id)
{
    sqlite3_stmt *q = Q(c, "SELECT id FROM mailbox WHERE name = ? AND state = ?");
    if (!q)
        return -EIO;
    bind_name(q, 1, name);
    sqlite3_bind_int(q, 2, (int)state);
    int rc = step_row(c, q, "find mailbox");
    if (rc)
        return rc;
    *id = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return 0;
}

int sq_mailbox_find(ms_store *st, const char *name, ms_mb_state state, int64_t *id)
{
    WITH_CONN(st, c, find_in(c, name, state, id));
}

static int info_in(conn *c, int64_t id, ms_mailbox_info *out)
{
    sqlite3_stmt *q = Q(c, "SELECT state, lock_move, retain_until, name FROM mailbox WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, id);
    int rc = step_row(c, q, "mailbox info");
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    out->id = id;
    out->state = (ms_mb_state)sqlite3_column_int(q, 0);
    out->lock_move = sqlite3_column_int64(q, 1);
    out->retain_until = sqlite3_column_int64(q, 2);
    size_t n = (size_t)sqlite3_column_bytes(q, 3);
    if (n >= sizeof out->name)
        n = sizeof out->name - 1;
    memcpy(out->name, sqlite3_column_blob(q, 3), n);
    sqlite3_reset(q);
    return 0;
}

int sq_mailbox_info(ms_store *st, int64_t id, ms_mailbox_info *out)
{
    WITH_CONN(st, c, info_in(c, id, out));
}

static int set_in(conn *c, int64_t id, const ms_mailbox_change *chg)
{
    ms_mailbox_info cur;
    int rc = info_in(c, id, &cur);
    if (rc)
        return rc;
    /* Taking a lock someone else holds: the mailbox is being moved. */
    if (chg->lock_move > 0 && cur.lock_move && cur.lock_move != chg->lock_move)
        return -EBUSY;
    sqlite3_stmt *q = Q(c, "UPDATE mailbox SET name = ?, state = ?, lock_move = ?,"
                           " retain_until = ? WHERE id = ?");
    if (!q)
        return -EIO;
    bind_name(q, 1, chg->name ? chg->name : cur.name);
    sqlite3_bind_int(q, 2, chg->state >= 0 ? chg->state : (int)cur.state);
    sqlite3_bind_int64(q, 3, chg->lock_move >= 0 ? chg->lock_move : cur.lock_move);
    sqlite3_bind_int64(q, 4, chg->retain_until >= 0 ? chg->retain_until : cur.retain_until);
    sqlite3_bind_int64(q, 5, id);
    return step_done(c, q, "mailbox set");
}

int sq_mailbox_set(ms_store *st, int64_t id, const ms_mailbox_change *chg)
{
    WITH_TX(st, c, set_in(c, id, chg));
}

/*
 * One transaction, so a crash leaves the mailbox whole or gone.  Bytes
 * still open for reading in the daemon go with it: only hidden copies
 * (rolled-back or expired) are dropped, which nobody has open.
 */
static int drop_in(conn *c, int64_t id)
{
    static const char *const steps[] = {
        "DELETE FROM chunk WHERE content IN (SELECT m.content FROM message m JOIN folder f"
        " ON f.id = m.folder WHERE f.mailbox = ?)",
        "DELETE FROM content WHERE id IN (SELECT m.content FROM message m JOIN folder f"
        " ON f.id = m.folder WHERE f.mailbox = ?)",
        "DELETE FROM message WHERE folder IN (SELECT id FROM folder WHERE mailbox = ?)",
        "DELETE FROM folder WHERE mailbox = ?",
        "DELETE FROM mailbox WHERE id = ?",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(steps); i++) {
        sqlite3_stmt *q = Q(c, steps[i]);
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, id);
        int rc = step_done(c, q, "drop mailbox");
        if (rc)
            return rc;
    }
    return 0;
}

int sq_mailbox_drop(ms_store *st, int64_t id) { WITH_TX(st, c, drop_in(c, id)); }

static int size_in(conn *c, int64_t id, int64_t *messages, int64_t *bytes)
{
    sqlite3_stmt *q = Q(c, "SELECT count(*), coalesce(sum(m.size), 0) FROM message m"
                           " JOIN folder f ON f.id = m.folder WHERE f.mailbox = ? AND m.state = 0");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, id);
    int rc = step_row(c, q, "mailbox size");
    if (rc)
        return rc;
    *messages = sqlite3_column_int64(q, 0);
    *bytes = sqlite3_column_int64(q, 1);
    sqlite3_reset(q);
    return 0;
}

int sq_mailbox_size(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes)
{
    WITH_CONN(st, c, size_in(c, id, messages, bytes));
}

static int meta_in(conn *c, int64_t id, ms_message_meta *out)
{
    sqlite3_stmt *q = Q(c, "SELECT sha256, flags FROM message WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, id);
    int rc = step_row(c, q, "message meta");
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    if (sqlite3_column_bytes(q, 0) == 32)
        memcpy(out->sha256, sqlite3_column_blob(q, 0), 32);
    if (sqlite3_column_type(q, 1) != SQLITE_NULL) {
        int n = sqlite3_column_bytes(q, 1);
        out->flags = g_malloc((size_t)n + 1);
        memcpy(out->flags, sqlite3_column_blob(q, 1), (size_t)n);
        out->flags[n] = '\0';
    }
    sqlite3_reset(q);
    return 0;
}

int sq_message_meta(ms_store *st, int64_t id, ms_message_meta *out)
{
    WITH_CONN(st, c, meta_in(c, id, out));
}

int sq_retained_stats(conn *c, ms_store_stats *out)
{
    sqlite3_stmt *q = Q(c, "SELECT (SELECT count(*) FROM mailbox WHERE state = ?1),"
                           " count(*), coalesce(sum(m.size), 0) FROM message m"
                           " JOIN folder f ON f.id = m.folder JOIN mailbox b ON b.id = f.mailbox"
                           " WHERE m.state = 0 AND b.state = ?1");
    if (!q)
        return -EIO;
    sqlite3_bind_int(q, 1, MS_MB_RETAINED);
    int rc = step_row(c, q, "retained stats");
    if (rc)
        return rc;
    out->retained_mailboxes = sqlite3_column_int64(q, 0);
    out->retained_messages = sqlite3_column_int64(q, 1);
    out->retained_bytes = sqlite3_column_int64(q, 2);
    sqlite3_reset(q);
    return 0;
}
