/*
 * carry.c — mail that reaches a moved mailbox's old place (DESIGN 10).
 *
 * An MTA or proxy that looked the user up just before a move's directory
 * switch may still deliver to the source server after the final pass; a
 * mail server then makes the mailbox anew in the source store.  For as
 * long as the move's source copy is retained, what appears there is
 * carried into the mailbox where it lives now: each message copied (its
 * name, date, flags kept; a new UID in the target, where it is new), made
 * durable, and only then removed from the source.  A message whose name
 * the target folder already holds with the same bytes (SHA-256) was
 * carried before a crash between those two steps: it is only removed.
 * Another message of that name, even of that size, is carried under a
 * name of its own.  So nothing is lost and nothing duplicated.  The
 * emptied mailbox is left in place (a mail server may be writing into it
 * still); `mailfsctl check` names it.
 */
#include "engine.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include <glib.h>

typedef struct entry {
    char *name;
    ms_attr attr;
} entry;

static void entry_clear(gpointer p) { g_free(((entry *)p)->name); }

static int collect_entry(void *ctx, const char *name, const ms_attr *a, uint64_t cookie)
{
    (void)cookie;
    entry e = {g_strdup(name), *a};
    g_array_append_val((GArray *)ctx, e);
    return 0;
}

/* Every child of parent, in one listing (the callback never stops it). */
static GArray *children(ms_store *st, ms_node parent, int *rc)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(entry));
    g_array_set_clear_func(a, entry_clear);
    *rc = ms_list(st, parent, 0, collect_entry, a);
    return a;
}

/*
 * *same: message sid of src and message did of dst hold the same bytes
 * (equal SHA-256, hashed now by a store that keeps none, as a Maildir:
 * carries are rare).  A hash a store cannot give (all zeros) proves
 * nothing: then *same is false, so that a message is kept twice rather
 * than lost.
 */
static int same_bytes(ms_store *src, int64_t sid, ms_store *dst, int64_t did, bool *same)
{
    static const uint8_t none[32];
    ms_message_meta a = {0}, b = {0};
    int rc = ms_message_get_meta(src, sid, true, &a);
    if (!rc)
        rc = ms_message_get_meta(dst, did, true, &b);
    *same = !rc && memcmp(a.sha256, none, 32) && !memcmp(a.sha256, b.sha256, 32);
    g_free(a.flags);
    g_free(b.flags);
    return rc;
}

/* Copies message m of src into folder to of dst (durably), then removes
 * it from src's folder from (unless keep). */
static int carry_message(ms_store *src, ms_node from, const entry *m, ms_store *dst, ms_node to,
                         bool keep)
{
    ms_attr there;
    int rc = ms_lookup(dst, to, m->name, &there);
    if (rc && rc != -ENOENT)
        return rc; /* cannot tell whether the target has it: retried later */
    if (rc == 0 && keep)
        return 1; /* the target has it: nothing to carry */
    if (rc == 0 && there.size == m->attr.size) {
        /* Only the same bytes mean it was carried before a crash between
         * the copy and the removal.  Names collide otherwise too: a
         * mailbox made anew in a sqlite store names its deliveries 1.eml,
         * 2.eml... again, and mail from one template often has one size. */
        bool same = false;
        rc = same_bytes(src, m->attr.node.id, dst, there.node.id, &same);
        if (rc)
            return rc;
        if (same)
            return ms_unlink(src, from, m->name);
    }
    const char *name = m->name;
    g_autofree char *other = NULL;
    if (rc == 0) /* a different message of that name: keep both */
        name = other = g_strdup_printf("%s.carried-%lld", m->name, (long long)time(NULL));
    ms_reader *r = NULL;
    ms_writer *w = NULL;
    ms_message_meta meta = {0};
    rc = ms_reader_open(src, m->attr.node.id, &r);
    if (!rc)
        rc = ms_message_get_meta(src, m->attr.node.id, false, &meta);
    if (!rc)
        rc = ms_writer_import(dst, to, name, 0, &w);
    char buf[65536];
    for (int64_t off = 0; !rc && off < ms_reader_size(r);) {
        ssize_t n = ms_reader_pread(r, buf, sizeof buf, off);
        if (n <= 0) {
            rc = n < 0 ? (int)n : -EIO;
            break;
        }
        ssize_t k = ms_writer_pwrite(w, buf, (size_t)n, off);
        rc = k < 0 ? (int)k : 0;
        off += n;
    }
    if (!rc && meta.flags && *meta.flags)
        rc = ms_writer_set_flags(w, meta.flags, strlen(meta.flags));
    if (!rc) {
        ms_setattr_req a = {MS_SET_MTIME, 0, 0, 0, m->attr.mtime_ns};
        ms_writer_setattr(w, &a);
        rc = ms_writer_commit(w, true, NULL);
    }
    ms_writer_close(w);
    ms_reader_close(r);
    g_free(meta.flags);
    if (!rc && !keep)
        rc = ms_unlink(src, from, m->name);
    return rc;
}

/* The change sequence of a node; none kept: counted as changed. */
static uint64_t seq_of(const ms_attr *a) { return a->modseq ? a->modseq : UINT64_MAX; }

int mv_carry_folder(ms_store *src, ms_node from, ms_store *dst, ms_node to, uint64_t since,
                    bool keep, int64_t *carried)
{
    int rc;
    GArray *a = children(src, from, &rc);
    for (guint i = 0; !rc && i < a->len; i++) {
        entry *e = &g_array_index(a, entry, i);
        if (e->attr.node.kind == MS_MESSAGE) {
            if (since && seq_of(&e->attr) < since)
                continue;
            rc = carry_message(src, from, e, dst, to, keep);
            if (!rc)
                (*carried)++;
            rc = rc > 0 ? 0 : rc;
            continue;
        }
        ms_attr f;
        rc = ms_lookup(dst, to, e->name, &f);
        if (rc == -ENOENT)
            rc = ms_mkdir(dst, to, e->name, e->attr.mode, e->attr.uid, e->attr.gid, &f);
        if (!rc)
            rc = mv_carry_folder(src, e->attr.node, dst, f.node, since, keep, carried);
    }
    g_array_free(a, TRUE);
    return rc;
}

static ms_store *named(ms_store *const *stores, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(ms_store_name(stores[i]), name))
            return stores[i];
    return NULL;
}

int ms_carry_late(ms_journal *j, ms_store *const *stores, size_t n, int64_t *carried)
{
    ms_move_info *mv = NULL;
    size_t count = 0;
    int rc = ms_journal_list(j, &mv, &count);
    int64_t total = 0, now = (int64_t)time(NULL);
    /* Newest first: of two moves of one mailbox, the newer says where it is. */
    GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (size_t i = 0; !rc && i < count; i++) {
        ms_move_info *m = &mv[i];
        g_autofree char *key = g_strdup_printf("%s/%s", m->source, m->mailbox);
        if (g_hash_table_contains(seen, key))
            continue;
        g_hash_table_add(seen, g_steal_pointer(&key));
        if (m->state != MS_MOVE_DONE || m->retain_until < now || m->source[0] == '/')
            continue;
        ms_store *src = named(stores, n, m->source), *dst = named(stores, n, m->target);
        ms_attr stray, home;
        if (!src || !dst || ms_lookup(src, (ms_node){MS_ROOT, 0}, m->mailbox, &stray) ||
            ms_lookup(dst, (ms_node){MS_ROOT, 0}, m->newname, &home))
            continue;
        int64_t k = 0;
        int r = mv_carry_folder(src, stray.node, dst, home.node, 0, false, &k);
        if (k)
            ms_log(LOG_INFO,
                   "move %lld: carried %lld message(s) that reached %s in %s after the move "
                   "into %s",
                   (long long)m->id, (long long)k, m->mailbox, m->source, m->target);
        if (r)
            ms_log(LOG_ERR, "move %lld: carrying mail that reached %s in %s: %s (retried later)",
                   (long long)m->id, m->mailbox, m->source, g_strerror(-r));
        total += k;
    }
    g_hash_table_destroy(seen);
    g_free(mv);
    if (carried)
        *carried = total;
    return rc;
}
