/*
 * config.c — the site configuration (DESIGN section 2), read with GKeyFile.
 *
 * Strict on purpose: an unknown group or key is an error, because a typo
 * in a mail site's configuration ("pth = ...") must not silently mount
 * an empty store.  Every error is one line that names the file.
 */
#include "mailstore.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <glib.h>

struct ms_config {
    ms_directory_conf *dir;
    char *file;
    char *journal;
    char *spool;
    char *kick; /* the cutover's command that drops a user's sessions */
    int retain_days;
    GPtrArray *stores; /* of ms_store_conf* */
};

static void store_conf_free(gpointer p)
{
    ms_store_conf *sc = p;
    g_free(sc->name);
    g_free(sc->backend);
    g_free(sc->path);
    g_free(sc->directory);
    g_free(sc->layout);
    g_free(sc->spool);
    g_free(sc);
}

static void directory_conf_free(ms_directory_conf *d)
{
    if (!d)
        return;
    g_free(d->uri);
    g_free(d->bind_dn);
    g_free(d->password_file);
    g_free(d->base);
    g_free(d->filter);
    g_free(d->tls_cacert);
    g_free(d->lock);
    g_free(d);
}

void ms_config_free(ms_config *cfg)
{
    if (!cfg)
        return;
    directory_conf_free(cfg->dir);
    g_free(cfg->file);
    g_free(cfg->journal);
    g_free(cfg->spool);
    g_free(cfg->kick);
    if (cfg->stores)
        g_ptr_array_free(cfg->stores, TRUE);
    g_free(cfg);
}

/* Relative paths in the file are relative to the file's own folder. */
static char *resolve_path(const char *file, const char *value)
{
    if (g_path_is_absolute(value))
        return g_strdup(value);
    g_autofree char *dir = g_path_get_dirname(file);
    g_autofree char *abs = g_build_filename(dir, value, NULL);
    return g_canonicalize_filename(abs, NULL);
}

/* Checks that every key of group is in allowed; sets *err otherwise. */
static int check_keys(GKeyFile *kf, const char *file, const char *group, const char *const *allowed,
                      char **err)
{
    g_auto(GStrv) keys = g_key_file_get_keys(kf, group, NULL, NULL);
    for (size_t i = 0; keys && keys[i]; i++) {
        if (!g_strv_contains(allowed, keys[i])) {
            *err = g_strdup_printf("%s: [%s]: unknown key '%s'", file, group, keys[i]);
            return -EINVAL;
        }
    }
    return 0;
}

static const char *const mailfs_keys[] = {"journal", "retain-days", "spool", "kick", NULL};
static const char *const directory_keys[] = {
    "uri",        "bind-dn",         "password-file", "base",         "filter", "starttls",
    "tls-cacert", "allow-cleartext", "lock",          "lock-seconds", NULL};
static const char *const store_keys[] = {"backend",   "path",   "directory",
                                         "read-only", "layout", NULL};
static const char *const backends[] = {"sqlite", "maildir", "pst", NULL};

/*
 * Reads an optional boolean key.  Admins write yes/no and on/off as often
 * as true/false, and GKeyFile knows only the latter (and 1/0), so all are
 * taken; anything else is an error naming the key, never a silent false.
 */
static int get_bool(GKeyFile *kf, const char *file, const char *group, const char *key, bool *out,
                    char **err)
{
    g_autofree char *v = g_key_file_get_string(kf, group, key, NULL);
    if (!v)
        return 0;
    g_strstrip(v);
    static const char *const yes[] = {"true", "yes", "on", "1", NULL};
    static const char *const no[] = {"false", "no", "off", "0", NULL};
    for (int i = 0; yes[i]; i++) {
        if (!g_ascii_strcasecmp(v, yes[i])) {
            *out = true;
            return 0;
        }
        if (!g_ascii_strcasecmp(v, no[i])) {
            *out = false;
            return 0;
        }
    }
    *err = g_strdup_printf("%s: [%s]: %s: '%s' is not yes or no", file, group, key, v);
    return -EINVAL;
}

static bool valid_store_name(const char *name)
{
    return name[0] && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/') &&
           strlen(name) <= MS_NAME_MAX;
}

static int parse_store(GKeyFile *kf, const char *file, const char *group, ms_config *cfg,
                       char **err)
{
    const char *name = group + strlen("store ");
    int rc = check_keys(kf, file, group, store_keys, err);
    if (rc)
        return rc;
    if (!valid_store_name(name)) {
        *err = g_strdup_printf("%s: [%s]: invalid store name", file, group);
        return -EINVAL;
    }
    if (ms_config_find_store(cfg, name)) {
        *err = g_strdup_printf("%s: [%s]: store defined twice", file, group);
        return -EINVAL;
    }
    ms_store_conf *sc = g_new0(ms_store_conf, 1);
    g_ptr_array_add(cfg->stores, sc);
    sc->name = g_strdup(name);
    sc->backend = g_key_file_get_string(kf, group, "backend", NULL);
    if (!sc->backend)
        sc->backend = g_strdup("sqlite");
    if (!g_strv_contains(backends, sc->backend)) {
        *err = g_strdup_printf("%s: [%s]: unknown backend '%s' (known: sqlite, maildir, pst)", file,
                               group, sc->backend);
        return -EINVAL;
    }
    g_autofree char *path = g_key_file_get_string(kf, group, "path", NULL);
    if (!path || !*path) {
        *err = g_strdup_printf("%s: [%s]: missing key 'path'", file, group);
        return -EINVAL;
    }
    sc->path = resolve_path(file, path);
    struct stat sb;
    if (!strcmp(sc->backend, "sqlite") && stat(sc->path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        *err = g_strdup_printf("%s: [%s]: path: %s is a directory, not a database file", file,
                               group, sc->path);
        return -EINVAL;
    }
    sc->directory = g_key_file_get_string(kf, group, "directory", NULL);
    /* Only maildir stores have a layout; a typo elsewhere is an error. */
    sc->layout = g_key_file_get_string(kf, group, "layout", NULL);
    if (sc->layout && strcmp(sc->backend, "maildir")) {
        *err = g_strdup_printf("%s: [%s]: layout: only maildir stores have one", file, group);
        return -EINVAL;
    }
    if (sc->layout && strcmp(sc->layout, "maildir++") && strcmp(sc->layout, "fs")) {
        *err = g_strdup_printf("%s: [%s]: layout: '%s' is neither maildir++ nor fs", file, group,
                               sc->layout);
        return -EINVAL;
    }
    rc = get_bool(kf, file, group, "read-only", &sc->readonly, err);
    if (rc)
        return rc;
    return 0;
}

static int parse_directory(GKeyFile *kf, const char *file, ms_config *cfg, char **err)
{
    int rc = check_keys(kf, file, "directory", directory_keys, err);
    if (rc)
        return rc;
    ms_directory_conf *d = g_new0(ms_directory_conf, 1);
    cfg->dir = d;
    d->uri = g_key_file_get_string(kf, "directory", "uri", NULL);
    d->bind_dn = g_key_file_get_string(kf, "directory", "bind-dn", NULL);
    g_autofree char *pw = g_key_file_get_string(kf, "directory", "password-file", NULL);
    if (pw)
        d->password_file = resolve_path(file, pw);
    d->base = g_key_file_get_string(kf, "directory", "base", NULL);
    d->filter = g_key_file_get_string(kf, "directory", "filter", NULL);
    g_autofree char *ca = g_key_file_get_string(kf, "directory", "tls-cacert", NULL);
    if (ca)
        d->tls_cacert = resolve_path(file, ca);
    if (!d->filter)
        d->filter = g_strdup("(uid=%s)");
    d->lock = g_key_file_get_string(kf, "directory", "lock", NULL);
    d->lock_seconds = 60;
    if (g_key_file_has_key(kf, "directory", "lock-seconds", NULL)) {
        GError *gerr = NULL;
        d->lock_seconds = g_key_file_get_integer(kf, "directory", "lock-seconds", &gerr);
        /* Dovecot refuses a delay_until more than 5 minutes ahead. */
        if (gerr || d->lock_seconds < 1 || d->lock_seconds > 300) {
            g_clear_error(&gerr);
            *err = g_strdup_printf("%s: [directory]: lock-seconds must be 1 to 300", file);
            return -EINVAL;
        }
    }
    if (d->lock && !ms_directory_spec_valid(d->lock)) {
        *err = g_strdup_printf("%s: [directory]: lock must be ATTRIBUTE=VALUE pairs separated "
                               "by ';' (%%t: the Unix time the hold ends)",
                               file);
        return -EINVAL;
    }
    rc = get_bool(kf, file, "directory", "starttls", &d->starttls, err);
    if (!rc)
        rc = get_bool(kf, file, "directory", "allow-cleartext", &d->allow_cleartext, err);
    if (rc)
        return rc;
    if (!d->uri || !d->base) {
        *err = g_strdup_printf("%s: [directory]: needs uri and base", file);
        return -EINVAL;
    }
    if (!g_str_has_prefix(d->uri, "ldap://") && !g_str_has_prefix(d->uri, "ldapi://") &&
        !g_str_has_prefix(d->uri, "ldaps://")) {
        *err = g_strdup_printf("%s: [directory]: uri must be ldap://, ldaps:// or ldapi://", file);
        return -EINVAL;
    }
    if (d->starttls && !g_str_has_prefix(d->uri, "ldap://")) {
        *err = g_strdup_printf("%s: [directory]: starttls is for ldap:// URIs only", file);
        return -EINVAL;
    }
    const char *p = strstr(d->filter, "%s");
    if (!p || strstr(p + 2, "%") || strchr(d->filter, '%') != p) {
        *err = g_strdup_printf("%s: [directory]: filter must hold exactly one %%s", file);
        return -EINVAL;
    }
    return 0;
}

static int parse_mailfs(GKeyFile *kf, const char *file, ms_config *cfg, char **err)
{
    int rc = check_keys(kf, file, "mailfs", mailfs_keys, err);
    if (rc)
        return rc;
    g_autofree char *journal = g_key_file_get_string(kf, "mailfs", "journal", NULL);
    if (journal) {
        g_free(cfg->journal);
        cfg->journal = resolve_path(file, journal);
    }
    g_autofree char *spool = g_key_file_get_string(kf, "mailfs", "spool", NULL);
    if (spool)
        cfg->spool = resolve_path(file, spool);
    cfg->kick = g_key_file_get_string(kf, "mailfs", "kick", NULL);
    gchar **argv = NULL;
    if (cfg->kick && !g_shell_parse_argv(cfg->kick, NULL, &argv, NULL)) {
        *err = g_strdup_printf("%s: [mailfs]: kick: not a command line: %s", file, cfg->kick);
        return -EINVAL;
    }
    g_strfreev(argv);
    if (g_key_file_has_key(kf, "mailfs", "retain-days", NULL)) {
        GError *gerr = NULL;
        int days = g_key_file_get_integer(kf, "mailfs", "retain-days", &gerr);
        if (gerr || days < 0) {
            *err = g_strdup_printf("%s: [mailfs]: retain-days must be a whole number >= 0", file);
            g_clear_error(&gerr);
            return -EINVAL;
        }
        cfg->retain_days = days;
    }
    return 0;
}

/*
 * The path with every symlink, "." and ".." resolved, also when the file
 * (or its folders) do not exist yet: the longest existing prefix is
 * resolved and the rest appended.  So "./x.db", "x.db" and a symlink to
 * it give the same string.
 */
static char *canonical_path(const char *path)
{
    char buf[PATH_MAX];
    if (realpath(path, buf))
        return g_strdup(buf);
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    if (!strcmp(dir, path) || !strcmp(base, ".") || !strcmp(base, ".."))
        return g_strdup(path);
    g_autofree char *cdir = canonical_path(dir);
    return g_build_filename(cdir, base, NULL);
}

/*
 * GKeyFile merges a group written twice into one, so a second
 * [store a] would silently add to or override the first: the file's
 * group header lines are read here to refuse that.
 */
static int check_duplicate_groups(const char *file, char **err)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents(file, &text, NULL, NULL))
        return 0; /* GKeyFile read it: a race at worst, nothing to add */
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (size_t i = 0; lines[i]; i++) {
        const char *l = lines[i];
        while (g_ascii_isspace(*l))
            l++;
        const char *end = strrchr(l, ']');
        if (*l != '[' || !end)
            continue;
        char *name = g_strndup(l + 1, (size_t)(end - l - 1));
        gpointer first = g_hash_table_lookup(seen, name);
        if (first) {
            *err = g_strdup_printf("%s: [%s]: group written twice (lines %d and %zu)", file, name,
                                   GPOINTER_TO_INT(first), i + 1);
            g_free(name);
            return -EINVAL;
        }
        g_hash_table_insert(seen, name, GINT_TO_POINTER((int)i + 1));
    }
    return 0;
}

/* Two stores on one database would each think they own it. */
static int check_distinct_paths(const char *file, const ms_config *cfg, char **err)
{
    for (size_t i = 0; i < cfg->stores->len; i++) {
        ms_store_conf *a = g_ptr_array_index(cfg->stores, i);
        g_autofree char *ca = canonical_path(a->path);
        for (size_t k = 0; k < i; k++) {
            ms_store_conf *b = g_ptr_array_index(cfg->stores, k);
            g_autofree char *cb = canonical_path(b->path);
            if (!strcmp(ca, cb)) {
                *err = g_strdup_printf("%s: [store %s]: path: %s is also the path of [store %s]",
                                       file, a->name, ca, b->name);
                return -EINVAL;
            }
        }
    }
    return 0;
}

int ms_config_load(const char *path, ms_config **out, char **err)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();
    GError *gerr = NULL;
    *err = NULL;
    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &gerr)) {
        int rc = gerr->domain == G_FILE_ERROR && gerr->code == G_FILE_ERROR_NOENT   ? -ENOENT
                 : gerr->domain == G_FILE_ERROR && gerr->code == G_FILE_ERROR_ACCES ? -EACCES
                                                                                    : -EINVAL;
        *err = g_strdup_printf("%s: %s", path, gerr->message);
        g_error_free(gerr);
        return rc;
    }
    ms_config *cfg = g_new0(ms_config, 1);
    g_autofree char *cwd = g_get_current_dir();
    g_autofree char *abs = g_canonicalize_filename(path, cwd);
    cfg->file = g_strdup(abs);
    cfg->retain_days = MS_RETAIN_DAYS_DEFAULT;
    cfg->stores = g_ptr_array_new_with_free_func(store_conf_free);
    g_autofree char *dir = g_path_get_dirname(abs);
    cfg->journal = g_build_filename(dir, "journal.db", NULL);

    int rc = check_duplicate_groups(path, err);
    g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
    for (size_t i = 0; !rc && groups[i]; i++) {
        const char *g = groups[i];
        if (!strcmp(g, "mailfs"))
            rc = parse_mailfs(kf, path, cfg, err);
        else if (!strcmp(g, "directory"))
            rc = parse_directory(kf, path, cfg, err);
        else if (g_str_has_prefix(g, "store "))
            rc = parse_store(kf, path, g, cfg, err);
        else {
            *err = g_strdup_printf("%s: unknown group [%s]", path, g);
            rc = -EINVAL;
        }
    }
    if (!rc && cfg->stores->len == 0) {
        *err = g_strdup_printf("%s: no [store NAME] group: nothing to serve", path);
        rc = -EINVAL;
    }
    if (!rc)
        rc = check_distinct_paths(path, cfg, err);
    if (rc) {
        ms_config_free(cfg);
        return rc;
    }
    for (size_t i = 0; i < cfg->stores->len; i++) {
        ms_store_conf *sc = g_ptr_array_index(cfg->stores, i);
        sc->spool = g_strdup(cfg->spool);
    }
    *out = cfg;
    return 0;
}

size_t ms_config_store_count(const ms_config *cfg) { return cfg->stores->len; }

const ms_store_conf *ms_config_store(const ms_config *cfg, size_t i)
{
    return i < cfg->stores->len ? g_ptr_array_index(cfg->stores, i) : NULL;
}

const ms_store_conf *ms_config_find_store(const ms_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->stores->len; i++) {
        ms_store_conf *sc = g_ptr_array_index(cfg->stores, i);
        if (!strcmp(sc->name, name))
            return sc;
    }
    return NULL;
}

const char *ms_config_journal(const ms_config *cfg) { return cfg->journal; }
int ms_config_retain_days(const ms_config *cfg) { return cfg->retain_days; }
const char *ms_config_spool(const ms_config *cfg) { return cfg->spool; }

const ms_directory_conf *ms_config_directory(const ms_config *cfg) { return cfg->dir; }

const char *ms_config_kick(const ms_config *cfg) { return cfg->kick; }

/* True when path is the folder dir or anything under it. */
static bool is_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && (path[n] == '/' || path[n] == '\0' || !strcmp(dir, "/"));
}

/* Sets *err when path (the value of key in group) lies under mnt. */
static int check_outside(const ms_config *cfg, const char *group, const char *key, const char *path,
                         const char *mnt, char **err)
{
    if (!path)
        return 0;
    g_autofree char *c = canonical_path(path);
    if (!is_under(c, mnt))
        return 0;
    *err = g_strdup_printf("%s: [%s]: %s: %s is under the mount point %s (the daemon would wait "
                           "on itself)",
                           cfg->file, group, key, c, mnt);
    return -EINVAL;
}

int ms_config_check_mount(const ms_config *cfg, const char *mountpoint, char **err)
{
    *err = NULL;
    g_autofree char *mnt = canonical_path(mountpoint);
    int rc = check_outside(cfg, "mailfs", "journal", cfg->journal, mnt, err);
    if (!rc)
        rc = check_outside(cfg, "mailfs", "spool", cfg->spool, mnt, err);
    for (size_t i = 0; !rc && i < cfg->stores->len; i++) {
        ms_store_conf *sc = g_ptr_array_index(cfg->stores, i);
        g_autofree char *group = g_strdup_printf("store %s", sc->name);
        rc = check_outside(cfg, group, "path", sc->path, mnt, err);
    }
    if (!rc && cfg->dir)
        rc = check_outside(cfg, "directory", "password-file", cfg->dir->password_file, mnt, err);
    if (!rc && cfg->dir)
        rc = check_outside(cfg, "directory", "tls-cacert", cfg->dir->tls_cacert, mnt, err);
    return rc;
}
