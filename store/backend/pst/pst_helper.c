/*
 * pst_helper.c — mailfs-pst, the process that reads one PST or OST file
 * for the pst backend (pst.c).
 *
 * libpst trusts the file it reads: a damaged one can make it crash, and
 * it keeps global conversion state.  So it runs here, in a process of its
 * own reading one file at a time, and never in the daemon: if a file kills this
 * process, the daemon loses one mailbox (EIO, one log line), not the
 * mount.
 *
 * Protocol (pst_proto.h): on start, one record OPEN_OK or OPEN_FAILED.
 * Then for each request (the 8-byte d_id of a folder, 0 for the top of the
 * folder tree) the folder's children in libpst's order, FOLDER and ITEM
 * records with WARN records among them, and DONE.  A PP_REQ_OPEN request
 * closes the file and opens the next one named in it (one process serves
 * the files of an import in turn), answered as at start; PP_REQ_COUNT is
 * answered by one PP_COUNT record.  Exits at end of
 * input, and after OPEN_FAILED.
 */
#include "mailstore.h"
#include "pst_int.h"
#include "pst_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

/* One record: type, 4-byte length, payload (two pieces, either may be empty). */
static void put(char type, const void *a, size_t alen, const void *b, size_t blen)
{
    uint32_t len = (uint32_t)(alen + blen);
    if (pp_io(1, &type, 1, true, 0) || pp_io(1, &len, 4, true, 0) ||
        pp_io(1, (void *)a, alen, true, 0) || pp_io(1, (void *)b, blen, true, 0))
        exit(1); /* the daemon went away */
}

/* Warnings go to the daemon, which logs them as its own. */
void ms_log(int prio, const char *fmt, ...)
{
    if (prio > LOG_WARNING)
        return;
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *line = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    put(PP_WARN, line, strlen(line), NULL, 0);
}

static void index_tree(GHashTable *by_id, pst_desc_tree *d)
{
    for (; d; d = d->next) {
        g_hash_table_insert(by_id, &d->d_id, d);
        if (d->child)
            index_tree(by_id, d->child);
    }
}

/* The descriptors below d that have none below them: items, and empty
 * folders (an upper count of the items, from the index alone). */
static uint64_t count_leaves(const pst_desc_tree *d)
{
    uint64_t n = 0;
    for (const pst_desc_tree *c = d ? d->child : NULL; c; c = c->next)
        n += c->child ? count_leaves(c) : c->desc != NULL;
    return n;
}

/* PP_DATA records of up to chunk bytes, from pieces of any size. */
typedef struct chunker {
    char *buf;
    size_t len, chunk;
} chunker;

static void chunk_flush(chunker *k)
{
    if (k->len)
        put(PP_DATA, k->buf, k->len, NULL, 0);
    k->len = 0;
}

static void chunk_emit(void *ctx, const void *data, size_t len)
{
    chunker *k = ctx;
    const char *p = data;
    while (len) {
        size_t n = MIN(len, k->chunk - k->len);
        memcpy(k->buf + k->len, p, n);
        k->len += n;
        p += n;
        len -= n;
        if (k->len == k->chunk)
            chunk_flush(k);
    }
}

/*
 * Sends a rendered item: its header with the size, then its bytes, the
 * streamed attachments' base64 text read from the file at their places.
 * An attachment that reads back other than it did when counted would
 * break the size promised: the helper says so and exits (the mailbox
 * then fails, nothing wrong is shown).
 */
static void send_item(pst_file *pf, pst_item *it, pr_class cls, GByteArray *bytes,
                      const pr_streaming *st, size_t chunk)
{
    pp_item h;
    memset(&h, 0, sizeof h); /* padding too: it goes down the pipe */
    h.cls = (uint8_t)cls;
    h.mtime_ns = pr_item_time_ns(it);
    g_strlcpy(h.flags, pr_item_flags(it), sizeof h.flags);
    h.size = bytes->len;
    for (guint i = 0; i < st->parts->len; i++)
        h.size += pr_base64_len(g_array_index(st->parts, pr_stream, i).raw);
    put(PP_ITEM, &h, sizeof h, NULL, 0);
    chunker k = {g_malloc(chunk), 0, chunk};
    size_t off = 0;
    for (guint i = 0; i < st->parts->len; i++) {
        const pr_stream *s = &g_array_index(st->parts, pr_stream, i);
        chunk_emit(&k, bytes->data + off, s->at - off);
        off = s->at;
        if (pr_stream_attachment(pf, s, chunk_emit, &k)) {
            ms_log(LOG_WARNING, "%s: an attachment read back differently: stopped", pf->fname);
            exit(1);
        }
    }
    chunk_emit(&k, bytes->data + off, bytes->len - off);
    chunk_flush(&k);
    g_free(k.buf);
}

/* Sends the children of folder d, items in pieces of chunk bytes; big
 * attachments streamed (from stream_min bytes). */
static void send_folder(pst_file *pf, pst_desc_tree *d, const char *stem, size_t chunk,
                        uint64_t stream_min)
{
    for (pst_desc_tree *c = d ? d->child : NULL; c; c = c->next) {
        if (!c->desc)
            continue;
        pst_item *it = pst_parse_item(pf, c, NULL);
        if (!it) {
            ms_log(LOG_WARNING, "%s: an item cannot be parsed (libpst): left out", pf->fname);
            continue;
        }
        /* libpst flags a folder by its content count; folders written
         * without one (localized default folders, Recoverable Items) are
         * known by their children or their container class. */
        if (it->folder || c->child ||
            (it->ascii_type && g_str_has_prefix(it->ascii_type, "IPF."))) {
            pst_convert_utf8_null(it, &it->file_as);
            pp_folder f;
            memset(&f, 0, sizeof f); /* padding too: it goes down the pipe */
            f.d_id = c->d_id;
            f.has_children = c->child != NULL;
            const char *name = it->file_as.str ? it->file_as.str : "";
            put(PP_FOLDER, &f, sizeof f, name, strlen(name));
        } else {
            pr_class cls = pr_classify(it);
            if (cls == PR_SKIP) {
                if (!(it->flags & PST_FLAG_ASSOCIATED))
                    ms_log(LOG_WARNING, "%s: an item of class %s (type %d) is not shown", pf->fname,
                           it->ascii_type ? it->ascii_type : "?", it->type);
            } else {
                g_autofree char *salt =
                    g_strdup_printf("%s.%llx", stem, (unsigned long long)it->block_id);
                /* Boundaries and identifiers are made from it: safe ASCII. */
                g_strcanon(salt, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-",
                           '_');
                GByteArray *bytes = g_byte_array_new();
                pr_streaming st = {stream_min, g_array_new(FALSE, FALSE, sizeof(pr_stream))};
                char *why = NULL;
                if (pr_render(pf, it, cls, salt, bytes, &st, &why) == 0) {
                    send_item(pf, it, cls, bytes, &st, chunk);
                } else {
                    ms_log(LOG_WARNING, "%s: an item cannot be rendered: %s; left out", pf->fname,
                           why ? why : "?");
                }
                g_free(why);
                g_array_free(st.parts, TRUE);
                g_byte_array_free(bytes, TRUE);
            }
        }
        pst_freeItem(it);
    }
    put(PP_DONE, NULL, 0, NULL, 0);
}

/* The file being read, and what libpst loaded of it. */
typedef struct open_file {
    pst_file pf;
    pst_item *root;
    pst_desc_tree *top;
    GHashTable *by_id; /* d_id -> pst_desc_tree */
    char *stem;
    bool open;
} open_file;

static void close_file(open_file *f)
{
    if (!f->open)
        return;
    g_hash_table_destroy(f->by_id);
    pst_freeItem(f->root);
    pst_close(&f->pf);
    g_free(f->stem);
    memset(f, 0, sizeof *f);
}

/* Opens path and loads its index: NULL, or why not (static text). */
static const char *open_file_at(open_file *f, const char *path, const char *stem)
{
    memset(f, 0, sizeof *f);
    if (access(path, R_OK) < 0)
        return g_strerror(errno);
    if (pst_open(&f->pf, path, NULL) < 0) {
        /* libpst closes the file but keeps what it allocated first */
        free(f->pf.cwd);
        free(f->pf.fname);
        return "not a PST file, or unreadable (libpst cannot open it)";
    }
    const char *why = NULL;
    if (pst_load_index(&f->pf) < 0)
        why = "its index is damaged (libpst cannot load it)";
    if (!why) {
        pst_load_extended_attributes(&f->pf);
        f->root = f->pf.d_head ? pst_parse_item(&f->pf, f->pf.d_head, NULL) : NULL;
        if (!f->root)
            why = "it has no root record (damaged, or not written by Outlook)";
    }
    if (!why && !(f->top = pst_getTopOfFolders(&f->pf, f->root)))
        why = "it has no top of folders";
    if (why) {
        if (f->root)
            pst_freeItem(f->root);
        pst_close(&f->pf);
        return why;
    }
    f->by_id = g_hash_table_new(g_int64_hash, g_int64_equal);
    index_tree(f->by_id, f->pf.d_head);
    f->stem = g_strdup(stem);
    f->open = true;
    return NULL;
}

/* All of len bytes of the next request; false at end of input. */
static bool read_request(void *buf, size_t len) { return pp_io(0, buf, len, false, 0) == 0; }

/* The path and stem of an open request, each a 4-byte length and bytes
 * (g_free both); false when the daemon sent something else or left. */
static bool read_open_request(char **path, char **stem)
{
    char **out[] = {path, stem};
    for (int i = 0; i < 2; i++) {
        uint32_t len;
        if (!read_request(&len, sizeof len) || len == 0 || len > PP_PATH_MAX)
            return false;
        *out[i] = g_malloc0(len + 1);
        if (!read_request(*out[i], len))
            return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: mailfs-pst FILE STEM (run by mailfs, speaks on stdin/stdout)\n");
        return 2;
    }
    /* Test-only: small pieces make every item take the many-piece path. */
    const char *c = getenv("MAILFS_PST_CHUNK");
    size_t chunk = c && atol(c) > 0 && atol(c) <= PP_CHUNK ? (size_t)atol(c) : PP_CHUNK;
    /* Every attachment stored in more than one block (over 8 KiB) is
     * streamed, never whole in memory: counting its bytes first costs a
     * second read of it, which measured nothing on the test data.
     * Test-only: a floor, so the in-memory path can be compared. */
    const char *sm = getenv("MAILFS_PST_STREAM_MIN");
    uint64_t stream_min = sm && atoll(sm) > 0 ? (uint64_t)atoll(sm) : 1;
    open_file f;
    const char *why = open_file_at(&f, argv[1], argv[2]);
    /* A file that cannot be opened ends the helper: what libpst left
     * behind after a failure is not trusted with the next file. */
    if (why) {
        put(PP_OPEN_FAILED, why, strlen(why), NULL, 0);
        return 0;
    }
    put(PP_OPEN_OK, NULL, 0, NULL, 0);
    uint64_t want;
    while (read_request(&want, sizeof want)) {
        if (want == PP_REQ_OPEN) {
            char *path = NULL, *stem = NULL;
            bool got = read_open_request(&path, &stem);
            close_file(&f);
            why = got ? open_file_at(&f, path, stem) : "bad open request";
            g_free(path);
            g_free(stem);
            if (why) {
                put(PP_OPEN_FAILED, why, strlen(why), NULL, 0);
                return 0;
            }
            put(PP_OPEN_OK, NULL, 0, NULL, 0);
            continue;
        }
        if (want == PP_REQ_COUNT) {
            uint64_t n = count_leaves(f.top);
            put(PP_COUNT, &n, sizeof n, NULL, 0);
            continue;
        }
        pst_desc_tree *d = want ? g_hash_table_lookup(f.by_id, &want) : f.top;
        send_folder(&f.pf, d, f.stem, chunk, stream_min);
    }
    close_file(&f); /* the daemon is done with this helper */
    return 0;
}
