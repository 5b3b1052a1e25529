/*
 * maildir.c — the maildir backend: opening a store, the cache of what its
 * files hold (maildir_int.h says how it stays true), and every read.
 */
#include "maildir_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

/* ---------------------------------------------------------------- ids */

/* Ids come from one counter, so an id names one object whatever its kind.
 * by_id is keyed by the object's own id field (no key of its own) and
 * its value is the object's address with the kind in its low bits: a
 * folder of 50,000 messages costs one table slot per message here. */
#define KIND_BITS 3u
_Static_assert(MS_MESSAGE < (1 << KIND_BITS) && MS_MAILBOX < (1 << KIND_BITS),
               "a kind fits in the low bits of an object's address");
_Static_assert(_Alignof(md_msg) >= (1 << KIND_BITS) && _Alignof(md_folder) >= (1 << KIND_BITS) &&
                   _Alignof(struct md_mbox) >= (1 << KIND_BITS),
               "objects leave their low address bits free");

static gpointer tagged(void *obj, ms_kind kind)
{
    return (gpointer)((uintptr_t)obj | (uintptr_t)kind);
}

/* Gives obj (of kind, whose id field is *idp) a new id. */
void md_new_id(md_store *s, ms_kind kind, void *obj, int64_t *idp)
{
    ms_mutex_assert_held(&s->lock);
    *idp = ++s->next_id;
    g_hash_table_replace(s->by_id, idp, tagged(obj, kind));
}

void md_forget_id(md_store *s, int64_t id) { g_hash_table_remove(s->by_id, &id); }

/* The object of kind with id, or NULL (gone, or another kind). */
void *md_by_id(md_store *s, ms_kind kind, int64_t id)
{
    uintptr_t v = (uintptr_t)g_hash_table_lookup(s->by_id, &id);
    if (!v || (v & ((1u << KIND_BITS) - 1)) != (uintptr_t)kind)
        return NULL;
    return (void *)(v & ~(uintptr_t)((1u << KIND_BITS) - 1));
}

/*
 * Whether a listing read at scanned_ns of a directory whose mtime was
 * then mtime_was is still right for a directory whose mtime is now
 * mtime_now: not if it changed, nor if it had changed within one
 * timestamp tick before the read (a second change in that tick, after
 * the read, would leave the mtime as it was).  The tick: a second where
 * the filesystem keeps whole seconds (an mtime with no nanoseconds, as
 * some NFS servers give), else the kernel's coarse clock, a few
 * milliseconds (50 ms allowed).
 */
static bool still_fresh(int64_t mtime_was, int64_t mtime_now, int64_t scanned_ns)
{
    int64_t tick = mtime_now % 1000000000LL ? 50000000LL : 1000000000LL;
    return mtime_was == mtime_now && mtime_now < scanned_ns - tick;
}

/*
 * A cache checked against the files less than this long ago is taken as
 * it is: a burst of calls on one folder (a move, ls -l) checks its
 * directories once, not per call.  A change behind mailfs shows at most
 * this much later; a write that depends on the files forces a check.
 */
#define RECHECK_NS (5 * 1000000LL)

/* ---------------------------------------------------------------- paths */

char *md_mbox_path(md_store *s, md_mbox *mb) { return g_build_filename(s->path, mb->name, NULL); }

char *md_folder_path_abs(md_store *s, md_folder *f)
{
    return g_build_filename(s->path, f->mb->name, f->dir, NULL);
}

static const char *msg_tail(const md_msg *m) { return m->tail_long ? m->tail_long : m->tail; }

char *md_msg_fname(const md_msg *m) { return g_strconcat(m->base, msg_tail(m), NULL); }

void md_msg_set_fname(md_msg *m, const char *fname)
{
    m->f->gen++;
    size_t bl = strlen(m->base);
    g_assert(!strncmp(fname, m->base, bl)); /* the base is the message's key */
    const char *tail = fname + bl;
    g_clear_pointer(&m->tail_long, g_free);
    if (strlen(tail) < sizeof m->tail)
        strcpy(m->tail, tail);
    else
        m->tail_long = g_strdup(tail);
}

/* Whether fname is its file name now. */
static bool msg_fname_is(const md_msg *m, const char *fname)
{
    size_t bl = strlen(m->base);
    return !strncmp(fname, m->base, bl) && !strcmp(fname + bl, msg_tail(m));
}

const char *md_msg_info(const md_msg *m)
{
    const char *last = strrchr(msg_tail(m), ':');
    return last && last[1] == '2' && last[2] == ',' ? last + 3 : NULL;
}

char *md_msg_path(md_store *s, md_msg *m)
{
    g_autofree char *fname = md_msg_fname(m);
    return g_build_filename(s->path, m->f->mb->name, m->f->dir, m->in_new ? "new" : "cur", fname,
                            NULL);
}

/* ------------------------------------------------------------- objects */

char *md_msg_name(char *base, size_t base_len)
{
    char *name = md_name_of_base(base, base_len);
    if (strcmp(name, base))
        return name;
    g_free(name);
    return base;
}

static void msg_free(gpointer p)
{
    md_msg *m = p;
    if (m->name != m->base) /* shared when they are the same (md_msg_name) */
        g_free(m->name);
    g_free(m->base);
    g_free(m->tail_long);
    g_free(m->pflags);
    g_free(m);
}

static void folder_free(gpointer p)
{
    md_folder *f = p;
    if (f->by_base)
        g_hash_table_destroy(f->by_base);
    if (f->by_name)
        g_hash_table_destroy(f->by_name);
    md_uidlist_free(f->ul);
    md_keywords_clear(&f->kw);
    if (f->batch_lock)
        md_uidlist_unlock(f->batch_lock);
    md_batch_clear(f);
    if (f->batch_files)
        g_ptr_array_free(f->batch_files, TRUE);
    g_free(f->path);
    g_free(f->dir);
    g_free(f);
}

static void mbox_free(gpointer p)
{
    md_mbox *mb = p;
    if (mb->folders)
        g_hash_table_destroy(mb->folders);
    g_free(mb->meta_name);
    g_free(mb->name);
    g_free(mb);
}

md_msg *md_msg_named(md_folder *f, const char *name)
{
    md_msg *m = g_hash_table_lookup(f->by_name, name);
    if (m)
        return m;
    m = g_hash_table_lookup(f->by_base, name);
    return m && m->name == m->base ? m : NULL;
}

void md_msg_name_add(md_folder *f, md_msg *m)
{
    if (m->name != m->base)
        g_hash_table_insert(f->by_name, m->name, m);
}

/* Forgets message m (gone from its folder): its id stops resolving. */
void md_msg_drop(md_store *s, md_msg *m)
{
    m->f->dropped = true;
    m->f->gen++;
    md_forget_id(s, m->id);
    if (m->name != m->base && g_hash_table_lookup(m->f->by_name, m->name) == m)
        g_hash_table_remove(m->f->by_name, m->name);
    g_hash_table_remove(m->f->by_base, m->base); /* frees m */
}

/* Gives message m the id keep (its node before a rewrite or a rename),
 * forgetting the one it was given. */
void md_msg_reid(md_store *s, md_msg *m, int64_t keep)
{
    md_forget_id(s, m->id);
    m->id = keep;
    /* replace, not insert: the key is m's own field from now on */
    g_hash_table_replace(s->by_id, &m->id, tagged(m, MS_MESSAGE));
}

/* Forgets what f's listing held (the folder went away or is re-made). */
void md_folder_drop_cache(md_store *s, md_folder *f)
{
    f->gen++;
    if (f->by_base) {
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, f->by_base);
        while (g_hash_table_iter_next(&it, NULL, &v))
            md_forget_id(s, ((md_msg *)v)->id);
        g_hash_table_remove_all(f->by_name);
        g_hash_table_remove_all(f->by_base);
    }
    f->scanned = false;
    g_clear_pointer(&f->ul, md_uidlist_free);
}

static void folder_forget(md_store *s, md_folder *f)
{
    md_folder_drop_cache(s, f);
    md_forget_id(s, f->id);
    g_hash_table_remove(f->mb->folders, f->path); /* frees f */
}

static void mbox_forget(md_store *s, md_mbox *mb)
{
    if (mb->folders) {
        GList *all = g_hash_table_get_values(mb->folders);
        for (GList *l = all; l; l = l->next)
            folder_forget(s, l->data);
        g_list_free(all);
    }
    md_forget_id(s, mb->id);
    g_hash_table_remove(s->mb_by_name, mb->name);
}

md_mbox *md_mbox_get(md_store *s, const char *name)
{
    md_mbox *mb = g_hash_table_lookup(s->mb_by_name, name);
    if (mb)
        return mb;
    mb = g_new0(md_mbox, 1);
    mb->name = g_strdup(name);
    mb->folders = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, folder_free);
    md_new_id(s, MS_MAILBOX, mb, &mb->id);
    g_hash_table_insert(s->mb_by_name, mb->name, mb);
    return mb;
}

/* The folder at tree path of mb, made known (not created) if new; NULL
 * for a path this layout cannot hold. */
md_folder *md_folder_get(md_store *s, md_mbox *mb, const char *path)
{
    md_folder *f = g_hash_table_lookup(mb->folders, path);
    if (f)
        return f;
    g_autoptr(GString) dir = g_string_new(NULL);
    if (md_folder_dir(s->layout, path, dir))
        return NULL;
    f = g_new0(md_folder, 1);
    f->mb = mb;
    f->path = g_strdup(path);
    f->dir = g_strdup(dir->str);
    f->by_base = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, msg_free);
    f->by_name = g_hash_table_new(g_str_hash, g_str_equal);
    md_new_id(s, MS_FOLDER, f, &f->id);
    g_hash_table_insert(mb->folders, f->path, f);
    return f;
}

/* f's parent folder, or NULL when f is at the top of its mailbox. */
md_folder *md_folder_parent(md_store *s, md_folder *f)
{
    const char *slash = strrchr(f->path, '/');
    if (!slash)
        return NULL;
    g_autofree char *p = g_strndup(f->path, (gsize)(slash - f->path));
    return md_folder_get(s, f->mb, p);
}

/* ------------------------------------------------------------ refreshes */

int md_dir_mtime(const char *path, int64_t *out)
{
    struct stat sb;
    if (stat(path, &sb) < 0)
        return -errno;
    if (!S_ISDIR(sb.st_mode))
        return -ENOTDIR;
    *out = ts_ns(&sb.st_mtim);
    return 0;
}

/* Mailboxes: the store folder's subdirectories, except lost+found and
 * names starting with '.', which no mailbox can have. */
int md_refresh_root(md_store *s)
{
    ms_mutex_assert_held(&s->lock);
    int64_t mt;
    int rc = md_dir_mtime(s->path, &mt);
    if (rc)
        return rc;
    if (s->root_scanned && still_fresh(s->root_mtime_ns, mt, s->root_scanned_ns))
        return 0;
    int64_t now = ms_now_ns();
    DIR *d = opendir(s->path);
    if (!d)
        return -errno;
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, s->mb_by_name);
    while (g_hash_table_iter_next(&it, NULL, &v))
        ((md_mbox *)v)->seen = false;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "lost+found"))
            continue;
        if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN)
            continue;
        if (e->d_type == DT_UNKNOWN) {
            struct stat sb;
            if (fstatat(dirfd(d), e->d_name, &sb, 0) < 0 || !S_ISDIR(sb.st_mode))
                continue;
        }
        md_mbox_get(s, e->d_name)->seen = true;
    }
    closedir(d);
    GList *all = g_hash_table_get_values(s->mb_by_name);
    for (GList *l = all; l; l = l->next)
        if (!((md_mbox *)l->data)->seen)
            mbox_forget(s, l->data);
    g_list_free(all);
    s->root_scanned = true;
    s->root_mtime_ns = mt;
    s->root_scanned_ns = now;
    return 0;
}

/* Marks the folder at path seen, with its parents (maildir++ may hold
 * ".a.b" without ".a": a is a folder all the same). */
static void see_folder(md_store *s, md_mbox *mb, const char *path, bool exists)
{
    md_folder *f = md_folder_get(s, mb, path);
    if (!f)
        return;
    f->seen = true;
    if (exists)
        f->exists = true;
    const char *slash = strrchr(path, '/');
    if (slash) {
        g_autofree char *p = g_strndup(path, (gsize)(slash - path));
        md_folder *pf = g_hash_table_lookup(mb->folders, p);
        if (!pf || !pf->seen)
            see_folder(s, mb, p, false);
    }
}

/* True for a name in a mailbox root that is Dovecot's or ours, not a
 * folder (fs layout). */
static bool reserved_in_root(const char *n)
{
    return !strcmp(n, "cur") || !strcmp(n, "new") || !strcmp(n, "tmp");
}

/* The folder name found on disk at dir (relative to the root), logged
 * and shown raw when it is not valid modified UTF-7.  selectable: it is
 * a Maildir (fs layout: a directory without cur/ only holds folders). */
static void found_folder(md_store *s, md_mbox *mb, const char *dir, bool selectable)
{
    g_autoptr(GString) path = g_string_new(NULL);
    if (md_folder_path(s->layout, dir, path)) {
        g_string_truncate(path, 0);
        md_folder_raw_path(s->layout, dir, path);
        if (!path->len)
            return;
        ms_log(LOG_WARNING,
               "%s/%s/%s: folder name is not valid modified UTF-7: shown as '%s', untouched",
               s->path, mb->name, dir, path->str);
    }
    md_folder *f = md_folder_get(s, mb, path->str);
    if (f && strcmp(f->dir, dir)) {
        /* A raw name whose tree path maps back elsewhere: serve it where
         * it is. */
        g_free(f->dir);
        f->dir = g_strdup(dir);
    }
    see_folder(s, mb, path->str, selectable);
}

static void scan_fs_dir(md_store *s, md_mbox *mb, const char *root, const char *rel, int depth)
{
    g_autofree char *abs = g_build_filename(root, rel, NULL);
    DIR *d = opendir(abs);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || (!*rel && reserved_in_root(e->d_name)) ||
            (*rel && reserved_in_root(e->d_name)))
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, 0) < 0 || !S_ISDIR(sb.st_mode))
            continue;
        g_autofree char *sub = *rel ? g_strconcat(rel, "/", e->d_name, NULL) : g_strdup(e->d_name);
        /* "INBOX/x" lives in a plain folder "INBOX": INBOX itself is the root. */
        if (*rel || strcmp(e->d_name, "INBOX")) {
            struct stat cb;
            g_autofree char *cur = g_build_filename(abs, e->d_name, "cur", NULL);
            found_folder(s, mb, sub, stat(cur, &cb) == 0 && S_ISDIR(cb.st_mode));
        }
        if (depth < 64)
            scan_fs_dir(s, mb, root, sub, depth + 1);
    }
    closedir(d);
}

static gint line_cmp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* What mb's folders are, as a string that differs when any is made,
 * removed, renamed or stops or starts having a directory. */
static char *folders_signature(md_mbox *mb)
{
    GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, mb->folders);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        md_folder *f = v;
        g_ptr_array_add(lines, g_strdup_printf("%s\t%d\t%s\n", f->path, f->exists, f->dir));
    }
    g_ptr_array_sort(lines, line_cmp);
    GString *out = g_string_new(NULL);
    for (guint i = 0; i < lines->len; i++)
        g_string_append(out, lines->pdata[i]);
    g_ptr_array_free(lines, TRUE);
    return g_string_free(out, FALSE);
}

/* The folders of mb, re-read when its root changed (maildir++ keeps them
 * all there) or, in fs layout, once a second at most.  A change of what
 * they are dates mb->folders_changed_ns. */
int md_refresh_folders(md_store *s, md_mbox *mb)
{
    ms_mutex_assert_held(&s->lock);
    g_autofree char *root = md_mbox_path(s, mb);
    int64_t mt;
    int rc = md_dir_mtime(root, &mt);
    if (rc)
        return rc;
    int64_t now = ms_now_ns();
    if (mb->folders_scanned_ns && still_fresh(mb->root_mtime_ns, mt, mb->folders_scanned_ns) &&
        (s->layout == MD_LAYOUT_MAILDIRPP || now - mb->folders_scanned_ns < 1000000000LL))
        return 0;
    g_autofree char *before = folders_signature(mb);
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, mb->folders);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        md_folder *f = v;
        f->seen = false;
        f->exists = false;
    }
    /* INBOX is the root's own cur/new/tmp: there once made (by Dovecot
     * at first login, or by a mkdir through mailfs). */
    g_autofree char *cur = g_build_filename(root, "cur", NULL);
    struct stat cb;
    if (stat(cur, &cb) == 0 && S_ISDIR(cb.st_mode))
        see_folder(s, mb, "INBOX", true);
    if (s->layout == MD_LAYOUT_FS) {
        scan_fs_dir(s, mb, root, "", 0);
    } else {
        DIR *d = opendir(root);
        if (!d)
            return -errno;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] != '.' || !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            struct stat sb;
            if (fstatat(dirfd(d), e->d_name, &sb, 0) < 0 || !S_ISDIR(sb.st_mode))
                continue;
            found_folder(s, mb, e->d_name, true);
        }
        closedir(d);
    }
    GList *all = g_hash_table_get_values(mb->folders);
    for (GList *l = all; l; l = l->next) {
        md_folder *f = l->data;
        if (!f->seen && f->parent_only)
            see_folder(s, mb, f->path, false);
    }
    for (GList *l = all; l; l = l->next)
        if (!((md_folder *)l->data)->seen)
            folder_forget(s, l->data);
    g_list_free(all);
    g_autofree char *after = folders_signature(mb);
    if (!mb->folders_scanned_ns || strcmp(before, after))
        mb->folders_changed_ns = now;
    mb->root_mtime_ns = mt;
    mb->folders_scanned_ns = now;
    return 0;
}

/* Adds the messages of sub ("new" or "cur") of folder path fp to f;
 * *added counts those new to the cache. */
static int scan_sub(md_store *s, md_folder *f, const char *fp, const char *sub, unsigned *added)
{
    g_autofree char *p = g_build_filename(fp, sub, NULL);
    DIR *d = opendir(p);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *e;
    bool in_new = !strcmp(sub, "new");
    while ((e = readdir(d))) {
        size_t blen;
        const char *info;
        if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN && e->d_type != DT_LNK)
            continue;
        if (!md_filename_split(e->d_name, &blen, &info))
            continue;
        g_autofree char *base = g_strndup(e->d_name, blen);
        md_msg *m = g_hash_table_lookup(f->by_base, base);
        if (m && m->seen && !in_new)
            continue; /* in new/ and cur/ while Dovecot moved it: cur wins later */
        if (!m) {
            m = g_new0(md_msg, 1);
            m->f = f;
            m->base = g_steal_pointer(&base);
            m->name = md_msg_name(m->base, blen);
            md_new_id(s, MS_MESSAGE, m, &m->id);
            (*added)++;
            g_hash_table_insert(f->by_base, m->base, m);
            f->gen++;
            md_msg *other = md_msg_named(f, m->name);
            if (other && other != m) {
                /* Two files whose names decode alike: the second keeps
                 * its raw base as its name. */
                if (m->name != m->base)
                    g_free(m->name);
                m->name = m->base;
            }
            md_msg_name_add(f, m);
        } else if (m->pending) {
            continue; /* a name reserved by a create: the file is not ours */
        }
        if (!msg_fname_is(m, e->d_name) || m->in_new != in_new) {
            md_msg_set_fname(m, e->d_name);
            m->in_new = in_new;
            m->stated = false;
        }
        m->seen = true;
    }
    closedir(d);
    return 0;
}

typedef struct uid_give {
    md_folder *f;
    int64_t now;
} uid_give;

/* md_uid_fn: the UID of one record to the message of that base. */
static void give_uid(void *ctx, const char *base, size_t base_len, uint32_t uid)
{
    uid_give *g = ctx;
    char stack[256];
    char *key = base_len < sizeof stack ? stack : g_malloc(base_len + 1);
    memcpy(key, base, base_len);
    key[base_len] = '\0';
    md_msg *m = g_hash_table_lookup(g->f->by_base, key);
    if (key != stack)
        g_free(key);
    if (!m)
        return;
    if (m->uid && uid != m->uid)
        m->uid_ns = g->now; /* renumbered behind us: a change (modseq) */
    m->uid = uid;
    m->uid_read = true;
}

/*
 * Gives f's messages their UIDs from dovecot-uidlist (0 for one it does
 * not list, or for all when it does not parse) and keeps its header in
 * f->ul.  The records are not kept: the cache's messages hold them.
 */
static void read_uids(md_folder *f, const char *fp, bool have_ul, int64_t now)
{
    g_clear_pointer(&f->ul, md_uidlist_free);
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, f->by_base);
    while (g_hash_table_iter_next(&it, NULL, &v))
        ((md_msg *)v)->uid_read = false;
    if (have_ul) {
        int fd = open(fp, O_RDONLY | O_DIRECTORY);
        g_autofree char *err = NULL;
        uid_give g = {f, now};
        int rc = fd < 0 ? -errno : md_uidlist_scan(fd, give_uid, &g, &f->ul, &err);
        if (fd >= 0)
            close(fd);
        if (rc == -EINVAL)
            ms_log(LOG_WARNING,
                   "%s/dovecot-uidlist: %s (messages are served; UIDs wait for a "
                   "repair)",
                   fp, err ? err : "dovecot-uidlist does not parse");
        if (rc) { /* what a broken list said before its error is not taken */
            g_hash_table_iter_init(&it, f->by_base);
            while (g_hash_table_iter_next(&it, NULL, &v))
                ((md_msg *)v)->uid_read = false;
        }
    }
    g_hash_table_iter_init(&it, f->by_base);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        md_msg *m = v;
        if (m->uid_read)
            continue;
        if (m->uid)
            m->uid_ns = now;
        m->uid = 0;
    }
}

/*
 * Whether a stamp read before (was) still holds (now): still_fresh, or
 * for a folder only this process writes (md_folder.sole_writer), simply
 * the same: no other writer can change it in the tick after a read.
 */
static bool stamp_holds(const md_folder *f, int64_t was, int64_t now)
{
    return f->sole_writer ? was == now : still_fresh(was, now, f->scanned_ns);
}

/*
 * Brings f's listing up to date with its files: new/ before cur/, so a
 * message Dovecot moves from one to the other meanwhile is seen at least
 * once (and kept once, by its base).  Only a directory that changed is
 * read again, as Dovecot does: a delivery into new/ does not cost a read
 * of a big cur/.  UIDs from dovecot-uidlist.
 */
int md_refresh_folder(md_store *s, md_folder *f, bool force)
{
    ms_mutex_assert_held(&s->lock);
    if (!f->exists) {
        md_folder_drop_cache(s, f);
        return 0;
    }
    int64_t t0 = ms_now_ns();
    if (!force && f->scanned && t0 - f->checked_ns < RECHECK_NS)
        return 0;
    g_autofree char *fp = md_folder_path_abs(s, f);
    g_autofree char *cur = g_build_filename(fp, "cur", NULL);
    g_autofree char *new = g_build_filename(fp, "new", NULL);
    int64_t cm = 0, nm = 0;
    int rc = md_dir_mtime(cur, &cm);
    if (rc == -ENOENT)
        rc = 0;
    if (!rc)
        rc = md_dir_mtime(new, &nm);
    if (rc == -ENOENT)
        rc = 0;
    if (rc)
        return rc;
    struct stat ub;
    g_autofree char *ulp = g_build_filename(fp, "dovecot-uidlist", NULL);
    bool have_ul = stat(ulp, &ub) == 0;
    bool ul_fresh = f->ul ? have_ul && f->ul->ino == ub.st_ino && f->ul->size == ub.st_size &&
                                stamp_holds(f, f->ul->mtime_ns, ts_ns(&ub.st_mtim))
                          : !have_ul;
    bool whole = force || !f->scanned;
    bool scan_new = whole || !stamp_holds(f, f->new_mtime_ns, nm);
    bool scan_cur = whole || !stamp_holds(f, f->cur_mtime_ns, cm);
    if (!scan_new && !scan_cur && ul_fresh) {
        f->checked_ns = t0;
        return 0;
    }
    if (whole) {
        md_meta meta;
        f->sole_writer = md_meta_cached(s, f->mb, &meta) == 0 && meta.state == MS_MB_INCOMING;
    }
    int64_t now = ms_now_ns();
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, f->by_base);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        md_msg *m = v;
        m->seen = m->pending || !(m->in_new ? scan_new : scan_cur);
    }
    unsigned added = 0;
    if (scan_new)
        rc = scan_sub(s, f, fp, "new", &added);
    if (!rc && scan_cur)
        rc = scan_sub(s, f, fp, "cur", &added);
    if (rc)
        return rc;
    GList *all = g_hash_table_get_values(f->by_base);
    for (GList *l = all; l; l = l->next)
        if (!((md_msg *)l->data)->seen)
            md_msg_drop(s, l->data);
    g_list_free(all);
    /* The same uidlist gives the messages known the same UIDs: it is
     * read again only when it changed or a message is new. */
    if (!ul_fresh || !f->ul || added)
        read_uids(f, fp, have_ul, now);
    f->scanned = true;
    f->scanned_ns = now;
    f->checked_ns = now;
    f->cur_mtime_ns = cm;
    f->new_mtime_ns = nm;
    return 0;
}

/* --------------------------------------------------------- attributes */

/* The mode and owner (and a directory's mtime) given through the mount
 * for the file at path, kept in its attribute xa (o->set false if none). */
int md_over_get(const char *path, const char *xa, md_over *o)
{
    char buf[96];
    *o = (md_over){0};
    if (!xa)
        return 0;
    ssize_t n = getxattr(path, xa, buf, sizeof buf - 1);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    unsigned mode, uid, gid;
    long long mt = 0;
    if (sscanf(buf, "%o %u %u %lld", &mode, &uid, &gid, &mt) >= 3)
        *o = (md_over){true, mode & 07777, uid, gid, mt};
    return 0;
}

/* Keeps o for the file at path.  A filesystem without user extended
 * attributes (some NFS servers) keeps nothing: logged once. */
int md_over_set(md_store *s, const char *path, const char *xa, const md_over *o)
{
    char buf[96];
    int n =
        snprintf(buf, sizeof buf, "%o %u %u %lld", o->mode, o->uid, o->gid, (long long)o->mtime_ns);
    if (setxattr(path, xa, buf, (size_t)n, 0) == 0)
        return 0;
    int e = errno;
    if (e == ENOTSUP || e == EOPNOTSUPP) {
        if (!s->xattr_warned)
            ms_log(LOG_WARNING,
                   "%s: no user extended attributes on this filesystem: modes and owners "
                   "set through the mount are not kept",
                   s->path);
        s->xattr_warned = true;
        return 0;
    }
    return -e;
}

/*
 * Before mailfs writes its own or Dovecot's bookkeeping files into the
 * directory at path (dovecot-uidlist, dovecot-keywords, mailfs-mailbox),
 * the attributes the tree shows for it are kept in its attribute xa, so
 * that bookkeeping does not date the folder: a move that only read a
 * mailbox, or rolled back, leaves it as the tree showed it.
 */
void md_pin_dir(md_store *s, const char *path, const char *xa)
{
    md_over o;
    md_over_get(path, xa, &o);
    if (o.set && o.mtime_ns)
        return;
    ms_attr a;
    if (md_stat_attr(path, xa, &a) == 0) {
        o = (md_over){true, a.mode, a.uid, a.gid, a.mtime_ns};
        md_over_set(s, path, xa, &o);
    }
}

/* The attribute holding what the mount gave folder f. */
const char *md_folder_xattr(const md_folder *f) { return *f->dir ? MD_ATTR_XATTR : MD_INBOX_XATTR; }

/* The attributes of the file or directory at path as the tree shows
 * them: its own, or those given through the mount (xa; NULL: none). */
int md_stat_attr(const char *path, const char *xa, ms_attr *out)
{
    struct stat sb;
    if (stat(path, &sb) < 0)
        return -errno;
    md_over o;
    md_over_get(path, xa, &o);
    memset(out, 0, sizeof *out);
    out->mtime_ns = o.set && o.mtime_ns ? o.mtime_ns : ts_ns(&sb.st_mtim);
    out->ctime_ns = ts_ns(&sb.st_ctim);
    out->mode = o.set ? o.mode : sb.st_mode & 07777;
    out->uid = o.set ? o.uid : sb.st_uid;
    out->gid = o.set ? o.gid : sb.st_gid;
    out->imap_uid = 0;
    return 0;
}

int md_msg_stat(md_store *s, md_msg *m)
{
    if (m->stated || m->pending)
        return 0;
    g_autofree char *p = md_msg_path(s, m);
    struct stat sb;
    if (stat(p, &sb) < 0)
        return -errno;
    m->size = sb.st_size;
    m->mtime_ns = ts_ns(&sb.st_mtim);
    m->ctime_ns = ts_ns(&sb.st_ctim);
    m->mode = sb.st_mode & 07777;
    m->fuid = sb.st_uid;
    m->fgid = sb.st_gid;
    m->dev = sb.st_dev;
    m->ino = sb.st_ino;
    md_over_get(p, MD_ATTR_XATTR, &m->over);
    m->stated = true;
    return 0;
}

/* ------------------------------------------------------------ modseq */

/*
 * A maildir store keeps no counter of its own: the filesystem's clocks
 * are the change sequence (ms_attr.modseq), in nanoseconds since the
 * epoch.  Every change, by mailfs or by the mail server, moves the
 * ctime of the file it touches and the mtime of the directory it adds
 * to, removes from or renames in; ms_mailbox_modseq's floor is the
 * clock now, less the slack of the filesystem's coarser clock.
 */

/* The later of path's ctime and mtime, or 0 when it is not there. */
static int64_t path_stamp(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) < 0)
        return 0;
    int64_t c = ts_ns(&sb.st_ctim), m = ts_ns(&sb.st_mtim);
    return c > m ? c : m;
}

/*
 * A mailbox root's stamp, less this process's own writes of its
 * MD_META_FILE (a move's lock on its source, taken for the cutover): that
 * file is mailfs's bookkeeping, and counting it as a change of INBOX
 * (whose files are the root's) made a cutover's final pass list every
 * folder again.  A root changed by anything else since shows its stamp.
 */
static int64_t root_stamp(md_store *s, md_mbox *mb)
{
    g_autofree char *root = md_mbox_path(s, mb);
    int64_t v = path_stamp(root);
    return v && v == mb->meta_stamp_after ? mb->meta_stamp_before : v;
}

static int64_t child_stamp(const char *dir, const char *name)
{
    g_autofree char *p = g_build_filename(dir, name, NULL);
    return path_stamp(p);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/*
 * A message's: its file's ctime, which a flag change (a rename), a link,
 * a chmod, an mtime set or an attribute set all move, or the time this
 * process saw its UID change.  A message without a UID yet is not
 * settled: it is "changed now" at every look, until it has one, so
 * that the UID it gets is never missed.
 */
static uint64_t msg_modseq(const md_msg *m)
{
    if (!m->uid)
        return (uint64_t)ms_now_ns();
    return (uint64_t)max64(m->ctime_ns, m->uid_ns);
}

/*
 * When INBOX's attributes given through the mount (mode, owner: in the
 * root's MD_INBOX_XATTR) were last seen to change; now the first time.
 * Not the root's own stamp: Dovecot renames its index files there at
 * every delivery, which changes nothing of INBOX.
 */
static int64_t inbox_attr_stamp(md_mbox *mb, const char *root)
{
    ms_attr a;
    if (md_stat_attr(root, MD_INBOX_XATTR, &a))
        return ms_now_ns();
    uint32_t now[3] = {a.mode, a.uid, a.gid};
    if (!mb->inbox_attr_ns || memcmp(now, mb->inbox_attr, sizeof now)) {
        memcpy(mb->inbox_attr, now, sizeof now);
        mb->inbox_attr_ns = ms_now_ns();
    }
    return mb->inbox_attr_ns;
}

/*
 * What moves when folder f itself changes: its directory's stamps.  It
 * is renamed, chmod'ed through the mount (an attribute of it), or a
 * file of its own is replaced in it: mailfs-special-use, and the
 * uidlist with a new UIDVALIDITY or the keywords file, which mailfs and
 * Dovecot write beside and rename into place, so that those files need
 * no stat of their own.  INBOX lives in the mailbox root, where much
 * else changes: its special-use file and its attributes instead.  A
 * maildir++ parent with no directory: only the folders around it.
 */
static int64_t folder_own_stamp(md_store *s, md_folder *f)
{
    if (!f->exists)
        return f->mb->folders_changed_ns;
    g_autofree char *p = md_folder_path_abs(s, f);
    if (*f->dir)
        return path_stamp(p);
    int64_t v = max64(child_stamp(p, MD_SPECIAL_USE_FILE), inbox_attr_stamp(f->mb, p));
    /* fs layout: INBOX's subfolders are in a plain folder INBOX there. */
    return s->layout == MD_LAYOUT_FS ? max64(v, child_stamp(p, "INBOX")) : v;
}

/* The largest own stamp of the folders of mb directly below parent
 * (NULL: the top-level ones), as this process last listed them. */
static int64_t children_stamp(md_store *s, md_mbox *mb, const md_folder *parent)
{
    size_t plen = parent ? strlen(parent->path) : 0;
    int64_t best = 0;
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, mb->folders);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        md_folder *c = v;
        const char *leaf = c->path;
        if (parent) {
            if (strncmp(c->path, parent->path, plen) || c->path[plen] != '/')
                continue;
            leaf = c->path + plen + 1;
        }
        if (!strchr(leaf, '/'))
            best = max64(best, folder_own_stamp(s, c));
    }
    return best;
}

/*
 * A folder's: its own stamp, its messages' directories (a message added,
 * removed, renamed or re-flagged in new/ or cur/; mailfs dates them when
 * it changes a message in place), the uidlist (to which Dovecot may
 * append in place), its direct subfolders' own stamps, and in maildir++
 * when the mailbox's folders last changed (mb->folders_changed_ns): a
 * maildir++ subfolder lives in the mailbox root, not in its parent, so a
 * folder made, renamed or removed anywhere moves every folder of the
 * mailbox (false positives, which the floor allows).  The caller has read
 * the folders again (md_getattr, md_list).
 */
static uint64_t folder_modseq(md_store *s, md_folder *f)
{
    int64_t v = folder_own_stamp(s, f);
    if (f->exists) {
        g_autofree char *p = md_folder_path_abs(s, f);
        v = max64(v, child_stamp(p, "cur"));
        v = max64(v, child_stamp(p, "new"));
        v = max64(v, child_stamp(p, "dovecot-uidlist"));
    }
    /* maildir++ keeps every folder in the root (fs: in its parent's
     * directory, whose stamp counts already). */
    if (s->layout != MD_LAYOUT_FS)
        v = max64(v, f->mb->folders_changed_ns);
    return (uint64_t)max64(v, children_stamp(s, f->mb, f));
}

/* A mailbox's: its root directory (a top-level folder made, renamed or
 * removed; its mailfs-mailbox file, replaced by a rename) and its
 * top-level folders' own stamps as last listed (a mailbox never listed
 * has none cached: its root's stamps alone). */
static uint64_t mbox_modseq(md_store *s, md_mbox *mb)
{

    return (uint64_t)max64(root_stamp(s, mb), children_stamp(s, mb, NULL));
}

/*
 * The floor: the clock now, less the filesystem's lag.  Filesystems stamp
 * ctime and mtime with the kernel's coarse clock (current_time(), up to a
 * jiffy behind the fine clock this reads), so a change made just after
 * this returns may carry a stamp slightly earlier than now: 50 ms covers
 * that where stamps have nanoseconds, a second where they are whole
 * seconds (some NFS servers), at the price of the changes of that while
 * before counting as new (false positives).  Small matters: a cutover's
 * second final pass passes over the folders the first left equal only if
 * they did not change within it.
 */
int md_mailbox_modseq(ms_store *st, int64_t id, uint64_t *out)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    int rc = md_refresh_root(s);
    md_mbox *mb = rc ? NULL : md_by_id(s, MS_MAILBOX, id);
    g_autofree char *root = mb ? md_mbox_path(s, mb) : NULL;
    ms_mutex_unlock(&s->lock);
    if (rc)
        return rc;
    if (!mb)
        return -ENOENT;
    struct stat sb;
    bool fine = stat(root, &sb) == 0 && (sb.st_mtim.tv_nsec || sb.st_ctim.tv_nsec);
    *out = (uint64_t)(ms_now_ns() - (fine ? 50000000LL : 1000000000LL));
    return 0;
}

void md_msg_attr(md_store *s, md_msg *m, ms_attr *out)
{
    (void)s;
    *out = (ms_attr){
        .node = {MS_MESSAGE, m->id},
        .size = m->size,
        .mtime_ns = m->mtime_ns,
        .ctime_ns = m->ctime_ns,
        .mode = m->over.set ? m->over.mode : m->mode,
        .uid = m->over.set ? m->over.uid : m->fuid,
        .gid = m->over.set ? m->over.gid : m->fgid,
        .imap_uid = m->uid,
        .mailbox = m->f->mb->id,
        .modseq = msg_modseq(m),
    };
}

/* A folder that has no directory (a maildir++ parent) shows its mailbox
 * root's attributes. */
int md_folder_attr(md_store *s, md_folder *f, ms_attr *out)
{
    g_autofree char *p = f->exists ? md_folder_path_abs(s, f) : md_mbox_path(s, f->mb);
    int rc = md_stat_attr(p, f->exists ? md_folder_xattr(f) : NULL, out);
    if (rc)
        return rc;
    out->node = (ms_node){MS_FOLDER, f->id};
    out->mailbox = f->mb->id;
    out->noselect = !f->exists;
    out->modseq = folder_modseq(s, f);
    return 0;
}

int md_mbox_attr(md_store *s, md_mbox *mb, ms_attr *out)
{
    g_autofree char *p = md_mbox_path(s, mb);
    int rc = md_stat_attr(p, MD_ATTR_XATTR, out);
    if (rc)
        return rc;
    out->node = (ms_node){MS_MAILBOX, mb->id};
    out->mailbox = mb->id;
    out->modseq = mbox_modseq(s, mb);
    return 0;
}

int md_owner(md_store *s, md_mbox *mb, uid_t *uid, gid_t *gid, mode_t *dmode)
{
    g_autofree char *p = mb ? md_mbox_path(s, mb) : g_strdup(s->path);
    struct stat sb;
    if (stat(p, &sb) < 0)
        return -errno;
    *uid = sb.st_uid;
    *gid = sb.st_gid;
    *dmode = sb.st_mode & 07777;
    return 0;
}

/* --------------------------------------------------------------- meta */

int md_meta_read(md_store *s, md_mbox *mb, md_meta *out)
{
    *out = (md_meta){0};
    int64_t move = 0;
    const char *rest;
    if (g_str_has_prefix(mb->name, "~mailfs~move~") && ms_hidden_parse(mb->name, &move, &rest))
        out->state = MS_MB_INCOMING;
    else if (g_str_has_prefix(mb->name, "~mailfs~retained~") &&
             ms_hidden_parse(mb->name, &move, &rest))
        out->state = MS_MB_RETAINED;
    ms_mb_state by_name = out->state;
    g_autofree char *p = g_build_filename(s->path, mb->name, MD_META_FILE, NULL);
    g_autofree char *text = NULL;
    GError *ge = NULL;
    if (!g_file_get_contents(p, &text, NULL, &ge)) {
        int rc = ge->code == G_FILE_ERROR_NOENT ? 0 : -EIO;
        if (rc)
            ms_log(LOG_ERR, "%s: %s", p, ge->message);
        g_error_free(ge);
        return rc;
    }
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (size_t i = 0; lines[i]; i++) {
        char *sp = strchr(lines[i], ' ');
        if (!sp)
            continue;
        *sp++ = '\0';
        const char *k = lines[i];
        if (!strcmp(k, "state"))
            out->state = (ms_mb_state)g_ascii_strtoll(sp, NULL, 10);
        else if (!strcmp(k, "lock-move"))
            out->lock_move = g_ascii_strtoll(sp, NULL, 10);
        else if (!strcmp(k, "retain-until"))
            out->retain_until = g_ascii_strtoll(sp, NULL, 10);
        else if (!strcmp(k, "move-id"))
            out->move_id = g_ascii_strtoll(sp, NULL, 10);
        else if (!strcmp(k, "lock-journal"))
            g_strlcpy(out->lock_journal, sp, sizeof out->lock_journal);
        else if (!strcmp(k, "move-journal"))
            g_strlcpy(out->move_journal, sp, sizeof out->move_journal);
    }
    /* The name decides between hidden and visible: md_mailbox_set renames
     * first and rewrites this file after, so a crash between the two
     * leaves the old state here.  Read from the file, a move's target
     * already shown under its own name would still be an incoming copy,
     * which recovery drops. */
    if (by_name != MS_MB_VISIBLE)
        out->state = by_name;
    else if (out->state == MS_MB_INCOMING || out->state == MS_MB_RETAINED)
        out->state = MS_MB_VISIBLE;
    if (by_name == MS_MB_RETAINED && out->lock_move == move) {
        /* A source retained by its move but still locked by it here: the
         * rename's file write never came.  It is that move's copy, and a
         * retained copy holds no lock. */
        out->move_id = move;
        g_strlcpy(out->move_journal, out->lock_journal, sizeof out->move_journal);
        out->lock_move = 0;
        out->lock_journal[0] = '\0';
    }
    return 0;
}

/*
 * md_meta_read, the file read again only when it changed (its inode,
 * size or mtime; it is always replaced by rename, so a new one has a new
 * inode): every write checks the lock, and reading the file per message
 * of a big copy costs more than the copy.
 */
int md_meta_cached(md_store *s, md_mbox *mb, md_meta *out)
{
    g_autofree char *p = g_build_filename(s->path, mb->name, MD_META_FILE, NULL);
    struct stat sb;
    bool have = stat(p, &sb) == 0;
    int64_t key[3] = {have ? (int64_t)sb.st_ino : 0, have ? sb.st_size : -1,
                      have ? ts_ns(&sb.st_mtim) : 0};
    if (mb->meta_valid && !memcmp(key, mb->meta_key, sizeof key) &&
        !strcmp(mb->meta_name, mb->name)) {
        *out = mb->meta;
        return 0;
    }
    int rc = md_meta_read(s, mb, out);
    if (!rc) {
        mb->meta = *out;
        memcpy(mb->meta_key, key, sizeof key);
        g_free(mb->meta_name);
        mb->meta_name = g_strdup(mb->name);
        mb->meta_valid = true;
    }
    return rc;
}

/* Written to a temporary file, synced and renamed over the old one: a
 * lock is either taken or not, after a crash too. */
int md_meta_write(md_store *s, md_mbox *mb, const md_meta *m)
{
    g_autofree char *dir = md_mbox_path(s, mb);
    /* The root's stamp before, as root_stamp shows it (an earlier write
     * of ours is no change either). */
    int64_t before = path_stamp(dir);
    if (before && before == mb->meta_stamp_after)
        before = mb->meta_stamp_before;
    /* The file is mailfs's bookkeeping, not a change of the mailbox: a
     * lock taken and dropped leaves the mailbox as it was. */
    md_pin_dir(s, dir, MD_ATTR_XATTR);
    md_pin_dir(s, dir, MD_INBOX_XATTR);
    g_autofree char *p = g_build_filename(dir, MD_META_FILE, NULL);
    g_autofree char *tmp = g_strconcat(p, ".tmp", NULL);
    g_autofree char *text = g_strdup_printf(
        "state %d\nlock-move %lld\nlock-journal %s\nretain-until %lld\nmove-id %lld\n"
        "move-journal %s\n",
        (int)m->state, (long long)m->lock_move, m->lock_journal, (long long)m->retain_until,
        (long long)m->move_id, m->move_journal);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text);
    /* The mail server's, like everything in the mailbox. */
    struct stat rb;
    int rc = write(fd, text, len) == (ssize_t)len && stat(dir, &rb) == 0 &&
                     fchown(fd, rb.st_uid, rb.st_gid) == 0 && fsync(fd) == 0
                 ? 0
                 : -errno;
    close(fd);
    if (!rc && rename(tmp, p) < 0)
        rc = -errno;
    if (rc) {
        unlink(tmp);
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    mb->meta_stamp_before = before;
    mb->meta_stamp_after = path_stamp(dir);
    return 0;
}

/* ------------------------------------------------------------- flags */

int md_keywords_refresh(md_store *s, md_folder *f)
{
    g_autofree char *fp = md_folder_path_abs(s, f);
    g_autofree char *kp = g_build_filename(fp, "dovecot-keywords", NULL);
    int64_t now = ms_now_ns();
    if (f->kw_loaded && now - f->kw_checked_ns < RECHECK_NS)
        return 0;
    struct stat sb;
    int64_t mt = stat(kp, &sb) == 0 ? ts_ns(&sb.st_mtim) : 0;
    f->kw_checked_ns = now;
    /* Dovecot's keywords file keeps whole-second mtimes in mind. */
    if (f->kw_loaded && mt == f->kw_mtime_ns && mt < now - 1000000000LL)
        return 0;
    md_keywords_clear(&f->kw);
    int fd = open(fp, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    int rc = md_keywords_load(fd, &f->kw);
    close(fd);
    if (!rc) {
        f->kw_loaded = true;
        f->kw_mtime_ns = mt;
    }
    return rc;
}

/* m's user.mail.flags (NULL and 0 when it has none). */
int md_flags_of(md_store *s, md_msg *m, char **flags, size_t *len)
{
    *flags = NULL;
    *len = 0;
    if (m->pending && m->pflags) {
        *flags = g_strndup(m->pflags, m->pflags_len);
        *len = m->pflags_len;
        return 0;
    }
    if (m->pending)
        return 0;
    /* Files in new/ may carry flags too (Dovecot sets them there). */
    int rc = md_keywords_refresh(s, m->f);
    if (rc)
        return rc;
    const char *info = md_msg_info(m);
    g_autoptr(GString) out = g_string_new(NULL);
    md_flags_of_info(info ? info : "", &m->f->kw, out);
    if (out->len) {
        *len = out->len;
        *flags = g_string_free(g_steal_pointer(&out), FALSE);
    }
    return 0;
}

/* ---------------------------------------------------------- resolving */

/* The message with id, its folder's listing brought up to date first (a
 * flag change by Dovecot renamed it). */
int md_msg_find(md_store *s, int64_t id, md_msg **out)
{
    md_msg *m = md_by_id(s, MS_MESSAGE, id);
    if (!m)
        return -ENOENT;
    int64_t keep = m->id;
    int rc = md_refresh_folder(s, m->f, false);
    if (rc)
        return rc;
    m = md_by_id(s, MS_MESSAGE, keep);
    if (!m)
        return -ENOENT;
    *out = m;
    return 0;
}

int md_lookup(ms_store *st, ms_node parent, const char *name, ms_attr *out)
{
    md_store *s = md_of(st);
    int rc = 0;
    ms_mutex_lock(&s->lock);
    if (parent.kind == MS_ROOT) {
        rc = md_refresh_root(s);
        md_mbox *mb = rc ? NULL : g_hash_table_lookup(s->mb_by_name, name);
        rc = rc ? rc : !mb ? -ENOENT : md_mbox_attr(s, mb, out);
    } else if (parent.kind == MS_MAILBOX || parent.kind == MS_FOLDER) {
        md_mbox *mb = NULL;
        md_folder *pf = NULL;
        if (parent.kind == MS_MAILBOX) {
            mb = md_by_id(s, MS_MAILBOX, parent.id);
        } else {
            pf = md_by_id(s, MS_FOLDER, parent.id);
            mb = pf ? pf->mb : NULL;
        }
        int64_t pid = pf ? pf->id : 0;
        rc = !mb ? -ENOENT : md_refresh_folders(s, mb);
        if (!rc && pf && !(pf = md_by_id(s, MS_FOLDER, pid)))
            rc = -ENOENT;
        if (!rc) {
            g_autofree char *path = pf ? g_strconcat(pf->path, "/", name, NULL) : g_strdup(name);
            md_folder *f = g_hash_table_lookup(mb->folders, path);
            if (f) {
                rc = md_folder_attr(s, f, out);
            } else if (!pf) {
                rc = -ENOENT;
            } else if (!(rc = md_refresh_folder(s, pf, false))) {
                md_msg *m = md_msg_named(pf, name);
                if (!m || m->pending)
                    rc = -ENOENT;
                else if (!(rc = md_msg_stat(s, m)))
                    md_msg_attr(s, m, out);
                if (rc == -ENOENT && m && !m->pending) {
                    /* Renamed by Dovecot since the listing: read again. */
                    rc = md_refresh_folder(s, pf, true);
                    m = rc ? NULL : md_msg_named(pf, name);
                    rc = rc ? rc : !m || m->pending ? -ENOENT : md_msg_stat(s, m);
                    if (!rc)
                        md_msg_attr(s, m, out);
                }
            }
        }
    } else {
        rc = -ENOTDIR;
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

static int root_attr(md_store *s, ms_attr *out)
{
    int rc = md_stat_attr(s->path, MD_ATTR_XATTR, out);
    if (!rc)
        out->node = (ms_node){MS_ROOT, 0};
    return rc;
}

int md_getattr(ms_store *st, ms_node node, ms_attr *out)
{
    md_store *s = md_of(st);
    int rc;
    ms_mutex_lock(&s->lock);
    switch (node.kind) {
    case MS_ROOT:
        rc = root_attr(s, out);
        break;
    case MS_MAILBOX: {
        md_mbox *mb = md_by_id(s, MS_MAILBOX, node.id);
        rc = mb ? md_mbox_attr(s, mb, out) : -ENOENT;
        break;
    }
    case MS_FOLDER: {
        md_folder *f = md_by_id(s, MS_FOLDER, node.id);
        /* Its folders read again first: the change sequence counts them. */
        rc = f ? md_refresh_folders(s, f->mb) : -ENOENT;
        if (!rc)
            f = md_by_id(s, MS_FOLDER, node.id);
        rc = rc ? rc : f ? md_folder_attr(s, f, out) : -ENOENT;
        break;
    }
    default: {
        md_msg *m = NULL;
        rc = md_msg_find(s, node.id, &m);
        if (!rc && m->pending) {
            *out = (ms_attr){.node = {MS_MESSAGE, m->id},
                             .mode = m->over.mode,
                             .uid = m->over.uid,
                             .gid = m->over.gid,
                             .mailbox = m->f->mb->id,
                             .mtime_ns = m->mtime_ns,
                             .ctime_ns = m->ctime_ns,
                             .modseq = msg_modseq(m)};
            break;
        }
        if (!rc)
            rc = md_msg_stat(s, m);
        if (rc == -ENOENT && m) {
            int64_t id = m->id;
            rc = md_refresh_folder(s, m->f, true);
            m = rc ? NULL : md_by_id(s, MS_MESSAGE, id);
            rc = rc ? rc : !m ? -ENOENT : md_msg_stat(s, m);
        }
        if (!rc)
            md_msg_attr(s, m, out);
    }
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* One child of a listing, copied out so fn runs without the lock. */
typedef struct md_child {
    char *name;
    ms_attr attr;
    uint64_t cookie;
} md_child;

/* In cookies, messages come after every folder of the same parent. */
#define COOKIE_MSG (UINT64_C(1) << 56)

static gint child_cmp(gconstpointer a, gconstpointer b)
{
    const md_child *x = a, *y = b;
    return x->cookie < y->cookie ? -1 : x->cookie > y->cookie;
}

static void child_clear(gpointer p) { g_free(((md_child *)p)->name); }

/*
 * The children of parent after cookie: mailboxes and folders whole into
 * out, messages as ids only into msgs (a folder of 50,000 messages would
 * otherwise be copied whole once more for every listing; md_list reads
 * them a chunk at a time).  Cookies: folders by id, messages by id (ids
 * grow as files arrive, so a listing resumed at a cookie sees what
 * arrived since, and nothing twice).
 */
static int gather(md_store *s, ms_node parent, uint64_t after, GArray *out, GArray *msgs)
{
    if (parent.kind == MS_ROOT) {
        int rc = md_refresh_root(s);
        if (rc)
            return rc;
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, s->mb_by_name);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
            md_mbox *mb = v;
            md_child c = {.cookie = (uint64_t)mb->id};
            if (c.cookie <= after)
                continue;
            if (md_mbox_attr(s, mb, &c.attr))
                continue;
            md_meta meta;
            if (md_meta_read(s, mb, &meta) || meta.state != MS_MB_VISIBLE)
                continue;
            c.name = g_strdup(mb->name);
            g_array_append_val(out, c);
        }
        return 0;
    }
    md_mbox *mb;
    md_folder *pf = NULL;
    if (parent.kind == MS_MAILBOX) {
        mb = md_by_id(s, MS_MAILBOX, parent.id);
    } else {
        pf = md_by_id(s, MS_FOLDER, parent.id);
        mb = pf ? pf->mb : NULL;
    }
    if (!mb)
        return -ENOENT;
    int rc = md_refresh_folders(s, mb);
    if (rc)
        return rc;
    if (pf && !(pf = md_by_id(s, MS_FOLDER, parent.id)))
        return -ENOENT;
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, mb->folders);
    size_t plen = pf ? strlen(pf->path) : 0;
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        md_folder *f = v;
        const char *leaf = f->path;
        if (pf) {
            if (strncmp(f->path, pf->path, plen) || f->path[plen] != '/')
                continue;
            leaf = f->path + plen + 1;
        }
        if (strchr(leaf, '/'))
            continue;
        md_child c = {.cookie = (uint64_t)f->id};
        if (c.cookie <= after)
            continue;
        if (md_folder_attr(s, f, &c.attr))
            continue;
        c.name = g_strdup(leaf);
        g_array_append_val(out, c);
    }
    if (!pf)
        return 0;
    rc = md_refresh_folder(s, pf, false);
    if (rc)
        return rc;
    g_hash_table_iter_init(&it, pf->by_base);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        md_msg *m = v;
        /* Listed by an earlier page: not even looked at (a move lists a
         * big folder a page at a time). */
        if (!m->pending && (COOKIE_MSG | (uint64_t)m->id) > after)
            g_array_append_val(msgs, m->id);
    }
    return 0;
}

static gint id_cmp(gconstpointer a, gconstpointer b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

#define LIST_CHUNK 256

/*
 * Fills out with the messages of ids[0..n) still in folder fid, as they
 * are now; one whose file Dovecot renamed since the folder was read (a
 * flag change) is found again by reading the folder once more.
 */
static int msg_chunk(md_store *s, int64_t fid, const int64_t *ids, guint n, GArray *out)
{
    bool reread = false;
    for (guint i = 0; i < n; i++) {
        md_msg *m = md_by_id(s, MS_MESSAGE, ids[i]);
        if (!m || m->pending)
            continue; /* gone since it was gathered */
        if (md_msg_stat(s, m)) {
            if (reread)
                continue;
            md_folder *f = md_by_id(s, MS_FOLDER, fid);
            int rc = f ? md_refresh_folder(s, f, true) : -ENOENT;
            if (rc)
                return rc;
            reread = true;
            if (!(m = md_by_id(s, MS_MESSAGE, ids[i])) || m->pending || md_msg_stat(s, m))
                continue;
        }
        md_child c = {.cookie = COOKIE_MSG | (uint64_t)m->id, .name = g_strdup(m->name)};
        md_msg_attr(s, m, &c.attr);
        g_array_append_val(out, c);
    }
    return 0;
}

/* Calls fn for each of kids; 1 when it asked to stop. */
static int call_back(GArray *kids, ms_list_fn fn, void *ctx)
{
    for (guint i = 0; i < kids->len; i++) {
        md_child *c = &g_array_index(kids, md_child, i);
        if (fn(ctx, c->name, &c->attr, c->cookie))
            return 1;
    }
    return 0;
}

/* The store's lock is not held while fn runs: fn may call the store. */
int md_list(ms_store *st, ms_node parent, uint64_t cookie, ms_list_fn fn, void *ctx)
{
    md_store *s = md_of(st);
    if (parent.kind == MS_MESSAGE)
        return -ENOTDIR;
    GArray *kids = g_array_new(FALSE, FALSE, sizeof(md_child));
    g_array_set_clear_func(kids, child_clear);
    GArray *msgs = g_array_new(FALSE, FALSE, sizeof(int64_t));
    ms_mutex_lock(&s->lock);
    int rc = gather(s, parent, cookie, kids, msgs);
    ms_mutex_unlock(&s->lock);
    g_array_sort(kids, child_cmp);
    g_array_sort(msgs, id_cmp);
    int stop = rc ? 0 : call_back(kids, fn, ctx);
    for (guint i = 0; !rc && !stop && i < msgs->len; i += LIST_CHUNK) {
        g_array_set_size(kids, 0);
        guint n = MIN(LIST_CHUNK, msgs->len - i);
        ms_mutex_lock(&s->lock);
        rc = msg_chunk(s, parent.id, &g_array_index(msgs, int64_t, i), n, kids);
        ms_mutex_unlock(&s->lock);
        if (!rc)
            stop = call_back(kids, fn, ctx);
    }
    g_array_free(kids, TRUE);
    g_array_free(msgs, TRUE);
    return rc;
}

/* Reads the file at dir/name whole (NULL, 0 when there is none). */
static int read_small(const char *dir, const char *name, char **v, size_t *len)
{
    g_autofree char *p = g_build_filename(dir, name, NULL);
    GError *ge = NULL;
    gsize n = 0;
    char *text = NULL;
    if (!g_file_get_contents(p, &text, &n, &ge)) {
        int rc = ge->code == G_FILE_ERROR_NOENT ? 0 : -EIO;
        if (rc)
            ms_log(LOG_ERR, "%s: %s", p, ge->message);
        g_error_free(ge);
        *v = NULL;
        *len = 0;
        return rc;
    }
    *v = text;
    *len = n;
    return 0;
}

int md_xattr_get(ms_store *st, ms_node node, ms_xattr_id xa, char **value, size_t *len)
{
    md_store *s = md_of(st);
    int rc = 0;
    *value = NULL;
    *len = 0;
    ms_mutex_lock(&s->lock);
    if (xa == MS_XA_FLAGS && node.kind == MS_MESSAGE) {
        md_msg *m = NULL;
        rc = md_msg_find(s, node.id, &m);
        if (!rc)
            rc = md_flags_of(s, m, value, len);
    } else if (xa == MS_XA_SPECIAL_USE && node.kind == MS_FOLDER) {
        md_folder *f = md_by_id(s, MS_FOLDER, node.id);
        g_autofree char *fp = f ? md_folder_path_abs(s, f) : NULL;
        rc = !f ? -ENOENT : !f->exists ? 0 : read_small(fp, MD_SPECIAL_USE_FILE, value, len);
    } else if (xa == MS_XA_ACL && node.kind == MS_MAILBOX) {
        md_mbox *mb = md_by_id(s, MS_MAILBOX, node.id);
        g_autofree char *root = mb ? md_mbox_path(s, mb) : NULL;
        g_autofree char *text = NULL;
        size_t n = 0;
        rc = !mb ? -ENOENT : read_small(root, "dovecot-acl", &text, &n);
        if (!rc && text) {
            g_autoptr(GString) out = g_string_new(NULL);
            rc = md_acl_from_dovecot(text, n, out);
            if (!rc && out->len) {
                *len = out->len;
                *value = g_string_free(g_steal_pointer(&out), FALSE);
            }
        }
    }
    ms_mutex_unlock(&s->lock);
    if (rc) {
        g_free(*value);
        *value = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------ readers */

/*
 * The file stays readable through its descriptor whatever Dovecot does
 * to it afterwards (a flag change renames it, an expunge unlinks it), so
 * a reader's bytes never change.  A rename between the listing and the
 * open is met by reading the folder again.
 */
int md_reader_open(ms_store *st, int64_t message, ms_be_reader **out, int64_t *size, bool *pending)
{
    md_store *s = md_of(st);
    int fd = -1, rc = 0;
    ms_mutex_lock(&s->lock);
    md_msg *m = NULL;
    rc = md_msg_find(s, message, &m);
    if (!rc && m->pending) {
        *pending = true;
        *size = 0;
        ms_mutex_unlock(&s->lock);
        *out = g_new0(ms_be_reader, 1);
        (*out)->fd = -1;
        return 0;
    }
    for (int tries = 0; !rc && tries < 3; tries++) {
        g_autofree char *p = md_msg_path(s, m);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT) {
            rc = fd < 0 ? -errno : 0;
            if (rc == -EACCES)
                ms_log(LOG_ERR, "%s: cannot read: permission denied", p);
            break;
        }
        rc = md_refresh_folder(s, m->f, true);
        if (!rc && !(m = md_by_id(s, MS_MESSAGE, message)))
            rc = -ENOENT;
    }
    if (!rc && fd < 0)
        rc = -ENOENT;
    ms_mutex_unlock(&s->lock);
    if (rc)
        return rc;
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *pending = false;
    *size = sb.st_size;
    *out = g_new0(ms_be_reader, 1);
    (*out)->fd = fd;
    return 0;
}

ssize_t md_reader_pread(ms_store *st, ms_be_reader *r, void *buf, size_t len, int64_t off)
{
    (void)st;
    if (r->fd < 0)
        return 0;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(r->fd, (char *)buf + done, len - done, off + (int64_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

void md_reader_close(ms_store *st, ms_be_reader *r)
{
    (void)st;
    if (r->fd >= 0)
        close(r->fd);
    g_free(r);
}

/* --------------------------------------------------------- open, close */

static void store_free(md_store *s)
{
    if (!s)
        return;
    g_hash_table_destroy(s->mb_by_name);
    g_hash_table_destroy(s->by_id);
    if (s->batch_folders)
        g_ptr_array_free(s->batch_folders, TRUE);
    ms_mutex_clear(&s->lock);
    g_free(s->path);
    g_free(s);
}

static int md_open(ms_store *st, const ms_store_conf *conf, int flags, char **err)
{
    struct stat sb;
    if ((flags & MS_OPEN_CREATE) && stat(conf->path, &sb) < 0 && errno == ENOENT &&
        mkdir(conf->path, 0700) < 0) {
        int e = errno;
        *err = g_strdup_printf("%s: cannot create the store folder: %s", conf->path, g_strerror(e));
        return -e;
    }
    if (stat(conf->path, &sb) < 0) {
        int e = errno;
        *err = e == ENOENT ? g_strdup_printf("%s: store folder does not exist (make it with "
                                             "'mailfsctl store create %s')",
                                             conf->path, conf->name)
                           : g_strdup_printf("%s: %s", conf->path, g_strerror(e));
        return -e;
    }
    if (!S_ISDIR(sb.st_mode)) {
        *err =
            g_strdup_printf("%s: a maildir store is a folder of Maildirs, not a file", conf->path);
        return -EINVAL;
    }
    if (access(conf->path, st->readonly ? R_OK | X_OK : R_OK | W_OK | X_OK) < 0) {
        *err = g_strdup_printf("%s: permission denied (need %s on the folder)", conf->path,
                               st->readonly ? "read" : "read and write");
        return -EACCES;
    }
    md_store *s = g_new0(md_store, 1);
    s->path = g_canonicalize_filename(conf->path, NULL);
    s->layout = conf->layout && !strcmp(conf->layout, "fs") ? MD_LAYOUT_FS : MD_LAYOUT_MAILDIRPP;
    s->ro = st->readonly;
    ms_mutex_init(&s->lock);
    s->mb_by_name = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, mbox_free);
    s->by_id = g_hash_table_new(g_int64_hash, g_int64_equal);
    st->priv = s;
    return 0;
}

static void md_close(ms_store *st)
{
    store_free(md_of(st));
    st->priv = NULL;
}

const ms_backend ms_maildir_backend = {
    .name = "maildir",
    .shared = true,
    .open = md_open,
    .close = md_close,
    .tree = &md_tree_ops,
    .content = &md_content_ops,
    .admin = &md_admin_ops,
};
