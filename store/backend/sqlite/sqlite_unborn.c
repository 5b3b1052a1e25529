/*
 * sqlite_unborn.c — messages created by this process that have no row
 * yet ("unborn"): the name is reserved here, in memory, and the row is
 * written by the message's first commit, in the commit's transaction.
 *
 * Why: a create was a transaction of its own, writing the message's row,
 * its three index entries, the folder's next UID and the change sequence
 * of folder and mailbox (6 to 7 pages to the log), only for the commit to
 * write most of them again a moment later: a third of the transactions
 * and a quarter of the log of a restore with rsync.
 *
 * What an unborn message is, as the rest of the backend sees it:
 *   - its id is reserved for this process (a block of ids taken from
 *     sqlite_sequence in one transaction, so that no other process's
 *     AUTOINCREMENT can hand it out): the inode the mount returned at
 *     create is the id the row gets;
 *   - its name is taken for creates of this process (-EEXIST); other
 *     processes do not see it, as they never saw a reserved row (the
 *     lookups skip them).  Should one of them give the name to another
 *     message meanwhile, the commit fails with -EEXIST: the writer hears
 *     of it at close, nothing is replaced;
 *   - getattr answers from here; a reader sees it empty (pending);
 *   - a write that needs the row (setattr, an extended attribute, a UID)
 *     materializes it first, in its own transaction: the reserved row of
 *     before (state 1), with a UID; from then on it is an ordinary
 *     reserved row, which a crash leaves for recover_leftovers;
 *   - the first commit writes the row whole (sq_unborn_birth_in), or,
 *     once materialized, commits it as any reserved row;
 *   - a writer closed without commit forgets it; a crash leaves nothing.
 */
#include "sqlite_int.h"

#include <errno.h>
#include <string.h>

/* Ids reserved per transaction: a daemon's restart leaves at most this
 * many unused (gaps in ids are harmless; AUTOINCREMENT never reuses). */
#define ID_BLOCK 256

struct sq_unborn {
    int64_t id;
    int64_t folder;
    int64_t mailbox;
    char *key; /* "<folder>/<name>": '/' is in no name */
    const char *name;
    uint32_t mode, uid, gid;
    int64_t created_ns;
    /* A transaction wrote its reserved row (materialize_in): the table
     * is the truth from then on, whether that transaction committed or
     * rolled back. */
    bool maybe_row;
};

static void unborn_free(gpointer p)
{
    sq_unborn *u = p;
    if (u)
        g_free(u->key);
    g_free(u);
}

void sq_unborn_init(sq *s)
{
    ms_mutex_init(&s->unborn_lock);
    s->unborn = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, unborn_free);
    s->unborn_names = g_hash_table_new(g_str_hash, g_str_equal);
}

void sq_unborn_clear(sq *s)
{
    g_clear_pointer(&s->unborn_names, g_hash_table_destroy);
    g_clear_pointer(&s->unborn, g_hash_table_destroy);
    ms_mutex_clear(&s->unborn_lock);
}

static char *name_key(int64_t folder, const char *name)
{
    return g_strdup_printf("%lld/%s", (long long)folder, name);
}

/* The attributes an unborn message shows: empty, no UID yet. */
static void unborn_attr(const sq_unborn *u, ms_attr *out)
{
    memset(out, 0, sizeof *out);
    out->node = (ms_node){MS_MESSAGE, u->id};
    out->mode = u->mode;
    out->uid = u->uid;
    out->gid = u->gid;
    out->mailbox = u->mailbox;
    out->mtime_ns = out->ctime_ns = u->created_ns;
}

/* Takes ID_BLOCK message ids for this process in one transaction: raises
 * sqlite_sequence past them, so the ids AUTOINCREMENT gives anyone else
 * are above.  0 and the first id in *first, or a negative errno. */
static int reserve_ids(ms_store *st, sq_conn *c, int64_t *first)
{
    int rc = sq_tx_begin(st, c);
    if (rc)
        return rc;
    int64_t seq = 0;
    rc = sq_query_int(c,
                      "SELECT max((SELECT coalesce(max(seq), 0) FROM sqlite_sequence"
                      " WHERE name = 'message'), (SELECT coalesce(max(id), 0) FROM message),"
                      " ?)",
                      0, &seq, "reserve ids");
    sqlite3_stmt *q = NULL;
    if (!rc) {
        /* The row exists once any message was ever inserted; make sure. */
        q = sq_stmt(c, "DELETE FROM sqlite_sequence WHERE name = 'message'");
        rc = q ? sq_step_done(c, q, "reserve ids") : -EIO;
    }
    if (!rc) {
        q = sq_stmt(c, "INSERT INTO sqlite_sequence(name, seq) VALUES ('message', ?)");
        if (!q) {
            rc = -EIO;
        } else {
            sqlite3_bind_int64(q, 1, seq + ID_BLOCK);
            rc = sq_step_done(c, q, "reserve ids");
        }
    }
    rc = sq_tx_end(st, c, rc);
    if (!rc)
        *first = seq + 1;
    return rc;
}

/* A reserved id for a new message: from this process's block, or a new
 * block. */
static int take_id(ms_store *st, sq_conn *c, int64_t *id)
{
    sq *s = sq_of(st);
    ms_mutex_lock(&s->unborn_lock);
    bool have = s->id_next < s->id_end;
    if (have)
        *id = s->id_next++;
    ms_mutex_unlock(&s->unborn_lock);
    if (have)
        return 0;
    int64_t first = 0;
    int rc = reserve_ids(st, c, &first);
    if (rc)
        return rc;
    ms_mutex_lock(&s->unborn_lock);
    /* Another thread may have taken a block meanwhile: this one is as
     * good, and the rest of the other stays unused. */
    s->id_next = first + 1;
    s->id_end = first + ID_BLOCK;
    ms_mutex_unlock(&s->unborn_lock);
    *id = first;
    return 0;
}

/*
 * The checks the reserved row's transaction made, read now (the commit
 * makes them again inside its transaction): the folder is there, its
 * mailbox takes writes, and no folder or message has the name.
 */
static int check_create(sq_conn *c, ms_node folder, const char *name, int64_t *mailbox)
{
    ms_attr fa;
    int rc = sq_get_attr(c, folder, &fa);
    if (!rc)
        rc = sq_mailbox_writable(c, fa.mailbox);
    if (!rc)
        rc = sq_name_taken_by_subfolder(c, folder.id, name);
    if (!rc)
        rc = sq_name_taken_by_message(c, folder.id, name); /* reserved rows too */
    if (rc)
        return rc > 0 ? -EEXIST : rc;
    *mailbox = fa.mailbox;
    return 0;
}

int sq_message_create(ms_store *st, ms_node folder, const char *name, uint32_t mode, uint32_t uid,
                      uint32_t gid, ms_attr *out)
{
    sq *s = sq_of(st);
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int64_t mailbox = 0, id = 0;
    int rc = check_create(c, folder, name, &mailbox);
    if (!rc)
        rc = take_id(st, c, &id);
    sq_conn_put(st, c);
    if (rc)
        return rc;
    sq_unborn *u = g_new0(sq_unborn, 1);
    u->id = id;
    u->folder = folder.id;
    u->mailbox = mailbox;
    u->key = name_key(folder.id, name);
    u->name = strchr(u->key, '/') + 1;
    u->mode = mode;
    u->uid = uid;
    u->gid = gid;
    u->created_ns = ms_now_ns();
    ms_mutex_lock(&s->unborn_lock);
    bool taken = g_hash_table_contains(s->unborn_names, u->key);
    if (!taken) {
        g_hash_table_insert(s->unborn, &u->id, u);
        g_hash_table_insert(s->unborn_names, u->key, u);
        unborn_attr(u, out);
    }
    ms_mutex_unlock(&s->unborn_lock);
    if (taken) {
        unborn_free(u);
        return -EEXIST;
    }
    return 0;
}

/* Copies message's unborn record into *copy (key not copied); false if
 * it has none. */
static bool unborn_get(sq *s, int64_t message, sq_unborn *copy)
{
    ms_mutex_lock(&s->unborn_lock);
    sq_unborn *u = g_hash_table_lookup(s->unborn, &message);
    if (u) {
        *copy = *u;
        copy->key = NULL;
        copy->name = NULL;
    }
    ms_mutex_unlock(&s->unborn_lock);
    return u != NULL;
}

bool sq_unborn_attr(ms_store *st, int64_t message, bool only_rowless, ms_attr *out)
{
    sq_unborn u;
    if (!unborn_get(sq_of(st), message, &u) || (only_rowless && u.maybe_row))
        return false;
    unborn_attr(&u, out);
    return true;
}

bool sq_unborn_rowless(sq *s, int64_t message)
{
    sq_unborn u;
    return unborn_get(s, message, &u) && !u.maybe_row;
}

bool sq_unborn_forget(ms_store *st, int64_t message)
{
    sq *s = sq_of(st);
    ms_mutex_lock(&s->unborn_lock);
    sq_unborn *u = g_hash_table_lookup(s->unborn, &message);
    bool rowless = u && !u->maybe_row;
    if (u) {
        g_hash_table_remove(s->unborn_names, u->key);
        g_hash_table_remove(s->unborn, &message);
    }
    ms_mutex_unlock(&s->unborn_lock);
    return rowless;
}

/*
 * The row's checks, made again inside c's transaction (the create's were
 * read outside any): the mailbox takes writes and no subfolder has the
 * name (a message that has it is the UNIQUE constraint's: -EEXIST).
 * Then a UID from the folder.
 */
static int before_insert_in(sq_conn *c, const sq_unborn *u, const char *name, int64_t *imap_uid)
{
    int rc = sq_mailbox_writable(c, u->mailbox);
    if (!rc)
        rc = sq_name_taken_by_subfolder(c, u->folder, name);
    if (rc)
        return rc > 0 ? -EEXIST : rc;
    return sq_take_uid(c, u->folder, imap_uid);
}

/* What the caller needs of a record with no row yet, under the lock;
 * *name is the caller's to free. */
static bool rowless_copy(sq *s, int64_t message, sq_unborn *copy, char **name)
{
    ms_mutex_lock(&s->unborn_lock);
    sq_unborn *u = g_hash_table_lookup(s->unborn, &message);
    bool have = u && !u->maybe_row;
    if (have) {
        *copy = *u;
        copy->key = NULL;
        copy->name = NULL;
        *name = g_strdup(u->name);
    }
    ms_mutex_unlock(&s->unborn_lock);
    return have;
}

/*
 * Inserts u's row under name in c's transaction, after before_insert_in:
 * reserved (state 1, no bytes) without cm, else committed with the bytes'
 * content, size and hash and what cm sets over the create's attributes.
 */
static int insert_row_in(sq_conn *c, const sq_unborn *u, const char *name, const ms_commit *cm,
                         int64_t content, int64_t size, const uint8_t *sha)
{
    int64_t imap_uid;
    int rc = before_insert_in(c, u, name, &imap_uid);
    if (rc)
        return rc;
    static const ms_setattr_req none;
    const ms_setattr_req *a = cm ? &cm->attr : &none;
    sqlite3_stmt *q = sq_stmt(
        c,
        "INSERT INTO message(id, folder, name, state, imap_uid, content, size, sha256, flags,"
        " mode, uid, gid, mtime_ns, ctime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, u->id);
    sqlite3_bind_int64(q, 2, u->folder);
    sq_bind_name(q, 3, name);
    sqlite3_bind_int(q, 4, cm ? 0 : 1);
    sqlite3_bind_int64(q, 5, imap_uid);
    sqlite3_bind_int64(q, 6, content);
    sqlite3_bind_int64(q, 7, size);
    if (sha)
        sqlite3_bind_blob(q, 8, sha, 32, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 8);
    if (cm && cm->flags) /* empty but set: an empty blob, not NULL */
        sqlite3_bind_blob(q, 9, cm->flags_len ? cm->flags : "", (int)cm->flags_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 9);
    sqlite3_bind_int(q, 10, (int)((a->mask & MS_SET_MODE) ? a->mode & 07777 : u->mode));
    sqlite3_bind_int64(q, 11, (a->mask & MS_SET_UID) ? a->uid : u->uid);
    sqlite3_bind_int64(q, 12, (a->mask & MS_SET_GID) ? a->gid : u->gid);
    sqlite3_bind_int64(q, 13, (a->mask & MS_SET_MTIME) ? a->mtime_ns : u->created_ns);
    sqlite3_bind_int64(q, 14, cm ? ms_now_ns() : u->created_ns);
    return sq_step_done(c, q, cm ? "commit" : "create");
}

int sq_unborn_materialize_in(sq *s, sq_conn *c, int64_t message)
{
    SQ_ASSERT_TX(c);
    sq_unborn u;
    g_autofree char *name = NULL;
    if (!rowless_copy(s, message, &u, &name))
        return 0;
    int rc = insert_row_in(c, &u, name, NULL, 0, 0, NULL);
    if (rc)
        return rc;
    ms_mutex_lock(&s->unborn_lock);
    sq_unborn *p = g_hash_table_lookup(s->unborn, &message);
    if (p)
        p->maybe_row = true;
    ms_mutex_unlock(&s->unborn_lock);
    return 0;
}

int sq_unborn_birth_in(sq *s, sq_conn *c, const ms_commit *cm, int64_t content, int64_t size,
                       const uint8_t sha[32])
{
    SQ_ASSERT_TX(c);
    sq_unborn u;
    g_autofree char *name = NULL;
    if (!rowless_copy(s, cm->message, &u, &name))
        return -ESTALE; /* the caller asked sq_unborn_rowless first */
    /* One INSERT with everything the commit sets: an UPDATE after it
     * would fire the change-sequence triggers a second time. */
    int rc = insert_row_in(c, &u, name, cm, content, size, sha);
    if (rc == -EEXIST) /* UNIQUE(folder, name): another process's message */
        ms_log(LOG_WARNING,
               "message %lld: its name was given to another message while it was written; "
               "not committed",
               (long long)cm->message);
    return rc;
}
