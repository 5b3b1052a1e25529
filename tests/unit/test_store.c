/*
 * test_store.c — the store API on the sqlite backend, without FUSE.
 * Each test gets a fresh directory with two stores and a journal.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <nettle/sha2.h>
#include <glib/gstdio.h>

#include "mailstore.h"

typedef struct fixture {
    char *dir;
    char *conf_path;
    ms_site *site; /* owns cfg, a, b and the journal */
    const ms_config *cfg;
    ms_store *a, *b;
} fixture;

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);
    f->dir = g_dir_make_tmp("mailfs-unit-XXXXXX", NULL);
    f->conf_path = g_build_filename(f->dir, "site.conf", NULL);
    g_file_set_contents(
        f->conf_path, "[mailfs]\nretain-days = 3\n[store a]\npath = a.db\n[store b]\npath = b.db\n",
        -1, NULL);
    char *err = NULL;
    assert_int_equal(ms_site_open(f->conf_path, MS_OPEN_CREATE, &f->site, &err), 0);
    f->cfg = ms_site_config(f->site);
    assert_int_equal(ms_site_store(f->site, "a", &f->a, &err), 0);
    assert_int_equal(ms_site_store(f->site, "b", &f->b, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    g_unsetenv("MAILFS_FAKE_STAMP_FILE"); /* test_move_source_changed's */
    ms_site_close(f->site);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    g_free(f->conf_path);
    g_free(f->dir);
    g_free(f);
    return 0;
}

static const ms_node ROOT = {MS_ROOT, 0};

static ms_node mkdir_ok(ms_store *st, ms_node parent, const char *name)
{
    ms_attr a;
    assert_int_equal(ms_mkdir(st, parent, name, 0755, 0, 0, &a), 0);
    return a.node;
}

/* A message with these bytes, written through the writer as cp would. */
static ms_node put(ms_store *st, ms_node folder, const char *name, const void *data, size_t len)
{
    ms_attr a;
    ms_writer *w;
    assert_int_equal(ms_message_create(st, folder, name, 0644, 0, 0, &a), 0);
    assert_int_equal(ms_writer_open(st, a.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, data, len, 0), (ssize_t)len);
    assert_int_equal(ms_writer_commit(w, false, NULL), 0);
    ms_writer_close(w);
    return a.node;
}

static char *read_all(ms_store *st, int64_t id, size_t *len)
{
    ms_reader *r;
    assert_int_equal(ms_reader_open(st, id, &r), 0);
    *len = (size_t)ms_reader_size(r);
    char *buf = g_malloc(*len + 1);
    assert_int_equal(ms_reader_pread(r, buf, *len, 0), (ssize_t)*len);
    ms_reader_close(r);
    return buf;
}

static void test_config_errors(void **state)
{
    fixture *f = *state;
    g_autofree char *p = g_build_filename(f->dir, "bad.conf", NULL);
    ms_config *cfg = NULL;
    char *err = NULL;
    g_file_set_contents(p, "[store x]\npth = x.db\n", -1, NULL);
    assert_int_equal(ms_config_load(p, &cfg, &err), -EINVAL);
    assert_non_null(strstr(err, p));
    assert_non_null(strstr(err, "unknown key 'pth'"));
    g_free(err);
    g_file_set_contents(p, "[mailfs]\n", -1, NULL);
    assert_int_equal(ms_config_load(p, &cfg, &err), -EINVAL);
    assert_non_null(strstr(err, "no [store NAME]"));
    g_free(err);
    g_autofree char *missing = g_build_filename(f->dir, "missing.conf", NULL);
    assert_int_equal(ms_config_load(missing, &cfg, &err), -ENOENT);
    g_free(err);
    /* Defaults: journal beside the file, retention as configured. */
    g_autofree char *journal = g_build_filename(f->dir, "journal.db", NULL);
    assert_string_equal(ms_config_journal(f->cfg), journal);
    assert_int_equal(ms_config_retain_days(f->cfg), 3);
}

static void test_open_errors(void **state)
{
    fixture *f = *state;
    ms_store_conf sc = {.name = "x", .backend = "sqlite"};
    g_autofree char *path = g_build_filename(f->dir, "nothere.db", NULL);
    sc.path = path;
    ms_store *st;
    char *err = NULL;
    assert_int_equal(ms_store_open(&sc, 0, &st, &err), -ENOENT);
    assert_non_null(strstr(err, "does not exist"));
    g_free(err);
    g_file_set_contents(path, "definitely not sqlite, definitely not sqlite, padding", -1, NULL);
    assert_int_equal(ms_store_open(&sc, 0, &st, &err), -EINVAL);
    assert_non_null(strstr(err, "not a mailfs store"));
    g_free(err);
    /* create refuses to overwrite */
    assert_int_equal(ms_store_open(&sc, MS_OPEN_CREATE, &st, &err), -EEXIST);
    g_free(err);
}

static void test_tree_and_listing(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "alice");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_node sub = mkdir_ok(f->a, inbox, "sub");
    ms_attr a;
    assert_int_equal(ms_mkdir(f->a, ROOT, "alice", 0755, 0, 0, &a), -EEXIST);
    assert_int_equal(ms_lookup(f->a, mb, "INBOX", &a), 0);
    assert_int_equal(a.node.id, inbox.id);
    assert_int_equal(ms_lookup(f->a, inbox, "sub", &a), 0);
    assert_int_equal(a.node.kind, MS_FOLDER);
    assert_int_equal(a.node.id, sub.id);
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%d", i);
        put(f->a, inbox, name, name, strlen(name));
    }
    assert_int_equal(ms_mkdir(f->a, inbox, "m1", 0755, 0, 0, &a), -EEXIST); /* a message's name */
    ms_node n;
    assert_int_equal(ms_resolve(f->a, "alice/INBOX/sub", &n), 0);
    assert_int_equal(n.id, sub.id);
    assert_int_equal(ms_rmdir(f->a, mb, "INBOX"), -ENOTEMPTY);
    assert_int_equal(ms_rmdir(f->a, inbox, "sub"), 0);
    assert_int_equal(ms_lookup(f->a, inbox, "sub", &a), -ENOENT);
}

typedef struct seen {
    int n;
    uint64_t last;
} seen;

static int count_two(void *ctx, const char *name, const ms_attr *a, uint64_t cookie)
{
    (void)name;
    (void)a;
    seen *s = ctx;
    s->n++;
    s->last = cookie;
    return s->n % 2 == 0; /* stop after every second entry */
}

static void test_list_resumes(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "bob"), "INBOX");
    mkdir_ok(f->a, inbox, "folder");
    for (int i = 0; i < 6; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d.eml", i);
        put(f->a, inbox, name, "x", 1);
    }
    seen s = {0};
    uint64_t cookie = 0;
    int rounds = 0;
    do {
        int before = s.n;
        assert_int_equal(ms_list(f->a, inbox, cookie, count_two, &s), 0);
        if (s.n == before)
            break;
        cookie = s.last;
        rounds++;
    } while (rounds < 10);
    assert_int_equal(s.n, 7); /* the folder and six messages, each once */
}

static void test_bytes_round_trip(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "carol"), "INBOX");
    /* empty, binary with NULs, and 3 MB (spooled to a file, several chunks) */
    size_t big = 3 * 1024 * 1024 + 17;
    char *data = g_malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)(i * 7 + i / 3);
    const size_t sizes[] = {0, 300, big};
    for (size_t k = 0; k < 3; k++) {
        char name[16];
        snprintf(name, sizeof name, "s%zu", k);
        ms_node m = put(f->a, inbox, name, data, sizes[k]);
        size_t len;
        g_autofree char *back = read_all(f->a, m.id, &len);
        assert_int_equal(len, sizes[k]);
        assert_memory_equal(back, data, len);
    }
    /* random-offset writes: a hole reads as zeros */
    ms_attr a;
    ms_writer *w;
    assert_int_equal(ms_message_create(f->a, inbox, "holes", 0644, 0, 0, &a), 0);
    assert_int_equal(ms_writer_open(f->a, a.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "end", 3, 10), 3);
    assert_int_equal(ms_writer_pwrite(w, "start", 5, 0), 5);
    assert_int_equal(ms_writer_commit(w, true, NULL), 0);
    ms_writer_close(w);
    size_t len;
    g_autofree char *back = read_all(f->a, a.node.id, &len);
    assert_int_equal(len, 13);
    assert_memory_equal(back, "start\0\0\0\0\0end", 13);
    g_free(data);
}

/* The stored SHA-256 is the bytes' whatever the order they were written
 * in: appended (hashed while written), out of order, rewritten, cut. */
static void test_sha256_any_write_order(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "hash"), "INBOX");
    static const struct {
        int64_t off;
        const char *data;
        int64_t truncate; /* -1: none */
    } steps[][4] = {
        {{0, "hello ", -1}, {6, "world", -1}, {-1, NULL, -1}},
        {{6, "world", -1}, {0, "hello ", -1}, {-1, NULL, -1}},
        {{0, "hello world", -1}, {0, "HELLO", -1}, {-1, NULL, -1}},
        {{0, "hello world", -1}, {0, NULL, 5}, {-1, NULL, -1}},
        {{0, "hello", -1}, {0, NULL, 9}, {9, "!", -1}, {-1, NULL, -1}},
    };
    for (size_t k = 0; k < G_N_ELEMENTS(steps); k++) {
        char name[16];
        snprintf(name, sizeof name, "m%zu", k);
        ms_attr a;
        ms_writer *w;
        assert_int_equal(ms_message_create(f->a, inbox, name, 0644, 0, 0, &a), 0);
        assert_int_equal(ms_writer_open(f->a, a.node.id, true, &w), 0);
        for (int i = 0; steps[k][i].off >= 0; i++) {
            if (steps[k][i].data)
                assert_int_equal(ms_writer_pwrite(w, steps[k][i].data, strlen(steps[k][i].data),
                                                  steps[k][i].off),
                                 (ssize_t)strlen(steps[k][i].data));
            else
                assert_int_equal(ms_writer_truncate(w, steps[k][i].truncate), 0);
        }
        assert_int_equal(ms_writer_commit(w, false, NULL), 0);
        ms_writer_close(w);
        size_t len;
        g_autofree char *back = read_all(f->a, a.node.id, &len);
        uint8_t want[32];
        struct sha256_ctx h;
        sha256_init(&h);
        sha256_update(&h, len, (const uint8_t *)back);
        sha256_digest(&h, 32, want);
        ms_message_meta meta = {0};
        assert_int_equal(ms_message_get_meta(f->a, a.node.id, true, &meta), 0);
        assert_memory_equal(meta.sha256, want, 32);
        g_free(meta.flags);
    }
}

static void test_uncommitted_create_vanishes(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "dave"), "INBOX");
    ms_attr a, b;
    ms_writer *w;
    assert_int_equal(ms_message_create(f->a, inbox, "half", 0644, 0, 0, &a), 0);
    assert_int_equal(ms_message_create(f->a, inbox, "half", 0644, 0, 0, &b), -EEXIST);
    assert_int_equal(ms_lookup(f->a, inbox, "half", &b), -ENOENT); /* not before commit */
    assert_int_equal(ms_writer_open(f->a, a.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "abc", 3, 0), 3);
    ms_writer_close(w); /* never committed */
    assert_int_equal(ms_lookup(f->a, inbox, "half", &b), -ENOENT);
    assert_int_equal(ms_message_create(f->a, inbox, "half", 0644, 0, 0, &b), 0);
}

/*
 * A create writes nothing to the sqlite store until the message's first
 * commit (sqlite_unborn.c).  Another opener of the store (another
 * process) sees no row and never gets the reserved id; a name it gives
 * away meanwhile makes the commit fail rather than replace anything; a
 * write that needs the row before the first commit makes it; the first
 * commit writes the message whole under the id the create returned.
 */
static void test_unborn_creates(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "una"), "INBOX");
    ms_site *other;
    ms_store *o;
    char *err = NULL;
    assert_int_equal(ms_site_open(f->conf_path, 0, &other, &err), 0);
    assert_int_equal(ms_site_store(other, "a", &o, &err), 0);

    ms_attr a, got;
    assert_int_equal(ms_message_create(f->a, inbox, "m1", 0640, 12, 34, &a), 0);
    assert_int_equal(ms_getattr(f->a, a.node, &got), 0);
    assert_int_equal(got.mode, 0640);
    assert_int_equal(got.uid, 12);
    assert_int_equal(got.gid, 34);
    assert_int_equal(got.size, 0);
    assert_int_equal(ms_getattr(o, a.node, &got), -ENOENT); /* no row */
    ms_node theirs = put(o, inbox, "o1", "xyz", 3);
    assert_true(theirs.id > a.node.id); /* above this process's reserved ids */
    ms_writer *w;
    assert_int_equal(ms_writer_open(f->a, a.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "hello", 5, 0), 5);
    assert_int_equal(ms_writer_commit(w, false, &got), 0);
    ms_writer_close(w);
    assert_int_equal(got.node.id, a.node.id);
    ms_attr seen, o1;
    assert_int_equal(ms_lookup(o, inbox, "m1", &seen), 0);
    assert_int_equal(seen.node.id, a.node.id);
    assert_int_equal(seen.mode, 0640);
    assert_int_equal(ms_lookup(o, inbox, "o1", &o1), 0);
    assert_true(seen.imap_uid > 0 && seen.imap_uid != o1.imap_uid);
    size_t len;
    g_autofree char *bytes = read_all(o, a.node.id, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(bytes, "hello", 5);

    /* The other process takes the name first: this commit is refused. */
    ms_attr b;
    assert_int_equal(ms_message_create(f->a, inbox, "m2", 0644, 0, 0, &b), 0);
    put(o, inbox, "m2", "theirs", 6);
    assert_int_equal(ms_writer_open(f->a, b.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "mine", 4, 0), 4);
    assert_int_equal(ms_writer_commit(w, false, NULL), -EEXIST);
    ms_writer_close(w);
    assert_int_equal(ms_lookup(f->a, inbox, "m2", &seen), 0);
    g_autofree char *kept = read_all(f->a, seen.node.id, &len);
    assert_int_equal(len, 6);
    assert_memory_equal(kept, "theirs", 6);

    /* A setattr before the first commit writes the row (reserved, seen by
     * id only), and the commit keeps what it set. */
    ms_attr c;
    assert_int_equal(ms_message_create(f->a, inbox, "m3", 0644, 0, 0, &c), 0);
    ms_setattr_req req = {.mask = MS_SET_MODE, .mode = 0604};
    assert_int_equal(ms_setattr(f->a, c.node, &req, NULL), 0);
    assert_int_equal(ms_getattr(o, c.node, &got), 0);
    assert_int_equal(ms_lookup(o, inbox, "m3", &seen), -ENOENT);
    assert_int_equal(ms_writer_open(f->a, c.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "x", 1, 0), 1);
    assert_int_equal(ms_writer_commit(w, false, NULL), 0);
    ms_writer_close(w);
    assert_int_equal(ms_lookup(o, inbox, "m3", &seen), 0);
    assert_int_equal(seen.mode, 0604);

    /* Never committed: nothing is left, the name is free for anyone. */
    ms_attr d;
    assert_int_equal(ms_message_create(f->a, inbox, "m4", 0644, 0, 0, &d), 0);
    assert_int_equal(ms_message_create(f->a, inbox, "m4", 0644, 0, 0, &got), -EEXIST);
    assert_int_equal(ms_writer_open(f->a, d.node.id, true, &w), 0);
    ms_writer_close(w);
    assert_int_equal(ms_getattr(f->a, d.node, &got), -ENOENT);
    assert_int_equal(ms_message_create(o, inbox, "m4", 0644, 0, 0, &got), 0);
    ms_site_close(other);
}

static void test_deliver_names(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "erin"), "INBOX");
    put(f->a, inbox, "2.eml", "taken by hand", 13);
    const char *names[] = {"3.eml", "4.eml"}; /* UID 1 went to 2.eml; 2.eml is taken */
    for (int i = 0; i < 2; i++) {
        ms_writer *w;
        ms_attr a;
        assert_int_equal(ms_writer_deliver(f->a, inbox, &w), 0);
        assert_int_equal(ms_writer_pwrite(w, "Subject: hi\n\n", 13, 0), 13);
        assert_int_equal(ms_writer_commit(w, true, &a), 0);
        ms_writer_close(w);
        ms_attr l;
        assert_int_equal(ms_lookup(f->a, inbox, names[i], &l), 0);
        assert_int_equal(l.node.id, a.node.id);
    }
}

static void test_rename_rules(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "frank");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_node arch = mkdir_ok(f->a, mb, "Archive");
    ms_node other = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "grace"), "INBOX");
    ms_node m = put(f->a, inbox, "msg", "hello", 5);
    ms_attr a;
    assert_int_equal(ms_rename(f->a, inbox, "msg", arch, "refiled", false), 0);
    assert_int_equal(ms_lookup(f->a, arch, "refiled", &a), 0);
    assert_int_equal(a.node.id, m.id); /* same object: stable inode */
    assert_int_equal(ms_rename(f->a, arch, "refiled", other, "x", false), -EXDEV);
    assert_int_equal(ms_rename(f->a, mb, "Archive", inbox, "Archive", false), 0);
    assert_int_equal(ms_resolve(f->a, "frank/INBOX/Archive", &m), 0);
    /* a folder into its own subfolder */
    assert_int_equal(ms_rename(f->a, mb, "INBOX", arch, "loop", false), -EINVAL);
    /* a mailbox renamed in its store */
    assert_int_equal(ms_rename(f->a, ROOT, "frank", ROOT, "francis", false), 0);
    assert_int_equal(ms_lookup(f->a, ROOT, "francis", &a), 0);
}

/* A mailbox never becomes a folder, nor a folder a mailbox. */
static void test_rename_between_levels(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "ivan");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    mkdir_ok(f->a, ROOT, "judy");
    assert_int_equal(ms_rename(f->a, ROOT, "judy", mb, "judy", false), -EPERM);
    assert_int_equal(ms_rename(f->a, ROOT, "judy", inbox, "judy", false), -EPERM);
    assert_int_equal(ms_rename(f->a, mb, "INBOX", ROOT, "INBOX", false), -EPERM);
    ms_attr a;
    assert_int_equal(ms_lookup(f->a, ROOT, "judy", &a), 0);
    assert_int_equal(ms_lookup(f->a, mb, "INBOX", &a), 0);
}

/* The ctime the store has for n. */
static int64_t ctime_of(ms_store *st, ms_node n)
{
    ms_attr a;
    assert_int_equal(ms_getattr(st, n, &a), 0);
    return a.ctime_ns;
}

/*
 * ctime moves with every change; a writer of the mount dates new bytes
 * unless it sets the mtime; deliveries keep theirs; any int64 time is
 * kept exactly.
 */
static void test_times(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "kate");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_node m = put(f->a, inbox, "msg", "hello", 5);
    int64_t c = ctime_of(f->a, m);
    ms_setattr_req chmod = {.mask = MS_SET_MODE, .mode = 0600};
    assert_int_equal(ms_setattr(f->a, m, &chmod, NULL), 0);
    assert_true(ctime_of(f->a, m) > c);
    c = ctime_of(f->a, m);
    assert_int_equal(ms_xattr_set(f->a, m, "user.mail.flags", "\\Seen", 5, 0), 0);
    assert_true(ctime_of(f->a, m) > c);
    c = ctime_of(f->a, mb);
    assert_int_equal(ms_xattr_set(f->a, mb, "user.mail.acl", "bob lr", 6, 0), 0);
    assert_true(ctime_of(f->a, mb) > c);
    c = ctime_of(f->a, m);
    assert_int_equal(ms_rename(f->a, inbox, "msg", inbox, "msg2", false), 0);
    assert_true(ctime_of(f->a, m) > c);

    /* Exact times, 0 and negative included. */
    const int64_t times[] = {0, -1, -315619200000000000LL, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < G_N_ELEMENTS(times); i++) {
        ms_setattr_req t = {.mask = MS_SET_MTIME, .mtime_ns = times[i]};
        ms_attr a;
        assert_int_equal(ms_setattr(f->a, inbox, &t, NULL), 0);
        assert_int_equal(ms_getattr(f->a, inbox, &a), 0);
        assert_true(a.mtime_ns == times[i]);
    }

    /* A rewrite of the same size dates the message... */
    ms_setattr_req old = {.mask = MS_SET_MTIME, .mtime_ns = 1000000000};
    assert_int_equal(ms_setattr(f->a, m, &old, NULL), 0);
    ms_writer *w;
    ms_attr a;
    assert_int_equal(ms_writer_open(f->a, m.id, false, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "J", 1, 0), 1);
    assert_int_equal(ms_writer_commit(w, false, &a), 0);
    ms_writer_close(w);
    assert_true(a.mtime_ns > 1000000000);
    assert_true(a.ctime_ns >= a.mtime_ns);
    /* ...unless the writer sets the mtime after writing (cp -a, rsync). */
    assert_int_equal(ms_writer_open(f->a, m.id, false, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "K", 1, 0), 1);
    ms_writer_setattr(w, &old);
    assert_int_equal(ms_writer_commit(w, false, &a), 0);
    ms_writer_close(w);
    assert_true(a.mtime_ns == 1000000000);
    /* A chmod alone leaves the mtime. */
    assert_int_equal(ms_writer_open(f->a, m.id, false, &w), 0);
    ms_writer_setattr(w, &chmod);
    assert_int_equal(ms_writer_commit(w, false, &a), 0);
    ms_writer_close(w);
    assert_true(a.mtime_ns == 1000000000);
    /* An import keeps the date it brings. */
    assert_int_equal(ms_writer_import(f->a, inbox, "imported", 0, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "x", 1, 0), 1);
    ms_writer_setattr(w, &old);
    assert_int_equal(ms_writer_commit(w, false, &a), 0);
    ms_writer_close(w);
    assert_true(a.mtime_ns == 1000000000);
}

/* What r reads from 0 to its size, in pieces (g_free). */
static char *read_whole(ms_reader *r, ssize_t *got)
{
    int64_t size = ms_reader_size(r);
    char *buf = g_malloc((size_t)size + 1);
    *got = 0;
    while (*got < size) {
        ssize_t n = ms_reader_pread(r, buf + *got, 50000, *got);
        if (n <= 0) {
            *got = n < 0 ? n : *got;
            break;
        }
        *got += n;
    }
    return buf;
}

static void assert_reads(ms_reader *r, const char *want)
{
    ssize_t got;
    g_autofree char *buf = read_whole(r, &got);
    assert_int_equal(got, (ssize_t)strlen(want));
    assert_memory_equal(buf, want, strlen(want));
}

/* Unlink, purge, rewrite and rename over a message: its open readers
 * read the bytes they opened, whole; new readers the new ones. */
static void test_reader_keeps_bytes(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "heidi"), "INBOX");
    ms_node m = put(f->a, inbox, "old", "old bytes", 9);
    ms_reader *r, *r2;
    assert_int_equal(ms_reader_open(f->a, m.id, &r), 0);
    assert_int_equal(ms_unlink(f->a, inbox, "old"), 0);
    assert_reads(r, "old bytes");
    ms_purged p;
    assert_int_equal(ms_deleted_purge(f->a, 0, true, &p), 0);
    assert_int_equal(p.messages, 1);
    assert_reads(r, "old bytes"); /* purged, but still being read */
    ms_reader_close(r);
    assert_int_equal(ms_reader_open(f->a, m.id, &r), -ENOENT);
    assert_int_equal(ms_unlink(f->a, inbox, "old"), -ENOENT);

    /* A rewrite: the old bytes go with their last reader. */
    m = put(f->a, inbox, "m", "version one", 11);
    assert_int_equal(ms_reader_open(f->a, m.id, &r), 0);
    assert_int_equal(ms_reader_open(f->a, m.id, &r2), 0);
    ms_writer *w;
    assert_int_equal(ms_writer_open(f->a, m.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "version two!", 12, 0), 12);
    assert_int_equal(ms_writer_commit(w, false, NULL), 0);
    ms_writer_close(w);
    ms_reader_close(r2);
    assert_reads(r, "version one");
    ms_reader_close(r);
    assert_int_equal(ms_reader_open(f->a, m.id, &r), 0);
    assert_reads(r, "version two!");

    /* Replaced by a rename: kept as a deleted item, readers unaffected. */
    put(f->a, inbox, "n", "the newcomer", 12);
    assert_int_equal(ms_rename(f->a, inbox, "n", inbox, "m", false), 0);
    assert_int_equal(ms_deleted_purge(f->a, 0, true, &p), 0);
    assert_int_equal(p.messages, 1);
    assert_reads(r, "version two!");
    ms_reader_close(r);
}

/*
 * A second open of the store stands for another process (mailfsctl
 * purge beside the daemon): its purge and rewrites leave alone what the
 * first one's readers have open, and those get ENOENT once it is purged.
 */
static void test_reader_keeps_bytes_across_opens(void **state)
{
    fixture *f = *state;
    ms_store *other = NULL;
    char *err = NULL;
    assert_int_equal(ms_store_open(ms_config_find_store(f->cfg, "a"), 0, &other, &err), 0);
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "ida"), "INBOX");
    ms_node m = put(f->a, inbox, "m", "first bytes", 11);
    ms_reader *r;
    assert_int_equal(ms_reader_open(f->a, m.id, &r), 0);
    /* Rewritten through the other open, then unlinked and purged there. */
    ms_writer *w;
    assert_int_equal(ms_writer_open(other, m.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "second", 6, 0), 6);
    assert_int_equal(ms_writer_commit(w, false, NULL), 0);
    ms_writer_close(w);
    assert_int_equal(ms_unlink(other, inbox, "m"), 0);
    assert_int_equal(ms_deleted_purge(other, 0, true, NULL), 0);
    assert_reads(r, "first bytes");
    ms_reader_close(r);
    assert_int_equal(ms_reader_open(f->a, m.id, &r), -ENOENT);
    /* A reader of the other open keeps its bytes across this one's purge. */
    m = put(f->a, inbox, "n", "kept bytes", 10);
    assert_int_equal(ms_reader_open(other, m.id, &r), 0);
    assert_int_equal(ms_unlink(f->a, inbox, "n"), 0);
    assert_int_equal(ms_deleted_purge(f->a, 0, true, NULL), 0);
    assert_reads(r, "kept bytes");
    ms_reader_close(r);
    /* Nor does dropping the whole mailbox (a purged retained copy). */
    m = put(f->a, inbox, "o", "last bytes", 10);
    assert_int_equal(ms_reader_open(f->a, m.id, &r), 0);
    ms_attr mb;
    assert_int_equal(ms_lookup(f->a, ROOT, "ida", &mb), 0);
    assert_int_equal(ms_mailbox_drop(other, mb.node.id), 0);
    assert_reads(r, "last bytes");
    ms_reader_close(r);
    ms_store_close(other);
}

/* One round of test_reader_race: a message, a reader and a change. */
typedef struct race {
    ms_store *st;
    ms_store *changer; /* st, or a second open of it: another process */
    ms_node folder;
    int64_t id;
    int round;
    char *before, *after; /* the message's bytes; after NULL: unlinked and purged */
    bool ordered;         /* open, change, then read; else all at once */
    GMutex lock;
    GCond cond;
    int stage; /* ordered: 1 reader opened, 2 changed */
    /* What the reader saw: 0 the old bytes, 1 the new, -ENOENT, else an error */
    int seen;
} race;

static void race_wait(race *r, int stage)
{
    g_mutex_lock(&r->lock);
    while (r->stage < stage)
        g_cond_wait(&r->cond, &r->lock);
    g_mutex_unlock(&r->lock);
}

static void race_reach(race *r, int stage)
{
    g_mutex_lock(&r->lock);
    r->stage = stage;
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
}

static gpointer race_reader(gpointer p)
{
    race *r = p;
    ms_reader *rd;
    int rc = ms_reader_open(r->st, r->id, &rd);
    if (r->ordered)
        race_reach(r, 1);
    if (rc) {
        r->seen = rc;
        return NULL;
    }
    if (r->ordered)
        race_wait(r, 2);
    ssize_t got;
    g_autofree char *buf = read_whole(rd, &got);
    ms_reader_close(rd);
    if (got == (ssize_t)strlen(r->before) && !memcmp(buf, r->before, (size_t)got))
        r->seen = 0;
    else if (r->after && got == (ssize_t)strlen(r->after) && !memcmp(buf, r->after, (size_t)got))
        r->seen = 1;
    else
        r->seen = got < 0 ? (int)got : -EILSEQ; /* short or mixed: the bug */
    return NULL;
}

/* Even rounds rewrite the message, odd ones unlink and purge it. */
static gpointer race_changer(gpointer p)
{
    race *r = p;
    if (r->ordered)
        race_wait(r, 1);
    int rc;
    if (r->after) {
        ms_writer *w = NULL;
        rc = ms_writer_open(r->changer, r->id, true, &w);
        if (!rc)
            rc = ms_writer_pwrite(w, r->after, strlen(r->after), 0) < 0 ? -EIO : 0;
        if (!rc)
            rc = ms_writer_commit(w, false, NULL);
        ms_writer_close(w);
    } else {
        g_autofree char *name = g_strdup_printf("m%d", r->round);
        rc = ms_unlink(r->changer, r->folder, name);
        if (!rc)
            rc = ms_deleted_purge(r->changer, 0, true, NULL);
    }
    g_assert(rc == 0); /* not cmocka's: this is not the test's thread */
    if (r->ordered)
        race_reach(r, 2);
    return NULL;
}

/* Bytes of round i, several chunks long, unlike any other round's. */
static char *race_bytes(int i, const char *what, size_t len)
{
    char *s = g_malloc(len + 1);
    int head = snprintf(s, len, "round %d %s\n", i, what);
    for (size_t k = (size_t)head; k < len; k++)
        s[k] = (char)('a' + (k * 7 + (size_t)i) % 26);
    s[len] = '\0';
    return s;
}

/*
 * A reader opened while its message is rewritten, or unlinked and
 * purged, many times over in two threads: it reads the whole old
 * message, the whole new one, or (purged before it opened) ENOENT; never
 * short or mixed bytes.  In ordered rounds the change falls between the
 * open and the first read, so the old bytes are the only right answer.
 * Half the changes go through a second open of the store, as another
 * process (mailfsctl purge) would make them.
 */
static void test_reader_race(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "rita"), "INBOX");
    ms_store *other = NULL;
    char *err = NULL;
    assert_int_equal(ms_store_open(ms_config_find_store(f->cfg, "a"), 0, &other, &err), 0);
    int counts[4] = {0}; /* old, new, gone, ordered */
    for (int i = 0; i < 200; i++) {
        race r = {.st = f->a, .folder = inbox, .round = i, .ordered = i % 4 < 2};
        r.changer = i % 8 < 4 ? f->a : other;
        r.before = race_bytes(i, "old", 300000 + (size_t)i);
        r.after = i % 2 ? NULL : race_bytes(i, "new", 140000 + (size_t)i);
        g_autofree char *name = g_strdup_printf("m%d", i);
        r.id = put(f->a, inbox, name, r.before, strlen(r.before)).id;
        g_mutex_init(&r.lock);
        g_cond_init(&r.cond);
        /* Free rounds start one or the other thread first. */
        bool changer_first = i % 4 == 3;
        GThread *b = changer_first ? g_thread_new("changer", race_changer, &r) : NULL;
        GThread *a = g_thread_new("reader", race_reader, &r);
        if (!changer_first)
            b = g_thread_new("changer", race_changer, &r);
        g_thread_join(a);
        g_thread_join(b);
        g_mutex_clear(&r.lock);
        g_cond_clear(&r.cond);
        if (r.seen != 0 && r.seen != 1 && r.seen != -ENOENT)
            fail_msg("round %d: the reader got %s", i, g_strerror(-r.seen));
        if (r.ordered)
            assert_int_equal(r.seen, 0);
        counts[r.seen == -ENOENT ? 2 : r.seen]++;
        counts[3] += r.ordered;
        g_free(r.before);
        g_free(r.after);
    }
    ms_store_close(other);
    print_message("reader race: %d old, %d new, %d gone (%d ordered rounds)\n", counts[0],
                  counts[1], counts[2], counts[3]);
}

static void test_names_and_xattrs(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "ivan");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_attr a;
    assert_int_equal(ms_mkdir(f->a, ROOT, ".", 0755, 0, 0, &a), -EINVAL);
    assert_int_equal(ms_mkdir(f->a, ROOT, "..", 0755, 0, 0, &a), -EINVAL);
    assert_int_equal(ms_mkdir(f->a, ROOT, "a/b", 0755, 0, 0, &a), -EINVAL);
    assert_int_equal(ms_mkdir(f->a, ROOT, "", 0755, 0, 0, &a), -EINVAL);
    mkdir_ok(f->a, ROOT, "sp ace \xe9\xff"); /* any other bytes */
    ms_node m = put(f->a, inbox, "m", "x", 1);
    assert_int_equal(ms_xattr_set(f->a, m, "user.mail.flags", "\\Seen $Label1", 13, 0), 0);
    char *v;
    size_t len;
    assert_int_equal(ms_xattr_get(f->a, m, "user.mail.flags", &v, &len), 0);
    assert_int_equal(len, 13);
    assert_memory_equal(v, "\\Seen $Label1", 13);
    g_free(v);
    assert_int_equal(ms_xattr_set(f->a, m, "user.mail.flags", "(bad", 4, 0), -EINVAL);
    assert_int_equal(ms_xattr_set(f->a, m, "user.other", "x", 1, 0), -ENOTSUP);
    assert_int_equal(ms_xattr_set(f->a, inbox, "user.mail.special-use", "\\Nope", 5, 0), -EINVAL);
    assert_int_equal(ms_xattr_set(f->a, inbox, "user.mail.special-use", "\\Sent", 5, 0), 0);
    assert_int_equal(ms_xattr_set(f->a, mb, "user.mail.acl", "bob lrs\nanyone l", 16, 0), 0);
    assert_int_equal(ms_xattr_set(f->a, mb, "user.mail.acl", "bob lrZ", 7, 0), -EINVAL);
    assert_int_equal(ms_xattr_set(f->a, mb, "user.mail.acl", "x l", 3, XATTR_CREATE), -EEXIST);
    char *names;
    assert_int_equal(ms_xattr_list(f->a, m, &names, &len), 0);
    assert_int_equal(len, strlen("user.mail.uid") + 1 + strlen("user.mail.flags") + 1);
    g_free(names);
    assert_int_equal(ms_xattr_remove(f->a, m, "user.mail.flags"), 0);
    assert_int_equal(ms_xattr_get(f->a, m, "user.mail.flags", &v, &len), -ENODATA);
    /* names longer than NAME_MAX: ENAMETOOLONG, also for lookups */
    char longname[MS_NAME_MAX + 2];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(ms_mkdir(f->a, ROOT, longname, 0755, 0, 0, &a), -ENAMETOOLONG);
    assert_int_equal(ms_lookup(f->a, inbox, longname, &a), -ENAMETOOLONG);
    longname[MS_NAME_MAX] = '\0';
    assert_int_equal(ms_lookup(f->a, inbox, longname, &a), -ENOENT);
    /* flags: canonical form, strict refusals; verbatim copies keep bytes */
    static const char set[] = "  \\seen $A \\Seen $a\\FLAGGED";
    assert_int_equal(ms_xattr_set(f->a, m, "user.mail.flags", set, strlen(set), 0), -EINVAL);
    static const char dup[] = "  \\seen $A \\Seen $a \\FLAGGED ";
    assert_int_equal(ms_xattr_set(f->a, m, "user.mail.flags", dup, strlen(dup), 0), 0);
    assert_int_equal(ms_xattr_get(f->a, m, "user.mail.flags", &v, &len), 0);
    assert_int_equal(len, strlen("\\Seen $A \\Flagged"));
    assert_memory_equal(v, "\\Seen $A \\Flagged", len);
    g_free(v);
    assert_int_equal(ms_xattr_set(f->a, m, "user.mail.flags", "\\Recent", 7, 0), -EINVAL);
    assert_int_equal(ms_xattr_set(f->a, m, "user.mail.flags", "a\nb", 3, 0), -EINVAL);
    assert_int_equal(ms_xattr_set(f->a, m, "user.mail.flags", "a\nb", 3, MS_XATTR_VERBATIM), 0);
    assert_int_equal(ms_xattr_set(f->a, mb, "user.mail.acl", "bob l\nbob r", 11, 0), -EINVAL);
    assert_int_equal(ms_xattr_set(f->a, mb, "user.mail.acl", "bob l\n\nann r", 12, 0), -EINVAL);
    assert_int_equal(ms_xattr_set(f->a, mb, "user.mail.acl", "bob l x", 7, 0), -EINVAL);
    assert_int_equal(ms_xattr_set(f->a, mb, "user.mail.acl", "bob l\n", 6, 0), 0);
    assert_int_equal(ms_xattr_get(f->a, mb, "user.mail.acl", &v, &len), 0);
    assert_int_equal(len, 5);
    g_free(v);
}

static void test_locked_mailbox_refuses_writes(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "judy");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_node m = put(f->a, inbox, "m", "x", 1);
    assert_int_equal(ms_mailbox_set(f->a, mb.id, &(ms_mailbox_change){NULL, -1, 42, -1, NULL, 0}),
                     0);
    assert_int_equal(ms_mailbox_set(f->a, mb.id, &(ms_mailbox_change){NULL, -1, 43, -1, NULL, 0}),
                     -EBUSY);
    ms_attr a;
    ms_writer *w;
    assert_int_equal(ms_message_create(f->a, inbox, "n", 0644, 0, 0, &a), -EBUSY);
    assert_int_equal(ms_unlink(f->a, inbox, "m"), -EBUSY);
    assert_int_equal(ms_xattr_set(f->a, m, "user.mail.flags", "\\Seen", 5, 0), -EBUSY);
    assert_int_equal(ms_writer_deliver(f->a, inbox, &w), 0);
    assert_int_equal(ms_writer_commit(w, false, NULL), -EBUSY);
    ms_writer_close(w);
    size_t len;
    g_autofree char *back = read_all(f->a, m.id, &len); /* reads go on */
    assert_int_equal(len, 1);
    assert_int_equal(ms_mailbox_set(f->a, mb.id, &(ms_mailbox_change){NULL, -1, 0, -1, NULL, 0}),
                     0);
    assert_int_equal(ms_unlink(f->a, inbox, "m"), 0);
}

static int count_deleted(void *ctx, const ms_deleted *d)
{
    int *n = ctx;
    n[d->kind]++;
    return 0;
}

/* Bytes of the visible message at path ("MAILBOX/FOLDER/NAME"). */
static char *read_path(ms_store *st, const char *dir, const char *name, size_t *len)
{
    ms_node folder;
    ms_attr a;
    assert_int_equal(ms_resolve(st, dir, &folder), 0);
    assert_int_equal(ms_lookup(st, folder, name, &a), 0);
    return read_all(st, a.node.id, len);
}

static void test_deleted_items(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "kim");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_node m1 = put(f->a, inbox, "m", "v1", 2);
    assert_int_equal(ms_xattr_set(f->a, m1, "user.mail.flags", "\\Seen", 5, 0), 0);
    assert_int_equal(ms_xattr_set(f->a, mb, "user.mail.acl", "bob lr", 6, 0), 0);
    assert_int_equal(ms_unlink(f->a, inbox, "m"), 0);
    ms_attr a;
    assert_int_equal(ms_lookup(f->a, inbox, "m", &a), -ENOENT);
    assert_int_equal(ms_getattr(f->a, m1, &a), -ENOENT); /* gone from the tree */
    put(f->a, inbox, "m", "v2", 2);
    put(f->a, inbox, "t", "v3", 2);
    /* a rename over a message deletes it: kept too */
    assert_int_equal(ms_rename(f->a, inbox, "t", inbox, "m", false), 0);
    int n[4] = {0};
    assert_int_equal(ms_deleted_list(f->a, NULL, count_deleted, n), 0);
    assert_int_equal(n[MS_MESSAGE], 2);
    /* never overwritten */
    assert_int_equal(ms_deleted_restore(f->a, "kim", "INBOX/m", NULL), -EEXIST);
    size_t len;
    g_autofree char *v3 = read_path(f->a, "kim/INBOX", "m", &len);
    assert_memory_equal(v3, "v3", 2);
    /* the newest deletion of a name comes back */
    assert_int_equal(ms_unlink(f->a, inbox, "m"), 0);
    int64_t back = 0;
    assert_int_equal(ms_deleted_restore(f->a, "kim", "INBOX/m", &back), 0);
    assert_int_equal(back, 1);
    g_autofree char *again = read_path(f->a, "kim/INBOX", "m", &len);
    assert_memory_equal(again, "v3", 2);
    assert_int_equal(ms_deleted_restore(f->a, "kim", "INBOX/nothing", NULL), -ENOENT);
    /* not into a mailbox being moved */
    assert_int_equal(ms_unlink(f->a, inbox, "m"), 0);
    assert_int_equal(ms_mailbox_set(f->a, mb.id, &(ms_mailbox_change){NULL, -1, 42, -1, NULL, 0}),
                     0);
    assert_int_equal(ms_deleted_restore(f->a, "kim", "INBOX/m", NULL), -EBUSY);
    assert_int_equal(ms_mailbox_set(f->a, mb.id, &(ms_mailbox_change){NULL, -1, 0, -1, NULL, 0}),
                     0);
    assert_int_equal(ms_deleted_restore(f->a, "kim", "INBOX/m", NULL), 0);
    /* the items follow a rename of the mailbox */
    assert_int_equal(ms_rename(f->a, ROOT, "kim", ROOT, "kim2", false), 0);
    memset(n, 0, sizeof n);
    assert_int_equal(ms_deleted_list(f->a, "kim2", count_deleted, n), 0);
    assert_int_equal(n[MS_MESSAGE], 2);
    ms_store_stats st;
    assert_int_equal(ms_store_stats_get(f->a, &st), 0);
    assert_int_equal(st.recoverable_messages, 2);
    assert_int_equal(st.messages, 1);
    /* rm -rf of the mailbox, then back whole: flags and ACL too */
    assert_int_equal(ms_unlink(f->a, inbox, "m"), 0);
    assert_int_equal(ms_rmdir(f->a, mb, "INBOX"), 0);
    assert_int_equal(ms_rmdir(f->a, ROOT, "kim2"), 0);
    assert_int_equal(ms_lookup(f->a, ROOT, "kim2", &a), -ENOENT);
    memset(n, 0, sizeof n);
    assert_int_equal(ms_deleted_list(f->a, NULL, count_deleted, n), 0);
    assert_int_equal(n[MS_MAILBOX], 1);
    assert_int_equal(n[MS_FOLDER], 1);
    assert_int_equal(ms_deleted_restore(f->a, "kim2", NULL, &back), 0);
    assert_int_equal(back, 1);
    g_autofree char *v3b = read_path(f->a, "kim2/INBOX", "m", &len);
    assert_memory_equal(v3b, "v3", 2);
    assert_int_equal(ms_lookup(f->a, ROOT, "kim2", &a), 0);
    char *v;
    assert_int_equal(ms_xattr_get(f->a, a.node, "user.mail.acl", &v, &len), 0);
    assert_memory_equal(v, "bob lr", 6);
    g_free(v);
    /* purge: nothing within the retention, everything with all */
    ms_purged p;
    assert_int_equal(ms_deleted_purge(f->a, 3, false, &p), 0);
    assert_int_equal(p.messages, 0);
    assert_int_equal(ms_deleted_purge(f->a, 3, true, &p), 0);
    assert_int_equal(p.messages, 2);
    memset(n, 0, sizeof n);
    assert_int_equal(ms_deleted_list(f->a, NULL, count_deleted, n), 0);
    assert_int_equal(n[MS_MESSAGE] + n[MS_FOLDER] + n[MS_MAILBOX], 0);
    assert_int_equal(ms_store_stats_get(f->a, &st), 0);
    assert_int_equal(st.recoverable_messages, 0);
}

static int count_state(void *ctx, const ms_mailbox_info *info)
{
    int *n = ctx;
    n[info->state]++;
    return 0;
}

/* How many mailboxes of st are in state. */
static int count_hidden(ms_store *st, ms_mb_state state)
{
    int n[4] = {0};
    assert_int_equal(ms_mailbox_scan(st, count_state, n), 0);
    return n[state];
}

static void test_move_and_undo(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "kim");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_node sub = mkdir_ok(f->a, inbox, "2019");
    put(f->a, inbox, "one", "first", 5);
    ms_node two = put(f->a, sub, "two", "second", 6);
    assert_int_equal(ms_xattr_set(f->a, two, "user.mail.flags", "\\Flagged", 8, 0), 0);
    ms_journal *j; /* the site's */
    char *err = NULL;
    assert_int_equal(ms_site_journal(f->site, &j, &err), 0);
    int64_t id = 0;
    ms_move_opts o = {.retain_days = 1};
    assert_int_equal(ms_move(j, f->a, f->b, "kim", &o, &id), 0);
    ms_attr a;
    assert_int_equal(ms_lookup(f->a, ROOT, "kim", &a), -ENOENT);
    ms_node n;
    assert_int_equal(ms_resolve(f->b, "kim/INBOX/2019", &n), 0);
    assert_int_equal(ms_lookup(f->b, n, "two", &a), 0);
    char *v;
    size_t len;
    assert_int_equal(ms_xattr_get(f->b, a.node, "user.mail.flags", &v, &len), 0);
    assert_memory_equal(v, "\\Flagged", 8);
    g_free(v);
    assert_int_equal(ms_move(j, f->a, f->b, "kim", &o, NULL), -ENOENT); /* gone from a */
    ms_move_info mi;
    assert_int_equal(ms_journal_get(j, id, &mi), 0);
    assert_int_equal(mi.state, MS_MOVE_DONE);
    assert_int_equal(mi.done_messages, 2);
    ms_store *both[] = {f->a, f->b};
    assert_int_equal(ms_recover(j, both, 2, NULL, 1, false, NULL), 0); /* nothing to settle */
    /* new mail in the target, then undo: all of it comes back */
    assert_int_equal(ms_resolve(f->b, "kim/INBOX", &n), 0);
    put(f->b, n, "three", "third", 5);
    int64_t back = 0;
    assert_int_equal(ms_undo(f->site, id, &back), 0);
    assert_int_equal(ms_resolve(f->a, "kim/INBOX", &n), 0);
    assert_int_equal(ms_lookup(f->a, n, "three", &a), 0);
    assert_int_equal(ms_lookup(f->a, n, "one", &a), 0);
    assert_int_equal(ms_undo(f->site, id, &back), -EINVAL); /* once */
    /* One retained copy, the target's of the undo (the undo took back the
     * source's); purged are both moves, the undone one and the undo. */
    assert_int_equal(count_hidden(f->a, MS_MB_RETAINED), 0);
    assert_int_equal(count_hidden(f->b, MS_MB_RETAINED), 1);
    assert_int_equal(ms_purge(f->site, true), 2);
    assert_int_equal(count_hidden(f->a, MS_MB_RETAINED) + count_hidden(f->b, MS_MB_RETAINED), 0);
}

/* ------------------------------------------------------ IMAP UIDs */

static ms_folder_uids uids_of(ms_store *st, ms_node folder)
{
    ms_folder_uids u;
    assert_int_equal(ms_folder_uids_get(st, folder, &u), 0);
    return u;
}

static void assert_uids(ms_store *st, ms_node folder, uint32_t uidvalidity, int64_t uidnext)
{
    ms_folder_uids u = uids_of(st, folder);
    assert_int_equal(u.uidvalidity, uidvalidity);
    assert_int_equal(u.uidnext, uidnext);
}

static int64_t uid_of(ms_store *st, ms_node folder, const char *name)
{
    ms_attr a;
    assert_int_equal(ms_lookup(st, folder, name, &a), 0);
    return a.imap_uid;
}

/* One SQL statement run on a store file by the sqlite3 shell, as an admin
 * (or another program) would: its output, trimmed (g_free). */
static char *sql_on(const char *db, const char *sql)
{
    g_autofree char *q = g_shell_quote(sql), *qdb = g_shell_quote(db);
    g_autofree char *cmd = g_strdup_printf("sqlite3 %s %s", qdb, q);
    char *out = NULL;
    gint status = -1;
    assert_true(g_spawn_command_line_sync(cmd, &out, NULL, &status, NULL));
    assert_int_equal(status, 0);
    return g_strstrip(out);
}

/* SQL that takes a v8 store back to v7: the modseq triggers and columns. */
#define UNDO_V8                                                                                    \
    "DROP TRIGGER mailbox_modseq_ins; DROP TRIGGER mailbox_modseq_upd;"                            \
    "DROP TRIGGER folder_modseq_ins; DROP TRIGGER folder_modseq_upd;"                              \
    "DROP TRIGGER folder_modseq_from; DROP TRIGGER folder_modseq_del;"                             \
    "DROP TRIGGER message_modseq_ins; DROP TRIGGER message_modseq_upd;"                            \
    "DROP TRIGGER message_modseq_from; DROP TRIGGER message_modseq_del;"                           \
    "ALTER TABLE mailbox DROP COLUMN modseq; ALTER TABLE mailbox DROP COLUMN highest_modseq;"      \
    "ALTER TABLE folder DROP COLUMN modseq; ALTER TABLE message DROP COLUMN modseq;"

static uint64_t modseq_of(ms_store *st, ms_node n)
{
    ms_attr a;
    assert_int_equal(ms_getattr(st, n, &a), 0);
    return a.modseq;
}

/*
 * A v7 store (before change sequences) is upgraded when opened
 * read-write: every node it holds gets modseq 1, below the mailbox's
 * floor, and the first change after the upgrade stamps what it changed
 * (and its parent) at or above the floor, and nothing else.
 */
static void test_migration_v7_modseq(void **state)
{
    fixture *f = *state;
    g_autofree char *path = g_build_filename(f->dir, "v7.db", NULL);
    ms_store_conf sc = {.name = "v7", .backend = "sqlite", .path = path};
    ms_store *st;
    char *err = NULL;
    assert_int_equal(ms_store_open(&sc, MS_OPEN_CREATE, &st, &err), 0);
    ms_node mb = mkdir_ok(st, ROOT, "seven");
    ms_node inbox = mkdir_ok(st, mb, "INBOX");
    ms_node sub = mkdir_ok(st, inbox, "Sub");
    put(st, inbox, "a", "first", 5);
    put(st, inbox, "b", "second", 6);
    ms_store_close(st);
    g_free(sql_on(path, UNDO_V8 "PRAGMA user_version = 7;"));
    g_autofree char *cols = sql_on(path, "SELECT count(*) FROM pragma_table_info('message')"
                                         " WHERE name = 'modseq'");
    assert_string_equal(cols, "0");
    assert_int_equal(ms_store_open(&sc, 0, &st, &err), 0);
    g_autofree char *ver = sql_on(path, "PRAGMA user_version");
    assert_string_equal(ver, "8");
    ms_attr a, b;
    assert_int_equal(ms_lookup(st, inbox, "a", &a), 0);
    assert_int_equal(ms_lookup(st, inbox, "b", &b), 0);
    assert_int_equal(a.modseq, 1);
    assert_int_equal(b.modseq, 1);
    assert_int_equal(modseq_of(st, mb), 1);
    assert_int_equal(modseq_of(st, inbox), 1);
    assert_int_equal(modseq_of(st, sub), 1);
    uint64_t floor = 0;
    assert_int_equal(ms_mailbox_modseq(st, mb.id, &floor), 0);
    assert_true(floor > 1);
    assert_int_equal(ms_xattr_set(st, a.node, "user.mail.flags", "\\Seen", 5, 0), 0);
    assert_true(modseq_of(st, a.node) >= floor);
    assert_true(modseq_of(st, inbox) >= floor);
    assert_int_equal(modseq_of(st, b.node), 1);
    assert_int_equal(modseq_of(st, sub), 1);
    assert_int_equal(modseq_of(st, mb), 1);
    /* Bytes unchanged by the upgrade. */
    size_t len;
    g_autofree char *bytes = read_all(st, b.node.id, &len);
    assert_memory_equal(bytes, "second", 6);
    assert_int_equal(ms_mailbox_modseq(st, 999999, &floor), -ENOENT);
    ms_store_close(st);
}

/*
 * A v5 store (before UIDVALIDITY) is upgraded when opened read-write: its
 * folders get a UIDVALIDITY (the upgrade's time) and keep their UIDNEXT,
 * its messages their UIDs and bytes; a folder made after it gets a later
 * UIDVALIDITY.  Read-only, it is refused until then.
 */
static void test_migration_v5_uidvalidity(void **state)
{
    fixture *f = *state;
    g_autofree char *path = g_build_filename(f->dir, "old.db", NULL);
    ms_store_conf sc = {.name = "old", .backend = "sqlite", .path = path};
    ms_store *st;
    char *err = NULL;
    assert_int_equal(ms_store_open(&sc, MS_OPEN_CREATE, &st, &err), 0);
    ms_node mb = mkdir_ok(st, ROOT, "old");
    ms_node inbox = mkdir_ok(st, mb, "INBOX");
    mkdir_ok(st, inbox, "Sub");
    put(st, inbox, "a", "first", 5);
    put(st, inbox, "b", "second", 6);
    assert_int_equal(ms_unlink(st, inbox, "a"), 0);
    ms_store_close(st);
    /* The v5 schema: v6 only added the column and the meta row, v7 the
     * noselect column, v8 the modseq columns and triggers. */
    g_free(sql_on(path,
                  UNDO_V8 "ALTER TABLE folder DROP COLUMN uidvalidity;"
                          "ALTER TABLE folder DROP COLUMN noselect;"
                          "DELETE FROM meta WHERE key = 'uidvalidity'; PRAGMA user_version = 5;"));
    assert_int_equal(ms_store_open(&sc, MS_OPEN_READONLY, &st, &err), -EPROTO);
    assert_non_null(strstr(err, "schema upgrade"));
    g_free(err);
    err = NULL;
    int64_t before = ms_now_ns() / 1000000000;
    assert_int_equal(ms_store_open(&sc, 0, &st, &err), 0);
    int64_t after = ms_now_ns() / 1000000000;
    g_autofree char *ver = sql_on(path, "PRAGMA user_version");
    assert_string_equal(ver, "8");
    assert_int_equal(ms_resolve(st, "old/INBOX", &inbox), 0);
    ms_folder_uids u = uids_of(st, inbox);
    assert_true(u.uidvalidity >= before && u.uidvalidity <= after);
    assert_int_equal(u.uidnext, 3);
    ms_node sub;
    assert_int_equal(ms_resolve(st, "old/INBOX/Sub", &sub), 0);
    assert_int_equal(uids_of(st, sub).uidvalidity, u.uidvalidity);
    assert_int_equal(uids_of(st, sub).uidnext, 1);
    assert_int_equal(uid_of(st, inbox, "b"), 2);
    size_t len;
    ms_attr a;
    assert_int_equal(ms_lookup(st, inbox, "b", &a), 0);
    g_autofree char *bytes = read_all(st, a.node.id, &len);
    assert_memory_equal(bytes, "second", 6);
    /* Deleted items were upgraded too: restored, "a" keeps its UID. */
    assert_int_equal(ms_deleted_restore(st, "old", "INBOX/a", NULL), 0);
    assert_int_equal(uid_of(st, inbox, "a"), 1);
    ms_node fresh = mkdir_ok(st, inbox, "New");
    assert_true(uids_of(st, fresh).uidvalidity > u.uidvalidity);
    ms_store_close(st);
}

/* An import with a given UID, as a move writes. */
static void import_ok(ms_store *st, ms_node folder, const char *name, int64_t uid)
{
    ms_writer *w;
    ms_attr a;
    assert_int_equal(ms_writer_import(st, folder, name, uid, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, name, strlen(name), 0), (ssize_t)strlen(name));
    assert_int_equal(ms_writer_commit(w, false, &a), 0);
    ms_writer_close(w);
    assert_int_equal(a.imap_uid, uid);
}

/* The floor of mailbox (ms_mailbox_modseq). */
static uint64_t floor_of(ms_store *st, ms_node mailbox)
{
    uint64_t v = 0;
    assert_int_equal(ms_mailbox_modseq(st, mailbox.id, &v), 0);
    return v;
}

static uint64_t modseq_at(ms_store *st, ms_node parent, const char *name)
{
    ms_attr a;
    assert_int_equal(ms_lookup(st, parent, name, &a), 0);
    return a.modseq;
}

/*
 * The sqlite store's write paths beyond the tree writes of the
 * conformance suite: an import with a UID (a move's copy), a restore of
 * deleted items, a mailbox renamed, a folder made a mere parent.  Each
 * moves what it changed to the floor or above and leaves a control
 * message and folder below it.
 */
static void test_modseq_sqlite_paths(void **state)
{
    fixture *f = *state;
    ms_store *st = f->a;
    ms_node mb = mkdir_ok(st, ROOT, "paths");
    ms_node inbox = mkdir_ok(st, mb, "INBOX");
    ms_node ctl = mkdir_ok(st, mb, "Control");
    put(st, ctl, "keep", "k", 1);
    put(st, inbox, "gone", "g", 1);
    uint64_t fl;

    fl = floor_of(st, mb);
    import_ok(st, inbox, "imported", 40);
    assert_true(modseq_at(st, inbox, "imported") >= fl);
    assert_true(modseq_of(st, inbox) >= fl);
    assert_true(modseq_of(st, ctl) < fl);
    assert_true(modseq_at(st, ctl, "keep") < fl);

    assert_int_equal(ms_unlink(st, inbox, "gone"), 0);
    fl = floor_of(st, mb);
    assert_int_equal(ms_deleted_restore(st, "paths", "INBOX/gone", NULL), 0);
    assert_true(modseq_at(st, inbox, "gone") >= fl);
    assert_true(modseq_of(st, inbox) >= fl);
    assert_true(modseq_at(st, inbox, "imported") < fl);
    assert_true(modseq_of(st, ctl) < fl);

    fl = floor_of(st, mb);
    assert_int_equal(ms_rename(st, ROOT, "paths", ROOT, "paths2", false), 0);
    assert_true(modseq_at(st, ROOT, "paths2") >= fl);
    assert_true(modseq_of(st, ctl) < fl);
    assert_true(floor_of(st, mb) > fl);

    fl = floor_of(st, mb);
    ms_node empty = mkdir_ok(st, mb, "Parent");
    assert_true(modseq_of(st, empty) >= fl);
    fl = floor_of(st, mb);
    assert_int_equal(ms_folder_unselect(st, empty), 0);
    assert_true(modseq_of(st, empty) >= fl);
    assert_true(modseq_of(st, mb) >= fl);
    assert_true(modseq_of(st, ctl) < fl);
    assert_true(modseq_at(st, ctl, "keep") < fl);

    /* A mailbox made later starts above every counter of the store. */
    uint64_t before = floor_of(st, mb);
    ms_node other = mkdir_ok(st, ROOT, "later");
    assert_true(floor_of(st, other) > before);
}

/*
 * A move keeps UIDVALIDITY, UIDNEXT and every UID of every folder (gaps
 * of expunged messages and a UIDVALIDITY above 2^31 included), and so
 * does its undo, with what arrived in the target meanwhile.
 */
static void test_move_keeps_uids(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "uidbox");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_node arch = mkdir_ok(f->a, mkdir_ok(f->a, mb, "Archive"), "2019");
    ms_node empty = mkdir_ok(f->a, mb, "Empty");
    put(f->a, inbox, "one", "1", 1);
    put(f->a, inbox, "two", "2", 1);
    put(f->a, inbox, "three", "3", 1);
    assert_int_equal(ms_unlink(f->a, inbox, "two"), 0);
    assert_int_equal(ms_folder_uids_set(f->a, inbox, &(ms_folder_uids){3000000000u, 50}), 0);
    put(f->a, inbox, "fifty", "50", 2);
    import_ok(f->a, arch, "seven", 7);
    import_ok(f->a, arch, "nine", 9);
    assert_int_equal(ms_folder_uids_set(f->a, empty, &(ms_folder_uids){12345, 77}), 0);
    ms_folder_uids ua = uids_of(f->a, arch);
    ms_journal *j;
    char *err = NULL;
    assert_int_equal(ms_site_journal(f->site, &j, &err), 0);
    int64_t id = 0;
    ms_move_opts o = {.retain_days = 1};
    assert_int_equal(ms_move(j, f->a, f->b, "uidbox", &o, &id), 0);
    ms_node t;
    assert_int_equal(ms_resolve(f->b, "uidbox/INBOX", &t), 0);
    assert_uids(f->b, t, 3000000000u, 51);
    assert_int_equal(uid_of(f->b, t, "one"), 1);
    assert_int_equal(uid_of(f->b, t, "three"), 3);
    assert_int_equal(uid_of(f->b, t, "fifty"), 50);
    ms_node tarch, tempty;
    assert_int_equal(ms_resolve(f->b, "uidbox/Archive/2019", &tarch), 0);
    assert_uids(f->b, tarch, ua.uidvalidity, 10);
    assert_int_equal(uid_of(f->b, tarch, "seven"), 7);
    assert_int_equal(uid_of(f->b, tarch, "nine"), 9);
    assert_int_equal(ms_resolve(f->b, "uidbox/Empty", &tempty), 0);
    assert_uids(f->b, tempty, 12345, 77);
    /* New mail in the target, then undo: UIDs, old and new, come back. */
    put(f->b, t, "new", "new", 3);
    assert_int_equal(uid_of(f->b, t, "new"), 51);
    int64_t back = 0;
    assert_int_equal(ms_undo(f->site, id, &back), 0);
    assert_int_equal(ms_resolve(f->a, "uidbox/INBOX", &inbox), 0);
    assert_uids(f->a, inbox, 3000000000u, 52);
    assert_int_equal(uid_of(f->a, inbox, "new"), 51);
    assert_int_equal(uid_of(f->a, inbox, "fifty"), 50);
    assert_int_equal(ms_resolve(f->a, "uidbox/Empty", &empty), 0);
    assert_uids(f->a, empty, 12345, 77);
}

/*
 * A source whose UIDNEXT is below its own UIDs (damaged behind the
 * store) cannot be copied with both kept: verification fails the move
 * with EIO, it rolls back, and the journal says what differed.
 */
static void test_move_verifies_uids(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "bad"), "INBOX");
    put(f->a, inbox, "m1", "one", 3);
    put(f->a, inbox, "m2", "two", 3);
    g_autofree char *db = g_build_filename(f->dir, "a.db", NULL);
    g_free(sql_on(db, "UPDATE folder SET next_uid = 1 WHERE name = CAST('INBOX' AS BLOB)"));
    ms_journal *j;
    char *err = NULL;
    assert_int_equal(ms_site_journal(f->site, &j, &err), 0);
    int64_t id = 0;
    ms_move_opts o = {.retain_days = 1};
    assert_int_equal(ms_move(j, f->a, f->b, "bad", &o, &id), -EIO);
    ms_move_info mi;
    assert_int_equal(ms_journal_get(j, id, &mi), 0);
    assert_int_equal(mi.state, MS_MOVE_ROLLED_BACK);
    assert_non_null(strstr(mi.error, "UIDNEXT 1"));
    ms_mailbox_info info;
    assert_int_equal(ms_lookup(f->a, inbox, "m2", &(ms_attr){0}), 0);
    int64_t sid;
    assert_int_equal(ms_mailbox_find(f->a, "bad", MS_MB_VISIBLE, &sid), 0);
    assert_int_equal(ms_mailbox_get_info(f->a, sid, &info), 0);
    assert_int_equal(info.lock_move, 0);
    assert_int_equal(count_hidden(f->b, MS_MB_INCOMING), 0);
}

#ifdef MS_FAULT_INJECTION
/* The move's cancel poll, used to change the source's (fake) stamp behind
 * the move while it copies, as a delivering mail server would. */
typedef struct behind {
    const char *stamp_file;
    int polls;
} behind;

static bool change_behind(void *ctx)
{
    behind *b = ctx;
    g_autofree char *v = g_strdup_printf("delivery %d", b->polls++);
    assert_true(g_file_set_contents(b->stamp_file, v, -1, NULL));
    return false;
}

/*
 * A source that keeps changing behind the move's lock (a mail server the
 * cutover's hold does not hold off: its stamp moves during every final
 * pass): the move rolls back with EAGAIN, the journal says so, the
 * source is intact and unlocked, and a retry moves it.  (Changes before
 * the cutover are carried over by the passes: test_online_* cover them.)
 */
static void test_move_source_changed(void **state)
{
    fixture *f = *state;
    g_autofree char *stamp = g_build_filename(f->dir, "stamp", NULL);
    g_setenv("MAILFS_FAKE_STAMP_FILE", stamp, TRUE);
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "busy"), "INBOX");
    put(f->a, inbox, "m1", "one", 3);
    put(f->a, inbox, "m2", "two", 3);
    ms_journal *j;
    char *err = NULL;
    assert_int_equal(ms_site_journal(f->site, &j, &err), 0);
    behind b = {stamp, 0};
    ms_move_opts o = {.retain_days = 1, .cancelled = change_behind, .ctx = &b};
    int64_t id = 0;
    assert_int_equal(ms_move(j, f->a, f->b, "busy", &o, &id), -EAGAIN);
    assert_true(b.polls > 0);
    ms_move_info mi;
    assert_int_equal(ms_journal_get(j, id, &mi), 0);
    assert_int_equal(mi.state, MS_MOVE_ROLLED_BACK);
    assert_non_null(strstr(mi.error, "changed behind mailfs"));
    assert_non_null(strstr(ms_strerror(MS_OP_MOVE, -EAGAIN), "retry"));
    int64_t sid;
    ms_mailbox_info info;
    assert_int_equal(ms_mailbox_find(f->a, "busy", MS_MB_VISIBLE, &sid), 0);
    assert_int_equal(ms_mailbox_get_info(f->a, sid, &info), 0);
    assert_int_equal(info.lock_move, 0);
    size_t len;
    g_autofree char *m2 = read_path(f->a, "busy/INBOX", "m2", &len);
    assert_memory_equal(m2, "two", 3);
    ms_attr a;
    assert_int_equal(ms_lookup(f->b, ROOT, "busy", &a), -ENOENT);
    assert_int_equal(count_hidden(f->b, MS_MB_INCOMING), 0);
    /* A copy that cannot be made equal fails as what it is (EIO), the
     * source changing or not: the passes carry changes, not damage. */
    g_autofree char *db = g_build_filename(f->dir, "a.db", NULL);
    g_free(sql_on(db, "UPDATE folder SET next_uid = 1 WHERE name = CAST('INBOX' AS BLOB)"));
    b.polls = 0;
    g_unlink(stamp);
    assert_int_equal(ms_move(j, f->a, f->b, "busy", &o, &id), -EIO);
    assert_int_equal(ms_journal_get(j, id, &mi), 0);
    assert_non_null(strstr(mi.error, "UIDNEXT 1"));
    g_free(sql_on(db, "UPDATE folder SET next_uid = 3 WHERE name = CAST('INBOX' AS BLOB)"));
    /* Nothing changes during the retry: it moves. */
    o.cancelled = NULL;
    assert_int_equal(ms_move(j, f->a, f->b, "busy", &o, &id), 0);
    assert_int_equal(ms_resolve(f->b, "busy/INBOX", &inbox), 0);
    assert_int_equal(uid_of(f->b, inbox, "m2"), 2);
}
#endif

/* State of the mailbox named name in st: its info, or -ENOENT. */
static int state_of(ms_store *st, const char *name, ms_mb_state state, ms_mailbox_info *out)
{
    int64_t id;
    int rc = ms_mailbox_find(st, name, state, &id);
    return rc ? rc : ms_mailbox_get_info(st, id, out);
}

#ifdef MS_FAULT_INJECTION
/* A move run in its own thread (the mover), the test being "another
 * process" with its own site. */
typedef struct mover_run {
    ms_journal *j;
    ms_store *src, *dst;
    const char *mailbox;
    ms_move_opts o;
    int64_t id;
    int rc;
} mover_run;

static gpointer run_mover(gpointer p)
{
    mover_run *m = p;
    m->rc = ms_move(m->j, m->src, m->dst, m->mailbox, &m->o, &m->id);
    return NULL;
}

/* The newest move of the journal has reached step (polled: the mover
 * is held at a stall point right after recording it). */
static int64_t wait_for_step(ms_journal *j, ms_move_step step)
{
    for (int i = 0; i < 30000; i++) {
        ms_move_info *all = NULL;
        size_t n = 0;
        assert_int_equal(ms_journal_list(j, &all, &n), 0);
        int64_t id = n && all[0].step == step ? all[0].id : 0;
        g_free(all);
        if (id)
            return id;
        g_usleep(1000);
    }
    fail_msg("the move never reached step %s", ms_move_step_name(step));
    return 0;
}

/*
 * Recovery in another process takes a live move from its mover, between
 * its final verification and its commit point (how: recovery judged the
 * owner dead, e.g. /proc hidden by hidepid, and rolled the move back; or
 * the row alone set to rolled-back).  The commit point must not write
 * "committed" over that: the move fails with ESTALE, is not recorded
 * done, the mailbox stays in the source (visible, unlocked, its mail
 * intact), and the target holds no copy, hidden or shown.  Offline and
 * online engines alike.
 */
static void taken_at_commit_point(fixture *f, int mode, bool by_recovery)
{
    const char *name = "taken";
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, name), "INBOX");
    put(f->a, inbox, "m1", "one", 3);
    put(f->a, inbox, "m2", "two", 3);
    ms_journal *j;
    char *err = NULL;
    assert_int_equal(ms_site_journal(f->site, &j, &err), 0);
    g_autofree char *flag = g_build_filename(f->dir, "stall", NULL);
    assert_true(g_file_set_contents(flag, "", 0, NULL));
    g_setenv("MAILFS_STALL", "verified", TRUE);
    g_setenv("MAILFS_STALL_FILE", flag, TRUE);
    mover_run m = {.j = j, .src = f->a, .dst = f->b, .mailbox = name};
    m.o.retain_days = 1;
    m.o.mode = mode;
    GThread *t = g_thread_new("mover", run_mover, &m);

    /* The other process: its own site, journal and stores. */
    ms_site *other;
    ms_journal *j2;
    ms_store *a2, *b2;
    assert_int_equal(ms_site_open(f->conf_path, 0, &other, &err), 0);
    assert_int_equal(ms_site_journal(other, &j2, &err), 0);
    assert_int_equal(ms_site_store(other, "a", &a2, &err), 0);
    assert_int_equal(ms_site_store(other, "b", &b2, &err), 0);
    int64_t id = wait_for_step(j2, MS_STEP_VERIFIED);
    const char *journal = ms_config_journal(f->cfg);
    if (by_recovery) {
        /* As recovery sees a mover it cannot see in /proc: gone. */
        g_autofree char *sql =
            g_strdup_printf("UPDATE move SET owner_pid = 0 WHERE id = %lld", (long long)id);
        g_free(sql_on(journal, sql));
        ms_store *both[] = {a2, b2};
        assert_int_equal(ms_recover(j2, both, 2, NULL, 1, false, NULL), 1);
    } else {
        g_autofree char *sql =
            g_strdup_printf("UPDATE move SET state = 'rolled-back' WHERE id = %lld", (long long)id);
        g_free(sql_on(journal, sql));
    }
    g_unlink(flag);
    g_thread_join(t);
    g_unsetenv("MAILFS_STALL");
    g_unsetenv("MAILFS_STALL_FILE");

    assert_int_equal(m.id, id);
    assert_int_equal(m.rc, -ESTALE);
    ms_move_info mi;
    assert_int_equal(ms_journal_get(j2, id, &mi), 0);
    assert_int_equal(mi.state, MS_MOVE_ROLLED_BACK);
    assert_false(ms_journal_needs_recovery(j2));
    ms_mailbox_info info;
    assert_int_equal(state_of(a2, name, MS_MB_VISIBLE, &info), 0);
    assert_int_equal(info.lock_move, 0);
    assert_int_equal(count_hidden(a2, MS_MB_RETAINED), 0);
    size_t len;
    g_autofree char *m2 = read_path(a2, "taken/INBOX", "m2", &len);
    assert_int_equal(len, 3);
    assert_memory_equal(m2, "two", 3);
    ms_attr a;
    assert_int_equal(ms_lookup(b2, ROOT, name, &a), -ENOENT);
    assert_int_equal(count_hidden(b2, MS_MB_INCOMING), 0);
    ms_site_close(other);
}

/* Field 22 of /proc/PID/stat: the start time the journal records. */
static char *start_of(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid), *text = NULL;
    assert_true(g_file_get_contents(path, &text, NULL, NULL));
    g_auto(GStrv) f = g_strsplit(strrchr(text, ')') + 2, " ", 0);
    assert_true(g_strv_length(f) > 19);
    return g_strdup(f[19]);
}

/*
 * Who counts as a move's dead owner (recovery then rolls the move back
 * under it): only a pid no process has, or one whose process started at
 * another time than the owner (reused).  A live pid whose start cannot
 * be compared (the owner's was never recorded; as when /proc is hidden)
 * is not dead.
 */
static void test_owner_dead_only_when_certain(void **state)
{
    fixture *f = *state;
    ms_journal *j;
    char *err = NULL;
    assert_int_equal(ms_site_journal(f->site, &j, &err), 0);
    const char *journal = ms_config_journal(f->cfg);
    pid_t gone = fork();
    assert_true(gone >= 0);
    if (gone == 0)
        _exit(0);
    assert_int_equal(waitpid(gone, NULL, 0), gone);
    g_autofree char *mine = start_of(getpid());
    struct {
        long long pid;
        const char *start;
        bool dead;
    } cases[] = {
        {getpid(), mine, false}, /* this process */
        {gone, mine, true},      /* no such process */
        {getpid(), "1", true},   /* the pid reused */
        {1, "", false},          /* alive, the owner's start unknown */
        {0, "", true},           /* handed to recovery */
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *sql = g_strdup_printf(
            "DELETE FROM move; INSERT INTO move(mailbox, newname, source, target, state, step,"
            " total_messages, total_bytes, started_ns, updated_ns, owner_pid, owner_start)"
            " VALUES ('m', 'm', 'a', 'b', 'running', 'copying', 0, 0, 1, 1, %lld, '%s')",
            cases[i].pid, cases[i].start);
        g_free(sql_on(journal, sql));
        assert_int_equal(ms_journal_needs_recovery(j), cases[i].dead);
    }
}

static void test_move_taken_by_recovery(void **state)
{
    taken_at_commit_point(*state, MS_MOVE_OFFLINE, true);
}

static void test_move_taken_row_rolled_back(void **state)
{
    taken_at_commit_point(*state, MS_MOVE_OFFLINE, false);
}

static void test_online_move_taken_by_recovery(void **state)
{
    taken_at_commit_point(*state, MS_MOVE_WHOLE, true);
}

static void test_online_move_taken_row_rolled_back(void **state)
{
    taken_at_commit_point(*state, MS_MOVE_WHOLE, false);
}
#endif

/* Marks another journal ("gone") left behind, one pattern per mailbox:
 * each is settled from the stores alone, as DESIGN 4's recovery would. */
static void test_orphans_settled_without_journal(void **state)
{
    fixture *f = *state;
    ms_journal *j; /* the site's */
    char *err = NULL;
    assert_int_equal(ms_site_journal(f->site, &j, &err), 0);
    assert_true(strlen(ms_journal_id(j)) > 30);
    ms_attr like = {.mode = 0700};
    int64_t id;
    /* 1. source locked, copy hidden: rolled back */
    ms_node l1 = mkdir_ok(f->a, ROOT, "rb");
    put(f->a, mkdir_ok(f->a, l1, "INBOX"), "m", "x", 1);
    assert_int_equal(ms_mailbox_set(f->a, l1.id, &(ms_mailbox_change){NULL, -1, 1, -1, "gone", 0}),
                     0);
    assert_int_equal(ms_mailbox_create(f->b, "move/1/rb", MS_MB_INCOMING, &like, &id), 0);
    assert_int_equal(ms_mailbox_set(f->b, id, &(ms_mailbox_change){NULL, -1, -1, -1, "gone", 1}),
                     0);
    /* 2. source locked, target shown: finished, source retained */
    ms_node l2 = mkdir_ok(f->a, ROOT, "fw");
    assert_int_equal(ms_mailbox_set(f->a, l2.id, &(ms_mailbox_change){NULL, -1, 2, -1, "gone", 0}),
                     0);
    ms_node t2 = mkdir_ok(f->b, ROOT, "fw");
    assert_int_equal(ms_mailbox_set(f->b, t2.id, &(ms_mailbox_change){NULL, -1, -1, -1, "gone", 2}),
                     0);
    /* 3. a lock with nothing behind it: dropped */
    ms_node l3 = mkdir_ok(f->a, ROOT, "lk");
    assert_int_equal(ms_mailbox_set(f->a, l3.id, &(ms_mailbox_change){NULL, -1, 3, -1, "gone", 0}),
                     0);
    /* 4. hidden copy whose source is retained: shown */
    assert_int_equal(ms_mailbox_create(f->b, "move/4/sh", MS_MB_INCOMING, &like, &id), 0);
    assert_int_equal(ms_mailbox_set(f->b, id, &(ms_mailbox_change){NULL, -1, -1, -1, "gone", 4}),
                     0);
    assert_int_equal(ms_mailbox_create(f->a, "retained/4/sh", MS_MB_RETAINED, &like, &id), 0);
    assert_int_equal(ms_mailbox_set(f->a, id, &(ms_mailbox_change){NULL, -1, -1, 99, "gone", 4}),
                     0);
    /* 5. a hidden copy alone: dropped */
    assert_int_equal(ms_mailbox_create(f->b, "move/5/dr", MS_MB_INCOMING, &like, &id), 0);

    GPtrArray *found = g_ptr_array_new_with_free_func(ms_finding_free);
    assert_int_equal(ms_orphans(j, (ms_store *[]){f->a, f->b}, 2, NULL, 3, false, found), 7);
    g_ptr_array_set_size(found, 0);
    ms_store *both[] = {f->a, f->b};
    GArray *left = g_array_new(FALSE, FALSE, sizeof(int64_t));
    assert_int_equal(ms_recover(j, both, 2, NULL, 3, false, left), 5);
    assert_int_equal(left->len, 0);
    ms_mailbox_info info;
    assert_int_equal(state_of(f->a, "rb", MS_MB_VISIBLE, &info), 0);
    assert_int_equal(info.lock_move, 0);
    assert_int_equal(state_of(f->b, "move/1/rb", MS_MB_INCOMING, &info), -ENOENT);
    assert_int_equal(state_of(f->a, "fw", MS_MB_VISIBLE, &info), -ENOENT);
    assert_int_equal(state_of(f->b, "fw", MS_MB_VISIBLE, &info), 0);
    assert_int_equal(state_of(f->a, "lk", MS_MB_VISIBLE, &info), 0);
    assert_int_equal(info.lock_move, 0);
    assert_int_equal(state_of(f->b, "sh", MS_MB_VISIBLE, &info), 0);
    assert_int_equal(state_of(f->b, "move/5/dr", MS_MB_INCOMING, &info), -ENOENT);
    /* the two retained copies (fw, sh) are now finished moves of j */
    ms_move_info *moves;
    size_t n;
    assert_int_equal(ms_journal_list(j, &moves, &n), 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(moves[i].state, MS_MOVE_DONE);
        g_autofree char *ret = ms_hidden_name(MS_MB_RETAINED, moves[i].id, moves[i].mailbox);
        assert_int_equal(state_of(f->a, ret, MS_MB_RETAINED, &info), 0);
        assert_string_equal(info.move_journal, ms_journal_id(j));
    }
    g_free(moves);
    /* settled: nothing left to find, and purge now sees the copies */
    assert_int_equal(ms_orphans(j, both, 2, NULL, 3, false, found), 0);
    assert_int_equal(found->len, 0);
    assert_int_equal(ms_purge(f->site, true), 2);
    g_array_free(left, TRUE);
    g_ptr_array_free(found, TRUE);
}

/* A store's own directory: defaults, then chmod/chown/utimens kept across a reopen. */
static void test_store_directory_attributes(void **state)
{
    fixture *f = *state;
    ms_attr a;
    assert_int_equal(ms_getattr(f->a, ROOT, &a), 0);
    assert_int_equal(a.mode, 0755);
    assert_int_equal(a.uid, getuid());
    assert_int_equal(a.gid, getgid());
    assert_int_equal(a.mtime_ns, 0);
    ms_setattr_req r = {.mask = MS_SET_MODE | MS_SET_UID | MS_SET_GID | MS_SET_MTIME,
                        .mode = 0750,
                        .uid = 1234,
                        .gid = 5678,
                        .mtime_ns = 1500000000123456789LL};
    assert_int_equal(ms_setattr(f->a, ROOT, &r, &a), 0);
    assert_int_equal(a.mode, 0750);
    /* another handle, opened after the change: what is on disk */
    ms_store *again;
    char *err = NULL;
    assert_int_equal(ms_store_open(ms_config_find_store(f->cfg, "a"), 0, &again, &err), 0);
    assert_int_equal(ms_getattr(again, ROOT, &a), 0);
    ms_store_close(again);
    assert_int_equal(a.mode, 0750);
    assert_int_equal(a.uid, 1234);
    assert_int_equal(a.gid, 5678);
    assert_int_equal(a.mtime_ns, 1500000000123456789LL);
    /* the other store is untouched */
    assert_int_equal(ms_getattr(f->b, ROOT, &a), 0);
    assert_int_equal(a.mode, 0755);
}

/* Store files are private whatever the umask. */
static void test_store_files_private(void **state)
{
    fixture *f = *state;
    g_autofree char *db = g_build_filename(f->dir, "a.db", NULL);
    GStatBuf sb;
    assert_int_equal(g_stat(db, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    g_autofree char *jpath = g_build_filename(f->dir, "j.db", NULL);
    ms_journal *j = NULL;
    char *err = NULL;
    mode_t old = umask(0);
    int rc = ms_journal_open(jpath, &j, &err);
    umask(old);
    assert_int_equal(rc, 0);
    assert_int_equal(g_stat(jpath, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    ms_journal_close(j);
}

/*
 * Every write of the public API into mailbox mb (folder inbox, message
 * m) answers want, and nothing changes: the one rule of mailstore.h
 * ("What a mailbox refuses"), whatever the write.
 */
static void assert_writes_refused(ms_store *st, ms_node mb, ms_node inbox, ms_node m, int want)
{
    ms_attr a;
    ms_writer *w;
    ms_setattr_req chmod = {.mask = MS_SET_MODE, .mode = 0600};
    assert_int_equal(ms_mkdir(st, mb, "new", 0700, 0, 0, &a), want);
    assert_int_equal(ms_mkdir(st, inbox, "new", 0700, 0, 0, &a), want);
    assert_int_equal(ms_rmdir(st, mb, "INBOX"), want);
    assert_int_equal(ms_unlink(st, inbox, "m"), want);
    assert_int_equal(ms_rename(st, inbox, "m", inbox, "m2", false), want);
    assert_int_equal(ms_rename(st, mb, "INBOX", mb, "Other", false), want);
    assert_int_equal(ms_setattr(st, m, &chmod, NULL), want);
    assert_int_equal(ms_setattr(st, inbox, &chmod, NULL), want);
    assert_int_equal(ms_setattr(st, mb, &chmod, NULL), want);
    assert_int_equal(ms_xattr_set(st, m, "user.mail.flags", "\\Seen", 5, 0), want);
    assert_int_equal(ms_xattr_set(st, inbox, "user.mail.special-use", "\\Sent", 5, 0), want);
    assert_int_equal(ms_xattr_set(st, mb, "user.mail.acl", "bob lr", 6, 0), want);
    assert_int_equal(ms_message_create(st, inbox, "n", 0644, 0, 0, &a), want);
    assert_int_equal(ms_writer_deliver(st, inbox, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "y", 1, 0), 1);
    assert_int_equal(ms_writer_commit(w, false, NULL), want);
    ms_writer_close(w);
    assert_int_equal(ms_writer_open(st, m.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "y", 1, 0), 1);
    assert_int_equal(ms_writer_commit(w, false, NULL), want);
    ms_writer_close(w);
}

/* Each write into a locked mailbox: EBUSY, through store.c's one rule;
 * reads go on; the lock's owner (ms_mailbox_set) is not refused. */
static void test_contract_locked_refuses_every_write(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "lock");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_node m = put(f->a, inbox, "m", "x", 1);
    assert_int_equal(ms_mailbox_set(f->a, mb.id, &(ms_mailbox_change){NULL, -1, 9, -1, NULL, 0}),
                     0);
    assert_writes_refused(f->a, mb, inbox, m, -EBUSY);
    assert_int_equal(ms_rmdir(f->a, ROOT, "lock"), -EBUSY);
    assert_int_equal(ms_rename(f->a, ROOT, "lock", ROOT, "lock2", false), -EBUSY);
    size_t len;
    g_autofree char *back = read_all(f->a, m.id, &len);
    assert_int_equal(len, 1);
    assert_memory_equal(back, "x", 1);
    assert_int_equal(ms_mailbox_set(f->a, mb.id, &(ms_mailbox_change){NULL, -1, 0, -1, NULL, 0}),
                     0);
    assert_int_equal(ms_mkdir(f->a, mb, "new", 0700, 0, 0, NULL), 0); /* unlocked: writable */
}

/* A retained copy: invisible in the tree, and each write into it ESTALE. */
static void test_contract_retained_refuses_every_write(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "kept");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    ms_node m = put(f->a, inbox, "m", "x", 1);
    g_autofree char *hidden = ms_hidden_name(MS_MB_RETAINED, 5, "kept");
    assert_int_equal(
        ms_mailbox_set(f->a, mb.id, &(ms_mailbox_change){hidden, MS_MB_RETAINED, -1, 1, NULL, 0}),
        0);
    ms_attr a;
    assert_int_equal(ms_lookup(f->a, ROOT, "kept", &a), -ENOENT);
    assert_int_equal(ms_lookup(f->a, ROOT, hidden, &a), -ENOENT);
    assert_writes_refused(f->a, mb, inbox, m, -ESTALE);
    int64_t id;
    assert_int_equal(ms_hidden_find(f->a, MS_MB_RETAINED, 5, "kept", &id), 0);
    assert_int_equal(id, mb.id);
}

/*
 * A read-only backend (pst, here on a folder without PST files)
 * implements no write: every write of the API is answered by store.c
 * with the one errno, EROFS, and ms_store_readonly says so.
 */
static void test_contract_readonly_backend(void **state)
{
    fixture *f = *state;
    g_autofree char *dir = g_build_filename(f->dir, "pst", NULL);
    assert_int_equal(g_mkdir(dir, 0700), 0);
    ms_store_conf sc = {.name = "ro", .backend = "pst", .path = dir};
    ms_store *st;
    char *err = NULL;
    assert_int_equal(ms_store_open(&sc, 0, &st, &err), 0);
    assert_true(ms_store_readonly(st));
    ms_node mb = {MS_MAILBOX, 1}, inbox = {MS_FOLDER, 2}, m = {MS_MESSAGE, 3};
    ms_attr a;
    ms_writer *w;
    ms_setattr_req chmod = {.mask = MS_SET_MODE, .mode = 0600};
    assert_int_equal(ms_mkdir(st, ROOT, "x", 0700, 0, 0, &a), -EROFS);
    assert_int_equal(ms_mkdir(st, mb, "x", 0700, 0, 0, &a), -EROFS);
    assert_int_equal(ms_rmdir(st, mb, "x"), -EROFS);
    assert_int_equal(ms_unlink(st, inbox, "x"), -EROFS);
    assert_int_equal(ms_rename(st, inbox, "x", inbox, "y", false), -EROFS);
    assert_int_equal(ms_setattr(st, m, &chmod, NULL), -EROFS);
    assert_int_equal(ms_setattr(st, ROOT, &chmod, NULL), -EROFS);
    assert_int_equal(ms_xattr_set(st, m, "user.mail.flags", "\\Seen", 5, 0), -EROFS);
    assert_int_equal(ms_xattr_remove(st, m, "user.mail.flags"), -EROFS);
    assert_int_equal(ms_message_create(st, inbox, "x", 0600, 0, 0, &a), -EROFS);
    assert_int_equal(ms_writer_open(st, m.id, true, &w), -EROFS);
    assert_int_equal(ms_writer_deliver(st, inbox, &w), -EROFS);
    assert_int_equal(ms_writer_import(st, inbox, "x", 0, &w), -EROFS);
    int64_t id, before, after;
    assert_int_equal(ms_mailbox_create(st, "x", MS_MB_INCOMING, &a, &id), -EROFS);
    assert_int_equal(ms_mailbox_set(st, 1, &(ms_mailbox_change){NULL, -1, 1, -1, NULL, 0}), -EROFS);
    assert_int_equal(ms_mailbox_drop(st, 1), -EROFS);
    assert_int_equal(ms_batch_begin(st), -EROFS);
    assert_int_equal(ms_store_compact(st, &before, &after), -EROFS);
    assert_int_equal(ms_deleted_restore(st, "x", NULL, NULL), -EROFS);
    assert_int_equal(ms_deleted_purge(st, 1, true, NULL), -EROFS);
    /* what is not a write but the backend lacks: ENOTSUP; defaults: 0 */
    assert_int_equal(ms_deleted_list(st, NULL, NULL, NULL), -ENOTSUP);
    assert_int_equal(ms_store_sync(st), 0);
    assert_int_equal(ms_batch_end(st, false), 0);
    ms_store_close(st);
    /* a writable store opened read-only: the same errno */
    ms_store *ro;
    assert_int_equal(ms_store_open(ms_config_find_store(f->cfg, "a"), MS_OPEN_READONLY, &ro, &err),
                     0);
    assert_int_equal(ms_mkdir(ro, ROOT, "x", 0700, 0, 0, &a), -EROFS);
    ms_store_close(ro);
}

/* Hidden names: no '/', both forms found and parsed, the prefix reserved. */
static void test_contract_hidden_names(void **state)
{
    fixture *f = *state;
    g_autofree char *in = ms_hidden_name(MS_MB_INCOMING, 12, "b~c");
    assert_null(strchr(in, '/'));
    g_autofree char *plain = ms_hidden_name(MS_MB_RETAINED, 3, "bob");
    assert_null(strchr(plain, '/'));
    int64_t move;
    const char *name;
    assert_true(ms_hidden_parse(plain, &move, &name));
    assert_int_equal(move, 3);
    assert_string_equal(name, "bob");
    assert_true(ms_hidden_parse("move/7/x~y", &move, &name));
    assert_int_equal(move, 7);
    assert_string_equal(name, "x~y");
    assert_false(ms_hidden_parse("bob", &move, &name));
    assert_false(ms_hidden_parse("move/x/bob", &move, &name));
    /* a visible mailbox cannot take the reserved prefix */
    ms_attr a;
    assert_int_equal(ms_mkdir(f->a, ROOT, plain, 0700, 0, 0, &a), -EINVAL);
    mkdir_ok(f->a, ROOT, "carol");
    assert_int_equal(ms_rename(f->a, ROOT, "carol", ROOT, plain, false), -EINVAL);
    ms_journal *j;
    char *err = NULL;
    assert_int_equal(ms_site_journal(f->site, &j, &err), 0);
    ms_move_opts o = {.newname = plain, .retain_days = 1};
    assert_int_equal(ms_move(j, f->a, f->b, "carol", &o, NULL), -EINVAL); /* nor a move */
    assert_int_equal(ms_lookup(f->a, ROOT, "carol", &a), 0);
    assert_int_equal(ms_mkdir(f->a, ROOT, "mailfs~x", 0700, 0, 0, &a), 0); /* not the prefix */
    /* an old store's hidden copy is still found */
    ms_attr like = {.mode = 0700};
    int64_t id, found;
    assert_int_equal(ms_mailbox_create(f->b, "retained/4/dan", MS_MB_RETAINED, &like, &id), 0);
    assert_int_equal(ms_hidden_find(f->b, MS_MB_RETAINED, 4, "dan", &found), 0);
    assert_int_equal(found, id);
    assert_int_equal(ms_hidden_find(f->b, MS_MB_INCOMING, 4, "dan", &found), -ENOENT);
}

#ifdef MS_FAULT_INJECTION
/*
 * The hash a commit keeps is that of the bytes it stored: when the spool
 * gives back other bytes than were written (MAILFS_FAULT_SPOOL_READ), the
 * commit fails and stores nothing, where before it kept the hash of what
 * was written over bytes that differ.
 */
static void test_commit_checks_spool(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "spool"), "INBOX");
    ms_attr a, got;
    ms_writer *w;
    assert_int_equal(ms_message_create(f->a, inbox, "m", 0644, 0, 0, &a), 0);
    assert_int_equal(ms_writer_open(f->a, a.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "hello", 5, 0), 5);
    g_setenv("MAILFS_FAULT_SPOOL_READ", "1", TRUE);
    int rc = ms_writer_commit(w, false, &got);
    g_unsetenv("MAILFS_FAULT_SPOOL_READ");
    assert_int_equal(rc, -EIO);
    ms_attr seen;
    bool committed = ms_lookup(f->a, inbox, "m", &seen) == 0 && seen.size == 5;
    assert_false(committed);
    assert_int_equal(ms_writer_commit(w, false, &got), 0); /* the spool is intact */
    ms_writer_close(w);
    size_t len;
    g_autofree char *bytes = read_all(f->a, a.node.id, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(bytes, "hello", 5);
    ms_message_meta meta = {0};
    assert_int_equal(ms_message_get_meta(f->a, a.node.id, true, &meta), 0);
    uint8_t want[32];
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, 5, (const uint8_t *)"hello");
    sha256_digest(&ctx, 32, want);
    assert_memory_equal(meta.sha256, want, 32);
    g_free(meta.flags);
}
#endif

int main(void)
{
    ms_log_to_stderr(LOG_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tree_and_listing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sha256_any_write_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uncommitted_create_vanishes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unborn_creates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_between_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_keeps_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_keeps_bytes_across_opens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_and_xattrs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked_mailbox_refuses_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_and_undo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_v5_uidvalidity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_v7_modseq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modseq_sqlite_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_keeps_uids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_verifies_uids, setup, teardown),
#ifdef MS_FAULT_INJECTION
        cmocka_unit_test_setup_teardown(test_move_source_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_checks_spool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_dead_only_when_certain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_taken_by_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_taken_row_rolled_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_online_move_taken_by_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_online_move_taken_row_rolled_back, setup, teardown),
#endif
        cmocka_unit_test_setup_teardown(test_orphans_settled_without_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_items, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_directory_attributes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_files_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contract_locked_refuses_every_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contract_retained_refuses_every_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_contract_readonly_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contract_hidden_names, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
