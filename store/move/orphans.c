/*
 * orphans.c — locks and hidden copies that no journal entry explains.
 *
 * A move leaves marks in its stores: the source's lock, the target's
 * hidden incoming copy, and once it finished the retained source copy
 * (and the shown target).  Each names its move and the journal it is
 * recorded in (ms_journal_id).  When that journal is deleted or replaced
 * the marks stay behind: a mailbox locked for ever, copies nobody purges.
 * Here they are grouped by (journal, move) and settled from what the
 * stores alone show.  That is enough because a move changes nothing a
 * user can see before its target is shown, and the source is never
 * written while locked:
 *
 *   source locked, copy hidden    target never shown: roll back
 *   source locked, target shown   past the commit point: finish
 *   source locked, nothing else   a move that died early: unlock
 *   hidden copy alone             an import or a cut-short rollback: drop
 *   hidden copy, source retained  finished but for showing it: show it
 *   retained copy                 the fallback copy: entered in this
 *                                 journal as a finished move, so that
 *                                 moves, undo and purge know it again
 *
 * Where a directory is configured, the mailbox's entry is pointed at the
 * store that has the mailbox afterwards (the saved values went with the
 * journal).
 */
#include "journal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <glib.h>

/* One mark: a mailbox row of a store that belongs to a move. */
typedef struct mark {
    ms_store *st;
    ms_mailbox_info info;
} mark;

/* Every mark of one (journal, move). */
typedef struct group {
    char journal[MS_JOURNAL_ID_LEN];
    int64_t move;
    mark *locked;   /* visible source, locked */
    mark *incoming; /* hidden target copy */
    mark *retained; /* hidden source copy */
    mark *shown;    /* visible target */
} group;

typedef struct scan {
    ms_journal *j;
    ms_store *st;
    GHashTable *groups; /* "journal/move" -> group* */
    GPtrArray *marks;   /* of mark*, owned */
} scan;

/* The move id in a hidden name (ms_hidden_parse), or 0. */
static int64_t id_in_name(const char *name)
{
    int64_t id;
    const char *plain;
    return ms_hidden_parse(name, &id, &plain) ? id : 0;
}

/* The mailbox's own name inside a hidden name. */
static const char *plain_name(const char *name)
{
    int64_t id;
    const char *plain;
    return ms_hidden_parse(name, &id, &plain) ? plain : name;
}

/* Marks written before journals had ids belong to this site's journal. */
static const char *journal_or_ours(scan *s, const char *journal)
{
    return journal[0] ? journal : ms_journal_id(s->j);
}

/* The journal's word on move id of journal: its state, or MS_MOVE_UNKNOWN
 * when it has none (another journal's move, or no such move). */
static ms_move_state state_of(scan *s, const char *journal, int64_t move)
{
    ms_move_info mi;
    if (!strcmp(journal, ms_journal_id(s->j)) && ms_journal_get(s->j, move, &mi) == 0)
        return mi.state;
    return MS_MOVE_UNKNOWN;
}

/*
 * True when the journal explains a mark of move id: a lock or incoming
 * copy of a move it still has to settle (recovery's business), a retained
 * copy of a finished move (purge's).  Anything else (no such move, or one
 * the journal says is over) is a leftover to settle from the stores.
 */
static bool explained(scan *s, const char *journal, int64_t move, ms_mb_state kind)
{
    ms_move_state state = state_of(s, journal, move);
    if (kind == MS_MB_RETAINED)
        return state == MS_MOVE_DONE || state == MS_MOVE_UNDONE;
    return state == MS_MOVE_RUNNING || state == MS_MOVE_COMMITTED || state == MS_MOVE_PREPARED;
}

static group *group_of(scan *s, const char *journal, int64_t move)
{
    g_autofree char *key = g_strdup_printf("%s/%lld", journal, (long long)move);
    group *g = g_hash_table_lookup(s->groups, key);
    if (!g) {
        g = g_new0(group, 1);
        g_strlcpy(g->journal, journal, sizeof g->journal);
        g->move = move;
        g_hash_table_insert(s->groups, g_steal_pointer(&key), g);
    }
    return g;
}

static mark *keep(scan *s, const ms_mailbox_info *info)
{
    mark *m = g_new(mark, 1);
    m->st = s->st;
    m->info = *info;
    g_ptr_array_add(s->marks, m);
    return m;
}

/* Sorts one mailbox row of s->st into the group of the move it belongs to. */
static int sort_mark(void *ctx, const ms_mailbox_info *info)
{
    scan *s = ctx;
    if (info->lock_move && info->state == MS_MB_VISIBLE) {
        const char *jid = journal_or_ours(s, info->lock_journal);
        if (!explained(s, jid, info->lock_move, MS_MB_VISIBLE))
            group_of(s, jid, info->lock_move)->locked = keep(s, info);
    }
    if (info->state != MS_MB_INCOMING && info->state != MS_MB_RETAINED &&
        !(info->state == MS_MB_VISIBLE && info->move_id && !info->lock_move))
        return 0;
    int64_t move = info->move_id ? info->move_id : id_in_name(info->name);
    if (!move)
        return 0;
    const char *jid = journal_or_ours(s, info->move_journal);
    if (info->state == MS_MB_VISIBLE) {
        /* A moved-in mailbox is a mark only next to its locked source:
         * collected here, acted on only in a group that has one. */
        group_of(s, jid, move)->shown = keep(s, info);
        return 0;
    }
    if (explained(s, jid, move, info->state))
        return 0;
    group *g = group_of(s, jid, move);
    if (info->state == MS_MB_INCOMING)
        g->incoming = keep(s, info);
    else
        g->retained = keep(s, info);
    return 0;
}

static ms_finding *finding(GPtrArray *out, ms_finding_kind k, const mark *m, const group *g,
                           const char *what)
{
    ms_finding *f = g_new0(ms_finding, 1);
    f->kind = k;
    f->store = g_strdup(ms_store_name(m->st));
    f->mailbox = g_strdup(plain_name(m->info.name));
    f->detail =
        g_strdup_printf("%s: move %lld of journal %s, which the site's journal does not know", what,
                        (long long)g->move, g->journal);
    g_ptr_array_add(out, f);
    return f;
}

/* Points mailbox's directory entry at st, where the mailbox is now. */
static int point_directory(ms_directory *dir, ms_store *st, const char *mailbox, char **dn_out)
{
    const char *spec = ms_store_directory(st);
    if (!dir || !spec)
        return 0;
    g_autofree char *dn = NULL, *err = NULL;
    int rc = ms_directory_entry(dir, mailbox, &dn, &err);
    if (rc == -ENOENT) {
        ms_log(LOG_WARNING, "%s: no directory entry to point at %s", mailbox, ms_store_name(st));
        return 0;
    }
    if (!rc)
        rc = ms_directory_write(dir, dn, spec, &err);
    if (rc) {
        ms_log(LOG_ERR, "%s: cannot point the directory at %s: %s", mailbox, ms_store_name(st),
               err ? err : g_strerror(-rc));
        return rc;
    }
    *dn_out = g_steal_pointer(&dn);
    return 0;
}

/*
 * Enters retained copy r in j as a finished move of its own and renames
 * it after that move, so that `moves`, undo and purge find it.
 */
static int adopt_retained(ms_journal *j, const group *g, const mark *r, int retain_days)
{
    const char *name = plain_name(r->info.name);
    const mark *t = g->shown;
    int64_t until = r->info.retain_until;
    if (until <= 0)
        until = (int64_t)time(NULL) + (int64_t)retain_days * 86400;
    g_autofree char *why = g_strdup_printf("entered from the stores: move %lld of journal %s",
                                           (long long)g->move, g->journal);
    int64_t id;
    int rc = jn_record_done(j, name, t ? t->info.name : name, ms_store_name(r->st),
                            t ? ms_store_name(t->st) : "", until, why, &id);
    if (rc)
        return rc;
    g_autofree char *ret = ms_hidden_name(MS_MB_RETAINED, id, name);
    rc = ms_mailbox_set(r->st, r->info.id,
                        &(ms_mailbox_change){ret, -1, -1, until, ms_journal_id(j), id});
    if (!rc && t)
        rc = ms_mailbox_set(t->st, t->info.id,
                            &(ms_mailbox_change){NULL, -1, -1, -1, ms_journal_id(j), id});
    if (!rc)
        ms_log(LOG_INFO, "%s: retained copy in %s entered as move %lld, kept until %lld", name,
               ms_store_name(r->st), (long long)id, (long long)until);
    return rc;
}

/* Source locked, target never shown: back to the source. */
static int roll_back_group(const group *g, ms_directory *dir, char **dn)
{
    const mark *l = g->locked, *in = g->incoming;
    int rc = point_directory(dir, l->st, l->info.name, dn);
    if (!rc)
        rc = ms_mailbox_set(l->st, l->info.id, &(ms_mailbox_change){NULL, -1, 0, -1, NULL, 0});
    if (!rc && in)
        rc = ms_mailbox_drop(in->st, in->info.id);
    if (!rc)
        ms_log(LOG_INFO, "%s: orphan move %lld rolled back: unlocked in %s%s", l->info.name,
               (long long)g->move, ms_store_name(l->st), in ? ", hidden copy dropped" : "");
    return rc;
}

/* Source locked, target shown: finish, keeping the source as fallback. */
static int finish_group(ms_journal *j, group *g, ms_directory *dir, int retain_days, char **dn)
{
    mark *l = g->locked, *t = g->shown;
    int rc = point_directory(dir, t->st, t->info.name, dn);
    int64_t until = (int64_t)time(NULL) + (int64_t)retain_days * 86400;
    g_autofree char *ret = ms_hidden_name(MS_MB_RETAINED, g->move, l->info.name);
    if (!rc)
        rc = ms_mailbox_set(
            l->st, l->info.id,
            &(ms_mailbox_change){ret, MS_MB_RETAINED, 0, until, g->journal, g->move});
    if (rc)
        return rc;
    ms_log(LOG_INFO, "%s: orphan move %lld finished: shown in %s, retained in %s", t->info.name,
           (long long)g->move, ms_store_name(t->st), ms_store_name(l->st));
    g_strlcpy(l->info.name, ret, sizeof l->info.name);
    l->info.state = MS_MB_RETAINED;
    l->info.retain_until = until;
    g->retained = l;
    return adopt_retained(j, g, l, retain_days);
}

/* A hidden copy whose source is already retained: show it. */
static int show_group(const group *g)
{
    const mark *in = g->incoming;
    const char *name = plain_name(in->info.name);
    ms_attr other;
    if (ms_lookup(in->st, (ms_node){MS_ROOT, 0}, name, &other) == 0) {
        ms_log(LOG_ERR, "%s: cannot show the copy of orphan move %lld in %s: the name is taken",
               name, (long long)g->move, ms_store_name(in->st));
        return -EEXIST;
    }
    return ms_mailbox_set(in->st, in->info.id,
                          &(ms_mailbox_change){name, MS_MB_VISIBLE, 0, -1, g->journal, g->move});
}

typedef struct settle {
    ms_journal *j;
    ms_directory *dir;
    int retain_days;
    bool fix;
    GPtrArray *out;
    int unfixed;
    int settled; /* moves (groups) settled */
} settle;

static void settle_group(settle *x, group *g)
{
    if (!g->locked && !g->incoming && !g->retained)
        return; /* a moved-in mailbox whose move is simply forgotten */
    ms_finding *fl = NULL, *fi = NULL, *fr = NULL;
    if (g->locked)
        fl = finding(x->out, MS_FIND_ORPHAN_LOCK, g->locked, g,
                     g->shown      ? "locked, its copy already shown in another store"
                     : g->incoming ? "locked, its hidden copy never shown"
                                   : "locked, with no copy anywhere");
    if (g->incoming)
        fi = finding(x->out, MS_FIND_ORPHAN_COPY, g->incoming, g,
                     g->locked     ? "hidden incoming copy of a locked mailbox"
                     : g->retained ? "hidden incoming copy; its source is already retained"
                                   : "hidden incoming copy with no source");
    if (g->retained)
        fr = finding(x->out, MS_FIND_ORPHAN_COPY, g->retained, g, "retained source copy");
    int n = (fl != NULL) + (fi != NULL) + (fr != NULL);
    if (!x->fix) {
        x->unfixed += n;
        return;
    }
    g_autofree char *dn = NULL;
    int rc;
    if (g->locked && g->shown)
        rc = finish_group(x->j, g, x->dir, x->retain_days, &dn);
    else if (g->locked)
        rc = roll_back_group(g, x->dir, &dn);
    else if (g->incoming && g->retained)
        rc = show_group(g);
    else if (g->incoming) {
        rc = ms_mailbox_drop(g->incoming->st, g->incoming->info.id);
        if (!rc)
            ms_log(LOG_INFO,
                   "%s: orphan hidden copy of move %lld dropped from %s (its source "
                   "was never locked or is gone)",
                   g->incoming->info.name, (long long)g->move, ms_store_name(g->incoming->st));
    } else
        rc = 0;
    if (!rc && g->retained && !(g->locked && g->shown))
        rc = adopt_retained(x->j, g, g->retained, x->retain_days);
    ms_finding *all[] = {fl, fi, fr};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) {
        if (!all[i])
            continue;
        all[i]->fixed = rc == 0;
        if (dn && !all[i]->dn)
            all[i]->dn = g_strdup(dn);
    }
    if (rc) {
        ms_log(LOG_ERR, "orphan move %lld of journal %s not settled: %s", (long long)g->move,
               g->journal, ms_strerror(MS_OP_MOVE, rc));
        x->unfixed += n;
    } else {
        x->settled++;
    }
}

int mv_orphans(ms_journal *j, ms_store *const *stores, size_t n, ms_directory *dir, int retain_days,
               bool fix, GPtrArray *findings, int *settled)
{
    scan s = {.j = j,
              .groups = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free),
              .marks = g_ptr_array_new_with_free_func(g_free)};
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        s.st = stores[i];
        rc = ms_mailbox_scan(stores[i], sort_mark, &s);
    }
    settle x = {.j = j, .dir = dir, .retain_days = retain_days, .fix = fix, .out = findings};
    if (!rc) {
        /* In a fixed order, so that two runs report alike. */
        GList *keys = g_list_sort(g_hash_table_get_keys(s.groups), (GCompareFunc)strcmp);
        for (GList *k = keys; k; k = k->next)
            settle_group(&x, g_hash_table_lookup(s.groups, k->data));
        g_list_free(keys);
    }
    g_hash_table_destroy(s.groups);
    g_ptr_array_free(s.marks, TRUE);
    if (settled)
        *settled = x.settled;
    return rc ? rc : x.unfixed;
}

int ms_orphans(ms_journal *j, ms_store *const *stores, size_t n, ms_directory *dir, int retain_days,
               bool fix, GPtrArray *findings)
{
    return mv_orphans(j, stores, n, dir, retain_days, fix, findings, NULL);
}
