/*
 * sqlite_content.c — message bytes in the sqlite backend: reserving a
 * name, readers that own the content they read (pins), committing a
 * spool in one transaction, and freeing content nobody refers to or
 * reads any more.
 */
#include "sqlite_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* nettle, not GChecksum: with SHA-NI it hashes 3.3x faster (1.76 GB/s
 * against 0.53 GB/s measured here), and every byte a move copies or a
 * client writes is hashed once. */
#include <nettle/sha2.h>

/* ---------------------------------------------------------- content */

/* A message is created without a row (sqlite_unborn.c); its first commit
 * writes it. */

int sq_content_of_in(sq_conn *c, int64_t message, int64_t *content, int64_t *size)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT content, size FROM message WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, message);
    int rc = sq_step_row(c, q, "open");
    if (rc)
        return rc;
    *content = sqlite3_column_int64(q, 0);
    *size = sqlite3_column_int64(q, 1);
    sqlite3_reset(q);
    return 0;
}

/* ------------------------------------------------------------- pins */

/*
 * A pin is seen by other processes too (mailfsctl purge while the daemon
 * reads): the first pin of a content in this process takes a shared
 * open-file-description lock on one byte of "<store>-pins", at
 * PIN_BASE + content id, and the last unpin drops it.  Whoever frees
 * content first takes that byte exclusively, without waiting: if it
 * cannot, a reader somewhere has the content and it stays (unreferenced,
 * for recover_leftovers at the next mount).  The exclusive lock is kept
 * until the freeing transaction has ended, and a reader re-resolves its
 * message once it holds its shared lock, so a purge and a reader of two
 * processes can never both go ahead.  OFD locks, unlike POSIX ones, are
 * not dropped when another fd of the file is closed, and, like them,
 * vanish with the process: a crash leaves no pin behind.  A file of its
 * own rather than the database: closing any fd of a file drops the
 * process's POSIX locks on it, SQLite's included.
 */
#define PIN_BASE (INT64_C(1) << 62)

G_STATIC_ASSERT(sizeof(gpointer) >= sizeof(int64_t));
#define KEY(content) ((gpointer)(intptr_t)(content))

void sq_pins_init(sq *s)
{
    ms_mutex_init(&s->pin_lock);
    s->pins = g_hash_table_new(g_direct_hash, g_direct_equal);
    s->doomed = g_hash_table_new(g_direct_hash, g_direct_equal);
    s->held = g_array_new(FALSE, FALSE, sizeof(int64_t));
    s->pin_fd = -1;
}

void sq_pins_open_file(sq *s)
{
    g_autofree char *path = g_strconcat(s->path, "-pins", NULL);
    /* 0600 like the store's other files; a read-only store only reads it. */
    int fd = open(path, (s->ro ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0600);
    if (fd < 0 && !s->ro)
        ms_log(LOG_WARNING, "%s: %s: readers are not seen by other processes (purge)", path,
               g_strerror(errno));
    s->pin_fd = fd;
}

void sq_pins_clear(sq *s)
{
    /* Content still pinned or doomed here is unreferenced or in use by
     * nobody any more: the next daemon's recover_leftovers frees it. */
    if (s->pin_fd >= 0)
        close(s->pin_fd); /* drops this process's pins */
    g_clear_pointer(&s->held, g_array_unref);
    g_clear_pointer(&s->pins, g_hash_table_destroy);
    g_clear_pointer(&s->doomed, g_hash_table_destroy);
    ms_mutex_clear(&s->pin_lock);
}

/* Locks (type F_RDLCK, F_WRLCK) or unlocks content's byte of the pins
 * file; 0, or -EAGAIN when another process holds it and !wait. */
static int pin_byte(sq *s, short type, int64_t content, bool wait)
{
    if (s->pin_fd < 0)
        return 0;
    struct flock fl = {
        .l_type = type, .l_whence = SEEK_SET, .l_start = PIN_BASE + content, .l_len = 1};
    while (fcntl(s->pin_fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) < 0) {
        if (errno == EINTR)
            continue;
        return errno == EACCES ? -EAGAIN : -errno;
    }
    return 0;
}

void sq_pins_release_held(sq *s)
{
    ms_mutex_assert_held(&s->pin_lock);
    for (guint i = 0; i < s->held->len; i++)
        pin_byte(s, F_UNLCK, g_array_index(s->held, int64_t, i), false);
    g_array_set_size(s->held, 0);
}

/* One more pin of content, already locked in the pins file if it is the first. */
static void pin_locked(sq *s, int64_t content)
{
    ms_mutex_assert_held(&s->pin_lock);
    unsigned n = GPOINTER_TO_UINT(g_hash_table_lookup(s->pins, KEY(content)));
    g_hash_table_insert(s->pins, KEY(content), GUINT_TO_POINTER(n + 1));
}

/*
 * Resolves message to its content and pins it.  The first pin in this
 * process waits for a purge of another process holding the content's
 * byte, then resolves again: that purge may have freed it meanwhile
 * (-ENOENT), or a rewrite replaced it (the new content is pinned).
 */
static int resolve_and_pin_locked(sq *s, sq_conn *c, int64_t message, int64_t *content,
                                  int64_t *size)
{
    ms_mutex_assert_held(&s->pin_lock);
    for (int tries = 0; tries < 100; tries++) {
        int rc = sq_content_of_in(c, message, content, size);
        if (rc || *content == 0 || g_hash_table_contains(s->pins, KEY(*content))) {
            if (!rc && *content)
                pin_locked(s, *content);
            return rc;
        }
        rc = pin_byte(s, F_RDLCK, *content, true);
        if (rc) {
            ms_log(LOG_WARNING,
                   "%s: pins file: %s: the bytes of message %lld are pinned for "
                   "this process only",
                   s->path, g_strerror(-rc), (long long)message);
            pin_locked(s, *content);
            return 0;
        }
        int64_t again = 0;
        rc = sq_content_of_in(c, message, &again, size);
        if (!rc && again == *content) {
            pin_locked(s, *content);
            return 0;
        }
        pin_byte(s, F_UNLCK, *content, false);
        if (rc)
            return rc;
    }
    return -EAGAIN; /* rewritten 100 times while we looked */
}

/* True when this was the last pin of content that is to be freed now. */
static bool unpin_locked(sq *s, int64_t content)
{
    ms_mutex_assert_held(&s->pin_lock);
    unsigned n = GPOINTER_TO_UINT(g_hash_table_lookup(s->pins, KEY(content)));
    g_assert(n > 0);
    if (n > 1) {
        g_hash_table_insert(s->pins, KEY(content), GUINT_TO_POINTER(n - 1));
        return false;
    }
    g_hash_table_remove(s->pins, KEY(content));
    pin_byte(s, F_UNLCK, content, false);
    return g_hash_table_remove(s->doomed, KEY(content));
}

/* Frees content inside the caller's transaction, unless a message still
 * refers to it (a purge rolled back, a restore meanwhile). */
static int drop_in(sq_conn *c, int64_t content)
{
    SQ_ASSERT_TX(c);
    int64_t used;
    int rc = sq_query_int(c, "SELECT EXISTS(SELECT 1 FROM message WHERE content = ?)", content,
                          &used, "drop");
    if (rc || used)
        return rc;
    sqlite3_stmt *q = sq_stmt(c, "DELETE FROM chunk WHERE content = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, content);
    rc = sq_step_done(c, q, "drop");
    if (rc)
        return rc;
    q = sq_stmt(c, "DELETE FROM content WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, content);
    return sq_step_done(c, q, "drop");
}

int sq_content_release_in(sq *s, sq_conn *c, int64_t content)
{
    ms_mutex_assert_held(&s->pin_lock);
    SQ_ASSERT_TX(c);
    if (content <= 0)
        return 0;
    if (g_hash_table_contains(s->pins, KEY(content))) {
        g_hash_table_add(s->doomed, KEY(content));
        return 0;
    }
    int rc = pin_byte(s, F_WRLCK, content, false);
    if (rc == -EAGAIN)
        return 0; /* read by another process: left for recover_leftovers */
    if (rc)
        return rc;
    if (s->pin_fd >= 0)
        g_array_append_val(s->held, content); /* until the transaction ends */
    return drop_in(c, content);
}

/* Frees content no committed message refers to any more, in a
 * transaction of its own on c.  Failing leaves it to recover_leftovers. */
static void free_content(ms_store *st, sq_conn *c, int64_t content)
{
    int rc = sq_tx_begin(st, c);
    if (!rc)
        rc = sq_tx_end(st, c, drop_in(c, content));
    if (rc)
        ms_log(LOG_WARNING, "%s: content %lld left for the next mount to free: %s", st->path,
               (long long)content, g_strerror(-rc));
}

/*
 * Frees content that no committed message refers to and no reader of
 * this process has, unless a reader of another process has it (then
 * recover_leftovers frees it at the next mount).
 */
static void free_unless_read_elsewhere(ms_store *st, sq_conn *c, int64_t content)
{
    sq *s = sq_of(st);
    ms_mutex_lock(&s->pin_lock);
    bool elsewhere = pin_byte(s, F_WRLCK, content, false) != 0;
    ms_mutex_unlock(&s->pin_lock);
    if (elsewhere)
        return;
    free_content(st, c, content);
    ms_mutex_lock(&s->pin_lock);
    pin_byte(s, F_UNLCK, content, false);
    ms_mutex_unlock(&s->pin_lock);
}

/*
 * After a commit that replaced content: frees it now, or leaves it to
 * its last reader.  Checking the pins after the commit is what makes
 * this safe: from the commit on, no reader can resolve the old content,
 * and every reader that resolved it before pinned it in the same step.
 */
static void release_replaced(ms_store *st, sq_conn *c, int64_t content)
{
    if (content <= 0)
        return;
    if (!sqlite3_get_autocommit(c->db))
        return; /* a batch, not committed yet: readers elsewhere still see
                   the content; recover_leftovers frees it at next mount */
    sq *s = sq_of(st);
    ms_mutex_lock(&s->pin_lock);
    bool pinned = g_hash_table_contains(s->pins, KEY(content));
    if (pinned)
        g_hash_table_add(s->doomed, KEY(content));
    ms_mutex_unlock(&s->pin_lock);
    if (!pinned)
        free_unless_read_elsewhere(st, c, content);
}

/* ---------------------------------------------------------- readers */

/* Bytes of content from off, short only past its last chunk. */
static ssize_t content_read_in(sq_conn *c, int64_t content, char *buf, size_t len, int64_t off)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT data FROM chunk WHERE content = ? AND seq = ?");
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
        int rc = sq_step_row(c, q, "read");
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

struct ms_be_reader {
    int64_t content;
    int64_t message; /* for log lines */
};

int sq_reader_open(ms_store *st, int64_t message, ms_be_reader **out, int64_t *size, bool *pending)
{
    sq *s = sq_of(st);
    if (sq_unborn_rowless(s, message)) {
        *out = g_new0(ms_be_reader, 1); /* content 0: nothing to pin or read */
        (*out)->message = message;
        *size = 0;
        *pending = true;
        return 0;
    }
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int64_t content = 0, sz = 0;
    /* Resolved and pinned in one step: see sq.pins. */
    ms_mutex_lock(&s->pin_lock);
    int rc = resolve_and_pin_locked(s, c, message, &content, &sz);
    ms_mutex_unlock(&s->pin_lock);
    sq_conn_put(st, c);
    if (rc)
        return rc;
    ms_be_reader *r = g_new0(ms_be_reader, 1);
    r->content = content;
    r->message = message;
    *out = r;
    *size = sz;
    *pending = content == 0; /* reserved by message_create, never committed */
    return 0;
}

ssize_t sq_reader_pread(ms_store *st, ms_be_reader *r, void *buf, size_t len, int64_t off)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    ssize_t n = content_read_in(c, r->content, buf, len, off);
    sq_conn_put(st, c);
    if (n >= 0 && (size_t)n < len) {
        /* Within the size the reader was opened with (store.c sees to
         * that): the bytes went away under the pin, which only another
         * process can do.  An error, never a short read. */
        ms_log(LOG_ERR,
               "%s: message %lld: bytes gone while open (content %lld freed by another "
               "process?)",
               st->path, (long long)r->message, (long long)r->content);
        return -EIO;
    }
    return n;
}

void sq_reader_close(ms_store *st, ms_be_reader *r)
{
    if (!r)
        return;
    sq *s = sq_of(st);
    bool drop = false;
    if (r->content > 0) {
        ms_mutex_lock(&s->pin_lock);
        drop = unpin_locked(s, r->content);
        ms_mutex_unlock(&s->pin_lock);
    }
    if (drop) {
        sq_conn *c = sq_conn_get(st);
        if (c) {
            free_unless_read_elsewhere(st, c, r->content);
            sq_conn_put(st, c);
        }
    }
    g_free(r);
}

static int discard_in(sq_conn *c, int64_t message)
{
    sqlite3_stmt *q = sq_stmt(c, "DELETE FROM message WHERE id = ? AND state = 1");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, message);
    return sq_step_done(c, q, "discard");
}

int sq_discard_pending(ms_store *st, int64_t message)
{
    if (sq_unborn_forget(st, message))
        return 0; /* never written: nothing to remove */
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c);
    if (!rc)
        rc = sq_tx_end(st, c, discard_in(c, message));
    sq_conn_put(st, c);
    return rc;
}

/* Copies the spool into new chunks of a new content id; hashes them. */
static int write_content(sq_conn *c, ms_spool *sp, int64_t *content, uint8_t sha[32])
{
    SQ_ASSERT_TX(c);
    int64_t size = ms_spool_size(sp);
    sqlite3_stmt *q = sq_stmt(c, "INSERT INTO content(size) VALUES (?)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, size);
    int rc = sq_step_done(c, q, "content");
    if (rc)
        return rc;
    int64_t id = sqlite3_last_insert_rowid(c->db);
    /*
     * The hash kept is that of the chunks as they are inserted, the bytes
     * the store holds from now on: moves verify against it, and a late
     * mail's carry removes the source's copy on it.  The spool hashed the
     * bytes as they were written (when written in order); a difference
     * means the spool gave back something else, and nothing is committed.
     * (Until the audit after issue 14 the spool's hash was kept as is.)
     */
    uint8_t written[32];
    bool hashed = ms_spool_sha256(sp, written);
    struct sha256_ctx ck;
    sha256_init(&ck);
    g_autofree char *buf = g_malloc(MS_CHUNK);
    for (int64_t off = 0, seq = 0; off < size; seq++) {
        ssize_t n = ms_spool_pread(sp, buf, MS_CHUNK, off);
        if (n <= 0)
            return n < 0 ? (int)n : -EIO;
#ifdef MS_FAULT_INJECTION
        /* Test-only: the spool gives back other bytes than were written. */
        if (off == 0 && g_getenv("MAILFS_FAULT_SPOOL_READ"))
            buf[0] ^= 1;
#endif
        sha256_update(&ck, (size_t)n, (const uint8_t *)buf);
        q = sq_stmt(c, "INSERT INTO chunk(content, seq, data) VALUES (?, ?, ?)");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_int64(q, 2, seq);
        sqlite3_bind_blob(q, 3, buf, (int)n, SQLITE_STATIC);
        rc = sq_step_done(c, q, "write");
        if (rc)
            return rc;
        off += n;
    }
    sha256_digest(&ck, SHA256_DIGEST_SIZE, sha);
    if (hashed && memcmp(written, sha, sizeof written) != 0) {
        ms_log(LOG_ERR,
               "%s: a message's bytes read back from its spool differ from those "
               "written (%lld bytes); not committed",
               sqlite3_db_filename(c->db, "main"), (long long)size);
        return -EIO;
    }
    *content = id;
    return 0;
}

static int insert_row(sq_conn *c, int64_t folder, const char *name, int64_t uid, int64_t *id)
{
    sqlite3_stmt *q = sq_stmt(c, "INSERT INTO message(folder, name, imap_uid, mode, uid, gid,"
                                 " mtime_ns, ctime_ns) VALUES (?1, ?2, ?3, 384, 0, 0, ?4, ?4)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    sq_bind_name(q, 2, name);
    sqlite3_bind_int64(q, 3, uid);
    sqlite3_bind_int64(q, 4, ms_now_ns());
    int rc = sq_step_done(c, q, "insert");
    if (!rc)
        *id = sqlite3_last_insert_rowid(c->db);
    return rc;
}

/* Keeps the folder's next UID above uid, which an import brought along. */
static int raise_next_uid(sq_conn *c, int64_t folder, int64_t uid)
{
    sqlite3_stmt *q = sq_stmt(c, "UPDATE folder SET next_uid = max(next_uid, ? + 1) WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, uid);
    sqlite3_bind_int64(q, 2, folder);
    return sq_step_done(c, q, "uid");
}

/*
 * A new visible message: an import keeps its name and UID; a delivery is
 * named "<uid>.eml" with the folder's next UID.
 */
static int insert_new(sq_conn *c, int64_t folder, const char *name, int64_t uid, int64_t *id)
{
    ms_attr fa;
    int rc = sq_get_attr(c, (ms_node){MS_FOLDER, folder}, &fa);
    if (!rc)
        rc = sq_mailbox_writable(c, fa.mailbox);
    if (rc)
        return rc;
    if (name) {
        if (uid <= 0)
            rc = sq_take_uid(c, folder, &uid);
        else
            rc = raise_next_uid(c, folder, uid);
        return rc ? rc : insert_row(c, folder, name, uid, id);
    }
    for (int tries = 0; tries < 1000; tries++) {
        rc = sq_take_uid(c, folder, &uid);
        if (rc)
            return rc;
        char gen[32];
        snprintf(gen, sizeof gen, "%lld.eml", (long long)uid);
        rc = sq_name_taken_by_message(c, folder, gen);
        if (rc > 0)
            continue; /* somebody created that name by hand: next UID */
        return rc < 0 ? rc : insert_row(c, folder, gen, uid, id);
    }
    return -EEXIST;
}

static int commit_in(sq *s, sq_conn *c, const ms_commit *cm, int64_t *old_content, ms_attr *out)
{
    SQ_ASSERT_TX(c);
    int64_t id = cm->message, old = 0, size = 0;
    int rc;
    if (id != 0 && sq_unborn_rowless(s, id)) {
        /* Created by this process, no row yet: the row and its bytes in
         * one INSERT. */
        int64_t content = 0;
        uint8_t sha[32];
        rc = write_content(c, cm->spool, &content, sha);
        if (!rc)
            rc = sq_unborn_birth_in(s, c, cm, content, ms_spool_size(cm->spool), sha);
        if (!rc)
            rc = sq_get_attr(c, (ms_node){MS_MESSAGE, id}, out);
        return rc; /* nothing replaced: *old_content stays 0 */
    }
    if (id == 0) {
        rc = insert_new(c, cm->folder.id, cm->name, cm->imap_uid, &id);
    } else {
        ms_attr ma;
        rc = sq_get_attr(c, (ms_node){MS_MESSAGE, id}, &ma);
        if (!rc)
            rc = sq_mailbox_writable(c, ma.mailbox);
        if (!rc)
            rc = sq_content_of_in(c, id, &old, &size);
    }
    if (rc)
        return rc;
    int64_t content = 0;
    uint8_t sha[32];
    rc = write_content(c, cm->spool, &content, sha);
    if (rc)
        return rc;
    /* New bytes are a change of the message: its ctime moves (the mtime
     * is the writer's business, in cm->attr).  One statement for the
     * bytes, the flags and the attributes the writer set: each UPDATE of
     * a message row fires the change-sequence triggers (three more
     * statements), and a copy into the mount sets mode and times on
     * nearly every message. */
    sqlite3_stmt *q =
        sq_stmt(c, "UPDATE message SET content = ?1, size = ?2, sha256 = ?3, state = 0,"
                   " ctime_ns = ?4, flags = CASE WHEN ?5 THEN ?6 ELSE flags END,"
                   " mode = CASE WHEN ?7 THEN ?8 ELSE mode END,"
                   " uid = CASE WHEN ?9 THEN ?10 ELSE uid END,"
                   " gid = CASE WHEN ?11 THEN ?12 ELSE gid END,"
                   " mtime_ns = CASE WHEN ?13 THEN ?14 ELSE mtime_ns END WHERE id = ?15");
    if (!q)
        return -EIO;
    const ms_setattr_req *a = &cm->attr;
    sqlite3_bind_int64(q, 1, content);
    sqlite3_bind_int64(q, 2, ms_spool_size(cm->spool));
    sqlite3_bind_blob(q, 3, sha, 32, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, ms_now_ns());
    sqlite3_bind_int(q, 5, cm->flags != NULL);
    if (cm->flags) /* empty but set: an empty blob, not NULL */
        sqlite3_bind_blob(q, 6, cm->flags_len ? cm->flags : "", (int)cm->flags_len, SQLITE_STATIC);
    sqlite3_bind_int(q, 7, (a->mask & MS_SET_MODE) != 0);
    sqlite3_bind_int(q, 8, (int)(a->mode & 07777));
    sqlite3_bind_int(q, 9, (a->mask & MS_SET_UID) != 0);
    sqlite3_bind_int64(q, 10, a->uid);
    sqlite3_bind_int(q, 11, (a->mask & MS_SET_GID) != 0);
    sqlite3_bind_int64(q, 12, a->gid);
    sqlite3_bind_int(q, 13, (a->mask & MS_SET_MTIME) != 0);
    sqlite3_bind_int64(q, 14, a->mtime_ns);
    sqlite3_bind_int64(q, 15, id);
    rc = sq_step_done(c, q, "commit");
    if (!rc && sqlite3_changes(c->db) == 0)
        rc = -ENOENT;
    ms_node n = {MS_MESSAGE, id};
    if (!rc)
        rc = sq_get_attr(c, n, out);
    if (!rc)
        *old_content = old;
    return rc;
}

int sq_commit(ms_store *st, const ms_commit *cm, ms_attr *out)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int64_t old = 0;
    int rc = cm->durable ? sq_tx_begin_durable(st, c) : sq_tx_begin(st, c);
    if (!rc) {
        rc = commit_in(sq_of(st), c, cm, &old, out);
        rc = cm->durable ? sq_tx_end_durable(st, c, rc) : sq_tx_end(st, c, rc);
    }
    if (!rc && cm->message)
        sq_unborn_forget(st, cm->message); /* committed: the table has it now */
    if (!rc)
        release_replaced(st, c, old);
    sq_conn_put(st, c);
    return rc;
}
