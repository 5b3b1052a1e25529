/*
 * store.c — the public store API: validates, then dispatches to the
 * backend's vtable.  Nothing here knows SQL or any on-disk format.
 */
#include "backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>

#include <glib.h>

static const ms_backend *const backends[] = {&ms_sqlite_backend, &ms_maildir_backend,
                                             &ms_pst_backend, NULL};

/* A backend that implements no tree write cannot write at all. */
static bool backend_writes(const ms_backend *be) { return be->tree->mkdir != NULL; }

int ms_backend_unsupported(const ms_store *st, bool write)
{
    return write && (st->readonly || !backend_writes(st->be)) ? -EROFS : -ENOTSUP;
}

/*
 * 0 when a write may go to the backend: the store is writable and the
 * backend has the slot (has_slot); else the one answer for it.
 */
static int may_write(const ms_store *st, bool has_slot)
{
    return st->readonly || !has_slot ? ms_backend_unsupported(st, true) : 0;
}

int ms_mailbox_refusal(int64_t lock_move, ms_mb_state state)
{
    if (lock_move)
        return -EBUSY;
    switch (state) {
    case MS_MB_VISIBLE:
    case MS_MB_INCOMING: /* the move's own copy: written by the move only */
        return 0;
    case MS_MB_RETAINED:
        return -ESTALE;
    default: /* deleted items: gone from the tree */
        return -ENOENT;
    }
}

const char *ms_store_backend_for(const char *path)
{
    for (size_t i = 0; backends[i]; i++)
        if (backends[i]->reads && backends[i]->reads(path))
            return backends[i]->name;
    return NULL;
}

int ms_store_open(const ms_store_conf *conf, int flags, ms_store **out, char **err)
{
    const ms_backend *be = NULL;
    *err = NULL;
    for (size_t i = 0; backends[i]; i++)
        if (!strcmp(backends[i]->name, conf->backend))
            be = backends[i];
    if (!be) {
        *err = g_strdup_printf("%s: unknown backend '%s'", conf->path, conf->backend);
        return -EINVAL;
    }
    ms_store *st = g_new0(ms_store, 1);
    st->be = be;
    st->name = g_strdup(conf->name);
    st->path = g_strdup(conf->path);
    st->directory = g_strdup(conf->directory);
    st->spool_dir = g_strdup(conf->spool);
    st->readonly = conf->readonly || (flags & MS_OPEN_READONLY) || !backend_writes(be);
    int rc = be->open(st, conf, flags, err);
    if (rc) {
        g_free(st->name);
        g_free(st->directory);
        g_free(st->path);
        g_free(st->spool_dir);
        g_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

void ms_store_close(ms_store *st)
{
    if (!st)
        return;
    st->be->close(st);
    g_free(st->directory);
    g_free(st->name);
    g_free(st->path);
    g_free(st->spool_dir);
    g_free(st);
}

const char *ms_store_name(const ms_store *st) { return st->name; }
bool ms_store_readonly(const ms_store *st) { return st->readonly; }
bool ms_store_shared(const ms_store *st) { return st->be->shared; }

bool ms_store_groups_writes(const ms_store *st) { return st->be->groups_writes && !st->readonly; }
const char *ms_store_directory(const ms_store *st) { return st->directory; }
int ms_store_stats_get(ms_store *st, ms_store_stats *out) { return st->be->admin->stats(st, out); }
int ms_store_compact(ms_store *st, int64_t *before, int64_t *after)
{
    int rc = may_write(st, st->be->admin->compact);
    return rc ? rc : st->be->admin->compact(st, before, after);
}

/* Nothing written, nothing to sync: 0 by default. */
void ms_store_background(ms_store *st)
{
    if (!st->readonly && st->be->admin->background)
        st->be->admin->background(st);
}

int ms_store_sync(ms_store *st)
{
    return st->readonly || !st->be->admin->sync ? 0 : st->be->admin->sync(st);
}

int ms_batch_begin(ms_store *st)
{
    int rc = may_write(st, st->be->admin->batch_begin);
    return rc ? rc : st->be->admin->batch_begin(st);
}

/* No batch can have begun without batch_begin: 0 by default. */
int ms_batch_end(ms_store *st, bool commit)
{
    return st->be->admin->batch_end ? st->be->admin->batch_end(st, commit) : 0;
}

int ms_store_statvfs(ms_store *st, struct statvfs *out)
{
    g_autofree char *dir = g_path_get_dirname(st->path);
    return statvfs(dir, out) < 0 ? -errno : 0;
}

/*
 * Names are bytes: anything but '/' and NUL, not "." or "..", not empty
 * (EINVAL), at most MS_NAME_MAX bytes (ENAMETOOLONG, as local
 * filesystems answer; FUSE passes longer names through).
 */
static int check_name(const char *name)
{
    size_t n = strlen(name);
    if (n > MS_NAME_MAX)
        return -ENAMETOOLONG;
    if (n == 0 || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return -EINVAL;
    return 0;
}

/*
 * -EOVERFLOW (logged) for a node whose id does not fit in MS_ID_BITS: the
 * mount would show it under another node's inode.  Backends check where
 * they make ids; this is the backstop for any that does not.
 */
static int id_fits(const ms_store *st, const ms_attr *a)
{
    if (a->node.id >= 0 && a->node.id <= MS_ID_MAX)
        return 0;
    ms_log(LOG_ERR, "%s: node id %lld exceeds %d bits", st->name, (long long)a->node.id,
           MS_ID_BITS);
    return -EOVERFLOW;
}

static bool is_dir_kind(ms_kind k) { return k == MS_ROOT || k == MS_MAILBOX || k == MS_FOLDER; }

/*
 * The mailbox a write at node changes, which every tree write names to
 * the backend (0 for the store's root, in no mailbox).  A node never
 * changes mailbox while it is visible, so finding it before the write's
 * transaction is safe; the backend checks the mailbox inside it.
 */
static int mailbox_of(ms_store *st, ms_node node, int64_t *mailbox)
{
    if (node.kind == MS_ROOT) {
        *mailbox = 0;
        return 0;
    }
    ms_attr a;
    int rc = st->be->tree->getattr(st, node, &a);
    if (!rc)
        *mailbox = a.mailbox;
    return rc;
}

/* The mailbox of parent's child name (of a mailbox: itself).  Below a
 * mailbox every child shares its parent's: found without looking the
 * child up (a rename into place, rsync's last step, saves a lookup; the
 * backend finds the child in its transaction anyway). */
static int mailbox_of_child(ms_store *st, ms_node parent, const char *name, int64_t *mailbox)
{
    if (parent.kind == MS_MAILBOX) {
        *mailbox = parent.id;
        return 0;
    }
    if (parent.kind == MS_FOLDER)
        return mailbox_of(st, parent, mailbox);
    ms_attr a;
    int rc = st->be->tree->lookup(st, parent, name, &a);
    if (!rc)
        *mailbox = a.mailbox;
    return rc;
}

int ms_lookup(ms_store *st, ms_node parent, const char *name, ms_attr *out)
{
    if (!is_dir_kind(parent.kind))
        return -ENOTDIR;
    int rc = check_name(name);
    if (rc)
        return rc == -ENAMETOOLONG ? rc : -ENOENT;
    return st->be->tree->lookup(st, parent, name, out);
}

int ms_getattr(ms_store *st, ms_node node, ms_attr *out)
{
    return st->be->tree->getattr(st, node, out);
}

int ms_setattr(ms_store *st, ms_node node, const ms_setattr_req *req, ms_attr *out)
{
    int64_t mb;
    int rc = may_write(st, st->be->tree->setattr);
    if (!rc)
        rc = mailbox_of(st, node, &mb);
    return rc ? rc : st->be->tree->setattr(st, mb, node, req, out);
}

int ms_list(ms_store *st, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx)
{
    if (!is_dir_kind(parent.kind))
        return -ENOTDIR;
    return st->be->tree->list(st, parent, cookie, fn, ctx);
}

int ms_mkdir(ms_store *st, ms_node parent, const char *name, uint32_t mode, uint32_t uid,
             uint32_t gid, ms_attr *out)
{
    int rc = check_name(name);
    if (rc)
        return rc;
    if (!is_dir_kind(parent.kind))
        return -ENOTDIR;
    if (parent.kind == MS_ROOT && ms_hidden_reserved(name))
        return -EINVAL;
    int64_t mb;
    rc = may_write(st, st->be->tree->mkdir);
    if (!rc)
        rc = mailbox_of(st, parent, &mb);
    if (rc)
        return rc;
    ms_attr a;
    rc = st->be->tree->mkdir(st, mb, parent, name, mode & 07777, uid, gid, &a);
    if (!rc)
        rc = id_fits(st, &a);
    if (!rc && out)
        *out = a;
    return rc;
}

int ms_rmdir(ms_store *st, ms_node parent, const char *name)
{
    int rc = check_name(name);
    if (rc)
        return rc;
    int64_t mb;
    rc = may_write(st, st->be->tree->rmdir);
    if (!rc)
        rc = mailbox_of_child(st, parent, name, &mb);
    if (rc)
        return rc;
    return st->be->tree->rmdir(st, mb, parent, name);
}

int ms_unlink(ms_store *st, ms_node folder, const char *name)
{
    int rc = check_name(name);
    if (rc)
        return rc;
    if (folder.kind != MS_FOLDER)
        return -ENOENT;
    int64_t mb;
    rc = may_write(st, st->be->tree->unlink);
    if (!rc)
        rc = mailbox_of(st, folder, &mb);
    if (rc)
        return rc;
    return st->be->tree->unlink(st, mb, folder, name);
}

int ms_rename(ms_store *st, ms_node parent, const char *name, ms_node newparent,
              const char *newname, bool noreplace)
{
    int rc = check_name(name);
    if (!rc)
        rc = check_name(newname);
    if (rc)
        return rc;
    if (!is_dir_kind(parent.kind) || !is_dir_kind(newparent.kind))
        return -ENOTDIR;
    if (newparent.kind == MS_ROOT && ms_hidden_reserved(newname))
        return -EINVAL;
    int64_t mb;
    rc = may_write(st, st->be->tree->rename);
    if (!rc)
        rc = mailbox_of_child(st, parent, name, &mb);
    if (rc)
        return rc;
    return st->be->tree->rename(st, mb, parent, name, newparent, newname, noreplace);
}

int ms_resolve(ms_store *st, const char *path, ms_node *out)
{
    g_auto(GStrv) parts = g_strsplit(path, "/", -1);
    ms_node n = {MS_ROOT, 0};
    for (size_t i = 0; parts[i]; i++) {
        if (!parts[i][0])
            continue; /* tolerate "a//b" and a trailing '/' */
        ms_attr a;
        int rc = ms_lookup(st, n, parts[i], &a);
        if (rc)
            return rc;
        if (!is_dir_kind(a.node.kind))
            return -ENOTDIR;
        n = a.node;
    }
    *out = n;
    return 0;
}

/* --------------------------------------------------------------- xattrs */

static const struct {
    const char *name;
    ms_xattr_id id;
    ms_kind kind;
} xattrs[] = {
    {"user.mail.flags", MS_XA_FLAGS, MS_MESSAGE},
    {"user.mail.special-use", MS_XA_SPECIAL_USE, MS_FOLDER},
    {"user.mail.acl", MS_XA_ACL, MS_MAILBOX},
};

/* Index into xattrs[] of name, or -1. */
static int xattr_index(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(xattrs); i++)
        if (!strcmp(xattrs[i].name, name))
            return (int)i;
    return -1;
}

/* RFC 3501 system flags that a message can store (\Recent is per session). */
static const char *const system_flags[] = {"\\Seen",    "\\Answered", "\\Flagged",
                                           "\\Deleted", "\\Draft",    NULL};

/* RFC 3501 ATOM-CHAR: printable ASCII but the atom-specials. */
static bool atom_char(unsigned char c) { return c > 0x20 && c < 0x7f && !strchr("(){%*\"\\]", c); }

/* The stored spelling of one flag, or NULL when it is not a flag. */
static const char *flag_spelling(const char *w)
{
    if (w[0] == '\\') {
        for (size_t i = 0; system_flags[i]; i++)
            if (!g_ascii_strcasecmp(w, system_flags[i]))
                return system_flags[i];
        return NULL; /* \Recent, \Bogus: not storable */
    }
    for (const char *p = w; *p; p++)
        if (!atom_char((unsigned char)*p))
            return NULL;
    return w;
}

/*
 * A user.mail.flags value is a set of IMAP flags separated by spaces.  It
 * is normalised, not refused, for what only spells the same set another
 * way: runs of spaces, system flags in another case, a flag given twice
 * (IMAP flags are case-insensitive; the first spelling is kept).  Anything
 * else that is not a storable flag (a control character, a non-ASCII
 * byte, an atom-special, \Recent or an unknown system flag) is refused.
 */
int ms_flags_normalize(const char *v, size_t len, char **out, size_t *out_len)
{
    if (len > MS_XATTR_MAX)
        return -E2BIG;
    if (len && memchr(v, '\0', len))
        return -EINVAL;
    g_autofree char *s = g_strndup(v, len);
    g_auto(GStrv) words = g_strsplit(s, " ", -1);
    GString *canon = g_string_new(NULL);
    GPtrArray *seen = g_ptr_array_new();
    int rc = 0;
    for (size_t i = 0; !rc && words[i]; i++) {
        if (!words[i][0])
            continue;
        const char *f = flag_spelling(words[i]);
        bool dup = false;
        for (guint k = 0; f && k < seen->len; k++)
            dup = dup || !g_ascii_strcasecmp(seen->pdata[k], f);
        if (!f)
            rc = -EINVAL;
        else if (!dup) {
            g_string_append_printf(canon, "%s%s", canon->len ? " " : "", f);
            g_ptr_array_add(seen, (gpointer)f);
        }
    }
    g_ptr_array_free(seen, TRUE);
    if (rc) {
        g_string_free(canon, TRUE);
        return rc;
    }
    *out_len = canon->len;
    *out = g_string_free(canon, FALSE);
    return 0;
}

/* What stores accepted before values were checked strictly: a copy of a
 * stored value (a move) must not fail on a value its source holds. */
static bool lenient_flags(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 && c != '\n' && c != '\t')
            return false;
        if (c == 0x7f || c == '(' || c == ')' || c == '{' || c == '"' || c == '%' || c == '*' ||
            c == ']')
            return false;
    }
    return true;
}

/*
 * RFC 6154 attributes, space-separated: an unknown one is refused; like
 * flags, the value is stored with single spaces and each attribute once.
 */
static int special_use_canonical(const char *v, size_t len, char **out, size_t *out_len)
{
    static const char *const known[] = {"\\All",  "\\Archive", "\\Drafts",    "\\Flagged", "\\Junk",
                                        "\\Sent", "\\Trash",   "\\Important", "\\Inbox",   NULL};
    if (len && memchr(v, '\0', len))
        return -EINVAL;
    g_autofree char *s = g_strndup(v, len);
    g_auto(GStrv) words = g_strsplit_set(s, " ", -1);
    GString *canon = g_string_new(NULL);
    for (size_t i = 0; words[i]; i++) {
        if (!words[i][0])
            continue;
        g_autofree char *padded = g_strdup_printf(" %s ", words[i]);
        g_autofree char *have = g_strdup_printf(" %s ", canon->str);
        if (!g_strv_contains(known, words[i])) {
            g_string_free(canon, TRUE);
            return -EINVAL;
        }
        if (!strstr(have, padded))
            g_string_append_printf(canon, "%s%s", canon->len ? " " : "", words[i]);
    }
    *out_len = canon->len;
    *out = g_string_free(canon, FALSE);
    return 0;
}

/* An ACL grantee: UTF-8, printable, no spaces ("-name" for negative rights). */
static bool valid_grantee(const char *g)
{
    if (!*g || !g_utf8_validate(g, -1, NULL))
        return false;
    for (const char *p = g; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        if (g_unichar_isspace(c) || g_unichar_iscntrl(c) || !g_unichar_isprint(c))
            return false;
    }
    return true;
}

/* RFC 4314 rights, each letter once. */
static bool valid_rights(const char *r)
{
    if (!*r)
        return false;
    for (const char *p = r; *p; p++)
        if (!strchr("lrswipkxteacd", *p) || strchr(p + 1, *p))
            return false;
    return true;
}

/*
 * user.mail.acl: one "grantee rights" line per grantee, exactly two
 * fields separated by one space.  Refused: extra fields, blank lines,
 * leading or trailing blanks, a grantee given twice, a grantee that is
 * not printable UTF-8, rights outside RFC 4314.  One final newline (as
 * files end) is accepted and not stored.
 */
static int acl_canonical(const char *v, size_t len, char **out, size_t *out_len)
{
    if (len && memchr(v, '\0', len))
        return -EINVAL;
    if (len && v[len - 1] == '\n')
        len--;
    g_autofree char *s = g_strndup(v, len);
    g_auto(GStrv) lines = g_strsplit(s, "\n", -1);
    g_autoptr(GHashTable) grantees = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (size_t i = 0; len && lines[i]; i++) {
        char *sp = strchr(lines[i], ' ');
        if (!sp || strchr(sp + 1, ' '))
            return -EINVAL;
        *sp = '\0';
        if (!valid_grantee(lines[i]) || !valid_rights(sp + 1) ||
            !g_hash_table_add(grantees, g_strdup(lines[i])))
            return -EINVAL;
        *sp = ' ';
    }
    *out_len = len;
    *out = g_strndup(v, len);
    return 0;
}

/* The value to store for xattr id, or -EINVAL. */
static int xattr_canonical(ms_xattr_id id, const char *v, size_t len, char **out, size_t *out_len)
{
    switch (id) {
    case MS_XA_FLAGS:
        return ms_flags_normalize(v, len, out, out_len);
    case MS_XA_SPECIAL_USE:
        return special_use_canonical(v, len, out, out_len);
    default:
        return acl_canonical(v, len, out, out_len);
    }
}

/* The checks of values copied verbatim (see lenient_flags). */
static bool lenient_special_use(const char *v, size_t len)
{
    static const char *const known[] = {"\\All",  "\\Archive", "\\Drafts",    "\\Flagged", "\\Junk",
                                        "\\Sent", "\\Trash",   "\\Important", "\\Inbox",   NULL};
    g_autofree char *s = g_strndup(v, len);
    g_auto(GStrv) words = g_strsplit_set(g_strstrip(s), " \t\n", -1);
    for (size_t i = 0; words[i]; i++)
        if (words[i][0] && !g_strv_contains(known, words[i]))
            return false;
    return true;
}

static bool lenient_acl(const char *v, size_t len)
{
    if (memchr(v, '\0', len))
        return false;
    g_autofree char *s = g_strndup(v, len);
    g_auto(GStrv) lines = g_strsplit(s, "\n", -1);
    for (size_t i = 0; lines[i]; i++) {
        char *line = g_strstrip(lines[i]);
        if (!*line)
            continue;
        char *sp = strrchr(line, ' ');
        if (!sp || sp == line)
            return false;
        for (const char *r = sp + 1; *r; r++)
            if (!strchr("lrswipkxteacd", *r))
                return false;
    }
    return true;
}

/* ------------------------------------------------ IMAP UIDs as attributes */

/*
 * user.mail.uid (a message's IMAP UID) and user.mail.uids (a folder's
 * "UIDVALIDITY UIDNEXT", or "noselect" for a mere parent), so that backups made with rsync -X, tar
 * --xattrs and cp -a and restored into an empty folder give IMAP clients the UIDs they had cached.
 * Read from the store's UID state, not kept apart.  A UID set is a wish: granted when no other
 * message of the folder has it, else the message keeps its own (a merge into a folder in use must
 * not fail nor steal a UID).  Removing them is a no-op: rsync removes what its source lacks, and a
 * backup made before they existed lacks them.
 */
#define XA_UID "user.mail.uid"
#define XA_UIDS "user.mail.uids"

/* 1 when name is one of them on a node of the right kind, -1 when one of
 * them on another kind, 0 when neither. */
static int uid_xattr(const char *name, ms_kind kind)
{
    if (!strcmp(name, XA_UID))
        return kind == MS_MESSAGE ? 1 : -1;
    if (!strcmp(name, XA_UIDS))
        return kind == MS_FOLDER ? 1 : -1;
    return 0;
}

static int uid_xattr_get(ms_store *st, ms_node node, char **value, size_t *len)
{
    ms_attr a;
    int rc = st->be->tree->getattr(st, node, &a);
    if (rc)
        return rc;
    if (node.kind == MS_MESSAGE) {
        if (a.imap_uid <= 0)
            return -ENODATA;
        *value = g_strdup_printf("%lld", (long long)a.imap_uid);
    } else {
        ms_folder_uids u;
        if (a.noselect) {
            /* A mere parent has no UIDs; a restore makes it one again. */
            *value = g_strdup("noselect");
            *len = strlen(*value);
            return 0;
        }
        if (!st->be->admin->folder_uids_get)
            return -ENODATA;
        rc = st->be->admin->folder_uids_get(st, node, &u);
        if (rc)
            return rc == -ENOTSUP ? -ENODATA : rc;
        *value = g_strdup_printf("%lu %lld", (unsigned long)u.uidvalidity, (long long)u.uidnext);
    }
    *len = strlen(*value);
    return 0;
}

/* Decimal digits only, 1..max: what the values hold. */
static bool parse_count(const char *s, size_t len, int64_t max, int64_t *out)
{
    if (!len || len > 19)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > max)
        return false;
    *out = v;
    return true;
}

static int uid_xattr_set(ms_store *st, ms_node node, const char *value, size_t len)
{
    if (node.kind == MS_MESSAGE) {
        int64_t uid;
        if (!parse_count(value, len, UINT32_MAX, &uid))
            return -EINVAL;
        int rc = may_write(st, st->be->admin->message_uid_set);
        return rc ? rc : st->be->admin->message_uid_set(st, node.id, uid);
    }
    if (len == 8 && !memcmp(value, "noselect", 8)) {
        int rc = ms_folder_unselect(st, node);
        return rc == -ENOTSUP ? 0 : rc;
    }
    const char *sp = memchr(value, ' ', len);
    int64_t v, n;
    if (!sp || !parse_count(value, (size_t)(sp - value), UINT32_MAX, &v) ||
        !parse_count(sp + 1, len - (size_t)(sp + 1 - value), (int64_t)UINT32_MAX + 1, &n))
        return -EINVAL;
    return ms_folder_uids_set(st, node, &(ms_folder_uids){(uint32_t)v, n});
}

int ms_xattr_get(ms_store *st, ms_node node, const char *name, char **value, size_t *len)
{
    int u = uid_xattr(name, node.kind);
    if (u)
        return u < 0 ? -ENODATA : uid_xattr_get(st, node, value, len);
    int i = xattr_index(name);
    if (i < 0 || xattrs[i].kind != node.kind)
        return -ENODATA;
    char *v = NULL;
    size_t n = 0;
    int rc = st->be->tree->xattr_get(st, node, xattrs[i].id, &v, &n);
    if (rc)
        return rc;
    if (!v) {
        return -ENODATA;
    }
    *value = v;
    *len = n;
    return 0;
}

int ms_xattr_set(ms_store *st, ms_node node, const char *name, const char *value, size_t len,
                 int flags)
{
    int u = uid_xattr(name, node.kind);
    if (u)
        return u < 0 ? -ENOTSUP : uid_xattr_set(st, node, value, len);
    int i = xattr_index(name);
    if (i < 0 || xattrs[i].kind != node.kind)
        return -ENOTSUP;
    int64_t mb;
    int wrc = may_write(st, st->be->tree->xattr_set);
    if (!wrc)
        wrc = mailbox_of(st, node, &mb);
    if (wrc)
        return wrc;
    if (len > MS_XATTR_MAX)
        return -E2BIG;
    g_autofree char *canon = NULL;
    if (flags & MS_XATTR_VERBATIM) {
        bool ok = xattrs[i].id == MS_XA_FLAGS         ? lenient_flags(value, len)
                  : xattrs[i].id == MS_XA_SPECIAL_USE ? lenient_special_use(value, len)
                                                      : lenient_acl(value, len);
        if (!ok)
            return -EINVAL;
    } else {
        int rc = xattr_canonical(xattrs[i].id, value, len, &canon, &len);
        if (rc)
            return rc;
        value = canon;
    }
    if (flags & (XATTR_CREATE | XATTR_REPLACE)) {
        char *old = NULL;
        size_t n = 0;
        int rc = st->be->tree->xattr_get(st, node, xattrs[i].id, &old, &n);
        if (rc)
            return rc;
        bool exists = old != NULL;
        g_free(old);
        if ((flags & XATTR_CREATE) && exists)
            return -EEXIST;
        if ((flags & XATTR_REPLACE) && !exists)
            return -ENODATA;
    }
    /* An empty value is stored as empty, not as "unset". */
    return st->be->tree->xattr_set(st, mb, node, xattrs[i].id, value ? value : "", len);
}

int ms_xattr_list(ms_store *st, ms_node node, char **names, size_t *len)
{
    GString *s = g_string_new(NULL);
    if (node.kind == MS_MESSAGE || node.kind == MS_FOLDER) {
        char *v = NULL;
        size_t n;
        if (uid_xattr_get(st, node, &v, &n) == 0) {
            const char *xa = node.kind == MS_MESSAGE ? XA_UID : XA_UIDS;
            g_string_append_len(s, xa, (gssize)strlen(xa) + 1);
        }
        g_free(v);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(xattrs); i++) {
        if (xattrs[i].kind != node.kind)
            continue;
        char *v = NULL;
        size_t n = 0;
        int rc = st->be->tree->xattr_get(st, node, xattrs[i].id, &v, &n);
        if (rc) {
            g_string_free(s, TRUE);
            return rc;
        }
        if (v)
            g_string_append_len(s, xattrs[i].name, (gssize)strlen(xattrs[i].name) + 1);
        g_free(v);
    }
    *len = s->len;
    *names = g_string_free(s, FALSE);
    return 0;
}

int ms_xattr_remove(ms_store *st, ms_node node, const char *name)
{
    int u = uid_xattr(name, node.kind);
    if (u)
        return u < 0 ? -ENODATA : 0;
    int i = xattr_index(name);
    if (i < 0 || xattrs[i].kind != node.kind)
        return -ENODATA;
    int64_t mb;
    int rc = may_write(st, st->be->tree->xattr_set);
    if (!rc)
        rc = mailbox_of(st, node, &mb);
    if (rc)
        return rc;
    char *old = NULL;
    size_t n = 0;
    rc = st->be->tree->xattr_get(st, node, xattrs[i].id, &old, &n);
    if (rc)
        return rc;
    if (!old)
        return -ENODATA;
    g_free(old);
    return st->be->tree->xattr_set(st, mb, node, xattrs[i].id, NULL, 0);
}

/* -------------------------------------------------------------- readers */

struct ms_reader {
    ms_store *st;
    ms_be_reader *br; /* owns the bytes until ms_reader_close */
    int64_t size;
};

int ms_reader_open(ms_store *st, int64_t message, ms_reader **out)
{
    ms_be_reader *br = NULL;
    int64_t size = 0;
    bool pending = false;
    int rc = st->be->content->reader_open(st, message, &br, &size, &pending);
    if (rc)
        return rc;
    ms_reader *r = g_new0(ms_reader, 1);
    r->st = st;
    r->br = br;
    r->size = size;
    *out = r;
    return 0;
}

ssize_t ms_reader_pread(ms_reader *r, void *buf, size_t len, int64_t off)
{
    if (off < 0)
        return -EINVAL;
    if (off >= r->size || len == 0)
        return 0;
    if ((int64_t)len > r->size - off)
        len = (size_t)(r->size - off);
    return r->st->be->content->reader_pread(r->st, r->br, buf, len, off);
}

int64_t ms_reader_size(const ms_reader *r) { return r->size; }

void ms_reader_close(ms_reader *r)
{
    if (!r)
        return;
    r->st->be->content->reader_close(r->st, r->br);
    g_free(r);
}

/* -------------------------------------------------------------- writers */

struct ms_writer {
    ms_store *st;
    int64_t message; /* 0: a new message (delivery or import) */
    ms_node folder;
    char *name;       /* import: the name it gets */
    int64_t imap_uid; /* import: the UID it keeps */
    ms_spool *spool;
    ms_setattr_req attr;
    char *flags;
    size_t flags_len;
    bool dirty;     /* bytes or attributes not yet committed */
    bool committed; /* at least one commit happened */
    bool created;   /* by ms_message_create: discard if never committed */
    /*
     * Writers of the mount (ms_writer_open) date what they change, as
     * any filesystem does: bytes changed since the last mtime the writer
     * set (touched) date the message at commit.  cp -a, rsync and tar set
     * the mtime after writing, which clears touched.  Deliveries and
     * imports keep their own dates.  touched_ns, the last change, is what
     * stat shows until the commit.
     */
    bool stamps;
    bool touched;
    int64_t touched_ns;
};

/* Records a change of the writer's bytes, which dates the message. */
static void touch(ms_writer *w)
{
    if (!w->stamps)
        return;
    w->touched = true;
    w->touched_ns = ms_now_ns();
}

int ms_message_create(ms_store *st, ms_node folder, const char *name, uint32_t mode, uint32_t uid,
                      uint32_t gid, ms_attr *out)
{
    int rc = check_name(name);
    if (rc)
        return rc;
    if (folder.kind != MS_FOLDER)
        return folder.kind == MS_MESSAGE ? -ENOTDIR : -EPERM;
    rc = may_write(st, st->be->content->message_create);
    if (rc)
        return rc;
    ms_attr a;
    rc = st->be->content->message_create(st, folder, name, mode & 07777, uid, gid, &a);
    if (!rc && (rc = id_fits(st, &a)) != 0 && st->be->content->discard_pending)
        st->be->content->discard_pending(st, a.node.id);
    if (!rc && out)
        *out = a;
    return rc;
}

static ms_writer *writer_new(ms_store *st)
{
    ms_writer *w = g_new0(ms_writer, 1);
    w->st = st;
    w->spool = ms_spool_new(st->spool_dir);
    return w;
}

/*
 * Fills w's spool with the bytes r owns: the message as it was when r
 * was opened, however it changes during the copy.
 */
static int spool_from(ms_writer *w, ms_reader *r)
{
    enum { BUF = 128 * 1024 };
    g_autofree char *buf = g_malloc(BUF);
    for (int64_t off = 0; off < r->size;) {
        ssize_t n = ms_reader_pread(r, buf, BUF, off);
        if (n <= 0)
            return n < 0 ? (int)n : -EIO;
        ssize_t m = ms_spool_pwrite(w->spool, buf, (size_t)n, off);
        if (m < 0)
            return (int)m;
        off += n;
    }
    return 0;
}

int ms_writer_open(ms_store *st, int64_t message, bool truncate, ms_writer **out)
{
    int rc = may_write(st, st->be->content->commit);
    if (rc)
        return rc;
    ms_be_reader *br = NULL;
    int64_t size = 0;
    bool pending = false;
    rc = st->be->content->reader_open(st, message, &br, &size, &pending);
    if (rc)
        return rc;
    ms_reader r = {.st = st, .br = br, .size = size};
    ms_writer *w = writer_new(st);
    w->message = message;
    w->created = pending;
    w->committed = !w->created;
    /* Start from the current bytes: an edit in place, or an append. */
    if (!truncate)
        rc = spool_from(w, &r);
    st->be->content->reader_close(st, br);
    if (rc) {
        ms_writer_close(w);
        return rc;
    }
    w->dirty = truncate && size > 0;
    w->stamps = true;
    if (w->created || w->dirty)
        touch(w);
    *out = w;
    return 0;
}

int ms_writer_deliver(ms_store *st, ms_node folder, ms_writer **out)
{
    if (folder.kind != MS_FOLDER)
        return -EPERM;
    int rc = may_write(st, st->be->content->commit);
    if (rc)
        return rc;
    ms_writer *w = writer_new(st);
    w->folder = folder;
    w->dirty = true;
    *out = w;
    return 0;
}

ssize_t ms_writer_pwrite(ms_writer *w, const void *buf, size_t len, int64_t off)
{
    ssize_t n = ms_spool_pwrite(w->spool, buf, len, off);
    if (n >= 0) {
        w->dirty = true;
        touch(w);
    }
    return n;
}

int ms_writer_truncate(ms_writer *w, int64_t size)
{
    int rc = ms_spool_truncate(w->spool, size);
    if (!rc) {
        w->dirty = true;
        touch(w);
    }
    return rc;
}

ssize_t ms_writer_pread(ms_writer *w, void *buf, size_t len, int64_t off)
{
    return ms_spool_pread(w->spool, buf, len, off);
}

int64_t ms_writer_message(const ms_writer *w) { return w->message; }

int64_t ms_writer_size(const ms_writer *w) { return ms_spool_size(w->spool); }
bool ms_writer_dirty(const ms_writer *w) { return w->dirty || !w->committed; }

void ms_writer_setattr(ms_writer *w, const ms_setattr_req *req)
{
    if (req->mask & MS_SET_MODE)
        w->attr.mode = req->mode & 07777;
    if (req->mask & MS_SET_UID)
        w->attr.uid = req->uid;
    if (req->mask & MS_SET_GID)
        w->attr.gid = req->gid;
    if (req->mask & MS_SET_MTIME) {
        w->attr.mtime_ns = req->mtime_ns;
        w->touched = false; /* the writer dates its bytes itself */
    }
    w->attr.mask |= req->mask;
    w->dirty = true;
}

void ms_writer_overlay(const ms_writer *w, ms_attr *a)
{
    if (!ms_writer_dirty(w))
        return;
    a->size = ms_spool_size(w->spool);
    if (w->attr.mask & MS_SET_MODE)
        a->mode = w->attr.mode;
    if (w->attr.mask & MS_SET_UID)
        a->uid = w->attr.uid;
    if (w->attr.mask & MS_SET_GID)
        a->gid = w->attr.gid;
    if (w->attr.mask & MS_SET_MTIME)
        a->mtime_ns = w->attr.mtime_ns;
    if (w->touched)
        a->mtime_ns = w->touched_ns;
}

int ms_writer_set_flags(ms_writer *w, const char *flags, size_t len)
{
    if (len > MS_XATTR_MAX)
        return -E2BIG;
    if (!lenient_flags(flags, len))
        return -EINVAL;
    g_free(w->flags);
    w->flags = g_memdup2(flags, len ? len : 1);
    w->flags_len = len;
    w->dirty = true;
    return 0;
}

int ms_writer_commit(ms_writer *w, bool durable, ms_attr *out)
{
    ms_commit c = {
        .message = w->message,
        .folder = w->folder,
        .name = w->name,
        .imap_uid = w->imap_uid,
        .spool = w->spool,
        .attr = w->attr,
        .flags = w->flags,
        .flags_len = w->flags_len,
        .durable = durable,
    };
    if (w->touched) {
        /* The commit's time, not the last write's: a backup that ran in
         * between read the old bytes, and must see these as newer. */
        c.attr.mask |= MS_SET_MTIME;
        c.attr.mtime_ns = ms_now_ns();
    }
    ms_attr a;
    int rc = w->st->be->content->commit(w->st, &c, &a);
    if (rc)
        return rc;
    if (!w->message)
        w->message = a.node.id; /* a second commit replaces, not delivers again */
    w->committed = true;
    w->dirty = false;
    w->touched = false;
    w->attr.mask = 0;
    g_clear_pointer(&w->flags, g_free);
    if (out)
        *out = a;
    return 0;
}

void ms_writer_close(ms_writer *w)
{
    if (!w)
        return;
    if (w->created && !w->committed && w->message && w->st->be->content->discard_pending)
        w->st->be->content->discard_pending(w->st, w->message);
    ms_spool_free(w->spool);
    g_free(w->flags);
    g_free(w->name);
    g_free(w);
}

int ms_writer_import(ms_store *st, ms_node folder, const char *name, int64_t uid, ms_writer **out)
{
    int rc = check_name(name);
    if (!rc)
        rc = ms_writer_deliver(st, folder, out);
    if (!rc) {
        (*out)->name = g_strdup(name);
        (*out)->imap_uid = uid;
    }
    return rc;
}

/* ------------------------------------------------- mailbox administration */

int ms_mailbox_find(ms_store *st, const char *name, ms_mb_state state, int64_t *id)
{
    return st->be->admin->mailbox_find(st, name, state, id);
}

int ms_mailbox_get_info(ms_store *st, int64_t id, ms_mailbox_info *out)
{
    return st->be->admin->mailbox_info(st, id, out);
}

int ms_mailbox_scan(ms_store *st, ms_mailbox_fn fn, void *ctx)
{
    return st->be->admin->mailbox_scan ? st->be->admin->mailbox_scan(st, fn, ctx) : 0;
}

int ms_mailbox_set(ms_store *st, int64_t id, const ms_mailbox_change *chg)
{
    int rc = may_write(st, st->be->admin->mailbox_set);
    if (rc)
        return rc;
    if (chg->name && (!chg->name[0] || strlen(chg->name) >= sizeof(((ms_mailbox_info *)0)->name)))
        return -EINVAL;
    return st->be->admin->mailbox_set(st, id, chg);
}

int ms_mailbox_drop(ms_store *st, int64_t id)
{
    int rc = may_write(st, st->be->admin->mailbox_drop);
    return rc ? rc : st->be->admin->mailbox_drop(st, id);
}

int ms_mailbox_size(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes)
{
    return st->be->admin->mailbox_size(st, id, messages, bytes);
}

int ms_mailbox_size_estimate(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes,
                             bool *estimated)
{
    *estimated = st->be->admin->mailbox_size_estimate != NULL;
    if (*estimated)
        return st->be->admin->mailbox_size_estimate(st, id, messages, bytes);
    return ms_mailbox_size(st, id, messages, bytes);
}

int ms_message_get_meta(ms_store *st, int64_t id, bool hash, ms_message_meta *out)
{
    return st->be->admin->message_meta(st, id, hash, out);
}

int ms_mailbox_create(ms_store *st, const char *name, ms_mb_state state, const ms_attr *like,
                      int64_t *id)
{
    int rc = may_write(st, st->be->admin->mailbox_create);
    if (rc)
        return rc;
    if (!name[0] || strlen(name) >= sizeof(((ms_mailbox_info *)0)->name))
        return -EINVAL;
    return st->be->admin->mailbox_create(st, name, state, like, id);
}

/* ----------------------------------------------------------- deleted items */

int ms_deleted_list(ms_store *st, const char *mailbox, ms_deleted_fn fn, void *ctx)
{
    if (mailbox && check_name(mailbox))
        return -ENOENT;
    if (!st->be->admin->deleted_list)
        return ms_backend_unsupported(st, false);
    return st->be->admin->deleted_list(st, mailbox, fn, ctx);
}

int ms_deleted_restore(ms_store *st, const char *mailbox, const char *path, int64_t *restored)
{
    if (check_name(mailbox))
        return -ENOENT;
    int rc = may_write(st, st->be->admin->deleted_restore);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = st->be->admin->deleted_restore(st, mailbox, path && *path ? path : NULL, &n);
    if (!rc && restored)
        *restored = n;
    return rc;
}

/* Now, in nanoseconds since the epoch, as deletion times are kept. */
int ms_deleted_purge(ms_store *st, int retain_days, bool all, ms_purged *out)
{
    int rc = may_write(st, st->be->admin->deleted_purge);
    if (rc)
        return rc;
    if (retain_days < 0)
        return -EINVAL;
    ms_purged p = {0};
    int64_t before = all ? INT64_MAX : ms_now_ns() - (int64_t)retain_days * 86400000000000LL;
    rc = st->be->admin->deleted_purge(st, before, &p);
    if (!rc && out)
        *out = p;
    return rc;
}

/* ------------------------------------------------------ UIDs, stamps, links */

int ms_folder_uids_get(ms_store *st, ms_node folder, ms_folder_uids *out)
{
    if (folder.kind != MS_FOLDER)
        return -EINVAL;
    if (!st->be->admin->folder_uids_get)
        return ms_backend_unsupported(st, false);
    return st->be->admin->folder_uids_get(st, folder, out);
}

int ms_folder_uids_set(ms_store *st, ms_node folder, const ms_folder_uids *u)
{
    if (folder.kind != MS_FOLDER || !u->uidvalidity || u->uidnext < 1)
        return -EINVAL;
    int rc = may_write(st, st->be->admin->folder_uids_set);
    return rc ? rc : st->be->admin->folder_uids_set(st, folder, u);
}

#ifdef MS_FAULT_INJECTION
/*
 * Test-only: with $MAILFS_FAKE_STAMP_FILE set, every mailbox's stamp is
 * the SHA-256 of that file's bytes, so a test changes "the mailbox behind
 * the store" by writing the file while a move stalls (MAILFS_STALL): the
 * sqlite backend has no stamp of its own.  A missing file stamps as empty.
 */
static int fake_stamp(const char *path, uint8_t out[MS_STAMP_LEN])
{
    g_autofree char *bytes = NULL;
    gsize len = 0;
    g_autoptr(GError) err = NULL;
    if (!g_file_get_contents(path, &bytes, &len, &err) &&
        !g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return -EIO;
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(sum, (const guchar *)(bytes ? bytes : ""), (gssize)len);
    gsize n = MS_STAMP_LEN;
    g_checksum_get_digest(sum, out, &n);
    return n == MS_STAMP_LEN ? 0 : -EIO;
}
#endif

int ms_mailbox_stamp(ms_store *st, int64_t id, uint8_t out[MS_STAMP_LEN])
{
#ifdef MS_FAULT_INJECTION
    const char *fake = getenv("MAILFS_FAKE_STAMP_FILE");
    if (fake && *fake)
        return fake_stamp(fake, out);
#endif
    if (!st->be->admin->mailbox_stamp)
        return -ENOTSUP;
    return st->be->admin->mailbox_stamp(st, id, out);
}

int ms_mailbox_modseq(ms_store *st, int64_t id, uint64_t *out)
{
    if (!st->be->admin->mailbox_modseq)
        return -ENOTSUP;
    return st->be->admin->mailbox_modseq(st, id, out);
}

int ms_message_link(ms_store *st, ms_node folder, const char *name, int64_t uid, ms_store *src,
                    int64_t message, ms_attr *out)
{
    if (folder.kind != MS_FOLDER)
        return -EINVAL;
    int rc = check_name(name);
    if (rc)
        return rc;
    if (src->be != st->be || !st->be->admin->message_link)
        return -EXDEV;
    rc = may_write(st, true);
    return rc ? rc : st->be->admin->message_link(st, folder, name, uid, src, message, out);
}

int ms_folder_unselect(ms_store *st, ms_node folder)
{
    if (folder.kind != MS_FOLDER)
        return -EINVAL;
    if (!st->be->admin->folder_unselect)
        return -ENOTSUP;
    int rc = may_write(st, true);
    return rc ? rc : st->be->admin->folder_unselect(st, folder);
}
