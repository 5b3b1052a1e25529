/*
 * directory.c — the directory client (DESIGN 5) on OpenLDAP's libldap.
 *
 * A store's location in the directory is a spec, "attr=value;attr=value"
 * (its `directory` key).  A move reads the current values of the target's
 * attributes for the mailbox's entry (to restore them on rollback), then
 * replaces them.  The mailbox name is escaped (RFC 4515) before it goes
 * into the filter, so "*)(uid=*" finds only an entry of that name.  The
 * password is read from password-file and never logged.
 */
#include "mailstore.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <glib.h>
#include <ldap.h>

#include "mutex.h"

struct ms_directory {
    ms_directory_conf conf; /* borrowed strings from the configuration */
    LDAP *ld;
    ms_mutex lock; /* guards ld: one LDAP handle, one operation at a time */
};

/*
 * Says why an operation failed, once: to the caller in *err when it asked
 * (it then puts the words in its own line, with what it was doing), else
 * in the log.  A reconnect's error is replaced by the operation's, which
 * names what was being done.
 */
static int fail(char **err, int rc, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int fail(char **err, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (!err) {
        ms_log(LOG_ERR, "directory: %s", msg);
        return rc;
    }
    g_free(*err);
    *err = g_steal_pointer(&msg);
    return rc;
}

static int sasl_external(LDAP *ld, unsigned flags, void *defaults, void *in)
{
    (void)ld;
    (void)flags;
    (void)defaults;
    (void)in;
    return LDAP_SUCCESS; /* EXTERNAL asks nothing */
}

/* (Re)connects and binds.  Caller holds d->lock. */
static int connect_locked(ms_directory *d, char **err)
{
    ms_mutex_assert_held(&d->lock);
    if (d->ld) {
        ldap_unbind_ext_s(d->ld, NULL, NULL);
        d->ld = NULL;
    }
    const ms_directory_conf *c = &d->conf;
    LDAP *ld = NULL;
    int rc = ldap_initialize(&ld, c->uri);
    if (rc != LDAP_SUCCESS)
        return fail(err, -EIO, "%s: %s", c->uri, ldap_err2string(rc));
    int v3 = LDAP_VERSION3;
    struct timeval tv = {5, 0};
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    /* The server's certificate is always verified (libldap's default,
     * said again so that an ldap.conf with TLS_REQCERT never weakens it). */
    int demand = LDAP_OPT_X_TLS_DEMAND;
    ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
    if (c->tls_cacert) {
        int newctx = 0;
        ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, c->tls_cacert);
        ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &newctx);
    }
    if (c->starttls && (rc = ldap_start_tls_s(ld, NULL, NULL)) != LDAP_SUCCESS) {
        ldap_unbind_ext_s(ld, NULL, NULL);
        return fail(err, -EIO, "%s: StartTLS: %s", c->uri, ldap_err2string(rc));
    }
    if (c->bind_dn) {
        g_autofree char *pw = NULL;
        GError *gerr = NULL;
        if (!c->password_file || !g_file_get_contents(c->password_file, &pw, NULL, &gerr)) {
            ldap_unbind_ext_s(ld, NULL, NULL);
            int r = fail(err, -EACCES, "%s: cannot read the bind password: %s",
                         c->password_file ? c->password_file : "(no password-file)",
                         gerr ? gerr->message : "not configured");
            g_clear_error(&gerr);
            return r;
        }
        pw[strcspn(pw, "\r\n")] = '\0';
        struct berval cred = {strlen(pw), pw};
        rc = ldap_sasl_bind_s(ld, c->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
        memset(pw, 0, strlen(pw));
    } else if (g_str_has_prefix(c->uri, "ldapi://")) {
        rc = ldap_sasl_interactive_bind_s(ld, NULL, "EXTERNAL", NULL, NULL, LDAP_SASL_QUIET,
                                          sasl_external, NULL);
    } else {
        struct berval none = {0, NULL};
        rc = ldap_sasl_bind_s(ld, NULL, LDAP_SASL_SIMPLE, &none, NULL, NULL, NULL);
    }
    if (rc != LDAP_SUCCESS) {
        ldap_unbind_ext_s(ld, NULL, NULL);
        return fail(err, -EIO, "%s: bind as %s: %s", c->uri, c->bind_dn ? c->bind_dn : "(sasl)",
                    ldap_err2string(rc));
    }
    d->ld = ld;
    return 0;
}

/*
 * True when a simple bind would send the password unencrypted: an
 * ldap:// URI (anywhere in a list, since libldap fails over along it)
 * without StartTLS.  ldaps:// is TLS from the start, ldapi:// a local
 * socket.
 */
static bool password_in_clear(const ms_directory_conf *c)
{
    g_autofree char *uri = g_ascii_strdown(c->uri, -1);
    return c->bind_dn && !c->starttls && strstr(uri, "ldap://");
}

/* One warning when the password file is not private to its owner. */
static void warn_if_password_shared(const ms_directory_conf *c)
{
    struct stat sb;
    if (c->password_file && stat(c->password_file, &sb) == 0 && (sb.st_mode & 077))
        ms_log(LOG_WARNING,
               "%s: the LDAP password file is readable by group or others (mode %04o); "
               "chmod 600 it",
               c->password_file, (unsigned)(sb.st_mode & 07777));
}

int ms_directory_open(const ms_directory_conf *conf, ms_directory **out, char **err)
{
    if (password_in_clear(conf) && !conf->allow_cleartext) {
        /* Refused before connecting: the password must never leave. */
        if (err)
            *err = g_strdup_printf(
                "[directory]: %s: refusing a simple bind (bind-dn) over ldap:// without "
                "StartTLS, which sends the password in clear; set starttls = yes, or use "
                "ldaps:// or ldapi:// (allow-cleartext = yes is for tests only)",
                conf->uri);
        return -EPERM;
    }
    warn_if_password_shared(conf);
    ms_directory *d = g_new0(ms_directory, 1);
    d->conf = *conf;
    ms_mutex_init(&d->lock);
    ms_mutex_lock(&d->lock);
    char *why = NULL;
    int rc = connect_locked(d, &why);
    ms_mutex_unlock(&d->lock);
    /* A server that is down now may be up for the next move, which checks
     * (and fails with EIO if it is still down): a warning, and success.  A
     * password that cannot be read is the configuration's fault and final. */
    if (rc && rc != -EIO) {
        ms_mutex_clear(&d->lock);
        g_free(d);
        if (err) {
            *err = why;
            return rc;
        }
        fail(NULL, rc, "%s", why);
        g_free(why);
        return rc;
    }
    /* A notice: the daemon's log shows it at mount; a command that needs
     * the directory says it once, when it is refused. */
    if (rc)
        ms_log(LOG_NOTICE, "directory: %s (moves retry, and are refused while it stays so)", why);
    g_free(why);
    *out = d;
    return 0;
}

void ms_directory_close(ms_directory *d)
{
    if (!d)
        return;
    if (d->ld)
        ldap_unbind_ext_s(d->ld, NULL, NULL);
    ms_mutex_clear(&d->lock);
    g_free(d);
}

int ms_directory_ping(ms_directory *d, char **err)
{
    ms_mutex_lock(&d->lock);
    LDAPMessage *res = NULL;
    char *attrs[] = {"1.1", NULL};
    int rc = d->ld ? ldap_search_ext_s(d->ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0,
                                       NULL, NULL, NULL, 1, &res)
                   : LDAP_SERVER_DOWN;
    ldap_msgfree(res);
    int ret = 0;
    if (rc != LDAP_SUCCESS)
        ret = connect_locked(d, err); /* the server may be back */
    ms_mutex_unlock(&d->lock);
    return ret;
}

/* RFC 4515 filter for mailbox; g_free. */
static char *mailbox_filter(const ms_directory *d, const char *mailbox)
{
    struct berval in = {strlen(mailbox), (char *)mailbox}, esc = {0, NULL};
    if (ldap_bv2escaped_filter_value(&in, &esc) != 0)
        return NULL;
    const char *p = strstr(d->conf.filter, "%s");
    char *f =
        g_strdup_printf("%.*s%s%s", (int)(p - d->conf.filter), d->conf.filter, esc.bv_val, p + 2);
    ber_memfree(esc.bv_val);
    return f;
}

/* Runs op once, and once more after reconnecting if the server had gone. */
#define RETRY(d, err, rc, expr)                                                                    \
    do {                                                                                           \
        rc = (d)->ld ? (expr) : LDAP_SERVER_DOWN;                                                  \
        if ((rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR) && connect_locked(d, err) == 0)   \
            rc = (expr);                                                                           \
    } while (0)

int ms_directory_entry(ms_directory *d, const char *mailbox, char **dn, char **err)
{
    g_autofree char *filter = mailbox_filter(d, mailbox);
    if (!filter)
        return fail(err, -EINVAL, "cannot escape mailbox name");
    ms_mutex_lock(&d->lock);
    LDAPMessage *res = NULL;
    char *attrs[] = {"1.1", NULL};
    int rc;
    RETRY(d, err, rc,
          ldap_search_ext_s(d->ld, d->conf.base, LDAP_SCOPE_SUBTREE, filter, attrs, 0, NULL, NULL,
                            NULL, 2, &res));
    int ret = 0;
    if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED) {
        ret = fail(err, -EIO, "search %s in %s: %s", filter, d->conf.base, ldap_err2string(rc));
    } else {
        int n = ldap_count_entries(d->ld, res);
        if (n == 0)
            ret = fail(err, -ENOENT, "no entry for mailbox %s (%s under %s)", mailbox, filter,
                       d->conf.base);
        else if (n > 1 || rc == LDAP_SIZELIMIT_EXCEEDED)
            ret = fail(err, -EIO, "more than one entry for mailbox %s (%s)", mailbox, filter);
        else {
            char *s = ldap_get_dn(d->ld, ldap_first_entry(d->ld, res));
            *dn = g_strdup(s);
            ldap_memfree(s);
        }
    }
    ldap_msgfree(res);
    ms_mutex_unlock(&d->lock);
    return ret;
}

/* Splits "a=1;b=2" into attribute names and values (both NULL-terminated). */
static bool parse_spec(const char *spec, GStrv *attrs, GStrv *values)
{
    g_auto(GStrv) parts = g_strsplit(spec ? spec : "", ";", -1);
    GPtrArray *a = g_ptr_array_new(), *v = g_ptr_array_new();
    bool ok = true;
    for (size_t i = 0; parts[i]; i++) {
        char *p = g_strstrip(parts[i]);
        if (!*p)
            continue;
        char *eq = strchr(p, '=');
        if (!eq || eq == p) {
            ok = false;
            break;
        }
        g_ptr_array_add(a, g_strndup(p, (gsize)(eq - p)));
        g_ptr_array_add(v, g_strdup(eq + 1));
    }
    g_ptr_array_add(a, NULL);
    g_ptr_array_add(v, NULL);
    *attrs = (GStrv)g_ptr_array_free(a, FALSE);
    *values = (GStrv)g_ptr_array_free(v, FALSE);
    return ok;
}

bool ms_directory_spec_valid(const char *spec)
{
    g_auto(GStrv) attrs = NULL, values = NULL;
    return parse_spec(spec, &attrs, &values) && attrs[0];
}

char *ms_directory_hold_spec(ms_directory *d, bool on)
{
    g_auto(GStrv) attrs = NULL, values = NULL;
    if (!d || !d->conf.lock || !parse_spec(d->conf.lock, &attrs, &values))
        return NULL;
    g_autofree char *until = g_strdup_printf("%lld", (long long)time(NULL) + d->conf.lock_seconds);
    GString *out = g_string_new(NULL);
    for (size_t i = 0; attrs[i]; i++) {
        g_auto(GStrv) parts = g_strsplit(values[i], "%t", -1);
        g_autofree char *v = g_strjoinv(until, parts);
        g_string_append_printf(out, "%s%s=%s", i ? ";" : "", attrs[i], on ? v : "");
    }
    return g_string_free(out, FALSE);
}

int ms_directory_read(ms_directory *d, const char *dn, const char *spec, char **current, char **err)
{
    g_auto(GStrv) attrs = NULL, want = NULL;
    if (!parse_spec(spec, &attrs, &want))
        return fail(err, -EINVAL, "bad directory spec '%s'", spec);
    ms_mutex_lock(&d->lock);
    LDAPMessage *res = NULL;
    int rc;
    RETRY(d, err, rc,
          ldap_search_ext_s(d->ld, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL, NULL,
                            NULL, 1, &res));
    int ret = 0;
    LDAPMessage *e = rc == LDAP_SUCCESS ? ldap_first_entry(d->ld, res) : NULL;
    if (!e) {
        ret = fail(err, rc == LDAP_NO_SUCH_OBJECT || rc == LDAP_SUCCESS ? -ENOENT : -EIO,
                   "read %s: %s", dn, ldap_err2string(rc));
    } else {
        GString *out = g_string_new(NULL);
        for (size_t i = 0; attrs[i]; i++) {
            struct berval **vals = ldap_get_values_len(d->ld, e, attrs[i]);
            g_string_append_printf(out, "%s%s=%.*s", i ? ";" : "", attrs[i],
                                   vals && vals[0] ? (int)vals[0]->bv_len : 0,
                                   vals && vals[0] ? vals[0]->bv_val : "");
            ldap_value_free_len(vals);
        }
        *current = g_string_free(out, FALSE);
    }
    ldap_msgfree(res);
    ms_mutex_unlock(&d->lock);
    return ret;
}

int ms_directory_write(ms_directory *d, const char *dn, const char *spec, char **err)
{
    g_auto(GStrv) attrs = NULL, values = NULL;
    if (!parse_spec(spec, &attrs, &values))
        return fail(err, -EINVAL, "bad directory spec '%s'", spec);
    size_t n = g_strv_length(attrs);
    LDAPMod *mods = g_new0(LDAPMod, n), **list = g_new0(LDAPMod *, n + 1);
    char ***vals = g_new0(char **, n);
    for (size_t i = 0; i < n; i++) {
        vals[i] = g_new0(char *, 2);
        vals[i][0] = values[i];
        /* An empty value restores "absent": replace with nothing deletes. */
        mods[i].mod_op = LDAP_MOD_REPLACE;
        mods[i].mod_type = attrs[i];
        mods[i].mod_values = values[i][0] ? vals[i] : NULL;
        list[i] = &mods[i];
    }
    ms_mutex_lock(&d->lock);
    int rc;
    RETRY(d, err, rc, ldap_modify_ext_s(d->ld, dn, list, NULL, NULL));
    ms_mutex_unlock(&d->lock);
    for (size_t i = 0; i < n; i++)
        g_free(vals[i]);
    g_free(vals);
    g_free(list);
    g_free(mods);
    if (rc != LDAP_SUCCESS)
        return fail(err, -EIO, "modify %s (%s): %s", dn, spec, ldap_err2string(rc));
    return 0;
}

/*
 * The attribute the filter names the mailbox by: "uid" in "(uid=%s)".
 * NULL when the filter is not of that simple shape.
 */
static char *naming_attr(const char *filter)
{
    const char *p = strstr(filter, "=%s");
    if (!p)
        return NULL;
    const char *b = p;
    while (b > filter && (g_ascii_isalnum(b[-1]) || b[-1] == '-' || b[-1] == ';'))
        b--;
    return b < p ? g_strndup(b, (gsize)(p - b)) : NULL;
}

int ms_directory_scan(ms_directory *d, const char *const *attrs, ms_dir_entry_fn fn, void *ctx,
                      char **err)
{
    g_autofree char *name_attr = naming_attr(d->conf.filter);
    if (!name_attr)
        return fail(err, -EINVAL, "filter %s: cannot tell the mailbox attribute", d->conf.filter);
    /* every entry the filter could match: %s becomes * */
    const char *p = strstr(d->conf.filter, "%s");
    g_autofree char *filter =
        g_strdup_printf("%.*s*%s", (int)(p - d->conf.filter), d->conf.filter, p + 2);
    GPtrArray *want = g_ptr_array_new();
    g_ptr_array_add(want, name_attr);
    for (size_t i = 0; attrs && attrs[i]; i++)
        g_ptr_array_add(want, (gpointer)attrs[i]);
    g_ptr_array_add(want, NULL);
    struct berval *cookie = NULL;
    int ret = 0;
    ms_mutex_lock(&d->lock);
    if (!d->ld && connect_locked(d, err) != 0)
        ret = -EIO;
    while (!ret) {
        LDAPControl *page = NULL, *ctrls[2] = {NULL, NULL}, **rctrls = NULL;
        LDAPMessage *res = NULL;
        int rc = ldap_create_page_control(d->ld, 1000, cookie, 0, &page);
        ctrls[0] = page;
        if (rc == LDAP_SUCCESS)
            rc = ldap_search_ext_s(d->ld, d->conf.base, LDAP_SCOPE_SUBTREE, filter,
                                   (char **)want->pdata, 0, ctrls, NULL, NULL, 0, &res);
        if (rc != LDAP_SUCCESS) {
            ret = fail(err, -EIO, "search %s under %s: %s", filter, d->conf.base,
                       ldap_err2string(rc));
        } else {
            for (LDAPMessage *e = ldap_first_entry(d->ld, res); e && !ret;
                 e = ldap_next_entry(d->ld, e)) {
                char *dn = ldap_get_dn(d->ld, e);
                struct berval **names = ldap_get_values_len(d->ld, e, name_attr);
                GString *spec = g_string_new(NULL);
                for (size_t i = 0; attrs && attrs[i]; i++) {
                    struct berval **v = ldap_get_values_len(d->ld, e, attrs[i]);
                    g_string_append_printf(spec, "%s%s=%.*s", i ? ";" : "", attrs[i],
                                           v && v[0] ? (int)v[0]->bv_len : 0,
                                           v && v[0] ? v[0]->bv_val : "");
                    ldap_value_free_len(v);
                }
                for (size_t k = 0; names && names[k] && !ret; k++) {
                    g_autofree char *nm = g_strndup(names[k]->bv_val, names[k]->bv_len);
                    ret = fn(ctx, nm, dn, spec->str);
                }
                g_string_free(spec, TRUE);
                ldap_value_free_len(names);
                ldap_memfree(dn);
            }
            if (cookie) {
                ber_bvfree(cookie);
                cookie = NULL;
            }
            int code;
            if (ldap_parse_result(d->ld, res, &code, NULL, NULL, NULL, &rctrls, 0) ==
                LDAP_SUCCESS) {
                LDAPControl *pr = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, rctrls, NULL);
                ber_int_t total;
                struct berval next = {0, NULL};
                if (pr &&
                    ldap_parse_pageresponse_control(d->ld, pr, &total, &next) == LDAP_SUCCESS &&
                    next.bv_len > 0)
                    cookie = ber_bvdup(&next);
                if (next.bv_val)
                    ber_memfree(next.bv_val);
            }
            ldap_controls_free(rctrls);
        }
        ldap_msgfree(res);
        if (page)
            ldap_control_free(page);
        if (!cookie)
            break;
    }
    if (cookie)
        ber_bvfree(cookie);
    ms_mutex_unlock(&d->lock);
    g_ptr_array_free(want, TRUE);
    return ret;
}
