/*
 * maildir_write.c — every write of the maildir backend.
 *
 * A message is written as every Maildir writer writes one: its bytes
 * into tmp/, then renamed (or, for a move on one filesystem, linked) into
 * cur/ under its final name, and given a UID in dovecot-uidlist, all under
 * Dovecot's own lock of that list, so a Dovecot delivering into the same
 * folder at the same moment waits for us and we for it: no message is
 * lost and no UID given twice.  Files and folders mailfs makes are owned
 * like the mailbox root they are in, with its modes, so the mail server
 * can read and change them; a mode or owner given through the mount is
 * kept beside (user.mailfs.attr).
 */
#include "maildir_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The lock and state of mb refuse writes (ms_mailbox_refusal). */
int md_refuse(md_store *s, md_mbox *mb)
{
    md_meta meta;
    int rc = md_meta_cached(s, mb, &meta);
    return rc ? rc : ms_mailbox_refusal(meta.lock_move, meta.state);
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* mkdir path owned uid:gid with mode; -EEXIST when it is there. */
int md_make_dir(const char *path, uid_t uid, gid_t gid, mode_t mode)
{
    if (mkdir(path, 0700) < 0)
        return -errno;
    if (chown(path, uid, gid) < 0 || chmod(path, mode) < 0) {
        int e = errno;
        rmdir(path);
        return -e;
    }
    return 0;
}

/*
 * A new Maildir at path: the folder and its cur, new and tmp, owned and
 * moded as given, and for a folder below a root the empty "maildirfolder"
 * file that Dovecot's maildir++ layout puts there.
 */
int md_mkdir_maildir(const char *path, uid_t uid, gid_t gid, mode_t mode, bool folder_marker)
{
    int rc = md_make_dir(path, uid, gid, mode);
    if (rc)
        return rc;
    rc = md_mkdir_subdirs(path, uid, gid, mode, folder_marker);
    if (rc)
        md_rm_tree(path);
    return rc;
}

/* cur, new and tmp in the existing folder path (and "maildirfolder"). */
int md_mkdir_subdirs(const char *path, uid_t uid, gid_t gid, mode_t mode, bool folder_marker)
{
    int rc = 0;
    static const char *const subs[] = {"cur", "new", "tmp"};
    for (size_t i = 0; !rc && i < 3; i++) {
        g_autofree char *p = g_build_filename(path, subs[i], NULL);
        rc = md_make_dir(p, uid, gid, mode);
        if (rc == -EEXIST)
            rc = 0;
    }
    if (!rc && folder_marker) {
        g_autofree char *p = g_build_filename(path, "maildirfolder", NULL);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, mode & 0666);
        if (fd < 0 || fchown(fd, uid, gid) < 0)
            rc = -errno;
        if (fd >= 0)
            close(fd);
    }
    return rc;
}

/* Removes path and everything under it (files, folders; no symlink is
 * followed).  The caller decided that all of it goes. */
int md_rm_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(sb.st_mode))
        return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        g_autofree char *p = g_build_filename(path, e->d_name, NULL);
        int r = md_rm_tree(p);
        if (r && !rc)
            rc = r;
    }
    closedir(d);
    if (rmdir(path) < 0 && errno != ENOENT && !rc)
        rc = -errno;
    return rc;
}

/* In fs layout, "INBOX/x" lives in a plain folder "INBOX" (INBOX itself
 * is the root): made if dir needs it. */
static int inbox_holder(md_store *s, md_mbox *mb, const char *dir)
{
    if (s->layout != MD_LAYOUT_FS || !g_str_has_prefix(dir, "INBOX/"))
        return 0;
    uid_t uid;
    gid_t gid;
    mode_t dmode;
    int rc = md_owner(s, mb, &uid, &gid, &dmode);
    g_autofree char *holder = g_build_filename(s->path, mb->name, "INBOX", NULL);
    if (!rc)
        rc = md_make_dir(holder, uid, gid, dmode);
    return rc == -EEXIST ? 0 : rc;
}

/* The folder's directory made if it has none yet (a maildir++ parent, or
 * an fs-layout folder whose parent is such a one). */
int md_ensure_folder(md_store *s, md_folder *f)
{
    if (f->exists)
        return 0;
    uid_t uid;
    gid_t gid;
    mode_t dmode;
    int rc = md_owner(s, f->mb, &uid, &gid, &dmode);
    if (rc)
        return rc;
    md_folder *parent = md_folder_parent(s, f);
    if (s->layout == MD_LAYOUT_FS && parent && strcmp(parent->path, "INBOX") &&
        (rc = md_ensure_folder(s, parent)))
        return rc;
    g_autofree char *p = md_folder_path_abs(s, f);
    if ((rc = inbox_holder(s, f->mb, f->dir)))
        return rc;
    struct stat sb;
    if (!*f->dir || stat(p, &sb) == 0) {
        /* INBOX, or an fs-layout parent: the directory is there, its
         * cur/new/tmp are not. */
        rc = md_mkdir_subdirs(p, uid, gid, dmode, *f->dir != 0);
    } else {
        rc = md_mkdir_maildir(p, uid, gid, dmode, true);
    }
    if (rc == -EEXIST)
        rc = 0;
    if (!rc) {
        f->exists = true;
        f->parent_only = false;
    }
    /* Its UID state from the start, as Dovecot gives a mailbox it makes. */
    md_uidlist *ul = NULL;
    md_lock *lk = NULL;
    if (!rc && !f->batch_lock && (rc = md_uids_begin(s, f, &ul, &lk)) == 0)
        rc = md_uids_end(s, f, ul, lk, true);
    if (rc == -EIO)
        rc = 0; /* a list that does not parse: left to Dovecot's repair */
    return rc;
}

/* --------------------------------------------------------------- UIDs */

static bool in_batch(md_store *s) { return s->batch_owner == g_thread_self(); }

/* A new folder's UIDVALIDITY: the time, as Dovecot gives it, but never
 * one this process gave already (a folder removed and made again within
 * a second must not look like the old one to IMAP clients). */
uint32_t md_new_uidvalidity(md_store *s)
{
    uint32_t now = (uint32_t)(ms_now_ns() / 1000000000LL);
    s->last_uidvalidity = now > s->last_uidvalidity ? now : s->last_uidvalidity + 1;
    return s->last_uidvalidity;
}

/*
 * Whether a batch into f (its lock held, fd its directory) may begin from
 * the list's header alone and append its records (md_batch_commit): a
 * folder only this process writes (a move's hidden copy, which takes UIDs
 * in order), whose cached header is of the file there now, and of which no
 * message was dropped (its record may still be in the list: a base put
 * again must replace it, which takes the list whole).  A folder of 50,000
 * messages is then neither read nor written whole at every batch.
 */
static bool can_append(md_folder *f, int fd)
{
    struct stat sb;
    return f->sole_writer && f->ul && !f->dropped && f->ul->last_uid &&
           fstatat(fd, "dovecot-uidlist", &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
           sb.st_ino == f->ul->ino && sb.st_size == f->ul->size &&
           ts_ns(&sb.st_mtim) == f->ul->mtime_ns;
}

/* Turns an appending batch of f into one with the whole list (a UID at or
 * below the list's last was asked for, or the append found the file
 * changed). */
static int batch_read_whole(md_store *s, md_folder *f)
{
    g_autofree char *fp = md_folder_path_abs(s, f);
    int fd = open(fp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    md_uidlist *u = NULL;
    g_autofree char *err = NULL;
    int rc = md_uidlist_read(fd, &u, &err);
    close(fd);
    if (rc) {
        ms_log(LOG_ERR, "%s/dovecot-uidlist: %s", fp, err ? err : g_strerror(-rc));
        return -EIO;
    }
    for (guint i = 0; i < u->recs->len; i++)
        g_hash_table_add(f->batch_uids,
                         GUINT_TO_POINTER(g_array_index(u->recs, md_uid_rec, i).uid));
    u->next_uid = MAX(u->next_uid, f->batch_ul->next_uid);
    md_uidlist_free(f->batch_ul);
    f->batch_ul = u;
    f->batch_append = false;
    return 0;
}

/*
 * Takes f's dovecot-uidlist lock and reads the list as it is now (a new
 * one when there is none).  Inside a batch, the lock is taken once and
 * kept to the batch's end.  A list that does not parse is left for
 * Dovecot's repair (doveadm force-resync): -EIO, logged.
 */
int md_uids_begin(md_store *s, md_folder *f, md_uidlist **ul, md_lock **lk)
{
    if (f->batch_lock) {
        if (!in_batch(s))
            return -EAGAIN;
        *ul = f->batch_ul;
        *lk = f->batch_lock;
        return 0;
    }
    g_autofree char *fp = md_folder_path_abs(s, f);
    int fd = open(fp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    /* The lock file comes and goes in the folder's directory. */
    md_pin_folder(s, f);
    md_lock *l = NULL;
    int rc = md_uidlist_lock(fd, &l);
    md_uidlist *u = NULL;
    g_autofree char *err = NULL;
    bool append = !rc && in_batch(s) && can_append(f, fd);
    if (append) {
        u = md_uidlist_header(f->ul);
    } else if (!rc) {
        rc = md_uidlist_read(fd, &u, &err);
        if (rc == -ENOENT) {
            u = md_uidlist_new(md_new_uidvalidity(s), 1);
            rc = 0;
        } else if (rc) {
            ms_log(LOG_ERR,
                   "%s/dovecot-uidlist: %s: not written into until repaired (doveadm "
                   "force-resync)",
                   fp, err ? err : g_strerror(-rc));
            rc = -EIO;
        }
    }
    close(fd);
    if (rc) {
        if (l)
            md_uidlist_unlock(l);
        return rc;
    }
    if (in_batch(s)) {
        f->batch_lock = l;
        f->batch_ul = u;
        f->batch_files = g_ptr_array_new_with_free_func(g_free);
        f->batch_adds = g_array_new(FALSE, FALSE, sizeof(md_uid_rec));
        f->batch_uids = g_hash_table_new(g_direct_hash, g_direct_equal);
        for (guint i = 0; i < u->recs->len; i++)
            g_hash_table_add(f->batch_uids,
                             GUINT_TO_POINTER(g_array_index(u->recs, md_uid_rec, i).uid));
        md_meta meta;
        f->batch_any_uid = md_meta_read(s, f->mb, &meta) == 0 && meta.state == MS_MB_INCOMING;
        f->batch_append = append;
        g_ptr_array_add(s->batch_folders, f);
    }
    *ul = u;
    *lk = l;
    return 0;
}

static gint rec_cmp(gconstpointer a, gconstpointer b)
{
    const md_uid_rec *x = a, *y = b;
    return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* The batch's list with its additions merged in, in UID order (the
 * caller's to free).  Additions above every UID listed, as a move copying
 * in UID order makes them, go onto the batch's list itself: a folder of
 * 50,000 messages is not copied once more at every batch. */
md_uidlist *md_batch_merged(md_folder *f)
{
    md_uidlist *old = f->batch_ul;
    g_array_sort(f->batch_adds, rec_cmp);
    guint n = old->recs->len;
    uint32_t last = n ? g_array_index(old->recs, md_uid_rec, n - 1).uid : 0;
    if (!f->batch_adds->len || g_array_index(f->batch_adds, md_uid_rec, 0).uid > last) {
        for (guint i = 0; i < f->batch_adds->len; i++) {
            md_uid_rec *r = &g_array_index(f->batch_adds, md_uid_rec, i);
            if (md_uidlist_add(old, r->base, r->uid, r->fname) == 0 && r->ext)
                g_array_index(old->recs, md_uid_rec, old->recs->len - 1).ext = g_strdup(r->ext);
        }
        f->batch_ul = NULL; /* the caller's now */
        return old;
    }
    GArray *all = g_array_new(FALSE, FALSE, sizeof(md_uid_rec));
    g_array_append_vals(all, old->recs->data, old->recs->len);
    g_array_append_vals(all, f->batch_adds->data, f->batch_adds->len);
    g_array_sort(all, rec_cmp);
    md_uidlist *u = md_uidlist_new(old->uidvalidity, old->next_uid);
    g_free(u->header_rest); /* md_uidlist_new made a GUID */
    u->header_rest = g_strdup(old->header_rest);
    for (guint i = 0; i < all->len; i++) {
        md_uid_rec *r = &g_array_index(all, md_uid_rec, i);
        if (md_uidlist_add(u, r->base, r->uid, r->fname) == 0 && r->ext)
            g_array_index(u->recs, md_uid_rec, u->recs->len - 1).ext = g_strdup(r->ext);
    }
    g_array_free(all, TRUE); /* shallow: the strings are the lists' */
    return u;
}

/* Appends the batch's records to f's list (md_uidlist_append); the
 * cached header follows when it was of the file appended to. */
static int batch_append(md_folder *f)
{
    g_array_sort(f->batch_adds, rec_cmp);
    md_uidlist *h = f->batch_ul;
    struct stat sb;
    int rc = md_uidlist_append(f->batch_lock, h->size, (const md_uid_rec *)f->batch_adds->data,
                               f->batch_adds->len, &sb);
    if (rc)
        return rc;
    if (f->ul && f->ul->ino == h->ino && f->ul->size == h->size && f->ul->mtime_ns == h->mtime_ns) {
        f->ul->size = sb.st_size;
        f->ul->mtime_ns = ts_ns(&sb.st_mtim);
        f->ul->next_uid = MAX(f->ul->next_uid, h->next_uid);
        if (f->batch_adds->len)
            f->ul->last_uid =
                MAX(f->ul->last_uid,
                    g_array_index(f->batch_adds, md_uid_rec, f->batch_adds->len - 1).uid);
    }
    return 0;
}

int md_batch_commit(md_store *s, md_folder *f)
{
    md_lock *lk = f->batch_lock;
    int rc = 0;
    if (f->batch_append) {
        rc = batch_append(f);
        if (rc == -ESTALE)
            rc = batch_read_whole(s, f); /* then written whole, below */
        else {
            md_batch_clear(f);
            md_uidlist_unlock(lk);
            return rc;
        }
        if (rc) {
            md_batch_clear(f);
            md_uidlist_unlock(lk);
            return rc;
        }
    }
    md_uidlist *merged = md_batch_merged(f);
    md_batch_clear(f);
    return md_uids_end(s, f, merged, lk, true);
}

/* Forgets the batch state of f (the lock is released by the caller). */
void md_batch_clear(md_folder *f)
{
    f->batch_append = false;
    for (guint i = 0; f->batch_adds && i < f->batch_adds->len; i++) {
        md_uid_rec *r = &g_array_index(f->batch_adds, md_uid_rec, i);
        g_free(r->base);
        g_free(r->fname);
    }
    if (f->batch_adds)
        g_array_free(f->batch_adds, TRUE);
    f->batch_adds = NULL;
    if (f->batch_uids)
        g_hash_table_destroy(f->batch_uids);
    f->batch_uids = NULL;
    md_uidlist_free(f->batch_ul);
    f->batch_ul = NULL;
    f->batch_lock = NULL;
}

/* The UID a message written in a batch gets: the one it asks for when
 * free (any free one in a move's hidden copy, else only above every UID
 * given), else the next. */
static uint32_t batch_uid(md_folder *f, md_uidlist *ul, uint32_t want)
{
    uint32_t uid = want;
    if (!want || g_hash_table_contains(f->batch_uids, GUINT_TO_POINTER(want)) ||
        (!f->batch_any_uid && want < ul->next_uid))
        for (uid = ul->next_uid; g_hash_table_contains(f->batch_uids, GUINT_TO_POINTER(uid));)
            uid++;
    g_hash_table_add(f->batch_uids, GUINT_TO_POINTER(uid));
    if (uid >= ul->next_uid)
        ul->next_uid = uid + 1;
    return uid;
}

/* md_pin_dir of folder f's directory (for INBOX, the mailbox's too: one
 * directory). */
void md_pin_folder(md_store *s, md_folder *f)
{
    if (!f->exists)
        return;
    g_autofree char *p = md_folder_path_abs(s, f);
    md_pin_dir(s, p, md_folder_xattr(f));
    if (!*f->dir)
        md_pin_dir(s, p, MD_ATTR_XATTR);
}

/* Ends md_uids_begin: writes the list (write) or leaves it; in a batch,
 * nothing until the batch ends. */
int md_uids_end(md_store *s, md_folder *f, md_uidlist *ul, md_lock *lk, bool write)
{
    if (f->batch_lock == lk)
        return 0;
    int rc = 0;
    if (write) {
        uid_t uid;
        gid_t gid;
        mode_t dmode;
        g_autofree char *ulp = NULL;
        struct stat sb;
        /* As md_put_file: the cached header follows this process's own
         * commit in a folder only it writes. */
        bool track = f->sole_writer && f->ul;
        if (track) {
            g_autofree char *fp = md_folder_path_abs(s, f);
            ulp = g_build_filename(fp, "dovecot-uidlist", NULL);
            track = stat(ulp, &sb) == 0 && sb.st_ino == f->ul->ino && sb.st_size == f->ul->size &&
                    ts_ns(&sb.st_mtim) == f->ul->mtime_ns;
        }
        rc = md_owner(s, f->mb, &uid, &gid, &dmode);
        if (!rc)
            rc = md_uidlist_commit(lk, ul, uid, gid, dmode & 0666);
        else
            md_uidlist_unlock(lk);
        if (!rc && track && stat(ulp, &sb) == 0) {
            f->ul->ino = sb.st_ino;
            f->ul->size = sb.st_size;
            f->ul->mtime_ns = ts_ns(&sb.st_mtim);
            f->ul->uidvalidity = ul->uidvalidity;
            f->ul->next_uid = ul->next_uid;
            f->ul->last_uid = ul->last_uid;
        }
    } else {
        md_uidlist_unlock(lk);
    }
    md_uidlist_free(ul);
    return rc;
}

static gint by_mtime_then_base(gconstpointer a, gconstpointer b)
{
    const md_msg *x = *(md_msg *const *)a, *y = *(md_msg *const *)b;
    if (x->mtime_ns != y->mtime_ns)
        return x->mtime_ns < y->mtime_ns ? -1 : 1;
    return strcmp(x->base, y->base);
}

/*
 * Gives the files of f that dovecot-uidlist does not list yet their UIDs,
 * as Dovecot does at its next look (oldest first), under its lock: so
 * what mailfs shows, and a move copies, has the UIDs IMAP clients will
 * see.  A list that does not parse is left alone (logged when read).
 */
int md_assign_uids(md_store *s, md_folder *f)
{
    GHashTableIter it;
    gpointer v;
    bool missing = false;
    g_hash_table_iter_init(&it, f->by_base);
    while (!missing && g_hash_table_iter_next(&it, NULL, &v))
        missing = !((md_msg *)v)->uid && !((md_msg *)v)->pending;
    if (!missing || !f->exists || f->batch_lock)
        return 0;
    md_uidlist *ul = NULL;
    md_lock *lk = NULL;
    int rc = md_uids_begin(s, f, &ul, &lk);
    if (rc)
        return rc == -EIO ? 0 : rc;
    rc = md_refresh_folder(s, f, true);
    GPtrArray *todo = g_ptr_array_new();
    g_hash_table_iter_init(&it, f->by_base);
    while (!rc && g_hash_table_iter_next(&it, NULL, &v)) {
        md_msg *m = v;
        if (m->pending)
            continue;
        m->uid = md_uidlist_uid(ul, m->base, strlen(m->base));
        if (!m->uid && md_msg_stat(s, m) == 0)
            g_ptr_array_add(todo, m);
    }
    g_ptr_array_sort(todo, by_mtime_then_base);
    for (guint i = 0; !rc && i < todo->len; i++) {
        md_msg *m = todo->pdata[i];
        uint32_t uid = ul->next_uid;
        g_autofree char *fname = md_msg_fname(m);
        rc = md_uidlist_add(ul, m->base, uid, fname);
        if (!rc)
            m->uid = uid;
    }
    int e = md_uids_end(s, f, ul, lk, !rc && todo->len > 0);
    g_ptr_array_free(todo, TRUE);
    return rc ? rc : e;
}

/* --------------------------------------------------------- putting files */

/* The message of f whose base is base, if any. */
static md_msg *msg_by_base(md_folder *f, const char *base)
{
    md_msg *m = g_hash_table_lookup(f->by_base, base);
    return m && !m->pending ? m : NULL;
}

/* Records a file just put into f's cur/ in the cache (the next refresh
 * finds it there too, under the same id). */
static md_msg *cache_put(md_store *s, md_folder *f, const char *base, const char *fname,
                         uint32_t uid)
{
    md_msg *m = g_hash_table_lookup(f->by_base, base);
    if (!m) {
        m = g_new0(md_msg, 1);
        m->f = f;
        m->base = g_strdup(base);
        m->name = md_msg_name(m->base, strlen(base));
        md_new_id(s, MS_MESSAGE, m, &m->id);
        g_hash_table_insert(f->by_base, m->base, m);
        f->gen++;
        if (!md_msg_named(f, m->name))
            md_msg_name_add(f, m);
    }
    md_msg_set_fname(m, fname);
    m->in_new = false;
    m->stated = false;
    m->uid = uid;
    return m;
}

/* True when a record of ul has uid. */
bool md_uid_taken(const md_uidlist *ul, uint32_t uid)
{
    for (guint i = 0; i < ul->recs->len; i++)
        if (g_array_index(ul->recs, md_uid_rec, i).uid == uid)
            return true;
    return false;
}

/*
 * Adds base with uid to *ul in UID order: appended when above every UID,
 * else the list is made again with it in its place (*ul replaced; a
 * restore or a rename keeping its UID, not the common case).
 */
int md_uidlist_put(md_uidlist **ul, const char *base, uint32_t uid, const char *fname)
{
    md_uidlist *u = *ul;
    if (!u->recs->len || g_array_index(u->recs, md_uid_rec, u->recs->len - 1).uid < uid) {
        int rc = md_uidlist_add(u, base, uid, fname);
        if (!rc && u->next_uid <= uid)
            u->next_uid = uid + 1;
        return rc;
    }
    md_uidlist *n = md_uidlist_new(u->uidvalidity, u->next_uid > uid ? u->next_uid : uid + 1);
    g_free(n->header_rest); /* md_uidlist_new made a GUID */
    n->header_rest = g_strdup(u->header_rest);
    bool done = false;
    int rc = 0;
    for (guint i = 0; !rc && i <= u->recs->len; i++) {
        md_uid_rec *r = i < u->recs->len ? &g_array_index(u->recs, md_uid_rec, i) : NULL;
        if (!done && (!r || r->uid > uid)) {
            rc = md_uidlist_add(n, base, uid, fname);
            done = true;
        }
        if (!rc && r) {
            rc = md_uidlist_add(n, r->base, r->uid, r->fname);
            if (!rc && r->ext)
                g_array_index(n->recs, md_uid_rec, n->recs->len - 1).ext = g_strdup(r->ext);
        }
    }
    if (rc) {
        md_uidlist_free(n);
        return rc;
    }
    n->next_uid = u->next_uid > uid ? u->next_uid : uid + 1;
    md_uidlist_free(u);
    *ul = n;
    return 0;
}

/*
 * The info letters flags get in folder f (keeping the letters of old_info
 * that are no flag mailfs knows), under f's uidlist lock (held by
 * the caller): its keywords read again (fresh, or already current in a
 * batch, which holds the lock throughout), new ones added and saved.
 */
static int info_locked(md_store *s, md_folder *f, const char *flags, size_t len,
                       const char *old_info, bool fresh, GString *info)
{
    if (fresh)
        f->kw_loaded = false;
    int rc = md_keywords_refresh(s, f);
    bool changed = false;
    if (!rc)
        rc = md_info_for(flags ? flags : "", flags ? len : 0, old_info, &f->kw, &changed, info);
    if (rc || !changed)
        return rc;
    uid_t uid;
    gid_t gid;
    mode_t dmode;
    g_autofree char *fp = md_folder_path_abs(s, f);
    int fd = open(fp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    rc = fd < 0 ? -errno : md_owner(s, f->mb, &uid, &gid, &dmode);
    if (!rc) {
        md_pin_folder(s, f);
        rc = md_keywords_save(fd, &f->kw, uid, gid, dmode & 0666);
    }
    if (fd >= 0)
        close(fd);
    /* Read again next time: its mtime moved. */
    f->kw_loaded = rc == 0 && !fresh;
    return rc;
}

/*
 * Puts the file at src_path into f's cur/ as base with info (how: see
 * md_put_how), with UID want_uid when that is above every UID f has (a
 * move into its fresh copy), else the next one; under the uidlist lock,
 * so Dovecot gives no other file that UID.  -EEXIST when f has a message
 * of that base, unless how is MD_PUT_REPLACE: that message's file is then
 * replaced by the rename itself (or, under another name, unlinked once the
 * new one is in place), so that whatever fails, and wherever a crash
 * strikes, one of the two is in cur/, whole.  Not in a batch (its
 * rollback unlinks what it put).  *out: the message.
 */
int md_put_file(md_store *s, md_folder *f, const char *src_path, md_put_how how, const char *base,
                const char *flags, size_t flags_len, uint32_t want_uid, const char *drop_base,
                bool durable, md_msg **out)
{
    ms_mutex_assert_held(&s->lock);
    md_uidlist *ul = NULL;
    md_lock *lk = NULL;
    bool held = f->batch_lock != NULL; /* by an earlier put of this batch */
    int rc = md_uids_begin(s, f, &ul, &lk);
    if (rc)
        return rc;
    bool batch = f->batch_lock == lk;
    if (batch && how == MD_PUT_REPLACE) {
        md_uids_end(s, f, ul, lk, false);
        return -EINVAL;
    }
    /* The info letters, under the lock that guards dovecot-keywords too:
     * a keyword Dovecot added meanwhile keeps its letter. */
    g_autoptr(GString) info = g_string_new(NULL);
    rc = info_locked(s, f, flags, flags_len, NULL, !held, info);
    if (rc) {
        md_uids_end(s, f, ul, lk, false);
        return rc;
    }
    /* Under the lock: what Dovecot put there before it is seen.  Once per
     * batch: the batch's earlier puts are in the cache (cache_put), and a
     * rescan per put made a batch into a big folder quadratic.  Not at all
     * in a move's hidden copy, which no one but the move writes. */
    if (!held && !(batch && f->batch_any_uid))
        rc = md_refresh_folder(s, f, batch);
    md_msg *replaced = rc ? NULL : msg_by_base(f, base);
    if (replaced && how != MD_PUT_REPLACE)
        rc = -EEXIST;
    /* A record whose file is gone (expunged, Dovecot has not synced
     * since): the UID stays used, the name is free again. */
    if (!rc && md_uidlist_uid(ul, base, strlen(base)))
        md_uidlist_remove(ul, base, strlen(base));
    /* The file renamed in place: its old record goes, its UID stays free
     * for it. */
    if (!rc && drop_base && !batch)
        md_uidlist_remove(ul, drop_base, strlen(drop_base));
    uint32_t uid = 0;
    if (!rc && batch && f->batch_append && want_uid && want_uid <= ul->last_uid) {
        rc = batch_read_whole(s, f); /* whether that UID is free: the whole list says */
        ul = f->batch_ul;
    }
    if (!rc && batch) {
        uid = batch_uid(f, ul, want_uid);
    } else if (!rc) {
        /* The UID asked for when no record has it (a restore, a rename),
         * else the next one. */
        uid = want_uid && !md_uid_taken(ul, want_uid) ? want_uid : ul->next_uid;
        uint32_t top =
            ul->recs->len ? g_array_index(ul->recs, md_uid_rec, ul->recs->len - 1).uid : 0;
        if (uid != want_uid && uid <= top)
            uid = top + 1;
    }
    g_autofree char *fname = g_strconcat(base, ":2,", info->str, NULL);
    g_autofree char *fp = md_folder_path_abs(s, f);
    g_autofree char *cur = g_build_filename(fp, "cur", NULL);
    g_autofree char *dst = g_build_filename(cur, fname, NULL);
    /* In a folder only this process writes, a listing that held before
     * the file went in holds after it, with cur/'s new stamp. */
    int64_t was = 0;
    bool track = !rc && f->sole_writer && f->scanned && md_dir_mtime(cur, &was) == 0 &&
                 was == f->cur_mtime_ns;
    /* The replaced file, as the refresh above found it (Dovecot may have
     * renamed it for its flags since the caller looked). */
    g_autofree char *was_path = replaced && how == MD_PUT_REPLACE ? md_msg_path(s, replaced) : NULL;
    bool over = was_path && !strcmp(was_path, dst);
    if (!rc) {
        if (how == MD_PUT_LINK)
            rc = link(src_path, dst) < 0 ? -errno : 0;
        else
            rc = renameat2(AT_FDCWD, src_path, AT_FDCWD, dst, over ? 0 : RENAME_NOREPLACE) < 0
                     ? -errno
                     : 0;
    }
    if (!rc && was_path) {
        /* Under another name (its flags differ): two files of one base
         * for a moment, which Dovecot would take for a duplicate and
         * keep both; never none. */
        if (!over && unlink(was_path) < 0 && errno != ENOENT)
            ms_log(LOG_WARNING, "%s: replaced, but not removed: %s", was_path, g_strerror(errno));
        md_msg_drop(s, replaced); /* the new file gets an entry of its own */
    }
    if (!rc && track)
        md_dir_mtime(cur, &f->cur_mtime_ns);
    if (!rc && batch) {
        md_uid_rec r = {uid, g_strdup(base), NULL, g_strdup(fname)};
        g_array_append_val(f->batch_adds, r);
        g_ptr_array_add(f->batch_files, g_strdup(dst));
    } else if (!rc) {
        rc = md_uidlist_put(&ul, base, uid, fname);
    }
    if (!rc && durable)
        rc = fsync_dir(cur);
    int e = md_uids_end(s, f, ul, lk, rc == 0);
    if (!rc && e) {
        /* The file is in place but has no UID: Dovecot gives it one at
         * its next look; ours is not promised, so say the write failed
         * only if the file is gone too. */
        ms_log(LOG_WARNING, "%s/dovecot-uidlist: not updated: %s (Dovecot will list %s)", fp,
               g_strerror(-e), fname);
    }
    if (rc)
        return rc;
    *out = cache_put(s, f, base, fname, uid);
    return 0;
}

/* A unique base name as Dovecot makes them, with its size fields. */
static char *new_base(md_store *s, int64_t size, int64_t vsize)
{
    int64_t now = ms_now_ns();
    g_autofree char *host = g_strdup(g_get_host_name());
    for (char *p = host; *p; p++)
        if (*p == '/' || *p == ':' || *p == ',')
            *p = '_';
    return g_strdup_printf("%lld.M%lldP%dQ%u.%s,S=%lld,W=%lld", (long long)(now / 1000000000LL),
                           (long long)(now / 1000 % 1000000), (int)getpid(), ++s->tmp_seq, host,
                           (long long)size, (long long)vsize);
}

/* ---------------------------------------------------------- tree writes */

/* The folder, message or mailbox a node names, for a write. */
static int folder_of(md_store *s, ms_node n, md_folder **out)
{
    md_folder *f = n.kind == MS_FOLDER ? md_by_id(s, MS_FOLDER, n.id) : NULL;
    if (!f)
        return n.kind == MS_FOLDER ? -ENOENT : -EPERM;
    *out = f;
    return 0;
}

static int msg_named(md_store *s, md_folder *f, const char *name, md_msg **out)
{
    int rc = md_refresh_folder(s, f, false);
    if (rc)
        return rc;
    md_msg *m = md_msg_named(f, name);
    if (!m || m->pending)
        return -ENOENT;
    *out = m;
    return 0;
}

/* The owner and mode given through the mount (and a directory's mtime),
 * kept in path's attribute xa. */
static int keep_over(md_store *s, const char *path, const char *xa, const ms_attr *was,
                     const ms_setattr_req *req, bool dir)
{
    md_over o;
    md_over_get(path, xa, &o);
    o.set = true;
    o.mode = was->mode;
    o.uid = was->uid;
    o.gid = was->gid;
    if (req->mask & MS_SET_MODE)
        o.mode = req->mode & 07777;
    if (req->mask & MS_SET_UID)
        o.uid = req->uid;
    if (req->mask & MS_SET_GID)
        o.gid = req->gid;
    if (dir && (req->mask & MS_SET_MTIME))
        o.mtime_ns = req->mtime_ns;
    if (!(req->mask & (MS_SET_MODE | MS_SET_UID | MS_SET_GID)) &&
        !(dir && (req->mask & MS_SET_MTIME)))
        return 0;
    return md_over_set(s, path, xa, &o);
}

/* Nanoseconds since the epoch (negative before 1970) as a timespec. */
static struct timespec timespec_of(int64_t ns)
{
    struct timespec t = {ns / 1000000000LL, ns % 1000000000LL};
    if (t.tv_nsec < 0) {
        t.tv_sec--;
        t.tv_nsec += 1000000000LL;
    }
    return t;
}

/* A message's mtime is its file's: Dovecot's INTERNALDATE. */
static int set_mtime(const char *path, int64_t ns)
{
    struct timespec ts[2] = {{0, UTIME_OMIT}, timespec_of(ns)};
    return utimensat(AT_FDCWD, path, ts, 0) < 0 ? -errno : 0;
}

/*
 * A message changed in place (mode, owner, mtime: its file's ctime
 * moves, not its directory's): the mtime of the directory holding it is
 * set to now, so that its folder's modseq moves too, as the directory's
 * does for every other change of a message.  Dovecot then rescans it,
 * finding nothing new.  Best effort: a failure is logged, the change
 * stands (the message's own modseq moved).
 */
static void touch_msg_dir(md_store *s, md_msg *m)
{
    g_autofree char *fp = md_folder_path_abs(s, m->f);
    g_autofree char *dir = g_build_filename(fp, m->in_new ? "new" : "cur", NULL);
    struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    if (utimensat(AT_FDCWD, dir, ts, 0) < 0) {
        int e = errno;
        g_autofree char *fname = md_msg_fname(m);
        ms_log(LOG_WARNING, "%s: cannot date the change of %s: %s", dir, fname, strerror(e));
    }
}

static int md_setattr(ms_store *st, int64_t mailbox, ms_node node, const ms_setattr_req *req,
                      ms_attr *out)
{
    md_store *s = md_of(st);
    (void)mailbox;
    ms_mutex_lock(&s->lock);
    int rc = 0;
    g_autofree char *path = NULL;
    md_mbox *mb = NULL;
    md_msg *m = NULL;
    md_folder *f = NULL;
    switch (node.kind) {
    case MS_ROOT:
        path = g_strdup(s->path);
        break;
    case MS_MAILBOX:
        mb = md_by_id(s, MS_MAILBOX, node.id);
        rc = mb ? 0 : -ENOENT;
        if (mb)
            path = md_mbox_path(s, mb);
        break;
    case MS_FOLDER:
        f = md_by_id(s, MS_FOLDER, node.id);
        rc = !f ? -ENOENT : md_refuse(s, f->mb);
        if (!rc && !f->exists) {
            /* A mere parent has no directory to keep a mode or a date
             * in, and gets none for them: it shows its mailbox's. */
            ms_mutex_unlock(&s->lock);
            return out ? md_getattr(st, node, out) : 0;
        }
        if (!rc)
            path = md_folder_path_abs(s, f);
        break;
    default:
        m = md_by_id(s, MS_MESSAGE, node.id);
        rc = !m ? -ENOENT : md_refresh_folder(s, m->f, false);
        if (!rc && !(m = md_by_id(s, MS_MESSAGE, node.id)))
            rc = -ENOENT;
        if (!rc)
            rc = md_refuse(s, m->f->mb);
        if (!rc && m->pending) {
            if (req->mask & MS_SET_MODE)
                m->over.mode = req->mode & 07777;
            if (req->mask & MS_SET_UID)
                m->over.uid = req->uid;
            if (req->mask & MS_SET_GID)
                m->over.gid = req->gid;
            if (req->mask & MS_SET_MTIME)
                m->mtime_ns = req->mtime_ns;
            m->ctime_ns = ms_now_ns();
            ms_mutex_unlock(&s->lock);
            return md_getattr(st, node, out);
        }
        if (!rc)
            path = md_msg_path(s, m);
    }
    if (!rc && mb)
        rc = md_refuse(s, mb);
    const char *xa = f ? md_folder_xattr(f) : MD_ATTR_XATTR;
    ms_attr was;
    if (!rc)
        rc = md_stat_attr(path, xa, &was);
    if (!rc)
        rc = keep_over(s, path, xa, &was, req, !m);
    if (!rc && m && (req->mask & MS_SET_MTIME)) {
        rc = set_mtime(path, req->mtime_ns);
        /* Dovecot keeps the received date it first read in its cache,
         * whatever the file's mtime says later: the cache goes (Dovecot
         * rebuilds it) so that it reads the new date. */
        g_autofree char *fp = md_folder_path_abs(s, m->f);
        g_autofree char *cache = g_build_filename(fp, "dovecot.index.cache", NULL);
        if (!rc)
            unlink(cache);
    }
    if (!rc && m)
        touch_msg_dir(s, m);
    if (m)
        m->stated = false;
    ms_mutex_unlock(&s->lock);
    if (rc)
        return rc;
    return out ? md_getattr(st, node, out) : 0;
}

/* What a folder is called below parent: its tree path. */
static char *child_path(md_store *s, ms_node parent, const char *name, md_mbox **mb)
{
    if (parent.kind == MS_MAILBOX) {
        *mb = md_by_id(s, MS_MAILBOX, parent.id);
        return *mb ? g_strdup(name) : NULL;
    }
    md_folder *pf = md_by_id(s, MS_FOLDER, parent.id);
    *mb = pf ? pf->mb : NULL;
    return pf ? g_strconcat(pf->path, "/", name, NULL) : NULL;
}

static int mkdir_mailbox(md_store *s, const char *name, uint32_t mode, uint32_t uid, uint32_t gid,
                         ms_attr *out)
{
    if (name[0] == '.' || !strcmp(name, "lost+found"))
        return -EINVAL;
    int rc = md_refresh_root(s);
    if (rc)
        return rc;
    if (g_hash_table_contains(s->mb_by_name, name))
        return -EEXIST;
    uid_t ouid;
    gid_t ogid;
    mode_t dmode;
    rc = md_owner(s, NULL, &ouid, &ogid, &dmode);
    if (rc)
        return rc;
    g_autofree char *p = g_build_filename(s->path, name, NULL);
    rc = md_make_dir(p, ouid, ogid, dmode & 0770 ? dmode : 0700);
    if (rc)
        return rc;
    md_mbox *mb = md_mbox_get(s, name);
    ms_attr was;
    ms_setattr_req req = {MS_SET_MODE | MS_SET_UID | MS_SET_GID, mode, uid, gid, 0};
    rc = md_stat_attr(p, MD_ATTR_XATTR, &was);
    if (!rc && (was.mode != mode || was.uid != uid || was.gid != gid))
        rc = keep_over(s, p, MD_ATTR_XATTR, &was, &req, true);
    if (!rc)
        rc = md_mbox_attr(s, mb, out);
    return rc;
}

static int md_mkdir(ms_store *st, int64_t mailbox, ms_node parent, const char *name, uint32_t mode,
                    uint32_t uid, uint32_t gid, ms_attr *out)
{
    md_store *s = md_of(st);
    (void)mailbox;
    ms_mutex_lock(&s->lock);
    int rc;
    if (parent.kind == MS_ROOT) {
        rc = mkdir_mailbox(s, name, mode, uid, gid, out);
        ms_mutex_unlock(&s->lock);
        return rc;
    }
    md_mbox *mb = NULL;
    g_autofree char *path = child_path(s, parent, name, &mb);
    rc = !path ? -ENOENT : md_refuse(s, mb);
    if (!rc)
        rc = md_refresh_folders(s, mb);
    md_folder *f = NULL;
    if (!rc) {
        f = g_hash_table_lookup(mb->folders, path);
        g_autoptr(GString) dir = g_string_new(NULL);
        if (f && (f->exists || f->seen))
            rc = -EEXIST;
        else if (!f && (rc = md_folder_dir(s->layout, path, dir)) == 0 &&
                 !(f = md_folder_get(s, mb, path)))
            rc = -EINVAL;
    }
    if (!rc) {
        f->exists = false;
        rc = md_ensure_folder(s, f);
        if (rc)
            md_folder_drop_cache(s, f);
    }
    if (!rc) {
        f->seen = true;
        g_autofree char *p = md_folder_path_abs(s, f);
        ms_attr was;
        ms_setattr_req req = {MS_SET_MODE | MS_SET_UID | MS_SET_GID, mode, uid, gid, 0};
        rc = md_stat_attr(p, md_folder_xattr(f), &was);
        if (!rc && (was.mode != mode || was.uid != uid || was.gid != gid))
            rc = keep_over(s, p, md_folder_xattr(f), &was, &req, true);
        if (!rc)
            rc = md_folder_attr(s, f, out);
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* Files Dovecot (and mailfs) keep in a Maildir folder beside the mail:
 * removed with the folder when it holds no message. */
static bool own_file(const char *n)
{
    return g_str_has_prefix(n, "dovecot") || !strcmp(n, "maildirfolder") ||
           !strcmp(n, "subscriptions") || !strcmp(n, MD_SPECIAL_USE_FILE) ||
           !strcmp(n, MD_META_FILE);
}

/* Removes the Maildir folder at path, which holds no message: its
 * cur/new/tmp and Dovecot's files; anything else stays (ENOTEMPTY). */
static int remove_maildir(const char *path, bool keep_subdirs)
{
    /*
     * new/ and cur/ first, and nothing else while either still holds a
     * message (Dovecot may deliver up to the last moment): the folder's
     * uidlist and keywords name its messages' UIDs and flags.  Until the
     * audit after issue 14 they went in one pass, and a folder that
     * turned out not to be empty kept its messages but lost both.
     */
    g_autofree char *new_dir = g_build_filename(path, "new", NULL);
    g_autofree char *cur_dir = g_build_filename(path, "cur", NULL);
    struct stat cur_st;
    bool had_cur = lstat(cur_dir, &cur_st) == 0;
    if (rmdir(new_dir) < 0 && errno != ENOENT)
        return -ENOTEMPTY;
    if (rmdir(cur_dir) < 0 && errno != ENOENT) {
        /* new/ back as it was, so that the folder stays whole */
        if (had_cur && mkdir(new_dir, cur_st.st_mode & 07777) == 0 &&
            chown(new_dir, cur_st.st_uid, cur_st.st_gid) < 0)
            ms_log(LOG_WARNING, "%s: cannot give back its owner: %s", new_dir, g_strerror(errno));
        return -ENOTEMPTY;
    }
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *e;
    while ((e = readdir(d))) {
        g_autofree char *p = g_build_filename(path, e->d_name, NULL);
        if (!strcmp(e->d_name, "tmp"))
            md_rm_tree(p);
        else if (own_file(e->d_name))
            unlink(p);
    }
    closedir(d);
    int rc = 0;
    if (!keep_subdirs && rmdir(path) < 0)
        rc = errno == EEXIST ? -ENOTEMPTY : -errno;
    return rc;
}

int md_remove_maildir(const char *path, bool keep_dir) { return remove_maildir(path, keep_dir); }

/* True when folder f of mb has a subfolder. */
static bool has_subfolders(md_mbox *mb, md_folder *f)
{
    GHashTableIter it;
    gpointer v;
    size_t n = strlen(f->path);
    g_hash_table_iter_init(&it, mb->folders);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        md_folder *c = v;
        if (!strncmp(c->path, f->path, n) && c->path[n] == '/')
            return true;
    }
    return false;
}

static int rmdir_mailbox(md_store *s, const char *name)
{
    int rc = md_refresh_root(s);
    md_mbox *mb = rc ? NULL : g_hash_table_lookup(s->mb_by_name, name);
    if (!rc && !mb)
        rc = -ENOENT;
    if (!rc)
        rc = md_refuse(s, mb);
    if (!rc)
        rc = md_refresh_folders(s, mb);
    if (rc)
        return rc;
    md_folder *inbox = g_hash_table_lookup(mb->folders, "INBOX");
    if (g_hash_table_size(mb->folders) > (inbox ? 1u : 0u))
        return -ENOTEMPTY;
    if (inbox)
        rc = md_refresh_folder(s, inbox, true);
    if (!rc && inbox && g_hash_table_size(inbox->by_base))
        rc = -ENOTEMPTY;
    g_autofree char *p = md_mbox_path(s, mb);
    if (!rc)
        rc = remove_maildir(p, false);
    if (!rc)
        md_refresh_root(s);
    return rc;
}

static int md_rmdir(ms_store *st, int64_t mailbox, ms_node parent, const char *name)
{
    md_store *s = md_of(st);
    (void)mailbox;
    ms_mutex_lock(&s->lock);
    int rc;
    if (parent.kind == MS_ROOT) {
        rc = rmdir_mailbox(s, name);
        ms_mutex_unlock(&s->lock);
        return rc;
    }
    md_mbox *mb = NULL;
    g_autofree char *path = child_path(s, parent, name, &mb);
    rc = !path ? -ENOENT : md_refuse(s, mb);
    if (!rc)
        rc = md_refresh_folders(s, mb);
    md_folder *f = rc ? NULL : g_hash_table_lookup(mb->folders, path);
    if (!rc && !f)
        rc = -ENOENT;
    if (!rc && has_subfolders(mb, f))
        rc = -ENOTEMPTY;
    if (!rc)
        rc = md_refresh_folder(s, f, true);
    if (!rc && g_hash_table_size(f->by_base))
        rc = -ENOTEMPTY;
    if (!rc && f->exists && !*f->dir) {
        /* INBOX: its cur/new/tmp go, the root with the rest stays. */
        static const char *const subs[] = {"cur", "new", "tmp"};
        g_autofree char *p = md_folder_path_abs(s, f);
        for (size_t i = 0; !rc && i < 3; i++) {
            g_autofree char *sp = g_build_filename(p, subs[i], NULL);
            rc = i == 2 ? md_rm_tree(sp) : rmdir(sp) < 0 && errno != ENOENT ? -errno : 0;
        }
    } else if (!rc && f->exists) {
        g_autofree char *p = md_folder_path_abs(s, f);
        rc = remove_maildir(p, false);
    }
    if (!rc) {
        mb->folders_scanned_ns = 0;
        md_refresh_folders(s, mb);
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

static int md_unlink(ms_store *st, int64_t mailbox, ms_node folder, const char *name)
{
    md_store *s = md_of(st);
    (void)mailbox;
    ms_mutex_lock(&s->lock);
    md_folder *f = NULL;
    md_msg *m = NULL;
    int rc = folder_of(s, folder, &f);
    if (!rc)
        rc = md_refuse(s, f->mb);
    if (!rc)
        rc = msg_named(s, f, name, &m);
    for (int tries = 0; !rc && tries < 3; tries++) {
        g_autofree char *p = md_msg_path(s, m);
        if (unlink(p) == 0) {
            md_msg_drop(s, m);
            break;
        }
        rc = errno == ENOENT ? md_refresh_folder(s, f, true) : -errno;
        if (!rc)
            rc = msg_named(s, f, name, &m);
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* The vsize of the file at path (its size with bare LFs as CRLF). */
static int file_vsize(const char *path, int64_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    g_autofree char *buf = g_malloc(MD_CHUNK);
    bool cr = false;
    int64_t v = 0;
    ssize_t n;
    while ((n = read(fd, buf, MD_CHUNK)) > 0)
        v += md_vsize_add(buf, (size_t)n, &cr);
    int rc = n < 0 ? -errno : 0;
    close(fd);
    if (!rc)
        *out = v;
    return rc;
}

/* The base for a message called name whose file is at path. */
int md_base_of_file(const char *name, const char *path, int64_t size, char **out)
{
    int64_t vsize = size;
    if (strstr(name, ",W=")) {
        int rc = file_vsize(path, &vsize);
        if (rc)
            return rc;
    }
    return md_base_for(name, size, vsize, out);
}

static int rename_message(md_store *s, md_folder *from, const char *name, md_folder *to,
                          const char *newname, bool noreplace)
{
    md_msg *m = NULL, *old = NULL;
    int rc = msg_named(s, from, name, &m);
    if (!rc)
        rc = md_ensure_folder(s, to);
    if (!rc && md_refresh_folder(s, to, false) == 0) {
        old = md_msg_named(to, newname);
        if (old && (old->pending || old == m))
            old = old == m ? NULL : old;
    }
    if (!rc && old && noreplace)
        rc = -EEXIST;
    if (!rc)
        rc = md_msg_stat(s, m);
    g_autofree char *src = rc ? NULL : md_msg_path(s, m);
    g_autofree char *base = NULL, *flags = NULL;
    size_t flen = 0;
    if (!rc)
        rc = md_base_of_file(newname, src, m->size, &base);
    if (!rc)
        rc = md_flags_of(s, m, &flags, &flen);
    if (!rc && old) {
        g_autofree char *op = md_msg_path(s, old);
        if (unlink(op) < 0 && errno != ENOENT)
            rc = -errno;
        else
            md_msg_drop(s, old);
    }
    if (rc)
        return rc;
    if (from == to && !strcmp(base, m->base))
        return 0;
    md_over over = m->over;
    int64_t mid = m->id;
    md_msg *nm = NULL;
    /* Within its folder a message keeps its UID (rsync renames its
     * temporary file into place); refiled, it gets the next. */
    rc = md_put_file(s, to, src, MD_PUT_RENAME, base, flags, flen, from == to ? m->uid : 0,
                     from == to ? m->base : NULL, false, &nm);
    if (rc)
        return rc;
    /* The message keeps its id: the same file under another name. */
    md_msg *gone = md_by_id(s, MS_MESSAGE, mid);
    if (gone)
        md_msg_drop(s, gone);
    md_msg_reid(s, nm, mid);
    nm->over = over;
    return 0;
}

/* Gives the folders at old and below it their new paths (the objects,
 * and so their ids, stay). */
static void rekey_folders(md_store *s, md_mbox *mb, const char *old, const char *new)
{
    size_t n = strlen(old);
    GList *all = g_hash_table_get_values(mb->folders);
    for (GList *l = all; l; l = l->next) {
        md_folder *f = l->data;
        if (strncmp(f->path, old, n) || (f->path[n] && f->path[n] != '/'))
            continue;
        g_autofree char *np = g_strconcat(new, f->path + n, NULL);
        g_autoptr(GString) dir = g_string_new(NULL);
        g_hash_table_steal(mb->folders, f->path);
        md_folder *clash = g_hash_table_lookup(mb->folders, np);
        if (clash) {
            md_folder_drop_cache(s, clash);
            md_forget_id(s, clash->id);
            g_hash_table_remove(mb->folders, np);
        }
        g_free(f->path);
        f->path = g_strdup(np);
        if (!md_folder_dir(s->layout, np, dir)) {
            g_free(f->dir);
            f->dir = g_strdup(dir->str);
        }
        g_hash_table_insert(mb->folders, f->path, f);
    }
    g_list_free(all);
    mb->folders_scanned_ns = 0;
}

static int rename_folder(md_store *s, md_mbox *mb, const char *oldpath, const char *newpath,
                         bool noreplace)
{
    int rc = md_refresh_folders(s, mb);
    if (rc)
        return rc;
    md_folder *f = g_hash_table_lookup(mb->folders, oldpath);
    if (!f)
        return -ENOENT;
    if (!strcmp(oldpath, "INBOX"))
        return -EBUSY;
    size_t n = strlen(oldpath);
    if (!strncmp(newpath, oldpath, n) && newpath[n] == '/')
        return -EINVAL;
    g_autoptr(GString) ndir = g_string_new(NULL);
    if ((rc = md_folder_dir(s->layout, newpath, ndir)))
        return rc;
    md_folder *there = g_hash_table_lookup(mb->folders, newpath);
    if (there && there != f) {
        if (noreplace)
            return -EEXIST;
        if (has_subfolders(mb, there) || (rc = md_refresh_folder(s, there, true)) ||
            g_hash_table_size(there->by_base))
            return rc ? rc : -ENOTEMPTY;
        if (there->exists) {
            g_autofree char *tp = md_folder_path_abs(s, there);
            if ((rc = remove_maildir(tp, false)))
                return rc;
        }
    }
    /* The new parent must exist on disk where the layout nests. */
    g_autofree char *np = g_strdup(newpath);
    char *slash = strrchr(np, '/');
    if (slash && s->layout == MD_LAYOUT_FS) {
        *slash = '\0';
        md_folder *pf = md_folder_get(s, mb, np);
        if (!pf || (strcmp(pf->path, "INBOX") && (rc = md_ensure_folder(s, pf))))
            return rc ? rc : -EINVAL;
        if ((rc = inbox_holder(s, mb, ndir->str)))
            return rc;
    }
    g_autofree char *root = md_mbox_path(s, mb);
    if (s->layout == MD_LAYOUT_FS) {
        if (f->exists) {
            g_autofree char *a = g_build_filename(root, f->dir, NULL);
            g_autofree char *b = g_build_filename(root, ndir->str, NULL);
            if (rename(a, b) < 0)
                return -errno;
        }
    } else {
        /* ".a" and every ".a.x": each renamed, as Dovecot renames them. */
        GList *all = g_hash_table_get_values(mb->folders);
        for (GList *l = all; l && !rc; l = l->next) {
            md_folder *c = l->data;
            if (!c->exists || strncmp(c->path, oldpath, n) || (c->path[n] && c->path[n] != '/'))
                continue;
            g_autofree char *cp = g_strconcat(newpath, c->path + n, NULL);
            g_autoptr(GString) cdir = g_string_new(NULL);
            rc = md_folder_dir(s->layout, cp, cdir);
            g_autofree char *a = g_build_filename(root, c->dir, NULL);
            g_autofree char *b = g_build_filename(root, cdir->str, NULL);
            if (!rc && rename(a, b) < 0)
                rc = -errno;
        }
        g_list_free(all);
        if (rc)
            return rc;
    }
    rekey_folders(s, mb, oldpath, newpath);
    return md_refresh_folders(s, mb);
}

static int rename_mailbox(md_store *s, const char *name, const char *newname, bool noreplace)
{
    int rc = md_refresh_root(s);
    md_mbox *mb = rc ? NULL : g_hash_table_lookup(s->mb_by_name, name);
    if (!rc && !mb)
        rc = -ENOENT;
    if (!rc && (newname[0] == '.' || !strcmp(newname, "lost+found")))
        rc = -EINVAL;
    if (!rc)
        rc = md_refuse(s, mb);
    if (!rc && g_hash_table_contains(s->mb_by_name, newname))
        rc = noreplace ? -EEXIST : -ENOTEMPTY;
    if (rc)
        return rc;
    g_autofree char *a = g_build_filename(s->path, name, NULL);
    g_autofree char *b = g_build_filename(s->path, newname, NULL);
    if (renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_NOREPLACE) < 0)
        return -errno;
    g_hash_table_steal(s->mb_by_name, mb->name);
    g_free(mb->name);
    mb->name = g_strdup(newname);
    g_hash_table_insert(s->mb_by_name, mb->name, mb);
    return 0;
}

static int md_rename(ms_store *st, int64_t mailbox, ms_node parent, const char *name,
                     ms_node newparent, const char *newname, bool noreplace)
{
    md_store *s = md_of(st);
    (void)mailbox;
    ms_mutex_lock(&s->lock);
    int rc;
    if (parent.kind == MS_ROOT) {
        rc = newparent.kind == MS_ROOT ? rename_mailbox(s, name, newname, noreplace) : -EPERM;
        ms_mutex_unlock(&s->lock);
        return rc;
    }
    md_mbox *mb = NULL, *mb2 = NULL;
    g_autofree char *from = child_path(s, parent, name, &mb);
    if (newparent.kind == MS_ROOT) {
        ms_mutex_unlock(&s->lock);
        return -EPERM;
    }
    g_autofree char *to = child_path(s, newparent, newname, &mb2);
    rc = !from || !to ? -ENOENT : mb != mb2 ? -EXDEV : md_refuse(s, mb);
    if (!rc)
        rc = md_refresh_folders(s, mb);
    if (!rc && g_hash_table_contains(mb->folders, from)) {
        rc = rename_folder(s, mb, from, to, noreplace);
    } else if (!rc) {
        md_folder *f1 = parent.kind == MS_FOLDER ? md_by_id(s, MS_FOLDER, parent.id) : NULL;
        md_folder *f2 = newparent.kind == MS_FOLDER ? md_by_id(s, MS_FOLDER, newparent.id) : NULL;
        if (!f1)
            rc = -ENOENT;
        else if (!f2)
            rc = -EPERM; /* a message out of its folders */
        else if (g_hash_table_contains(mb->folders, to))
            rc = -EISDIR;
        else
            rc = rename_message(s, f1, name, f2, newname, noreplace);
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* Writes text (len 0: removes the file) as dir/name, atomically. */
static int write_small(md_store *s, md_mbox *mb, const char *dir, const char *name,
                       const char *text, size_t len)
{
    g_autofree char *p = g_build_filename(dir, name, NULL);
    if (!len)
        return unlink(p) < 0 && errno != ENOENT ? -errno : 0;
    uid_t uid;
    gid_t gid;
    mode_t dmode;
    int rc = md_owner(s, mb, &uid, &gid, &dmode);
    if (rc)
        return rc;
    g_autofree char *tmp = g_strconcat(p, ".mailfs-tmp", NULL);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, dmode & 0666);
    if (fd < 0)
        return -errno;
    rc = write(fd, text, len) == (ssize_t)len && fchown(fd, uid, gid) == 0 &&
                 fchmod(fd, dmode & 0666) == 0 && fsync(fd) == 0
             ? 0
             : -errno;
    close(fd);
    if (!rc && rename(tmp, p) < 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
    return rc;
}

/* Sets m's flags: its file renamed in cur/ with the new info letters
 * (from new/ too), under the uidlist lock that also guards
 * dovecot-keywords.  A rename by Dovecot meanwhile is met by reading the
 * folder again. */
static int set_flags(md_store *s, md_msg *m, const char *v, size_t len)
{
    md_folder *f = m->f;
    md_uidlist *ul = NULL;
    md_lock *lk = NULL;
    int64_t id = m->id;
    int rc = md_uids_begin(s, f, &ul, &lk);
    if (rc)
        return rc;
    for (int tries = 0; tries < 3; tries++) {
        rc = md_refresh_folder(s, f, tries > 0);
        if (!rc && !(m = md_by_id(s, MS_MESSAGE, id)))
            rc = -ENOENT;
        if (rc)
            break;
        const char *old_info = md_msg_info(m);
        g_autoptr(GString) info = g_string_new(NULL);
        rc = info_locked(s, f, v, len, old_info, true, info);
        if (rc)
            break;
        g_autofree char *fp = md_folder_path_abs(s, f);
        g_autofree char *fname = g_strconcat(m->base, ":2,", info->str, NULL);
        g_autofree char *src = md_msg_path(s, m);
        g_autofree char *dst = g_build_filename(fp, "cur", fname, NULL);
        if (!strcmp(src, dst))
            break;
        if (rename(src, dst) == 0) {
            md_msg_set_fname(m, fname);
            m->in_new = false;
            break;
        }
        rc = -errno;
        if (rc != -ENOENT)
            break;
    }
    md_uids_end(s, f, ul, lk, false);
    return rc;
}

static int md_xattr_set(ms_store *st, int64_t mailbox, ms_node node, ms_xattr_id xa,
                        const char *value, size_t len)
{
    md_store *s = md_of(st);
    (void)mailbox;
    ms_mutex_lock(&s->lock);
    int rc = 0;
    if (xa == MS_XA_FLAGS && node.kind == MS_MESSAGE) {
        md_msg *m = md_by_id(s, MS_MESSAGE, node.id);
        rc = !m ? -ENOENT : md_refuse(s, m->f->mb);
        if (!rc && m->pending) {
            /* No file yet (cp -a sets them before close): kept for the
             * first commit. */
            g_free(m->pflags);
            m->pflags = len ? g_strndup(value, len) : NULL;
            m->pflags_len = len;
        } else if (!rc) {
            rc = set_flags(s, m, value, len);
        }
    } else if (xa == MS_XA_SPECIAL_USE && node.kind == MS_FOLDER) {
        md_folder *f = md_by_id(s, MS_FOLDER, node.id);
        rc = !f ? -ENOENT : md_refuse(s, f->mb);
        if (!rc)
            rc = md_ensure_folder(s, f);
        g_autofree char *fp = rc ? NULL : md_folder_path_abs(s, f);
        if (!rc)
            rc = write_small(s, f->mb, fp, MD_SPECIAL_USE_FILE, value, len);
    } else if (xa == MS_XA_ACL && node.kind == MS_MAILBOX) {
        md_mbox *mb = md_by_id(s, MS_MAILBOX, node.id);
        rc = !mb ? -ENOENT : md_refuse(s, mb);
        g_autoptr(GString) text = g_string_new(NULL);
        if (!rc && len)
            rc = md_acl_to_dovecot(value, len, text);
        if (!rc && text->len)
            g_string_append_c(text, '\n');
        g_autofree char *root = rc ? NULL : md_mbox_path(s, mb);
        if (!rc)
            rc = write_small(s, mb, root, "dovecot-acl", text->str, text->len);
        if (!rc) {
            /* Dovecot's list of mailboxes with ACLs: rebuilt from the
             * files when it is gone. */
            g_autofree char *list = g_build_filename(root, "dovecot-acl-list", NULL);
            unlink(list);
        }
    } else {
        rc = -ENOTSUP;
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

const ms_tree_ops md_tree_ops = {
    .lookup = md_lookup,
    .getattr = md_getattr,
    .list = md_list,
    .xattr_get = md_xattr_get,
    .setattr = md_setattr,
    .mkdir = md_mkdir,
    .rmdir = md_rmdir,
    .unlink = md_unlink,
    .rename = md_rename,
    .xattr_set = md_xattr_set,
};

/* ------------------------------------------------------------- content */

#define PENDING_PREFIX "/pending/" /* no file name holds a '/' */

static int md_message_create(ms_store *st, ms_node folder, const char *name, uint32_t mode,
                             uint32_t uid, uint32_t gid, ms_attr *out)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_folder *f = NULL;
    int rc = folder_of(s, folder, &f);
    if (!rc)
        rc = md_refuse(s, f->mb);
    if (!rc)
        rc = md_refresh_folder(s, f, false);
    if (!rc && md_msg_named(f, name))
        rc = -EEXIST;
    g_autofree char *longest = NULL;
    if (!rc)
        rc = md_base_for(name, -1, -1, &longest); /* its longest form must fit */
    if (!rc) {
        md_msg *m = g_new0(md_msg, 1);
        m->f = f;
        m->pending = true;
        m->name = g_strdup(name);
        md_new_id(s, MS_MESSAGE, m, &m->id);
        m->base = g_strdup_printf(PENDING_PREFIX "%lld", (long long)m->id);
        m->over = (md_over){true, mode & 07777, uid, gid, 0};
        m->mtime_ns = m->ctime_ns = ms_now_ns();
        g_hash_table_insert(f->by_base, m->base, m);
        f->gen++;
        md_msg_name_add(f, m);
        *out = (ms_attr){.node = {MS_MESSAGE, m->id},
                         .mode = mode & 07777,
                         .uid = uid,
                         .gid = gid,
                         .mailbox = f->mb->id,
                         .mtime_ns = m->mtime_ns,
                         .ctime_ns = m->ctime_ns};
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

static int md_discard_pending(ms_store *st, int64_t message)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_msg *m = md_by_id(s, MS_MESSAGE, message);
    if (m && m->pending)
        md_msg_drop(s, m);
    ms_mutex_unlock(&s->lock);
    return 0;
}

/* What a commit writes before it takes the lock: the bytes in tmp/. */
typedef struct staged {
    char *path;
    int64_t size, vsize;
} staged;

/*
 * Copies the spool into a new file in folder path fp's tmp/, owned and
 * moded as the mailbox's files, dated mtime_ns, synced if durable.
 */
static int stage(md_store *s, const char *fp, ms_spool *sp, uid_t uid, gid_t gid, mode_t fmode,
                 int64_t mtime_ns, bool durable, staged *out)
{
    int64_t now = ms_now_ns();
    g_autofree char *name = g_strdup_printf(
        "%lld.M%lldP%dQ%u.mailfs", (long long)(now / 1000000000), (long long)(now / 1000 % 1000000),
        (int)getpid(), __atomic_add_fetch(&s->tmp_seq, 1, __ATOMIC_RELAXED));
    out->path = g_build_filename(fp, "tmp", name, NULL);
    int fd = open(out->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        g_clear_pointer(&out->path, g_free);
        return -e;
    }
    g_autofree char *buf = g_malloc(MD_CHUNK);
    int64_t size = ms_spool_size(sp), off = 0, vsize = 0;
    bool cr = false;
    int rc = 0;
    while (!rc && off < size) {
        ssize_t n = ms_spool_pread(sp, buf, MD_CHUNK, off);
        if (n <= 0) {
            rc = n < 0 ? (int)n : -EIO;
            break;
        }
        vsize += md_vsize_add(buf, (size_t)n, &cr);
        for (ssize_t done = 0; !rc && done < n;) {
            ssize_t w = write(fd, buf + done, (size_t)(n - done));
            if (w < 0 && errno != EINTR)
                rc = -errno;
            else if (w > 0)
                done += w;
        }
        off += n;
    }
    struct timespec ts[2] = {{0, UTIME_OMIT}, timespec_of(mtime_ns)};
    if (!rc && (fchown(fd, uid, gid) < 0 || fchmod(fd, fmode) < 0 || futimens(fd, ts) < 0))
        rc = -errno;
    if (!rc && durable && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && !rc)
        rc = -errno;
    if (rc) {
        unlink(out->path);
        g_clear_pointer(&out->path, g_free);
        return rc;
    }
    out->size = size;
    out->vsize = vsize;
    return 0;
}

/* The mode and owner a commit asks for, kept when they are not the
 * file's own. */
static int commit_over(md_store *s, md_msg *m, md_over want)
{
    if (!want.set)
        return 0;
    md_msg_stat(s, m);
    if (want.mode == m->mode && want.uid == m->fuid && want.gid == m->fgid)
        return 0;
    g_autofree char *p = md_msg_path(s, m);
    int rc = md_over_set(s, p, MD_ATTR_XATTR, &want);
    if (!rc)
        m->over = want;
    m->stated = false;
    return rc;
}

static int md_commit(ms_store *st, const ms_commit *c, ms_attr *out)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_msg *m = c->message ? md_by_id(s, MS_MESSAGE, c->message) : NULL;
    md_folder *f = m                             ? m->f
                   : c->folder.kind == MS_FOLDER ? md_by_id(s, MS_FOLDER, c->folder.id)
                                                 : NULL;
    int rc = (c->message && !m) || !f ? -ENOENT : md_refuse(s, f->mb);
    if (!rc)
        rc = md_ensure_folder(s, f);
    uid_t uid = 0;
    gid_t gid = 0;
    mode_t dmode = 0700;
    if (!rc)
        rc = md_owner(s, f->mb, &uid, &gid, &dmode);
    g_autofree char *fp = rc ? NULL : md_folder_path_abs(s, f);
    int64_t fid = f ? f->id : 0;
    /* What stays when the commit does not say: the old message's. */
    md_over want = {false, 0, 0, 0, 0};
    int64_t mtime = ms_now_ns();
    if (!rc && m) {
        if (m->pending) {
            want = m->over;
            mtime = m->mtime_ns;
        } else if (!(rc = md_msg_stat(s, m))) {
            want = m->over;
            mtime = m->mtime_ns;
        }
    }
    ms_mutex_unlock(&s->lock);
    if (rc)
        return rc;
    if (c->attr.mask & MS_SET_MTIME)
        mtime = c->attr.mtime_ns;
    if (c->attr.mask & (MS_SET_MODE | MS_SET_UID | MS_SET_GID)) {
        if (!want.set)
            want = (md_over){true, dmode & 0666, uid, gid, 0};
        if (c->attr.mask & MS_SET_MODE)
            want.mode = c->attr.mode;
        if (c->attr.mask & MS_SET_UID)
            want.uid = c->attr.uid;
        if (c->attr.mask & MS_SET_GID)
            want.gid = c->attr.gid;
    }
    staged sg = {0};
    rc = stage(s, fp, c->spool, uid, gid, dmode & 0666, mtime, c->durable, &sg);
    if (rc)
        return rc;

    ms_mutex_lock(&s->lock);
    f = md_by_id(s, MS_FOLDER, fid);
    m = c->message ? md_by_id(s, MS_MESSAGE, c->message) : NULL;
    rc = !f || (c->message && !m) ? -ENOENT : md_refuse(s, f->mb);
    const char *name = m ? m->name : c->name;
    g_autofree char *base = NULL;
    if (!rc)
        base = name ? NULL : new_base(s, sg.size, sg.vsize);
    if (!rc && name)
        rc = md_base_for(name, sg.size, sg.vsize, &base);
    /* The flags: as given, else the replaced message's, or those set on
     * the message before its first commit. */
    g_autofree char *oflags = NULL;
    size_t oflen = 0;
    if (!rc && !c->flags && m && (!m->pending || m->pflags))
        rc = md_flags_of(s, m, &oflags, &oflen);
    const char *flags = c->flags ? c->flags : oflags;
    size_t flen = c->flags ? c->flags_len : oflen;
    md_msg *old = m && !m->pending ? m : NULL;
    uint32_t puid = m && m->pending ? m->puid : 0; /* user.mail.uid set before */
    /* A rewrite gets a new UID (IMAP clients cache a message's bytes by
     * UID), unless its UID was given through user.mail.uid: a restore
     * (tar sets it, then writes the bytes) keeps what it asked for. */
    if (old && old->uid_pinned && !puid)
        puid = old->uid;
    g_autofree char *drop = old && old->uid_pinned ? g_strdup(old->base) : NULL;
    g_autofree char *old_path = old ? md_msg_path(s, old) : NULL;
    if (!rc && m && m->pending) {
        /* The reserved name becomes the file's: drop the placeholder. */
        md_msg_drop(s, m);
        m = NULL;
    }
    md_put_how how = MD_PUT_RENAME;
    if (!rc && old && !strcmp(old->base, base)) {
        /* A rewrite under the same base: the new file is renamed over the
         * old one under the uidlist lock (its readers keep the old bytes),
         * and gets the next UID (IMAP clients cache a message's bytes by
         * UID), unless its UID was given through user.mail.uid: a restore
         * (tar sets it, then writes the bytes) keeps what it asked for.
         * Until the audit after issue 14 the old file was unlinked first,
         * and a uidlist that could not be locked or written, a full disk
         * or a kill before the rename lost both. */
        how = MD_PUT_REPLACE;
        old = NULL; /* md_put_file drops it from the cache once replaced */
    }
    md_msg *nm = NULL;
    if (!rc)
        rc = md_put_file(s, f, sg.path, how, base, flags, flen,
                         c->imap_uid ? (uint32_t)c->imap_uid : puid, old ? drop : NULL, c->durable,
                         &nm);
    if (!rc && puid && nm->uid == puid) {
        nm->uid_pinned = true;
        /* Dovecot may hold the old bytes of that UID in its cache. */
        g_autofree char *cache = g_build_filename(fp, "dovecot.index.cache", NULL);
        unlink(cache);
    }
    if (!rc && old && nm != old) {
        if (unlink(old_path) < 0 && errno != ENOENT)
            ms_log(LOG_WARNING, "%s: replaced, but not removed: %s", old_path, g_strerror(errno));
        int64_t keep = old->id;
        md_msg_drop(s, old);
        md_msg_reid(s, nm, keep); /* the rewritten message keeps its node */
    } else if (!rc && c->message && nm->id != c->message) {
        md_msg_reid(s, nm, c->message);
    }
    if (!rc)
        rc = commit_over(s, nm, want);
    if (!rc && !(rc = md_msg_stat(s, nm)))
        md_msg_attr(s, nm, out);
    ms_mutex_unlock(&s->lock);
    if (rc && sg.path)
        unlink(sg.path); /* gone already if it was put in place */
    g_free(sg.path);
    return rc;
}

const ms_content_ops md_content_ops = {
    .message_create = md_message_create,
    .reader_open = md_reader_open,
    .reader_pread = md_reader_pread,
    .reader_close = md_reader_close,
    .discard_pending = md_discard_pending,
    .commit = md_commit,
};
