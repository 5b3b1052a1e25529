/*
 * site.c — one configuration with its stores, journal and directory,
 * each opened once and only when first needed, for the daemon, mailfsctl
 * and recovery alike.  The directory in particular is opened only by
 * what uses it: reading the journal (mailfsctl moves) needs no LDAP
 * password.
 */
#include "mailstore.h"

#include <errno.h>
#include <string.h>

#include <glib.h>

struct ms_site {
    ms_config *cfg;
    int store_flags;   /* MS_OPEN_* for every store */
    ms_store **stores; /* by configuration index; NULL: not opened yet */
    size_t nstores;
    ms_journal *journal; /* NULL: not opened yet */
    ms_directory *dir;
    bool dir_opened; /* dir is final (NULL: none configured) */
};

int ms_site_open(const char *config, int store_flags, ms_site **out, char **err)
{
    ms_config *cfg;
    int rc = ms_config_load(config, &cfg, err);
    if (rc)
        return rc;
    ms_site *s = g_new0(ms_site, 1);
    s->cfg = cfg;
    s->store_flags = store_flags;
    s->nstores = ms_config_store_count(cfg);
    s->stores = g_new0(ms_store *, s->nstores ? s->nstores : 1);
    *out = s;
    return 0;
}

void ms_site_release(ms_site *s)
{
    ms_journal_close(s->journal);
    s->journal = NULL;
    for (size_t i = 0; i < s->nstores; i++)
        g_clear_pointer(&s->stores[i], ms_store_close);
}

void ms_site_close(ms_site *s)
{
    if (!s)
        return;
    ms_site_release(s);
    ms_directory_close(s->dir);
    g_free(s->stores);
    ms_config_free(s->cfg);
    g_free(s);
}

const ms_config *ms_site_config(const ms_site *s) { return s->cfg; }

/* Opens store i if it is not open yet. */
static int open_store_at(ms_site *s, size_t i, char **err)
{
    if (s->stores[i])
        return 0;
    return ms_store_open(ms_config_store(s->cfg, i), s->store_flags, &s->stores[i], err);
}

int ms_site_store(ms_site *s, const char *name, ms_store **out, char **err)
{
    *err = NULL;
    for (size_t i = 0; i < s->nstores; i++) {
        if (strcmp(ms_config_store(s->cfg, i)->name, name))
            continue;
        int rc = open_store_at(s, i, err);
        if (!rc)
            *out = s->stores[i];
        return rc;
    }
    *err = g_strdup_printf("no store named %s in the configuration", name);
    return -ENOENT;
}

int ms_site_stores(ms_site *s, ms_store *const **stores, size_t *n, char **err)
{
    *err = NULL;
    for (size_t i = 0; i < s->nstores; i++) {
        int rc = open_store_at(s, i, err);
        if (rc)
            return rc;
    }
    *stores = s->stores;
    *n = s->nstores;
    return 0;
}

int ms_site_journal(ms_site *s, ms_journal **out, char **err)
{
    *err = NULL;
    if (!s->journal) {
        int rc = ms_journal_open(ms_config_journal(s->cfg), &s->journal, err);
        if (rc)
            return rc;
    }
    *out = s->journal;
    return 0;
}

int ms_site_directory(ms_site *s, ms_directory **out, char **err)
{
    *err = NULL;
    if (!s->dir_opened) {
        const ms_directory_conf *dc = ms_config_directory(s->cfg);
        int rc = dc ? ms_directory_open(dc, &s->dir, err) : 0;
        if (rc)
            return rc; /* tried again next time: the admin may fix the file meanwhile */
        s->dir_opened = true;
    }
    *out = s->dir;
    return 0;
}
