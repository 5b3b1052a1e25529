/*
 * test_durable.c — what the sqlite backend promises about stable storage,
 * seen from below SQLite.
 *
 * A VFS shim, registered as SQLite's default before any store is opened,
 * records every xSync SQLite asks of a file.  A commit in WAL mode is on
 * stable storage only once the WAL is synced, so each promise is checked
 * as "the store's WAL was synced by the time the call returned":
 *   - a durable commit (fsync of a message) syncs the WAL, a plain one
 *     (close) does not;
 *   - ms_store_sync syncs it even with nothing new to commit;
 *   - a durable write that joins a batch is synced by the batch's end;
 *   - a move syncs its target's WAL, and its journal's commit point
 *     comes after that sync.
 * Until this test, every one of these committed at synchronous=NORMAL: the
 * pragma that was to make them FULL ran inside the transaction, where
 * SQLite refuses it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <glib.h>
#include <sqlite3.h>

#include "mailstore.h"

#define ROOT ((ms_node){MS_ROOT, 0})

/* ------------------------------------------------------------ the shim */

static sqlite3_vfs shim_vfs;
static GMutex synced_lock; /* guards synced */
static GPtrArray *synced;  /* basenames of the files synced, in order */

typedef struct shim_file {
    sqlite3_file base;
    sqlite3_file *real; /* follows this struct in the same allocation */
    char *name;
} shim_file;

static sqlite3_file *real_of(sqlite3_file *f) { return ((shim_file *)f)->real; }

static int shim_close(sqlite3_file *f)
{
    shim_file *s = (shim_file *)f;
    int rc = s->real->pMethods ? s->real->pMethods->xClose(s->real) : SQLITE_OK;
    g_free(s->name);
    return rc;
}
static int shim_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
    return real_of(f)->pMethods->xRead(real_of(f), b, n, o);
}
static int shim_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    return real_of(f)->pMethods->xWrite(real_of(f), b, n, o);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 n)
{
    return real_of(f)->pMethods->xTruncate(real_of(f), n);
}
static int shim_sync(sqlite3_file *f, int flags)
{
    g_mutex_lock(&synced_lock);
    g_ptr_array_add(synced, g_strdup(((shim_file *)f)->name));
    g_mutex_unlock(&synced_lock);
    return real_of(f)->pMethods->xSync(real_of(f), flags);
}
static int shim_size(sqlite3_file *f, sqlite3_int64 *n)
{
    return real_of(f)->pMethods->xFileSize(real_of(f), n);
}
static int shim_lock(sqlite3_file *f, int l) { return real_of(f)->pMethods->xLock(real_of(f), l); }
static int shim_unlock(sqlite3_file *f, int l)
{
    return real_of(f)->pMethods->xUnlock(real_of(f), l);
}
static int shim_reserved(sqlite3_file *f, int *out)
{
    return real_of(f)->pMethods->xCheckReservedLock(real_of(f), out);
}
static int shim_fcntl(sqlite3_file *f, int op, void *arg)
{
    return real_of(f)->pMethods->xFileControl(real_of(f), op, arg);
}
static int shim_sector(sqlite3_file *f) { return real_of(f)->pMethods->xSectorSize(real_of(f)); }
static int shim_device(sqlite3_file *f)
{
    return real_of(f)->pMethods->xDeviceCharacteristics(real_of(f));
}
static int shim_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **p)
{
    return real_of(f)->pMethods->xShmMap(real_of(f), pg, sz, ext, p);
}
static int shim_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    return real_of(f)->pMethods->xShmLock(real_of(f), off, n, flags);
}
static void shim_shm_barrier(sqlite3_file *f) { real_of(f)->pMethods->xShmBarrier(real_of(f)); }
static int shim_shm_unmap(sqlite3_file *f, int del)
{
    return real_of(f)->pMethods->xShmUnmap(real_of(f), del);
}
static int shim_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p)
{
    return real_of(f)->pMethods->xFetch(real_of(f), o, n, p);
}
static int shim_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p)
{
    return real_of(f)->pMethods->xUnfetch(real_of(f), o, p);
}

static const sqlite3_io_methods shim_io = {
    .iVersion = 3,
    .xClose = shim_close,
    .xRead = shim_read,
    .xWrite = shim_write,
    .xTruncate = shim_truncate,
    .xSync = shim_sync,
    .xFileSize = shim_size,
    .xLock = shim_lock,
    .xUnlock = shim_unlock,
    .xCheckReservedLock = shim_reserved,
    .xFileControl = shim_fcntl,
    .xSectorSize = shim_sector,
    .xDeviceCharacteristics = shim_device,
    .xShmMap = shim_shm_map,
    .xShmLock = shim_shm_lock,
    .xShmBarrier = shim_shm_barrier,
    .xShmUnmap = shim_shm_unmap,
    .xFetch = shim_fetch,
    .xUnfetch = shim_unfetch,
};

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    sqlite3_vfs *real = vfs->pAppData;
    shim_file *s = (shim_file *)f;
    s->real = (sqlite3_file *)(s + 1);
    s->name = name ? g_path_get_basename(name) : g_strdup("(temp)");
    int rc = real->xOpen(real, name, s->real, flags, out);
    /* SQLite closes a file whose open failed only if pMethods is set. */
    s->base.pMethods = s->real->pMethods ? &shim_io : NULL;
    if (!s->base.pMethods)
        g_free(s->name);
    return rc;
}

static void shim_register(void)
{
    sqlite3_vfs *real = sqlite3_vfs_find(NULL);
    assert_non_null(real);
    assert_true(real->iVersion >= 3);
    shim_vfs = *real; /* the rest of the VFS is the real one's */
    shim_vfs.zName = "mailfs-count-syncs";
    shim_vfs.szOsFile = (int)sizeof(shim_file) + real->szOsFile;
    shim_vfs.pAppData = real;
    shim_vfs.xOpen = shim_open;
    shim_vfs.pNext = NULL;
    assert_int_equal(sqlite3_vfs_register(&shim_vfs, 1), SQLITE_OK);
    synced = g_ptr_array_new_with_free_func(g_free);
}

/* How many syncs of file (a basename) were recorded since mark. */
static int syncs_of(const char *file, guint mark)
{
    int n = 0;
    g_mutex_lock(&synced_lock);
    for (guint i = mark; i < synced->len; i++)
        n += strcmp(g_ptr_array_index(synced, i), file) == 0;
    g_mutex_unlock(&synced_lock);
    return n;
}

/* Where the record stands now. */
static guint mark(void)
{
    g_mutex_lock(&synced_lock);
    guint n = synced->len;
    g_mutex_unlock(&synced_lock);
    return n;
}

/* Index of the first sync of file at or after from, or -1. */
static int first_sync(const char *file, guint from)
{
    int at = -1;
    g_mutex_lock(&synced_lock);
    for (guint i = from; i < synced->len && at < 0; i++)
        if (strcmp(g_ptr_array_index(synced, i), file) == 0)
            at = (int)i;
    g_mutex_unlock(&synced_lock);
    return at;
}

/* ------------------------------------------------------------ fixture */

typedef struct fixture {
    char *dir;
    ms_site *site;
    ms_store *a, *b;
} fixture;

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);
    f->dir = g_dir_make_tmp("mailfs-durable-XXXXXX", NULL);
    g_autofree char *conf = g_build_filename(f->dir, "site.conf", NULL);
    g_file_set_contents(conf,
                        "[mailfs]\njournal = journal.db\n[store a]\npath = a.db\n"
                        "[store b]\npath = b.db\n",
                        -1, NULL);
    char *err = NULL;
    assert_int_equal(ms_site_open(conf, MS_OPEN_CREATE, &f->site, &err), 0);
    assert_int_equal(ms_site_store(f->site, "a", &f->a, &err), 0);
    assert_int_equal(ms_site_store(f->site, "b", &f->b, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms_site_close(f->site);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    g_free(f->dir);
    g_free(f);
    return 0;
}

static ms_node mkdir_ok(ms_store *st, ms_node parent, const char *name)
{
    ms_attr a;
    assert_int_equal(ms_mkdir(st, parent, name, 0755, 0, 0, &a), 0);
    return a.node;
}

/* A new message written as cp would; its commit durable (fsync) or not. */
static void put(ms_store *st, ms_node folder, const char *name, bool durable)
{
    ms_attr a;
    ms_writer *w;
    assert_int_equal(ms_message_create(st, folder, name, 0644, 0, 0, &a), 0);
    assert_int_equal(ms_writer_open(st, a.node.id, true, &w), 0);
    assert_int_equal(ms_writer_pwrite(w, "Subject: x\r\n\r\nbody\r\n", 20, 0), 20);
    assert_int_equal(ms_writer_commit(w, durable, NULL), 0);
    ms_writer_close(w);
}

/* ------------------------------------------------------------ tests */

static void test_fsync_of_a_message(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "kim"), "INBOX");
    /* Several rounds: each switch of the level must take, not only the
     * first (SQLite applies that pragma when it prepares it). */
    for (int round = 0; round < 3; round++) {
        char name[32];
        guint m = mark();
        g_snprintf(name, sizeof name, "plain%d", round);
        put(f->a, inbox, name, false);
        assert_int_equal(syncs_of("a.db-wal", m), 0); /* close: committed, not synced */
        m = mark();
        g_snprintf(name, sizeof name, "fsynced%d", round);
        put(f->a, inbox, name, true);
        assert_true(syncs_of("a.db-wal", m) >= 1);
    }
}

static void test_store_sync(void **state)
{
    fixture *f = *state;
    mkdir_ok(f->a, ROOT, "kim");
    guint m = mark();
    assert_int_equal(ms_store_sync(f->a), 0);
    assert_true(syncs_of("a.db-wal", m) >= 1);
}

static void test_durable_write_in_a_batch(void **state)
{
    fixture *f = *state;
    ms_node inbox = mkdir_ok(f->a, mkdir_ok(f->a, ROOT, "kim"), "INBOX");
    assert_int_equal(ms_batch_begin(f->a), 0);
    guint m = mark();
    put(f->a, inbox, "in-batch", true);
    assert_int_equal(syncs_of("a.db-wal", m), 0); /* the batch has not committed */
    assert_int_equal(ms_batch_end(f->a, true), 0);
    assert_true(syncs_of("a.db-wal", m) >= 1);
    /* A batch without a durable write commits without a sync. */
    assert_int_equal(ms_batch_begin(f->a), 0);
    m = mark();
    put(f->a, inbox, "plain-batch", false);
    assert_int_equal(ms_batch_end(f->a, true), 0);
    assert_int_equal(syncs_of("a.db-wal", m), 0);
}

static void test_move_syncs_target_before_commit_point(void **state)
{
    fixture *f = *state;
    ms_node mb = mkdir_ok(f->a, ROOT, "kim");
    ms_node inbox = mkdir_ok(f->a, mb, "INBOX");
    for (int i = 0; i < 20; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "m%d", i);
        put(f->a, inbox, name, false);
    }
    ms_journal *j;
    char *err = NULL;
    assert_int_equal(ms_site_journal(f->site, &j, &err), 0);
    guint m = mark();
    int64_t id = 0;
    ms_move_opts o = {.retain_days = 1};
    assert_int_equal(ms_move(j, f->a, f->b, "kim", &o, &id), 0);
    int target = first_sync("b.db-wal", m);
    assert_true(target >= 0);
    /* The commit point is a durable write of the journal, made after the
     * copy's sync (move.c); so a journal sync follows the target's. */
    assert_true(first_sync("journal.db-wal", (guint)target) > target);
    ms_move_info mi;
    assert_int_equal(ms_journal_get(j, id, &mi), 0);
    assert_int_equal(mi.state, MS_MOVE_DONE);
}

int main(void)
{
    ms_log_to_stderr(LOG_ERR);
    shim_register();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fsync_of_a_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_write_in_a_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_syncs_target_before_commit_point, setup,
                                        teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    g_ptr_array_free(synced, TRUE);
    return rc;
}
