/*
 * maildir_admin.c — the maildir store as a whole: sizes, sync, batches,
 * mailboxes in their move states, UIDVALIDITY and UIDNEXT, stamps of
 * what Dovecot changed, and hard links between stores on one filesystem.
 */
#include "maildir_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* renameat2 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nettle/sha2.h>

static gint str_cmp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static gint folder_cmp(gconstpointer a, gconstpointer b)
{
    const md_folder *x = *(md_folder *const *)a, *y = *(md_folder *const *)b;
    return strcmp(x->path, y->path);
}

/* mb's folders, listings up to date (read again with force), in path
 * order (so that two walks of equal mailboxes see the same sequence).
 * g_ptr_array_free the result. */
static int folders_sorted(md_store *s, md_mbox *mb, bool force, GPtrArray **out)
{
    int rc = md_refresh_folders(s, mb);
    if (rc)
        return rc;
    GPtrArray *fs = g_ptr_array_new();
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, mb->folders);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        md_folder *f = v;
        /* force: the files are looked at now (no recheck window), but a
         * folder whose directories and uidlist did not change since its
         * last scan (still_fresh) is not read again: a stamp of a 50,000-
         * message folder costs a few stats, not a readdir. */
        if (force)
            f->checked_ns = 0;
        if ((rc = md_refresh_folder(s, f, false)))
            break;
        g_ptr_array_add(fs, f);
    }
    if (rc) {
        g_ptr_array_free(fs, TRUE);
        return rc;
    }
    g_ptr_array_sort(fs, folder_cmp);
    *out = fs;
    return 0;
}

/* Messages and bytes of mb. */
static int mbox_size(md_store *s, md_mbox *mb, int64_t *messages, int64_t *bytes, int64_t *folders)
{
    GPtrArray *fs = NULL;
    int rc = folders_sorted(s, mb, false, &fs);
    if (rc)
        return rc;
    int64_t n = 0, b = 0;
    for (guint i = 0; i < fs->len; i++) {
        md_folder *f = fs->pdata[i];
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, f->by_base);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
            md_msg *m = v;
            if (m->pending || md_msg_stat(s, m))
                continue;
            n++;
            b += m->size;
        }
    }
    if (folders)
        *folders = fs->len;
    g_ptr_array_free(fs, TRUE);
    *messages = n;
    *bytes = b;
    return 0;
}

static int64_t du(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) < 0)
        return 0;
    int64_t total = (int64_t)sb.st_blocks * 512;
    if (!S_ISDIR(sb.st_mode))
        return total;
    DIR *d = opendir(path);
    if (!d)
        return total;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        g_autofree char *p = g_build_filename(path, e->d_name, NULL);
        total += du(p);
    }
    closedir(d);
    return total;
}

static int md_stats(ms_store *st, ms_store_stats *out)
{
    md_store *s = md_of(st);
    *out = (ms_store_stats){0};
    ms_mutex_lock(&s->lock);
    int rc = md_refresh_root(s);
    GList *all = rc ? NULL : g_hash_table_get_values(s->mb_by_name);
    for (GList *l = all; l && !rc; l = l->next) {
        md_mbox *mb = l->data;
        md_meta meta;
        int64_t n = 0, b = 0, f = 0;
        rc = md_meta_read(s, mb, &meta);
        if (!rc)
            rc = mbox_size(s, mb, &n, &b, &f);
        if (rc)
            break;
        if (meta.state == MS_MB_RETAINED) {
            out->retained_mailboxes++;
            out->retained_messages += n;
            out->retained_bytes += b;
        } else if (meta.state == MS_MB_VISIBLE) {
            out->mailboxes++;
            out->folders += f;
            out->messages += n;
            out->bytes += b;
        }
    }
    g_list_free(all);
    ms_mutex_unlock(&s->lock);
    out->file_bytes = du(s->path);
    return rc;
}

/* Everything written so far on stable storage: the files and the
 * directories that name them (syncfs of the store's filesystem). */
static int md_sync(ms_store *st)
{
    int fd = open(md_of(st)->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = syncfs(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int md_batch_begin(ms_store *st)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    int rc = s->batch_owner ? -EBUSY : 0;
    if (!rc) {
        s->batch_owner = g_thread_self();
        s->batch_folders = g_ptr_array_new();
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* Each folder the batch wrote: its uidlist written once (commit), or its
 * new files removed again; the lock released either way. */
static int md_batch_end(ms_store *st, bool commit)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    int rc = 0;
    for (guint i = 0; s->batch_folders && i < s->batch_folders->len; i++) {
        md_folder *f = s->batch_folders->pdata[i];
        md_lock *lk = f->batch_lock;
        GPtrArray *files = g_steal_pointer(&f->batch_files);
        if (commit && !rc) {
            rc = md_batch_commit(s, f);
        } else {
            md_batch_clear(f);
            for (guint k = 0; files && k < files->len; k++)
                unlink(files->pdata[k]);
            md_uidlist_unlock(lk);
            f->scanned = false;
        }
        if (files)
            g_ptr_array_free(files, TRUE);
    }
    if (s->batch_folders)
        g_ptr_array_free(s->batch_folders, TRUE);
    s->batch_folders = NULL;
    s->batch_owner = NULL;
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* ------------------------------------------------------------ mailboxes */

static int md_mailbox_create(ms_store *st, const char *name, ms_mb_state state, const ms_attr *like,
                             int64_t *id)
{
    md_store *s = md_of(st);
    if (state == MS_MB_DELETED)
        return -ENOTSUP;
    if (strlen(name) > 255)
        return -ENAMETOOLONG;
    ms_mutex_lock(&s->lock);
    int rc = md_refresh_root(s);
    if (!rc && g_hash_table_contains(s->mb_by_name, name))
        rc = -EEXIST;
    uid_t uid;
    gid_t gid;
    mode_t dmode;
    if (!rc)
        rc = md_owner(s, NULL, &uid, &gid, &dmode);
    g_autofree char *p = g_build_filename(s->path, name, NULL);
    if (!rc)
        rc = md_make_dir(p, uid, gid, dmode & 0770 ? dmode : 0700);
    md_mbox *mb = rc ? NULL : md_mbox_get(s, name);
    if (!rc && state != MS_MB_VISIBLE) {
        md_meta meta = {.state = state};
        rc = md_meta_write(s, mb, &meta);
    }
    if (!rc && like) {
        /* The source mailbox's mode, owner and date, as the tree shows
         * them (the directory itself is the mail server's). */
        md_over o = {true, like->mode, like->uid, like->gid, like->mtime_ns};
        rc = md_over_set(s, p, MD_ATTR_XATTR, &o);
    }
    if (!rc)
        *id = mb->id;
    ms_mutex_unlock(&s->lock);
    return rc;
}

static int md_mailbox_find(ms_store *st, const char *name, ms_mb_state state, int64_t *id)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    int rc = md_refresh_root(s);
    md_mbox *mb = rc ? NULL : g_hash_table_lookup(s->mb_by_name, name);
    md_meta meta;
    if (!rc && !mb)
        rc = -ENOENT;
    if (!rc)
        rc = md_meta_read(s, mb, &meta);
    if (!rc && meta.state != state)
        rc = -ENOENT;
    if (!rc)
        *id = mb->id;
    ms_mutex_unlock(&s->lock);
    return rc;
}

static int info_of(md_store *s, md_mbox *mb, ms_mailbox_info *out)
{
    md_meta meta;
    int rc = md_meta_read(s, mb, &meta);
    if (rc)
        return rc;
    *out = (ms_mailbox_info){
        .id = mb->id,
        .state = meta.state,
        .lock_move = meta.lock_move,
        .retain_until = meta.retain_until,
        .move_id = meta.move_id,
    };
    g_strlcpy(out->lock_journal, meta.lock_journal, sizeof out->lock_journal);
    g_strlcpy(out->move_journal, meta.move_journal, sizeof out->move_journal);
    g_strlcpy(out->name, mb->name, sizeof out->name);
    return 0;
}

static int md_mailbox_info(ms_store *st, int64_t id, ms_mailbox_info *out)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_mbox *mb = md_by_id(s, MS_MAILBOX, id);
    int rc = mb ? info_of(s, mb, out) : -ENOENT;
    ms_mutex_unlock(&s->lock);
    return rc;
}

static gint info_cmp(gconstpointer a, gconstpointer b)
{
    const ms_mailbox_info *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int md_mailbox_scan(ms_store *st, ms_mailbox_fn fn, void *ctx)
{
    md_store *s = md_of(st);
    GArray *infos = g_array_new(FALSE, FALSE, sizeof(ms_mailbox_info));
    ms_mutex_lock(&s->lock);
    int rc = md_refresh_root(s);
    GHashTableIter it;
    gpointer v;
    if (!rc) {
        g_hash_table_iter_init(&it, s->mb_by_name);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
            ms_mailbox_info i;
            if (!info_of(s, v, &i))
                g_array_append_val(infos, i);
        }
    }
    ms_mutex_unlock(&s->lock);
    g_array_sort(infos, info_cmp);
    for (guint i = 0; !rc && i < infos->len; i++)
        if (fn(ctx, &g_array_index(infos, ms_mailbox_info, i)))
            break;
    g_array_free(infos, TRUE);
    return rc;
}

static int md_mailbox_set(ms_store *st, int64_t id, const ms_mailbox_change *chg)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_mbox *mb = md_by_id(s, MS_MAILBOX, id);
    md_meta meta;
    int rc = mb ? md_meta_read(s, mb, &meta) : -ENOENT;
    if (!rc && chg->name && strcmp(chg->name, mb->name)) {
        /* Renamed first: a crash between the two leaves the old state
         * under the new name, which recovery reads from the name. */
        rc = md_refresh_root(s);
        if (!rc && g_hash_table_contains(s->mb_by_name, chg->name))
            rc = -EEXIST;
        g_autofree char *a = g_build_filename(s->path, mb->name, NULL);
        g_autofree char *b = g_build_filename(s->path, chg->name, NULL);
        if (!rc && renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_NOREPLACE) < 0)
            rc = -errno;
        if (!rc) {
            g_hash_table_steal(s->mb_by_name, mb->name);
            g_free(mb->name);
            mb->name = g_strdup(chg->name);
            g_hash_table_insert(s->mb_by_name, mb->name, mb);
            int dfd = open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
        }
    }
    if (!rc) {
        if (chg->state >= 0)
            meta.state = (ms_mb_state)chg->state;
        if (chg->lock_move > 0 && meta.lock_move && meta.lock_move != chg->lock_move)
            rc = -EBUSY; /* one lock at a time */
        else if (chg->lock_move >= 0) {
            meta.lock_move = chg->lock_move;
            g_strlcpy(meta.lock_journal, chg->lock_move && chg->journal ? chg->journal : "",
                      sizeof meta.lock_journal);
        }
        if (chg->retain_until >= 0)
            meta.retain_until = chg->retain_until;
        if (chg->move_id > 0) {
            meta.move_id = chg->move_id;
            g_strlcpy(meta.move_journal, chg->journal ? chg->journal : "",
                      sizeof meta.move_journal);
        }
        if (!rc)
            rc = md_meta_write(s, mb, &meta);
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

static int md_mailbox_drop(ms_store *st, int64_t id)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_mbox *mb = md_by_id(s, MS_MAILBOX, id);
    g_autofree char *p = mb ? md_mbox_path(s, mb) : NULL;
    int rc = mb ? md_rm_tree(p) : -ENOENT;
    if (!rc)
        md_refresh_root(s);
    ms_mutex_unlock(&s->lock);
    return rc;
}

static int md_mailbox_size(ms_store *st, int64_t id, int64_t *messages, int64_t *bytes)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_mbox *mb = md_by_id(s, MS_MAILBOX, id);
    int rc = mb ? mbox_size(s, mb, messages, bytes, NULL) : -ENOENT;
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* The flags and the file's identity; with hash, the SHA-256 of the
 * bytes, read from the file (Maildir keeps none). */
static int md_message_meta(ms_store *st, int64_t id, bool hash, ms_message_meta *out)
{
    md_store *s = md_of(st);
    memset(out, 0, sizeof *out);
    if (!hash) {
        /* Flags and identity as the listing last saw them: no file
         * opened, and no rescan (under deliveries the folder changes all
         * the time, and a move asks this of every message it verifies:
         * rescans made a bulk copy crawl).  What changed since shows in
         * the message's change sequence, which a move checks again. */
        ms_mutex_lock(&s->lock);
        md_msg *m = md_by_id(s, MS_MESSAGE, id);
        int rc = !m || m->pending ? -ENOENT : md_msg_stat(s, m);
        if (rc == -ENOENT && m && !m->pending) { /* renamed: look again */
            rc = md_msg_find(s, id, &m);
            if (!rc)
                rc = md_msg_stat(s, m);
        }
        if (!rc) {
            out->dev = m->dev;
            out->ino = m->ino;
            size_t len = 0;
            rc = md_flags_of(s, m, &out->flags, &len);
        }
        ms_mutex_unlock(&s->lock);
        return rc;
    }
    ms_be_reader *r = NULL;
    int64_t size = 0;
    bool pending = false;
    int rc = md_reader_open(st, id, &r, &size, &pending);
    if (rc)
        return rc;
    struct stat sb;
    if (r->fd >= 0 && fstat(r->fd, &sb) == 0) {
        out->dev = sb.st_dev;
        out->ino = sb.st_ino;
    }
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    g_autofree char *buf = hash ? g_malloc(MD_CHUNK) : NULL;
    for (int64_t off = 0; hash && off < size;) {
        ssize_t n = md_reader_pread(st, r, buf, MD_CHUNK, off);
        if (n <= 0) {
            rc = n < 0 ? (int)n : -EIO;
            break;
        }
        sha256_update(&ctx, (size_t)n, (const uint8_t *)buf);
        off += n;
    }
    md_reader_close(st, r);
    if (rc)
        return rc;
    if (hash)
        sha256_digest(&ctx, SHA256_DIGEST_SIZE, out->sha256);
    ms_mutex_lock(&s->lock);
    md_msg *m = md_by_id(s, MS_MESSAGE, id);
    size_t len = 0;
    rc = m ? md_flags_of(s, m, &out->flags, &len) : -ENOENT;
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* ----------------------------------------------------------------- UIDs */

static int md_folder_uids_get(ms_store *st, ms_node folder, ms_folder_uids *out)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_folder *f = md_by_id(s, MS_FOLDER, folder.id);
    int rc = !f ? -ENOENT : md_refresh_folder(s, f, true);
    /* No list yet (nothing ever numbered a message here): no UID state,
     * and none is made up; reading writes nothing. */
    if (!rc && !f->ul)
        rc = -ENODATA;
    if (!rc) {
        out->uidvalidity = f->ul->uidvalidity;
        out->uidnext = f->ul->next_uid;
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* UIDVALIDITY as given; UIDNEXT as given but never below what is used. */
static int md_folder_uids_set(ms_store *st, ms_node folder, const ms_folder_uids *u)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_folder *f = md_by_id(s, MS_FOLDER, folder.id);
    int rc = !f ? -ENOENT : md_refuse(s, f->mb);
    if (!rc)
        rc = md_ensure_folder(s, f);
    md_uidlist *ul = NULL;
    md_lock *lk = NULL;
    if (!rc)
        rc = md_uids_begin(s, f, &ul, &lk);
    if (!rc) {
        uint32_t top =
            ul->recs->len ? g_array_index(ul->recs, md_uid_rec, ul->recs->len - 1).uid : 0;
        /* As given, but above every UID held (a restore made UIDs its
         * temporary files took and gave back: the count goes back too). */
        int64_t next = u->uidnext > (int64_t)top ? u->uidnext : (int64_t)top + 1;
        ul->next_uid = (uint32_t)next;
        ul->uidvalidity = u->uidvalidity;
        rc = md_uids_end(s, f, ul, lk, true);
    }
    /* Read again, unless only this process writes the folder: then
     * md_uids_end kept its cached header with the list it wrote. */
    if (f && !f->sole_writer)
        f->scanned = false;
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* Folder f's part of a stamp: its path, and its messages' bases and
 * flags in order; kept while its listing did not change (f->gen). */
static const uint8_t *folder_stamp(md_folder *f)
{
    if (f->stamp_gen && f->stamp_gen == f->gen)
        return f->stamp;
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, strlen(f->path) + 1, (const uint8_t *)f->path);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer val;
    g_hash_table_iter_init(&it, f->by_base);
    while (g_hash_table_iter_next(&it, NULL, &val)) {
        md_msg *m = val;
        if (m->pending)
            continue;
        const char *info = md_msg_info(m);
        g_ptr_array_add(names, g_strconcat(m->base, "\n", info ? info : "", NULL));
    }
    g_ptr_array_sort(names, str_cmp);
    for (guint k = 0; k < names->len; k++) {
        const char *n = names->pdata[k];
        sha256_update(&ctx, strlen(n) + 1, (const uint8_t *)n);
    }
    g_ptr_array_free(names, TRUE);
    sha256_digest(&ctx, SHA256_DIGEST_SIZE, f->stamp);
    f->stamp_gen = ++f->gen; /* a gen no change has had */
    return f->stamp;
}

/*
 * What a move must find unchanged: every folder's path, and every
 * message's base and flags.  Not the uidlists: Dovecot giving a UID to a
 * file already there, or making a list the move's reading made, changes
 * no mail.  A folder whose listing did not change since the last stamp
 * (each is read again first) costs nothing: a cutover stamps twice.
 */
static int md_mailbox_stamp(ms_store *st, int64_t id, uint8_t out[MS_STAMP_LEN])
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_mbox *mb = md_by_id(s, MS_MAILBOX, id);
    GPtrArray *fs = NULL;
    int rc = mb ? folders_sorted(s, mb, true, &fs) : -ENOENT;
    /* A move stamps its source before copying it: files Dovecot has not
     * numbered yet get their UIDs now, as Dovecot's next look would give
     * them, so that the copy keeps the UIDs clients will know. */
    for (guint i = 0; !rc && !s->ro && i < fs->len; i++)
        rc = md_assign_uids(s, fs->pdata[i]);
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    for (guint i = 0; !rc && i < fs->len; i++)
        sha256_update(&ctx, 32, folder_stamp(fs->pdata[i]));
    if (fs)
        g_ptr_array_free(fs, TRUE);
    ms_mutex_unlock(&s->lock);
    if (!rc)
        sha256_digest(&ctx, SHA256_DIGEST_SIZE, out);
    return rc;
}

/* ---------------------------------------------------------------- links */

/*
 * Links src's message into folder of st as name with uid: the same
 * file, so no byte is copied (Maildir files never change once
 * delivered).  Its flags are re-lettered for the target folder's
 * keywords.  -EXDEV across filesystems: the caller copies instead.
 */
static int md_message_link(ms_store *st, ms_node folder, const char *name, int64_t uid,
                           ms_store *src, int64_t message, ms_attr *out)
{
    md_store *s = md_of(st), *ss = md_of(src);
    g_autofree char *spath = NULL, *flags = NULL, *sbase = NULL;
    size_t flen = 0;
    md_over over = {0};
    int64_t size = 0;
    /* The source first, under its own lock; never both locks at once. */
    ms_mutex_lock(&ss->lock);
    md_msg *sm = md_by_id(ss, MS_MESSAGE, message);
    /* The listing the caller just read names the file: no rescan per
     * link (a folder the mail server delivers into changes all the time,
     * and a rescan reads all of it).  A file renamed since (a flag set by
     * the server) is found by one forced rescan; a link that still misses
     * fails with ENOENT, which a move's next pass takes up. */
    int rc = !sm || sm->pending ? -ENOENT : md_msg_stat(ss, sm);
    if (rc == -ENOENT && sm && !sm->pending) {
        rc = md_refresh_folder(ss, sm->f, true);
        if (!rc && !(sm = md_by_id(ss, MS_MESSAGE, message)))
            rc = -ENOENT;
        if (!rc)
            rc = md_msg_stat(ss, sm);
    }
    if (!rc) {
        spath = md_msg_path(ss, sm);
        sbase = g_strdup(sm->base);
        over = sm->over;
        size = sm->size;
        rc = md_flags_of(ss, sm, &flags, &flen);
    }
    ms_mutex_unlock(&ss->lock);
    if (rc)
        return rc;
    struct stat a, b;
    if (stat(spath, &a) < 0 || stat(s->path, &b) < 0)
        return -errno;
    if (a.st_dev != b.st_dev)
        return -EXDEV;

    ms_mutex_lock(&s->lock);
    md_folder *f = md_by_id(s, MS_FOLDER, folder.id);
    rc = !f ? -ENOENT : md_refuse(s, f->mb);
    if (!rc)
        rc = md_ensure_folder(s, f);
    g_autofree char *base = NULL;
    if (!rc && sbase && !strcmp(name, sbase)) {
        /* Its own base name: already one for exactly these bytes. */
        base = g_strdup(sbase);
    } else if (!rc) {
        rc = md_base_of_file(name, spath, size, &base);
    }
    md_msg *nm = NULL;
    if (!rc)
        rc = md_put_file(s, f, spath, MD_PUT_LINK, base, flags, flen, (uint32_t)uid, NULL, false,
                         &nm);
    /* -ENOENT: renamed by Dovecot between our look and the link; the
     * caller copies this one (its reader finds the new name). */
    if (!rc) {
        nm->over = over;
        if (!(rc = md_msg_stat(s, nm)) && out)
            md_msg_attr(s, nm, out);
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

/* Back to a mere parent: in maildir++ its directory goes, in fs its
 * cur/new/tmp, if it holds no message (and then only Dovecot's and
 * mailfs's own files). */
static int md_folder_unselect(ms_store *st, ms_node folder)
{
    md_store *s = md_of(st);
    ms_mutex_lock(&s->lock);
    md_folder *f = md_by_id(s, MS_FOLDER, folder.id);
    int rc = !f ? -ENOENT : !*f->dir ? -EINVAL : md_refuse(s, f->mb);
    if (!rc && f->exists)
        rc = md_refresh_folder(s, f, true);
    if (!rc && f->exists && g_hash_table_size(f->by_base))
        rc = -ENOTEMPTY;
    if (!rc && f->exists) {
        g_autofree char *p = md_folder_path_abs(s, f);
        /* fs layout: the directory stays, it holds the subfolders. */
        rc = md_remove_maildir(p, s->layout == MD_LAYOUT_FS);
        if (!rc) {
            md_folder_drop_cache(s, f);
            f->exists = false;
            f->mb->folders_scanned_ns = 0;
        }
    }
    if (!rc)
        f->parent_only = true;
    ms_mutex_unlock(&s->lock);
    return rc;
}

/*
 * user.mail.uid: the message gets uid when no other message of its folder
 * has it (a restore into an empty folder), else keeps its own; under the
 * uidlist lock, the list kept in UID order.
 */
static int md_message_uid_set(ms_store *st, int64_t message, int64_t uid)
{
    md_store *s = md_of(st);
    if (uid < 1 || uid > UINT32_MAX)
        return -EINVAL;
    ms_mutex_lock(&s->lock);
    md_msg *m = md_by_id(s, MS_MESSAGE, message);
    int rc = !m ? -ENOENT : md_refuse(s, m->f->mb);
    if (!rc && m->pending) {
        m->puid = (uint32_t)uid; /* for its first commit */
        ms_mutex_unlock(&s->lock);
        return 0;
    }
    md_folder *f = m ? m->f : NULL;
    md_uidlist *ul = NULL;
    md_lock *lk = NULL;
    if (!rc)
        rc = md_uids_begin(s, f, &ul, &lk);
    if (rc) {
        ms_mutex_unlock(&s->lock);
        return rc;
    }
    bool write = false;
    uint32_t have = md_uidlist_uid(ul, m->base, strlen(m->base));
    if (have != (uint32_t)uid && !md_uid_taken(ul, (uint32_t)uid)) {
        /* The UID it had was the last one given (a restore's file just
         * written): given back, so a restore ends with the UIDNEXT it
         * states, not one past every file it wrote. */
        uint32_t next = have && have + 1 == ul->next_uid ? have : ul->next_uid;
        md_uidlist_remove(ul, m->base, strlen(m->base));
        ul->next_uid = next;
        rc = md_uidlist_put(&ul, m->base, (uint32_t)uid, m->base);
        write = rc == 0;
    }
    int e = md_uids_end(s, f, ul, lk, write);
    if (!rc)
        rc = e;
    if (!rc && (write || have == (uint32_t)uid)) {
        if (m->uid != (uint32_t)uid)
            m->uid_ns = ms_now_ns();
        m->uid = (uint32_t)uid;
        m->uid_pinned = true;
    }
    ms_mutex_unlock(&s->lock);
    return rc;
}

const ms_admin_ops md_admin_ops = {
    .stats = md_stats,
    /* compact: none; a Maildir gives space back as files go (ENOTSUP,
     * which mailfsctl reports as nothing to do). */
    .sync = md_sync,
    .batch_begin = md_batch_begin,
    .batch_end = md_batch_end,
    .mailbox_create = md_mailbox_create,
    .mailbox_find = md_mailbox_find,
    .mailbox_info = md_mailbox_info,
    .mailbox_scan = md_mailbox_scan,
    .mailbox_set = md_mailbox_set,
    .mailbox_drop = md_mailbox_drop,
    .mailbox_size = md_mailbox_size,
    .message_meta = md_message_meta,
    .folder_uids_get = md_folder_uids_get,
    .folder_uids_set = md_folder_uids_set,
    .mailbox_stamp = md_mailbox_stamp,
    .mailbox_modseq = md_mailbox_modseq,
    .message_link = md_message_link,
    .folder_unselect = md_folder_unselect,
    .message_uid_set = md_message_uid_set,
};
