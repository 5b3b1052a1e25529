/*
 * sqlite_admin.c — mailbox administration for moves in the sqlite
 * backend: finding hidden mailboxes, changing state, name and lock, sizes,
 * per-message checksums, and dropping a whole mailbox.
 */
#include "sqlite_int.h"

#include <errno.h>
#include <string.h>

static int create_in(sq_conn *c, const char *name, ms_mb_state state, const ms_attr *like,
                     int64_t *id)
{
    sqlite3_stmt *q =
        sq_stmt(c, "INSERT INTO mailbox(name, state, mode, uid, gid, mtime_ns, ctime_ns)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)");
    if (!q)
        return -EIO;
    sq_bind_name(q, 1, name);
    sqlite3_bind_int(q, 2, (int)state);
    sqlite3_bind_int(q, 3, (int)like->mode);
    sqlite3_bind_int64(q, 4, like->uid);
    sqlite3_bind_int64(q, 5, like->gid);
    sqlite3_bind_int64(q, 6, like->mtime_ns);
    sqlite3_bind_int64(q, 7, ms_now_ns()); /* a new node, whatever it copies */
    int rc = sq_step_done(c, q, "create mailbox");
    if (!rc)
        *id = sqlite3_last_insert_rowid(c->db);
    return rc;
}

int sq_mailbox_create(ms_store *st, const char *name, ms_mb_state state, const ms_attr *like,
                      int64_t *id)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c);
    if (!rc)
        rc = sq_tx_end(st, c, create_in(c, name, state, like, id));
    sq_conn_put(st, c);
    return rc;
}

static int find_in(sq_conn *c, const char *name, ms_mb_state state, int64_t *id)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT id FROM mailbox WHERE name = ? AND state = ?");
    if (!q)
        return -EIO;
    sq_bind_name(q, 1, name);
    sqlite3_bind_int(q, 2, (int)state);
    int rc = sq_step_row(c, q, "find mailbox");
    if (rc)
        return rc;
    *id = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return 0;
}

int sq_mailbox_find(ms_store *st, const char *name, ms_mb_state state, int64_t *id)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = find_in(c, name, state, id);
    sq_conn_put(st, c);
    return rc;
}

#define INFO_COLS "id, state, lock_move, retain_until, name, lock_journal, move_id, move_journal"

/* Fills out from a row of INFO_COLS. */
static void info_row(sqlite3_stmt *q, ms_mailbox_info *out)
{
    memset(out, 0, sizeof *out);
    out->id = sqlite3_column_int64(q, 0);
    out->state = (ms_mb_state)sqlite3_column_int(q, 1);
    out->lock_move = sqlite3_column_int64(q, 2);
    out->retain_until = sqlite3_column_int64(q, 3);
    sq_column_copy(out->name, sizeof out->name, q, 4);
    sq_column_copy(out->lock_journal, sizeof out->lock_journal, q, 5);
    out->move_id = sqlite3_column_int64(q, 6);
    sq_column_copy(out->move_journal, sizeof out->move_journal, q, 7);
}

static int info_in(sq_conn *c, int64_t id, ms_mailbox_info *out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT " INFO_COLS " FROM mailbox WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, id);
    int rc = sq_step_row(c, q, "mailbox info");
    if (rc)
        return rc;
    info_row(q, out);
    sqlite3_reset(q);
    return 0;
}

int sq_mailbox_info(ms_store *st, int64_t id, ms_mailbox_info *out)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = info_in(c, id, out);
    sq_conn_put(st, c);
    return rc;
}

/* Rows are read into memory first: fn may write to the store (recovery
 * does), which a statement still stepping on this connection would see. */
static int scan_in(sq_conn *c, ms_mailbox_fn fn, void *ctx)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT " INFO_COLS " FROM mailbox ORDER BY id");
    if (!q)
        return -EIO;
    GArray *rows = g_array_new(FALSE, FALSE, sizeof(ms_mailbox_info));
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        ms_mailbox_info info;
        info_row(q, &info);
        g_array_append_val(rows, info);
    }
    sqlite3_reset(q);
    int ret = rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, "mailbox scan");
    for (guint i = 0; !ret && i < rows->len; i++)
        if (fn(ctx, &g_array_index(rows, ms_mailbox_info, i)))
            break;
    g_array_free(rows, TRUE);
    return ret;
}

int sq_mailbox_scan(ms_store *st, ms_mailbox_fn fn, void *ctx)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = scan_in(c, fn, ctx);
    sq_conn_put(st, c);
    return rc;
}

/* Binds s as text, or NULL when s is NULL or empty. */
static void bind_opt_text(sqlite3_stmt *q, int i, const char *s)
{
    if (s && *s)
        sqlite3_bind_text(q, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(q, i);
}

static int set_in(sq_conn *c, int64_t id, const ms_mailbox_change *chg)
{
    ms_mailbox_info cur;
    int rc = info_in(c, id, &cur);
    if (rc)
        return rc;
    /* Taking a lock someone else holds: the mailbox is being moved. */
    if (chg->lock_move > 0 && cur.lock_move && cur.lock_move != chg->lock_move)
        return -EBUSY;
    sqlite3_stmt *q =
        sq_stmt(c, "UPDATE mailbox SET name = ?, state = ?, lock_move = ?,"
                   " retain_until = ?, lock_journal = ?, move_id = ?, move_journal = ?"
                   " WHERE id = ?");
    if (!q)
        return -EIO;
    int64_t lock = chg->lock_move >= 0 ? chg->lock_move : cur.lock_move;
    const char *lock_journal = chg->lock_move > 0    ? chg->journal
                               : chg->lock_move == 0 ? NULL
                                                     : cur.lock_journal;
    bool new_move = chg->move_id > 0;
    sq_bind_name(q, 1, chg->name ? chg->name : cur.name);
    sqlite3_bind_int(q, 2, chg->state >= 0 ? chg->state : (int)cur.state);
    sqlite3_bind_int64(q, 3, lock);
    sqlite3_bind_int64(q, 4, chg->retain_until >= 0 ? chg->retain_until : cur.retain_until);
    bind_opt_text(q, 5, lock ? lock_journal : NULL);
    sqlite3_bind_int64(q, 6, new_move ? chg->move_id : cur.move_id);
    bind_opt_text(q, 7, new_move ? chg->journal : cur.move_journal);
    sqlite3_bind_int64(q, 8, id);
    return sq_step_done(c, q, "mailbox set");
}

int sq_mailbox_set(ms_store *st, int64_t id, const ms_mailbox_change *chg)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c);
    if (!rc)
        rc = sq_tx_end(st, c, set_in(c, id, chg));
    sq_conn_put(st, c);
    return rc;
}

/*
 * One transaction, so a crash leaves the mailbox whole or gone.  Its
 * bytes go with it unless a reader has them (a file opened before the
 * mailbox was moved away): see sq_content_release_in.
 */
static int drop_in(sq *s, sq_conn *c, int64_t id)
{
    g_autoptr(GArray) contents = g_array_new(FALSE, FALSE, sizeof(int64_t));
    sqlite3_stmt *q = sq_stmt(c, "SELECT DISTINCT m.content FROM message m JOIN folder f"
                                 " ON f.id = m.folder WHERE f.mailbox = ? AND m.content != 0");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, id);
    int rc = sq_collect_ids(c, q, contents, "drop mailbox");
    if (rc)
        return rc;
    static const char *const steps[] = {
        "DELETE FROM message WHERE folder IN (SELECT id FROM folder WHERE mailbox = ?)",
        "DELETE FROM folder WHERE mailbox = ?",
        "DELETE FROM mailbox WHERE id = ?",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(steps); i++) {
        q = sq_stmt(c, steps[i]);
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, id);
        rc = sq_step_done(c, q, "drop mailbox");
        if (rc)
            return rc;
    }
    for (guint i = 0; !rc && i < contents->len; i++)
        rc = sq_content_release_in(s, c, g_array_index(contents, int64_t, i));
    return rc;
}

/* pin_lock from the pin checks to the end of the transaction, as a purge. */
int sq_mailbox_drop(ms_store *st, int64_t id)
{
    sq *s = sq_of(st);
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c);
    if (!rc) {
        ms_mutex_lock(&s->pin_lock);
        rc = sq_tx_end(st, c, drop_in(s, c, id));
        sq_pins_release_held(s);
        ms_mutex_unlock(&s->pin_lock);
    }
    sq_conn_put(st, c);
    return rc;
}

static int size_in(sq_conn *c, int64_t id, int64_t *messages, int64_t *bytes)
{
    sqlite3_stmt *q =
        sq_stmt(c, "SELECT count(*), coalesce(sum(m.size), 0) FROM message m"
                   " JOIN folder f ON f.id = m.folder WHERE f.mailbox = ? AND m.state = 0");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, id);
    int rc = sq_step_row(c, q, "mailbox size");
    if (rc)
        return rc;
    *messages = sqlite3_column_int64(q, 0);
    *bytes = sqlite3_column_int64(q, 1);
    sqlite3_reset(q);
    return 0;
}

int sq_mailbox_size(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = size_in(c, id, messages, bytes);
    sq_conn_put(st, c);
    return rc;
}

/*
 * The counter (schema v8) plus one: every later write raises it in its
 * own transaction before stamping, and writes are serialised, so each
 * gets at least this.  A write still open while this reads commits
 * counter + 1 at least too.
 */
int sq_mailbox_modseq(ms_store *st, int64_t id, uint64_t *out)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int64_t v = 0;
    int rc = sq_query_int(c, "SELECT highest_modseq + 1 FROM mailbox WHERE id = ?", id, &v,
                          "mailbox modseq");
    sq_conn_put(st, c);
    if (!rc)
        *out = (uint64_t)v;
    return rc;
}

static int meta_in(sq_conn *c, int64_t id, ms_message_meta *out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT sha256, flags FROM message WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, id);
    int rc = sq_step_row(c, q, "message meta");
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

int sq_message_meta(ms_store *st, int64_t id, bool hash, ms_message_meta *out)
{
    (void)hash; /* kept since the commit */
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = meta_in(c, id, out);
    sq_conn_put(st, c);
    return rc;
}

int sq_retained_stats(sq_conn *c, ms_store_stats *out)
{
    sqlite3_stmt *q =
        sq_stmt(c, "SELECT (SELECT count(*) FROM mailbox WHERE state = ?1),"
                   " count(*), coalesce(sum(m.size), 0) FROM message m"
                   " JOIN folder f ON f.id = m.folder JOIN mailbox b ON b.id = f.mailbox"
                   " WHERE m.state = 0 AND b.state = ?1");
    if (!q)
        return -EIO;
    sqlite3_bind_int(q, 1, MS_MB_RETAINED);
    int rc = sq_step_row(c, q, "retained stats");
    if (rc)
        return rc;
    out->retained_mailboxes = sqlite3_column_int64(q, 0);
    out->retained_messages = sqlite3_column_int64(q, 1);
    out->retained_bytes = sqlite3_column_int64(q, 2);
    sqlite3_reset(q);
    return 0;
}

/* ------------------------------------------------------ IMAP UID state */

/* The last UIDVALIDITY the store gave (0: none yet). */
static int last_uidvalidity(sq_conn *c, int64_t *out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT value FROM meta WHERE key = 'uidvalidity'");
    if (!q)
        return -EIO;
    int rc = sq_step_row(c, q, "uidvalidity");
    *out = rc ? 0 : sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return rc == -ENOENT ? 0 : rc;
}

static int record_uidvalidity(sq_conn *c, int64_t v)
{
    sqlite3_stmt *q =
        sq_stmt(c, "INSERT OR REPLACE INTO meta(key, value) VALUES ('uidvalidity', ?)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, v);
    return sq_step_done(c, q, "uidvalidity");
}

int sq_new_uidvalidity(sq_conn *c, uint32_t *out)
{
    SQ_ASSERT_TX(c);
    int64_t last;
    int rc = last_uidvalidity(c, &last);
    if (rc)
        return rc;
    int64_t v = MAX(ms_now_ns() / 1000000000, last + 1);
    if (v > UINT32_MAX) /* only a value set from elsewhere gets here before 2106 */
        v = 1;
    rc = record_uidvalidity(c, v);
    if (!rc)
        *out = (uint32_t)v;
    return rc;
}

static int uids_get_in(sq_conn *c, int64_t folder, ms_folder_uids *out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT uidvalidity, next_uid FROM folder WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    int rc = sq_step_row(c, q, "folder uids");
    if (rc)
        return rc;
    out->uidvalidity = (uint32_t)sqlite3_column_int64(q, 0);
    out->uidnext = sqlite3_column_int64(q, 1);
    sqlite3_reset(q);
    return 0;
}

int sq_folder_uids_get(ms_store *st, ms_node folder, ms_folder_uids *out)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = uids_get_in(c, folder.id, out);
    sq_conn_put(st, c);
    return rc;
}

/* UIDNEXT as asked, but never at or below a UID the folder holds: a
 * message of it would otherwise share its UID with the next one. */
static int uids_set_in(sq_conn *c, int64_t folder, const ms_folder_uids *u)
{
    int64_t mailbox, last;
    int rc =
        sq_query_int(c, "SELECT mailbox FROM folder WHERE id = ?", folder, &mailbox, "folder uids");
    if (!rc)
        rc = sq_mailbox_writable(c, mailbox);
    if (!rc)
        rc = sq_query_int(c, "SELECT coalesce(max(imap_uid), 0) FROM message WHERE folder = ?",
                          folder, &last, "folder uids");
    if (rc)
        return rc;
    sqlite3_stmt *q =
        sq_stmt(c, "UPDATE folder SET uidvalidity = ?, next_uid = max(?, ? + 1) WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, u->uidvalidity);
    sqlite3_bind_int64(q, 2, u->uidnext);
    sqlite3_bind_int64(q, 3, last);
    sqlite3_bind_int64(q, 4, folder);
    rc = sq_step_done(c, q, "folder uids");
    /* A folder made here later (the same name, removed and made again)
     * must not get this value: the store's next ones go past it. */
    int64_t given;
    if (!rc)
        rc = last_uidvalidity(c, &given);
    if (!rc && u->uidvalidity > given)
        rc = record_uidvalidity(c, u->uidvalidity);
    return rc;
}

int sq_folder_uids_set(ms_store *st, ms_node folder, const ms_folder_uids *u)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c);
    if (!rc)
        rc = sq_tx_end(st, c, uids_set_in(c, folder.id, u));
    sq_conn_put(st, c);
    return rc;
}

/* Marks folder a mere parent (schema v7), refused in locked mailboxes
 * like any write and while it holds a message. */
static int unselect_in(sq_conn *c, int64_t folder)
{
    int64_t mailbox, n;
    int rc = sq_query_int(c, "SELECT mailbox FROM folder WHERE id = ?", folder, &mailbox,
                          "folder unselect");
    if (!rc)
        rc = sq_mailbox_writable(c, mailbox);
    if (!rc)
        rc = sq_query_int(c, "SELECT count(*) FROM message WHERE folder = ?", folder, &n,
                          "folder unselect");
    if (!rc && n)
        rc = -ENOTEMPTY;
    sqlite3_stmt *q = rc ? NULL : sq_stmt(c, "UPDATE folder SET noselect = 1 WHERE id = ?");
    if (!rc && !q)
        rc = -EIO;
    if (!rc) {
        sqlite3_bind_int64(q, 1, folder);
        rc = sq_step_done(c, q, "folder unselect");
    }
    return rc;
}

int sq_folder_unselect(ms_store *st, ms_node folder)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c);
    if (!rc)
        rc = sq_tx_end(st, c, unselect_in(c, folder.id));
    sq_conn_put(st, c);
    return rc;
}

/* user.mail.uid (backend.h): uid when free in the message's folder. */
static int uid_set_in(sq_conn *c, int64_t message, int64_t uid)
{
    int64_t folder, mailbox, taken;
    int rc =
        sq_query_int(c, "SELECT folder FROM message WHERE id = ?", message, &folder, "message uid");
    if (!rc)
        rc = sq_query_int(c, "SELECT mailbox FROM folder WHERE id = ?", folder, &mailbox,
                          "message uid");
    if (!rc)
        rc = sq_mailbox_writable(c, mailbox);
    sqlite3_stmt *q = rc ? NULL
                         : sq_stmt(c, "SELECT count(*) FROM message WHERE folder = ? AND"
                                      " imap_uid = ? AND id != ?");
    if (!rc && !q)
        rc = -EIO;
    if (!rc) {
        sqlite3_bind_int64(q, 1, folder);
        sqlite3_bind_int64(q, 2, uid);
        sqlite3_bind_int64(q, 3, message);
        rc = sq_step_row(c, q, "message uid");
        taken = rc ? 0 : sqlite3_column_int64(q, 0);
        sqlite3_reset(q);
        if (!rc && taken)
            return 0; /* a wish: another message has it */
    }
    /* The UID it had was the last one given (a restore's file just
     * written): given back, so a restore ends with the UIDNEXT it states. */
    q = rc ? NULL
           : sq_stmt(c, "UPDATE folder SET next_uid = next_uid - 1 WHERE id = ? AND"
                        " next_uid = (SELECT imap_uid + 1 FROM message WHERE id = ?) AND"
                        " next_uid - 1 > ?");
    if (!rc && !q)
        rc = -EIO;
    if (!rc) {
        sqlite3_bind_int64(q, 1, folder);
        sqlite3_bind_int64(q, 2, message);
        sqlite3_bind_int64(q, 3, uid);
        rc = sq_step_done(c, q, "message uid");
    }
    q = rc ? NULL : sq_stmt(c, "UPDATE message SET imap_uid = ? WHERE id = ?");
    if (!rc && !q)
        rc = -EIO;
    if (!rc) {
        sqlite3_bind_int64(q, 1, uid);
        sqlite3_bind_int64(q, 2, message);
        rc = sq_step_done(c, q, "message uid");
    }
    q = rc ? NULL : sq_stmt(c, "UPDATE folder SET next_uid = max(next_uid, ? + 1) WHERE id = ?");
    if (!rc && !q)
        rc = -EIO;
    if (!rc) {
        sqlite3_bind_int64(q, 1, uid);
        sqlite3_bind_int64(q, 2, folder);
        rc = sq_step_done(c, q, "message uid");
    }
    return rc;
}

int sq_message_uid_set(ms_store *st, int64_t message, int64_t uid)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c);
    if (!rc) {
        rc = sq_unborn_materialize_in(sq_of(st), c, message);
        rc = sq_tx_end(st, c, rc ? rc : uid_set_in(c, message, uid));
    }
    sq_conn_put(st, c);
    return rc;
}
