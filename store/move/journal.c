/*
 * journal.c — the sidecar database of moves.
 *
 * One row per move with its state, step, counts, timings and error; one
 * row per step reached (move_step) for the log and for timings.  The
 * commit point of a move is one durable write here (synchronous=FULL),
 * and everything recovery needs to decide "back or forward" is here.
 * The owner's pid and process start time tell recovery whether a move
 * still has a live process behind it.
 */
#include "journal.h"
#include "sqlite_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <sqlite3.h>

struct ms_journal {
    sqlite3 *db;
    char *path;
    char id[MS_JOURNAL_ID_LEN]; /* its meta 'id', fixed at creation */
    dev_t dev;                  /* the file opened, to notice it deleted or replaced */
    ino_t ino;
    GMutex lock; /* guards db: one statement at a time */
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS move(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " mailbox BLOB NOT NULL, newname BLOB NOT NULL, source TEXT NOT NULL,"
    " target TEXT NOT NULL,"
    " state TEXT NOT NULL, step TEXT NOT NULL, target_id INTEGER NOT NULL DEFAULT 0,"
    " total_messages INTEGER NOT NULL, total_bytes INTEGER NOT NULL,"
    " done_messages INTEGER NOT NULL DEFAULT 0, done_bytes INTEGER NOT NULL DEFAULT 0,"
    " started_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,"
    " finished_ns INTEGER NOT NULL DEFAULT 0, lock_ns INTEGER NOT NULL DEFAULT 0,"
    " retain_until INTEGER NOT NULL DEFAULT 0, error TEXT,"
    " owner_pid INTEGER NOT NULL, owner_start TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS move_step(move INTEGER NOT NULL, step TEXT NOT NULL,"
    " at_ns INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS move_state ON move(state);"
    /* step 4: the entry, its values before the move and the target's */
    "CREATE TABLE IF NOT EXISTS move_dir(move INTEGER PRIMARY KEY, dn TEXT NOT NULL,"
    " saved TEXT NOT NULL, target TEXT NOT NULL);"
    /* online moves (DESIGN 10): one row per pass over the source */
    "CREATE TABLE IF NOT EXISTS move_pass(move INTEGER NOT NULL, pass INTEGER NOT NULL,"
    " phase TEXT NOT NULL, messages INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    " removed INTEGER NOT NULL, updated INTEGER NOT NULL, started_ns INTEGER NOT NULL,"
    " ended_ns INTEGER NOT NULL, floor INTEGER NOT NULL, PRIMARY KEY(move, pass));"
    /* the cutover's hold on the user in the directory: written (durably)
     * before the entry is changed, dropped once the hold is removed, so
     * that recovery lifts any hold a crash left */
    "CREATE TABLE IF NOT EXISTS move_hold(move INTEGER PRIMARY KEY, dn TEXT NOT NULL,"
    " spec TEXT NOT NULL);"
    /* 'id': names this journal in the stores' locks and hidden copies */
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/* The journal's TEXT for each state and step: the one table both ways. */
static const char *const state_names[] = {
    [MS_MOVE_UNKNOWN] = "unknown",         [MS_MOVE_RUNNING] = "running",
    [MS_MOVE_COMMITTED] = "committed",     [MS_MOVE_DONE] = "done",
    [MS_MOVE_ROLLED_BACK] = "rolled-back", [MS_MOVE_UNDONE] = "undone",
    [MS_MOVE_PURGED] = "purged",           [MS_MOVE_PREPARED] = "prepared",
};
static const char *const step_names[] = {
    [MS_STEP_UNKNOWN] = "unknown",     [MS_STEP_RECORDED] = "recorded",
    [MS_STEP_LOCKED] = "locked",       [MS_STEP_COPYING] = "copying",
    [MS_STEP_SYNCING] = "syncing",     [MS_STEP_CUTOVER] = "cutover",
    [MS_STEP_COPIED] = "copied",       [MS_STEP_VERIFIED] = "verified",
    [MS_STEP_DIRECTORY] = "directory", [MS_STEP_COMMITTED] = "committed",
    [MS_STEP_FINISHED] = "finished",
};

const char *ms_move_state_name(ms_move_state s)
{
    return (unsigned)s < G_N_ELEMENTS(state_names) ? state_names[s] : state_names[0];
}

const char *ms_move_step_name(ms_move_step s)
{
    return (unsigned)s < G_N_ELEMENTS(step_names) ? step_names[s] : step_names[0];
}

/* The index of text in names, or 0 (unknown) for NULL or a name not there. */
static int name_index(const char *const *names, size_t n, const char *text)
{
    for (size_t i = 1; text && i < n; i++)
        if (!strcmp(names[i], text))
            return (int)i;
    return 0;
}

#define STATE(s) ms_move_state_name(MS_MOVE_##s)
#define STEP(s) ms_move_step_name(MS_STEP_##s)

/*
 * Field 22 of /proc/PID/stat, the process's start time, into *start
 * (g_free): it tells a live pid from a reused one.  0; -ENOENT when the
 * file is not there (gone, or hidden by hidepid=2); another errno when it
 * is there but cannot be read (hidepid=1: EACCES).
 */
static int proc_start(pid_t pid, char **start)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, text, sizeof text - 1);
    int e = n < 0 ? errno : 0;
    close(fd);
    if (n < 0)
        return -e;
    text[n] = 0;
    char *p = strrchr(text, ')'); /* the command name may hold spaces */
    if (!p || !p[1])
        return -EIO;
    g_auto(GStrv) f = g_strsplit(p + 2, " ", 0);
    if (g_strv_length(f) <= 19)
        return -EIO;
    *start = g_strdup(f[19]);
    return 0;
}

/* This process's start time as the journal records it ("" if unknown). */
static char *own_start(void)
{
    char *start = NULL;
    return proc_start(getpid(), &start) == 0 ? start : g_strdup("");
}

/* What the system says of a move's recorded owner. */
typedef enum { OWNER_ALIVE, OWNER_DEAD, OWNER_UNKNOWN } owner_state;

/*
 * Only a definite answer is "dead": no process of that pid (kill says
 * ESRCH, which hidepid does not hide), or one that started at another
 * time than the owner did (the pid was reused).  A /proc entry that
 * cannot be read while the pid exists (hidepid, another user) is
 * unknown.  pid <= 0: the move was handed to recovery (jn_disown).
 */
static owner_state owner_of(int64_t pid, const char *start)
{
    if (pid <= 0)
        return OWNER_DEAD;
    g_autofree char *now = NULL;
    int rc = proc_start((pid_t)pid, &now);
    if (rc == 0 && !strcmp(now, start))
        return OWNER_ALIVE;
    if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
        return OWNER_DEAD;
    /* A live pid whose start differs was reused, unless the owner's own
     * start was never recorded (then nothing tells them apart). */
    return rc == 0 && start[0] ? OWNER_DEAD : OWNER_UNKNOWN;
}

/* The journal's id, made on first open (one random UUID per journal file). */
static int load_id(sqlite3 *db, char *id, char **msg)
{
    g_autofree char *uuid = g_uuid_string_random();
    g_autofree char *sql =
        g_strdup_printf("INSERT OR IGNORE INTO meta(key, value) VALUES ('id', '%s')", uuid);
    int rc = sqlite3_exec(db, sql, NULL, NULL, msg);
    sqlite3_stmt *q = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'id'", -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        g_strlcpy(id, (const char *)sqlite3_column_text(q, 0), MS_JOURNAL_ID_LEN);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    return rc;
}

/*
 * A missing journal is created 0600 before SQLite opens it (its -wal and
 * -shm then get the same mode).  Anything else (a missing folder, no
 * permission to look) is left to SQLite's error.
 */
static int journal_create_private(const char *path, char **err)
{
    struct stat sb;
    if (stat(path, &sb) == 0 || errno != ENOENT)
        return 0;
    char *why = NULL;
    int rc = sq_create_private(path, &why);
    if (rc == -EEXIST || rc == -ENOENT) /* created meanwhile; no folder */
        rc = 0;
    if (rc)
        *err = g_strdup_printf("%s (the move journal)", why);
    g_free(why);
    return rc;
}

int ms_journal_open(const char *path, ms_journal **out, char **err)
{
    int prc = journal_create_private(path, err);
    if (prc)
        return prc;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    char *msg = NULL;
    char id[MS_JOURNAL_ID_LEN] = "";
    if (rc == SQLITE_OK) {
        sqlite3_busy_handler(db, sq_busy_wait, NULL);
        rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                          &msg);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, schema, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        rc = load_id(db, id, &msg);
    struct stat sb;
    if (rc == SQLITE_OK && stat(path, &sb) < 0)
        rc = SQLITE_CANTOPEN; /* deleted the moment it was made: say so now */
    if (rc != SQLITE_OK) {
        *err = g_strdup_printf("%s: cannot open the move journal: %s", path,
                               msg  ? msg
                               : db ? sqlite3_errmsg(db)
                                    : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_close(db);
        return rc == SQLITE_CANTOPEN ? -ENOENT : rc == SQLITE_NOTADB ? -EINVAL : -EIO;
    }
    sq_warn_if_shared(path, &sb, "the move journal");
    ms_journal *j = g_new0(ms_journal, 1);
    j->db = db;
    j->path = g_strdup(path);
    g_strlcpy(j->id, id, sizeof j->id);
    j->dev = sb.st_dev;
    j->ino = sb.st_ino;
    g_mutex_init(&j->lock);
    *out = j;
    return 0;
}

const char *ms_journal_id(const ms_journal *j) { return j->id; }

int ms_journal_attr_get(ms_journal *j, const char *key, int64_t *value)
{
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(j->db, "SELECT value FROM meta WHERE key = ?", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, key, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(q);
    }
    if (rc == SQLITE_ROW)
        *value = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
}

static int run(ms_journal *j, bool durable, const char *sql, const char *fmt, ...);

int ms_journal_attr_set(ms_journal *j, const char *key, int64_t value)
{
    return run(j, true, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", "ti", key, value);
}

int ms_journal_verify(ms_journal *j, char **err)
{
    struct stat sb;
    int rc = 0;
    if (stat(j->path, &sb) < 0)
        rc = errno == ENOENT ? -ENOENT : -errno;
    else if (sb.st_dev != j->dev || sb.st_ino != j->ino)
        rc = -ESTALE;
    if (rc && err)
        *err = g_strdup_printf(
            "%s: the move journal was %s while in use: no move can be recorded until it is "
            "reopened (remount, or run mailfsctl again); 'mailfsctl recover' settles what the "
            "stores hold",
            j->path,
            rc == -ENOENT   ? "deleted"
            : rc == -ESTALE ? "replaced"
                            : "made unreadable");
    return rc;
}

/* Enters a move that finished under another journal (ms_orphans). */
int jn_record_done(ms_journal *j, const char *mailbox, const char *newname, const char *source,
                   const char *target, int64_t retain_until, const char *why, int64_t *id)
{
    int64_t now = ms_now_ns();
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(
        j->db,
        "INSERT INTO move(mailbox, newname, source, target, state, step, total_messages,"
        " total_bytes, started_ns, updated_ns, finished_ns, retain_until, error, owner_pid,"
        " owner_start) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?, 0, '')",
        -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_blob(q, 1, mailbox, (int)strlen(mailbox), SQLITE_TRANSIENT);
        sqlite3_bind_blob(q, 2, newname, (int)strlen(newname), SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 3, source, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 4, target, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 5, STATE(DONE), -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 6, STEP(FINISHED), -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 7, now);
        sqlite3_bind_int64(q, 8, now);
        sqlite3_bind_int64(q, 9, now);
        sqlite3_bind_int64(q, 10, retain_until);
        sqlite3_bind_text(q, 11, why, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(q);
    }
    sqlite3_finalize(q);
    if (rc == SQLITE_DONE)
        *id = sqlite3_last_insert_rowid(j->db);
    else
        ms_log(LOG_ERR, "%s: %s", j->path, sqlite3_errmsg(j->db));
    g_mutex_unlock(&j->lock);
    return rc == SQLITE_DONE ? 0 : rc == SQLITE_FULL ? -ENOSPC : -EIO;
}

void ms_journal_close(ms_journal *j)
{
    if (!j)
        return;
    sqlite3_close(j->db);
    g_mutex_clear(&j->lock);
    g_free(j->path);
    g_free(j);
}

/*
 * Makes the next commit durable (fsync of the WAL at commit).  Its
 * result is checked: a commit point written without it could vanish with
 * a power cut after the move went on.  Caller holds j->lock.
 */
static int sync_full(ms_journal *j)
{
    int rc = sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        ms_log(LOG_ERR, "%s: cannot make the move journal's next write durable: %s", j->path,
               sqlite3_errmsg(j->db));
    return rc;
}

/*
 * Back to the cheaper mode for progress rows.  A failure leaves FULL on,
 * which is slower but never less safe: nothing to report.  Caller holds
 * j->lock.
 */
static void sync_normal(ms_journal *j)
{
    (void)sqlite3_exec(j->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
}

/*
 * Runs sql with the bindings described by fmt ('i' int64, 't' text,
 * 'b' blob as text) under the journal lock.  Statements are few and run
 * once per step, so they are prepared each time.  With guarded, a
 * statement that changed no row returns -ESTALE: its WHERE named the
 * state the caller expects, and the row is no longer in it.
 */
static int vrun(ms_journal *j, bool durable, bool guarded, const char *sql, const char *fmt,
                va_list ap)
{
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    /* A durable write that could not be made durable is not written. */
    int rc = durable ? sync_full(j) : SQLITE_OK;
    bool synced = rc == SQLITE_OK; /* else sync_full said why */
    if (synced)
        rc = sqlite3_prepare_v2(j->db, sql, -1, &q, NULL);
    for (int i = 0; rc == SQLITE_OK && fmt[i]; i++) {
        if (fmt[i] == 'i') {
            sqlite3_bind_int64(q, i + 1, va_arg(ap, int64_t));
        } else {
            const char *s = va_arg(ap, const char *);
            if (!s)
                sqlite3_bind_null(q, i + 1);
            else if (fmt[i] == 'b')
                sqlite3_bind_blob(q, i + 1, s, (int)strlen(s), SQLITE_TRANSIENT);
            else
                sqlite3_bind_text(q, i + 1, s, -1, SQLITE_TRANSIENT);
        }
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (synced && rc != SQLITE_DONE && rc != SQLITE_ROW)
        ms_log(LOG_ERR, "%s: %s", j->path, sqlite3_errmsg(j->db));
    bool changed = sqlite3_changes(j->db) > 0;
    sqlite3_finalize(q);
    if (durable)
        sync_normal(j);
    g_mutex_unlock(&j->lock);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return rc == SQLITE_FULL ? -ENOSPC : -EIO;
    return guarded && !changed ? -ESTALE : 0;
}

static int run(ms_journal *j, bool durable, const char *sql, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vrun(j, durable, false, sql, fmt, ap);
    va_end(ap);
    return rc;
}

/* run, -ESTALE when no row changed. */
static int run_guarded(ms_journal *j, bool durable, const char *sql, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vrun(j, durable, true, sql, fmt, ap);
    va_end(ap);
    return rc;
}

int jn_create(ms_journal *j, const char *mailbox, const char *newname, const char *source,
              const char *target, int64_t total_messages, int64_t total_bytes, int64_t *id)
{
    g_autofree char *start = own_start();
    int64_t now = ms_now_ns();
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sync_full(j);
    bool synced = rc == SQLITE_OK; /* else sync_full said why */
    if (synced)
        rc = sqlite3_prepare_v2(
            j->db,
            "INSERT INTO move(mailbox, source, target, state, step, total_messages, total_bytes,"
            " started_ns, updated_ns, owner_pid, owner_start, newname)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_blob(q, 1, mailbox, (int)strlen(mailbox), SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 2, source, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 3, target, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 4, STATE(RUNNING), -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 5, STEP(RECORDED), -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 6, total_messages);
        sqlite3_bind_int64(q, 7, total_bytes);
        sqlite3_bind_int64(q, 8, now);
        sqlite3_bind_int64(q, 9, now);
        sqlite3_bind_int64(q, 10, getpid());
        sqlite3_bind_text(q, 11, start, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(q, 12, newname, (int)strlen(newname), SQLITE_TRANSIENT);
        rc = sqlite3_step(q);
    }
    sqlite3_finalize(q);
    if (rc == SQLITE_DONE)
        *id = sqlite3_last_insert_rowid(j->db);
    else if (synced)
        ms_log(LOG_ERR, "%s: %s", j->path, sqlite3_errmsg(j->db));
    sync_normal(j);
    g_mutex_unlock(&j->lock);
    if (rc != SQLITE_DONE)
        return rc == SQLITE_FULL ? -ENOSPC : -EIO;
    return run(j, false, "INSERT INTO move_step(move, step, at_ns) VALUES (?, ?, ?)", "iti", *id,
               STEP(RECORDED), now);
}

int jn_step(ms_journal *j, int64_t id, ms_move_step step, bool durable)
{
    int64_t now = ms_now_ns();
    const char *name = ms_move_step_name(step);
    int rc = run(j, durable, "UPDATE move SET step = ?, updated_ns = ? WHERE id = ?", "tii", name,
                 now, id);
    if (!rc)
        rc = run(j, false, "INSERT INTO move_step(move, step, at_ns) VALUES (?, ?, ?)", "iti", id,
                 name, now);
    return rc;
}

int jn_progress(ms_journal *j, int64_t id, int64_t messages, int64_t bytes)
{
    return run(j, false,
               "UPDATE move SET done_messages = ?, done_bytes = ?, updated_ns = ? WHERE id = ?",
               "iiii", messages, bytes, ms_now_ns(), id);
}

int jn_set_totals(ms_journal *j, int64_t id, int64_t messages, int64_t bytes)
{
    return run(j, false,
               "UPDATE move SET total_messages = ?, total_bytes = ?, updated_ns = ? WHERE id = ?",
               "iiii", messages, bytes, ms_now_ns(), id);
}

/* Final states end the move; the commit point and "prepared" must be
 * on disk before the move goes on: all of these are durable. */
static bool state_final(ms_move_state state)
{
    return state != MS_MOVE_RUNNING && state != MS_MOVE_COMMITTED && state != MS_MOVE_PREPARED;
}

int jn_set_state(ms_journal *j, int64_t id, ms_move_state state, const char *error)
{
    if (state == MS_MOVE_UNKNOWN)
        return -EINVAL; /* never written: it would hide the move from recovery */
    bool final = state_final(state);
    /* "committed" is the commit point: it must be on disk before we go on. */
    bool durable = state == MS_MOVE_COMMITTED || state == MS_MOVE_PREPARED || final;
    /* finished_ns is when the move itself ended: a later undo or purge
     * (final states too) must not change it, or its rate. */
    return run(j, durable,
               "UPDATE move SET state = ?, error = coalesce(?, error), updated_ns = ?,"
               " finished_ns = CASE WHEN ? AND finished_ns = 0 THEN ? ELSE finished_ns END"
               " WHERE id = ?",
               "ttiiii", ms_move_state_name(state), error, ms_now_ns(), (int64_t) final,
               ms_now_ns(), id);
}

int jn_transition(ms_journal *j, int64_t id, ms_move_state from, ms_move_state to,
                  const char *error)
{
    if (to == MS_MOVE_UNKNOWN || from == MS_MOVE_UNKNOWN)
        return -EINVAL;
    bool final = state_final(to);
    bool durable = to == MS_MOVE_COMMITTED || to == MS_MOVE_PREPARED || final;
    g_autofree char *start = own_start();
    /* One statement: the check and the write cannot be split by another
     * process's write (SQLite serialises writers). */
    return run_guarded(j, durable,
                       "UPDATE move SET state = ?, error = coalesce(?, error), updated_ns = ?,"
                       " finished_ns = CASE WHEN ? AND finished_ns = 0 THEN ? ELSE finished_ns END"
                       " WHERE id = ? AND state = ? AND owner_pid = ? AND owner_start = ?",
                       "ttiiiitit", ms_move_state_name(to), error, ms_now_ns(), (int64_t) final,
                       ms_now_ns(), id, ms_move_state_name(from), (int64_t)getpid(), start);
}

int jn_locked(ms_journal *j, int64_t id, int64_t at_ns)
{
    return run(j, false, "INSERT INTO move_step(move, step, at_ns) VALUES (?, ?, ?)", "iti", id,
               STEP(LOCKED), at_ns);
}

int jn_dir_save(ms_journal *j, int64_t id, const char *dn, const char *saved, const char *target)
{
    return run(j, true,
               "INSERT OR REPLACE INTO move_dir(move, dn, saved, target) VALUES (?, ?, ?, ?)",
               "ittt", id, dn, saved, target);
}

/*
 * The n text columns of the one row sql (bound to move id) selects, each
 * into *out[i] (g_free); -ENOENT when there is no such row.
 */
static int row_texts(ms_journal *j, const char *sql, int64_t id, char **const out[], int n)
{
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(j->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, id);
        rc = sqlite3_step(q);
    }
    for (int i = 0; rc == SQLITE_ROW && i < n; i++)
        *out[i] = g_strdup((const char *)sqlite3_column_text(q, i));
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
}

int jn_dir_get(ms_journal *j, int64_t id, char **dn, char **saved, char **target)
{
    char **out[] = {dn, saved, target};
    return row_texts(j, "SELECT dn, saved, target FROM move_dir WHERE move = ?", id, out, 3);
}

/* Moves in state of source's mailbox (NULL: any) into target as newname
 * (NULL: any), newest first; ownerless ones only when orphaned. */
static int find_moves(ms_journal *j, ms_move_state state, const char *source, const char *mailbox,
                      const char *target, const char *newname, bool orphaned, int64_t *id)
{
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int64_t));
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(j->db,
                                "SELECT id FROM move WHERE state = ?1 AND source = ?2 AND"
                                " (?3 IS NULL OR mailbox = ?3) AND (?4 IS NULL OR target = ?4) AND"
                                " (?5 IS NULL OR newname = ?5) ORDER BY id DESC",
                                -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, ms_move_state_name(state), -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, source, -1, SQLITE_TRANSIENT);
        if (mailbox)
            sqlite3_bind_blob(q, 3, mailbox, (int)strlen(mailbox), SQLITE_TRANSIENT);
        if (target)
            sqlite3_bind_text(q, 4, target, -1, SQLITE_TRANSIENT);
        if (newname)
            sqlite3_bind_blob(q, 5, newname, (int)strlen(newname), SQLITE_TRANSIENT);
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            int64_t v = sqlite3_column_int64(q, 0);
            g_array_append_val(ids, v);
        }
    }
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
    for (guint i = 0; rc == -ENOENT && i < ids->len; i++)
        if (!orphaned || !jn_owner_alive(j, g_array_index(ids, int64_t, i))) {
            *id = g_array_index(ids, int64_t, i);
            rc = 0;
        }
    g_array_free(ids, TRUE);
    return rc;
}

int jn_find_resumable(ms_journal *j, const char *source, const char *target, const char *newname,
                      int64_t *id)
{
    return find_moves(j, MS_MOVE_RUNNING, source, NULL, target, newname, true, id);
}

int jn_find_prepared(ms_journal *j, const char *source, const char *mailbox, const char *target,
                     const char *newname, int64_t *id)
{
    return find_moves(j, MS_MOVE_PREPARED, source, mailbox, target, newname, false, id);
}

int jn_find_active(ms_journal *j, const char *source, const char *mailbox, int64_t *id)
{
    static const ms_move_state active[] = {MS_MOVE_RUNNING, MS_MOVE_PREPARED, MS_MOVE_COMMITTED};
    int rc = -ENOENT;
    for (size_t i = 0; rc == -ENOENT && i < G_N_ELEMENTS(active); i++)
        rc = find_moves(j, active[i], source, mailbox, NULL, NULL, false, id);
    return rc;
}

int jn_pass(ms_journal *j, int64_t id, int pass, const char *phase, const ms_move_pass *p)
{
    return run(j, false,
               "INSERT OR REPLACE INTO move_pass(move, pass, phase, messages, bytes, removed,"
               " updated, started_ns, ended_ns, floor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               "iitiiiiiii", id, (int64_t)pass, phase, p->messages, p->bytes, p->removed,
               p->updated, p->started_ns, p->ended_ns, (int64_t)p->floor);
}

int ms_journal_passes(ms_journal *j, int64_t id, ms_move_pass **out, size_t *n)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(ms_move_pass));
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(j->db,
                                "SELECT pass, phase, messages, bytes, removed, updated, started_ns,"
                                " ended_ns, floor FROM move_pass WHERE move = ? ORDER BY pass",
                                -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, id);
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            ms_move_pass p = {0};
            p.pass = sqlite3_column_int(q, 0);
            sq_column_copy(p.phase, sizeof p.phase, q, 1);
            p.messages = sqlite3_column_int64(q, 2);
            p.bytes = sqlite3_column_int64(q, 3);
            p.removed = sqlite3_column_int64(q, 4);
            p.updated = sqlite3_column_int64(q, 5);
            p.started_ns = sqlite3_column_int64(q, 6);
            p.ended_ns = sqlite3_column_int64(q, 7);
            p.floor = (uint64_t)sqlite3_column_int64(q, 8);
            g_array_append_val(a, p);
        }
    }
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    *n = a->len;
    *out = (ms_move_pass *)(void *)g_array_free(a, FALSE);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

int jn_hold_save(ms_journal *j, int64_t id, const char *dn, const char *spec)
{
    return run(j, true, "INSERT OR REPLACE INTO move_hold(move, dn, spec) VALUES (?, ?, ?)", "itt",
               id, dn, spec);
}

int jn_hold_get(ms_journal *j, int64_t id, char **dn, char **spec)
{
    char **out[] = {dn, spec};
    return row_texts(j, "SELECT dn, spec FROM move_hold WHERE move = ?", id, out, 2);
}

int jn_hold_drop(ms_journal *j, int64_t id)
{
    return run(j, true, "DELETE FROM move_hold WHERE move = ?", "i", id);
}

int jn_holds(ms_journal *j, GArray *ids)
{
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(j->db, "SELECT move FROM move_hold", -1, &q, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(q, 0);
        g_array_append_val(ids, v);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Move id's owner and state as recorded: 0, -ENOENT (no such move) or
 * -EIO (cannot tell). */
static int owner_row(ms_journal *j, int64_t id, int64_t *pid, char *start, size_t n,
                     ms_move_state *state)
{
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(
        j->db, "SELECT owner_pid, owner_start, state FROM move WHERE id = ?", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, id);
        rc = sqlite3_step(q);
    }
    if (rc == SQLITE_ROW) {
        *pid = sqlite3_column_int64(q, 0);
        sq_column_copy(start, n, q, 1);
        *state = (ms_move_state)name_index(state_names, G_N_ELEMENTS(state_names),
                                           (const char *)sqlite3_column_text(q, 2));
    }
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
}

/*
 * This process becomes move id's owner, but only from an owner that is
 * certainly gone (or is this process), and only while the move is in
 * state (MS_MOVE_UNKNOWN: the one read here).  The update names the
 * owner and state it read, so anyone's write in between (the owner's
 * commit point, another recovery or adopter) makes it change nothing:
 * -ESTALE.  Two processes can then never both act on one move.
 */
static int claim(ms_journal *j, int64_t id, ms_move_state state, bool clear_error)
{
    int64_t pid = 0;
    char start[64] = "";
    ms_move_state now = MS_MOVE_UNKNOWN;
    int rc = owner_row(j, id, &pid, start, sizeof start, &now);
    if (rc)
        return rc;
    g_autofree char *own = own_start();
    bool self = pid == (int64_t)getpid() && !strcmp(start, own);
    if ((state != MS_MOVE_UNKNOWN && now != state) || now == MS_MOVE_UNKNOWN ||
        (!self && owner_of(pid, start) != OWNER_DEAD))
        return -ESTALE;
    return run_guarded(j, true,
                       "UPDATE move SET owner_pid = ?, owner_start = ?,"
                       " error = CASE WHEN ? THEN NULL ELSE error END"
                       " WHERE id = ? AND state = ? AND owner_pid = ? AND owner_start = ?",
                       "itiitit", (int64_t)getpid(), own, (int64_t)clear_error, id,
                       ms_move_state_name(now), pid, start);
}

int jn_adopt(ms_journal *j, int64_t id) { return claim(j, id, MS_MOVE_UNKNOWN, true); }

int jn_claim(ms_journal *j, int64_t id, ms_move_state state) { return claim(j, id, state, false); }

int jn_disown(ms_journal *j, int64_t id)
{
    return run(j, true, "UPDATE move SET owner_pid = 0 WHERE id = ?", "i", id);
}

int jn_set_target_id(ms_journal *j, int64_t id, int64_t target_mailbox)
{
    return run(j, true, "UPDATE move SET target_id = ? WHERE id = ?", "ii", target_mailbox, id);
}

int jn_set_times(ms_journal *j, int64_t id, int64_t lock_ns, int64_t retain_until)
{
    return run(j, false, "UPDATE move SET lock_ns = ?, retain_until = ? WHERE id = ?", "iii",
               lock_ns, retain_until, id);
}

int jn_target_id(ms_journal *j, int64_t id, int64_t *target_mailbox)
{
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(j->db, "SELECT target_id FROM move WHERE id = ?", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, id);
        rc = sqlite3_step(q);
    }
    int ret = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
    if (rc == SQLITE_ROW)
        *target_mailbox = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    return ret;
}

static void row_info(sqlite3_stmt *q, ms_move_info *m)
{
    memset(m, 0, sizeof *m);
    m->id = sqlite3_column_int64(q, 0);
    sq_column_copy(m->mailbox, sizeof m->mailbox, q, 1);
    sq_column_copy(m->source, sizeof m->source, q, 2);
    sq_column_copy(m->target, sizeof m->target, q, 3);
    m->state = (ms_move_state)name_index(state_names, G_N_ELEMENTS(state_names),
                                         (const char *)sqlite3_column_text(q, 4));
    m->step = (ms_move_step)name_index(step_names, G_N_ELEMENTS(step_names),
                                       (const char *)sqlite3_column_text(q, 5));
    m->total_messages = sqlite3_column_int64(q, 6);
    m->total_bytes = sqlite3_column_int64(q, 7);
    m->done_messages = sqlite3_column_int64(q, 8);
    m->done_bytes = sqlite3_column_int64(q, 9);
    m->started_ns = sqlite3_column_int64(q, 10);
    m->updated_ns = sqlite3_column_int64(q, 11);
    m->finished_ns = sqlite3_column_int64(q, 12);
    m->lock_ns = sqlite3_column_int64(q, 13);
    m->retain_until = sqlite3_column_int64(q, 14);
    sq_column_copy(m->error, sizeof m->error, q, 15);
    sq_column_copy(m->newname, sizeof m->newname, q, 16);
    m->lock_start_ns = sqlite3_column_int64(q, 17);
}

#define INFO_COLS                                                                                  \
    "id, mailbox, source, target, state, step, total_messages, total_bytes, done_messages,"        \
    " done_bytes, started_ns, updated_ns, finished_ns, lock_ns, retain_until, error, newname,"     \
    " coalesce(l.at_ns, 0)"
/* The lock's start is a move_step row (no schema change for old journals). */
#define INFO_FROM                                                                                  \
    " FROM move LEFT JOIN (SELECT move AS lm, max(at_ns) AS at_ns FROM move_step"                  \
    " WHERE step = ?1 GROUP BY move) l ON l.lm = move.id"

int ms_journal_list(ms_journal *j, ms_move_info **out, size_t *n)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(ms_move_info));
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc =
        sqlite3_prepare_v2(j->db, "SELECT " INFO_COLS INFO_FROM " ORDER BY id DESC", -1, &q, NULL);
    if (rc == SQLITE_OK)
        sqlite3_bind_text(q, 1, STEP(LOCKED), -1, SQLITE_STATIC);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            ms_move_info m;
            row_info(q, &m);
            g_array_append_val(a, m);
        }
    }
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    if (rc != SQLITE_DONE) {
        g_array_free(a, TRUE);
        return -EIO;
    }
    *n = a->len;
    *out = (ms_move_info *)(void *)g_array_free(a, FALSE);
    return 0;
}

int ms_journal_get(ms_journal *j, int64_t id, ms_move_info *out)
{
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc =
        sqlite3_prepare_v2(j->db, "SELECT " INFO_COLS INFO_FROM " WHERE id = ?2", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, STEP(LOCKED), -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, id);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
            row_info(q, out);
    }
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
}

bool jn_owner_alive(ms_journal *j, int64_t id)
{
    int64_t pid = 0;
    char start[64] = "";
    ms_move_state state;
    int rc = owner_row(j, id, &pid, start, sizeof start, &state);
    if (rc == -ENOENT)
        return false; /* no such move: nothing to protect */
    if (rc)
        return true; /* cannot tell: recovery asks again later */
    return owner_of(pid, start) != OWNER_DEAD;
}

int jn_orphans(ms_journal *j, GArray *ids)
{
    GArray *all = g_array_new(FALSE, FALSE, sizeof(int64_t));
    g_mutex_lock(&j->lock);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(j->db, "SELECT id FROM move WHERE state IN (?, ?) ORDER BY id", -1,
                                &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, STATE(RUNNING), -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, STATE(COMMITTED), -1, SQLITE_STATIC);
    }
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            int64_t id = sqlite3_column_int64(q, 0);
            g_array_append_val(all, id);
        }
    }
    sqlite3_finalize(q);
    g_mutex_unlock(&j->lock);
    for (guint i = 0; i < all->len; i++) {
        int64_t id = g_array_index(all, int64_t, i);
        if (!jn_owner_alive(j, id))
            g_array_append_val(ids, id);
    }
    g_array_free(all, TRUE);
    return rc == SQLITE_DONE ? 0 : -EIO;
}
