/*
 * conformance.c — what every store backend must do, tested through the
 * public store API (mailstore.h) only.
 *
 *   conformance BACKEND [DATA]
 *
 * runs the suite against one backend fixture of BACKENDS[] below.  A
 * writable backend runs every test; a read-only one (pst, or a sqlite store
 * opened read-only) runs the read-only part, where every write must be
 * refused with the one read-only errno, EROFS.  A new backend (maildir) is
 * one entry in BACKENDS[]: a function that writes its [store] group and
 * whatever files it needs into a fresh folder.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "mailstore.h"

/* ------------------------------------------------------------ fixtures */

/*
 * One backend under test.  make() gets a fresh folder and the command
 * line's DATA argument; it writes there whatever the store needs and
 * returns (g_malloc'd) the body of its [store s] group, e.g. "path = s.db\n".
 * prepare() (may be NULL) runs on the store opened with MS_OPEN_CREATE
 * before the tests reopen it with open_flags: a read-only fixture fills
 * its store there.
 */
typedef struct backend_def {
    const char *name;
    bool writable;
    char *(*make)(const char *dir, const char *data);
    void (*prepare)(ms_store *st);
    int open_flags;
    /* Names the store's own format cannot hold are refused (EINVAL):
     * a Maildir's folder names are modified UTF-7 with '.' as the
     * maildir++ separator, and a mailbox is a directory, so not ".x". */
    bool limited_names;
    /* Flags come back in the store's order (Maildir info letters), not
     * in the order they were set: compared as sets. */
    bool flags_unordered;
} backend_def;

static const ms_node ROOT = {MS_ROOT, 0};

static char *sqlite_make(const char *dir, const char *data)
{
    (void)dir, (void)data;
    return g_strdup("path = s.db\n");
}

/* A maildir store: a folder of Maildirs, made by MS_OPEN_CREATE. */
static char *maildir_make(const char *dir, const char *data)
{
    (void)dir, (void)data;
    return g_strdup("backend = maildir\npath = md\n");
}

static char *maildir_fs_make(const char *dir, const char *data)
{
    (void)dir, (void)data;
    return g_strdup("backend = maildir\npath = md\nlayout = fs\n");
}

/* The pst backend reads a folder of .pst files: a copy of one of them. */
static char *pst_make(const char *dir, const char *data)
{
    if (!data || !*data) {
        fprintf(stderr, "conformance pst: no .pst file given (test data not found)\n");
        return NULL;
    }
    g_autofree char *bytes = NULL;
    gsize len = 0;
    if (!g_file_get_contents(data, &bytes, &len, NULL)) {
        fprintf(stderr, "conformance pst: cannot read %s\n", data);
        return NULL;
    }
    g_autofree char *folder = g_build_filename(dir, "pst", NULL);
    g_autofree char *base = g_path_get_basename(data);
    g_autofree char *copy = g_build_filename(folder, base, NULL);
    if (g_mkdir(folder, 0700) || !g_file_set_contents(copy, bytes, (gssize)len, NULL))
        return NULL;
    return g_strdup("backend = pst\npath = pst\n");
}

static void put_bytes(ms_store *st, ms_node folder, const char *name, const char *data);

/* A read-only sqlite store holding kim/INBOX/m, made while it was writable. */
static void sqlite_ro_prepare(ms_store *st)
{
    ms_attr mb, inbox;
    assert_int_equal(ms_mkdir(st, ROOT, "kim", 0700, 0, 0, &mb), 0);
    assert_int_equal(ms_mkdir(st, mb.node, "INBOX", 0700, 0, 0, &inbox), 0);
    put_bytes(st, inbox.node, "m", "Subject: read-only\r\n\r\nbody\r\n");
}

static const backend_def BACKENDS[] = {
    {"sqlite", true, sqlite_make, NULL, 0, false, false},
    {"maildir", true, maildir_make, NULL, 0, true, true},
    {"maildir-fs", true, maildir_fs_make, NULL, 0, true, true},
    {"sqlite-readonly", false, sqlite_make, sqlite_ro_prepare, MS_OPEN_READONLY, false, false},
    {"pst", false, pst_make, NULL, 0, false, false},
};

static const backend_def *backend;
static const char *backend_data;

typedef struct fixture {
    char *dir;
    ms_config *cfg;
    ms_store *st;
} fixture;

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);
    f->dir = g_dir_make_tmp("mailfs-conformance-XXXXXX", NULL);
    assert_non_null(f->dir);
    g_autofree char *group = backend->make(f->dir, backend_data);
    assert_non_null(group);
    g_autofree char *conf = g_build_filename(f->dir, "site.conf", NULL);
    g_autofree char *text = g_strdup_printf("[mailfs]\nretain-days = 3\n[store s]\n%s", group);
    assert_true(g_file_set_contents(conf, text, -1, NULL));
    char *err = NULL;
    assert_int_equal(ms_config_load(conf, &f->cfg, &err), 0);
    const ms_store_conf *sc = ms_config_find_store(f->cfg, "s");
    if (backend->prepare) {
        ms_store *st;
        assert_int_equal(ms_store_open(sc, MS_OPEN_CREATE, &st, &err), 0);
        backend->prepare(st);
        ms_store_close(st);
    }
    int flags = backend->prepare ? backend->open_flags : MS_OPEN_CREATE | backend->open_flags;
    int rc = ms_store_open(sc, flags, &f->st, &err);
    if (rc)
        fprintf(stderr, "%s\n", err ? err : "open failed");
    assert_int_equal(rc, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms_store_close(f->st);
    ms_config_free(f->cfg);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    g_free(f->dir);
    g_free(f);
    return 0;
}

/* ------------------------------------------------------------- helpers */

/* Short names for the calls the tests make most. */
static int unlink_msg(ms_store *st, ms_node folder, const char *name)
{
    return ms_unlink(st, folder, name);
}
static int rename_node(ms_store *st, ms_node p, const char *n, ms_node np, const char *nn,
                       bool noreplace)
{
    return ms_rename(st, p, n, np, nn, noreplace);
}
static int commit(ms_writer *w, ms_attr *out) { return ms_writer_commit(w, false, out); }

/* The name a hidden mailbox of a move gets: the store's own scheme. */
static char *hidden_name(ms_mb_state state, int64_t move, const char *name)
{
    return ms_hidden_name(state, move, name);
}

static ms_node mkdir_ok(ms_store *st, ms_node parent, const char *name)
{
    ms_attr a;
    assert_int_equal(ms_mkdir(st, parent, name, 0750, 0, 0, &a), 0);
    return a.node;
}

static void put_bytes(ms_store *st, ms_node folder, const char *name, const char *data)
{
    ms_attr a;
    ms_writer *w;
    size_t len = strlen(data);
    assert_int_equal(ms_message_create(st, folder, name, 0640, 0, 0, &a), 0);
    assert_int_equal(ms_writer_open(st, a.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, data, len, 0), (ssize_t)len);
    assert_int_equal(commit(w, NULL), 0);
    ms_writer_close(w);
}

static ms_node put(ms_store *st, ms_node folder, const char *name, const char *data)
{
    put_bytes(st, folder, name, data);
    ms_attr a;
    assert_int_equal(ms_lookup(st, folder, name, &a), 0);
    return a.node;
}

/* The whole message through a reader, in pieces of 1000 bytes. */
static GByteArray *read_whole(ms_reader *r)
{
    GByteArray *b = g_byte_array_new();
    char buf[1000];
    for (int64_t off = 0;;) {
        ssize_t n = ms_reader_pread(r, buf, sizeof buf, off);
        assert_true(n >= 0);
        if (n == 0)
            break;
        g_byte_array_append(b, (guint8 *)buf, (guint)n);
        off += n;
    }
    assert_int_equal(b->len, ms_reader_size(r));
    return b;
}

static void assert_reads(ms_store *st, int64_t message, const char *want)
{
    ms_reader *r;
    assert_int_equal(ms_reader_open(st, message, &r), 0);
    GByteArray *b = read_whole(r);
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(b->data, want, b->len);
    g_byte_array_free(b, TRUE);
    ms_reader_close(r);
}

typedef struct child {
    char *name;
    ms_attr attr;
} child;

static int collect(void *ctx, const char *name, const ms_attr *attr, uint64_t cookie)
{
    (void)cookie;
    child c = {g_strdup(name), *attr};
    g_array_append_val((GArray *)ctx, c);
    return 0;
}

static void clear_child(void *p) { g_free(((child *)p)->name); }

/* The children of parent (free with g_array_unref). */
static GArray *children(ms_store *st, ms_node parent)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(child));
    g_array_set_clear_func(a, clear_child);
    assert_int_equal(ms_list(st, parent, 0, collect, a), 0);
    return a;
}

static bool listed(ms_store *st, ms_node parent, const char *name)
{
    GArray *a = children(st, parent);
    bool found = false;
    for (guint i = 0; i < a->len; i++)
        found |= !strcmp(g_array_index(a, child, i).name, name);
    g_array_unref(a);
    return found;
}

/* The first message found depth-first under node, and its folder. */
static bool find_message(ms_store *st, ms_node node, ms_node *folder, char **name, ms_attr *msg)
{
    GArray *a = children(st, node);
    bool found = false;
    for (guint i = 0; i < a->len && !found; i++) {
        child *c = &g_array_index(a, child, i);
        if (c->attr.node.kind == MS_MESSAGE) {
            *folder = node;
            *name = g_strdup(c->name);
            *msg = c->attr;
            found = true;
        }
    }
    for (guint i = 0; i < a->len && !found; i++) {
        child *c = &g_array_index(a, child, i);
        if (c->attr.node.kind != MS_MESSAGE)
            found = find_message(st, c->attr.node, folder, name, msg);
    }
    g_array_unref(a);
    return found;
}

static char *repeat(char c, size_t n)
{
    char *s = g_malloc(n + 1);
    memset(s, c, n);
    s[n] = 0;
    return s;
}

/* ------------------------------------------------------ change sequences */

/*
 * The modseq test's tree: mailbox "seq" with folders Work (messages a, b
 * and n) and Other (message c).  b and Other are the controls: no step
 * but the last touches them.
 */
typedef struct seqtree {
    ms_node mb, work, other;
} seqtree;

static uint64_t modseq_node(ms_store *st, ms_node n)
{
    ms_attr a;
    assert_int_equal(ms_getattr(st, n, &a), 0);
    return a.modseq;
}

static uint64_t modseq_named(ms_store *st, ms_node parent, const char *name)
{
    ms_attr a;
    assert_int_equal(ms_lookup(st, parent, name, &a), 0);
    return a.modseq;
}

/* The modseq of name as listing parent shows it: the engine's view. */
static uint64_t modseq_listed(ms_store *st, ms_node parent, const char *name)
{
    GArray *a = children(st, parent);
    uint64_t v = 0;
    bool found = false;
    for (guint i = 0; i < a->len; i++) {
        child *c = &g_array_index(a, child, i);
        if (!strcmp(c->name, name)) {
            v = c->attr.modseq;
            found = true;
        }
    }
    g_array_unref(a);
    assert_true(found);
    return v;
}

/* The sqlite store counts exactly; a maildir store's clocks give false
 * positives for the second before the floor (ms_mailbox_modseq). */
static bool modseq_exact(void) { return !strcmp(backend->name, "sqlite"); }

typedef struct seqctl {
    uint64_t floor, b, other, c;
} seqctl;

/* Takes the floor and the controls' values before one change. */
static seqctl seq_begin(ms_store *st, const seqtree *t)
{
    seqctl k;
    assert_int_equal(ms_mailbox_modseq(st, t->mb.id, &k.floor), 0);
    assert_true(k.floor > 0);
    k.b = modseq_named(st, t->work, "b");
    k.other = modseq_node(st, t->other);
    k.c = modseq_named(st, t->other, "c");
    return k;
}

/* After a change made in Work (or below it): the controls kept their
 * values, below the floor where the count is exact. */
static void seq_untouched(ms_store *st, const seqtree *t, const seqctl *k, bool other_too)
{
    assert_int_equal(modseq_named(st, t->work, "b"), k->b);
    assert_int_equal(modseq_named(st, t->other, "c"), k->c);
    if (other_too)
        assert_int_equal(modseq_node(st, t->other), k->other);
    if (modseq_exact()) {
        assert_true(k->b < k->floor);
        assert_true(k->c < k->floor);
        assert_true(modseq_node(st, t->other) < k->floor);
    }
}

/* name in parent (and parent in grand, listed as pname) moved to floor. */
static void seq_moved(ms_store *st, ms_node grand, const char *pname, ms_node parent,
                      const char *name, uint64_t floor)
{
    if (name) {
        assert_true(modseq_named(st, parent, name) >= floor);
        assert_true(modseq_listed(st, parent, name) >= floor);
    }
    assert_true(modseq_node(st, parent) >= floor);
    assert_true(modseq_listed(st, grand, pname) >= floor);
}

static void rewrite(ms_store *st, ms_node folder, const char *name, const char *data)
{
    ms_attr a;
    ms_writer *w;
    assert_int_equal(ms_lookup(st, folder, name, &a), 0);
    assert_int_equal(ms_writer_open(st, a.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, data, strlen(data), 0), (ssize_t)strlen(data));
    assert_int_equal(commit(w, NULL), 0);
    ms_writer_close(w);
}

/*
 * Every kind of change moves the modseq of what it changed and of its
 * parent to at least the floor taken before it (ms_mailbox_modseq), and
 * leaves the nodes it did not touch as they were: a delta pass of a
 * move re-reads only what is at or above the floor.
 */
static void test_modseq(void **state)
{
    fixture *f = *state;
    ms_store *st = f->st;
    seqtree t;
    t.mb = mkdir_ok(st, ROOT, "seq");
    t.work = mkdir_ok(st, t.mb, "Work");
    t.other = mkdir_ok(st, t.mb, "Other");
    put_bytes(st, t.work, "a", "Subject: a\r\n\r\na\r\n");
    put_bytes(st, t.work, "b", "Subject: b\r\n\r\nb\r\n");
    put_bytes(st, t.other, "c", "Subject: c\r\n\r\nc\r\n");
    uint64_t none;
    assert_int_equal(ms_mailbox_modseq(st, 987654, &none), -ENOENT);
    seqctl k;
    ms_attr a;

    /* A new message. */
    k = seq_begin(st, &t);
    put_bytes(st, t.work, "n", "Subject: n\r\n\r\nn\r\n");
    seq_moved(st, t.mb, "Work", t.work, "n", k.floor);
    seq_untouched(st, &t, &k, true);

    /* Its flags. */
    k = seq_begin(st, &t);
    assert_int_equal(ms_lookup(st, t.work, "a", &a), 0);
    assert_int_equal(ms_xattr_set(st, a.node, "user.mail.flags", "\\Seen", 5, 0), 0);
    seq_moved(st, t.mb, "Work", t.work, "a", k.floor);
    seq_untouched(st, &t, &k, true);

    /* Its mode, then its date. */
    k = seq_begin(st, &t);
    assert_int_equal(ms_lookup(st, t.work, "a", &a), 0);
    ms_setattr_req req = {.mask = MS_SET_MODE, .mode = 0600};
    assert_int_equal(ms_setattr(st, a.node, &req, NULL), 0);
    seq_moved(st, t.mb, "Work", t.work, "a", k.floor);
    seq_untouched(st, &t, &k, true);
    k = seq_begin(st, &t);
    req = (ms_setattr_req){.mask = MS_SET_MTIME, .mtime_ns = 1500000000LL * 1000000000LL};
    assert_int_equal(ms_setattr(st, a.node, &req, NULL), 0);
    seq_moved(st, t.mb, "Work", t.work, "a", k.floor);
    seq_untouched(st, &t, &k, true);

    /* Its bytes. */
    k = seq_begin(st, &t);
    rewrite(st, t.work, "a", "Subject: a again\r\n\r\na\r\n");
    seq_moved(st, t.mb, "Work", t.work, "a", k.floor);
    seq_untouched(st, &t, &k, true);

    /* Its UID. */
    k = seq_begin(st, &t);
    assert_int_equal(ms_lookup(st, t.work, "a", &a), 0);
    assert_int_equal(ms_xattr_set(st, a.node, "user.mail.uid", "77", 2, 0), 0);
    assert_int_equal(modseq_named(st, t.work, "a") >= k.floor, true);
    seq_moved(st, t.mb, "Work", t.work, "a", k.floor);
    seq_untouched(st, &t, &k, true);

    /* Its name. */
    k = seq_begin(st, &t);
    assert_int_equal(rename_node(st, t.work, "a", t.work, "a2", false), 0);
    seq_moved(st, t.mb, "Work", t.work, "a2", k.floor);
    seq_untouched(st, &t, &k, true);

    /* Deleted (a backend with deleted items keeps it hidden). */
    k = seq_begin(st, &t);
    assert_int_equal(unlink_msg(st, t.work, "n"), 0);
    seq_moved(st, t.mb, "Work", t.work, NULL, k.floor);
    seq_untouched(st, &t, &k, true);

    /* A subfolder: made, given a special-use, a mode, UIDs, renamed,
     * removed; each moves it and its parent.  A maildir++ subfolder
     * lives in the mailbox root, which every folder's modseq reads:
     * there Other moves too (a false positive). */
    bool fs_like = strcmp(backend->name, "maildir") != 0;
    k = seq_begin(st, &t);
    ms_node sub = mkdir_ok(st, t.work, "Sub");
    seq_moved(st, t.mb, "Work", t.work, "Sub", k.floor);
    seq_untouched(st, &t, &k, fs_like);
    k = seq_begin(st, &t);
    assert_int_equal(ms_xattr_set(st, sub, "user.mail.special-use", "\\Archive", 8, 0), 0);
    seq_moved(st, t.mb, "Work", t.work, "Sub", k.floor);
    seq_untouched(st, &t, &k, fs_like);
    k = seq_begin(st, &t);
    req = (ms_setattr_req){.mask = MS_SET_MODE, .mode = 0700};
    assert_int_equal(ms_setattr(st, sub, &req, NULL), 0);
    seq_moved(st, t.mb, "Work", t.work, "Sub", k.floor);
    seq_untouched(st, &t, &k, fs_like);
    k = seq_begin(st, &t);
    assert_int_equal(ms_folder_uids_set(st, sub, &(ms_folder_uids){4242, 9}), 0);
    seq_moved(st, t.mb, "Work", t.work, "Sub", k.floor);
    seq_untouched(st, &t, &k, fs_like);
    k = seq_begin(st, &t);
    assert_int_equal(rename_node(st, t.work, "Sub", t.work, "Sub2", false), 0);
    seq_moved(st, t.mb, "Work", t.work, "Sub2", k.floor);
    seq_untouched(st, &t, &k, fs_like);
    k = seq_begin(st, &t);
    assert_int_equal(ms_rmdir(st, t.work, "Sub2"), 0);
    seq_moved(st, t.mb, "Work", t.work, NULL, k.floor);
    seq_untouched(st, &t, &k, fs_like);

    /* The mailbox node: a top-level folder made, its ACL. */
    k = seq_begin(st, &t);
    mkdir_ok(st, t.mb, "Top");
    assert_true(modseq_node(st, t.mb) >= k.floor);
    assert_true(modseq_listed(st, ROOT, "seq") >= k.floor);
    assert_true(modseq_named(st, t.mb, "Top") >= k.floor);
    k = seq_begin(st, &t);
    assert_int_equal(ms_xattr_set(st, t.mb, "user.mail.acl", "bob lr", 6, 0), 0);
    assert_true(modseq_node(st, t.mb) >= k.floor);
    seq_untouched(st, &t, &k, fs_like);

    /* INBOX, which a maildir store keeps in the mailbox root beside much
     * that is not INBOX's: each of its own changes moves it. */
    ms_node inbox = mkdir_ok(st, t.mb, "INBOX");
    k = seq_begin(st, &t);
    put_bytes(st, inbox, "i", "Subject: i\r\n\r\ni\r\n");
    seq_moved(st, t.mb, "INBOX", inbox, "i", k.floor);
    k = seq_begin(st, &t);
    req = (ms_setattr_req){.mask = MS_SET_MODE, .mode = 0750};
    assert_int_equal(ms_setattr(st, inbox, &req, NULL), 0);
    seq_moved(st, t.mb, "INBOX", inbox, NULL, k.floor);
    k = seq_begin(st, &t);
    assert_int_equal(ms_xattr_set(st, inbox, "user.mail.special-use", "\\Junk", 5, 0), 0);
    seq_moved(st, t.mb, "INBOX", inbox, NULL, k.floor);
    k = seq_begin(st, &t);
    mkdir_ok(st, inbox, "Kid");
    seq_moved(st, t.mb, "INBOX", inbox, "Kid", k.floor);
    seq_untouched(st, &t, &k, fs_like);

    /* Last, the controls themselves: a message moved to another folder
     * moves both folders and itself. */
    k = seq_begin(st, &t);
    assert_int_equal(rename_node(st, t.work, "b", t.other, "b", false), 0);
    seq_moved(st, t.mb, "Other", t.other, "b", k.floor);
    seq_moved(st, t.mb, "Work", t.work, NULL, k.floor);
    assert_int_equal(modseq_named(st, t.other, "c"), k.c);
}

/* ------------------------------------------------------ writable tests */

static void test_names(void **state)
{
    fixture *f = *state;
    /* Any bytes but '/' and NUL: control characters, invalid UTF-8, spaces. */
    const char *odd[] = {"caf\xc3\xa9",
                         "\x01\x7f\xff\xfe",
                         " lead and trail ",
                         "a\\b\"c'd\n",
                         "...",
                         ".hidden",
                         "-"};
    for (size_t i = 0; i < G_N_ELEMENTS(odd); i++) {
        ms_attr a;
        int rc = ms_mkdir(f->st, ROOT, odd[i], 0750, 0, 0, &a);
        if (rc == -EINVAL && backend->limited_names && odd[i][0] == '.')
            continue;
        assert_int_equal(rc, 0);
        ms_node mb = a.node;
        const char *fname = odd[i];
        rc = ms_mkdir(f->st, mb, fname, 0750, 0, 0, &a);
        if (rc == -EINVAL && backend->limited_names) {
            fname = "f";
            rc = ms_mkdir(f->st, mb, fname, 0750, 0, 0, &a);
        }
        assert_int_equal(rc, 0);
        ms_node fo = a.node;
        ms_node m = put(f->st, fo, odd[i], odd[i]);
        assert_true(listed(f->st, ROOT, odd[i]));
        assert_true(listed(f->st, fo, odd[i]));
        assert_reads(f->st, m.id, odd[i]);
        assert_int_equal(ms_lookup(f->st, mb, fname, &a), 0);
        assert_int_equal(a.node.id, fo.id);
    }
    ms_node mb = mkdir_ok(f->st, ROOT, "names");
    ms_node fo = mkdir_ok(f->st, mb, "INBOX");
    ms_node m = put(f->st, fo, "m", "x");
    ms_attr a;
    const char *bad[] = {".", "..", "a/b", "/", ""};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        assert_int_equal(ms_mkdir(f->st, ROOT, bad[i], 0700, 0, 0, &a), -EINVAL);
        assert_int_equal(ms_mkdir(f->st, mb, bad[i], 0700, 0, 0, &a), -EINVAL);
        assert_int_equal(ms_message_create(f->st, fo, bad[i], 0600, 0, 0, &a), -EINVAL);
        assert_int_equal(rename_node(f->st, fo, "m", fo, bad[i], false), -EINVAL);
    }
    g_autofree char *n255 = repeat('n', MS_NAME_MAX);
    g_autofree char *n256 = repeat('n', MS_NAME_MAX + 1);
    assert_int_equal(ms_mkdir(f->st, ROOT, n256, 0700, 0, 0, &a), -ENAMETOOLONG);
    assert_int_equal(ms_mkdir(f->st, mb, n256, 0700, 0, 0, &a), -ENAMETOOLONG);
    assert_int_equal(ms_message_create(f->st, fo, n256, 0600, 0, 0, &a), -ENAMETOOLONG);
    assert_int_equal(rename_node(f->st, fo, "m", fo, n256, false), -ENAMETOOLONG);
    assert_int_equal(ms_lookup(f->st, fo, n256, &a), -ENAMETOOLONG);
    ms_node mb255 = mkdir_ok(f->st, ROOT, n255);
    if (backend->limited_names) {
        /* A Maildir folder or file name carries more than the tree name
         * (maildir++'s '.', a message's ":2," flags): refused up front. */
        int rc = ms_mkdir(f->st, mb255, n255, 0700, 0, 0, &a);
        assert_true(rc == 0 || rc == -ENAMETOOLONG);
        assert_int_equal(ms_message_create(f->st, fo, n255, 0600, 0, 0, &a), -ENAMETOOLONG);
        assert_int_equal(rename_node(f->st, fo, "m", fo, n255, false), -ENAMETOOLONG);
        return;
    }
    ms_node fo255 = mkdir_ok(f->st, mb255, n255);
    put(f->st, fo255, n255, "255");
    assert_int_equal(rename_node(f->st, fo, "m", fo, n255, false), 0);
    assert_int_equal(ms_lookup(f->st, fo, n255, &a), 0);
    assert_int_equal(a.node.id, m.id);
    /* A name is taken once per directory. */
    assert_int_equal(ms_mkdir(f->st, ROOT, "names", 0700, 0, 0, &a), -EEXIST);
    assert_int_equal(ms_message_create(f->st, fo, n255, 0600, 0, 0, &a), -EEXIST);
}

static void test_nested_folders(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->st, ROOT, "nest");
    ms_node n = mb;
    const char *path[] = {"INBOX", "2019", "q1", "jan", "week 1"};
    for (size_t i = 0; i < G_N_ELEMENTS(path); i++) {
        n = mkdir_ok(f->st, n, path[i]);
        ms_attr a;
        assert_int_equal(ms_getattr(f->st, n, &a), 0);
        assert_int_equal(a.node.kind, MS_FOLDER);
        assert_int_equal(a.mailbox, mb.id);
    }
    ms_node leaf;
    assert_int_equal(ms_resolve(f->st, "nest/INBOX/2019/q1/jan/week 1", &leaf), 0);
    assert_int_equal(leaf.id, n.id);
    assert_int_equal(ms_resolve(f->st, "nest/INBOX/2019/q2", &leaf), -ENOENT);
    ms_node m = put(f->st, n, "deep", "deep bytes");
    assert_reads(f->st, m.id, "deep bytes");
    /* Siblings of one name in different folders are different folders. */
    ms_node jan;
    assert_int_equal(ms_resolve(f->st, "nest/INBOX/2019/q1/jan", &jan), 0);
    ms_node other = mkdir_ok(f->st, mkdir_ok(f->st, mb, "Archive"), "jan");
    assert_true(other.id != jan.id);
    GArray *a = children(f->st, jan);
    assert_int_equal(a->len, 1);
    g_array_unref(a);
    assert_int_equal(ms_rmdir(f->st, jan, "week 1"), -ENOTEMPTY);
    assert_int_equal(unlink_msg(f->st, n, "deep"), 0);
    assert_int_equal(ms_rmdir(f->st, jan, "week 1"), 0);
    assert_int_equal(ms_resolve(f->st, "nest/INBOX/2019/q1/jan/week 1", &leaf), -ENOENT);
    assert_int_equal(ms_rmdir(f->st, jan, "week 1"), -ENOENT);
}

static void test_written_in_pieces(void **state)
{
    fixture *f = *state;
    ms_node fo = mkdir_ok(f->st, mkdir_ok(f->st, ROOT, "pieces"), "INBOX");
    /* Large enough to leave a memory spool; pieces written backwards. */
    enum { SIZE = 3 * 1024 * 1024 + 17, PIECE = 65536 + 3 };
    g_autofree char *want = g_malloc(SIZE + 1);
    for (size_t i = 0; i < SIZE; i++)
        want[i] = (char)('A' + (i * 7 + i / 4096) % 26);
    want[SIZE] = 0;
    ms_attr a;
    ms_writer *w;
    assert_int_equal(ms_message_create(f->st, fo, "big", 0640, 0, 0, &a), 0);
    assert_int_equal(ms_writer_open(f->st, a.node.id, true, &w), 0);
    int64_t last = (SIZE - 1) / PIECE * (int64_t)PIECE;
    for (int64_t off = last; off >= 0; off -= PIECE) {
        size_t n = off + PIECE > SIZE ? (size_t)(SIZE - off) : PIECE;
        assert_int_equal(ms_writer_pwrite(w, want + off, n, off), (ssize_t)n);
    }
    assert_int_equal(ms_writer_size(w), SIZE);
    /* Not visible before its commit. */
    ms_attr seen;
    assert_int_equal(ms_lookup(f->st, fo, "big", &seen), -ENOENT);
    assert_int_equal(commit(w, &seen), 0);
    ms_writer_close(w);
    assert_int_equal(seen.size, SIZE);
    assert_reads(f->st, a.node.id, want);
    /* A hole reads as zeros; a truncate cuts; a rewrite in place keeps the rest. */
    assert_int_equal(ms_message_create(f->st, fo, "holes", 0640, 0, 0, &a), 0);
    assert_int_equal(ms_writer_open(f->st, a.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "end", 3, 10), 3);
    assert_int_equal(ms_writer_pwrite(w, "start", 5, 0), 5);
    assert_int_equal(commit(w, NULL), 0);
    ms_writer_close(w);
    ms_reader *r;
    assert_int_equal(ms_reader_open(f->st, a.node.id, &r), 0);
    char buf[16];
    assert_int_equal(ms_reader_pread(r, buf, sizeof buf, 0), 13);
    assert_memory_equal(buf, "start\0\0\0\0\0end", 13);
    ms_reader_close(r);
    assert_int_equal(ms_writer_open(f->st, a.node.id, false, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "START", 5, 0), 5);
    assert_int_equal(ms_writer_truncate(w, 11), 0);
    assert_int_equal(ms_writer_pread(w, buf, sizeof buf, 0), 11);
    assert_int_equal(commit(w, &seen), 0);
    ms_writer_close(w);
    assert_int_equal(seen.size, 11);
    assert_int_equal(ms_reader_open(f->st, a.node.id, &r), 0);
    assert_int_equal(ms_reader_pread(r, buf, sizeof buf, 0), 11);
    assert_memory_equal(buf, "START\0\0\0\0\0e", 11);
    ms_reader_close(r);
}

static void test_rename_and_refile(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->st, ROOT, "ren");
    ms_node inbox = mkdir_ok(f->st, mb, "INBOX");
    ms_node arch = mkdir_ok(f->st, mb, "Archive");
    ms_node m = put(f->st, inbox, "a", "message a");
    put(f->st, inbox, "b", "message b");
    ms_attr a;
    /* Rename in place: same message, new name. */
    assert_int_equal(rename_node(f->st, inbox, "a", inbox, "a2", false), 0);
    assert_int_equal(ms_lookup(f->st, inbox, "a", &a), -ENOENT);
    assert_int_equal(ms_lookup(f->st, inbox, "a2", &a), 0);
    assert_int_equal(a.node.id, m.id);
    /* Refile to another folder. */
    assert_int_equal(rename_node(f->st, inbox, "a2", arch, "a", false), 0);
    assert_int_equal(ms_lookup(f->st, arch, "a", &a), 0);
    assert_reads(f->st, a.node.id, "message a");
    assert_false(listed(f->st, inbox, "a2"));
    /* Replacing: noreplace refuses, otherwise the target's bytes go. */
    put(f->st, arch, "b", "archived b");
    assert_int_equal(rename_node(f->st, inbox, "b", arch, "b", true), -EEXIST);
    assert_int_equal(rename_node(f->st, inbox, "b", arch, "b", false), 0);
    assert_int_equal(ms_lookup(f->st, arch, "b", &a), 0);
    assert_reads(f->st, a.node.id, "message b");
    assert_int_equal(ms_lookup(f->st, inbox, "b", &a), -ENOENT);
    /* Folders: renamed and refiled with what they hold. */
    ms_node y = mkdir_ok(f->st, arch, "2019");
    put(f->st, y, "c", "message c");
    assert_int_equal(rename_node(f->st, arch, "2019", inbox, "Old", false), 0);
    ms_node n;
    assert_int_equal(ms_resolve(f->st, "ren/INBOX/Old", &n), 0);
    assert_int_equal(n.id, y.id);
    assert_int_equal(ms_lookup(f->st, n, "c", &a), 0);
    /* A folder replaces only an empty folder. */
    ms_node full = mkdir_ok(f->st, inbox, "Full");
    put(f->st, full, "d", "d");
    assert_int_equal(rename_node(f->st, inbox, "Old", inbox, "Full", false), -ENOTEMPTY);
    /* Mailboxes: renamed within the store, never across levels or mailboxes. */
    assert_int_equal(rename_node(f->st, ROOT, "ren", ROOT, "ren2", false), 0);
    assert_int_equal(ms_resolve(f->st, "ren2/INBOX/Old", &n), 0);
    ms_node other = mkdir_ok(f->st, mkdir_ok(f->st, ROOT, "other"), "INBOX");
    assert_int_equal(rename_node(f->st, inbox, "Full", other, "Full", false), -EXDEV);
    assert_int_equal(ms_lookup(f->st, inbox, "Full", &a), 0);
    assert_int_equal(rename_node(f->st, ROOT, "other", mb, "other", false), -EPERM);
    assert_int_equal(rename_node(f->st, inbox, "Full", ROOT, "Full", false), -EPERM);
    assert_int_equal(rename_node(f->st, inbox, "missing", inbox, "x", false), -ENOENT);
}

static int word_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The words of a flags value, sorted: how unordered flags compare. */
static char *sorted_words(const char *v, size_t len)
{
    g_autofree char *s = g_strndup(v, len);
    g_auto(GStrv) w = g_strsplit(s, " ", -1);
    qsort(w, g_strv_length(w), sizeof *w, word_cmp);
    return g_strjoinv(" ", w);
}

static void xattr_is(ms_store *st, ms_node n, const char *name, const char *want)
{
    char *v = NULL;
    size_t len = 0;
    int rc = ms_xattr_get(st, n, name, &v, &len);
    if (!want) {
        assert_int_equal(rc, -ENODATA);
        return;
    }
    assert_int_equal(rc, 0);
    if (backend->flags_unordered && !strcmp(name, "user.mail.flags")) {
        g_autofree char *a = sorted_words(v, len), *b = sorted_words(want, strlen(want));
        assert_string_equal(a, b);
        g_free(v);
        return;
    }
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);
    g_free(v);
}

static void test_xattrs(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->st, ROOT, "xa");
    ms_node fo = mkdir_ok(f->st, mb, "Sent");
    ms_node m = put(f->st, fo, "m", "x");
    const char *FL = "user.mail.flags", *SU = "user.mail.special-use", *ACL = "user.mail.acl";
    xattr_is(f->st, m, FL, NULL);
    assert_int_equal(ms_xattr_set(f->st, m, FL, "\\Seen $Label1", 13, 0), 0);
    xattr_is(f->st, m, FL, "\\Seen $Label1");
    assert_int_equal(ms_xattr_set(f->st, m, FL, "\\Seen", 5, XATTR_CREATE), -EEXIST);
    assert_int_equal(ms_xattr_set(f->st, m, FL, "\\seen \\SEEN \\Flagged", 20, XATTR_REPLACE), 0);
    xattr_is(f->st, m, FL, "\\Seen \\Flagged");
    assert_int_equal(ms_xattr_set(f->st, m, FL, "\\Recent", 7, 0), -EINVAL);
    xattr_is(f->st, m, FL, "\\Seen \\Flagged");
    assert_int_equal(ms_xattr_set(f->st, fo, SU, "\\Sent", 5, 0), 0);
    xattr_is(f->st, fo, SU, "\\Sent");
    assert_int_equal(ms_xattr_set(f->st, mb, ACL, "bob lr", 6, 0), 0);
    xattr_is(f->st, mb, ACL, "bob lr");
    /* Each attribute where it applies, nothing else. */
    assert_int_equal(ms_xattr_set(f->st, m, "user.other", "v", 1, 0), -ENOTSUP);
    assert_int_equal(ms_xattr_set(f->st, fo, "user.other", "v", 1, 0), -ENOTSUP);
    xattr_is(f->st, fo, FL, NULL);
    xattr_is(f->st, m, ACL, NULL);
    char *names = NULL;
    size_t len = 0;
    /* The UID is listed too (user.mail.uid), read from the store. */
    const char *UID = "user.mail.uid";
    assert_int_equal(ms_xattr_list(f->st, m, &names, &len), 0);
    assert_int_equal(len, strlen(UID) + 1 + strlen(FL) + 1);
    assert_memory_equal(names, UID, strlen(UID) + 1);
    assert_memory_equal(names + strlen(UID) + 1, FL, strlen(FL) + 1);
    g_free(names);
    assert_int_equal(ms_xattr_remove(f->st, m, FL), 0);
    xattr_is(f->st, m, FL, NULL);
    assert_int_equal(ms_xattr_remove(f->st, m, FL), -ENODATA);
    assert_int_equal(ms_xattr_set(f->st, m, FL, "\\Seen", 5, XATTR_REPLACE), -ENODATA);
    assert_int_equal(ms_xattr_list(f->st, m, &names, &len), 0);
    assert_int_equal(len, strlen(UID) + 1);
    g_free(names);
    /* Flags travel with a refile. */
    assert_int_equal(ms_xattr_set(f->st, m, FL, "\\Answered", 9, 0), 0);
    ms_node in = mkdir_ok(f->st, mb, "INBOX");
    assert_int_equal(rename_node(f->st, fo, "m", in, "m", false), 0);
    xattr_is(f->st, m, FL, "\\Answered");
}

/* A mailbox with one folder and one message, for the refusal tests. */
typedef struct box {
    ms_node mb, inbox, sub, m;
} box;

static box make_box(ms_store *st, const char *name)
{
    box b;
    b.mb = mkdir_ok(st, ROOT, name);
    b.inbox = mkdir_ok(st, b.mb, "INBOX");
    b.sub = mkdir_ok(st, b.inbox, "empty");
    b.m = put(st, b.inbox, "m", "kept bytes");
    assert_int_equal(ms_xattr_set(st, b.m, "user.mail.flags", "\\Seen", 5, 0), 0);
    return b;
}

static bool has_deleted_items(ms_store *st);

static ms_folder_uids uids_of(ms_store *st, ms_node folder)
{
    ms_folder_uids u;
    assert_int_equal(ms_folder_uids_get(st, folder, &u), 0);
    return u;
}

/* A new message delivered into folder: its attributes. */
static ms_attr deliver(ms_store *st, ms_node folder, const char *data)
{
    ms_writer *w;
    ms_attr a;
    assert_int_equal(ms_writer_deliver(st, folder, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, data, strlen(data), 0), (ssize_t)strlen(data));
    assert_int_equal(commit(w, &a), 0);
    ms_writer_close(w);
    return a;
}

/*
 * A folder's IMAP UID state (RFC 3501 2.3.1.1): UIDVALIDITY set when the
 * folder is made, kept by every operation; UIDNEXT above every UID the
 * folder holds, given to the next message; both as a move sets them.
 */
static void test_folder_uids(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->st, ROOT, "uids");
    ms_node inbox = mkdir_ok(f->st, mb, "INBOX");
    ms_node sub = mkdir_ok(f->st, inbox, "Sub");
    ms_folder_uids u = uids_of(f->st, inbox);
    assert_true(u.uidvalidity != 0);
    assert_true(u.uidnext >= 1);
    assert_true(uids_of(f->st, sub).uidvalidity != 0);
    /* Messages get increasing UIDs below UIDNEXT. */
    ms_attr m1 = deliver(f->st, inbox, "one");
    ms_attr m2 = deliver(f->st, inbox, "two");
    assert_true(m1.imap_uid >= u.uidnext);
    assert_true(m2.imap_uid > m1.imap_uid);
    assert_int_equal(uids_of(f->st, inbox).uidnext, m2.imap_uid + 1);
    assert_int_equal(uids_of(f->st, inbox).uidvalidity, u.uidvalidity);
    /* Set, as a move does: the next message gets UIDNEXT. */
    assert_int_equal(ms_folder_uids_set(f->st, inbox, &(ms_folder_uids){1234567, 100}), 0);
    u = uids_of(f->st, inbox);
    assert_int_equal(u.uidvalidity, 1234567);
    assert_int_equal(u.uidnext, 100);
    ms_attr a;
    assert_int_equal(deliver(f->st, inbox, "three").imap_uid, 100);
    assert_int_equal(uids_of(f->st, inbox).uidnext, 101);
    /* Never below a UID the folder holds. */
    assert_int_equal(ms_folder_uids_set(f->st, inbox, &(ms_folder_uids){1234567, 5}), 0);
    assert_int_equal(uids_of(f->st, inbox).uidnext, 101);
    /* An import keeps its UID, and UIDNEXT goes past it. */
    ms_writer *w;
    assert_int_equal(ms_writer_import(f->st, sub, "imported", 42, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "imp", 3, 0), 3);
    assert_int_equal(commit(w, &a), 0);
    ms_writer_close(w);
    assert_int_equal(a.imap_uid, 42);
    assert_true(uids_of(f->st, sub).uidnext >= 43);
    /* Invalid values and non-folders are refused. */
    assert_int_equal(ms_folder_uids_set(f->st, inbox, &(ms_folder_uids){0, 10}), -EINVAL);
    assert_int_equal(ms_folder_uids_set(f->st, inbox, &(ms_folder_uids){5, 0}), -EINVAL);
    assert_int_equal(ms_folder_uids_get(f->st, mb, &u), -EINVAL);
    assert_int_equal(ms_folder_uids_set(f->st, m1.node, &(ms_folder_uids){5, 10}), -EINVAL);
    /* Kept by unlink, flags, chmod, renames and refiles of the folder and
     * of the mailbox. */
    ms_folder_uids keep = uids_of(f->st, inbox), keep_sub = uids_of(f->st, sub);
    char *name = NULL;
    ms_node folder;
    assert_true(find_message(f->st, inbox, &folder, &name, &a));
    assert_int_equal(ms_xattr_set(f->st, a.node, "user.mail.flags", "\\Seen", 5, 0), 0);
    assert_int_equal(unlink_msg(f->st, folder, name), 0);
    g_free(name);
    ms_setattr_req req = {.mask = MS_SET_MODE, .mode = 0700};
    assert_int_equal(ms_setattr(f->st, inbox, &req, &a), 0);
    assert_int_equal(rename_node(f->st, inbox, "Sub", mb, "Top", false), 0);
    assert_int_equal(rename_node(f->st, ROOT, "uids", ROOT, "uids2", false), 0);
    assert_int_equal(rename_node(f->st, mb, "Top", inbox, "Sub2", false), 0);
    u = uids_of(f->st, inbox);
    assert_int_equal(u.uidvalidity, keep.uidvalidity);
    assert_int_equal(u.uidnext, keep.uidnext);
    u = uids_of(f->st, sub);
    assert_int_equal(u.uidvalidity, keep_sub.uidvalidity);
    assert_int_equal(u.uidnext, keep_sub.uidnext);
    /* Made again under a name it had: its UIDs start again, so its
     * UIDVALIDITY is not the old one (IMAP clients drop their cache). */
    ms_node gone = mkdir_ok(f->st, inbox, "Gone");
    ms_folder_uids old = uids_of(f->st, gone);
    deliver(f->st, gone, "x");
    char *n = NULL;
    assert_true(find_message(f->st, gone, &folder, &n, &a));
    assert_int_equal(unlink_msg(f->st, gone, n), 0);
    g_free(n);
    assert_int_equal(ms_rmdir(f->st, inbox, "Gone"), 0);
    ms_node again = mkdir_ok(f->st, inbox, "Gone");
    assert_true(uids_of(f->st, again).uidvalidity != old.uidvalidity);
    /* Restored from deleted items: the folder clients knew, UIDs and all. */
    if (has_deleted_items(f->st)) {
        ms_node kept = mkdir_ok(f->st, inbox, "Kept");
        assert_int_equal(ms_folder_uids_set(f->st, kept, &(ms_folder_uids){4242, 500}), 0);
        ms_attr km = deliver(f->st, kept, "kept");
        assert_int_equal(km.imap_uid, 500);
        assert_true(find_message(f->st, kept, &folder, &n, &a));
        assert_int_equal(unlink_msg(f->st, kept, n), 0);
        assert_int_equal(ms_rmdir(f->st, inbox, "Kept"), 0);
        assert_int_equal(ms_deleted_restore(f->st, "uids2", "INBOX/Kept", NULL), 0);
        ms_node back;
        assert_int_equal(ms_resolve(f->st, "uids2/INBOX/Kept", &back), 0);
        u = uids_of(f->st, back);
        assert_int_equal(u.uidvalidity, 4242);
        assert_int_equal(u.uidnext, 501);
        assert_int_equal(ms_lookup(f->st, back, n, &a), 0);
        assert_int_equal(a.imap_uid, 500);
        g_free(n);
    }
}

/* user.mail.uid and user.mail.uids: the IMAP state backups carry. */
static void test_uid_xattrs(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->st, ROOT, "ux");
    ms_node fo = mkdir_ok(f->st, mb, "INBOX");
    ms_node a = put(f->st, fo, "a", "first");
    ms_node b = put(f->st, fo, "b", "second");
    ms_attr at;
    assert_int_equal(ms_getattr(f->st, a, &at), 0);
    g_autofree char *ua = g_strdup_printf("%lld", (long long)at.imap_uid);
    xattr_is(f->st, a, "user.mail.uid", ua);
    /* A free UID is granted, and UIDNEXT goes past it. */
    assert_int_equal(ms_xattr_set(f->st, b, "user.mail.uid", "4000", 4, 0), 0);
    xattr_is(f->st, b, "user.mail.uid", "4000");
    ms_folder_uids u;
    assert_int_equal(ms_folder_uids_get(f->st, fo, &u), 0);
    assert_true(u.uidnext >= 4001);
    /* A taken one is a wish not granted: the message keeps its own. */
    assert_int_equal(ms_xattr_set(f->st, a, "user.mail.uid", "4000", 4, 0), 0);
    xattr_is(f->st, a, "user.mail.uid", ua);
    /* Below the others: granted too, the order kept (a restore). */
    assert_int_equal(ms_xattr_set(f->st, a, "user.mail.uid", "2", 1, 0), 0);
    xattr_is(f->st, a, "user.mail.uid", "2");
    assert_int_equal(ms_xattr_set(f->st, a, "user.mail.uid", "x1", 2, 0), -EINVAL);
    assert_int_equal(ms_xattr_set(f->st, a, "user.mail.uid", "0", 1, 0), -EINVAL);
    assert_int_equal(ms_xattr_remove(f->st, a, "user.mail.uid"), 0); /* a no-op */
    xattr_is(f->st, a, "user.mail.uid", "2");
    /* A folder's "UIDVALIDITY UIDNEXT". */
    assert_int_equal(ms_xattr_set(f->st, fo, "user.mail.uids", "1234 5000", 9, 0), 0);
    xattr_is(f->st, fo, "user.mail.uids", "1234 5000");
    assert_int_equal(ms_xattr_set(f->st, fo, "user.mail.uids", "1234 10", 7, 0), 0);
    xattr_is(f->st, fo, "user.mail.uids", "1234 4001"); /* never below what is used */
    assert_int_equal(ms_xattr_set(f->st, fo, "user.mail.uids", "1234", 4, 0), -EINVAL);
    /* A message created and given its UID before its first commit (cp -a). */
    ms_attr c;
    ms_writer *w;
    assert_int_equal(ms_message_create(f->st, fo, "c", 0600, 0, 0, &c), 0);
    assert_int_equal(ms_xattr_set(f->st, c.node, "user.mail.uid", "7", 1, 0), 0);
    assert_int_equal(ms_writer_open(f->st, c.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "third", 5, 0), 5);
    assert_int_equal(commit(w, NULL), 0);
    ms_writer_close(w);
    assert_int_equal(ms_lookup(f->st, fo, "c", &c), 0);
    xattr_is(f->st, c.node, "user.mail.uid", "7");
    /* Renamed within its folder, a message keeps its UID. */
    assert_int_equal(rename_node(f->st, fo, "c", fo, "c2", false), 0);
    assert_int_equal(ms_lookup(f->st, fo, "c2", &c), 0);
    assert_int_equal(c.imap_uid, 7);
}

/* Every write into b's mailbox, each answered with want; nothing changes. */
static void assert_writes_refused(ms_store *st, const box *b, int want)
{
    ms_attr a;
    ms_writer *w;
    ms_setattr_req req = {.mask = MS_SET_MODE, .mode = 0600};
    assert_int_equal(ms_mkdir(st, b->mb, "new", 0700, 0, 0, &a), want);
    assert_int_equal(ms_mkdir(st, b->inbox, "new", 0700, 0, 0, &a), want);
    assert_int_equal(ms_rmdir(st, b->inbox, "empty"), want);
    assert_int_equal(ms_message_create(st, b->inbox, "new", 0600, 0, 0, &a), want);
    assert_int_equal(unlink_msg(st, b->inbox, "m"), want);
    assert_int_equal(rename_node(st, b->inbox, "m", b->inbox, "m2", false), want);
    assert_int_equal(rename_node(st, b->inbox, "empty", b->mb, "empty", false), want);
    assert_int_equal(ms_setattr(st, b->m, &req, &a), want);
    assert_int_equal(ms_setattr(st, b->inbox, &req, &a), want);
    assert_int_equal(ms_setattr(st, b->mb, &req, &a), want);
    assert_int_equal(ms_xattr_set(st, b->m, "user.mail.flags", "\\Deleted", 8, 0), want);
    assert_int_equal(ms_xattr_set(st, b->inbox, "user.mail.special-use", "\\Junk", 5, 0), want);
    assert_int_equal(ms_xattr_set(st, b->mb, "user.mail.acl", "eve lr", 6, 0), want);
    assert_int_equal(ms_xattr_remove(st, b->m, "user.mail.flags"), want);
    ms_folder_uids before, after;
    assert_int_equal(ms_folder_uids_get(st, b->inbox, &before), 0);
    assert_int_equal(ms_folder_uids_set(st, b->inbox, &(ms_folder_uids){77, 9999}), want);
    assert_int_equal(ms_folder_uids_get(st, b->inbox, &after), 0);
    assert_int_equal(after.uidvalidity, before.uidvalidity);
    assert_int_equal(after.uidnext, before.uidnext);
    /* Writers: refused at open or, at the latest, at commit. */
    int rc = ms_writer_open(st, b->m.id, true, &w);
    if (rc == 0) {
        assert_int_equal(ms_writer_pwrite(w, "changed", 7, 0), 7);
        assert_int_equal(commit(w, NULL), want);
        ms_writer_close(w);
    } else {
        assert_int_equal(rc, want);
    }
    rc = ms_writer_deliver(st, b->inbox, &w);
    if (rc == 0) {
        assert_int_equal(ms_writer_pwrite(w, "delivered", 9, 0), 9);
        assert_int_equal(commit(w, NULL), want);
        ms_writer_close(w);
    } else {
        assert_int_equal(rc, want);
    }
    rc = ms_writer_import(st, b->inbox, "imported", 0, &w);
    if (rc == 0) {
        assert_int_equal(ms_writer_pwrite(w, "imported", 8, 0), 8);
        assert_int_equal(commit(w, NULL), want);
        ms_writer_close(w);
    } else {
        assert_int_equal(rc, want);
    }
    /* Nothing changed; reads go on. */
    assert_reads(st, b->m.id, "kept bytes");
    assert_int_equal(ms_getattr(st, b->m, &a), 0);
    assert_int_equal(a.mode, 0640);
    xattr_is(st, b->m, "user.mail.flags", "\\Seen");
    assert_int_equal(ms_lookup(st, b->inbox, "empty", &a), 0);
    assert_int_equal(ms_lookup(st, b->inbox, "new", &a), -ENOENT);
    assert_int_equal(ms_lookup(st, b->inbox, "m2", &a), -ENOENT);
}

static int count_deleted(void *ctx, const ms_deleted *d)
{
    (void)d;
    (*(int *)ctx)++;
    return 0;
}

/* Whether the backend keeps deleted items (an optional feature). */
static bool has_deleted_items(ms_store *st)
{
    int n = 0;
    int rc = ms_deleted_list(st, NULL, count_deleted, &n);
    assert_true(rc == 0 || rc == -ENOTSUP);
    return rc == 0;
}

static int set_lock(ms_store *st, int64_t mailbox, int64_t move)
{
    ms_mailbox_change c = {NULL, -1, move, -1, move ? "conformance" : NULL, 0};
    return ms_mailbox_set(st, mailbox, &c);
}

static void test_locked_mailbox(void **state)
{
    fixture *f = *state;
    box b = make_box(f->st, "locked");
    box other = make_box(f->st, "other");
    bool deleted_items = has_deleted_items(f->st);
    put(f->st, b.inbox, "gone", "deleted before the lock");
    assert_int_equal(unlink_msg(f->st, b.inbox, "gone"), 0);
    assert_int_equal(set_lock(f->st, b.mb.id, 7), 0);
    assert_int_equal(set_lock(f->st, b.mb.id, 8), -EBUSY); /* one lock at a time */
    ms_mailbox_info info;
    assert_int_equal(ms_mailbox_get_info(f->st, b.mb.id, &info), 0);
    assert_int_equal(info.lock_move, 7);
    assert_int_equal(info.state, MS_MB_VISIBLE);
    assert_writes_refused(f->st, &b, -EBUSY);
    /* The mailbox itself cannot be renamed or removed while locked. */
    assert_int_equal(rename_node(f->st, ROOT, "locked", ROOT, "renamed", false), -EBUSY);
    /* Nor can deleted items come back into it. */
    if (deleted_items)
        assert_int_equal(ms_deleted_restore(f->st, "locked", "INBOX/gone", NULL), -EBUSY);
    /* Still visible, and the other mailbox is not affected. */
    assert_true(listed(f->st, ROOT, "locked"));
    put(f->st, other.inbox, "new", "new");
    /* Unlocked: writes work again. */
    assert_int_equal(set_lock(f->st, b.mb.id, 0), 0);
    if (deleted_items)
        assert_int_equal(ms_deleted_restore(f->st, "locked", "INBOX/gone", NULL), 0);
    assert_int_equal(unlink_msg(f->st, b.inbox, "m"), 0);
    put(f->st, b.inbox, "new", "new");
}

static void test_retained_mailbox(void **state)
{
    fixture *f = *state;
    box b = make_box(f->st, "kept");
    g_autofree char *hidden = hidden_name(MS_MB_RETAINED, 11, "kept");
    ms_mailbox_change c = {hidden, MS_MB_RETAINED, -1, 4102444800LL, "conformance", 11};
    assert_int_equal(ms_mailbox_set(f->st, b.mb.id, &c), 0);
    /* Invisible: not found, not listed, not resolved; its name is free. */
    ms_attr a;
    ms_node n;
    assert_int_equal(ms_lookup(f->st, ROOT, "kept", &a), -ENOENT);
    assert_false(listed(f->st, ROOT, "kept"));
    assert_int_equal(ms_resolve(f->st, "kept/INBOX", &n), -ENOENT);
    int64_t id;
    assert_int_equal(ms_mailbox_find(f->st, hidden, MS_MB_RETAINED, &id), 0);
    assert_int_equal(id, b.mb.id);
    ms_mailbox_info info;
    assert_int_equal(ms_mailbox_get_info(f->st, id, &info), 0);
    assert_int_equal(info.state, MS_MB_RETAINED);
    assert_int_equal(info.retain_until, 4102444800LL);
    assert_int_equal(info.move_id, 11);
    /* Frozen: every write through what a caller still holds is refused. */
    assert_writes_refused(f->st, &b, -ESTALE);
    ms_node fresh = mkdir_ok(f->st, ROOT, "kept");
    assert_true(fresh.id != b.mb.id);
    int64_t messages = 0, bytes = 0;
    assert_int_equal(ms_mailbox_size(f->st, b.mb.id, &messages, &bytes), 0);
    assert_int_equal(messages, 1);
    assert_int_equal(bytes, 10);
}

/* A reader keeps the bytes it opened across unlink and across replace. */
static void test_reader_keeps_bytes(void **state)
{
    fixture *f = *state;
    ms_node fo = mkdir_ok(f->st, mkdir_ok(f->st, ROOT, "rd"), "INBOX");
    ms_node m = put(f->st, fo, "m", "the old bytes");
    ms_reader *r1, *r2, *r3;
    assert_int_equal(ms_reader_open(f->st, m.id, &r1), 0);
    /* Replaced in place by a writer. */
    ms_writer *w;
    assert_int_equal(ms_writer_open(f->st, m.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "new", 3, 0), 3);
    assert_int_equal(commit(w, NULL), 0);
    ms_writer_close(w);
    assert_int_equal(ms_reader_open(f->st, m.id, &r2), 0);
    assert_reads(f->st, m.id, "new");
    /* Replaced by a rename over it. */
    put(f->st, fo, "n", "from n");
    assert_int_equal(rename_node(f->st, fo, "n", fo, "m", false), 0);
    ms_attr a;
    assert_int_equal(ms_lookup(f->st, fo, "m", &a), 0);
    assert_int_equal(ms_reader_open(f->st, a.node.id, &r3), 0);
    /* Unlinked. */
    assert_int_equal(unlink_msg(f->st, fo, "m"), 0);
    assert_int_equal(ms_lookup(f->st, fo, "m", &a), -ENOENT);
    const struct {
        ms_reader *r;
        const char *want;
    } readers[] = {{r1, "the old bytes"}, {r2, "new"}, {r3, "from n"}};
    for (size_t i = 0; i < G_N_ELEMENTS(readers); i++) {
        GByteArray *b = read_whole(readers[i].r);
        assert_int_equal(b->len, strlen(readers[i].want));
        assert_memory_equal(b->data, readers[i].want, b->len);
        g_byte_array_free(b, TRUE);
        ms_reader_close(readers[i].r);
    }
}

/* Hidden mailboxes are found by name and state only, and never clash. */
static void test_hidden_naming(void **state)
{
    fixture *f = *state;
    ms_node visible = mkdir_ok(f->st, ROOT, "hid");
    ms_attr like = {.mode = 0700};
    const ms_mb_state states[] = {MS_MB_INCOMING, MS_MB_RETAINED};
    int64_t ids[G_N_ELEMENTS(states)];
    for (size_t i = 0; i < G_N_ELEMENTS(states); i++) {
        g_autofree char *name = hidden_name(states[i], 21, "hid");
        assert_int_equal(ms_mailbox_create(f->st, name, states[i], &like, &ids[i]), 0);
        assert_true(ids[i] != visible.id);
        int64_t id;
        assert_int_equal(ms_mailbox_find(f->st, name, states[i], &id), 0);
        assert_int_equal(id, ids[i]);
        assert_int_equal(ms_mailbox_find(f->st, name, MS_MB_VISIBLE, &id), -ENOENT);
        ms_mailbox_info info;
        assert_int_equal(ms_mailbox_get_info(f->st, ids[i], &info), 0);
        assert_int_equal(info.state, states[i]);
        assert_string_equal(info.name, name);
        /* The same hidden name twice in one state: refused. */
        assert_int_equal(ms_mailbox_create(f->st, name, states[i], &like, &id), -EEXIST);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(states); i++) {
        g_autofree char *name = hidden_name(states[i], 21, "hid");
        for (size_t k = 0; k < G_N_ELEMENTS(states); k++) {
            int64_t id;
            if (k != i)
                assert_int_equal(ms_mailbox_find(f->st, name, states[k], &id), -ENOENT);
        }
    }
    /* The visible mailbox is untouched and the only one seen. */
    int64_t id;
    assert_int_equal(ms_mailbox_find(f->st, "hid", MS_MB_VISIBLE, &id), 0);
    assert_int_equal(id, visible.id);
    GArray *a = children(f->st, ROOT);
    assert_int_equal(a->len, 1);
    g_array_unref(a);
    /* Showing the incoming copy under a free name makes it visible. */
    ms_mailbox_change show = {"hid2", MS_MB_VISIBLE, -1, -1, NULL, 0};
    assert_int_equal(ms_mailbox_set(f->st, ids[0], &show), 0);
    ms_attr at;
    assert_int_equal(ms_lookup(f->st, ROOT, "hid2", &at), 0);
    assert_int_equal(at.node.id, ids[0]);
    g_autofree char *name = hidden_name(MS_MB_INCOMING, 21, "hid");
    assert_int_equal(ms_mailbox_find(f->st, name, MS_MB_INCOMING, &id), -ENOENT);
    /* Dropped: gone in every way. */
    assert_int_equal(ms_mailbox_drop(f->st, ids[1]), 0);
    ms_mailbox_info info;
    assert_int_equal(ms_mailbox_get_info(f->st, ids[1], &info), -ENOENT);
}

/* ------------------------------------------------------ read-only tests */

static void test_ro_tree(void **state)
{
    fixture *f = *state;
    assert_true(ms_store_readonly(f->st));
    GArray *boxes = children(f->st, ROOT);
    assert_true(boxes->len >= 1);
    for (guint i = 0; i < boxes->len; i++) {
        child *c = &g_array_index(boxes, child, i);
        assert_int_equal(c->attr.node.kind, MS_MAILBOX);
        ms_attr a;
        assert_int_equal(ms_lookup(f->st, ROOT, c->name, &a), 0);
        assert_int_equal(a.node.id, c->attr.node.id);
        assert_int_equal(ms_getattr(f->st, a.node, &a), 0);
    }
    g_array_unref(boxes);
    ms_node folder;
    char *name = NULL;
    ms_attr m, a;
    assert_true(find_message(f->st, ROOT, &folder, &name, &m));
    assert_int_equal(ms_lookup(f->st, folder, name, &a), 0);
    assert_int_equal(a.node.id, m.node.id);
    /* A change sequence: none in a pst file (nothing changes it), and
     * a read-only sqlite store still answers with its own. */
    uint64_t floor = 0;
    if (!strcmp(backend->name, "pst")) {
        assert_int_equal(ms_mailbox_modseq(f->st, a.mailbox, &floor), -ENOTSUP);
        assert_int_equal(a.modseq, 0);
    } else {
        assert_int_equal(ms_mailbox_modseq(f->st, a.mailbox, &floor), 0);
        assert_true(a.modseq > 0 && a.modseq < floor);
    }
    ms_reader *r;
    assert_int_equal(ms_reader_open(f->st, m.node.id, &r), 0);
    GByteArray *b = read_whole(r);
    assert_int_equal(b->len, m.size);
    /* Reads past the end are empty, reads across it short. */
    char buf[8];
    assert_int_equal(ms_reader_pread(r, buf, sizeof buf, (int64_t)b->len), 0);
    if (b->len >= 4)
        assert_int_equal(ms_reader_pread(r, buf, sizeof buf, (int64_t)b->len - 4), 4);
    g_byte_array_free(b, TRUE);
    ms_reader_close(r);
    /* Names: as for every backend. */
    g_autofree char *n256 = repeat('n', MS_NAME_MAX + 1);
    g_autofree char *n255 = repeat('n', MS_NAME_MAX);
    assert_int_equal(ms_lookup(f->st, folder, n256, &a), -ENAMETOOLONG);
    assert_int_equal(ms_lookup(f->st, folder, n255, &a), -ENOENT);
    assert_int_equal(ms_lookup(f->st, folder, "a/b", &a), -ENOENT);
    g_free(name);
}

static void test_ro_writes_refused(void **state)
{
    fixture *f = *state;
    ms_node folder;
    char *name = NULL;
    ms_attr m, mb, a;
    assert_true(find_message(f->st, ROOT, &folder, &name, &m));
    assert_int_equal(ms_getattr(f->st, m.node, &a), 0);
    assert_int_equal(ms_getattr(f->st, (ms_node){MS_MAILBOX, a.mailbox}, &mb), 0);
    GArray *boxes = children(f->st, ROOT);
    const char *mbname = g_array_index(boxes, child, 0).name;
    ms_attr first;
    assert_int_equal(ms_lookup(f->st, ROOT, mbname, &first), 0);
    const int R = -EROFS;
    ms_setattr_req req = {.mask = MS_SET_MODE, .mode = 0600};
    ms_writer *w;
    int64_t id;
    assert_int_equal(ms_mkdir(f->st, ROOT, "new", 0700, 0, 0, &a), R);
    assert_int_equal(ms_mkdir(f->st, mb.node, "new", 0700, 0, 0, &a), R);
    assert_int_equal(ms_mkdir(f->st, folder, "new", 0700, 0, 0, &a), R);
    assert_int_equal(ms_rmdir(f->st, ROOT, mbname), R);
    assert_int_equal(ms_message_create(f->st, folder, "new", 0600, 0, 0, &a), R);
    assert_int_equal(unlink_msg(f->st, folder, name), R);
    assert_int_equal(rename_node(f->st, folder, name, folder, "renamed", false), R);
    assert_int_equal(rename_node(f->st, ROOT, mbname, ROOT, "renamed", false), R);
    assert_int_equal(ms_setattr(f->st, m.node, &req, &a), R);
    assert_int_equal(ms_setattr(f->st, folder, &req, &a), R);
    assert_int_equal(ms_xattr_set(f->st, m.node, "user.mail.flags", "\\Seen", 5, 0), R);
    assert_int_equal(ms_xattr_set(f->st, folder, "user.mail.special-use", "\\Junk", 5, 0), R);
    assert_int_equal(ms_xattr_set(f->st, first.node, "user.mail.acl", "bob lr", 6, 0), R);
    assert_int_equal(ms_xattr_remove(f->st, m.node, "user.mail.flags"), R);
    assert_int_equal(ms_writer_open(f->st, m.node.id, false, &w), R);
    assert_int_equal(ms_writer_open(f->st, m.node.id, true, &w), R);
    assert_int_equal(ms_writer_deliver(f->st, folder, &w), R);
    assert_int_equal(ms_writer_import(f->st, folder, "new", 0, &w), R);
    assert_int_equal(ms_batch_begin(f->st), R);
    assert_int_equal(ms_folder_uids_set(f->st, folder, &(ms_folder_uids){7, 7}), R);
    /* UIDs are read where the backend keeps them. */
    ms_folder_uids u;
    int rc = ms_folder_uids_get(f->st, folder, &u);
    assert_true(rc == 0 || rc == -ENOTSUP);
    if (rc == 0)
        assert_true(u.uidvalidity != 0 && u.uidnext > m.imap_uid);
    ms_attr like = {.mode = 0700};
    g_autofree char *hidden = hidden_name(MS_MB_INCOMING, 1, "new");
    assert_int_equal(ms_mailbox_create(f->st, hidden, MS_MB_INCOMING, &like, &id), R);
    assert_int_equal(set_lock(f->st, first.node.id, 1), R);
    assert_int_equal(ms_mailbox_drop(f->st, first.node.id), R);
    assert_int_equal(ms_deleted_restore(f->st, mbname, NULL, NULL), R);
    assert_int_equal(ms_deleted_purge(f->st, 0, true, NULL), R);
    /* Nothing changed. */
    assert_int_equal(ms_lookup(f->st, folder, name, &a), 0);
    assert_int_equal(ms_lookup(f->st, folder, "new", &a), -ENOENT);
    assert_int_equal(ms_lookup(f->st, ROOT, "new", &a), -ENOENT);
    assert_int_equal(ms_mailbox_find(f->st, hidden, MS_MB_INCOMING, &id), -ENOENT);
    g_array_unref(boxes);
    g_free(name);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    for (size_t i = 0; argc >= 2 && i < G_N_ELEMENTS(BACKENDS); i++)
        if (!strcmp(argv[1], BACKENDS[i].name))
            backend = &BACKENDS[i];
    if (!backend) {
        fprintf(stderr, "usage: conformance BACKEND [DATA]; backends:");
        for (size_t i = 0; i < G_N_ELEMENTS(BACKENDS); i++)
            fprintf(stderr, " %s", BACKENDS[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    backend_data = argc >= 3 ? argv[2] : NULL;
    ms_log_to_stderr(LOG_WARNING);
    const struct CMUnitTest writable[] = {
        cmocka_unit_test_setup_teardown(test_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_folders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_written_in_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_and_refile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xattrs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uid_xattrs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked_mailbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained_mailbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_keeps_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hidden_naming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_folder_uids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modseq, setup, teardown),
    };
    const struct CMUnitTest readonly[] = {
        cmocka_unit_test_setup_teardown(test_ro_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ro_writes_refused, setup, teardown),
    };
    g_autofree char *group = g_strdup_printf("conformance %s", backend->name);
    if (backend->writable)
        return _cmocka_run_group_tests(group, writable, G_N_ELEMENTS(writable), NULL, NULL);
    return _cmocka_run_group_tests(group, readonly, G_N_ELEMENTS(readonly), NULL, NULL);
}
