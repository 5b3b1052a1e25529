/*
 * pst_helper.c — mailfs-pst, the process that reads one PST or OST file
 * for the pst backend (pst.c).
 *
 * libpst trusts the file it reads: a damaged one can make it crash, and
 * it keeps global conversion state.  So it runs here, in a process of its
 * own per open file, and never in the daemon: if a file kills this
 * process, the daemon loses one mailbox (EIO, one log line), not the
 * mount.
 *
 * Protocol (pst_proto.h): on start, one record OPEN_OK or OPEN_FAILED.
 * Then for each request (the 8-byte d_id of a folder, 0 for the top of the
 * folder tree) the folder's children in libpst's order, FOLDER and ITEM
 * records with WARN records among them, and DONE.  Exits at end of input.
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

/* Sends the children of folder d, items in pieces of chunk bytes. */
static void send_folder(pst_file *pf, pst_desc_tree *d, const char *stem, size_t chunk)
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
                char *why = NULL;
                if (pr_render(pf, it, cls, salt, bytes, &why) == 0) {
                    pp_item h;
                    memset(&h, 0, sizeof h);
                    h.cls = (uint8_t)cls;
                    h.mtime_ns = pr_item_time_ns(it);
                    g_strlcpy(h.flags, pr_item_flags(it), sizeof h.flags);
                    h.size = bytes->len;
                    put(PP_ITEM, &h, sizeof h, NULL, 0);
                    for (size_t off = 0; off < bytes->len; off += chunk)
                        put(PP_DATA, bytes->data + off, MIN(chunk, bytes->len - off), NULL, 0);
                } else {
                    ms_log(LOG_WARNING, "%s: an item cannot be rendered: %s; left out", pf->fname,
                           why ? why : "?");
                }
                g_free(why);
                g_byte_array_free(bytes, TRUE);
            }
        }
        pst_freeItem(it);
    }
    put(PP_DONE, NULL, 0, NULL, 0);
}

static int fail(const char *why)
{
    put(PP_OPEN_FAILED, why, strlen(why), NULL, 0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: mailfs-pst FILE STEM (run by mailfs, speaks on stdin/stdout)\n");
        return 2;
    }
    const char *path = argv[1], *stem = argv[2];
    /* Test-only: small pieces make every item take the many-piece path. */
    const char *c = getenv("MAILFS_PST_CHUNK");
    size_t chunk = c && atol(c) > 0 && atol(c) <= PP_CHUNK ? (size_t)atol(c) : PP_CHUNK;
    if (access(path, R_OK) < 0)
        return fail(g_strerror(errno));
    pst_file pf;
    if (pst_open(&pf, path, NULL) < 0) {
        /* libpst closes the file but keeps what it allocated first */
        free(pf.cwd);
        free(pf.fname);
        return fail("not a PST file, or unreadable (libpst cannot open it)");
    }
    const char *why = NULL;
    pst_item *root = NULL;
    pst_desc_tree *top = NULL;
    if (pst_load_index(&pf) < 0)
        why = "its index is damaged (libpst cannot load it)";
    if (!why) {
        pst_load_extended_attributes(&pf);
        root = pf.d_head ? pst_parse_item(&pf, pf.d_head, NULL) : NULL;
        if (!root)
            why = "it has no root record (damaged, or not written by Outlook)";
    }
    if (!why && !(top = pst_getTopOfFolders(&pf, root)))
        why = "it has no top of folders";
    if (why) {
        if (root)
            pst_freeItem(root);
        pst_close(&pf);
        return fail(why);
    }
    GHashTable *by_id = g_hash_table_new(g_int64_hash, g_int64_equal);
    index_tree(by_id, pf.d_head);
    put(PP_OPEN_OK, NULL, 0, NULL, 0);
    uint64_t want;
    for (;;) {
        size_t got = 0;
        while (got < sizeof want) {
            ssize_t n = read(0, (char *)&want + got, sizeof want - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                goto out; /* the daemon is done with this file */
            got += (size_t)n;
        }
        pst_desc_tree *d = want ? g_hash_table_lookup(by_id, &want) : top;
        send_folder(&pf, d, stem, chunk);
    }
out:
    g_hash_table_destroy(by_id);
    pst_freeItem(root);
    pst_close(&pf);
    return 0;
}
