/*
 * online.c — online moves (DESIGN 10): passes over a source that stays
 * writable, then a short cutover under the lock.
 *
 *   bulk     everything copied into the hidden target, the source in use
 *   delta    what changed since the pass before carried over, until a
 *            pass is small
 *   cutover  mount lock, the directory's hold on the user, sessions
 *            kicked, final passes until one finds the copy equal to the
 *            source; then the directory switch, the commit point and the
 *            same finish as every move (move.c)
 *
 * A move may stop after its delta passes, prepared (MS_MOVE_PREPARE): the
 * next ms_move of the mailbox into that store takes it up.
 */
#include "engine.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include <glib.h>

/* -------------------------------------------------- online passes (DESIGN 10) */

/*
 * A pass makes the hidden copy equal to the source as the pass sees it:
 * what the copy lacks is copied, what the source no longer has is
 * dropped, what changed is brought over.  The copy is written by its
 * move alone, so comparing the two listings is exact; the source's
 * change sequence (seq_of, its MODSEQ) spares re-reading messages that did not
 * change since the pass before (floor).  A pass is idempotent and keeps
 * no state but the floor: after a crash the next pass starts from
 * whatever the copy holds.
 */

/* The change sequence of a source node (ms_attr.modseq); a backend that
 * keeps none has every node re-checked at every pass. */
static uint64_t seq_of(const ms_attr *a) { return a->modseq ? a->modseq : UINT64_MAX; }

/*
 * The floor for a pass starting now (ms_mailbox_modseq): everything
 * changed after this has a seq >= it.  0 when the source keeps no change
 * sequence: the pass then compares every message in full.
 *
 * Folders are listed at every pass even when their seq is below the
 * floor: a folder's seq covers its own children, and a change deeper
 * down must still be found.  The listing is cheap next to the copy.
 */
static uint64_t pass_floor(mover *mv, int64_t mailbox)
{
    uint64_t f = 0;
    return ms_mailbox_modseq(mv->src, mailbox, &f) == 0 ? f : 0;
}

typedef struct touched {
    ms_node sparent, dparent;
    child c;
} touched;

static void touched_clear(gpointer p) { g_free(((touched *)p)->c.name); }

typedef struct pass {
    uint64_t floor; /* re-check what changed at or after; 0: everything */
    ms_move_pass stats;
    GArray *touched;  /* messages copied: verified once committed */
    GPtrArray *ready; /* prepared writers not yet committed */
    int64_t ready_bytes;
    int64_t unsettled; /* changed while the pass ran: the next one carries them */
    uint64_t started;  /* this pass's own floor */
} pass;

/*
 * A child as a pass lists it.  A folder of 50,000 messages is listed
 * twice per pass (the source and its copy) while both stores cache it
 * too, so an entry keeps only what a pass compares, and its name lives
 * in its listing's string chunk rather than in a block of its own.
 */
typedef struct entry {
    const char *name;
    int64_t id;
    int64_t size, mtime_ns, imap_uid;
    uint64_t modseq;
    uint32_t mode, uid, gid;
    uint8_t kind;  /* ms_kind */
    bool noselect; /* a folder that holds no message */
    bool dropped;  /* dropped from the copy by this pass */
} entry;

typedef struct listing {
    GArray *all;         /* of entry: messages in UID order, then folders */
    GStringChunk *names; /* the entries' names */
    guint *by_name;      /* indexes into all, sorted by name */
} listing;

static void listing_clear(listing *l)
{
    g_free(l->by_name);
    if (l->names)
        g_string_chunk_free(l->names);
    if (l->all)
        g_array_free(l->all, TRUE);
}

/* The child to hand on: its name is the listing's, valid while it is. */
static child child_of(const entry *e)
{
    return (child){.name = (char *)e->name,
                   .attr = {.node = {(ms_kind)e->kind, e->id},
                            .size = e->size,
                            .mtime_ns = e->mtime_ns,
                            .mode = e->mode,
                            .uid = e->uid,
                            .gid = e->gid,
                            .imap_uid = e->imap_uid,
                            .noselect = e->noselect,
                            .modseq = e->modseq}};
}

static int collect_all(void *ctx, const char *name, const ms_attr *a, uint64_t cookie)
{
    (void)cookie;
    listing *l = ctx;
    entry e = {.name = g_string_chunk_insert(l->names, name),
               .id = a->node.id,
               .size = a->size,
               .mtime_ns = a->mtime_ns,
               .imap_uid = a->imap_uid,
               .modseq = a->modseq,
               .mode = a->mode,
               .uid = a->uid,
               .gid = a->gid,
               .kind = (uint8_t)a->node.kind,
               .noselect = a->noselect};
    g_array_append_val(l->all, e);
    return 0; /* never stops: one listing, not pages (a backend may sort
               * the whole folder at every call) */
}

/* Messages in UID order (a copy's UIDs then come in order, and a store
 * appends them), the unnumbered after them, then folders. */
static gint pass_order(gconstpointer a, gconstpointer b)
{
    const entry *x = a, *y = b;
    bool xm = x->kind == MS_MESSAGE, ym = y->kind == MS_MESSAGE;
    if (xm != ym)
        return xm ? -1 : 1;
    uint64_t xu = x->imap_uid ? (uint64_t)x->imap_uid : UINT64_MAX;
    uint64_t yu = y->imap_uid ? (uint64_t)y->imap_uid : UINT64_MAX;
    if (xm && xu != yu)
        return xu < yu ? -1 : 1;
    return strcmp(x->name, y->name);
}

static gint name_order(gconstpointer a, gconstpointer b, gpointer all)
{
    const entry *e = (const entry *)((GArray *)all)->data;
    return strcmp(e[*(const guint *)a].name, e[*(const guint *)b].name);
}

/* Every child of parent, in pass order, findable by name. */
static int list_all(ms_store *st, ms_node parent, listing *l)
{
    l->all = g_array_new(FALSE, FALSE, sizeof(entry));
    l->names = g_string_chunk_new(16384);
    int rc = ms_list(st, parent, 0, collect_all, l);
    if (rc)
        return rc;
    g_array_sort(l->all, pass_order);
    l->by_name = g_new(guint, l->all->len ? l->all->len : 1);
    for (guint i = 0; i < l->all->len; i++)
        l->by_name[i] = i;
    g_qsort_with_data(l->by_name, (gint)l->all->len, sizeof(guint), name_order, l->all);
    return 0;
}

/* The child of l named name, or NULL (none, or dropped). */
static entry *listed(listing *l, const char *name)
{
    entry *e = (entry *)l->all->data;
    guint lo = 0, hi = l->all->len;
    while (lo < hi) {
        guint mid = lo + (hi - lo) / 2;
        int c = strcmp(e[l->by_name[mid]].name, name);
        if (!c)
            return e[l->by_name[mid]].dropped ? NULL : &e[l->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/*
 * Verifies the messages a pass copied, once their batch is committed
 * (so a pass holds one batch's worth of them, not the mailbox's): the same bytes
 * (file or SHA-256), flags, date and UID.  One the source changed or
 * expunged since it was copied is left to the next pass (unsettled); any
 * other difference fails the move.
 */
static int verify_touched(mover *mv, pass *p)
{
    uint64_t started = p->started;
    int ret = 0;
    for (guint i = 0; !ret && i < p->touched->len; i++) {
        touched *t = &g_array_index(p->touched, touched, i);
        if (!mv_verify_message(mv, &t->c, t->dparent, true))
            continue;
        ms_attr now;
        int rc = ms_lookup(mv->src, t->sparent, t->c.name, &now);
        if (rc == -ENOENT ||
            (!rc && (seq_of(&now) >= started || now.imap_uid != t->c.attr.imap_uid))) {
            g_clear_pointer(&mv->error, g_free);
            p->unsettled++;
            continue;
        }
        ret = -EIO;
    }
    /* Verified (or left to the next pass): the memory goes with them. */
    g_array_set_size(p->touched, 0);
    return ret;
}

/* Commits what the pass prepared, then verifies it; a test may kill the
 * mover after each batch that held messages ("copy"). */
static int commit_ready(mover *mv, pass *p)
{
    bool some = p->ready->len || mv->in_batch;
    p->ready_bytes = 0;
    int rc = mv_commit_prepared(mv, p->ready);
    if (!rc && some)
        ms_fault("copy");
    if (!rc && p->touched->len)
        rc = verify_touched(mv, p);
    return rc;
}

/* Drops node d (a message, or a folder with all below it) from the copy. */
static int drop_from_copy(mover *mv, pass *p, ms_node dparent, const child *d)
{
    int rc = commit_ready(mv, p); /* a pending writer may be below it */
    if (rc)
        return rc;
    if (d->attr.node.kind == MS_MESSAGE) {
        rc = ms_unlink(mv->dst, dparent, d->name);
    } else {
        listing l = {0};
        rc = list_all(mv->dst, d->attr.node, &l);
        for (guint i = 0; !rc && l.all && i < l.all->len; i++) {
            child sub = child_of(&g_array_index(l.all, entry, i));
            rc = drop_from_copy(mv, p, d->attr.node, &sub);
        }
        listing_clear(&l);
        if (!rc)
            rc = ms_rmdir(mv->dst, dparent, d->name);
    }
    if (rc == -ENOENT)
        rc = 0;
    if (!rc)
        p->stats.removed++;
    else if (!mv->error)
        mv->error = g_strdup_printf("dropping %s from the copy: %s", d->name, g_strerror(-rc));
    return rc;
}

/* Copies source message c into dparent (batched), to be verified. */
static int copy_into(mover *mv, pass *p, ms_node sparent, ms_node dparent, const child *c)
{
    ms_writer *w = NULL;
    int rc = mv_prepare_message(mv, c, dparent, p->ready, &w);
    if (rc == -ENOENT) {
        p->unsettled++; /* expunged since it was listed */
        return 0;
    }
    if (rc < 0) {
        if (!mv->error)
            mv->error = g_strdup_printf("copying message %s: %s", c->name, g_strerror(-rc));
        return rc;
    }
    if (rc == 0) {
        g_ptr_array_add(p->ready, w);
        p->ready_bytes += ms_writer_size(w);
    }
    touched t = {sparent, dparent, {g_strdup(c->name), c->attr, c->cookie}};
    g_array_append_val(p->touched, t);
    p->stats.messages++;
    p->stats.bytes += c->attr.size;
    if (p->ready->len >= BATCH_MESSAGES || p->ready_bytes >= BATCH_BYTES)
        return commit_ready(mv, p);
    /* Links commit in batches of their own: verified once nothing
     * copied or linked waits uncommitted. */
    if (!p->ready->len && !mv->in_batch && p->touched->len >= BATCH_MESSAGES)
        return verify_touched(mv, p);
    return 0;
}

/*
 * A message in both whose source changed since the last pass: its flags
 * (and mode, owner) brought over, its bytes compared (the same file, or
 * equal SHA-256) and copied again if they differ.
 */
static int recheck_message(mover *mv, pass *p, ms_node sparent, ms_node dparent, const child *c,
                           const child *d)
{
    ms_message_meta sm = {0}, dm = {0};
    int rc = ms_message_get_meta(mv->src, c->attr.node.id, false, &sm);
    if (rc == -ENOENT) {
        p->unsettled++;
        return 0;
    }
    if (!rc)
        rc = ms_message_get_meta(mv->dst, d->attr.node.id, false, &dm);
    bool same_file = !rc && sm.ino && sm.dev == dm.dev && sm.ino == dm.ino;
    if (!rc && !same_file) {
        g_clear_pointer(&sm.flags, g_free);
        g_clear_pointer(&dm.flags, g_free);
        rc = ms_message_get_meta(mv->src, c->attr.node.id, true, &sm);
        if (!rc)
            rc = ms_message_get_meta(mv->dst, d->attr.node.id, true, &dm);
        if (rc == -ENOENT) {
            p->unsettled++;
            rc = 0;
            goto out;
        }
    }
    if (!rc && !same_file && memcmp(sm.sha256, dm.sha256, 32)) {
        rc = drop_from_copy(mv, p, dparent, d);
        p->stats.removed--; /* replaced, not dropped */
        if (!rc)
            rc = copy_into(mv, p, sparent, dparent, c);
        goto out;
    }
    if (!rc && !mv_same_flags(sm.flags, dm.flags)) {
        const char *f = sm.flags ? sm.flags : "";
        rc =
            ms_xattr_set(mv->dst, d->attr.node, "user.mail.flags", f, strlen(f), MS_XATTR_VERBATIM);
        if (!rc)
            p->stats.updated++;
    }
    if (!rc && (c->attr.mode != d->attr.mode || c->attr.uid != d->attr.uid ||
                c->attr.gid != d->attr.gid)) {
        rc = mv_set_times_and_owner(mv->dst, d->attr.node, &c->attr);
        if (!rc)
            p->stats.updated++;
    }
out:
    if (rc && !mv->error)
        mv->error = g_strdup_printf("bringing over message %s: %s", c->name, g_strerror(-rc));
    g_free(sm.flags);
    g_free(dm.flags);
    return rc;
}

/* Sets xattr name of dnode to snode's (or removes it) when they differ;
 * 1 when it changed something. */
static int sync_xattr(mover *mv, ms_node snode, ms_node dnode, const char *name)
{
    g_autofree char *sv = NULL, *dv = NULL;
    size_t sl = 0, dl = 0;
    int rc = ms_xattr_get(mv->src, snode, name, &sv, &sl);
    if (rc && rc != -ENODATA)
        return rc;
    bool shas = rc == 0;
    rc = ms_xattr_get(mv->dst, dnode, name, &dv, &dl);
    if (rc && rc != -ENODATA)
        return rc;
    bool dhas = rc == 0;
    if (shas == dhas && (!shas || (sl == dl && !memcmp(sv, dv, sl))))
        return 0;
    rc = shas ? ms_xattr_set(mv->dst, dnode, name, sv, sl, MS_XATTR_VERBATIM)
              : ms_xattr_remove(mv->dst, dnode, name);
    return rc ? rc : 1;
}

/*
 * The folder's UIDVALIDITY and UIDNEXT, when they differ; 1 if changed.
 * Verified once set: a target that cannot hold them (a source whose
 * UIDNEXT is below its own UIDs, damaged behind its store) fails the
 * move with EIO, saying what differs.
 */
static int sync_folder_uids(mover *mv, const char *name, ms_node from, ms_node to)
{
    ms_folder_uids s, d;
    int rc = ms_folder_uids_get(mv->src, from, &s);
    if (rc == -ENOTSUP || rc == -ENODATA)
        return 0;
    if (rc)
        return rc;
    rc = ms_folder_uids_get(mv->dst, to, &d);
    if (!rc && s.uidvalidity == d.uidvalidity && s.uidnext == d.uidnext)
        return 0;
    rc = ms_folder_uids_set(mv->dst, to, &s);
    if (!rc)
        rc = ms_folder_uids_get(mv->dst, to, &d);
    if (!rc && (s.uidvalidity != d.uidvalidity || s.uidnext != d.uidnext)) {
        mv->error = g_strdup_printf("verify: folder %s has UIDVALIDITY %lu and UIDNEXT %lld, its "
                                    "copy %lu and %lld",
                                    name, (unsigned long)s.uidvalidity, (long long)s.uidnext,
                                    (unsigned long)d.uidvalidity, (long long)d.uidnext);
        return -EIO;
    }
    return rc ? rc : 1;
}

/*
 * Folders a pass left equal to their source: while a folder's change
 * sequence stays below a later pass's floor, nothing in it changed (its
 * own children, its attributes), and that pass goes straight to its
 * subfolders without listing it.  So the cutover's final passes cost what
 * changed, not what the mailbox holds.  Kept by the mover of one process;
 * a folder with anything left for the next pass (unsettled) is not kept.
 */
typedef struct synced_sub {
    char *name;
    ms_node snode, dnode;
} synced_sub;

typedef struct synced {
    int64_t dnode_id; /* the copy it was found equal to */
    GArray *subs;     /* of synced_sub: its subfolders then */
} synced;

static void synced_sub_clear(gpointer p) { g_free(((synced_sub *)p)->name); }

static GArray *subs_new(void)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(synced_sub));
    g_array_set_clear_func(a, synced_sub_clear);
    return a;
}

static void synced_free(gpointer p)
{
    synced *sf = p;
    g_array_free(sf->subs, TRUE);
    g_free(sf);
}

static int64_t synced_key(ms_node n) { return n.id * 4 + n.kind; }

/* Keeps (or forgets, when subs is NULL) snode as equal to dnode. */
static void remember(mover *mv, ms_node snode, ms_node dnode, GArray *subs)
{
    int64_t *key = g_new(int64_t, 1);
    *key = synced_key(snode);
    if (!subs) {
        g_hash_table_remove(mv->synced, key);
        g_free(key);
        return;
    }
    synced *sf = g_new(synced, 1);
    sf->dnode_id = dnode.id;
    sf->subs = subs;
    g_hash_table_replace(mv->synced, key, sf);
}

static int sync_children(mover *mv, pass *p, ms_node sparent, ms_node dparent, GArray *subs);
static int sync_folder(mover *mv, pass *p, ms_node dparent, const child *c, const child *d,
                       ms_node *dout);

/*
 * Passes over snode (found equal to dnode by an earlier pass and not
 * changed since: seq below the floor) to its subfolders.  1 when it
 * cannot (not kept, changed, a subfolder gone): the caller syncs it in
 * full, which is always right.
 */
static int sync_unchanged(mover *mv, pass *p, const ms_attr *sattr, ms_node dnode)
{
    int64_t key = synced_key(sattr->node);
    synced *sf = p->floor && mv->synced ? g_hash_table_lookup(mv->synced, &key) : NULL;
    if (!sf || sf->dnode_id != dnode.id || seq_of(sattr) >= p->floor)
        return 1;
    for (guint i = 0; i < sf->subs->len; i++) {
        synced_sub *sub = &g_array_index(sf->subs, synced_sub, i);
        child c = {.name = sub->name}, d = {.name = sub->name};
        if (ms_getattr(mv->src, sub->snode, &c.attr) || ms_getattr(mv->dst, sub->dnode, &d.attr))
            return 1;
        ms_node dn;
        int rc = sync_folder(mv, p, dnode, &c, &d, &dn);
        if (rc)
            return rc;
    }
    return 0;
}

/* A folder of the source: made in the copy if new, its children synced,
 * then its own attributes; *dout gets its copy. */
static int sync_folder(mover *mv, pass *p, ms_node dparent, const child *c, const child *d,
                       ms_node *dout)
{
    ms_attr f;
    int rc = 0;
    if (d) {
        f = d->attr;
        *dout = f.node;
        if ((rc = sync_unchanged(mv, p, &c->attr, f.node)) <= 0)
            return rc;
        rc = 0;
    } else {
        rc = commit_ready(mv, p);
        if (!rc)
            rc = ms_mkdir(mv->dst, dparent, c->name, c->attr.mode, c->attr.uid, c->attr.gid, &f);
        if (rc == -EEXIST)
            rc = ms_lookup(mv->dst, dparent, c->name, &f);
        if (!rc)
            p->stats.updated++;
    }
    if (!rc && (rc = sync_xattr(mv, c->attr.node, f.node, "user.mail.special-use")) > 0) {
        p->stats.updated++;
        rc = 0;
    }
    *dout = f.node;
    int64_t unsettled = p->unsettled;
    GArray *subs = subs_new();
    if (!rc)
        rc = sync_children(mv, p, c->attr.node, f.node, subs);
    if (!rc)
        rc = commit_ready(mv, p);
    remember(mv, c->attr.node, f.node, !rc && p->unsettled == unsettled ? subs : NULL);
    if (rc || p->unsettled != unsettled)
        g_array_free(subs, TRUE);
    if (!rc && c->attr.noselect) {
        rc = ms_folder_unselect(mv->dst, f.node);
        return rc == -ENOTSUP ? 0 : rc;
    }
    if (!rc && (rc = sync_folder_uids(mv, c->name, c->attr.node, f.node)) > 0) {
        p->stats.updated++;
        rc = 0;
    }
    /* Its date moves with its children: set each pass, never counted. */
    if (!rc)
        rc = mv_set_times_and_owner(mv->dst, f.node, &c->attr);
    if (rc == -ENOENT) { /* the source folder went meanwhile */
        p->unsettled++;
        rc = 0;
    }
    if (rc && !mv->error)
        mv->error = g_strdup_printf("copying folder %s: %s", c->name, g_strerror(-rc));
    return rc;
}

/* Makes dparent's children those of sparent (see the section comment);
 * the subfolders synced go to subs. */
static int sync_children(mover *mv, pass *p, ms_node sparent, ms_node dparent, GArray *subs)
{
    listing S = {0}, D = {0};
    int rc = list_all(mv->src, sparent, &S);
    if (rc == -ENOENT) { /* a source folder removed meanwhile */
        p->unsettled++;
        rc = 0;
        goto out;
    }
    if (!rc)
        rc = list_all(mv->dst, dparent, &D);
    /* First what the source no longer has (or has as another kind). */
    for (guint i = 0; !rc && i < D.all->len; i++) {
        entry *de = &g_array_index(D.all, entry, i);
        entry *se = listed(&S, de->name);
        if (!se || (se->kind == MS_MESSAGE) != (de->kind == MS_MESSAGE)) {
            child d = child_of(de);
            rc = drop_from_copy(mv, p, dparent, &d);
            de->dropped = true;
        }
    }
    for (guint i = 0; !rc && i < S.all->len; i++) {
        child cc = child_of(&g_array_index(S.all, entry, i)), dc;
        const child *c = &cc, *d = NULL;
        entry *de = listed(&D, c->name);
        if (de) {
            dc = child_of(de);
            d = &dc;
        }
        if (mv_cancelled(mv)) {
            rc = -EINTR;
            break;
        }
        if (c->attr.node.kind != MS_MESSAGE) {
            ms_node dn;
            rc = sync_folder(mv, p, dparent, c, d, &dn);
            if (!rc)
                g_array_append_val(subs, ((synced_sub){g_strdup(c->name), c->attr.node, dn}));
            continue;
        }
        if (d && (d->attr.size != c->attr.size || d->attr.imap_uid != c->attr.imap_uid ||
                  d->attr.mtime_ns != c->attr.mtime_ns)) {
            rc = drop_from_copy(mv, p, dparent, d);
            p->stats.removed--; /* replaced, not dropped */
            d = NULL;
        }
        if (rc)
            break;
        /* A message its server has not numbered yet (a Maildir file
         * Dovecot has not listed): copied once it has its UID. */
        if (!c->attr.imap_uid && mv->uids) {
            p->unsettled++;
            continue;
        }
        if (!d)
            rc = copy_into(mv, p, sparent, dparent, c);
        else if (!p->floor || seq_of(&c->attr) >= p->floor)
            rc = recheck_message(mv, p, sparent, dparent, c, d);
        if (!rc)
            rc = mv_report(mv, false);
    }
out:
    listing_clear(&S);
    listing_clear(&D);
    return rc;
}

/*
 * One pass of the mailbox (sroot into droot) re-checking what changed at
 * or after floor (0: everything); the pass's own floor, taken before it
 * lists anything, goes to *next.  Recorded in the journal as number n.
 */
static int run_pass(mover *mv, ms_node sroot, ms_node droot, int n, const char *phase,
                    uint64_t floor, uint64_t *next, ms_move_pass *out)
{
    pass p = {.floor = floor};
    p.touched = g_array_new(FALSE, FALSE, sizeof(touched));
    g_array_set_clear_func(p.touched, touched_clear);
    p.ready = g_ptr_array_new_with_free_func((GDestroyNotify)ms_writer_close);
    p.stats.pass = n;
    g_strlcpy(p.stats.phase, phase, sizeof p.stats.phase);
    p.stats.started_ns = ms_now_ns();
    uint64_t started = pass_floor(mv, sroot.id);
    p.stats.floor = p.started = started;
    /* The stamp gives files the mail server has not numbered yet their
     * UIDs, as its next look would: what this pass lists has them. */
    int rc = mv->restamp ? 0 : mv_take_stamp(mv, sroot.id);
    if (!rc && mv_cancelled(mv)) /* also between passes that list nothing */
        rc = -EINTR;
    if (!rc)
        rc = sync_xattr(mv, sroot, droot, "user.mail.acl");
    if (rc > 0) {
        p.stats.updated++;
        rc = 0;
    }
    ms_attr ra;
    if (!rc)
        rc = ms_getattr(mv->src, sroot, &ra);
    if (!rc && (rc = sync_unchanged(mv, &p, &ra, droot)) == 1) {
        int64_t unsettled = p.unsettled;
        GArray *subs = subs_new();
        rc = sync_children(mv, &p, sroot, droot, subs);
        if (!rc)
            rc = commit_ready(mv, &p);
        remember(mv, sroot, droot, !rc && p.unsettled == unsettled ? subs : NULL);
        if (rc || p.unsettled != unsettled)
            g_array_free(subs, TRUE);
    }
    if (!rc)
        rc = commit_ready(mv, &p);
    mv_close_batch(mv, false); /* a failed link leaves its batch open */
    if (!rc)
        rc = ms_store_sync(mv->dst);
    if (!rc && p.touched->len) /* links of a batch closed without commit_ready */
        rc = verify_touched(mv, &p);
    p.stats.ended_ns = ms_now_ns();
    if (!rc)
        rc = mv_journal_failed(mv, jn_pass(mv->j, mv->id, n, phase, &p.stats));
    if (!rc)
        rc = mv_report(mv, true);
    if (!rc)
        ms_log(LOG_INFO,
               "move %lld: pass %d (%s): %lld messages copied (%lld bytes), %lld dropped, %lld "
               "updated, %lld left for the next pass, %.3f s",
               (long long)mv->id, n, phase, (long long)p.stats.messages, (long long)p.stats.bytes,
               (long long)p.stats.removed, (long long)p.stats.updated, (long long)p.unsettled,
               (p.stats.ended_ns - p.stats.started_ns) / 1e9);
    /* Changes the pass saw but left (unsettled) count as work: the pass
     * after must run. */
    p.stats.updated += p.unsettled;
    *out = p.stats;
    *next = started;
    g_ptr_array_free(p.ready, TRUE);
    g_array_free(p.touched, TRUE);
    return rc;
}

/* What a pass changed in the copy: 0 means the copy equalled the source. */
static int64_t pass_work(const ms_move_pass *s) { return s->messages + s->removed + s->updated; }

/* ------------------------------------------------------- online moves */

#define MAX_DELTA_PASSES 8 /* before the cutover, with the source writable */
#define MAX_FINAL_PASSES 6 /* under the lock, until one finds nothing */
#define SMALL_PASS 100     /* changes: few enough to cut over now */
#define SMALL_PASS_NS 500000000LL

/* Test-only pauses at a pass (MAILFS_STALL=pass-N-PHASE). */
static void pass_point(int n, const char *phase)
{
    g_autofree char *point = g_strdup_printf("pass-%d-%s", n, phase);
    ms_fault(point);
}

/*
 * Runs the command that drops the user's sessions (opts->kick, %s the
 * mailbox), without a shell.  Best effort: a failure is logged, and the
 * hold plus the final passes catch what a session still writes.
 */
static void kick_sessions(const char *kick, const char *mailbox, int64_t id)
{
    gchar **argv = NULL;
    if (!kick || !g_shell_parse_argv(kick, NULL, &argv, NULL))
        return;
    for (size_t i = 0; argv[i]; i++) {
        g_auto(GStrv) parts = g_strsplit(argv[i], "%s", -1);
        g_free(argv[i]);
        argv[i] = g_strjoinv(mailbox, parts);
    }
    int status = 0;
    GError *e = NULL;
    g_autofree char *out = NULL, *err = NULL;
    if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &e))
        ms_log(LOG_WARNING, "move %lld: kick %s: %s", (long long)id, argv[0], e->message);
    else if (!g_spawn_check_wait_status(status, NULL))
        ms_log(LOG_WARNING, "move %lld: kick %s exited with status %d: %s", (long long)id, argv[0],
               status, err ? g_strstrip(err) : "");
    else
        ms_log(LOG_INFO, "move %lld: kicked %s's sessions", (long long)id, mailbox);
    g_clear_error(&e);
    g_strfreev(argv);
}

/*
 * Puts the configured hold on the user's entry (DESIGN 10: the site's
 * proxy then holds logins and deliveries off), recorded durably first so
 * that a crash leaves nothing recovery cannot lift.  No hold configured,
 * or no directory: nothing to do.
 */
static int hold_user(mover *mv, ms_directory *dir, const char *mailbox)
{
    g_autofree char *on = ms_directory_hold_spec(dir, true);
    g_autofree char *off = ms_directory_hold_spec(dir, false);
    if (!on)
        return 0;
    g_autofree char *dn = NULL, *err = NULL;
    int rc = ms_directory_entry(dir, mailbox, &dn, &err);
    if (!rc)
        rc = mv_journal_failed(mv, jn_hold_save(mv->j, mv->id, dn, off));
    if (!rc) {
        ms_fault("hold-saved");
        rc = ms_directory_write(dir, dn, on, &err);
    }
    if (rc && err) {
        mv->error = g_strdup_printf("directory: holding the user off: %s", err);
        return -EIO;
    }
    if (!rc) {
        ms_log(LOG_INFO, "move %lld: holding %s off (%s)", (long long)mv->id, dn, on);
        ms_fault("held");
    }
    return rc;
}

/*
 * Lifts the hold of move id if one is recorded (idempotent: removing
 * what is not there is no error).  Fails while the directory is down,
 * and the record stays for recovery to retry.
 */
int mv_release_user(ms_journal *j, ms_directory *dir, int64_t id)
{
    g_autofree char *dn = NULL, *off = NULL, *err = NULL;
    int rc = jn_hold_get(j, id, &dn, &off);
    if (rc == -ENOENT)
        return 0;
    if (!rc)
        rc = dir ? ms_directory_write(dir, dn, off, &err) : -EIO;
    if (rc) {
        ms_log(LOG_ERR, "move %lld: cannot lift the hold on %s (%s); recovery will retry",
               (long long)id, dn ? dn : "?", err ? err : "no directory configured");
        return rc;
    }
    rc = jn_hold_drop(j, id);
    if (!rc)
        ms_log(LOG_INFO, "move %lld: hold on %s lifted", (long long)id, dn);
    return rc;
}

/* The floor the last recorded pass of move id left (0: none). */
static uint64_t last_floor(ms_journal *j, int64_t id, int *passes)
{
    ms_move_pass *ps = NULL;
    size_t n = 0;
    uint64_t floor = 0;
    *passes = 0;
    if (ms_journal_passes(j, id, &ps, &n) == 0 && n) {
        floor = ps[n - 1].floor;
        *passes = ps[n - 1].pass;
    }
    g_free(ps);
    return floor;
}

/*
 * Delta passes with the source writable, until one is small (few
 * changes, or quick): the cutover's own passes then have little to do.
 */
static int delta_passes(mover *mv, ms_node sroot, ms_node droot, int *n, uint64_t *floor)
{
    int rc = mv_journal_failed(mv, jn_step(mv->j, mv->id, MS_STEP_SYNCING, false));
    for (int k = 0; !rc && k < MAX_DELTA_PASSES; k++) {
        ms_move_pass s;
        pass_point(*n + 1, "delta");
        rc = run_pass(mv, sroot, droot, ++*n, "delta", *floor, floor, &s);
        if (!rc && (pass_work(&s) <= SMALL_PASS || s.ended_ns - s.started_ns < SMALL_PASS_NS))
            break;
    }
    return rc;
}

/*
 * The cutover's passes, under the lock: until one finds the copy equal
 * to the source and the source's stamp did not move while it looked
 * (a mail server still writing behind the hold).  That pass is the
 * verification: same folders, names, sizes, dates, UIDs, and for all
 * that changed since the pass before, same flags and bytes; what had not
 * changed was verified by the pass that copied it.
 */
static int final_passes(mover *mv, int64_t mailbox, ms_node sroot, ms_node droot, int *n,
                        uint64_t *floor)
{
    int rc = mv_take_stamp(mv, mailbox);
    if (rc)
        return rc;
    mv->restamp = true;
    for (int k = 0; k < MAX_FINAL_PASSES; k++) {
        ms_move_pass s;
        pass_point(*n + 1, "final");
        rc = run_pass(mv, sroot, droot, ++*n, "final", *floor, floor, &s);
        if (rc)
            return rc;
        int changed = mv_source_changed(mv, mailbox);
        if (changed < 0)
            return changed;
        if (!pass_work(&s) && !changed)
            return 0;
    }
    return mv_changed_behind(mv);
}

/* The mailbox to move: still the one of that name (not renamed away). */
static int still_there(mover *mv, const char *mailbox, int64_t id)
{
    ms_attr a;
    int rc = ms_lookup(mv->src, (ms_node){MS_ROOT, 0}, mailbox, &a);
    if (!rc && a.node.id != id)
        rc = -ENOENT;
    if (rc && !mv->error)
        mv->error = g_strdup_printf("the source mailbox %s is gone or was renamed: %s", mailbox,
                                    g_strerror(-rc));
    return rc;
}

/*
 * What reached the source between its last check (the final pass's
 * stamp) and its renaming into the retained copy: a delivery a mail server
 * finished in those milliseconds.  Copied into the mailbox where it lives
 * now, the retained copy left whole.  Once, right after the move: later
 * mail to the old place makes a new mailbox there (ms_carry_late), and a
 * message the user deletes afterwards must stay deleted.
 */
static void carry_last_moment(ms_store *src, ms_store *dst, const ms_move_info *mi, uint64_t floor)
{
    int64_t rid, carried = 0;
    ms_attr home;
    if (ms_hidden_find(src, MS_MB_RETAINED, mi->id, mi->mailbox, &rid) ||
        ms_lookup(dst, (ms_node){MS_ROOT, 0}, mi->newname, &home))
        return;
    int rc =
        mv_carry_folder(src, (ms_node){MS_MAILBOX, rid}, dst, home.node, floor, true, &carried);
    if (carried)
        ms_log(LOG_WARNING,
               "move %lld: %lld message(s) reached %s in %s at its last moment: "
               "copied into %s",
               (long long)mi->id, (long long)carried, mi->mailbox, mi->source, mi->target);
    if (rc)
        ms_log(LOG_ERR,
               "move %lld: looking for mail that reached the source at its last "
               "moment: %s (the retained copy keeps it: see mailfsctl undo)",
               (long long)mi->id, g_strerror(-rc));
}

/*
 * The move goes from state from to state to, only while it is in from
 * and this process's (jn_transition): -ESTALE with the reason in
 * mv->error when another process took it meanwhile (recovery, an undo
 * of the prepared move, another completer); mv_fail then leaves it.
 */
static int own_step(mover *mv, ms_move_state from, ms_move_state to)
{
    int rc = jn_transition(mv->j, mv->id, from, to, NULL);
    if (rc != -ESTALE)
        return mv_journal_failed(mv, rc);
    if (!mv->error)
        mv->error = g_strdup_printf("the move was taken from this process while it ran (it is "
                                    "no longer %s and ours): not %s",
                                    ms_move_state_name(from), ms_move_state_name(to));
    return rc;
}

/*
 * The online move of DESIGN 10: a bulk pass and delta passes with the
 * source writable, then (unless only preparing) the cutover: mount lock,
 * directory hold, sessions kicked, final passes until the copy equals
 * the source, directory switched, commit point, and the same finish as
 * every move.  A prepared move of the mailbox into dst is taken up where
 * its passes left it.
 */
int mv_online_move(ms_journal *j, ms_store *src, ms_store *dst, const char *mailbox,
                   const ms_move_opts *opts, int64_t *id_out)
{
    const char *newname = opts->newname ? opts->newname : mailbox;
    g_autofree char *jerr = NULL;
    if (ms_journal_verify(j, &jerr)) {
        ms_log(LOG_ERR, "move %s refused: %s", mailbox, jerr);
        return -EIO;
    }
    int64_t id = 0, other = 0;
    bool prepared =
        jn_find_prepared(j, ms_store_name(src), mailbox, ms_store_name(dst), newname, &id) == 0;
    if (!prepared && opts->mode == MS_MOVE_COMPLETE)
        return -ENOENT;
    ms_attr mb;
    int64_t total_messages = 0, total_bytes = 0;
    int rc = 0;
    /* Another move of it; or its prepared move's passes run elsewhere. */
    if ((jn_find_active(j, ms_store_name(src), mailbox, &other) == 0 && other != id) ||
        (prepared && jn_owner_alive(j, id)))
        rc = -EBUSY;
    if (!rc && !prepared)
        rc = mv_preflight(src, dst, mailbox, newname, false, &mb, &total_messages, &total_bytes,
                          NULL);
    else if (!rc)
        rc = ms_lookup(src, (ms_node){MS_ROOT, 0}, mailbox, &mb);
    if (!rc)
        rc = mv_preflight_directory(opts->dir, dst, mailbox);
    if (rc) {
        ms_log(LOG_INFO, "move %s from %s to %s refused: %s", mailbox, ms_store_name(src),
               ms_store_name(dst), ms_strerror(MS_OP_MOVE, rc));
        return rc;
    }
    ms_move_info mi;
    rc = mv_record(j, prepared ? id : 0, src, dst, mailbox, newname, total_messages, total_bytes,
                   id_out, &mi);
    if (rc)
        return rc;
    id = mi.id;
    mover mv = {.j = j, .src = src, .dst = dst, .id = id, .opts = opts, .uids = true};
    g_autoptr(GHashTable) synced = mv.synced =
        g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, synced_free);
    mv.messages = mi.done_messages;
    mv.bytes = mi.done_bytes;
    int n = 0;
    uint64_t floor = prepared ? last_floor(j, id, &n) : 0;
    ms_node sroot = mb.node;
    int64_t tid = 0;
    if (prepared) {
        ms_log(LOG_INFO, "move %lld: %s from %s to %s: prepared, %d passes so far", (long long)id,
               mailbox, mi.source, mi.target, n);
        rc = ms_hidden_find(dst, MS_MB_INCOMING, id, newname, &tid);
        if (rc && !mv.error)
            mv.error = g_strdup("the prepared copy is gone from the target store");
    } else {
        ms_log(LOG_INFO, "move %lld: %s from %s to %s as %s: %lld messages, %lld bytes, online",
               (long long)id, mailbox, mi.source, mi.target, newname, (long long)total_messages,
               (long long)total_bytes);
        g_autofree char *in = ms_hidden_name(MS_MB_INCOMING, id, newname);
        rc = ms_mailbox_create(dst, in, MS_MB_INCOMING, &mb, &tid);
        if (!rc)
            rc = ms_mailbox_set(dst, tid,
                                &(ms_mailbox_change){NULL, -1, -1, -1, ms_journal_id(j), id});
        if (!rc)
            rc = mv_journal_failed(&mv, jn_set_target_id(j, id, tid));
        if (!rc)
            rc = mv_journal_failed(&mv, jn_step(j, id, MS_STEP_COPYING, false));
        ms_move_pass s;
        pass_point(1, "bulk");
        if (!rc)
            rc = run_pass(&mv, sroot, (ms_node){MS_MAILBOX, tid}, ++n, "bulk", 0, &floor, &s);
        if (!rc)
            ms_fault("copied");
    }
    ms_node droot = {MS_MAILBOX, tid};
    /* Completing a prepared move is its cutover alone (its final passes
     * carry what changed since its last pass); preparing runs deltas. */
    if (!rc && (!prepared || opts->mode == MS_MOVE_PREPARE))
        rc = delta_passes(&mv, sroot, droot, &n, &floor);
    if (!rc)
        rc = still_there(&mv, mailbox, mb.node.id);
    if (!rc && opts->mode == MS_MOVE_PREPARE) {
        rc = own_step(&mv, prepared ? MS_MOVE_PREPARED : MS_MOVE_RUNNING, MS_MOVE_PREPARED);
        /* Ownerless between passes: the next ms_move of it adopts it. */
        if (!rc)
            rc = mv_journal_failed(&mv, jn_disown(j, id));
        if (!rc) {
            ms_log(LOG_INFO, "move %lld: prepared after %d passes: %lld messages", (long long)id, n,
                   (long long)mv.messages);
            g_free(mv.error);
            return 0;
        }
    }
    /* The cutover.  From here a crash rolls the move back, prepared or not. */
    if (!rc && prepared)
        rc = own_step(&mv, MS_MOVE_PREPARED, MS_MOVE_RUNNING);
    if (!rc)
        rc = mv_journal_failed(&mv, jn_step(j, id, MS_STEP_CUTOVER, false));
    if (!rc)
        rc = ms_mailbox_set(src, mb.node.id,
                            &(ms_mailbox_change){NULL, -1, id, -1, ms_journal_id(j), 0});
    int64_t locked_at = ms_now_ns();
    if (!rc)
        rc = mv_journal_failed(&mv, jn_locked(j, id, locked_at));
    if (!rc)
        ms_fault("locked");
    if (!rc)
        rc = hold_user(&mv, opts->dir, mailbox);
    if (!rc) {
        kick_sessions(opts->kick, mailbox, id);
        rc = final_passes(&mv, mb.node.id, sroot, droot, &n, &floor);
    }
    if (!rc)
        rc = mv_journal_failed(&mv, jn_step(j, id, MS_STEP_VERIFIED, false));
    if (!rc) {
        ms_log(LOG_INFO, "move %lld: copy equal to the source after %d passes: %lld messages",
               (long long)id, n, (long long)mv.messages);
        ms_fault("verified");
        rc = mv_directory_step(j, &mv, opts->dir, mailbox);
    }
    if (!rc)
        rc = mv_commit_point(j, &mv, mb.node.id);
    if (rc)
        return mv_fail(j, &mv, src, dst, opts->dir, &mi, rc);
    g_free(mv.error);
    (void)jn_step(j, id, MS_STEP_COMMITTED, false);
    ms_fault("committed");
    if (mv_roll_forward(j, src, dst, opts->dir, &mi, opts->retain_days, locked_at))
        return -EINPROGRESS;
    carry_last_moment(src, dst, &mi, floor);
    return 0;
}
