/*
 * check.c — directory against stores (DESIGN 5).
 *
 * One paged LDAP search for every entry, one listing of every store, then
 * the comparison in memory: 10,000 entries and mailboxes cost one round
 * of each, not one search per mailbox.  Fixes are explicit and narrow:
 * --fix-location rewrites only mismatched location attributes,
 * --remove-unknown-grantees only the grants to unknown names.
 */
#include "mailstore.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include <glib.h>

const char *ms_finding_name(ms_finding_kind k)
{
    static const char *const names[] = {"orphan",       "missing",         "mismatch",
                                        "duplicate",    "unknown-grantee", "pending-move",
                                        "expired-copy", "orphan-lock",     "orphan-copy"};
    return k < G_N_ELEMENTS(names) ? names[k] : "?";
}

void ms_finding_free(void *p)
{
    ms_finding *f = p;
    if (!f)
        return;
    g_free(f->mailbox);
    g_free(f->store);
    g_free(f->dn);
    g_free(f->detail);
    g_free(f);
}

static ms_finding *add(GPtrArray *out, ms_finding_kind k, const char *mailbox, const char *store,
                       const char *dn, char *detail)
{
    ms_finding *f = g_new0(ms_finding, 1);
    f->kind = k;
    f->mailbox = g_strdup(mailbox);
    f->store = g_strdup(store);
    f->dn = g_strdup(dn);
    f->detail = detail;
    g_ptr_array_add(out, f);
    return f;
}

typedef struct entry {
    char *dn;
    char *spec;
} entry;

static void entry_free(gpointer p)
{
    entry *e = p;
    g_free(e->dn);
    g_free(e->spec);
    g_free(e);
}

static int collect_entry(void *ctx, const char *name, const char *dn, const char *spec)
{
    GHashTable *entries = ctx;
    entry *e = g_new0(entry, 1);
    e->dn = g_strdup(dn);
    e->spec = g_strdup(spec);
    g_hash_table_replace(entries, g_strdup(name), e);
    return 0;
}

/* True when every attr=value of store_spec is in entry_spec. */
static bool spec_matches(const char *store_spec, const char *entry_spec)
{
    if (!store_spec || !*store_spec)
        return false;
    g_auto(GStrv) want = g_strsplit(store_spec, ";", -1);
    g_auto(GStrv) have = g_strsplit(entry_spec ? entry_spec : "", ";", -1);
    for (size_t i = 0; want[i]; i++) {
        char *w = g_strstrip(want[i]);
        if (*w && !g_strv_contains((const char *const *)have, w))
            return false;
    }
    return true;
}

typedef struct lister {
    GHashTable *where; /* mailbox name -> GPtrArray of store indices */
    size_t store;
    GPtrArray *names; /* this store's mailboxes, for the ACL pass */
} lister;

static int collect_mailbox(void *ctx, const char *name, const ms_attr *a, uint64_t cookie)
{
    (void)a;
    (void)cookie;
    lister *l = ctx;
    GArray *in = g_hash_table_lookup(l->where, name);
    if (!in) {
        in = g_array_new(FALSE, FALSE, sizeof(size_t));
        g_hash_table_insert(l->where, g_strdup(name), in);
    }
    g_array_append_val(in, l->store);
    g_ptr_array_add(l->names, g_strdup(name));
    return 0;
}

static void array_free(gpointer p) { g_array_free(p, TRUE); }

/* The grantee of one ACL line, or NULL for the special identifiers. */
static char *grantee_of(const char *line)
{
    g_autofree char *l = g_strstrip(g_strdup(line));
    char *sp = strrchr(l, ' ');
    if (!*l || !sp)
        return NULL;
    *sp = '\0';
    const char *g = l[0] == '-' ? l + 1 : l; /* negative rights name the same grantee */
    if (g_str_has_prefix(g, "user="))
        g += 5;
    if (!strcmp(g, "anyone") || !strcmp(g, "authenticated") || !strcmp(g, "owner") ||
        g_str_has_prefix(g, "group="))
        return NULL;
    return g_strdup(g);
}

/*
 * --fix-location for one mismatch: the entry pointed at the one store
 * that has the mailbox.  Not fixed, the finding's detail says why (the
 * directory's words), so the admin reads it once, next to the finding.
 */
static void fix_location(ms_directory *dir, ms_finding *f, ms_store *const *stores,
                         const GArray *in)
{
    const char *spec = ms_store_directory(stores[g_array_index(in, size_t, 0)]);
    g_autofree char *err = NULL;
    const char *why = NULL;
    if (in->len != 1)
        why = "the mailbox is in more than one store";
    else if (!spec)
        why = "its store has no directory = key";
    else if (ms_directory_write(dir, f->dn, spec, &err) != 0)
        why = err ? err : "the directory refused the change";
    if (!why) {
        f->fixed = true;
        return;
    }
    char *detail = g_strdup_printf("%s; not fixed: %s", f->detail, why);
    g_free(f->detail);
    f->detail = detail;
}

static int check_acl(ms_store *st, const char *mailbox, GHashTable *entries, const ms_check_opts *o,
                     GPtrArray *out)
{
    ms_attr a;
    char *acl = NULL;
    size_t len = 0;
    int rc = ms_lookup(st, (ms_node){MS_ROOT, 0}, mailbox, &a);
    if (!rc)
        rc = ms_xattr_get(st, a.node, "user.mail.acl", &acl, &len);
    if (rc)
        return rc == -ENODATA ? 0 : rc;
    g_autofree char *text = g_strndup(acl, len);
    g_free(acl);
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    GString *kept = g_string_new(NULL);
    GPtrArray *unknown = g_ptr_array_new();
    for (size_t i = 0; lines[i]; i++) {
        g_autofree char *g = grantee_of(lines[i]);
        if (g && !g_hash_table_contains(entries, g)) {
            g_ptr_array_add(unknown, add(out, MS_FIND_UNKNOWN_GRANTEE, mailbox, ms_store_name(st),
                                         NULL, g_strdup_printf("grant to %s", g)));
            continue;
        }
        if (*g_strstrip(lines[i]))
            g_string_append_printf(kept, "%s%s", kept->len ? "\n" : "", lines[i]);
    }
    rc = 0;
    if (o->remove_unknown_grantees && unknown->len) {
        rc = ms_xattr_set(st, a.node, "user.mail.acl", kept->str, kept->len, 0);
        for (guint i = 0; !rc && i < unknown->len; i++)
            ((ms_finding *)unknown->pdata[i])->fixed = true;
    }
    g_ptr_array_free(unknown, TRUE);
    g_string_free(kept, TRUE);
    return rc;
}

int ms_check(ms_store *const *stores, size_t n, ms_directory *dir, ms_journal *j,
             const ms_check_opts *o, GPtrArray **findings, char **err)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(ms_finding_free);
    GHashTable *entries = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, entry_free);
    GHashTable *where = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, array_free);
    /* Each store listed once: [i] its mailbox names, for the ACL pass. */
    GPtrArray **names = g_new0(GPtrArray *, n ? n : 1);
    for (size_t i = 0; i < n; i++)
        names[i] = g_ptr_array_new_with_free_func(g_free);
    int rc = 0;

    /* 1. the directory, in one paged search */
    if (dir) {
        GPtrArray *attrs = g_ptr_array_new_with_free_func(g_free);
        for (size_t i = 0; i < n; i++) {
            g_auto(GStrv) parts = g_strsplit(
                ms_store_directory(stores[i]) ? ms_store_directory(stores[i]) : "", ";", -1);
            for (size_t k = 0; parts[k]; k++) {
                char *eq = strchr(parts[k], '=');
                g_autofree char *attr =
                    eq ? g_strstrip(g_strndup(parts[k], (gsize)(eq - parts[k]))) : NULL;
                bool seen = false;
                for (guint m = 0; attr && m < attrs->len; m++)
                    seen = seen || !g_ascii_strcasecmp(attrs->pdata[m], attr);
                if (attr && *attr && !seen)
                    g_ptr_array_add(attrs, g_steal_pointer(&attr));
            }
        }
        g_ptr_array_add(attrs, NULL);
        rc = ms_directory_scan(dir, (const char *const *)attrs->pdata, collect_entry, entries, err);
        g_ptr_array_free(attrs, TRUE);
    }
    /* 2. every store's mailboxes */
    for (size_t i = 0; !rc && i < n; i++) {
        lister l = {where, i, names[i]};
        rc = ms_list(stores[i], (ms_node){MS_ROOT, 0}, 0, collect_mailbox, &l);
        if (rc && err)
            *err = g_strdup_printf("%s: listing failed: %s", ms_store_name(stores[i]),
                                   g_strerror(-rc));
    }
    /* 3. compare */
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, where);
    while (!rc && g_hash_table_iter_next(&it, &k, &v)) {
        const char *name = k;
        GArray *in = v;
        if (in->len > 1) {
            GString *s = g_string_new("visible in");
            for (guint i = 0; i < in->len; i++)
                g_string_append_printf(s, " %s",
                                       ms_store_name(stores[g_array_index(in, size_t, i)]));
            add(out, MS_FIND_DUPLICATE, name, NULL, NULL, g_string_free(s, FALSE));
        }
        if (dir && !g_hash_table_contains(entries, name))
            add(out, MS_FIND_ORPHAN, name, ms_store_name(stores[g_array_index(in, size_t, 0)]),
                NULL, g_strdup("no directory entry"));
    }
    if (dir) {
        g_hash_table_iter_init(&it, entries);
        while (!rc && g_hash_table_iter_next(&it, &k, &v)) {
            const char *name = k;
            entry *e = v;
            ssize_t loc = -1;
            for (size_t i = 0; i < n && loc < 0; i++)
                if (spec_matches(ms_store_directory(stores[i]), e->spec))
                    loc = (ssize_t)i;
            GArray *in = g_hash_table_lookup(where, name);
            bool there = false;
            for (guint i = 0; in && i < in->len; i++)
                there = there || g_array_index(in, size_t, i) == (size_t)loc;
            if (!in) {
                if (loc >= 0)
                    add(out, MS_FIND_MISSING, name, ms_store_name(stores[loc]), e->dn,
                        g_strdup_printf("entry says %s, store has no such mailbox", e->spec));
                continue;
            }
            if (there)
                continue;
            size_t real = g_array_index(in, size_t, 0);
            ms_finding *f = add(out, MS_FIND_MISMATCH, name, ms_store_name(stores[real]), e->dn,
                                g_strdup_printf("entry says %s, mailbox is in %s", e->spec,
                                                ms_store_name(stores[real])));
            if (o->fix_location)
                fix_location(dir, f, stores, in);
        }
        /* 4. ACL grantees */
        for (size_t i = 0; !rc && i < n; i++)
            for (guint m = 0; !rc && m < names[i]->len; m++)
                rc = check_acl(stores[i], names[i]->pdata[m], entries, o, out);
    }
    /* 5. the journal: moves left pending, retained copies past their time */
    if (!rc && j) {
        ms_move_info *moves = NULL;
        size_t nm = 0;
        rc = ms_journal_list(j, &moves, &nm);
        int64_t now = (int64_t)time(NULL);
        for (size_t i = 0; !rc && i < nm; i++) {
            ms_move_info *m = &moves[i];
            if (ms_move_unsettled(m))
                add(out, MS_FIND_PENDING_MOVE, m->mailbox, m->source, NULL,
                    g_strdup_printf("move %lld %s -> %s %s at step %s (mailfsctl recover)",
                                    (long long)m->id, m->source, m->target,
                                    ms_move_state_name(m->state), ms_move_step_name(m->step)));
            else if (m->state == MS_MOVE_DONE && m->retain_until && m->retain_until < now)
                add(out, MS_FIND_EXPIRED_COPY, m->mailbox, m->source, NULL,
                    g_strdup_printf("move %lld: source copy retained past its time (mailfsctl "
                                    "purge)",
                                    (long long)m->id));
        }
        g_free(moves);
    }
    /* 6. locks and hidden copies the journal does not account for */
    if (!rc && j) {
        int left = ms_orphans(j, stores, n, o->fix_orphans ? dir : NULL, o->retain_days,
                              o->fix_orphans, out);
        if (left < 0) {
            rc = left;
            if (err)
                *err = g_strdup_printf("looking for orphan locks and copies: %s", g_strerror(-rc));
        }
    }
    g_hash_table_destroy(entries);
    g_hash_table_destroy(where);
    for (size_t i = 0; i < n; i++)
        g_ptr_array_free(names[i], TRUE);
    g_free(names);
    if (rc) {
        g_ptr_array_free(out, TRUE);
        return rc;
    }
    *findings = out;
    return 0;
}
