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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

typedef struct ctl {
    const char *config_path;
    /* The journal commands' stores, journal and directory, each opened
     * once and only by the commands that need it. */
    ms_site *site;
    const ms_config *cfg; /* the site's */
    ms_directory *dir;    /* the site's, once need_directory() ran */
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
               "  move [--prepare [--sync-every MIN] | --complete | --offline] MAILBOX STORE\n"
               "                                    move a mailbox online (the engine mv uses)\n"
               "  import FILE.pst STORE MAILBOX     import a PST/OST file as a new mailbox\n"
               "  import [--jobs N] FILE.pst... STORE\n"
               "                                    import files in parallel, each as the\n"
               "                                    mailbox named after it\n"
               "  compact STORE                     give the store's free space back (online)\n"
               "  moves [--json]                    moves with state, progress, rate, ETA\n"
               "  recover                           settle moves a crash left unfinished\n"
               "  undo ID                           move a finished move back, with new mail\n"
               "  purge [--all]                     drop retained source copies past retention\n"
               "                                    and deleted items past retention too\n"
               "  deleted [--json] [STORE [MAILBOX]]\n"
               "                                    deleted items that can be restored\n"
               "  restore STORE MAILBOX [FOLDER[/MESSAGE]]\n"
               "                                    bring deleted mail back, never overwriting\n"
               "  check [--json] [--fix-location] [--remove-unknown-grantees] [--fix-orphans]\n"
               "                                    directory against stores (exit 0 clean,\n"
               "                                    1 findings, 2 error)\n\n"
               "CONFIG defaults to $MAILFS_CONFIG, then /etc/mailfs/mailfs.conf.\n"
               "See mailfsctl(8).\n");
}

/* One entry per command: what "mailfsctl COMMAND --help" prints. */
typedef struct command {
    const char *name;
    const char *synopsis;
    const char *help;
} command;

static const command commands[] = {
    {"store", "store create NAME | store list",
     "  store create NAME  create the database of [store NAME] (refused if it exists)\n"
     "  store list         per store: visible mailboxes, their messages and bytes; the\n"
     "                     retained source copies of moved-away mailboxes (kept for\n"
     "                     undo until retain-days) apart; file size, reclaimable space\n"},
    {"mailbox", "mailbox create STORE MAILBOX",
     "Creates MAILBOX (at most 255 bytes, no '/') in STORE, with an INBOX folder.\n"},
    {"deliver", "deliver [--flags F] STORE MAILBOX [FOLDER] < MESSAGE",
     "Stores the message read from stdin in FOLDER (default INBOX, created on first\n"
     "delivery) and exits 0 only once it is durable.  --flags: IMAP flags, space\n"
     "separated, as user.mail.flags takes them.  Exit codes are sysexits(3): 75 (try\n"
     "again later) for a busy or full store, 67 for an unknown mailbox.\n"},
    {"move", "move [--prepare [--sync-every MIN] | --complete | --offline] MAILBOX TARGET_STORE",
     "Moves MAILBOX from the store that holds it to TARGET_STORE (journaled, verified,\n"
     "all or nothing), as mv between stores does, online: it copies while the mailbox\n"
     "stays in use, then locks it only for the cutover (final delta, directory\n"
     "switch).  The source copy is retained for [mailfs] retain-days, for undo.\n"
     "  --prepare        copy and keep in step, no cutover; again: the delta only\n"
     "  --sync-every MIN with --prepare: a delta pass every MIN minutes until the\n"
     "                   move is completed or the command is stopped\n"
     "  --complete       the cutover of a prepared move alone (mv does the same)\n"
     "  --offline        lock the mailbox for the whole move (one copy, no passes)\n"},
    {"import", "import FILE.pst STORE MAILBOX | import [--jobs N] FILE.pst... STORE",
     "Imports a PST/OST file as the new mailbox MAILBOX of STORE through the move\n"
     "protocol; the file is left untouched.  An interrupted import is resumed.\n"
     "With several files (or no MAILBOX), each becomes the mailbox named after it\n"
     "(alice.pst: alice); a file whose name the store has already is refused before\n"
     "it starts.  Up to N files (default: the online CPUs) are imported at once, each\n"
     "journaled, verified and all or nothing on its own.  One line per file; exit 1\n"
     "when any was not imported.  Three arguments are FILE STORE MAILBOX when the\n"
     "middle one names a configured store.\n"},
    {"compact", "compact STORE",
     "Gives the store's free space back to the filesystem while it stays in use.\n"
     "Refused while a move into or out of the store is unsettled.\n"},
    {"moves", "moves [--json]",
     "Lists every move of the journal, newest first: state, step, progress, rate,\n"
     "ETA ('-' while no progress is made), how long the mailbox was (or, while the\n"
     "move runs, has been) locked, and the error.  Imports show the file's name as\n"
     "source; control characters in names are escaped.\n"},
    {"recover", "recover",
     "Rolls back or forward every move a crash left unfinished, then settles the\n"
     "locks and hidden copies a deleted or replaced journal left in the stores.\n"
     "Exits 1, naming each move on a 'not settled:' line, when anything is left.\n"},
    {"undo", "undo ID",
     "Moves the mailbox of finished move ID back to its source store, with the mail\n"
     "that arrived since.  Refused when the retained copy is gone, or the mailbox\n"
     "is no longer in the target (then it says which move took it on).  If the\n"
     "target mailbox was deleted since, the retained copy becomes the mailbox again.\n"},
    {"purge", "purge [--all]",
     "Drops the retained source copies and the deleted items past retain-days\n"
     "(with --all: all of them).\n"},
    {"deleted", "deleted [--json] [STORE [MAILBOX]]",
     "Lists what was deleted through the mount and can still be restored: store,\n"
     "mailbox, kind, messages, bytes, when deleted, when it expires, path.  With\n"
     "MAILBOX, every message.\n"},
    {"restore", "restore STORE MAILBOX [FOLDER[/MESSAGE]]",
     "Brings deleted mail back with names, dates, flags, UIDs, modes, special-use\n"
     "and ACL, recreating the mailbox if it is gone.  Never overwrites: when a name\n"
     "is taken nothing is restored and the exit status is 1.\n"},
    {"check", "check [--json] [--fix-location] [--remove-unknown-grantees] [--fix-orphans]",
     "Compares the [directory] with the stores, and reads the journal for unsettled\n"
     "moves and expired copies.  Without [directory], checks the stores and the\n"
     "journal only, and says so.  Exit 0 clean, 1 findings, 2 could not check.\n"
     "  --fix-location             point mismatched entries where the mailbox is\n"
     "  --remove-unknown-grantees  drop ACL grants to names the directory lacks\n"
     "  --fix-orphans              settle locks and copies of moves the journal lost\n"},
};

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

/* "mailfsctl COMMAND --help": that command's synopsis and description. */
static void command_help(const command *cmd)
{
    printf("usage: mailfsctl [-c CONFIG] %s\n\n%s", cmd->synopsis, cmd->help);
}

/* Wrong arguments for a known command: its synopsis, exit code 2. */
static int command_usage(const char *name)
{
    const command *cmd = find_command(name);
    fprintf(stderr, "usage: mailfsctl [-c CONFIG] %s (see mailfsctl %s --help)\n",
            cmd ? cmd->synopsis : "COMMAND [ARGS]", name);
    return 2;
}

static int load_config(ctl *c)
{
    char *err = NULL;
    int rc = ms_site_open(c->config_path, 0, &c->site, &err);
    if (rc) {
        fprintf(stderr, "mailfsctl: %s\n", err);
        g_free(err);
        return rc;
    }
    c->cfg = ms_site_config(c->site);
    return 0;
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
    /* MAILBOXES, MESSAGES and BYTES count visible mailboxes alike; the
     * RETAINED-* columns the source copies moves keep for undo, the
     * DELETED-* ones what was deleted and can still be restored. */
    printf("%-12s %-7s %9s %10s %10s %12s %12s %14s %11s %11s %13s %10s %12s  %s\n", "STORE",
           "BACKEND", "MAILBOXES", "MESSAGES", "BYTES", "RETAINED-MB", "RETAINED-MSG",
           "RETAINED-BYTES", "DELETED-MB", "DELETED-MSG", "DELETED-BYTES", "FILE", "RECLAIMABLE",
           "PATH");
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
                            *r = human(s.reclaimable_bytes), *rb = human(s.retained_bytes),
                            *db = human(s.recoverable_bytes);
            printf("%-12s %-7s %9lld %10lld %10s %12lld %12lld %14s %11lld %11lld %13s %10s %12s  "
                   "%s\n",
                   sc->name, sc->backend, (long long)s.mailboxes, (long long)s.messages, b,
                   (long long)s.retained_mailboxes, (long long)s.retained_messages, rb,
                   (long long)s.recoverable_mailboxes, (long long)s.recoverable_messages, db, f, r,
                   sc->path);
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
    /* private, as a mailbox made through the mount is */
    int rc = ms_mkdir(st, (ms_node){MS_ROOT, 0}, mailbox, 0700, getuid(), getgid(), &mb);
    if (!rc)
        rc = ms_mkdir(st, mb.node, "INBOX", 0700, getuid(), getgid(), &inbox);
    if (rc)
        fprintf(stderr, "mailfsctl: mailbox create %s/%s: %s\n", store, mailbox,
                ms_strerror(MS_OP_CREATE, rc));
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
        rc = ms_mkdir(st, mb, "INBOX", 0700, getuid(), getgid(), &a);
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
        command_usage("deliver");
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
    const char *why = NULL;
    if (!rc && flags) {
        /* The same values as setfattr: checked strictly, stored canonical. */
        g_autofree char *canon = NULL;
        size_t len = 0;
        rc = ms_flags_normalize(flags, strlen(flags), &canon, &len);
        if (!rc)
            rc = ms_writer_set_flags(w, canon, len);
        else
            why = "--flags: not storable IMAP flags (\\Seen \\Answered \\Flagged \\Deleted "
                  "\\Draft or atoms)";
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
        rc = ms_writer_commit(w, true, &a);
    ms_writer_close(w);
    if (rc)
        fprintf(stderr, "mailfsctl: deliver to %s/%s/%s: %s\n", argv[0], argv[1], folder,
                why ? why : g_strerror(-rc));
    ms_store_close(st);
    return why ? EX_USAGE : deliver_exit(rc);
}

/* The site's store called name (opened once), or NULL: not configured
 * (silently), or it failed to open (said on stderr). */
static ms_store *store_by_name(ctl *c, const char *name)
{
    if (!ms_config_find_store(c->cfg, name))
        return NULL;
    ms_store *st;
    char *err = NULL;
    int rc = ms_site_store(c->site, name, &st, &err);
    if (rc)
        fprintf(stderr, "mailfsctl: %s\n", err ? err : g_strerror(-rc));
    g_free(err);
    return rc ? NULL : st;
}

/* The site's journal (the site closes it); prints why not. */
static int open_journal(ctl *c, ms_journal **j)
{
    char *err = NULL;
    int rc = ms_site_journal(c->site, j, &err);
    if (rc)
        fprintf(stderr, "mailfsctl: %s\n", err ? err : g_strerror(-rc));
    g_free(err);
    return rc;
}

/*
 * Opens the directory into c->dir (NULL without [directory]) for the
 * commands that change or compare it (move, recover, undo, check): the
 * others read the journal and stores only, and work without the LDAP
 * password.  Prints why not.
 */
static int need_directory(ctl *c)
{
    char *err = NULL;
    int rc = ms_site_directory(c->site, &c->dir, &err);
    if (rc)
        fprintf(stderr, "mailfsctl: %s\n", err ? err : g_strerror(-rc));
    g_free(err);
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

/* Set by SIGINT/SIGTERM: --sync-every stops between passes. */
static volatile sig_atomic_t stop_requested;
static void request_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/*
 * Waits minutes (or until a signal); false when stopped.  Sleeps in
 * short steps so that a signal ends the wait at once.
 */
static bool wait_minutes(double minutes)
{
    for (int64_t left = (int64_t)(minutes * 60 * 10); left > 0 && !stop_requested; left--)
        g_usleep(100000);
    return !stop_requested;
}

static int cmd_move(ctl *c, int argc, char **argv)
{
    int mode = MS_MOVE_WHOLE;
    double every = 0;
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "--prepare"))
            mode = MS_MOVE_PREPARE;
        else if (!strcmp(argv[i], "--complete"))
            mode = MS_MOVE_COMPLETE;
        else if (!strcmp(argv[i], "--offline"))
            mode = MS_MOVE_OFFLINE;
        else if (!strcmp(argv[i], "--sync-every") && i + 1 < argc &&
                 (every = g_ascii_strtod(argv[i + 1], &end)) > 0 && end && !*end)
            i++;
        else if (argv[i][0] != '-' && npos < 2)
            pos[npos++] = argv[i];
        else
            return command_usage("move");
    }
    if (npos != 2 || (every > 0 && mode != MS_MOVE_PREPARE))
        return command_usage("move");
    const char *mailbox = pos[0], *target = pos[1];
    ms_journal *j;
    if (need_directory(c) || open_journal(c, &j))
        return 1;
    ms_store *dst = store_by_name(c, target);
    ms_store *src = find_mailbox(c, mailbox);
    int rc = !dst ? -ENOENT : !src ? -ENOENT : src == dst ? -EEXIST : 0;
    int64_t id = 0;
    ms_move_opts o = {.retain_days = ms_config_retain_days(c->cfg),
                      .dir = c->dir,
                      .mode = mode,
                      .kick = ms_config_kick(c->cfg)};
    if (every > 0) {
        signal(SIGINT, request_stop);
        signal(SIGTERM, request_stop);
    }
    int rounds = 0;
    bool completed = false;
    while (!rc) {
        rc = ms_move(j, src, dst, mailbox, &o, &id);
        if (rc && rounds > 0 && find_mailbox(c, mailbox) != src) {
            completed = true; /* its cutover ran meanwhile (mv, --complete) */
            rc = 0;
            break;
        }
        if (rc == -EBUSY && rounds > 0) {
            rc = 0; /* a round that meets the cutover waits for the next */
            printf("%s: pass round %d skipped: the move is busy (its cutover runs)\n", mailbox,
                   ++rounds);
        } else if (!rc && every > 0)
            printf("prepared %s for %s (move %lld), pass round %d\n", mailbox, target,
                   (long long)id, ++rounds);
        fflush(stdout);
        if (rc || every <= 0 || !wait_minutes(every))
            break;
        if (find_mailbox(c, mailbox) != src) {
            completed = true;
            break;
        }
    }
    if (rc)
        fprintf(stderr, "mailfsctl: move %s to %s: %s\n", mailbox, target,
                !dst                                        ? "no such store"
                : !src                                      ? "no such mailbox in any store"
                : rc == -ENOENT && mode == MS_MOVE_COMPLETE ? "no prepared move of it to that store"
                                                            : ms_strerror(MS_OP_MOVE, rc));
    else if (completed)
        printf("%s was moved to %s by its cutover (move %lld)\n", mailbox, target, (long long)id);
    else if (mode == MS_MOVE_PREPARE)
        printf("prepared %s from %s for %s (move %lld)\n", mailbox, ms_store_name(src), target,
               (long long)id);
    else
        printf("moved %s from %s to %s (move %lld)\n", mailbox, ms_store_name(src), target,
               (long long)id);
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
                                        : ms_strerror(MS_OP_IMPORT, rc));
    else
        printf("imported %s as %s in %s (move %lld)\n", file, mailbox, target, (long long)id);
    return rc ? 1 : 0;
}

/* ------------------------------------------------ import of several files */

/* One file of `import FILE... STORE`, and what became of it. */
typedef struct import_job {
    const char *file;
    char *mailbox; /* the file's name without .pst/.ost */
    char *refused; /* why it was not started, or NULL */
    int rc;
    int64_t id;
} import_job;

/* What the import workers share; the journal and store are thread-safe. */
typedef struct import_run {
    ms_journal *j;
    ms_store *dst;
    const char *spool;
    int retain_days;
    ms_pst_helpers *helpers; /* one helper process per worker, reused */
    import_job *jobs;
    guint n;
    gint next;   /* the next job a worker takes (atomic) */
    GMutex said; /* one report line at a time */
} import_run;

/* The mailbox a file becomes: its base name without .pst or .ost. */
static char *mailbox_of_file(const char *file)
{
    char *base = g_path_get_basename(file);
    size_t n = strlen(base);
    if (n > 4 &&
        (!g_ascii_strcasecmp(base + n - 4, ".pst") || !g_ascii_strcasecmp(base + n - 4, ".ost")))
        base[n - 4] = '\0';
    return base;
}

/* The one line that says what happened to job k: stdout when imported,
 * stderr when not. */
static void say_import(import_run *r, const import_job *k)
{
    g_mutex_lock(&r->said);
    const char *store = ms_store_name(r->dst);
    if (k->refused)
        fprintf(stderr, "mailfsctl: import %s into %s/%s: %s\n", k->file, store, k->mailbox,
                k->refused);
    else if (k->rc)
        fprintf(stderr, "mailfsctl: import %s into %s/%s: %s\n", k->file, store, k->mailbox,
                k->id == 0 && k->rc == -EIO ? "not imported: the file cannot be read (see above)"
                                            : ms_strerror(MS_OP_IMPORT, k->rc));
    else
        printf("imported %s as %s in %s (move %lld)\n", k->file, k->mailbox, store,
               (long long)k->id);
    fflush(stdout);
    g_mutex_unlock(&r->said);
}

/* A worker: takes the next file until none is left; each is an import of
 * its own (journaled, verified, all or nothing). */
static gpointer import_worker(gpointer p)
{
    import_run *r = p;
    for (;;) {
        guint i = (guint)g_atomic_int_add(&r->next, 1);
        if (i >= r->n)
            return NULL;
        import_job *k = &r->jobs[i];
        if (k->refused)
            continue; /* said before the workers started */
        ms_move_opts o = {.retain_days = r->retain_days, .pst_helpers = r->helpers};
        k->rc = ms_import(r->j, k->file, r->dst, k->mailbox, r->spool, &o, &k->id);
        say_import(r, k);
    }
}

/*
 * Refuses, before anything starts, a file whose mailbox name is taken:
 * by a mailbox of the store, or by an earlier file of this import (two
 * imports under one name would race for it).  An interrupted import of
 * the file has no visible mailbox yet, so it is resumed.
 */
static void refuse_taken_names(import_run *r)
{
    for (guint i = 0; i < r->n; i++) {
        import_job *k = &r->jobs[i];
        ms_attr a;
        for (guint e = 0; e < i && !k->refused; e++)
            if (!strcmp(r->jobs[e].mailbox, k->mailbox))
                k->refused = g_strdup_printf(
                    "not imported: %s, earlier in this import, has that name", r->jobs[e].file);
        if (!k->refused && ms_lookup(r->dst, (ms_node){MS_ROOT, 0}, k->mailbox, &a) == 0)
            k->refused =
                g_strdup_printf("not imported: the store has a mailbox %s already", k->mailbox);
        if (k->refused) {
            k->rc = -EEXIST;
            say_import(r, k);
        }
    }
}

/* How many imports run at once: --jobs, else the online CPUs. */
static guint import_jobs(int asked, guint files)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    guint n = asked > 0 ? (guint)asked : cpus > 0 ? (guint)cpus : 1;
    return MAX(1, MIN(n, files));
}

/*
 * `import [--jobs N] FILE... STORE`: each file becomes the mailbox named
 * after it, up to N files at a time (threads of this process, sharing
 * the journal and the store's one writer, which they queue for).  A
 * worker's PST helper process goes on to its next file: at most N run.  One
 * line per file; exit 1 when any was not imported.
 */
static int cmd_import_files(ctl *c, char **files, guint n, const char *target, int jobs)
{
    ms_journal *j;
    if (open_journal(c, &j))
        return 1;
    ms_store *dst = store_by_name(c, target);
    if (!dst) {
        fprintf(stderr, "mailfsctl: import into %s: no such store\n", target);
        return 1;
    }
    import_run r = {.j = j,
                    .dst = dst,
                    .spool = ms_config_spool(c->cfg),
                    .retain_days = ms_config_retain_days(c->cfg),
                    .helpers = ms_pst_helpers_new(),
                    .jobs = g_new0(import_job, n),
                    .n = n};
    g_mutex_init(&r.said);
    for (guint i = 0; i < n; i++) {
        r.jobs[i].file = files[i];
        r.jobs[i].mailbox = mailbox_of_file(files[i]);
    }
    refuse_taken_names(&r);
    guint workers = import_jobs(jobs, n);
    GThread **t = g_new0(GThread *, workers);
    for (guint i = 0; i < workers; i++)
        t[i] = g_thread_new("import", import_worker, &r);
    for (guint i = 0; i < workers; i++)
        g_thread_join(t[i]);
    g_free(t);
    ms_pst_helpers_free(r.helpers);
    guint good = 0;
    for (guint i = 0; i < n; i++) {
        good += r.jobs[i].rc == 0;
        g_free(r.jobs[i].mailbox);
        g_free(r.jobs[i].refused);
    }
    if (n > 1)
        printf("imported %u of %u files into %s\n", good, n, target);
    g_free(r.jobs);
    g_mutex_clear(&r.said);
    return good == n ? 0 : 1;
}

/*
 * `import FILE STORE MAILBOX` (one file, the mailbox named), or
 * `import [--jobs N] FILE... STORE` (mailboxes named after the files).
 * Three arguments are the first form when the middle one names a
 * configured store and no file.
 */
static int cmd_import_any(ctl *c, int argc, char **argv)
{
    int jobs = 0;
    GPtrArray *pos = g_ptr_array_new();
    bool options = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options && !strcmp(a, "--")) {
            options = false;
        } else if (options && (!strcmp(a, "--jobs") || !strcmp(a, "-j")) && i + 1 < argc) {
            jobs = atoi(argv[++i]);
            if (jobs < 1)
                goto usage;
        } else if (options && g_str_has_prefix(a, "--jobs=")) {
            jobs = atoi(a + 7);
            if (jobs < 1)
                goto usage;
        } else if (options && a[0] == '-' && a[1]) {
            goto usage;
        } else {
            g_ptr_array_add(pos, (char *)a);
        }
    }
    if (pos->len < 2)
        goto usage;
    char **p = (char **)pos->pdata;
    int rc;
    if (pos->len == 3 && !jobs && ms_config_find_store(c->cfg, p[1]) && access(p[1], F_OK) != 0)
        rc = cmd_import(c, p[0], p[1], p[2]);
    else
        rc = cmd_import_files(c, p, pos->len - 1, p[pos->len - 1], jobs);
    g_ptr_array_free(pos, TRUE);
    return rc;
usage:
    g_ptr_array_free(pos, TRUE);
    return command_usage("import");
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
                    name, (long long)mv[i].id, mv[i].mailbox, ms_move_state_name(mv[i].state),
                    ms_move_step_name(mv[i].step));
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
    if (rc == -ENOTSUP) {
        /* Not a failure: there is nothing to do (a Maildir). */
        printf("%s: %s\n", name, ms_strerror(MS_OP_COMPACT, rc));
        return 0;
    }
    if (rc) {
        fprintf(stderr, "mailfsctl: compact %s: %s\n", name, ms_strerror(MS_OP_COMPACT, rc));
        return 1;
    }
    /* A store in use can grow while it is compacted: nothing freed then. */
    int64_t freed = before > after ? before - after : 0;
    g_autofree char *b = human(before), *a = human(after), *f = human(freed);
    printf("compacted %s: %s -> %s (%s freed, %d%%)\n", name, b, a, f,
           before > 0 ? (int)(100 * freed / before) : 0);
    return 0;
}

/*
 * A name for a terminal column: control characters, backslashes and
 * bytes that are not UTF-8 escaped (\n, \t, \\, \xNN), so that a name
 * cannot break a line or a column (g_free).
 */
static char *display_name(const char *s)
{
    GString *out = g_string_new(NULL);
    for (const char *p = s; *p;) {
        gunichar u = g_utf8_get_char_validated(p, -1);
        unsigned char b = (unsigned char)*p;
        if (u == (gunichar)-1 || u == (gunichar)-2) {
            g_string_append_printf(out, "\\x%02x", b);
            p++;
        } else if (b == '\n' || b == '\t' || b == '\\') {
            g_string_append(out, b == '\n' ? "\\n" : b == '\t' ? "\\t" : "\\\\");
            p++;
        } else if (u < 0x20 || u == 0x7f || (u >= 0x80 && u < 0xa0)) {
            g_string_append_printf(out, "\\x%02x", (unsigned)u);
            p = g_utf8_next_char(p);
        } else {
            const char *next = g_utf8_next_char(p);
            g_string_append_len(out, p, next - p);
            p = next;
        }
    }
    return g_string_free(out, FALSE);
}

/*
 * s as a JSON string, quotes included (g_free): the one writer of every
 * --json output.  UTF-8 is kept as it is; quotes, backslashes and control
 * characters are escaped; a byte that is not UTF-8 becomes \udcNN, the
 * lone surrogate Python's surrogateescape gives it, so that
 * name.encode('utf-8', 'surrogateescape') is the name's bytes again.
 */
static char *json_str(const char *s)
{
    GString *out = g_string_new("\"");
    for (const char *p = s ? s : ""; *p;) {
        gunichar u = g_utf8_get_char_validated(p, -1);
        unsigned char b = (unsigned char)*p;
        if (u == (gunichar)-1 || u == (gunichar)-2) {
            g_string_append_printf(out, "\\udc%02x", b);
            p++;
        } else if (b == '"' || b == '\\') {
            g_string_append_printf(out, "\\%c", b);
            p++;
        } else if (b == '\n' || b == '\t') {
            g_string_append(out, b == '\n' ? "\\n" : "\\t");
            p++;
        } else if (u < 0x20 || u == 0x7f) {
            g_string_append_printf(out, "\\u%04x", (unsigned)u);
            p++;
        } else {
            const char *next = g_utf8_next_char(p);
            g_string_append_len(out, p, next - p);
            p = next;
        }
    }
    g_string_append_c(out, '"');
    return g_string_free(out, FALSE);
}

/* What the SOURCE column shows: an import's file by its name (the JSON
 * output has the whole path), a store by its name. */
static char *source_column(const ms_move_info *m)
{
    if (m->source[0] != '/')
        return display_name(m->source);
    g_autofree char *base = g_path_get_basename(m->source);
    return display_name(base);
}

/* A move is ahead only while it copies and reported progress lately. */
#define STALLED_NS (5 * 1000000000LL)

/*
 * Bytes per second and seconds left.  The rate of a finished move is
 * taken between its start and its end, which later undo or purge leave
 * alone; a move that runs is measured up to now.  The ETA is -1 ("-")
 * unless the move is copying and progressed within STALLED_NS.
 */
static void move_rate(const ms_move_info *m, int64_t now, double *rate, double *eta)
{
    bool running = ms_move_unsettled(m);
    int64_t end = m->finished_ns ? m->finished_ns : running ? now : m->updated_ns;
    double secs = (double)(end - m->started_ns) / 1e9;
    *rate = secs > 0 ? (double)m->done_bytes / secs : 0;
    *eta = -1;
    if (m->state == MS_MOVE_RUNNING && m->step == MS_STEP_COPYING && *rate > 0 &&
        m->done_bytes > 0 && m->done_bytes < m->total_bytes && now - m->updated_ns < STALLED_NS)
        *eta = (double)(m->total_bytes - m->done_bytes) / *rate;
}

/* Seconds the source mailbox was locked, or is while the move runs; -1:
 * never locked (an import, or a journal from before locks were timed). */
static double lock_seconds(const ms_move_info *m, int64_t now)
{
    if (m->lock_ns > 0)
        return (double)m->lock_ns / 1e9;
    if (!m->lock_start_ns)
        return -1;
    if (ms_move_unsettled(m))
        return (double)(now - m->lock_start_ns) / 1e9;
    return m->finished_ns > m->lock_start_ns ? (double)(m->finished_ns - m->lock_start_ns) / 1e9
                                             : -1;
}

static int percent(const ms_move_info *m)
{
    if (m->total_bytes > 0)
        return (int)(100 * m->done_bytes / m->total_bytes);
    return m->total_messages > 0         ? (int)(100 * m->done_messages / m->total_messages)
           : m->state == MS_MOVE_RUNNING ? 0
                                         : 100;
}

enum { MOVE_COLS = 13 };

/* One row of the moves table, each cell escaped (g_strfreev). */
static char **move_row(const ms_move_info *m, int64_t now)
{
    double rate, eta;
    move_rate(m, now, &rate, &eta);
    double lock = lock_seconds(m, now);
    g_autofree char *db = g_format_size((guint64)m->done_bytes);
    g_autofree char *tb = g_format_size((guint64)m->total_bytes);
    char **row = g_new0(char *, MOVE_COLS + 1);
    row[0] = g_strdup_printf("%lld", (long long)m->id);
    row[1] = display_name(m->mailbox);
    row[2] = source_column(m);
    row[3] = display_name(m->target);
    row[4] = g_strdup(ms_move_state_name(m->state));
    row[5] = g_strdup(ms_move_step_name(m->step));
    row[6] = g_strdup_printf("%d", percent(m));
    row[7] =
        g_strdup_printf("%lld/%lld", (long long)m->done_messages, (long long)m->total_messages);
    row[8] = g_strdup_printf("%s/%s", db, tb);
    row[9] = g_format_size((guint64)rate);
    row[10] = eta >= 0 ? g_strdup_printf("%.0fs", eta) : g_strdup("-");
    row[11] = lock >= 0 ? g_strdup_printf("%.0fms", lock * 1000) : g_strdup("-");
    row[12] = display_name(m->error);
    return row;
}

/*
 * The table with each column as wide as its widest cell, so that long
 * names (an import's file) or escaped ones never shift the columns.
 */
static void print_table(GPtrArray *rows)
{
    size_t width[MOVE_COLS] = {0};
    for (guint r = 0; r < rows->len; r++) {
        char **row = rows->pdata[r];
        for (int k = 0; k < MOVE_COLS; k++)
            width[k] = MAX(width[k], (size_t)g_utf8_strlen(row[k], -1));
    }
    for (guint r = 0; r < rows->len; r++) {
        char **row = rows->pdata[r];
        GString *line = g_string_new(NULL);
        for (int k = 0; k < MOVE_COLS; k++) {
            size_t pad = k == MOVE_COLS - 1 ? 0 : width[k] - (size_t)g_utf8_strlen(row[k], -1);
            g_string_append(line, row[k]);
            for (size_t i = 0; i < pad + (k == MOVE_COLS - 1 ? 0 : 1); i++)
                g_string_append_c(line, ' ');
        }
        printf("%s\n", line->str);
        g_string_free(line, TRUE);
    }
}

/* The passes of an online move as a JSON array. */
static char *passes_json(const ms_move_pass *p, size_t n)
{
    GString *out = g_string_new("[");
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(out,
                               "%s{\"pass\": %d, \"phase\": \"%s\", \"messages\": %lld, "
                               "\"bytes\": %lld, \"removed\": %lld, \"updated\": %lld, "
                               "\"seconds\": %.3f}",
                               i ? ", " : "", p[i].pass, p[i].phase, (long long)p[i].messages,
                               (long long)p[i].bytes, (long long)p[i].removed,
                               (long long)p[i].updated, (p[i].ended_ns - p[i].started_ns) / 1e9);
    g_string_append_c(out, ']');
    return g_string_free(out, FALSE);
}

static void print_move_json(const ms_move_info *m, int64_t now, bool first, const ms_move_pass *p,
                            size_t np)
{
    double rate, eta;
    move_rate(m, now, &rate, &eta);
    double lock = lock_seconds(m, now);
    g_autofree char *mb = json_str(m->mailbox), *src = json_str(m->source),
                    *dst = json_str(m->target), *err = json_str(m->error),
                    *state = json_str(ms_move_state_name(m->state)),
                    *step = json_str(ms_move_step_name(m->step)), *passes = passes_json(p, np);
    printf("%s\n {\"id\": %lld, \"mailbox\": %s, \"source\": %s, "
           "\"target\": %s, \"state\": %s, \"step\": %s, "
           "\"percent\": %d, \"messages_done\": %lld, \"messages_total\": %lld, "
           "\"bytes_done\": %lld, \"bytes_total\": %lld, \"rate_bytes_per_s\": %.0f, "
           "\"eta_s\": %.1f, \"lock_s\": %.3f, \"lock_ms\": %.0f, \"retain_until\": %lld, "
           "\"passes\": %s, \"error\": %s}",
           first ? "" : ",", (long long)m->id, mb, src, dst, state, step, percent(m),
           (long long)m->done_messages, (long long)m->total_messages, (long long)m->done_bytes,
           (long long)m->total_bytes, rate, eta, lock >= 0 ? lock : 0, lock >= 0 ? lock * 1000 : 0,
           (long long)m->retain_until, passes, err);
}

/* The passes of move m, one line each, after the table. */
static void print_passes(const ms_move_info *m, const ms_move_pass *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        g_autofree char *b = g_format_size((guint64)p[i].bytes);
        printf("move %lld pass %d %-5s %lld messages, %s, %lld dropped, %lld updated, %.3f s\n",
               (long long)m->id, p[i].pass, p[i].phase, (long long)p[i].messages, b,
               (long long)p[i].removed, (long long)p[i].updated,
               (p[i].ended_ns - p[i].started_ns) / 1e9);
    }
}

static int cmd_moves(ctl *c, bool json)
{
    ms_move_info *mv = NULL;
    size_t n = 0;
    ms_journal *j;
    if (journal_moves(c, &mv, &n) || open_journal(c, &j))
        return 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    ms_move_pass **p = g_new0(ms_move_pass *, n + 1);
    size_t *np = g_new0(size_t, n + 1);
    for (size_t i = 0; i < n; i++)
        (void)ms_journal_passes(j, mv[i].id, &p[i], &np[i]); /* none: an offline move */
    if (json) {
        printf("[");
        for (size_t i = 0; i < n; i++)
            print_move_json(&mv[i], now, i == 0, p[i], np[i]);
        printf("\n]\n");
    } else {
        static const char *const header[] = {"ID",   "MAILBOX", "SOURCE",   "TARGET", "STATE",
                                             "STEP", "%",       "MESSAGES", "BYTES",  "RATE/s",
                                             "ETA",  "LOCKED",  "ERROR",    NULL};
        GPtrArray *rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
        g_ptr_array_add(rows, g_strdupv((char **)header));
        for (size_t i = 0; i < n; i++)
            g_ptr_array_add(rows, move_row(&mv[i], now));
        print_table(rows);
        g_ptr_array_free(rows, TRUE);
        for (size_t i = 0; i < n; i++)
            print_passes(&mv[i], p[i], np[i]);
    }
    for (size_t i = 0; i < n; i++)
        g_free(p[i]);
    g_free(p);
    g_free(np);
    g_free(mv);
    return 0;
}

/*
 * Every configured store, opened (for recover and check); NULL after
 * saying why.  With partial, the stores that open (recover settles what
 * it can reach and names what it cannot).
 */
static ms_store **all_stores(ctl *c, bool partial, size_t *n)
{
    size_t total = ms_config_store_count(c->cfg);
    ms_store **stores = g_new0(ms_store *, total ? total : 1);
    *n = 0;
    for (size_t i = 0; i < total; i++) {
        ms_store *st = store_by_name(c, ms_config_store(c->cfg, i)->name);
        if (st)
            stores[(*n)++] = st;
        else if (!partial) {
            g_free(stores);
            return NULL;
        }
    }
    return stores;
}

/* Exit 0 only when nothing is left unsettled: a cron job must notice. */
static int cmd_recover(ctl *c)
{
    ms_journal *j;
    if (need_directory(c) || open_journal(c, &j))
        return 1;
    size_t n;
    g_autofree ms_store **stores = all_stores(c, true, &n);
    GArray *left = g_array_new(FALSE, FALSE, sizeof(int64_t));
    int rc = ms_recover(j, stores, n, c->dir, ms_config_retain_days(c->cfg), false, left);
    if (rc < 0) {
        fprintf(stderr, "mailfsctl: recover: %s\n", g_strerror(-rc));
    } else {
        printf("%d unfinished moves settled\n", rc);
        int64_t carried = 0;
        if (ms_carry_late(j, stores, n, &carried) == 0 && carried)
            printf("%lld late message(s) carried to where their mailbox moved\n",
                   (long long)carried);
        for (guint i = 0; i < left->len; i++) {
            ms_move_info mi;
            int64_t id = g_array_index(left, int64_t, i);
            if (id && ms_journal_get(j, id, &mi) == 0)
                printf("not settled: move %lld, %s from %s to %s, %s at step %s: %s\n",
                       (long long)id, mi.mailbox, mi.source, mi.target,
                       ms_move_state_name(mi.state), ms_move_step_name(mi.step),
                       mi.error[0] ? mi.error : "see the log above");
            else if (!id)
                printf("not settled: an orphan lock or copy (see the log above; 'mailfsctl "
                       "check' lists them)\n");
        }
        if (left->len)
            fprintf(stderr,
                    "mailfsctl: recover: %u left unsettled; run it again once the cause "
                    "is fixed\n",
                    left->len);
    }
    bool failed = rc < 0 || left->len > 0;
    g_array_free(left, TRUE);
    return failed;
}

/* What an undo did when the target mailbox had been deleted since. */
static void undo_said_deleted(ctl *c, ms_journal *j, int64_t id)
{
    ms_move_info mi;
    if (ms_journal_get(j, id, &mi))
        return;
    printf("move %lld undone: %s was deleted in %s since, so %s in %s is back as it was when "
           "moved",
           (long long)id, mi.newname, mi.target, mi.mailbox, mi.source);
    /* Only stores that keep deleted items (sqlite) can give it back. */
    const ms_store_conf *tc = ms_config_find_store(c->cfg, mi.target);
    if (tc && !strcmp(tc->backend, "sqlite"))
        printf("; the deleted one stays recoverable ('mailfsctl deleted %s %s', "
               "'mailfsctl restore %s %s')",
               mi.target, mi.newname, mi.target, mi.newname);
    printf("\n");
}

/*
 * Says why undo found nothing to move back: a store not configured, or
 * the mailbox no longer in the target, and then which later move took it
 * on (that one is to be undone first).
 */
static void undo_gone(ctl *c, ms_journal *j, const ms_move_info *mi)
{
    const char *missing = !ms_config_find_store(c->cfg, mi->source)   ? mi->source
                          : !ms_config_find_store(c->cfg, mi->target) ? mi->target
                                                                      : NULL;
    g_autofree char *name = display_name(mi->newname);
    if (missing) {
        fprintf(stderr, "mailfsctl: undo %lld: store %s is not in the configuration\n",
                (long long)mi->id, missing);
        return;
    }
    ms_move_info *mv = NULL;
    size_t n = 0;
    const ms_move_info *later = NULL;
    if (ms_journal_list(j, &mv, &n) == 0)
        for (size_t i = n; i-- > 0;) /* oldest first: the move right after mi */
            if (!later && mv[i].id > mi->id && !strcmp(mv[i].mailbox, mi->newname) &&
                !strcmp(mv[i].source, mi->target) && mv[i].state != MS_MOVE_ROLLED_BACK)
                later = &mv[i];
    if (later)
        fprintf(stderr,
                "mailfsctl: undo %lld: %s is no longer in %s: move %lld moved it to %s since "
                "(undo that one first)\n",
                (long long)mi->id, name, mi->target, (long long)later->id, later->target);
    else
        fprintf(stderr, "mailfsctl: undo %lld: %s is no longer in %s (deleted or renamed since)\n",
                (long long)mi->id, name, mi->target);
    g_free(mv);
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
    if (need_directory(c) || open_journal(c, &j))
        return 1;
    int64_t nid = 0;
    ms_move_info mi;
    int rc = ms_journal_get(j, id, &mi);
    if (rc == -ENOENT) {
        fprintf(stderr,
                "mailfsctl: undo %lld: no move %lld in the journal %s (see mailfsctl moves)\n", id,
                id, ms_config_journal(c->cfg));
        return 1;
    }
    if (!rc)
        rc = ms_undo(c->site, id, &nid);
    if (rc == -ENOENT)
        undo_gone(c, j, &mi);
    else if (rc)
        fprintf(stderr, "mailfsctl: undo %lld: %s\n", id, ms_strerror(MS_OP_UNDO, rc));
    else if (mi.state == MS_MOVE_PREPARED)
        printf("move %lld abandoned: its prepared copy in %s dropped, %s stays in %s\n", id,
               mi.target, mi.mailbox, mi.source);
    else if (!nid)
        undo_said_deleted(c, j, id);
    else
        printf("move %lld undone by move %lld\n", id, (long long)nid);
    return rc ? 1 : 0;
}

/* Drops the expired (all: every) deleted items of every writable store. */
static int purge_deleted(ctl *c, bool all)
{
    ms_purged sum = {0};
    int ret = 0;
    for (size_t i = 0; i < ms_config_store_count(c->cfg); i++) {
        const char *name = ms_config_store(c->cfg, i)->name;
        ms_store *st = store_by_name(c, name);
        ms_purged p;
        int rc = st ? ms_deleted_purge(st, ms_config_retain_days(c->cfg), all, &p) : -EIO;
        if (rc == -ENOTSUP || rc == -EROFS)
            continue; /* keeps no deleted items (pst) or cannot drop them */
        if (rc) {
            fprintf(stderr, "mailfsctl: purge: deleted items of %s: %s\n", name, g_strerror(-rc));
            ret = 1;
            continue;
        }
        sum.mailboxes += p.mailboxes;
        sum.folders += p.folders;
        sum.messages += p.messages;
        sum.bytes += p.bytes;
    }
    g_autofree char *b = human(sum.bytes);
    printf("%lld deleted mailboxes, %lld folders, %lld messages (%s) purged\n",
           (long long)sum.mailboxes, (long long)sum.folders, (long long)sum.messages, b);
    return ret;
}

static int cmd_purge(ctl *c, bool all)
{
    ms_journal *j;
    if (open_journal(c, &j))
        return 1;
    (void)j; /* opened to say why not, in mailfsctl's words: ms_purge uses the site's */
    int rc = ms_purge(c->site, all);
    if (rc < 0)
        fprintf(stderr, "mailfsctl: purge: %s\n", g_strerror(-rc));
    else
        printf("%d retained copies purged\n", rc);
    int ret = purge_deleted(c, all);
    return rc < 0 || ret;
}

typedef struct deleted_out {
    const char *store;
    const char *only; /* a MAILBOX argument: everything in it, else the top items */
    bool json;
    int64_t retain_ns;
    size_t rows;
} deleted_out;

/* "2026-11-26 09:12:03" (UTC) of ns since the epoch. */
static char *utc(int64_t ns)
{
    g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(ns / 1000000000);
    return t ? g_date_time_format(t, "%Y-%m-%d %H:%M:%S") : g_strdup("-");
}

static const char *kind_name(ms_kind k)
{
    return k == MS_MAILBOX ? "mailbox" : k == MS_FOLDER ? "folder" : "message";
}

/* A name for a table column: control characters escaped (they would
 * break the columns), other bytes as they are. */
static char *column_text(const char *s)
{
    char high[129];
    for (int i = 0; i < 128; i++)
        high[i] = (char)(0x80 + i);
    high[128] = '\0';
    return g_strescape(s, high);
}

static int print_deleted(void *ctx, const ms_deleted *d)
{
    deleted_out *o = ctx;
    if (d->inside && !o->only)
        return 0; /* comes back with its deleted folder or mailbox */
    g_autofree char *path =
        d->name ? (*d->folder ? g_strdup_printf("%s/%s", d->folder, d->name) : g_strdup(d->name))
                : g_strdup(d->folder);
    g_autofree char *when = utc(d->deleted_ns), *until = utc(d->deleted_ns + o->retain_ns);
    if (o->json) {
        g_autofree char *st = json_str(o->store), *mb = json_str(d->mailbox), *p = json_str(path);
        printf("%s\n {\"store\": %s, \"mailbox\": %s, \"kind\": \"%s\", \"path\": %s, "
               "\"messages\": %lld, \"bytes\": %lld, \"deleted_ns\": %lld, \"expires\": %lld, "
               "\"inside\": %s}",
               o->rows ? "," : "", st, mb, kind_name(d->kind), p, (long long)d->messages,
               (long long)d->bytes, (long long)d->deleted_ns,
               (long long)((d->deleted_ns + o->retain_ns) / 1000000000),
               d->inside ? "true" : "false");
    } else {
        g_autofree char *b = human(d->bytes);
        /* Names may hold any byte: escaped, so they cannot break the columns. */
        g_autofree char *mb = column_text(d->mailbox), *p = column_text(path);
        printf("%-12s %-16s %-7s %8lld %10s  %-19s  %-19s  %s%s\n", o->store, mb,
               kind_name(d->kind), (long long)d->messages, b, when, until, *p ? p : "-",
               d->inside ? "  (inside)" : "");
    }
    o->rows++;
    return 0;
}

static int cmd_deleted(ctl *c, int argc, char **argv)
{
    bool json = argc > 1 && !strcmp(argv[1], "--json");
    argc -= 1 + json;
    argv += 1 + json;
    if (argc > 2) {
        usage(stderr);
        return 2;
    }
    deleted_out o = {.only = argc == 2 ? argv[1] : NULL,
                     .json = json,
                     .retain_ns = (int64_t)ms_config_retain_days(c->cfg) * 86400000000000LL};
    if (json)
        printf("[");
    else
        printf("%-12s %-16s %-7s %8s %10s  %-19s  %-19s  %s\n", "STORE", "MAILBOX", "KIND",
               "MESSAGES", "BYTES", "DELETED (UTC)", "EXPIRES (UTC)", "PATH");
    int ret = 0;
    for (size_t i = 0; i < ms_config_store_count(c->cfg); i++) {
        const char *name = ms_config_store(c->cfg, i)->name;
        if (argc >= 1 && strcmp(argv[0], name))
            continue;
        ms_store *st = store_by_name(c, name);
        o.store = name;
        int rc = st ? ms_deleted_list(st, o.only, print_deleted, &o) : -EIO;
        if (rc && rc != -ENOTSUP) {
            fprintf(stderr, "mailfsctl: deleted: %s: %s\n", name, g_strerror(-rc));
            ret = 1;
        }
    }
    if (argc >= 1 && !ms_config_find_store(c->cfg, argv[0])) {
        fprintf(stderr, "mailfsctl: deleted: no [store %s] in the configuration\n", argv[0]);
        ret = 1;
    }
    if (json)
        printf("%s]\n", o.rows ? "\n" : "");
    return ret;
}

/* The other store where mailbox is visible, or NULL. */
static const char *visible_elsewhere(ctl *c, ms_store *here, const char *mailbox)
{
    for (size_t i = 0; i < ms_config_store_count(c->cfg); i++) {
        ms_store *st = store_by_name(c, ms_config_store(c->cfg, i)->name);
        ms_attr a;
        if (st && st != here && ms_lookup(st, (ms_node){MS_ROOT, 0}, mailbox, &a) == 0)
            return ms_store_name(st);
    }
    return NULL;
}

static int cmd_restore(ctl *c, const char *store, const char *mailbox, const char *path)
{
    ms_store *st = store_by_name(c, store);
    if (!st)
        return 1;
    ms_attr a;
    const char *other = NULL;
    int rc = 0;
    /* Recreating a mailbox that lives on in another store (moved there)
     * would make two: refused. */
    if (ms_lookup(st, (ms_node){MS_ROOT, 0}, mailbox, &a) == -ENOENT &&
        (other = visible_elsewhere(c, st, mailbox)) != NULL)
        rc = -EEXIST;
    int64_t n = 0;
    if (!rc)
        rc = ms_deleted_restore(st, mailbox, path, &n);
    const char *sep = path ? "/" : "";
    if (!path)
        path = "";
    if (other)
        fprintf(stderr,
                "mailfsctl: restore %s/%s%s%s: refused: mailbox %s is in store %s; restoring it "
                "here would make a second one\n",
                store, mailbox, sep, path, mailbox, other);
    else if (rc == -ENOENT)
        fprintf(stderr, "mailfsctl: restore %s/%s%s%s: %s (see 'mailfsctl deleted %s %s')\n", store,
                mailbox, sep, path, ms_strerror(MS_OP_RESTORE, rc), store, mailbox);
    else if (rc)
        fprintf(stderr, "mailfsctl: restore %s/%s%s%s: %s\n", store, mailbox, sep, path,
                ms_strerror(MS_OP_RESTORE, rc));
    else
        printf("restored %s/%s%s%s: %lld messages\n", store, mailbox, sep, path, (long long)n);
    return rc ? 1 : 0;
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
        else if (!strcmp(argv[i], "--fix-orphans"))
            o.fix_orphans = true;
        else
            return command_usage("check");
    }
    o.retain_days = ms_config_retain_days(c->cfg);
    ms_journal *j;
    if (need_directory(c) || open_journal(c, &j))
        return 2;
    size_t n;
    g_autofree ms_store **stores = all_stores(c, false, &n);
    int rc = stores ? 0 : -EIO;
    GPtrArray *found = NULL;
    char *err = NULL;
    if (!rc)
        rc = ms_check(stores, n, c->dir, j, &o, &found, &err);
    if (rc) {
        fprintf(stderr, "mailfsctl: check: %s\n", err ? err : g_strerror(-rc));
        g_free(err);
        return 2;
    }
    int open_findings = 0;
    bool dir = ms_config_directory(c->cfg) != NULL;
    if (!dir) /* a clean result must not read as "the directory agrees" */
        fprintf(json ? stderr : stdout,
                "%sno [directory] in %s: checked the stores and the journal only\n",
                json ? "mailfsctl: check: " : "", c->config_path);
    if (json)
        printf("[");
    else if (found->len)
        printf("%-16s %-20s %-8s %-6s %s\n", "FINDING", "MAILBOX", "STORE", "FIXED", "DETAIL");
    for (guint i = 0; i < found->len; i++) {
        ms_finding *f = found->pdata[i];
        open_findings += !f->fixed;
        if (json) {
            g_autofree char *mb = json_str(f->mailbox), *st = json_str(f->store),
                            *dn = json_str(f->dn), *de = json_str(f->detail);
            printf("%s\n {\"finding\": \"%s\", \"mailbox\": %s, \"store\": %s, "
                   "\"dn\": %s, \"fixed\": %s, \"detail\": %s}",
                   i ? "," : "", ms_finding_name(f->kind), mb, st, dn, f->fixed ? "true" : "false",
                   de);
        } else {
            /* Names may hold any byte: escaped, so they cannot break the lines. */
            g_autofree char *mb = display_name(f->mailbox ? f->mailbox : "-");
            g_autofree char *de = display_name(f->detail ? f->detail : "");
            printf("%-16s %-20s %-8s %-6s %s\n", ms_finding_name(f->kind), mb,
                   f->store ? f->store : "-", f->fixed ? "yes" : "no", de);
        }
    }
    if (json)
        printf("%s]\n", found->len ? "\n" : "");
    else if (!found->len)
        printf(dir ? "clean: directory and stores agree\n" : "clean: stores and journal agree\n");
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
    if (!strcmp(cmd, "import"))
        return cmd_import_any(c, argc, argv);
    if (!strcmp(cmd, "move"))
        return cmd_move(c, argc, argv);
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
    if (!strcmp(cmd, "deleted"))
        return cmd_deleted(c, argc, argv);
    if (!strcmp(cmd, "restore") && (argc == 3 || argc == 4))
        return cmd_restore(c, argv[1], argv[2], argc == 4 ? argv[3] : NULL);
    return command_usage(cmd);
}

int main(int argc, char **argv)
{
    ctl c = {0};
    ms_process_init();
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
    /* Before the configuration, which neither needs. */
    const command *cmd = find_command(argv[i]);
    if (!cmd) {
        fprintf(stderr, "mailfsctl: unknown command '%s' (see mailfsctl --help)\n", argv[i]);
        return 2;
    }
    for (int k = i + 1; k < argc; k++)
        if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
            command_help(cmd);
            return 0;
        }
    ms_log_to_stderr(LOG_WARNING);
    if (load_config(&c)) /* check's contract: 2 is "could not check" */
        return !strcmp(argv[i], "deliver") ? EX_CONFIG : !strcmp(argv[i], "check") ? 2 : 1;
    int ret = dispatch(&c, argc - i, argv + i);
    ms_site_close(c.site);
    return ret;
}
