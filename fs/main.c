/*
 * main.c — the mailfs daemon: parse options, open the site's stores,
 * mount, serve.
 *
 *   mailfs [-f] [-d] [-o opt,...] CONFIG MOUNTPOINT
 *
 * Usable from /etc/fstab as type fuse.mailfs: mount.fuse3 runs
 * "mailfs CONFIG MOUNTPOINT -o opts".  Everything that can fail (the
 * configuration, each store) is checked before the mount exists, so a
 * bad site leaves nothing mounted and says why in one line.
 */
#include "fs.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct options {
    char *config;
    int show_help;
    int show_version;
    int allow_other;         /* -o allow_other was given */
    int default_permissions; /* -o default_permissions was given */
};

/* Mount options that are noted and still passed on to libfuse. */
enum { KEY_ALLOW_OTHER = 1, KEY_DEFAULT_PERMISSIONS = 2 };

#define OPT(t, p)                                                                                  \
    {                                                                                              \
        t, offsetof(struct options, p), 1                                                          \
    }
static const struct fuse_opt option_spec[] = {
    OPT("-h", show_help),
    OPT("--help", show_help),
    OPT("-V", show_version),
    OPT("--version", show_version),
    FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
    FUSE_OPT_KEY("default_permissions", KEY_DEFAULT_PERMISSIONS),
    FUSE_OPT_END,
};

/* The first non-option argument is the configuration; keep the rest. */
static int take_config(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    struct options *o = data;
    if (key == FUSE_OPT_KEY_NONOPT && !o->config) {
        o->config = strdup(arg);
        return 0;
    }
    if (key == KEY_ALLOW_OTHER)
        o->allow_other = 1;
    if (key == KEY_DEFAULT_PERMISSIONS)
        o->default_permissions = 1;
    return 1;
}

/*
 * A mount opened to other users is checked by the kernel: without
 * default_permissions FUSE checks nothing, and any local user could read,
 * change and delete everyone's mail through an allow_other mount.
 */
static void close_by_default(struct options *o, struct fuse_args *args)
{
    if (!o->allow_other || o->default_permissions)
        return;
    fuse_opt_add_arg(args, "-odefault_permissions");
    o->default_permissions = 1;
    ms_log(LOG_INFO, "allow_other: default_permissions added (the kernel checks modes and owners)");
}

static void usage(const char *prog)
{
    printf("usage: %s [options] CONFIG MOUNTPOINT\n\n"
           "Mounts the mailbox stores named in CONFIG at MOUNTPOINT as\n"
           "MOUNTPOINT/<store>/<mailbox>/<folder>/<message>.\n\n"
           "options:\n"
           "    -h, --help         this help\n"
           "    -V, --version      print the version\n"
           "    -f                 stay in the foreground, log to stderr\n"
           "    -d                 debug: foreground, log every FUSE request\n"
           "    -s                 serve with one thread\n"
           "    -o allow_other     let other users in (default_permissions is then added)\n"
           "    -o default_permissions  let the kernel check modes and owners\n"
           "See mailfs(8).\n",
           prog);
}

/* Forgets the site's stores and journal, which the site then closes. */
static void close_stores(mfs *m)
{
    ms_site_release(m->site);
    m->stores = NULL;
    m->nstores = 0;
    m->journal = NULL;
}

/* Opens every configured store; on failure says which and why. */
static int open_stores(mfs *m)
{
    size_t n = ms_config_store_count(m->cfg);
    if (n > MFS_MAX_STORES) {
        ms_log(LOG_ERR, "too many stores (%zu, at most %d)", n, MFS_MAX_STORES);
        return -EINVAL;
    }
    char *err = NULL;
    int rc = ms_site_stores(m->site, &m->stores, &m->nstores, &err);
    if (rc) {
        /* stderr before daemonizing, syslog after (reopen_after_fork) */
        ms_log(LOG_ERR, "%s", err ? err : g_strerror(-rc));
        g_free(err);
        close_stores(m);
    }
    return rc;
}

/*
 * A journal the daemon cannot write fails every move with EIO, long after
 * the mount looked fine: refuse the mount instead.  access() sees an
 * immutable file (EPERM) and a read-only filesystem (EROFS) even as root;
 * the folder must take the journal's -wal and -shm files.
 */
static int check_journal_writable(const char *journal)
{
    g_autofree char *dir = g_path_get_dirname(journal);
    /* A journal not made yet is made at open: then only the folder counts. */
    const char *what = access(journal, W_OK) != 0 && errno != ENOENT ? journal
                       : access(dir, W_OK) != 0                      ? dir
                                                                     : NULL;
    if (!what)
        return 0;
    int e = errno;
    fprintf(stderr, "mailfs: %s: the move journal cannot be written (%s: %s); moves would fail\n",
            journal, what, g_strerror(e));
    return -e;
}

/* Settles moves a crashed daemon or mailfsctl left half-done. */
static int open_journal(mfs *m)
{
    char *err = NULL;
    int rc;
    if ((rc = ms_site_directory(m->site, &m->dir, &err)) != 0) {
        fprintf(stderr, "mailfs: %s\n", err);
        g_free(err);
        return rc;
    }
    g_clear_pointer(&err, g_free); /* an unreachable server: logged, moves will say EIO */
    /* Before opening it: opening writes the journal's id into it. */
    rc = check_journal_writable(ms_config_journal(m->cfg));
    if (rc)
        return rc;
    rc = ms_site_journal(m->site, &m->journal, &err);
    if (rc) {
        fprintf(stderr, "mailfs: %s\n", err);
        g_free(err);
        return rc;
    }
    rc = ms_recover(m->journal, m->stores, m->nstores, m->dir, ms_config_retain_days(m->cfg), true,
                    NULL);
    if (rc < 0) {
        fprintf(stderr, "mailfs: %s: recovery failed: %s\n", ms_config_journal(m->cfg),
                g_strerror(-rc));
        return rc;
    }
    if (rc > 0)
        ms_log(LOG_INFO, "recovered %d unfinished moves", rc);
    return 0;
}

/*
 * SQLite connections must not cross fork(): their POSIX locks belong to
 * the parent, which exits, and a connection opened later in the child
 * then believes nobody else has the store open and resets the shared WAL
 * index under the inherited ones (reads fail, a move's verification finds
 * messages "missing").  So the stores and the journal are opened before
 * daemonizing, to report errors on the terminal, and again after.
 */
static int reopen_after_fork(mfs *m)
{
    close_stores(m);
    int rc = open_stores(m);
    if (rc)
        return rc;
    char *err = NULL;
    rc = ms_site_journal(m->site, &m->journal, &err);
    if (rc) {
        ms_log(LOG_ERR, "%s", err ? err : g_strerror(-rc));
        g_free(err);
    }
    return rc;
}

/*
 * The mount's housekeeping, every HOUSEKEEPING_S seconds until stopped:
 * recovery of moves handed to it (a rollback that could not reach the
 * directory, a hold left on a user: retried until the server is back),
 * and mail that reached a moved mailbox's old place (ms_carry_late).
 */
#define HOUSEKEEPING_S 2

typedef struct housekeeper {
    mfs *m;
    GMutex lock; /* guards stop */
    GCond cond;
    bool stop;
    GThread *thread;
} housekeeper;

static gpointer housekeeping(gpointer p)
{
    housekeeper *h = p;
    mfs *m = h->m;
    g_mutex_lock(&h->lock);
    while (!h->stop) {
        int64_t until = g_get_monotonic_time() + HOUSEKEEPING_S * G_TIME_SPAN_SECOND;
        while (!h->stop && g_cond_wait_until(&h->cond, &h->lock, until))
            ;
        if (h->stop)
            break;
        g_mutex_unlock(&h->lock);
        if (ms_journal_needs_recovery(m->journal)) {
            int rc = ms_recover(m->journal, m->stores, m->nstores, m->dir,
                                ms_config_retain_days(m->cfg), true, NULL);
            if (rc > 0)
                ms_log(LOG_INFO, "recovered %d moves", rc);
        }
        (void)ms_carry_late(m->journal, m->stores, m->nstores, NULL);
        g_mutex_lock(&h->lock);
    }
    g_mutex_unlock(&h->lock);
    return NULL;
}

static void housekeeping_start(housekeeper *h, mfs *m)
{
    h->m = m;
    g_mutex_init(&h->lock);
    g_cond_init(&h->cond);
    h->stop = false;
    h->thread = g_thread_new("housekeeping", housekeeping, h);
}

static void housekeeping_stop(housekeeper *h)
{
    g_mutex_lock(&h->lock);
    h->stop = true;
    g_cond_signal(&h->cond);
    g_mutex_unlock(&h->lock);
    g_thread_join(h->thread);
    g_mutex_clear(&h->lock);
    g_cond_clear(&h->cond);
}

static int serve(mfs *m, struct fuse_args *args, struct fuse_cmdline_opts *co)
{
    m->se = fuse_session_new(args, &mfs_ops, sizeof mfs_ops, m);
    if (!m->se)
        return 1;
    int ret = 1;
    if (fuse_set_signal_handlers(m->se) != 0)
        goto out_destroy;
    if (fuse_session_mount(m->se, co->mountpoint) != 0)
        goto out_signals;
    if (!co->foreground)
        ms_log_to_syslog("mailfs");
    ms_log(LOG_INFO, "mounted %s at %s (%zu stores)", ms_config_store(m->cfg, 0) ? "site" : "",
           co->mountpoint, m->nstores);
    /* After the mount, so that when this command returns it is usable. */
    fuse_daemonize(co->foreground);
    if (!co->foreground && reopen_after_fork(m) != 0) {
        fuse_session_unmount(m->se);
        goto out_signals;
    }
    /* In the background for good: the stores may start threads now. */
    for (size_t i = 0; i < m->nstores; i++)
        ms_store_background(m->stores[i]);
    lazy_start(m);
    housekeeper hk;
    housekeeping_start(&hk, m);
    if (co->singlethread) {
        ret = fuse_session_loop(m->se);
    } else {
        struct fuse_loop_config *lc = fuse_loop_cfg_create();
        fuse_loop_cfg_set_clone_fd(lc, co->clone_fd);
        /* fuse_parse_cmdline leaves -1 when -o max_threads is not given,
         * which libfuse then complains about: say the default instead. */
        fuse_loop_cfg_set_max_threads(
            lc, co->max_threads > 0 && co->max_threads <= 100000 ? co->max_threads : 10);
        if (co->max_idle_threads != UINT_MAX)
            fuse_loop_cfg_set_idle_threads(lc, co->max_idle_threads);
        ret = fuse_session_loop_mt(m->se, lc);
        fuse_loop_cfg_destroy(lc);
    }
    housekeeping_stop(&hk);
    lazy_free(m); /* what is still deferred, before the stores close */
    ret = ret != 0;
    fuse_session_unmount(m->se);
    ms_log(LOG_INFO, "unmounted %s", co->mountpoint);
out_signals:
    fuse_remove_signal_handlers(m->se);
out_destroy:
    fuse_session_destroy(m->se);
    return ret;
}

/* mountinfo's escapes (\040 for a space, ...) undone, in place. */
static void unescape_octal(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/*
 * A second daemon on a mount point mailfs already serves would stack a
 * mount on it and open the same stores twice (only one daemon may): say
 * so and do not mount.  Returns -EBUSY then.
 */
static int check_not_mounted(const char *mountpoint)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents("/proc/self/mountinfo", &text, NULL, NULL))
        return 0;
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (size_t i = 0; lines[i]; i++) {
        g_auto(GStrv) f = g_strsplit(lines[i], " ", -1);
        const char *sep = strstr(lines[i], " - ");
        if (g_strv_length(f) < 5 || !sep || !g_str_has_prefix(sep + 3, "fuse.mailfs "))
            continue;
        unescape_octal(f[4]);
        if (strcmp(f[4], mountpoint))
            continue;
        g_auto(GStrv) after = g_strsplit(sep + 3, " ", 3);
        if (after[0] && after[1])
            unescape_octal(after[1]);
        fprintf(stderr, "mailfs: %s: already a mailfs mount (of %s); unmount it first\n",
                mountpoint, after[0] && after[1] ? after[1] : "?");
        return -EBUSY;
    }
    return 0;
}

/* A mount point under which a configured file lies: refused (one line). */
static int check_paths_outside(const ms_config *cfg, const char *mountpoint)
{
    char *err = NULL;
    int rc = ms_config_check_mount(cfg, mountpoint, &err);
    if (rc)
        fprintf(stderr, "mailfs: %s\n", err);
    g_free(err);
    return rc;
}

/* Stores a move cannot point the directory at: worth a line at mount. */
static void warn_stores_without_directory(const ms_config *cfg, const char *config)
{
    if (!ms_config_directory(cfg))
        return;
    for (size_t i = 0; i < ms_config_store_count(cfg); i++) {
        const ms_store_conf *sc = ms_config_store(cfg, i);
        if (!sc->directory)
            ms_log(LOG_WARNING,
                   "%s: [store %s]: no directory = key although [directory] is configured: "
                   "moves into this store leave the directory entry unchanged",
                   config, sc->name);
    }
}

/* "-ofsname=/abs/config", with fuse_opt's separators escaped. */
static char *fsname_option(const char *config)
{
    char *abs = realpath(config, NULL);
    GString *s = g_string_new("-ofsname=");
    for (const char *p = abs ? abs : config; *p; p++) {
        if (*p == ',' || *p == '\\')
            g_string_append_c(s, '\\');
        g_string_append_c(s, *p);
    }
    free(abs);
    return g_string_free(s, FALSE);
}

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct options o = {0};
    struct fuse_cmdline_opts co = {0};
    int ret = 1;
    mfs m = {0};
    char *fsname = NULL;

    ms_process_init();
    if (fuse_opt_parse(&args, &o, option_spec, take_config) != 0)
        return 1;
    if (o.show_help) {
        usage(argv[0]);
        fuse_lowlevel_help();
        ret = 0;
        goto out;
    }
    if (o.show_version) {
        printf("mailfs %s (FUSE %s)\n", MS_VERSION, fuse_pkgversion());
        ret = 0;
        goto out;
    }
    if (fuse_parse_cmdline(&args, &co) != 0)
        goto out;
    if (!o.config || !co.mountpoint) {
        fprintf(stderr, "usage: %s [options] CONFIG MOUNTPOINT (see --help)\n", argv[0]);
        goto out;
    }
    ms_log_to_stderr(co.debug ? LOG_DEBUG : LOG_INFO);
    close_by_default(&o, &args);

    char *err = NULL;
    int rc = ms_site_open(o.config, MS_OPEN_DAEMON, &m.site, &err);
    if (rc) {
        fprintf(stderr, "mailfs: %s\n", err);
        g_free(err);
        goto out;
    }
    m.cfg = ms_site_config(m.site);
    if (check_not_mounted(co.mountpoint) != 0 || check_paths_outside(m.cfg, co.mountpoint) != 0)
        goto out;
    warn_stores_without_directory(m.cfg, o.config);
    if (open_stores(&m) != 0 || open_journal(&m) != 0)
        goto out;
    /* The mount's source is the configuration, as sshfs shows its
     * host:path: /proc/mounts then says which site is mounted where. */
    fsname = fsname_option(o.config);
    fuse_opt_add_arg(&args, fsname);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m.mount_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    /* Set by a restore of the whole mount, kept in the journal. */
    if (ms_journal_attr_get(m.journal, "top.mtime_ns", &m.top_mtime_ns) != 0)
        m.top_mtime_ns = m.mount_ns;
    m.uid = getuid();
    m.gid = getgid();
    ms_mutex_init(&m.lock);
    m.files = g_hash_table_new(g_direct_hash, g_direct_equal);
    m.opens = g_hash_table_new(g_direct_hash, g_direct_equal);
    lazy_new(&m);
    ret = serve(&m, &args, &co);
    lazy_free(&m); /* not started if serve failed early: frees only */
    g_hash_table_destroy(m.files);
    g_hash_table_destroy(m.opens);
    ms_mutex_clear(&m.lock);
out:
    ms_site_close(m.site);
    free(co.mountpoint);
    free(o.config);
    g_free(fsname);
    fuse_opt_free_args(&args);
    return ret;
}
