/*
 * sqlite_deleted.c — deleted items in the sqlite backend: what unlink,
 * rmdir and a replacing rename take out of the tree is kept, listed,
 * restored and, after the retention, purged.
 *
 * Each mailbox that lost something has a hidden mailbox in state
 * MS_MB_DELETED named "~mailfs~deleted~<mailbox id>~<mailbox name>" (the
 * prefix hidden.c reserves, so it clashes with no visible name, and no '/'
 * that a Maildir directory could not hold).  It holds a
 * mirror of the folder paths things were deleted from, created on demand
 * with the folders' attributes.  A deleted message is its own row refiled
 * there (no byte is copied): named "<message id>~<name>", so that a name
 * deleted twice stays unique, with deleted_ns set.  rmdir sets deleted_ns
 * on the folder's mirror, and on the deleted items of a mailbox, which
 * also take the mailbox's ACL, mode, owner and time.
 */
#include "sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEMS_PREFIX "~mailfs~deleted~"
#define MAX_DEPTH 10000

/* Column i of q (a name BLOB) as a NUL-terminated string (g_free). */
static char *col_str(sqlite3_stmt *q, int i)
{
    return g_strndup(sqlite3_column_blob(q, i), (gsize)sqlite3_column_bytes(q, i));
}

static char *items_name(int64_t mailbox, const char *name)
{
    return g_strdup_printf(ITEMS_PREFIX "%lld~%s", (long long)mailbox, name);
}

/* Splits "~mailfs~deleted~<id>~<name>"; false for anything else. */
static bool parse_items_name(const char *s, int64_t *origin, const char **name)
{
    if (strncmp(s, ITEMS_PREFIX, strlen(ITEMS_PREFIX)))
        return false;
    char *end;
    long long id = strtoll(s + strlen(ITEMS_PREFIX), &end, 10);
    if (id <= 0 || *end != '~' || !end[1])
        return false;
    *origin = id;
    *name = end + 1;
    return true;
}

/* A kept message's name without its "<id>~" prefix. */
static const char *original_name(const char *kept)
{
    const char *sep = strchr(kept, '~');
    return sep ? sep + 1 : kept;
}

/* The name of mailbox row id (g_free). */
static int mailbox_name(sq_conn *c, int64_t id, char **out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT name FROM mailbox WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, id);
    int rc = sq_step_row(c, q, "deleted items");
    if (rc)
        return rc;
    *out = col_str(q, 0);
    sqlite3_reset(q);
    return 0;
}

static int find_items(sq_conn *c, const char *name, int64_t *out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT id FROM mailbox WHERE name = ? AND state = 3");
    if (!q)
        return -EIO;
    sq_bind_name(q, 1, name);
    int rc = sq_step_row(c, q, "deleted items");
    if (rc)
        return rc;
    *out = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return 0;
}

/* The deleted items of mailbox, made on first need with its attributes. */
static int items_of(sq_conn *c, int64_t mailbox, int64_t *out)
{
    g_autofree char *name = NULL;
    int rc = mailbox_name(c, mailbox, &name);
    if (rc)
        return rc;
    g_autofree char *in = items_name(mailbox, name);
    rc = find_items(c, in, out);
    if (rc != -ENOENT)
        return rc;
    sqlite3_stmt *q = sq_stmt(
        c, "INSERT INTO mailbox(name, state, acl, mode, uid, gid, mtime_ns, ctime_ns)"
           " SELECT ?, 3, acl, mode, uid, gid, mtime_ns, ctime_ns FROM mailbox WHERE id = ?");
    if (!q)
        return -EIO;
    sq_bind_name(q, 1, in);
    sqlite3_bind_int64(q, 2, mailbox);
    rc = sq_step_done(c, q, "deleted items");
    if (!rc)
        *out = sqlite3_last_insert_rowid(c->db);
    return rc;
}

/* The child folder of parent (0: top level) in mailbox named name. */
static int child_folder(sq_conn *c, int64_t mailbox, int64_t parent, const char *name, int64_t *out)
{
    sqlite3_stmt *q =
        sq_stmt(c, "SELECT id FROM folder WHERE mailbox = ? AND parent = ? AND name = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, mailbox);
    sqlite3_bind_int64(q, 2, parent);
    sq_bind_name(q, 3, name);
    int rc = sq_step_row(c, q, "deleted items");
    if (rc)
        return rc;
    *out = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return 0;
}

/*
 * A new folder in mailbox under parent with the name and attributes of
 * folder `like` (special-use, UIDVALIDITY and next UID included: a folder
 * restored with its messages and their UIDs is the folder IMAP clients
 * knew, their caches stay valid).
 */
static int folder_like(sq_conn *c, int64_t mailbox, int64_t parent, int64_t like, int64_t *out)
{
    sqlite3_stmt *q = sq_stmt(
        c, "INSERT INTO folder(mailbox, parent, name, special_use, uidvalidity, next_uid, mode,"
           " uid, gid, mtime_ns, ctime_ns) SELECT ?, ?, name, special_use, uidvalidity, next_uid,"
           " mode, uid, gid, mtime_ns, ctime_ns FROM folder WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, mailbox);
    sqlite3_bind_int64(q, 2, parent);
    sqlite3_bind_int64(q, 3, like);
    int rc = sq_step_done(c, q, "deleted items");
    if (!rc)
        *out = sqlite3_last_insert_rowid(c->db);
    return rc;
}

/* The mirror of visible folder in the deleted items `items`, made (with
 * its parents) on first need. */
static int mirror_of(sq_conn *c, int64_t items, int64_t folder, int depth, int64_t *out)
{
    if (depth > MAX_DEPTH)
        return -ELOOP;
    sqlite3_stmt *q = sq_stmt(c, "SELECT parent, name FROM folder WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    int rc = sq_step_row(c, q, "deleted items");
    if (rc)
        return rc;
    int64_t parent = sqlite3_column_int64(q, 0);
    g_autofree char *name = col_str(q, 1);
    sqlite3_reset(q);
    int64_t mparent = 0;
    if (parent && (rc = mirror_of(c, items, parent, depth + 1, &mparent)) != 0)
        return rc;
    rc = child_folder(c, items, mparent, name, out);
    if (rc != -ENOENT)
        return rc;
    return folder_like(c, items, mparent, folder, out);
}

int sq_keep_message(sq_conn *c, int64_t message)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT m.folder, f.mailbox, m.name FROM message m"
                                 " JOIN folder f ON f.id = m.folder WHERE m.id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, message);
    int rc = sq_step_row(c, q, "unlink");
    if (rc)
        return rc;
    int64_t folder = sqlite3_column_int64(q, 0), mailbox = sqlite3_column_int64(q, 1);
    g_autofree char *name = col_str(q, 2);
    sqlite3_reset(q);
    int64_t items, mirror;
    rc = items_of(c, mailbox, &items);
    if (!rc)
        rc = mirror_of(c, items, folder, 0, &mirror);
    if (rc)
        return rc;
    g_autofree char *kept = g_strdup_printf("%lld~%s", (long long)message, name);
    q = sq_stmt(c, "UPDATE message SET folder = ?, name = ?, deleted_ns = ? WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, mirror);
    sq_bind_name(q, 2, kept);
    sqlite3_bind_int64(q, 3, ms_now_ns());
    sqlite3_bind_int64(q, 4, message);
    return sq_step_done(c, q, "unlink");
}

int sq_keep_folder(sq_conn *c, int64_t folder)
{
    int64_t mailbox, items, mirror;
    int rc = sq_query_int(c, "SELECT mailbox FROM folder WHERE id = ?", folder, &mailbox, "rmdir");
    if (!rc)
        rc = items_of(c, mailbox, &items);
    if (!rc)
        rc = mirror_of(c, items, folder, 0, &mirror);
    if (rc)
        return rc;
    /* The folder as it is now (a chmod or a move's UIDVALIDITY since the
     * mirror was made), and a next UID that never goes back, so a
     * restored folder reuses none. */
    sqlite3_stmt *q =
        sq_stmt(c, "UPDATE folder AS m SET (special_use, uidvalidity, next_uid, mode, uid, gid,"
                   " mtime_ns, deleted_ns) = (SELECT s.special_use, s.uidvalidity,"
                   " max(s.next_uid, m.next_uid), s.mode, s.uid, s.gid, s.mtime_ns, ?1"
                   " FROM folder s WHERE s.id = ?2) WHERE m.id = ?3");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, ms_now_ns());
    sqlite3_bind_int64(q, 2, folder);
    sqlite3_bind_int64(q, 3, mirror);
    return sq_step_done(c, q, "rmdir");
}

int sq_keep_mailbox(sq_conn *c, int64_t mailbox)
{
    int64_t items;
    int rc = items_of(c, mailbox, &items);
    if (rc)
        return rc;
    sqlite3_stmt *q =
        sq_stmt(c, "UPDATE mailbox AS d SET (acl, mode, uid, gid, mtime_ns, deleted_ns) ="
                   " (SELECT s.acl, s.mode, s.uid, s.gid, s.mtime_ns, ?1 FROM mailbox s"
                   " WHERE s.id = ?2) WHERE d.id = ?3");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, ms_now_ns());
    sqlite3_bind_int64(q, 2, mailbox);
    sqlite3_bind_int64(q, 3, items);
    return sq_step_done(c, q, "rmdir");
}

int sq_rename_deleted_items(sq_conn *c, int64_t mailbox, const char *newname)
{
    g_autofree char *old = NULL;
    int rc = mailbox_name(c, mailbox, &old);
    if (rc)
        return rc;
    g_autofree char *from = items_name(mailbox, old), *to = items_name(mailbox, newname);
    sqlite3_stmt *q = sq_stmt(c, "UPDATE mailbox SET name = ? WHERE name = ? AND state = 3");
    if (!q)
        return -EIO;
    sq_bind_name(q, 1, to);
    sq_bind_name(q, 2, from);
    return sq_step_done(c, q, "rename");
}

/* ------------------------------------------------------------ listing */

typedef struct items_row {
    int64_t id, origin, deleted_ns;
    char *name; /* the mailbox's */
} items_row;

static void items_row_clear(gpointer p) { g_free(((items_row *)p)->name); }

/* Every deleted-items mailbox (of mailbox name only, unless NULL), newest
 * deletion first. */
static int all_items(sq_conn *c, const char *only, GArray *out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT id, name, deleted_ns FROM mailbox WHERE state = 3"
                                 " ORDER BY deleted_ns DESC, id DESC");
    if (!q)
        return -EIO;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        g_autofree char *full = col_str(q, 1);
        items_row r = {.id = sqlite3_column_int64(q, 0), .deleted_ns = sqlite3_column_int64(q, 2)};
        const char *name;
        if (!parse_items_name(full, &r.origin, &name) || (only && strcmp(name, only)))
            continue;
        r.name = g_strdup(name);
        g_array_append_val(out, r);
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, "deleted items");
}

typedef struct mirror_row {
    int64_t id, parent, deleted_ns, messages, bytes;
    char *name, *path;
    bool inside; /* an ancestor (or the mailbox) was deleted */
} mirror_row;

static void mirror_row_clear(gpointer p)
{
    g_free(((mirror_row *)p)->name);
    g_free(((mirror_row *)p)->path);
}

static gint by_path(gconstpointer a, gconstpointer b)
{
    return strcmp(((const mirror_row *)a)->path, ((const mirror_row *)b)->path);
}

/* Fills path and inside of row i from its parents (memoised in path). */
static void resolve_row(GArray *rows, GHashTable *index, guint i, bool mailbox_deleted, int depth)
{
    mirror_row *r = &g_array_index(rows, mirror_row, i);
    if (r->path)
        return;
    gpointer pi;
    if (!r->parent || depth > MAX_DEPTH ||
        !g_hash_table_lookup_extended(index, &r->parent, NULL, &pi)) {
        r->path = g_strdup(r->name);
        r->inside = mailbox_deleted;
        return;
    }
    guint p = GPOINTER_TO_UINT(pi);
    resolve_row(rows, index, p, mailbox_deleted, depth + 1);
    mirror_row *pr = &g_array_index(rows, mirror_row, p);
    r = &g_array_index(rows, mirror_row, i);
    r->path = g_strdup_printf("%s/%s", pr->path, r->name);
    r->inside = pr->inside || pr->deleted_ns != 0;
}

/* The mirror folders of items with their paths and what each holds
 * (subfolders included), sorted by path. */
static int load_mirrors(sq_conn *c, const items_row *it, GArray *rows)
{
    sqlite3_stmt *q = sq_stmt(
        c, "SELECT f.id, f.parent, f.deleted_ns, f.name, count(m.id), coalesce(sum(m.size), 0)"
           " FROM folder f LEFT JOIN message m ON m.folder = f.id WHERE f.mailbox = ?"
           " GROUP BY f.id ORDER BY f.id");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, it->id);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        mirror_row r = {.id = sqlite3_column_int64(q, 0),
                        .parent = sqlite3_column_int64(q, 1),
                        .deleted_ns = sqlite3_column_int64(q, 2),
                        .name = col_str(q, 3),
                        .messages = sqlite3_column_int64(q, 4),
                        .bytes = sqlite3_column_int64(q, 5)};
        g_array_append_val(rows, r);
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return sq_errno(c->db, rc, "deleted items");
    g_autoptr(GHashTable) index = g_hash_table_new(g_int64_hash, g_int64_equal);
    for (guint i = 0; i < rows->len; i++)
        g_hash_table_insert(index, &g_array_index(rows, mirror_row, i).id, GUINT_TO_POINTER(i));
    for (guint i = 0; i < rows->len; i++)
        resolve_row(rows, index, i, it->deleted_ns != 0, 0);
    /* Each folder's totals into every ancestor. */
    for (guint i = 0; i < rows->len; i++) {
        mirror_row *r = &g_array_index(rows, mirror_row, i);
        int64_t p = r->parent;
        gpointer pi;
        for (int d = 0; p && d < MAX_DEPTH && g_hash_table_lookup_extended(index, &p, NULL, &pi);
             d++) {
            mirror_row *pr = &g_array_index(rows, mirror_row, GPOINTER_TO_UINT(pi));
            pr->messages += g_array_index(rows, mirror_row, i).messages;
            pr->bytes += g_array_index(rows, mirror_row, i).bytes;
            p = pr->parent;
        }
    }
    g_array_sort(rows, by_path);
    return 0;
}

/* Reports the messages kept in mirror folder r; *stop when fn said so. */
static int list_messages(sq_conn *c, const items_row *it, const mirror_row *r, ms_deleted_fn fn,
                         void *ctx, bool *stop)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT id, name, size, deleted_ns FROM message WHERE folder = ?"
                                 " ORDER BY deleted_ns, id");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, r->id);
    int rc;
    while (!*stop && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        g_autofree char *kept = col_str(q, 1);
        ms_deleted d = {.kind = MS_MESSAGE,
                        .mailbox = it->name,
                        .folder = r->path,
                        .name = original_name(kept),
                        .id = sqlite3_column_int64(q, 0),
                        .messages = 1,
                        .bytes = sqlite3_column_int64(q, 2),
                        .deleted_ns = sqlite3_column_int64(q, 3),
                        .inside = r->inside || r->deleted_ns != 0};
        *stop = fn(ctx, &d) != 0;
    }
    sqlite3_reset(q);
    return *stop || rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, "deleted items");
}

/* Reports one mailbox's deleted items: itself if deleted, then its
 * folders in path order, each followed by its messages. */
static int list_items(sq_conn *c, const items_row *it, ms_deleted_fn fn, void *ctx, bool *stop)
{
    g_autoptr(GArray) rows = g_array_new(FALSE, TRUE, sizeof(mirror_row));
    g_array_set_clear_func(rows, mirror_row_clear);
    int rc = load_mirrors(c, it, rows);
    if (rc)
        return rc;
    if (it->deleted_ns) {
        ms_deleted d = {
            .kind = MS_MAILBOX, .mailbox = it->name, .folder = "", .deleted_ns = it->deleted_ns};
        for (guint i = 0; i < rows->len; i++) {
            if (!g_array_index(rows, mirror_row, i).parent) {
                d.messages += g_array_index(rows, mirror_row, i).messages;
                d.bytes += g_array_index(rows, mirror_row, i).bytes;
            }
        }
        *stop = fn(ctx, &d) != 0;
    }
    for (guint i = 0; !rc && !*stop && i < rows->len; i++) {
        const mirror_row *r = &g_array_index(rows, mirror_row, i);
        if (r->deleted_ns) {
            ms_deleted d = {.kind = MS_FOLDER,
                            .mailbox = it->name,
                            .folder = r->path,
                            .messages = r->messages,
                            .bytes = r->bytes,
                            .deleted_ns = r->deleted_ns,
                            .inside = r->inside};
            *stop = fn(ctx, &d) != 0;
        }
        if (!*stop)
            rc = list_messages(c, it, r, fn, ctx, stop);
    }
    return rc;
}

static int list_in(sq_conn *c, const char *mailbox, ms_deleted_fn fn, void *ctx)
{
    g_autoptr(GArray) items = g_array_new(FALSE, TRUE, sizeof(items_row));
    g_array_set_clear_func(items, items_row_clear);
    int rc = all_items(c, mailbox, items);
    bool stop = false;
    /* Oldest first reads best in a table. */
    for (guint i = items->len; !rc && !stop && i > 0; i--)
        rc = list_items(c, &g_array_index(items, items_row, i - 1), fn, ctx, &stop);
    return rc;
}

int sq_deleted_list(ms_store *st, const char *mailbox, ms_deleted_fn fn, void *ctx)
{
    /* One read transaction: a consistent picture while the mount writes. */
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_exec(c, "BEGIN") == SQLITE_OK ? 0 : -EIO;
    if (!rc) {
        rc = list_in(c, mailbox, fn, ctx);
        sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
    }
    sq_conn_put(st, c);
    return rc;
}

/* ------------------------------------------------------------ restore */

typedef struct restore {
    const char *mailbox; /* its name, for the log */
    int64_t visible;     /* the mailbox restored into */
    int64_t restored;    /* messages brought back */
} restore;

/* 1 if a message or subfolder named name is in visible folder parent. */
static int name_taken(sq_conn *c, int64_t parent, const char *name)
{
    int rc = sq_name_taken_by_message(c, parent, name);
    if (rc)
        return rc;
    sqlite3_stmt *q = sq_stmt(c, "SELECT 1 FROM folder WHERE parent = ? AND name = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, parent);
    sq_bind_name(q, 2, name);
    rc = sq_step_row(c, q, "restore");
    sqlite3_reset(q);
    return rc == 0 ? 1 : rc == -ENOENT ? 0 : rc;
}

static int refused(const restore *r, const char *path, const char *name)
{
    ms_log(LOG_ERR, "restore %s: %s%s%s exists: nothing restored (never overwritten)", r->mailbox,
           path, *path ? "/" : "", name);
    return -EEXIST;
}

/*
 * The visible folder named like mirror under vparent (0: the top level)
 * of the mailbox restored into; made like the mirror (attributes,
 * special-use, next UID) when there is none.  The mirror is no longer a
 * deleted folder then: what it still holds is deleted items of the
 * visible one.
 */
static int visible_folder(sq_conn *c, restore *r, int64_t vparent, const char *vpath,
                          int64_t mirror, int64_t *out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT name FROM folder WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, mirror);
    int rc = sq_step_row(c, q, "restore");
    if (rc)
        return rc;
    g_autofree char *name = col_str(q, 0);
    sqlite3_reset(q);
    rc = child_folder(c, r->visible, vparent, name, out);
    if (rc != -ENOENT)
        return rc;
    if (vparent && (rc = sq_name_taken_by_message(c, vparent, name)) != 0)
        return rc > 0 ? refused(r, vpath, name) : rc;
    rc = folder_like(c, r->visible, vparent, mirror, out);
    if (rc)
        return rc;
    q = sq_stmt(c, "UPDATE folder SET deleted_ns = 0 WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, mirror);
    return sq_step_done(c, q, "restore");
}

typedef struct kept {
    int64_t id, uid;
    char *name; /* the original name */
} kept;

static void kept_clear(gpointer p) { g_free(((kept *)p)->name); }

/* The messages kept in mirror, newest deletion first. */
static int kept_in(sq_conn *c, int64_t mirror, GArray *out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT id, imap_uid, name FROM message WHERE folder = ?"
                                 " ORDER BY deleted_ns DESC, id DESC");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, mirror);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        g_autofree char *name = col_str(q, 2);
        kept k = {sqlite3_column_int64(q, 0), sqlite3_column_int64(q, 1),
                  g_strdup(original_name(name))};
        g_array_append_val(out, k);
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, "restore");
}

/*
 * Refiles kept message k into visible folder vis under its own name, UID
 * (a new one if another message of vis has it), flags, mode and date.
 */
static int restore_message(sq_conn *c, restore *r, const kept *k, int64_t vis, const char *vpath)
{
    int rc = name_taken(c, vis, k->name);
    if (rc)
        return rc > 0 ? refused(r, vpath, k->name) : rc;
    int64_t uid = k->uid, clash = 0;
    sqlite3_stmt *q =
        sq_stmt(c, "SELECT EXISTS(SELECT 1 FROM message WHERE folder = ? AND imap_uid = ?)");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, vis);
    sqlite3_bind_int64(q, 2, uid);
    rc = sq_step_row(c, q, "restore");
    if (rc)
        return rc;
    clash = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    if (clash && (rc = sq_take_uid(c, vis, &uid)) != 0)
        return rc;
    /* Its ctime is the restore's: a backup that goes by ctime takes it again. */
    q = sq_stmt(
        c, "UPDATE message SET folder = ?, name = ?, imap_uid = ?, deleted_ns = 0, ctime_ns = ?"
           " WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, vis);
    sq_bind_name(q, 2, k->name);
    sqlite3_bind_int64(q, 3, uid);
    sqlite3_bind_int64(q, 4, ms_now_ns());
    sqlite3_bind_int64(q, 5, k->id);
    rc = sq_step_done(c, q, "restore");
    if (rc)
        return rc;
    q = sq_stmt(c, "UPDATE folder SET next_uid = max(next_uid, ? + 1) WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, uid);
    sqlite3_bind_int64(q, 2, vis);
    rc = sq_step_done(c, q, "restore");
    if (!rc)
        r->restored++;
    return rc;
}

/* The newest deletion of each name kept in mirror, into vis. */
static int restore_messages(sq_conn *c, restore *r, int64_t mirror, int64_t vis, const char *vpath)
{
    g_autoptr(GArray) ks = g_array_new(FALSE, TRUE, sizeof(kept));
    g_array_set_clear_func(ks, kept_clear);
    int rc = kept_in(c, mirror, ks);
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; !rc && i < ks->len; i++) {
        const kept *k = &g_array_index(ks, kept, i);
        if (!g_hash_table_add(seen, k->name))
            continue; /* an older deletion of a name restored just now */
        rc = restore_message(c, r, k, vis, vpath);
    }
    return rc;
}

/* Ids of the subfolders of folder (in a mailbox's mirror or not). */
static int subfolders(sq_conn *c, int64_t folder, GArray *out)
{
    sqlite3_stmt *q = sq_stmt(c, "SELECT id FROM folder WHERE parent = ? ORDER BY id");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, folder);
    return sq_collect_ids(c, q, out, "restore");
}

/* Mirror folder with everything under it into vparent (0: top level). */
static int restore_folder(sq_conn *c, restore *r, int64_t mirror, int64_t vparent,
                          const char *vpath, int depth)
{
    if (depth > MAX_DEPTH)
        return -ELOOP;
    int64_t vis;
    int rc = visible_folder(c, r, vparent, vpath, mirror, &vis);
    if (rc)
        return rc;
    g_autofree char *name = NULL;
    sqlite3_stmt *q = sq_stmt(c, "SELECT name FROM folder WHERE id = ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, vis);
    rc = sq_step_row(c, q, "restore");
    if (rc)
        return rc;
    name = col_str(q, 0);
    sqlite3_reset(q);
    g_autofree char *path = *vpath ? g_strdup_printf("%s/%s", vpath, name) : g_strdup(name);
    rc = restore_messages(c, r, mirror, vis, path);
    g_autoptr(GArray) subs = g_array_new(FALSE, FALSE, sizeof(int64_t));
    if (!rc)
        rc = subfolders(c, mirror, subs);
    for (guint i = 0; !rc && i < subs->len; i++)
        rc = restore_folder(c, r, g_array_index(subs, int64_t, i), vis, path, depth + 1);
    return rc;
}

/* Everything kept in items, into the visible mailbox. */
static int restore_all(sq_conn *c, restore *r, int64_t items)
{
    g_autoptr(GArray) tops = g_array_new(FALSE, FALSE, sizeof(int64_t));
    sqlite3_stmt *q =
        sq_stmt(c, "SELECT id FROM folder WHERE mailbox = ? AND parent = 0 ORDER BY id");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, items);
    int rc = sq_collect_ids(c, q, tops, "restore");
    for (guint i = 0; !rc && i < tops->len; i++)
        rc = restore_folder(c, r, g_array_index(tops, int64_t, i), 0, "", 0);
    return rc;
}

/*
 * The folder or message at path ('/'-separated) in items, into the
 * visible mailbox; the folders above it are made visible too.
 */
static int restore_path(sq_conn *c, restore *r, int64_t items, const char *path)
{
    g_auto(GStrv) all = g_strsplit(path, "/", -1);
    g_autoptr(GPtrArray) parts = g_ptr_array_new();
    for (size_t i = 0; all[i]; i++)
        if (all[i][0])
            g_ptr_array_add(parts, all[i]);
    if (!parts->len)
        return -ENOENT;
    int64_t mirror = 0, vis = 0;
    g_autoptr(GString) vpath = g_string_new("");
    for (guint i = 0; i < parts->len; i++) {
        const char *name = parts->pdata[i];
        int64_t child;
        int rc = child_folder(c, items, mirror, name, &child);
        if (rc == -ENOENT && i == parts->len - 1 && i > 0) {
            /* The last part names a message kept in the mirror folder. */
            g_autoptr(GArray) ks = g_array_new(FALSE, TRUE, sizeof(kept));
            g_array_set_clear_func(ks, kept_clear);
            rc = kept_in(c, mirror, ks);
            for (guint k = 0; !rc && k < ks->len; k++)
                if (!strcmp(g_array_index(ks, kept, k).name, name))
                    return restore_message(c, r, &g_array_index(ks, kept, k), vis, vpath->str);
            return rc ? rc : -ENOENT;
        }
        if (rc)
            return rc;
        if (i == parts->len - 1)
            return restore_folder(c, r, child, vis, vpath->str, 0);
        rc = visible_folder(c, r, vis, vpath->str, child, &vis);
        if (rc)
            return rc;
        if (vpath->len)
            g_string_append_c(vpath, '/');
        g_string_append(vpath, name);
        mirror = child;
    }
    return -ENOENT;
}

/*
 * Drops the mirror folders that no longer hold anything and were not
 * deleted themselves (their own deletion is an item to keep).
 */
static int tidy_items(sq_conn *c, int64_t items)
{
    sqlite3_stmt *q =
        sq_stmt(c, "DELETE FROM folder WHERE mailbox = ?1 AND deleted_ns = 0"
                   " AND NOT EXISTS (SELECT 1 FROM folder s WHERE s.parent = folder.id)"
                   " AND NOT EXISTS (SELECT 1 FROM message m WHERE m.folder = folder.id)");
    for (int i = 0; i < MAX_DEPTH; i++) {
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, items);
        int rc = sq_step_done(c, q, "restore");
        if (rc || sqlite3_changes(c->db) == 0)
            return rc;
    }
    return 0;
}

/*
 * The visible mailbox that the items of it belong to: the one it was
 * taken from, made again when it is gone (with its id when free, so the
 * items' name stays right; its name, ACL, mode, owner and time).
 */
static int recreate_mailbox(sq_conn *c, const items_row *it, int64_t *out)
{
    int64_t exists;
    int rc = sq_query_int(c, "SELECT EXISTS(SELECT 1 FROM mailbox WHERE id = ?)", it->origin,
                          &exists, "restore");
    if (rc)
        return rc;
    sqlite3_stmt *q = sq_stmt(
        c, "INSERT INTO mailbox(id, name, state, acl, mode, uid, gid, mtime_ns, ctime_ns)"
           " SELECT ?, ?, 0, acl, mode, uid, gid, mtime_ns, ctime_ns FROM mailbox WHERE id = ?");
    if (!q)
        return -EIO;
    if (exists)
        sqlite3_bind_null(q, 1);
    else
        sqlite3_bind_int64(q, 1, it->origin);
    sq_bind_name(q, 2, it->name);
    sqlite3_bind_int64(q, 3, it->id);
    rc = sq_step_done(c, q, "restore");
    if (!rc)
        *out = sqlite3_last_insert_rowid(c->db);
    return rc;
}

/*
 * After a restore: what is left in the items belongs to the visible
 * mailbox (renamed for its id, no longer a deleted mailbox), or the
 * items go when nothing is left.
 */
static int settle_items(sq_conn *c, const items_row *it, int64_t visible)
{
    int rc = tidy_items(c, it->id);
    int64_t left;
    if (!rc)
        rc = sq_query_int(c, "SELECT EXISTS(SELECT 1 FROM folder WHERE mailbox = ?)", it->id, &left,
                          "restore");
    if (rc)
        return rc;
    sqlite3_stmt *q;
    if (!left) {
        q = sq_stmt(c, "DELETE FROM mailbox WHERE id = ?");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, it->id);
        return sq_step_done(c, q, "restore");
    }
    /* Named for the visible mailbox, unless that has items of its own:
     * then these keep their name, still listed and restorable under it. */
    g_autofree char *name = items_name(visible, it->name);
    int64_t other;
    rc = find_items(c, name, &other);
    if (rc && rc != -ENOENT)
        return rc;
    g_autofree char *own = NULL;
    if (rc == 0 && other != it->id && (rc = mailbox_name(c, it->id, &own)) != 0)
        return rc;
    q = sq_stmt(c, "UPDATE mailbox SET name = ?, deleted_ns = 0 WHERE id = ?");
    if (!q)
        return -EIO;
    sq_bind_name(q, 1, own ? own : name);
    sqlite3_bind_int64(q, 2, it->id);
    return sq_step_done(c, q, "restore");
}

/* 1 if mailbox id is visible, 0 if it is gone or hidden (moved away). */
static int origin_visible(sq_conn *c, int64_t id)
{
    int64_t state;
    int rc = sq_query_int(c, "SELECT state FROM mailbox WHERE id = ?", id, &state, "restore");
    return rc == -ENOENT ? 0 : rc ? rc : state == MS_MB_VISIBLE;
}

/*
 * Which items a restore of mailbox takes from: those of the visible
 * mailbox of that name; else (or when it has none) the newest ones whose
 * mailbox is gone: deleted, or moved away and back (the items stay in
 * the store they were deleted in).
 */
static int items_for(sq_conn *c, const char *mailbox, GArray *all, const items_row **it,
                     int64_t *visible)
{
    ms_attr a;
    int rc = sq_lookup_in(c, (ms_node){MS_ROOT, 0}, mailbox, &a);
    if (rc && rc != -ENOENT)
        return rc;
    *visible = rc ? 0 : a.node.id;
    for (guint i = 0; *visible && i < all->len; i++) {
        if (g_array_index(all, items_row, i).origin == *visible) {
            *it = &g_array_index(all, items_row, i);
            return 0;
        }
    }
    for (guint i = 0; i < all->len; i++) {
        rc = origin_visible(c, g_array_index(all, items_row, i).origin);
        if (rc < 0)
            return rc;
        if (!rc) {
            *it = &g_array_index(all, items_row, i);
            return 0;
        }
    }
    return -ENOENT;
}

static int restore_in(sq_conn *c, const char *mailbox, const char *path, int64_t *restored)
{
    g_autoptr(GArray) all = g_array_new(FALSE, TRUE, sizeof(items_row));
    g_array_set_clear_func(all, items_row_clear);
    int rc = all_items(c, mailbox, all);
    const items_row *it = NULL;
    restore r = {.mailbox = mailbox};
    if (!rc)
        rc = items_for(c, mailbox, all, &it, &r.visible);
    /* Not into a mailbox being moved: the move would miss what came back. */
    if (!rc && r.visible)
        rc = sq_mailbox_writable(c, r.visible);
    else if (!rc)
        rc = recreate_mailbox(c, it, &r.visible);
    if (!rc)
        rc = path ? restore_path(c, &r, it->id, path) : restore_all(c, &r, it->id);
    if (!rc)
        rc = settle_items(c, it, r.visible);
    if (!rc)
        *restored = r.restored;
    return rc;
}

int sq_deleted_restore(ms_store *st, const char *mailbox, const char *path, int64_t *restored)
{
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c);
    if (!rc)
        rc = sq_tx_end(st, c, restore_in(c, mailbox, path, restored));
    sq_conn_put(st, c);
    return rc;
}

/* -------------------------------------------------------------- purge */

typedef struct doomed {
    int64_t message, content;
} doomed;

static int purge_messages(sq *s, sq_conn *c, int64_t before_ns, ms_purged *out)
{
    g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(doomed));
    sqlite3_stmt *q = sq_stmt(c, "SELECT id, content, size FROM message"
                                 " WHERE deleted_ns != 0 AND deleted_ns <= ?");
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, before_ns);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        doomed row = {sqlite3_column_int64(q, 0), sqlite3_column_int64(q, 1)};
        g_array_append_val(ids, row);
        out->bytes += sqlite3_column_int64(q, 2);
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return sq_errno(c->db, rc, "purge");
    rc = 0;
    for (guint i = 0; !rc && i < ids->len; i++) {
        const doomed *row = &g_array_index(ids, doomed, i);
        q = sq_stmt(c, "DELETE FROM message WHERE id = ?");
        if (!q)
            return -EIO;
        sqlite3_bind_int64(q, 1, row->message);
        rc = sq_step_done(c, q, "purge");
        if (!rc)
            rc = sq_content_release_in(s, c, row->content); /* unless being read */
    }
    if (!rc)
        out->messages = ids->len;
    return rc;
}

/* Runs a DELETE ... RETURNING deleted_ns; counts the rows that had one. */
static int delete_counting(sq_conn *c, sqlite3_stmt *q, int64_t before_ns, int64_t *deleted,
                           int64_t *any)
{
    if (!q)
        return -EIO;
    sqlite3_bind_int64(q, 1, before_ns);
    int rc;
    *any = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        (*any)++;
        *deleted += sqlite3_column_int64(q, 0) != 0;
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : sq_errno(c->db, rc, "purge");
}

/*
 * Expired items: messages, then the folders and mailboxes left empty that
 * were deleted long enough ago or were only holding deleted items.
 */
static int purge_in(sq *s, sq_conn *c, int64_t before_ns, ms_purged *out)
{
    SQ_ASSERT_TX(c);
    ms_mutex_assert_held(&s->pin_lock);
    int rc = purge_messages(s, c, before_ns, out);
    int64_t any = 1;
    for (int i = 0; !rc && any && i < MAX_DEPTH; i++)
        rc = delete_counting(
            c,
            sq_stmt(c,
                    "DELETE FROM folder WHERE mailbox IN (SELECT id FROM mailbox WHERE state = 3)"
                    " AND deleted_ns <= ?1"
                    " AND NOT EXISTS (SELECT 1 FROM folder s WHERE s.parent = folder.id)"
                    " AND NOT EXISTS (SELECT 1 FROM message m WHERE m.folder = folder.id)"
                    " RETURNING deleted_ns"),
            before_ns, &out->folders, &any);
    if (!rc)
        rc = delete_counting(c,
                             sq_stmt(c, "DELETE FROM mailbox WHERE state = 3 AND deleted_ns <= ?1"
                                        " AND NOT EXISTS (SELECT 1 FROM folder f"
                                        " WHERE f.mailbox = mailbox.id) RETURNING deleted_ns"),
                             before_ns, &out->mailboxes, &any);
    return rc;
}

/*
 * pin_lock is held from the check of each content's readers to the end
 * of the transaction (see sq_content_release_in): readers opened
 * meanwhile wait a moment instead of pinning bytes being freed.
 */
int sq_deleted_purge(ms_store *st, int64_t before_ns, ms_purged *out)
{
    sq *s = sq_of(st);
    sq_conn *c = sq_conn_get(st);
    if (!c)
        return -EIO;
    int rc = sq_tx_begin(st, c);
    if (!rc) {
        ms_mutex_lock(&s->pin_lock);
        rc = sq_tx_end(st, c, purge_in(s, c, before_ns, out));
        sq_pins_release_held(s);
        ms_mutex_unlock(&s->pin_lock);
    }
    sq_conn_put(st, c);
    return rc;
}
