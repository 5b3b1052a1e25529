/*
 * mailfsctl.c — the administrator's command line.  It calls the same
 * store library as the daemon, so every command works with or without
 * a mount; a mounted daemon sees the change (listings are not cached,
 * directory attributes for at most one second).
 *
 * Exit codes: 0 success, 1 failure, 2 usage.  deliver uses sysexits(3)
 * codes instead, which MTAs understand (75 = try again later).
 */
#include "mailstore.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <glib.h>

typedef struct ctl {
    const char *config_path;
    ms_config *cfg;
    GPtrArray *open; /* stores opened for the journal commands */
    ms_directory *dir;
} ctl;

static void usage(FILE *f)
{
    fprintf(f, "usage: mailfsctl [-c CONFIG] COMMAND [ARGS]\n\n"
               "commands:\n"
               "  store create NAME                 create the database of [store NAME]\n"
               "  store list                        mailboxes, messages, bytes per store\n"
               "  mailbox create STORE MAILBOX      create a mailbox (with an INBOX)\n"
               "  deliver [--flags F] STORE MAILBOX [FOLDER] < MESSAGE\n"
               "                                    store one message durably (MTA use)\n"
               "  move MAILBOX TARGET_STORE         move a mailbox (the engine mv uses)\n"
               "  import FILE.pst STORE MAILBOX     import a PST/OST file as a new mailbox\n"
               "  compact STORE                     give the store's free space back (online)\n"
               "  moves [--json]                    moves with state, progress, rate, ETA\n"
               "  recover                           settle moves a crash left unfinished\n"
               "  undo ID                           move a finished move back, with new mail\n"
               "  purge [--all]                     drop retained source copies past retention\n"
               "  check [--json] [--fix-location] [--remove-unknown-grantees]\n"
               "                                    directory against stores (exit 0 clean,\n"
               "                                    1 findings, 2 error)\n\n"
               "CONFIG defaults to $MAILFS_CONFIG, then /etc/mailfs/mailfs.conf.\n"
               "See mailfsctl(8).\n");
}

static int load_config(ctl *c)
{
    char *err = NULL;
    int rc = ms_config_load(c->config_path, &c->cfg, &err);
    if (rc) {
        fprintf(stderr, "mailfsctl: %s\n", err);
        g_free(err);
    }
    return rc;
}

/* Opens the store called name; prints why not. */
static int open_store(ctl *c, const char *name, int flags, ms_store **st)
{
    const ms_store_conf *sc = ms_config_find_store(c->cfg, name);
    if (!sc) {
        fprintf(stderr, "mailfsctl: %s: no [store %s] in the configuration\n", c->config_path,
                name);
        return -ENOENT;
    }
    char *err = NULL;
    int rc = ms_store_open(sc, flags, st, &err);
    if (rc) {
        fprintf(stderr, "mailfsctl: %s\n", err ? err : g_strerror(-rc));
        g_free(err);
    }
    return rc;
}

static int cmd_store_create(ctl *c, const char *name)
{
    ms_store *st;
    if (open_store(c, name, MS_OPEN_CREATE, &st))
        return 1;
    printf("created store %s at %s\n", name, ms_config_find_store(c->cfg, name)->path);
    ms_store_close(st);
    return 0;
}

static char *human(int64_t bytes)
{
    return g_format_size_full((guint64)bytes, G_FORMAT_SIZE_IEC_UNITS);
}

static int cmd_store_list(ctl *c)
{
    int ret = 0;
    printf("%-12s %-7s %9s %10s %10s %10s %12s  %s\n", "STORE", "BACKEND", "MAILBOXES", "MESSAGES",
           "BYTES", "FILE", "RECLAIMABLE", "PATH");
    for (size_t i = 0; i < ms_config_store_count(c->cfg); i++) {
        const ms_store_conf *sc = ms_config_store(c->cfg, i);
        ms_store *st;
        char *err = NULL;
        int rc = ms_store_open(sc, 0, &st, &err);
        if (rc) {
            fprintf(stderr, "mailfsctl: %s\n", err ? err : g_strerror(-rc));
            g_free(err);
            ret = 1;
            continue;
        }
        ms_store_stats s;
        rc = ms_store_stats_get(st, &s);
        if (rc) {
            fprintf(stderr, "mailfsctl: %s: %s\n", sc->path, g_strerror(-rc));
            ret = 1;
        } else {
            g_autofree char *b = human(s.bytes), *f = human(s.file_bytes),
                            *r = human(s.reclaimable_bytes);
            printf("%-12s %-7s %9lld %10lld %10s %10s %12s  %s\n", sc->name, sc->backend,
                   (long long)s.mailboxes, (long long)s.messages, b, f, r, sc->path);
        }
        ms_store_close(st);
    }
    return ret;
}

static int cmd_mailbox_create(ctl *c, const char *store, const char *mailbox)
{
    ms_store *st;
    if (open_store(c, store, 0, &st))
        return 1;
    ms_attr mb, inbox;
    int rc = ms_mkdir(st, (ms_node){MS_ROOT, 0}, mailbox, 0755, getuid(), getgid(), &mb);
    if (!rc)
        rc = ms_mkdir(st, mb.node, "INBOX", 0755, getuid(), getgid(), &inbox);
    if (rc)
        fprintf(stderr, "mailfsctl: mailbox create %s/%s: %s\n", store, mailbox,
                rc == -EEXIST ? "a mailbox of that name exists" : g_strerror(-rc));
    else
        printf("created mailbox %s in %s\n", mailbox, store);
    ms_store_close(st);
    return rc ? 1 : 0;
}

/* sysexits for an MTA: temporary trouble is retried, the rest bounces. */
static int deliver_exit(int rc)
{
    switch (-rc) {
    case 0:
        return EX_OK;
    case ENOENT:
        return EX_NOUSER;
    case EBUSY:
    case ENOSPC:
    case EAGAIN:
    case EIO:
        return EX_TEMPFAIL;
    case EROFS:
    case EACCES:
        return EX_NOPERM;
    default:
        return EX_SOFTWARE;
    }
}

/* Finds mailbox/folder; INBOX is created on first delivery, like an LDA. */
static int deliver_target(ms_store *st, const char *mailbox, const char *folder, ms_node *out)
{
    ms_node mb;
    int rc = ms_resolve(st, mailbox, &mb);
    if (rc)
        return rc;
    g_autofree char *path = g_strdup_printf("%s/%s", mailbox, folder);
    rc = ms_resolve(st, path, out);
    if (rc == -ENOENT && !strcmp(folder, "INBOX")) {
        ms_attr a;
        rc = ms_mkdir(st, mb, "INBOX", 0755, getuid(), getgid(), &a);
        if (!rc)
            *out = a.node;
    }
    return rc;
}

static int cmd_deliver(ctl *c, int argc, char **argv)
{
    const char *flags = NULL;
    if (argc >= 2 && !strcmp(argv[0], "--flags")) {
        flags = argv[1];
        argc -= 2;
        argv += 2;
    }
    if (argc < 2 || argc > 3) {
        usage(stderr);
        return EX_USAGE;
    }
    const char *folder = argc == 3 ? argv[2] : "INBOX";
    ms_store *st;
    int rc = open_store(c, argv[0], 0, &st);
    if (rc)
        return deliver_exit(rc);
    ms_node f;
    ms_writer *w = NULL;
    rc = deliver_target(st, argv[1], folder, &f);
    if (!rc)
        rc = ms_writer_deliver(st, f, &w);
    if (!rc && flags) {
        /* The same values as setfattr: checked strictly, stored canonical. */
        g_autofree char *canon = NULL;
        size_t len = 0;
        rc = ms_flags_normalize(flags, strlen(flags), &canon, &len);
        if (!rc)
            rc = ms_writer_set_flags(w, canon, len);
        else
            fprintf(stderr, "mailfsctl: deliver: --flags '%s': not IMAP flags\n", flags);
    }
    enum { BUF = 128 * 1024 };
    g_autofree char *buf = g_malloc(BUF);
    for (int64_t off = 0; !rc;) {
        ssize_t n = read(STDIN_FILENO, buf, BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = -errno;
        if (n <= 0)
            break;
        ssize_t m = ms_writer_pwrite(w, buf, (size_t)n, off);
        if (m < 0)
            rc = (int)m;
        off += n;
    }
    ms_attr a;
    if (!rc)
        rc = ms_writer_commit(w, true, NULL, &a);
    ms_writer_close(w);
    if (rc)
        fprintf(stderr, "mailfsctl: deliver to %s/%s/%s: %s\n", argv[0], argv[1], folder,
                g_strerror(-rc));
    ms_store_close(st);
    return deliver_exit(rc);
}

/* Opens (once) and returns the store called name, for the journal. */
static ms_store *store_by_name(void *ctx, const char *name)
{
    ctl *c = ctx;
    for (guint i = 0; i < c->open->len; i++) {
        ms_store *st = g_ptr_array_index(c->open, i);
        if (!strcmp(ms_store_name(st), name))
            return st;
    }
    ms_store *st;
    if (!ms_config_find_store(c->cfg, name) || open_store(c, name, 0, &st))
        return NULL;
    g_ptr_array_add(c->open, st);
    return st;
}

static int open_journal(ctl *c, ms_journal **j)
{
    char *err = NULL;
    int rc;
    if (!c->dir && ms_config_directory(c->cfg) &&
        (rc = ms_directory_open(ms_config_directory(c->cfg), &c->dir, &err)) != 0) {
        fprintf(stderr, "mailfsctl: %s\n", err);
        g_free(err);
        return rc;
    }
    g_clear_pointer(&err, g_free);
    rc = ms_journal_open(ms_config_journal(c->cfg), j, &err);
    if (rc) {
        fprintf(stderr, "mailfsctl: %s\n", err);
        g_free(err);
    }
    return rc;
}

/* The store that holds a visible mailbox of that name, or NULL. */
static ms_store *find_mailbox(ctl *c, const char *mailbox)
{
    for (size_t i = 0; i < ms_config_store_count(c->cfg); i++) {
        ms_store *st = store_by_name(c, ms_config_store(c->cfg, i)->name);
        ms_attr a;
        if (st && ms_lookup(st, (ms_node){MS_ROOT, 0}, mailbox, &a) == 0)
            return st;
    }
    return NULL;
}

static const char *move_error(int rc)
{
    switch (-rc) {
    case EEXIST:
    case ENOTEMPTY:
        return "a mailbox of that name exists in the target store";
    case EBUSY:
        return "the mailbox is being moved already";
    case EROFS:
        return "a store is read-only";
    case ENOSPC:
        return "not enough free space in the target (twice the mailbox is needed)";
    case EINTR:
        return "interrupted; rolled back";
    case EIO:
        return "failed and rolled back (see mailfsctl moves and the log)";
    default:
        return g_strerror(-rc);
    }
}

static int cmd_move(ctl *c, const char *mailbox, const char *target)
{
    ms_journal *j;
    if (open_journal(c, &j))
        return 1;
    ms_store *dst = store_by_name(c, target);
    ms_store *src = find_mailbox(c, mailbox);
    int rc = !dst ? -ENOENT : !src ? -ENOENT : src == dst ? -EEXIST : 0;
    int64_t id = 0;
    if (!rc) {
        ms_move_opts o = {.retain_days = ms_config_retain_days(c->cfg), .dir = c->dir};
        rc = ms_move(j, src, dst, mailbox, &o, &id);
    }
    if (rc)
        fprintf(stderr, "mailfsctl: move %s to %s: %s\n", mailbox, target,
                !dst   ? "no such store"
                : !src ? "no such mailbox in any store"
                       : move_error(rc));
    else
        printf("moved %s from %s to %s (move %lld)\n", mailbox, ms_store_name(src), target,
               (long long)id);
    ms_journal_close(j);
    return rc ? 1 : 0;
}

static int cmd_import(ctl *c, const char *file, const char *target, const char *mailbox)
{
    ms_journal *j;
    if (open_journal(c, &j))
        return 1;
    ms_store *dst = store_by_name(c, target);
    int rc = dst ? 0 : -ENOENT;
    int64_t id = 0;
    if (!rc) {
        ms_move_opts o = {.retain_days = ms_config_retain_days(c->cfg)};
        rc = ms_import(j, file, dst, mailbox, ms_config_spool(c->cfg), &o, &id);
    }
    if (rc)
        fprintf(stderr, "mailfsctl: import %s into %s/%s: %s\n", file, target, mailbox,
                !dst                    ? "no such store"
                : id == 0 && rc == -EIO ? "not imported: the file cannot be read (see above)"
                                        : move_error(rc));
    else
        printf("imported %s as %s in %s (move %lld)\n", file, mailbox, target, (long long)id);
    ms_journal_close(j);
    return rc ? 1 : 0;
}

/* Every move of the journal (g_free *mv); prints why not. */
static int journal_moves(ctl *c, ms_move_info **mv, size_t *n)
{
    ms_journal *j;
    int rc = open_journal(c, &j);
    if (rc)
        return rc;
    rc = ms_journal_list(j, mv, n);
    if (rc)
        fprintf(stderr, "mailfsctl: %s: %s\n", ms_config_journal(c->cfg), g_strerror(-rc));
    ms_journal_close(j);
    return rc;
}

/*
 * Compaction shrinks the store's files in place.  It is refused while a
 * move into or out of the store is unsettled: a rollback or roll-forward
 * may still need what is there, and the hidden copy is mid-write.
 */
static int cmd_compact(ctl *c, const char *name)
{
    ms_move_info *mv = NULL;
    size_t n = 0;
    if (journal_moves(c, &mv, &n))
        return 1;
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        if (ms_move_unsettled(&mv[i]) &&
            (!strcmp(mv[i].source, name) || !strcmp(mv[i].target, name))) {
            fprintf(stderr,
                    "mailfsctl: compact %s: refused: move %lld of %s is in progress (state %s, "
                    "step %s); wait for it or run mailfsctl recover\n",
                    name, (long long)mv[i].id, mv[i].mailbox, mv[i].state, mv[i].step);
            rc = -EBUSY;
        }
    }
    g_free(mv);
    if (rc)
        return 1;
    ms_store *st = store_by_name(c, name);
    if (!st)
        return 1;
    int64_t before = 0, after = 0;
    rc = ms_store_compact(st, &before, &after);
    if (rc) {
        fprintf(stderr, "mailfsctl: compact %s: %s\n", name,
                rc == -EBUSY   ? "the store stayed locked by another process; try again"
                : rc == -EROFS ? "the store is read-only"
                               : g_strerror(-rc));
        return 1;
    }
    g_autofree char *b = human(before), *a = human(after), *f = human(before - after);
    printf("compacted %s: %s -> %s (%s freed, %d%%)\n", name, b, a, f,
           before > 0 ? (int)(100 * (before - after) / before) : 0);
    return 0;
}

/* Bytes per second and seconds left, from what the journal says. */
static void move_rate(const ms_move_info *m, double *rate, double *eta)
{
    int64_t end = m->finished_ns ? m->finished_ns : m->updated_ns;
    double secs = (double)(end - m->started_ns) / 1e9;
    *rate = secs > 0 ? (double)m->done_bytes / secs : 0;
    *eta = -1;
    if (!strcmp(m->state, "running") && *rate > 0)
        *eta = (double)(m->total_bytes - m->done_bytes) / *rate;
}

static int percent(const ms_move_info *m)
{
    if (m->total_bytes > 0)
        return (int)(100 * m->done_bytes / m->total_bytes);
    return m->total_messages > 0          ? (int)(100 * m->done_messages / m->total_messages)
           : !strcmp(m->state, "running") ? 0
                                          : 100;
}

static int cmd_moves(ctl *c, bool json)
{
    ms_move_info *mv = NULL;
    size_t n = 0;
    if (journal_moves(c, &mv, &n))
        return 1;
    if (json)
        printf("[");
    else
        printf("%-5s %-16s %-8s %-8s %-11s %-9s %4s %15s %17s %10s %7s %8s  %s\n", "ID", "MAILBOX",
               "SOURCE", "TARGET", "STATE", "STEP", "%", "MESSAGES", "BYTES", "RATE/s", "ETA",
               "LOCKED", "ERROR");
    for (size_t i = 0; i < n; i++) {
        ms_move_info *m = &mv[i];
        double rate, eta;
        move_rate(m, &rate, &eta);
        if (json) {
            g_autofree char *mb = g_strescape(m->mailbox, NULL);
            g_autofree char *err = g_strescape(m->error, NULL);
            printf("%s\n {\"id\": %lld, \"mailbox\": \"%s\", \"source\": \"%s\", "
                   "\"target\": \"%s\", \"state\": \"%s\", \"step\": \"%s\", "
                   "\"percent\": %d, \"messages_done\": %lld, \"messages_total\": %lld, "
                   "\"bytes_done\": %lld, \"bytes_total\": %lld, \"rate_bytes_per_s\": %.0f, "
                   "\"eta_s\": %.1f, \"lock_s\": %.3f, \"retain_until\": %lld, "
                   "\"error\": \"%s\"}",
                   i ? "," : "", (long long)m->id, mb, m->source, m->target, m->state, m->step,
                   percent(m), (long long)m->done_messages, (long long)m->total_messages,
                   (long long)m->done_bytes, (long long)m->total_bytes, rate, eta,
                   (double)m->lock_ns / 1e9, (long long)m->retain_until, err);
        } else {
            g_autofree char *msgs = g_strdup_printf("%lld/%lld", (long long)m->done_messages,
                                                    (long long)m->total_messages);
            g_autofree char *db = g_format_size((guint64)m->done_bytes);
            g_autofree char *tb = g_format_size((guint64)m->total_bytes);
            g_autofree char *bytes = g_strdup_printf("%s/%s", db, tb);
            g_autofree char *r = g_format_size((guint64)rate);
            g_autofree char *e = eta >= 0 ? g_strdup_printf("%.0fs", eta) : g_strdup("-");
            printf("%-5lld %-16s %-8s %-8s %-11s %-9s %4d %15s %17s %10s %7s %7.2fs  %s\n",
                   (long long)m->id, m->mailbox, m->source, m->target, m->state, m->step,
                   percent(m), msgs, bytes, r, e, (double)m->lock_ns / 1e9, m->error);
        }
    }
    if (json)
        printf("\n]\n");
    g_free(mv);
    return 0;
}

static int cmd_recover(ctl *c)
{
    ms_journal *j;
    if (open_journal(c, &j))
        return 1;
    int rc = ms_recover(j, store_by_name, c, c->dir, false);
    if (rc < 0)
        fprintf(stderr, "mailfsctl: recover: %s\n", g_strerror(-rc));
    else
        printf("%d unfinished moves settled\n", rc);
    ms_journal_close(j);
    return rc < 0;
}

static int cmd_undo(ctl *c, const char *arg)
{
    char *end;
    long long id = strtoll(arg, &end, 10);
    if (*end || id <= 0) {
        fprintf(stderr, "mailfsctl: undo: '%s' is not a move id\n", arg);
        return 2;
    }
    ms_journal *j;
    if (open_journal(c, &j))
        return 1;
    int64_t nid = 0;
    int rc = ms_undo(j, store_by_name, c, c->dir, ms_config_retain_days(c->cfg), id, &nid);
    if (rc == -ESTALE)
        fprintf(stderr,
                "mailfsctl: undo %lld: the retained source copy is gone (retention over "
                "or purged); move the mailbox back with 'mailfsctl move' instead\n",
                id);
    else if (rc == -EINVAL)
        fprintf(stderr, "mailfsctl: undo %lld: only a finished move can be undone\n", id);
    else if (rc)
        fprintf(stderr, "mailfsctl: undo %lld: %s\n", id, move_error(rc));
    else
        printf("move %lld undone by move %lld\n", id, (long long)nid);
    ms_journal_close(j);
    return rc ? 1 : 0;
}

static int cmd_purge(ctl *c, bool all)
{
    ms_journal *j;
    if (open_journal(c, &j))
        return 1;
    int rc = ms_purge(j, store_by_name, c, all);
    if (rc < 0)
        fprintf(stderr, "mailfsctl: purge: %s\n", g_strerror(-rc));
    else
        printf("%d retained copies purged\n", rc);
    ms_journal_close(j);
    return rc < 0;
}

static int cmd_check(ctl *c, int argc, char **argv)
{
    ms_check_opts o = {0};
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--fix-location"))
            o.fix_location = true;
        else if (!strcmp(argv[i], "--remove-unknown-grantees"))
            o.remove_unknown_grantees = true;
        else {
            usage(stderr);
            return 2;
        }
    }
    ms_journal *j;
    if (open_journal(c, &j))
        return 2;
    size_t n = ms_config_store_count(c->cfg);
    g_autofree ms_store **stores = g_new0(ms_store *, n);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        if (!(stores[i] = store_by_name(c, ms_config_store(c->cfg, i)->name)))
            rc = -EIO;
    GPtrArray *found = NULL;
    char *err = NULL;
    if (!rc)
        rc = ms_check(stores, n, c->dir, j, &o, &found, &err);
    ms_journal_close(j);
    if (rc) {
        fprintf(stderr, "mailfsctl: check: %s\n", err ? err : g_strerror(-rc));
        g_free(err);
        return 2;
    }
    int open_findings = 0;
    if (json)
        printf("[");
    else if (found->len)
        printf("%-16s %-20s %-8s %-6s %s\n", "FINDING", "MAILBOX", "STORE", "FIXED", "DETAIL");
    for (guint i = 0; i < found->len; i++) {
        ms_finding *f = found->pdata[i];
        open_findings += !f->fixed;
        if (json) {
            g_autofree char *mb = g_strescape(f->mailbox ? f->mailbox : "", NULL);
            g_autofree char *dn = g_strescape(f->dn ? f->dn : "", NULL);
            g_autofree char *de = g_strescape(f->detail ? f->detail : "", NULL);
            printf("%s\n {\"finding\": \"%s\", \"mailbox\": \"%s\", \"store\": \"%s\", "
                   "\"dn\": \"%s\", \"fixed\": %s, \"detail\": \"%s\"}",
                   i ? "," : "", ms_finding_name(f->kind), mb, f->store ? f->store : "", dn,
                   f->fixed ? "true" : "false", de);
        } else {
            printf("%-16s %-20s %-8s %-6s %s\n", ms_finding_name(f->kind), f->mailbox,
                   f->store ? f->store : "-", f->fixed ? "yes" : "no", f->detail);
        }
    }
    if (json)
        printf("%s]\n", found->len ? "\n" : "");
    else if (!found->len)
        printf("clean: directory and stores agree\n");
    g_ptr_array_free(found, TRUE);
    return open_findings ? 1 : 0;
}

static int dispatch(ctl *c, int argc, char **argv)
{

    const char *cmd = argv[0];
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcmp(cmd, "store") && !strcmp(sub, "create") && argc == 3)
        return cmd_store_create(c, argv[2]);
    if (!strcmp(cmd, "store") && !strcmp(sub, "list") && argc == 2)
        return cmd_store_list(c);
    if (!strcmp(cmd, "mailbox") && !strcmp(sub, "create") && argc == 4)
        return cmd_mailbox_create(c, argv[2], argv[3]);
    if (!strcmp(cmd, "deliver"))
        return cmd_deliver(c, argc - 1, argv + 1);
    if (!strcmp(cmd, "compact") && argc == 2)
        return cmd_compact(c, argv[1]);
    if (!strcmp(cmd, "import") && argc == 4)
        return cmd_import(c, argv[1], argv[2], argv[3]);
    if (!strcmp(cmd, "move") && argc == 3)
        return cmd_move(c, argv[1], argv[2]);
    if (!strcmp(cmd, "moves") && (argc == 1 || (argc == 2 && !strcmp(sub, "--json"))))
        return cmd_moves(c, argc == 2);
    if (!strcmp(cmd, "recover") && argc == 1)
        return cmd_recover(c);
    if (!strcmp(cmd, "undo") && argc == 2)
        return cmd_undo(c, argv[1]);
    if (!strcmp(cmd, "check"))
        return cmd_check(c, argc, argv);
    if (!strcmp(cmd, "purge") && (argc == 1 || (argc == 2 && !strcmp(sub, "--all"))))
        return cmd_purge(c, argc == 2);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    ctl c = {0};
    c.config_path = getenv("MAILFS_CONFIG");
    if (!c.config_path || !*c.config_path)
        c.config_path = "/etc/mailfs/mailfs.conf";
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            c.config_path = argv[++i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
            printf("mailfsctl %s\n", MS_VERSION);
            return 0;
        } else {
            break; /* e.g. deliver's own --flags comes after the command */
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    /* "mailfsctl COMMAND --help": the usage, which shows every command;
     * before the configuration, which --help must not need. */
    for (int k = i; k < argc; k++)
        if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
            usage(stdout);
            return 0;
        }
    ms_log_to_stderr(LOG_WARNING);
    if (load_config(&c)) /* check's contract: 2 is "could not check" */
        return !strcmp(argv[i], "deliver") ? EX_CONFIG : !strcmp(argv[i], "check") ? 2 : 1;
    c.open = g_ptr_array_new_with_free_func((GDestroyNotify)ms_store_close);
    int ret = dispatch(&c, argc - i, argv + i);
    g_ptr_array_free(c.open, TRUE);
    ms_directory_close(c.dir);
    ms_config_free(c.cfg);
    return ret;
}
