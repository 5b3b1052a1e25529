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
} ctl;

static void usage(FILE *f)
{
    fprintf(f, "usage: mailfsctl [-c CONFIG] COMMAND [ARGS]\n\n"
               "commands:\n"
               "  store create NAME                 create the database of [store NAME]\n"
               "  store list                        mailboxes, messages, bytes per store\n"
               "  mailbox create STORE MAILBOX      create a mailbox (with an INBOX)\n"
               "  deliver [--flags F] STORE MAILBOX [FOLDER] < MESSAGE\n"
               "                                    store one message durably (MTA use)\n\n"
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
    if (!rc && flags)
        rc = ms_writer_set_flags(w, flags, strlen(flags));
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
    ms_log_to_stderr(LOG_WARNING);
    if (load_config(&c))
        return !strcmp(argv[i], "deliver") ? EX_CONFIG : 1;
    int ret = dispatch(&c, argc - i, argv + i);
    ms_config_free(c.cfg);
    return ret;
}
