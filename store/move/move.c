/*
 * move.c — the move engine (DESIGN section 4).
 *
 *   preflight  nothing changes yet; the errno says why not
 *   recorded   journal row (durable), source mailbox locked
 *   copying    folders and messages into a hidden "~mailfs~move~<id>~<name>"
 *              mailbox of the target, progress in the journal
 *   copied     the target store is synced
 *   verified   same folders, counts, names, sizes, flags and SHA-256
 *   committed  the commit point: one durable journal write
 *   finished   target shown under its name, source hidden as
 *              "~mailfs~retained~<id>~<name>" until retain_until, lock dropped
 *
 * Every step after "recorded" is idempotent, and recovery needs nothing
 * but the journal row and the deterministic hidden names: before the
 * commit point it drops the hidden copy and unlocks the source (the
 * source was never written), after it it finishes.  The engine uses only
 * the public store API, so it moves between any two backends.
 */
#include "engine.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

/*
 * Test-only: with $MAILFS_STALL naming this point, the mover waits there
 * while the file $MAILFS_STALL_FILE exists, so a test can act in the
 * middle of a move (write into the locked mailbox, read from it) and then
 * let it go on by removing the file.  Compiled only with the fault
 * points, its one caller.
 */
#ifdef MS_FAULT_INJECTION
static void stall(const char *point)
{
    const char *want = getenv("MAILFS_STALL"), *flag = getenv("MAILFS_STALL_FILE");
    if (!want || !flag)
        return;
    /* "a,b": several points, each held by its own file FLAG.a, FLAG.b */
    g_autofree char *path = NULL;
    if (strchr(want, ',')) {
        g_auto(GStrv) points = g_strsplit(want, ",", -1);
        if (!g_strv_contains((const char *const *)points, point))
            return;
        path = g_strdup_printf("%s.%s", flag, point);
    } else if (!strcmp(want, point)) {
        path = g_strdup(flag);
    } else {
        return;
    }
    /* Said only when it stalls: a test waits for the line. */
    if (access(path, F_OK) != 0)
        return;
    ms_log(LOG_INFO, "stalled at %s while %s exists", point, path);
    while (access(path, F_OK) == 0)
        g_usleep(10000);
}
#endif

void ms_fault(const char *point)
{
#ifdef MS_FAULT_INJECTION
    stall(point);
    /* Test-only: the environment is read at every passage on purpose, so
     * tests need no restart between points.  Counts are per process. */
    static GHashTable *seen;
    static GMutex lock; /* guards seen */
    const char *want = getenv("MAILFS_FAULT");
    if (!want || !*want)
        return;
    size_t n = strlen(point);
    if (strncmp(want, point, n) || (want[n] && want[n] != ':'))
        return;
    long nth = want[n] == ':' ? strtol(want + n + 1, NULL, 10) : 1;
    g_mutex_lock(&lock);
    if (!seen)
        seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    long count = GPOINTER_TO_INT(g_hash_table_lookup(seen, point)) + 1;
    g_hash_table_insert(seen, g_strdup(point), GINT_TO_POINTER(count));
    g_mutex_unlock(&lock);
    if (count == nth) {
        ms_log(LOG_WARNING, "fault injection: killed at %s", want);
        kill(getpid(), SIGKILL);
    }
#else
    (void)point;
#endif
}

/* ------------------------------------------------------------- copying */

void mv_child_clear(gpointer p) { g_free(((child *)p)->name); }

static int collect(void *ctx, const char *name, const ms_attr *a, uint64_t cookie)
{
    GArray *page = ctx;
    child c = {g_strdup(name), *a, cookie};
    g_array_append_val(page, c);
    return page->len >= PAGE;
}

/* The next page of children of parent after *cookie; empty at the end. */
int mv_next_page(ms_store *st, ms_node parent, uint64_t *cookie, GArray *page)
{
    g_array_set_size(page, 0);
    int rc = ms_list(st, parent, *cookie, collect, page);
    if (!rc && page->len)
        *cookie = g_array_index(page, child, page->len - 1).cookie;
    return rc;
}

static int copy_xattr(ms_store *src, ms_node from, ms_store *dst, ms_node to, const char *name)
{
    char *v = NULL;
    size_t len = 0;
    int rc = ms_xattr_get(src, from, name, &v, &len);
    if (rc == -ENODATA)
        return 0;
    if (!rc)
        rc = ms_xattr_set(dst, to, name, v, len, MS_XATTR_VERBATIM);
    g_free(v);
    return rc;
}

int mv_set_times_and_owner(ms_store *st, ms_node n, const ms_attr *like)
{
    ms_setattr_req r = {MS_SET_MODE | MS_SET_UID | MS_SET_GID | MS_SET_MTIME, like->mode, like->uid,
                        like->gid, like->mtime_ns};
    return ms_setattr(st, n, &r, NULL);
}

bool mv_cancelled(mover *mv)
{
    return mv->opts && mv->opts->cancelled && mv->opts->cancelled(mv->opts->ctx);
}

/*
 * A journal write of the move failed (SQLite's words are logged): the
 * move fails with EIO, whatever the errno (a full journal disk is not the
 * target's ENOSPC), and its error says it was the journal.
 */
int mv_journal_failed(mover *mv, int rc)
{
    if (!rc)
        return 0;
    if (!mv->error)
        mv->error = g_strdup_printf("the move journal cannot be written: %s", g_strerror(-rc));
    mv->journal_error = true;
    return -EIO;
}

/*
 * Progress into the journal, at most every 250 ms unless forced.  A
 * journal that takes no progress row will not take the commit point
 * either: the error ends the copy now rather than after it.
 */
int mv_report(mover *mv, bool force)
{
    int64_t now = ms_now_ns();
    if (!force && now - mv->last_report_ns <= 250 * 1000000LL)
        return 0;
    mv->last_report_ns = now;
    return mv_journal_failed(mv, jn_progress(mv->j, mv->id, mv->messages, mv->bytes));
}

/* Opens the target batch that links join, unless it is open. */
int mv_open_batch(mover *mv)
{
    if (mv->in_batch)
        return 0;
    int rc = ms_batch_begin(mv->dst);
    if (!rc) {
        mv->in_batch = true;
        mv->batch_messages = mv->batch_bytes = 0;
    }
    return rc;
}

/*
 * Ends the open target batch (if any), committing it if commit; what it
 * held counts as copied once committed.  Returns the batch's outcome.
 */
int mv_close_batch(mover *mv, bool commit)
{
    if (!mv->in_batch)
        return 0;
    mv->in_batch = false;
    int rc = ms_batch_end(mv->dst, commit);
    if (!rc && commit) {
        mv->messages += mv->batch_messages;
        mv->bytes += mv->batch_bytes;
    }
    return rc;
}

/*
 * Makes message m in dfolder share the source's bytes (ms_message_link)
 * instead of copying them: 1 when linked, 0 when the stores cannot share
 * bytes (the caller copies), or an errno.  What is prepared goes in
 * first, so messages go into the target in the source's order and with
 * increasing UIDs; the link joins a target batch like the copies.
 */
static int link_message(mover *mv, const child *m, ms_node dfolder, GPtrArray *ready)
{
    if (mv->no_link)
        return 0;
    int rc = ready->len ? mv_commit_prepared(mv, ready) : 0;
    if (!rc)
        rc = mv_open_batch(mv);
    if (!rc)
        rc = ms_message_link(mv->dst, dfolder, m->name, m->attr.imap_uid, mv->src, m->attr.node.id,
                             NULL);
    if (rc == -EXDEV || rc == -ENOENT) {
        /* Copies read the source: no target batch stays open meanwhile.
         * ENOENT: the file was renamed under us (a flag set by the mail
         * server): this one is copied, the next ones linked again. */
        if (rc == -EXDEV)
            mv->no_link = true;
        return mv_close_batch(mv, true);
    }
    if (rc)
        return rc;
    mv->batch_messages++;
    mv->batch_bytes += m->attr.size;
    if (mv->batch_messages >= BATCH_MESSAGES || mv->batch_bytes >= BATCH_BYTES)
        rc = mv_close_batch(mv, true);
    return rc ? rc : 1;
}

/*
 * Reads one message of the source into a writer for the target: bytes,
 * name, UID, date, mode, owner, flags.  Nothing of the target is locked
 * yet (the bytes wait in the writer's spool), so the source is read and
 * hashed while other writers of the target, such as a second move into
 * it, go on.  Returns 1 when the message needs no writer: a resumed
 * import already has it, or it was linked (link_message).
 */
int mv_prepare_message(mover *mv, const child *m, ms_node dfolder, GPtrArray *ready,
                       ms_writer **out)
{
    ms_reader *r = NULL;
    ms_writer *w = NULL;
    ms_message_meta meta = {0};
    ms_attr there;
    /* Commits are atomic, so a message that is there is whole; the
     * verification after the copy compares it all the same. */
    if (mv->resume && ms_lookup(mv->dst, dfolder, m->name, &there) == 0) {
        mv->messages++;
        mv->bytes += there.size;
        return 1;
    }
    int rc = link_message(mv, m, dfolder, ready);
    if (rc)
        return rc;
    rc = ms_reader_open(mv->src, m->attr.node.id, &r);
    if (!rc)
        rc = ms_message_get_meta(mv->src, m->attr.node.id, false, &meta); /* its flags */
    if (!rc)
        rc = ms_writer_import(mv->dst, dfolder, m->name, m->attr.imap_uid, &w);
    enum { BUF = 128 * 1024 };
    g_autofree char *buf = g_malloc(BUF);
    for (int64_t off = 0; !rc && off < ms_reader_size(r);) {
        ssize_t n = ms_reader_pread(r, buf, BUF, off);
        if (n <= 0) {
            rc = n < 0 ? (int)n : -EIO;
            break;
        }
        ssize_t k = ms_writer_pwrite(w, buf, (size_t)n, off);
        if (k < 0)
            rc = (int)k;
        off += n;
    }
    if (!rc && meta.flags)
        rc = ms_writer_set_flags(w, meta.flags, strlen(meta.flags));
    if (!rc) {
        ms_setattr_req a = {MS_SET_MODE | MS_SET_UID | MS_SET_GID | MS_SET_MTIME, m->attr.mode,
                            m->attr.uid, m->attr.gid, m->attr.mtime_ns};
        ms_writer_setattr(w, &a);
        *out = w;
    } else {
        ms_writer_close(w);
    }
    ms_reader_close(r);
    g_free(meta.flags);
    return rc;
}

/*
 * Commits the prepared writers in one target transaction (the open batch
 * of links, if any, or a new one), then frees them.  No batch is open
 * when it returns.
 */
int mv_commit_prepared(mover *mv, GPtrArray *ready)
{
    if (!ready->len)
        return mv_close_batch(mv, true);
    int64_t adding = 0;
    for (guint i = 0; i < ready->len; i++)
        adding += ms_writer_size(ready->pdata[i]);
    int rc = mv_check_space(mv, adding);
    if (rc) {
        g_ptr_array_set_size(ready, 0);
        return rc;
    }
    rc = mv_open_batch(mv);
    for (guint i = 0; !rc && i < ready->len; i++) {
        ms_writer *w = ready->pdata[i];
        mv->batch_bytes += ms_writer_size(w);
        rc = ms_writer_commit(w, false, NULL);
        mv->batch_messages++;
    }
    int e = mv_close_batch(mv, rc == 0);
    if (!rc)
        rc = e;
    g_ptr_array_set_size(ready, 0);
    return rc;
}

/*
 * Gives the copy of a folder the source's UIDVALIDITY and UIDNEXT, once
 * every message is in (each kept its UID), so that an IMAP client's cache
 * of the folder stays valid in the target.  A source without UIDs (pst)
 * has none to give; a target that cannot keep them fails the move.
 */
static int copy_folder_uids(mover *mv, ms_node from, ms_node to)
{
    ms_folder_uids u;
    int rc = ms_folder_uids_get(mv->src, from, &u);
    if (rc == -ENOTSUP || rc == -ENODATA)
        return 0; /* none to give: the copy's own stand */
    return rc ? rc : ms_folder_uids_set(mv->dst, to, &u);
}

/* Copies the children of sparent (mailbox or folder) into dparent. */
static int copy_children(mover *mv, ms_node sparent, ms_node dparent)
{
    GArray *page = g_array_new(FALSE, FALSE, sizeof(child));
    g_array_set_clear_func(page, mv_child_clear);
    /* Read, not yet committed: one target transaction per BATCH_MESSAGES
     * or BATCH_BYTES, whichever comes first. */
    GPtrArray *ready = g_ptr_array_new_with_free_func((GDestroyNotify)ms_writer_close);
    int64_t ready_bytes = 0;
    uint64_t cookie = 0;
    int rc = 0;
    /* rc is tested before each page: an error inside one must end the
     * copy, not be overwritten by the next listing. */
    while (!rc && !(rc = mv_next_page(mv->src, sparent, &cookie, page)) && page->len) {
        for (guint i = 0; !rc && i < page->len; i++) {
            child *c = &g_array_index(page, child, i);
            if (mv_cancelled(mv)) {
                rc = -EINTR;
                break;
            }
            if (c->attr.node.kind == MS_MESSAGE) {
                ms_writer *w = NULL;
                rc = mv_prepare_message(mv, c, dparent, ready, &w);
                if (rc == 1) {
                    rc = 0;
                } else if (!rc) {
                    g_ptr_array_add(ready, w);
                    ready_bytes += ms_writer_size(w);
                    if (ready->len >= BATCH_MESSAGES || ready_bytes >= BATCH_BYTES) {
                        rc = mv_commit_prepared(mv, ready);
                        ready_bytes = 0;
                    }
                }
                if (rc && rc != -EINTR && !mv->error)
                    mv->error = g_strdup_printf("copying message %s: %s", c->name, g_strerror(-rc));
                continue;
            }
            /* What is read so far goes in first: the subtree may be big. */
            rc = mv_commit_prepared(mv, ready);
            ready_bytes = 0;
            ms_attr f;
            if (!rc)
                rc =
                    ms_mkdir(mv->dst, dparent, c->name, c->attr.mode, c->attr.uid, c->attr.gid, &f);
            if (rc == -EEXIST && mv->resume)
                rc = ms_lookup(mv->dst, dparent, c->name, &f);
            if (!rc)
                rc = copy_xattr(mv->src, c->attr.node, mv->dst, f.node, "user.mail.special-use");
            if (!rc)
                rc = copy_children(mv, c->attr.node, f.node);
            if (!rc && c->attr.noselect) {
                /* A mere parent stays one where the target has such
                 * folders: no UIDs, no attributes of its own. */
                rc = ms_folder_unselect(mv->dst, f.node);
                if (rc == -ENOTSUP)
                    rc = 0;
                continue;
            }
            if (!rc)
                rc = copy_folder_uids(mv, c->attr.node, f.node);
            /* After the children: nothing below touches it any more. */
            if (!rc)
                rc = mv_set_times_and_owner(mv->dst, f.node, &c->attr);
            if (rc && rc != -EINTR && !mv->error)
                mv->error = g_strdup_printf("copying folder %s: %s", c->name, g_strerror(-rc));
        }
        if (!rc)
            rc = mv_commit_prepared(mv, ready);
        ready_bytes = 0;
        if (!rc)
            rc = mv_report(mv, false);
        if (!rc)
            ms_fault("copy");
    }
    /* A failed link leaves its batch open: what it holds goes with it. */
    mv_close_batch(mv, false);
    g_ptr_array_free(ready, TRUE);
    g_array_free(page, TRUE);
    return rc;
}

/* ---------------------------------------------------------- verifying */

/* Counts the children of n in st: folders and messages. */
static int count_children(ms_store *st, ms_node n, int64_t *folders, int64_t *messages)
{
    GArray *page = g_array_new(FALSE, FALSE, sizeof(child));
    g_array_set_clear_func(page, mv_child_clear);
    uint64_t cookie = 0;
    int rc;
    *folders = *messages = 0;
    while (!(rc = mv_next_page(st, n, &cookie, page)) && page->len)
        for (guint i = 0; i < page->len; i++)
            (g_array_index(page, child, i).attr.node.kind == MS_MESSAGE ? (*messages)++
                                                                        : (*folders)++);
    g_array_free(page, TRUE);
    return rc;
}

bool mv_same_flags(const char *a, const char *b)
{
    return !g_strcmp0(a && *a ? a : NULL, b && *b ? b : NULL);
}

/*
 * Checks one source message against its copy, its UID too when the
 * source keeps UIDs (uids); sets mv->error if not.
 */
int mv_verify_message(mover *mv, const child *c, ms_node dparent, bool uids)
{
    ms_attr d;
    ms_message_meta sm = {0}, dm = {0};
    int rc = ms_lookup(mv->dst, dparent, c->name, &d);
    if (!rc)
        rc = ms_message_get_meta(mv->src, c->attr.node.id, false, &sm);
    if (!rc)
        rc = ms_message_get_meta(mv->dst, d.node.id, false, &dm);
    /* One file for both (a hard link): the same bytes, which is more than
     * equal hashes say.  Otherwise the bytes are hashed on both sides. */
    bool same_file = !rc && sm.ino && sm.dev == dm.dev && sm.ino == dm.ino;
    static const uint8_t none[32];
    bool kept = memcmp(sm.sha256, none, 32) && memcmp(dm.sha256, none, 32);
    if (!rc && !same_file && !kept) {
        g_clear_pointer(&sm.flags, g_free);
        g_clear_pointer(&dm.flags, g_free);
        rc = ms_message_get_meta(mv->src, c->attr.node.id, true, &sm);
        if (!rc)
            rc = ms_message_get_meta(mv->dst, d.node.id, true, &dm);
    }
    if (rc)
        mv->error = g_strdup_printf("verify: message %s missing in the copy", c->name);
    else if (d.size != c->attr.size || memcmp(sm.sha256, dm.sha256, 32))
        mv->error = g_strdup_printf("verify: message %s differs (SHA-256)", c->name);
    else if (!mv_same_flags(sm.flags, dm.flags) || d.mtime_ns != c->attr.mtime_ns)
        mv->error = g_strdup_printf("verify: message %s lost its flags or date", c->name);
    else if (uids && d.imap_uid != c->attr.imap_uid)
        mv->error = g_strdup_printf("verify: message %s has UID %lld, its copy %lld", c->name,
                                    (long long)c->attr.imap_uid, (long long)d.imap_uid);
    g_free(sm.flags);
    g_free(dm.flags);
    return mv->error ? -EIO : 0;
}

/*
 * Checks that the copy of folder c has its UIDVALIDITY and UIDNEXT; *uids
 * says whether the source keeps UIDs (not a pst file), so its messages'
 * UIDs are compared too.  Sets mv->error if not.
 */
static int verify_folder_uids(mover *mv, const child *c, ms_node dfolder, bool *uids)
{
    ms_folder_uids s, d;
    *uids = true;
    if (c->attr.noselect)
        return 0; /* a mere parent: no UIDs of its own */
    int rc = ms_folder_uids_get(mv->src, c->attr.node, &s);
    *uids = rc != -ENOTSUP;
    if (rc == -ENOTSUP || rc == -ENODATA)
        return 0; /* no UID state in the source (its messages have UIDs) */
    if (!rc)
        rc = ms_folder_uids_get(mv->dst, dfolder, &d);
    if (rc)
        mv->error = g_strdup_printf("verify: folder %s: cannot read its UIDs: %s", c->name,
                                    g_strerror(-rc));
    else if (s.uidvalidity != d.uidvalidity || s.uidnext != d.uidnext)
        mv->error = g_strdup_printf("verify: folder %s has UIDVALIDITY %lu and UIDNEXT %lld, its "
                                    "copy %lu and %lld",
                                    c->name, (unsigned long)s.uidvalidity, (long long)s.uidnext,
                                    (unsigned long)d.uidvalidity, (long long)d.uidnext);
    return mv->error ? -EIO : 0;
}

/* Checks the children of sparent against dparent's; uids: as verify_message. */
static int verify_children(mover *mv, ms_node sparent, ms_node dparent, bool uids)
{
    int64_t sf, sm, df, dm;
    int rc = count_children(mv->src, sparent, &sf, &sm);
    if (!rc)
        rc = count_children(mv->dst, dparent, &df, &dm);
    if (!rc && (sf != df || sm != dm)) {
        mv->error = g_strdup_printf("verify: %lld folders and %lld messages, copy has %lld and "
                                    "%lld",
                                    (long long)sf, (long long)sm, (long long)df, (long long)dm);
        return -EIO;
    }
    GArray *page = g_array_new(FALSE, FALSE, sizeof(child));
    g_array_set_clear_func(page, mv_child_clear);
    uint64_t cookie = 0;
    while (!rc && !(rc = mv_next_page(mv->src, sparent, &cookie, page)) && page->len) {
        for (guint i = 0; !rc && i < page->len; i++) {
            child *c = &g_array_index(page, child, i);
            if (c->attr.node.kind == MS_MESSAGE) {
                rc = mv_verify_message(mv, c, dparent, uids);
                continue;
            }
            ms_attr d;
            bool fuids = false;
            rc = ms_lookup(mv->dst, dparent, c->name, &d);
            if (rc || d.node.kind != MS_FOLDER) {
                mv->error = g_strdup_printf("verify: folder %s missing in the copy", c->name);
                rc = -EIO;
            } else {
                rc = verify_folder_uids(mv, c, d.node, &fuids);
            }
            if (!rc)
                rc = verify_children(mv, c->attr.node, d.node, fuids);
        }
        if (mv_cancelled(mv))
            rc = -EINTR;
    }
    g_array_free(page, TRUE);
    return rc;
}

/* ------------------------------------------------ finishing and undoing */

/*
 * A move this process could not settle goes to recovery, which may then
 * run even while this process (a mounted daemon) lives.  If even that
 * write fails, the move waits until this process is gone: said once.
 */
void mv_hand_to_recovery(ms_journal *j, int64_t id)
{
    if (jn_disown(j, id))
        ms_log(LOG_ERR, "move %lld: left for the recovery after this process ends", (long long)id);
}

/*
 * rc of a find (ms_mailbox_find, ms_hidden_find): *found says whether
 * there is one; "none" (-ENOENT) is no error.  Any other error is
 * returned: a store that cannot tell must not be taken for one without
 * the mailbox, or a move is recorded settled while its source stays
 * locked or its copy hidden.
 */
static int found_or_none(int rc, bool *found)
{
    *found = rc == 0;
    return rc == -ENOENT ? 0 : rc;
}

/*
 * Rolls back move id: drops the hidden copy, unlocks the source.  The
 * source was never written, so it is exactly as before.  Idempotent.
 */
int mv_roll_back(ms_journal *j, ms_store *src, ms_store *dst, ms_directory *dir,
                 const ms_move_info *mi, const char *why)
{
    int64_t tid, sid;
    int rc = 0;
    bool found = false;
    /* Step 4 reached: put back the values the entry had before. */
    g_autofree char *dn = NULL, *saved = NULL, *target = NULL, *err = NULL;
    if (jn_dir_get(j, mi->id, &dn, &saved, &target) == 0) {
        rc = dir ? ms_directory_write(dir, dn, saved, &err) : -EIO;
        g_autofree char *now = NULL, *rerr = NULL;
        /* Refused (say by an ACL) but the entry holds the saved values,
         * because the refused write never changed it: nothing to undo. */
        if (rc && dir && ms_directory_read(dir, dn, saved, &now, &rerr) == 0 && !strcmp(now, saved))
            rc = 0;
        if (rc) {
            ms_log(LOG_ERR, "move %lld: cannot restore %s to %s (%s); recovery will retry",
                   (long long)mi->id, dn, saved, err ? err : "no directory configured");
            mv_hand_to_recovery(j, mi->id);
            return rc;
        }
        ms_log(LOG_INFO, "move %lld: directory restored: %s %s", (long long)mi->id, dn, saved);
    }
    /* The hold goes once the entry points where the mailbox stays.  A
     * directory that is down keeps the user held off, which is safe: the
     * rest of the rollback goes on, and recovery lifts the recorded hold
     * (ms_recover, the mount's housekeeping) once the server is back. */
    (void)mv_release_user(j, dir, mi->id);
    /* Unlock first: the target may be the full disk that made us fail. */
    if (src)
        rc = found_or_none(ms_mailbox_find(src, mi->mailbox, MS_MB_VISIBLE, &sid), &found);
    if (found) {
        ms_mailbox_info info;
        rc = ms_mailbox_get_info(src, sid, &info);
        if (!rc && info.lock_move == mi->id)
            rc = ms_mailbox_set(src, sid, &(ms_mailbox_change){NULL, -1, 0, -1, NULL, 0});
    }
    if (!rc && !dst) {
        ms_log(LOG_ERR,
               "move %lld: store %s is not available: its hidden copy stays until "
               "'mailfsctl recover' can open it",
               (long long)mi->id, mi->target);
        rc = -ENOENT;
    }
    if (!rc)
        rc = found_or_none(ms_hidden_find(dst, MS_MB_INCOMING, mi->id, mi->newname, &tid), &found);
    if (!rc && found)
        rc = ms_mailbox_drop(dst, tid);
    if (rc) {
        /* Typically a full disk.  The source is unlocked and untouched;
         * the hidden copy goes at the next recovery, whoever runs it. */
        ms_log(LOG_ERR, "move %lld: roll back incomplete: %s; 'mailfsctl recover' finishes it",
               (long long)mi->id, g_strerror(-rc));
        mv_hand_to_recovery(j, mi->id);
        return rc;
    }
    /* Unrecorded, the stores are settled all the same and recovery's
     * next pass (idempotent) finds nothing left to do but this record. */
    rc = jn_set_state(j, mi->id, MS_MOVE_ROLLED_BACK, why);
    if (rc)
        mv_hand_to_recovery(j, mi->id);
    else
        ms_log(LOG_INFO, "move %lld: rolled back (%s)", (long long)mi->id, why);
    return rc;
}

/*
 * Rolls move id forward from its commit point: target shown, source
 * retained and unlocked.  Idempotent: each half checks where it stands.
 */
int mv_roll_forward(ms_journal *j, ms_store *src, ms_store *dst, ms_directory *dir,
                    const ms_move_info *mi, int retain_days, int64_t locked_at)
{
    g_autofree char *ret = ms_hidden_name(MS_MB_RETAINED, mi->id, mi->mailbox);
    int64_t tid, sid;
    int rc = 0;
    bool found = false;
    /* Re-applied (idempotent): a crash may have come before the write. */
    g_autofree char *dn = NULL, *saved = NULL, *target = NULL, *err = NULL;
    if (jn_dir_get(j, mi->id, &dn, &saved, &target) == 0 &&
        (rc = dir ? ms_directory_write(dir, dn, target, &err) : -EIO)) {
        ms_log(LOG_ERR, "move %lld: cannot point %s at the target (%s: %s); recovery will retry",
               (long long)mi->id, dn, target, err ? err : "no directory configured");
        mv_hand_to_recovery(j, mi->id);
        return rc;
    }
    rc = found_or_none(ms_hidden_find(dst, MS_MB_INCOMING, mi->id, mi->newname, &tid), &found);
    if (!rc && found)
        rc = ms_mailbox_set(dst, tid,
                            &(ms_mailbox_change){mi->newname, MS_MB_VISIBLE, 0, -1, NULL, 0});
    int64_t until = (int64_t)time(NULL) + (int64_t)retain_days * 86400;
    /* An import's source (a file, maybe gone by now) is never locked. */
    found = false;
    if (!rc && src)
        rc = found_or_none(ms_mailbox_find(src, mi->mailbox, MS_MB_VISIBLE, &sid), &found);
    if (!rc && found) {
        ms_mailbox_info info;
        rc = ms_mailbox_get_info(src, sid, &info);
        if (!rc && info.lock_move == mi->id)
            rc = ms_mailbox_set(
                src, sid,
                &(ms_mailbox_change){ret, MS_MB_RETAINED, 0, until, ms_journal_id(j), mi->id});
    }
    if (!rc)
        rc = ms_store_sync(dst);
    if (!rc && src)
        rc = ms_store_sync(src);
    /* As in mv_roll_back: a hold that cannot be lifted now is lifted by
     * recovery; the move itself is finished. */
    if (!rc)
        (void)mv_release_user(j, dir, mi->id);
    if (rc) {
        ms_log(LOG_ERR, "move %lld: finishing failed: %s (recovery will retry)", (long long)mi->id,
               g_strerror(-rc));
        mv_hand_to_recovery(j, mi->id);
        return rc;
    }
    ms_fault("finished");
    int64_t lock_ns = locked_at ? ms_now_ns() - locked_at : 0;
    /* Unrecorded, the move stays "committed" and recovery redoes this
     * (idempotent): nothing is lost, but it is not finished yet. */
    rc = jn_set_times(j, mi->id, lock_ns, until);
    if (!rc)
        rc = jn_step(j, mi->id, MS_STEP_FINISHED, false);
    if (!rc)
        rc = jn_set_state(j, mi->id, MS_MOVE_DONE, NULL);
    if (rc) {
        ms_log(LOG_ERR,
               "move %lld: finished in the stores but not in the journal: %s (recovery "
               "will record it)",
               (long long)mi->id, g_strerror(-rc));
        mv_hand_to_recovery(j, mi->id);
        return rc;
    }
    ms_log(LOG_INFO, "move %lld: %s finished in %s, source retained until %lld", (long long)mi->id,
           mi->mailbox, mi->target, (long long)until);
    return 0;
}

/* ------------------------------------------------------------ the move */

/*
 * Changes behind the source's lock (DESIGN 9): a mail server delivering
 * into a Maildir, or an IMAP client setting flags there, writes past the
 * lock that holds off the mount.  Until online moves carry such changes
 * over, a move that sees one rolls back with EAGAIN: the source is
 * intact, and a retry moves what it holds then.
 */
#define CHANGED_BEHIND                                                                             \
    "the source changed behind mailfs during the move (a delivery by the mail server, or an "      \
    "IMAP client); rolled back, the source is intact and the move can be retried"

#define TAKEN_OVER                                                                                 \
    "the move was taken from this process while it ran (recovery found it dead and rolled it "     \
    "back): not committed"

/* Takes the source mailbox's stamp, after it was locked; a backend with
 * none (-ENOTSUP) leaves nothing to compare. */
int mv_take_stamp(mover *mv, int64_t mailbox)
{
    int rc = ms_mailbox_stamp(mv->src, mailbox, mv->stamp);
    mv->stamped = rc == 0;
    if (rc == -ENOTSUP)
        return 0;
    if (rc && !mv->error)
        mv->error = g_strdup_printf("cannot take the source mailbox's state: %s", g_strerror(-rc));
    return rc;
}

/* 1 when the source mailbox's stamp is not the one take_stamp took, 0
 * when it is (or there is none), or an errno. */
int mv_source_changed(mover *mv, int64_t mailbox)
{
    if (!mv->stamped)
        return 0;
    uint8_t now[MS_STAMP_LEN];
    int rc = ms_mailbox_stamp(mv->src, mailbox, now);
    if (rc) {
        if (!mv->error)
            mv->error =
                g_strdup_printf("cannot read the source mailbox's state: %s", g_strerror(-rc));
        return rc;
    }
    int changed = memcmp(now, mv->stamp, MS_STAMP_LEN) != 0;
    if (mv->restamp)
        memcpy(mv->stamp, now, MS_STAMP_LEN);
    return changed;
}

/* The move fails with EAGAIN, saying why (and what it saw of it). */
int mv_changed_behind(mover *mv)
{
    char *seen = mv->error;
    mv->error =
        seen ? g_strdup_printf(CHANGED_BEHIND " (seen as: %s)", seen) : g_strdup(CHANGED_BEHIND);
    g_free(seen);
    return -EAGAIN;
}

/*
 * A copy or verification that failed (rc) because the source changed
 * behind it (a message vanished, the counts differ) fails as that
 * change, EAGAIN, which a retry cures; other failures keep their errno.
 */
static int explain_failure(mover *mv, int64_t mailbox, int rc)
{
    if (!rc || rc == -EINTR || rc == -ENOSPC || mv->journal_error)
        return rc;
    return mv_source_changed(mv, mailbox) == 1 ? mv_changed_behind(mv) : rc;
}

/* Right before the commit point: the source is still what was copied. */
int mv_check_unchanged(mover *mv, int64_t mailbox)
{
    ms_fault("before-commit");
    int rc = mv_source_changed(mv, mailbox);
    return rc == 1 ? mv_changed_behind(mv) : rc;
}

/*
 * Step 4: record the entry's current values of the target's attributes
 * (durably, so any later rollback can restore them), then set the
 * target's values.  A directory that refuses fails the move with EIO.
 */
int mv_directory_step(ms_journal *j, mover *mv, ms_directory *dir, const char *mailbox)
{
    const char *target = ms_store_directory(mv->dst);
    if (!dir || !target)
        return 0;
    int rc = mv_journal_failed(mv, jn_step(j, mv->id, MS_STEP_DIRECTORY, false));
    if (rc)
        return rc;
    g_autofree char *dn = NULL, *saved = NULL, *err = NULL;
    rc = ms_directory_entry(dir, mailbox, &dn, &err);
    if (!rc)
        rc = ms_directory_read(dir, dn, target, &saved, &err);
    if (!rc)
        rc = jn_dir_save(j, mv->id, dn, saved, target);
    if (!rc) {
        ms_fault("directory-saved");
        rc = ms_directory_write(dir, dn, target, &err);
    }
    if (rc && err) {
        mv->error = g_strdup_printf("directory: %s", err);
        return -EIO;
    }
    if (rc) /* the journal's record of step 4 failed */
        return mv_journal_failed(mv, rc);
    ms_log(LOG_INFO, "move %lld: directory: %s was %s, now %s", (long long)mv->id, dn, saved,
           target);
    ms_fault("directory");
    return 0;
}

/* The directory answers and knows the mailbox: else EIO, reason logged. */
int mv_preflight_directory(ms_directory *dir, ms_store *dst, const char *mailbox)
{
    if (!dir || !ms_store_directory(dst))
        return 0;
    g_autofree char *err = NULL, *dn = NULL;
    int rc = ms_directory_ping(dir, &err);
    if (!rc)
        rc = ms_directory_entry(dir, mailbox, &dn, &err);
    if (rc) {
        ms_log(LOG_ERR, "move %s refused: directory: %s", mailbox, err ? err : g_strerror(-rc));
        return -EIO;
    }
    return 0;
}

int mv_preflight(ms_store *src, ms_store *dst, const char *mailbox, const char *newname,
                 bool import, ms_attr *mb, int64_t *messages, int64_t *bytes, bool *estimated)
{
    bool guess = false;
    if (ms_hidden_reserved(newname))
        return -EINVAL; /* as ms_mkdir: the name of a hidden copy */
    int rc = ms_lookup(src, (ms_node){MS_ROOT, 0}, mailbox, mb);
    if (rc)
        return rc;
    ms_mailbox_info info;
    rc = ms_mailbox_get_info(src, mb->node.id, &info);
    if (rc)
        return rc;
    if (info.lock_move && !import)
        return -EBUSY;
    if (ms_store_readonly(dst) || (ms_store_readonly(src) && !import))
        return -EROFS;
    ms_attr other;
    rc = ms_lookup(dst, (ms_node){MS_ROOT, 0}, newname, &other);
    if (rc == 0)
        return -EEXIST;
    if (rc != -ENOENT)
        return rc;
    rc = import && estimated ? ms_mailbox_size_estimate(src, mb->node.id, messages, bytes, &guess)
                             : ms_mailbox_size(src, mb->node.id, messages, bytes);
    if (estimated)
        *estimated = guess;
    if (rc)
        return rc;
    struct statvfs sv;
    rc = ms_store_statvfs(dst, &sv);
    if (rc)
        return rc;
    uint64_t free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
    if (free_bytes < 2 * (uint64_t)*bytes + SPACE_MARGIN)
        return -ENOSPC;
    return 0;
}

int mv_check_space(mover *mv, int64_t adding)
{
    int64_t stored = mv->bytes + adding;
    if (!mv->space_promised || stored <= mv->space_promised)
        return 0;
    /* As the preflight: room for twice what is still to come, taken to
     * be as much again as is stored (the estimate was already wrong). */
    struct statvfs sv;
    int rc = ms_store_statvfs(mv->dst, &sv);
    if (rc)
        return rc;
    uint64_t free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
    if (free_bytes < 2 * (uint64_t)stored + SPACE_MARGIN) {
        if (!mv->error)
            mv->error = g_strdup_printf("the mailbox is larger than its estimate of %lld bytes "
                                        "(%lld so far), and the target has no room for twice "
                                        "as much again",
                                        (long long)mv->space_promised, (long long)stored);
        return -ENOSPC;
    }
    ms_log(LOG_INFO, "move %lld: %lld bytes, past the estimate of %lld; room checked again",
           (long long)mv->id, (long long)stored, (long long)mv->space_promised);
    mv->space_promised = 2 * stored;
    return 0;
}

int mv_commit_point(ms_journal *j, mover *mv, int64_t mailbox)
{
    /* A commit point written into a deleted journal would be lost with
     * it: a crash after it could then only be rolled back. */
    g_autofree char *jerr = NULL;
    if (ms_journal_verify(j, &jerr)) {
        mv->error = g_steal_pointer(&jerr);
        return -EIO;
    }
    int rc = mv_check_unchanged(mv, mailbox);
    if (rc)
        return rc;
    /* The commit point: durable, or the move does not pass it; and only
     * from "running" while the move is still this process's.  Recovery
     * may have judged us dead and rolled the move back: "committed"
     * written over that would send the directory to a copy it dropped. */
    rc = jn_transition(j, mv->id, MS_MOVE_RUNNING, MS_MOVE_COMMITTED, NULL);
    if (rc == -ESTALE) {
        if (!mv->error)
            mv->error = g_strdup(TAKEN_OVER);
        return rc;
    }
    return mv_journal_failed(mv, rc);
}

/*
 * The move was taken from this process while it ran: its row is no
 * longer "running" (or "prepared") and ours.  Recovery found the owner
 * dead and rolled it back, or another process adopted it.  What the row
 * says stands: nothing is committed, rolled forward or recorded.  Only
 * this process's own writes that came after a rollback are undone, and
 * only when the row says rolled back: a directory entry switched after
 * recovery had restored it (put back only while it still holds the
 * target's values), a lock or hidden copy made after recovery looked.
 * An unsettled row (recovery incomplete, or adopted) is left to its
 * owner or to recovery, which restores the entry from the journal.
 */
static int mv_taken(ms_journal *j, ms_store *src, ms_store *dst, ms_directory *dir,
                    const ms_move_info *mi)
{
    ms_move_info now;
    int rc = ms_journal_get(j, mi->id, &now);
    ms_log(LOG_ERR,
           "move %lld: taken from this process while it ran (the journal says %s): not "
           "committed; what recovery did stands",
           (long long)mi->id, rc ? "nothing readable" : ms_move_state_name(now.state));
    if (rc || now.state != MS_MOVE_ROLLED_BACK)
        return -ESTALE;
    g_autofree char *dn = NULL, *saved = NULL, *target = NULL, *cur = NULL, *err = NULL;
    if (dir && jn_dir_get(j, mi->id, &dn, &saved, &target) == 0 &&
        ms_directory_read(dir, dn, target, &cur, &err) == 0 && !strcmp(cur, target) &&
        strcmp(saved, target)) {
        if (ms_directory_write(dir, dn, saved, &err))
            ms_log(LOG_ERR,
                   "move %lld: %s still points at %s, where the mailbox is not: set it back to "
                   "%s (%s)",
                   (long long)mi->id, dn, target, saved, err ? err : "directory error");
        else
            ms_log(LOG_INFO, "move %lld: directory restored: %s %s", (long long)mi->id, dn, saved);
    }
    (void)mv_release_user(j, dir, mi->id);
    int64_t sid, tid;
    ms_mailbox_info info;
    if (src && ms_mailbox_find(src, mi->mailbox, MS_MB_VISIBLE, &sid) == 0 &&
        ms_mailbox_get_info(src, sid, &info) == 0 && info.lock_move == mi->id)
        (void)ms_mailbox_set(src, sid, &(ms_mailbox_change){NULL, -1, 0, -1, NULL, 0});
    if (dst && ms_hidden_find(dst, MS_MB_INCOMING, mi->id, mi->newname, &tid) == 0)
        (void)ms_mailbox_drop(dst, tid);
    return -ESTALE;
}

int mv_fail(ms_journal *j, mover *mv, ms_store *src, ms_store *dst, ms_directory *dir,
            const ms_move_info *mi, int rc)
{
    /* EIO's own words would send the admin to this very record. */
    const char *why = mv->error    ? mv->error
                      : rc == -EIO ? "an I/O error (see the log)"
                                   : ms_strerror(MS_OP_MOVE, rc);
    ms_log(LOG_ERR, "move %lld: failed: %s", (long long)mi->id, why);
    /* Kept even if rolling back fails; if it cannot be written, the
     * rollback's own record says the same.  Written only while the move
     * is still ours (running, or a prepared move being completed): else
     * it was taken from us, and another process settles it. */
    int t = jn_transition(j, mi->id, MS_MOVE_RUNNING, MS_MOVE_RUNNING, why);
    if (t == -ESTALE)
        t = jn_transition(j, mi->id, MS_MOVE_PREPARED, MS_MOVE_RUNNING, why);
    if (t == -ESTALE)
        rc = mv_taken(j, src, dst, dir, mi);
    else
        mv_roll_back(j, src, dst, dir, mi, why);
    g_clear_pointer(&mv->error, g_free);
    return rc;
}

int mv_record(ms_journal *j, int64_t adopt, ms_store *src, ms_store *dst, const char *mailbox,
              const char *newname, int64_t messages, int64_t bytes, int64_t *id_out,
              ms_move_info *mi)
{
    int64_t id = adopt;
    int rc = adopt ? jn_adopt(j, id)
                   : jn_create(j, mailbox, newname, ms_store_name(src), ms_store_name(dst),
                               messages, bytes, &id);
    if (rc == -ESTALE) /* another process took it up first */
        rc = -EBUSY;
    if (!rc && id_out)
        *id_out = id;
    return rc ? rc : ms_journal_get(j, id, mi);
}

/*
 * The move of DESIGN 4.  An import (source a read-only file) is the same
 * protocol without the source's lock and retention and without the
 * directory step; with resume it goes on with that interrupted import,
 * keeping what it had copied.
 */
static int run_move(ms_journal *j, ms_store *src, ms_store *dst, const char *mailbox,
                    const ms_move_opts *opts, bool import, int64_t resume, int64_t *id_out)
{
    if (!opts || src == dst)
        return -EINVAL;
    const char *newname = opts->newname ? opts->newname : mailbox;
    ms_attr mb;
    int64_t total_messages = 0, total_bytes = 0;
    g_autofree char *jerr = NULL;
    if (ms_journal_verify(j, &jerr)) {
        ms_log(LOG_ERR, "move %s refused: %s", mailbox, jerr);
        return -EIO;
    }
    bool estimated = false;
    int rc = mv_preflight(src, dst, mailbox, newname, import, &mb, &total_messages, &total_bytes,
                          &estimated);
    if (!rc && !import)
        rc = mv_preflight_directory(opts->dir, dst, mailbox);
    if (rc) {
        ms_log(LOG_INFO, "move %s from %s to %s refused: %s", mailbox, ms_store_name(src),
               ms_store_name(dst), ms_strerror(MS_OP_MOVE, rc));
        return rc;
    }
    ms_move_info mi;
    rc = mv_record(j, resume, src, dst, mailbox, newname, total_messages, total_bytes, id_out, &mi);
    if (rc)
        return rc;
    int64_t id = mi.id;
    ms_log(LOG_INFO, "move %lld: %s from %s to %s as %s: %s%lld messages, %lld bytes",
           (long long)id, mailbox, mi.source, mi.target, newname, estimated ? "estimated " : "",
           (long long)total_messages, (long long)total_bytes);

    if (resume)
        ms_log(LOG_INFO, "move %lld: resumed", (long long)id);
    /* Lock: from here writes into the mailbox get EBUSY; reads go on. */
    if (!import)
        rc = ms_mailbox_set(src, mb.node.id,
                            &(ms_mailbox_change){NULL, -1, id, -1, ms_journal_id(j), 0});
    if (rc) {
        /* Nothing was locked: recovery would find nothing but this row. */
        if (jn_set_state(j, id, MS_MOVE_ROLLED_BACK, ms_strerror(MS_OP_MOVE, rc)))
            mv_hand_to_recovery(j, id);
        return rc;
    }
    int64_t locked_at = ms_now_ns();
    mover mv = {.j = j,
                .src = src,
                .dst = dst,
                .id = id,
                .opts = opts,
                .resume = resume != 0,
                .space_promised = estimated ? total_bytes : 0};
    /* A lock the journal does not time is still a lock: recorded or not,
     * the move is rolled back below if this fails. */
    if (!import)
        rc = mv_journal_failed(&mv, jn_locked(j, id, locked_at));
    if (!rc)
        ms_fault("locked");
    if (!rc)
        rc = mv_take_stamp(&mv, mb.node.id);

    g_autofree char *in = ms_hidden_name(MS_MB_INCOMING, id, newname);
    int64_t tid = 0;
    if (!rc && (!resume || ms_hidden_find(dst, MS_MB_INCOMING, id, newname, &tid) != 0))
        rc = ms_mailbox_create(dst, in, MS_MB_INCOMING, &mb, &tid);
    /* Named after its move and journal, so recovery finds it without the journal. */
    if (!rc)
        rc = ms_mailbox_set(dst, tid, &(ms_mailbox_change){NULL, -1, -1, -1, ms_journal_id(j), id});
    if (!rc)
        rc = mv_journal_failed(&mv, jn_set_target_id(j, id, tid));
    if (!rc)
        rc = mv_journal_failed(&mv, jn_step(j, id, MS_STEP_COPYING, false));
    ms_node troot = {MS_MAILBOX, tid};
    if (!rc)
        rc = copy_xattr(src, mb.node, dst, troot, "user.mail.acl");
    if (!rc)
        rc = copy_children(&mv, mb.node, troot);
    if (!rc && estimated) /* the real totals, for the journal's readers */
        rc = mv_journal_failed(&mv, jn_set_totals(j, id, mv.messages, mv.bytes));
    if (!rc)
        rc = mv_report(&mv, true);
    if (!rc)
        rc = ms_store_sync(dst);
    if (!rc)
        rc = mv_journal_failed(&mv, jn_step(j, id, MS_STEP_COPIED, false));
    if (!rc) {
        ms_fault("copied");
        rc = verify_children(&mv, mb.node, troot, false);
    }
    rc = explain_failure(&mv, mb.node.id, rc);
    if (!rc)
        rc = mv_journal_failed(&mv, jn_step(j, id, MS_STEP_VERIFIED, false));
    if (!rc) {
        ms_log(LOG_INFO, "move %lld: copied and verified %lld messages, %lld bytes", (long long)id,
               (long long)mv.messages, (long long)mv.bytes);
        ms_fault("verified");
        rc = mv_directory_step(j, &mv, import ? NULL : opts->dir, mailbox);
    }
    if (!rc)
        rc = mv_commit_point(j, &mv, mb.node.id);
    ms_directory *dir = import ? NULL : opts->dir;
    if (rc)
        return mv_fail(j, &mv, src, dst, dir, &mi, rc);
    g_free(mv.error);
    /*
     * Past the commit point, failures are recovery's to finish.  This row
     * only logs the step (the state above is the commit point): if the
     * journal refuses it, roll_forward still shows the mailbox, and its
     * own records, checked, decide whether the move is done.
     */
    (void)jn_step(j, id, MS_STEP_COMMITTED, false);
    ms_fault("committed");
    return mv_roll_forward(j, src, dst, dir, &mi, opts->retain_days, import ? 0 : locked_at)
               ? -EINPROGRESS
               : 0;
}

bool ms_journal_needs_recovery(ms_journal *j)
{
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int64_t));
    int rc = jn_orphans(j, ids);
    bool need = rc || ids->len;
    g_array_set_size(ids, 0);
    if (!need && jn_holds(j, ids) == 0) {
        for (guint i = 0; !need && i < ids->len; i++) {
            ms_move_info mi;
            int64_t id = g_array_index(ids, int64_t, i);
            need = ms_journal_get(j, id, &mi) == 0 && !ms_move_unsettled(&mi);
        }
    }
    g_array_free(ids, TRUE);
    return need;
}

bool ms_move_unsettled(const ms_move_info *m)
{
    return m->state == MS_MOVE_RUNNING || m->state == MS_MOVE_COMMITTED;
}

int ms_move(ms_journal *j, ms_store *src, ms_store *dst, const char *mailbox,
            const ms_move_opts *opts, int64_t *id_out)
{
    if (!opts || src == dst)
        return -EINVAL;
    if (opts->mode == MS_MOVE_OFFLINE) {
        int64_t other;
        if (jn_find_active(j, ms_store_name(src), mailbox, &other) == 0)
            return -EBUSY;
        return run_move(j, src, dst, mailbox, opts, false, 0, id_out);
    }
    return mv_online_move(j, src, dst, mailbox, opts, id_out);
}

/* The source of an import: the file as a one-mailbox store of the
 * backend that reads it, named by its absolute path (no store name can
 * hold a '/'). */
static int open_import_source(const char *path, const char *spool, ms_pst_helpers *helpers,
                              ms_store **out)
{
    const char *backend = ms_store_backend_for(path);
    if (!backend) {
        struct stat sb;
        int e = stat(path, &sb) < 0 ? errno : 0;
        ms_log(LOG_ERR, "%s: %s", path,
               e ? g_strerror(e) : "not a file mailfs can import (.pst, .ost)");
        return e ? -e : -EINVAL;
    }
    ms_store_conf sc = {.name = (char *)path,
                        .backend = (char *)backend,
                        .path = (char *)path,
                        .spool = (char *)spool,
                        .pst_helpers = helpers};
    char *err = NULL;
    int rc = ms_store_open(&sc, MS_OPEN_READONLY, out, &err);
    if (rc)
        ms_log(LOG_ERR, "%s", err ? err : g_strerror(-rc));
    g_free(err);
    return rc;
}

static int first_child(void *ctx, const char *name, const ms_attr *a, uint64_t cookie)
{
    (void)a;
    (void)cookie;
    *(char **)ctx = g_strdup(name);
    return 1;
}

int ms_import(ms_journal *j, const char *file, ms_store *dst, const char *mailbox,
              const char *spool, const ms_move_opts *opts, int64_t *id_out)
{
    char *abs = realpath(file, NULL);
    if (!abs) {
        int e = errno;
        ms_log(LOG_ERR, "%s: %s", file, g_strerror(e));
        return -e;
    }
    ms_store *src = NULL;
    int rc = open_import_source(abs, spool, opts ? opts->pst_helpers : NULL, &src);
    g_autofree char *stem = NULL;
    if (!rc)
        rc = ms_list(src, (ms_node){MS_ROOT, 0}, 0, first_child, &stem);
    if (!rc && !stem)
        rc = -ENOENT;
    int64_t resume = 0;
    if (!rc && jn_find_resumable(j, abs, ms_store_name(dst), mailbox, &resume) == 0)
        ms_log(LOG_INFO, "import of %s into %s/%s: resuming move %lld", abs, ms_store_name(dst),
               mailbox, (long long)resume);
    if (!rc && !opts)
        rc = -EINVAL;
    if (!rc) {
        ms_move_opts o = *opts;
        o.newname = mailbox;
        o.dir = NULL;
        rc = run_move(j, src, dst, stem, &o, true, resume, id_out);
    }
    ms_store_close(src);
    free(abs);
    return rc;
}

/* --------------------------------------------------- recovery and more */

static ms_store *store_named(ms_store *const *stores, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(ms_store_name(stores[i]), name))
            return stores[i];
    return NULL;
}

int ms_recover(ms_journal *j, ms_store *const *stores, size_t n, ms_directory *dir, int retain_days,
               bool keep_imports, GArray *left)
{
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int64_t));
    int rc = jn_orphans(j, ids);
    int settled = 0;
    for (guint i = 0; !rc && i < ids->len; i++) {
        ms_move_info mi;
        if (ms_journal_get(j, g_array_index(ids, int64_t, i), &mi))
            continue;
        bool import = mi.source[0] == '/';
        if (import && keep_imports && mi.state != MS_MOVE_COMMITTED)
            continue; /* left for `mailfsctl import` to resume */
        /* Ours from here, or not at all: a mover judged dead that is not
         * (another PID namespace) must not pass its commit point while
         * this rolls its move back, nor two recoveries act at once. */
        int c = jn_claim(j, mi.id, mi.state);
        if (c == -ESTALE) {
            ms_log(LOG_INFO, "move %lld: taken up by another process meanwhile; left to it",
                   (long long)mi.id);
            continue;
        }
        if (c) {
            if (left)
                g_array_append_val(left, mi.id);
            continue;
        }
        ms_store *src = import ? NULL : store_named(stores, n, mi.source);
        ms_store *dst = store_named(stores, n, mi.target);
        int r;
        if (mi.state == MS_MOVE_COMMITTED) {
            if ((!src && !import) || !dst) {
                ms_log(LOG_ERR, "move %lld: cannot roll forward: store %s is not configured",
                       (long long)mi.id, dst ? mi.source : mi.target);
                r = -ENOENT;
            } else {
                ms_log(LOG_INFO, "move %lld: rolling forward after a crash", (long long)mi.id);
                r = mv_roll_forward(j, src, dst, dir, &mi, retain_days, 0);
            }
        } else {
            ms_log(LOG_INFO, "move %lld: rolling back after a crash at step %s", (long long)mi.id,
                   ms_move_step_name(mi.step));
            r = mv_roll_back(j, src, dst, dir, &mi,
                             mi.error[0] ? mi.error : "interrupted: the mover died");
        }
        if (!r) {
            settled++;
        } else {
            /* The claim must not outlive this pass (mv_roll_* hand most
             * failures back already): the next recovery retries. */
            mv_hand_to_recovery(j, mi.id);
            if (left)
                g_array_append_val(left, mi.id);
        }
    }
    g_array_free(ids, TRUE);
    if (rc)
        return rc;
    /* A hold a settled move still has (lifting it failed when it ended). */
    GArray *held = g_array_new(FALSE, FALSE, sizeof(int64_t));
    rc = jn_holds(j, held);
    for (guint i = 0; !rc && i < held->len; i++) {
        int64_t id = g_array_index(held, int64_t, i);
        ms_move_info mi;
        if (ms_journal_get(j, id, &mi) || ms_move_unsettled(&mi))
            continue;
        if (!mv_release_user(j, dir, id))
            settled++;
        else if (left)
            g_array_append_val(left, id);
    }
    g_array_free(held, TRUE);
    if (rc)
        return rc;
    /* Then what the stores hold that no journal entry explains. */
    GPtrArray *found = g_ptr_array_new_with_free_func(ms_finding_free);
    int orphans = 0;
    int unfixed = mv_orphans(j, stores, n, dir, retain_days, true, found, &orphans);
    if (unfixed > 0 && left) {
        int64_t none = 0; /* an orphan has no move of this journal to name */
        g_array_append_val(left, none);
    }
    g_ptr_array_free(found, TRUE);
    return unfixed < 0 ? unfixed : settled + orphans;
}

/*
 * The site's store called name, or NULL: not configured (silently, as a
 * store removed from the configuration), or failing to open (logged).
 */
static ms_store *site_store(ms_site *site, const char *name)
{
    ms_store *st = NULL;
    char *err = NULL;
    int rc = ms_site_store(site, name, &st, &err);
    if (rc && rc != -ENOENT)
        ms_log(LOG_ERR, "%s", err ? err : g_strerror(-rc));
    g_free(err);
    return rc ? NULL : st;
}

/* The site's journal and directory (NULL if none), or why not (logged). */
static int site_journal(ms_site *site, ms_journal **j, ms_directory **dir)
{
    char *err = NULL;
    int rc = ms_site_journal(site, j, &err);
    if (!rc && dir)
        rc = ms_site_directory(site, dir, &err);
    if (rc)
        ms_log(LOG_ERR, "%s", err ? err : g_strerror(-rc));
    g_free(err);
    return rc;
}

int ms_purge(ms_site *site, bool all)
{
    ms_journal *j;
    int rc = site_journal(site, &j, NULL);
    if (rc)
        return rc;
    ms_move_info *moves = NULL;
    size_t n = 0;
    rc = ms_journal_list(j, &moves, &n);
    int purged = 0;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; !rc && i < n; i++) {
        ms_move_info *mi = &moves[i];
        if (mi->state != MS_MOVE_DONE && mi->state != MS_MOVE_UNDONE)
            continue;
        if (!all && mi->retain_until > now)
            continue;
        ms_store *src = site_store(site, mi->source);
        if (!src)
            continue;
        int64_t sid;
        if (ms_hidden_find(src, MS_MB_RETAINED, mi->id, mi->mailbox, &sid) == 0) {
            rc = ms_mailbox_drop(src, sid);
            if (rc)
                break;
        }
        /* The copy is gone either way; unrecorded, the next purge finds
         * no copy and records it then. */
        rc = jn_set_state(j, mi->id, MS_MOVE_PURGED, NULL);
        if (rc)
            break;
        ms_log(LOG_INFO, "move %lld: retained copy of %s in %s purged", (long long)mi->id,
               mi->mailbox, mi->source);
        purged++;
    }
    g_free(moves);
    return rc ? rc : purged;
}

/* True when a later move (not rolled back) took mi's mailbox out of its
 * target: the journal says so whatever the store's ids are. */
static bool target_moved_on(ms_journal *j, const ms_move_info *mi)
{
    ms_move_info *mv = NULL;
    size_t n = 0;
    bool on = false;
    if (ms_journal_list(j, &mv, &n) != 0)
        return true; /* unknown: not "deleted", so nothing is restored */
    for (size_t i = 0; i < n && !on; i++)
        on = mv[i].id > mi->id && !strcmp(mv[i].mailbox, mi->newname) &&
             !strcmp(mv[i].source, mi->target) && mv[i].state != MS_MOVE_ROLLED_BACK;
    g_free(mv);
    return on;
}

typedef struct carrier_scan {
    const char *journal;
    int64_t move;
    bool found;
} carrier_scan;

static int find_carrier(void *ctx, const ms_mailbox_info *info)
{
    carrier_scan *c = ctx;
    /* "": a mailbox marked before journals had ids, by the site's. */
    c->found = info->state == MS_MB_VISIBLE && info->move_id == c->move &&
               (!info->move_journal[0] || !strcmp(info->move_journal, c->journal));
    return c->found;
}

/* True when a visible mailbox of dst still says it is move id's copy (the
 * target, renamed since; a deleted one, kept as a deleted item, is gone).  A scan that fails counts
 * as found: not "deleted". */
static bool target_carried(ms_journal *j, ms_store *dst, int64_t id)
{
    carrier_scan c = {ms_journal_id(j), id, false};
    return ms_mailbox_scan(dst, find_carrier, &c) != 0 || c.found;
}

/*
 * True when the mailbox move mi made in dst is gone: deleted through the
 * mount (its row with it), not merely renamed or moved on.  The id the
 * journal recorded for it is a hint only: a backend may number its
 * mailboxes anew in each process (maildir), so that id can name nothing
 * or another mailbox here; the journal's later moves and the mailboxes'
 * own move ids decide first.
 */
static bool target_deleted(ms_journal *j, ms_store *dst, const ms_move_info *mi)
{
    int64_t tid, visible;
    ms_mailbox_info info;
    return ms_mailbox_find(dst, mi->newname, MS_MB_VISIBLE, &visible) == -ENOENT &&
           !target_moved_on(j, mi) && !target_carried(j, dst, mi->id) &&
           jn_target_id(j, mi->id, &tid) == 0 && tid > 0 &&
           (ms_mailbox_get_info(dst, tid, &info) == -ENOENT ||
            (info.move_id && info.move_id != mi->id));
}

/*
 * Undo of a move whose target mailbox was deleted since: nothing to move
 * back, so the retained source copy (the mailbox as it was moved) becomes
 * the visible mailbox again and the directory entry points back at the
 * source.  The deleted target stays recoverable in the target store's
 * deleted items.  *new_id is 0: no move ran.
 */
static int undo_deleted_target(ms_journal *j, ms_store *src, ms_directory *dir,
                               const ms_move_info *mi, int64_t sid, int64_t *new_id)
{
    int64_t other;
    if (ms_mailbox_find(src, mi->mailbox, MS_MB_VISIBLE, &other) == 0)
        return -EEXIST;
    const char *spec = ms_store_directory(src);
    if (dir && spec) {
        g_autofree char *dn = NULL, *err = NULL;
        int rc = ms_directory_entry(dir, mi->mailbox, &dn, &err);
        if (!rc)
            rc = ms_directory_write(dir, dn, spec, &err);
        if (rc) {
            ms_log(LOG_ERR, "undo %lld: cannot point the directory back at %s: %s",
                   (long long)mi->id, mi->source, err ? err : g_strerror(-rc));
            return rc;
        }
    }
    int rc =
        ms_mailbox_set(src, sid, &(ms_mailbox_change){mi->mailbox, MS_MB_VISIBLE, 0, 0, NULL, 0});
    if (rc)
        return rc;
    ms_log(LOG_INFO, "undo %lld: %s was deleted in %s since; its retained copy in %s restored",
           (long long)mi->id, mi->newname, mi->target, mi->source);
    *new_id = 0;
    return jn_set_state(j, mi->id, MS_MOVE_UNDONE,
                        "target deleted since; retained source restored");
}

int ms_undo(ms_site *site, int64_t id, int64_t *new_id)
{
    ms_journal *j;
    ms_directory *dir;
    int rc = site_journal(site, &j, &dir);
    if (rc)
        return rc;
    int retain_days = ms_config_retain_days(ms_site_config(site));
    ms_move_info mi;
    rc = ms_journal_get(j, id, &mi);
    if (rc)
        return rc;
    if (mi.state == MS_MOVE_PREPARED) {
        /* Undoing a prepared move abandons it: its copy dropped, nothing
         * else was touched (the source was never locked). */
        /* Claimed first: a completer adopting it meanwhile gets EBUSY
         * (and this undo EBUSY if the completer was first). */
        int c = jn_owner_alive(j, id) ? -EBUSY : jn_claim(j, id, MS_MOVE_PREPARED);
        if (c)
            return c == -ESTALE ? -EBUSY : c;
        if (new_id)
            *new_id = 0;
        return mv_roll_back(j, site_store(site, mi.source), site_store(site, mi.target), dir, &mi,
                            "abandoned: the prepared move was undone");
    }
    if (mi.state != MS_MOVE_DONE)
        return mi.state == MS_MOVE_PURGED ? -ESTALE : -EINVAL;
    if (mi.retain_until < (int64_t)time(NULL))
        return -ESTALE;
    ms_store *src = site_store(site, mi.source), *dst = site_store(site, mi.target);
    if (!src || !dst)
        return -ENOENT;
    int64_t sid;
    if (ms_hidden_find(src, MS_MB_RETAINED, mi.id, mi.mailbox, &sid) != 0)
        return -ESTALE;
    if (target_deleted(j, dst, &mi)) {
        int64_t unused = 0;
        return undo_deleted_target(j, src, dir, &mi, sid, new_id ? new_id : &unused);
    }
    /*
     * Moving back is a move like any other, of everything the target
     * holds now (what was moved plus whatever arrived since), so nothing
     * can be lost; the old retained copy is superseded only after that
     * move has committed.
     */
    ms_move_opts o = {.newname = mi.mailbox, .retain_days = retain_days, .dir = dir};
    rc = ms_move(j, dst, src, mi.newname, &o, new_id);
    if (rc)
        return rc;
    rc = ms_mailbox_drop(src, sid);
    if (!rc)
        rc = jn_set_state(j, mi.id, MS_MOVE_UNDONE, NULL);
    return rc;
}
