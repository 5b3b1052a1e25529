/*
 * test_maildir_format.c — maildir_format.c against Dovecot: vectors
 * checked with Dovecot 2.3.19's doveadm, and where doveadm is installed,
 * Dovecot itself as the oracle (tests/unit/md-fixture.sh writes a Maildir
 * with doveadm; doveadm then reads what these functions wrote).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "maildir_format.h"
#include "maildir_int.h" /* md_remove_maildir */

#ifndef MD_FIXTURE
#define MD_FIXTURE "tests/unit/md-fixture.sh"
#endif
#ifndef MD_TESTDATA
#define MD_TESTDATA ""
#endif

typedef struct fixture {
    char *dir;
    int dirfd;
} fixture;

static int setup(void **state)
{
    fixture *f = g_new0(fixture, 1);
    f->dir = g_dir_make_tmp("mailfs-mdformat-XXXXXX", NULL);
    f->dirfd = open(f->dir, O_RDONLY | O_DIRECTORY);
    g_assert(f->dirfd >= 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close(f->dirfd);
    char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    g_free(cmd);
    g_free(f->dir);
    g_free(f);
    return 0;
}

static void put(int dirfd, const char *name, const char *text)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static char *get(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY);
    if (fd < 0)
        return NULL;
    GString *s = g_string_new(NULL);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        g_string_append_len(s, buf, n);
    close(fd);
    return g_string_free(s, FALSE);
}

static bool have_doveadm(void)
{
    char *p = g_find_program_in_path("doveadm");
    g_free(p);
    return p != NULL;
}

/* Runs argv; its stdout in *out (g_free) when out; the exit status. */
static int run(char **argv, char **out)
{
    int status = -1;
    char *o = NULL, *e = NULL;
    if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &o, &e, &status, NULL))
        return -1;
    if (out)
        *out = o;
    else
        g_free(o);
    g_free(e);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ------------------------------------------------------------ mUTF-7 */

/* Vectors checked with doveadm mailbox mutf7 (Dovecot 2.3.19). */
static const char *const enc_vectors[][2] = {
    {"Café/Ünïcode", "Caf&AOk-/&ANw-n&AO8-code"},
    {"a&b", "a&-b"},
    {"日本語", "&ZeVnLIqe-"},
    {"😀x", "&2D3eAA-x"},
    {"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
    {"é.é", "&AOk-.&AOk-"},
    {"plain", "plain"},
    {"", ""},
};
static const char *const dec_valid[][2] = {
    {"&-", "&"},       {"&AOkA6Q-", "éé"},     {"&AOk-&-", "é&"},
    {"&AB8-", "\x1f"}, {"&AH8-", "\x7f"},      {"&Jjo-!", "☺!"},
    {"a-b", "a-b"},    {"&AOk-a&AOk-", "éaé"}, {"&2D3eAA-", "😀"},
};
/* Dovecot refuses these (doveadm mailbox mutf7 -7 exits 65). */
static const char *const dec_invalid[] = {
    "&AGE-",  "&",      "&AOk", "&AOk-&AOk-", "&2D3eAA", "&2D0-",    "&AAA-", "&AOkA-",
    "&AOkB-", "&AOk,-", "\x01", "é",          "&3gA-",   "&2D3YPQ-", "&AH4-", "&/,8-",
};
/* Dovecot accepts these (padding bits set); we refuse them: they would not
 * map back to their directory. */
static const char *const dec_stricter[] = {"&AOl-", "&AOn-", "&2D3eAP-"};

static void test_mutf7_vectors(void **state)
{
    (void)state;
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(enc_vectors); i++) {
        g_string_assign(s, "");
        assert_int_equal(md_mutf7_encode(enc_vectors[i][0], s), 0);
        assert_string_equal(s->str, enc_vectors[i][1]);
        g_string_assign(s, "");
        assert_int_equal(md_mutf7_decode(enc_vectors[i][1], s), 0);
        assert_string_equal(s->str, enc_vectors[i][0]);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(dec_valid); i++) {
        g_string_assign(s, "x");
        assert_int_equal(md_mutf7_decode(dec_valid[i][0], s), 0);
        assert_string_equal(s->str + 1, dec_valid[i][1]);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(dec_invalid); i++) {
        g_string_assign(s, "keep");
        assert_int_equal(md_mutf7_decode(dec_invalid[i], s), -EINVAL);
        assert_string_equal(s->str, "keep"); /* nothing appended on failure */
    }
    for (size_t i = 0; i < G_N_ELEMENTS(dec_stricter); i++)
        assert_int_equal(md_mutf7_decode(dec_stricter[i], s), -EINVAL);
    assert_int_equal(md_mutf7_encode("\xff", s), -EINVAL);
    assert_int_equal(md_mutf7_encode("a\xc3", s), -EINVAL);
    assert_int_equal(md_mutf7_encode("\xed\xa0\x80", s), -EINVAL); /* a surrogate in UTF-8 */
    g_string_free(s, TRUE);
}

/* Dovecot as the oracle: the same vectors through doveadm. */
static void test_mutf7_doveadm(void **state)
{
    (void)state;
    if (!have_doveadm())
        skip();
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(enc_vectors); i++) {
        if (!enc_vectors[i][0][0])
            continue;
        char *out = NULL;
        char *argv[] = {"doveadm", "mailbox", "mutf7", "-8", (char *)enc_vectors[i][0], NULL};
        assert_int_equal(run(argv, &out), 0);
        g_string_assign(s, "");
        assert_int_equal(md_mutf7_encode(enc_vectors[i][0], s), 0);
        g_string_append_c(s, '\n');
        assert_string_equal(out, s->str);
        g_free(out);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(dec_valid); i++) {
        char *out = NULL;
        char *argv[] = {"doveadm", "mailbox", "mutf7", "-7", (char *)dec_valid[i][0], NULL};
        assert_int_equal(run(argv, &out), 0);
        g_string_assign(s, "");
        assert_int_equal(md_mutf7_decode(dec_valid[i][0], s), 0);
        g_string_append_c(s, '\n');
        assert_string_equal(out, s->str);
        g_free(out);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(dec_invalid); i++) {
        char *argv[] = {"doveadm", "mailbox", "mutf7", "-7", (char *)dec_invalid[i], NULL};
        assert_int_not_equal(run(argv, NULL), 0);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(dec_stricter); i++) {
        char *argv[] = {"doveadm", "mailbox", "mutf7", "-7", (char *)dec_stricter[i], NULL};
        assert_int_equal(run(argv, NULL), 0); /* still what Dovecot does */
    }
    g_string_free(s, TRUE);
}

/* ----------------------------------------------------------- layouts */

static void expect_dir(md_layout l, const char *path, const char *dir)
{
    GString *s = g_string_new("junk");
    assert_int_equal(md_folder_dir(l, path, s), 0);
    assert_string_equal(s->str, dir);
    if (strcmp(path, "INBOX")) {
        g_string_assign(s, "");
        assert_int_equal(md_folder_path(l, dir, s), 0);
        assert_string_equal(s->str, path);
    }
    g_string_free(s, TRUE);
}

static void test_layouts(void **state)
{
    (void)state;
    expect_dir(MD_LAYOUT_MAILDIRPP, "INBOX", "");
    expect_dir(MD_LAYOUT_FS, "INBOX", "");
    expect_dir(MD_LAYOUT_MAILDIRPP, "Sent", ".Sent");
    expect_dir(MD_LAYOUT_MAILDIRPP, "Archive/2019", ".Archive.2019");
    expect_dir(MD_LAYOUT_MAILDIRPP, "INBOX/x", ".INBOX.x");
    expect_dir(MD_LAYOUT_MAILDIRPP, "Café/Ünïcode", ".Caf&AOk-.&ANw-n&AO8-code");
    expect_dir(MD_LAYOUT_MAILDIRPP, "a&b", ".a&-b");
    expect_dir(MD_LAYOUT_FS, "Archive/2019", "Archive/2019");
    expect_dir(MD_LAYOUT_FS, "Café/Ünïcode", "Caf&AOk-/&ANw-n&AO8-code");
    expect_dir(MD_LAYOUT_FS, "a.b", "a.b");
    expect_dir(MD_LAYOUT_FS, "INBOX/x", "INBOX/x");
    GString *s = g_string_new(NULL);
    const char *bad_pp[] = {"a.b", "",      "a//b", "a/",    "/a",
                            "cur", "x/new", "tmp",  "Inbox", "inbox/x"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad_pp); i++)
        assert_int_equal(md_folder_dir(MD_LAYOUT_MAILDIRPP, bad_pp[i], s), -EINVAL);
    const char *bad_fs[] = {".hidden", "a/.b", "a/INBOX", "cur", "a//b", "", "..", "x/tmp"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad_fs); i++)
        assert_int_equal(md_folder_dir(MD_LAYOUT_FS, bad_fs[i], s), -EINVAL);
    assert_int_equal(md_folder_dir(MD_LAYOUT_MAILDIRPP, "a\xff", s), -EINVAL);
    char *longname = g_strnfill(200, 'x');
    char *longpath = g_strconcat(longname, "é/", longname, NULL); /* 205 bytes encoded: fine */
    assert_int_equal(md_folder_dir(MD_LAYOUT_FS, longpath, s), 0);
    g_free(longpath);
    longpath = g_strconcat(longname, "/", longname,
                           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", NULL);
    assert_int_equal(md_folder_dir(MD_LAYOUT_FS, longpath, s), -ENAMETOOLONG);
    g_free(longpath);
    /* maildir++ holds the whole path in one directory name */
    char *y53 = g_strnfill(53, 'y');
    longpath = g_strconcat(longname, "/", y53, NULL);
    assert_int_equal(md_folder_dir(MD_LAYOUT_MAILDIRPP, longpath, s), 0);
    assert_int_equal(s->len, 255);
    g_free(longpath);
    longpath = g_strconcat(longname, "/", y53, "y", NULL);
    assert_int_equal(md_folder_dir(MD_LAYOUT_MAILDIRPP, longpath, s), -ENAMETOOLONG);
    assert_int_equal(md_folder_dir(MD_LAYOUT_FS, longpath, s), 0);
    g_free(longpath);
    g_free(y53);
    g_free(longname);
    const char *notpp[] = {"Sent",   ".",      "..",   ".a..b", ".a.",   ".&AOl-",
                           ".&AGE-", ".INBOX", ".cur", ".a/b",  ".Inbox"};
    for (size_t i = 0; i < G_N_ELEMENTS(notpp); i++) {
        g_string_assign(s, "");
        assert_int_equal(md_folder_path(MD_LAYOUT_MAILDIRPP, notpp[i], s), -EINVAL);
        assert_string_equal(s->str, "");
    }
    const char *notfs[] = {".a", "a/.b", "a/INBOX", "INBOX", "a//b", "&AGE-/b", "new"};
    for (size_t i = 0; i < G_N_ELEMENTS(notfs); i++)
        assert_int_equal(md_folder_path(MD_LAYOUT_FS, notfs[i], s), -EINVAL);
    g_string_assign(s, "");
    md_folder_raw_path(MD_LAYOUT_MAILDIRPP, ".&AGE-.x", s);
    assert_string_equal(s->str, "&AGE-/x");
    g_string_assign(s, "");
    md_folder_raw_path(MD_LAYOUT_FS, "&AGE-/x.y", s);
    assert_string_equal(s->str, "&AGE-/x.y");
    g_string_free(s, TRUE);
}

/* --------------------------------------------------------- file names */

static void test_filenames(void **state)
{
    (void)state;
    size_t bl = 0;
    const char *info = NULL;
    assert_true(md_filename_split("123.M1P2.host,S=10:2,FS", &bl, &info));
    assert_int_equal(bl, strlen("123.M1P2.host,S=10"));
    assert_string_equal(info, "FS");
    assert_true(md_filename_split("123.M1P2.host", &bl, &info));
    assert_int_equal(bl, 13);
    assert_null(info);
    assert_true(md_filename_split("abc:2,", &bl, &info));
    assert_string_equal(info, "");
    assert_true(md_filename_split("abc:1,xyz", &bl, &info));
    assert_int_equal(bl, 3);
    assert_null(info);
    assert_false(md_filename_split(".hidden:2,S", &bl, &info));
    assert_false(md_filename_split("", &bl, &info));
    assert_false(md_filename_split(":2,S", &bl, &info));

    char *b = NULL;
    assert_int_equal(md_base_for("plain.eml", 10, 12, &b), 0);
    assert_string_equal(b, "plain.eml");
    g_free(b);
    assert_int_equal(md_base_for("1.M2P3.h,S=10,W=12", 10, 12, &b), 0);
    assert_string_equal(b, "1.M2P3.h,S=10,W=12"); /* right sizes: kept */
    g_free(b);
    assert_int_equal(md_base_for("1.M2P3.h,S=11", 10, 12, &b), 0);
    assert_string_equal(b, "1.M2P3.h%2CS=11"); /* a wrong size would be trusted */
    char *n = md_name_of_base(b, strlen(b));
    assert_string_equal(n, "1.M2P3.h,S=11");
    g_free(n);
    g_free(b);
    assert_int_equal(md_base_for("x,W=1", 10, 12, &b), 0);
    assert_string_equal(b, "x%2CW=1");
    g_free(b);
    assert_int_equal(md_base_for("x,S=", 0, 0, &b), 0); /* Dovecot reads "S=" as 0 */
    assert_string_equal(b, "x,S=");
    g_free(b);
    assert_int_equal(md_base_for("x,S=", 5, 5, &b), 0);
    assert_string_equal(b, "x%2CS=");
    g_free(b);
    assert_int_equal(md_base_for("x,S=5y", 9, 9, &b), 0); /* not a size to Dovecot */
    assert_string_equal(b, "x,S=5y");
    g_free(b);
    const char *enc[][2] = {{"50%.eml", "50%25.eml"},    {"a:b,c", "a%3Ab%2Cc"},
                            {".dot", "%2Edot"},          {"a.dot", "a.dot"},
                            {"tab\there", "tab%09here"}, {"new\nline", "new%0Aline"}};
    for (size_t i = 0; i < G_N_ELEMENTS(enc); i++) {
        assert_int_equal(md_base_for(enc[i][0], 1, 1, &b), 0);
        assert_string_equal(b, enc[i][1]);
        n = md_name_of_base(b, strlen(b));
        assert_string_equal(n, enc[i][0]);
        g_free(n);
        g_free(b);
    }
    /* bases we did not encode show as they are */
    const char *raw[] = {"100%", "a%2cb", "a%2Fb", "a%41b", "a%00b", "%"};
    for (size_t i = 0; i < G_N_ELEMENTS(raw); i++) {
        n = md_name_of_base(raw[i], strlen(raw[i]));
        assert_string_equal(n, raw[i]);
        g_free(n);
    }
    n = md_name_of_base("abc:2,S", 3);
    assert_string_equal(n, "abc");
    g_free(n);
    char *longname = g_strnfill(MD_BASE_MAX, 'y');
    assert_int_equal(md_base_for(longname, 1, 1, &b), 0);
    g_free(b);
    longname[0] = '.'; /* "%2E" makes it longer than the limit */
    assert_int_equal(md_base_for(longname, 1, 1, &b), -ENAMETOOLONG);
    g_free(longname);
    assert_int_equal(md_base_for("", 1, 1, &b), -EINVAL);
    assert_int_equal(md_base_for("a/b", 1, 1, &b), -EINVAL);

    bool cr = false;
    assert_int_equal(md_vsize_add("a\nb\r\n", 5, &cr), 6);
    assert_false(cr);
    assert_int_equal(md_vsize_add("a\r", 2, &cr), 2);
    assert_true(cr);
    assert_int_equal(md_vsize_add("\nb\n", 3, &cr), 4); /* CR then LF across chunks */
    assert_int_equal(md_vsize_add("", 0, &cr), 0);
}

/* --------------------------------------------------------- keywords */

static void test_keywords(void **state)
{
    fixture *f = *state;
    md_keywords kw = {{0}};
    assert_int_equal(md_keywords_load(f->dirfd, &kw), 0); /* none */
    for (int i = 0; i < MD_KEYWORDS_MAX; i++)
        assert_null(kw.name[i]);
    put(f->dirfd, "dovecot-keywords",
        "0 $Label1\n1 Foo\nbogus\n30 Out\nx Bad\n3 \n4 foo\n2 Bar\r\n2 Baz\n5 Partial");
    assert_int_equal(md_keywords_load(f->dirfd, &kw), 0);
    assert_string_equal(kw.name[0], "$Label1");
    assert_string_equal(kw.name[1], "Foo");
    assert_string_equal(kw.name[2], "Baz"); /* a later line for an index wins, as in Dovecot */
    assert_null(kw.name[3]);
    assert_null(kw.name[4]); /* "foo" is Foo again (case-insensitive) */
    assert_null(kw.name[5]); /* no newline: not complete */
    struct stat before, after;
    assert_int_equal(fstatat(f->dirfd, "dovecot-keywords", &before, 0), 0);
    kw.name[7] = g_strdup("Seven");
    assert_int_equal(md_keywords_save(f->dirfd, &kw, (uid_t)-1, (gid_t)-1, 0640), 0);
    char *text = get(f->dirfd, "dovecot-keywords");
    assert_string_equal(text, "0 $Label1\n1 Foo\n2 Baz\n7 Seven\n");
    g_free(text);
    assert_int_equal(fstatat(f->dirfd, "dovecot-keywords", &after, 0), 0);
    assert_true(after.st_mtime > before.st_mtime); /* Dovecot looks at seconds */
    assert_int_equal(after.st_mode & 07777, 0640);
    md_keywords back = {{0}};
    assert_int_equal(md_keywords_load(f->dirfd, &back), 0);
    for (int i = 0; i < MD_KEYWORDS_MAX; i++)
        assert_string_equal(back.name[i] ? back.name[i] : "-", kw.name[i] ? kw.name[i] : "-");
    /* saved twice in one second: still a later mtime each time */
    assert_int_equal(md_keywords_save(f->dirfd, &kw, (uid_t)-1, (gid_t)-1, 0600), 0);
    struct stat again;
    assert_int_equal(fstatat(f->dirfd, "dovecot-keywords", &again, 0), 0);
    assert_true(again.st_mtime > after.st_mtime);
    if (getuid() == 0) {
        assert_int_equal(md_keywords_save(f->dirfd, &kw, 65534, 65534, 0600), 0);
        assert_int_equal(fstatat(f->dirfd, "dovecot-keywords", &again, 0), 0);
        assert_int_equal(again.st_uid, 65534);
        assert_int_equal(again.st_gid, 65534);
    }
    /* no temporary file left behind */
    GDir *d = g_dir_open(f->dir, 0, NULL);
    for (const char *e; (e = g_dir_read_name(d));)
        assert_string_equal(e, "dovecot-keywords");
    g_dir_close(d);
    md_keywords_clear(&back);
    md_keywords_clear(&kw);
}

/* ------------------------------------------------------------ flags */

static void test_flags(void **state)
{
    (void)state;
    md_keywords kw = {{0}};
    kw.name[0] = g_strdup("$Label1");
    kw.name[2] = g_strdup("Bar");
    GString *s = g_string_new(NULL);
    md_flags_of_info("DFPRSTacz", &kw, s);
    assert_string_equal(s->str, "\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Bar");
    g_string_assign(s, "");
    md_flags_of_info("S,abc", &kw, s); /* a second set after ',' is not flags */
    assert_string_equal(s->str, "\\Seen");
    g_string_assign(s, "");
    md_flags_of_info(NULL, &kw, s);
    md_flags_of_info("", &kw, s);
    md_flags_of_info("P", &kw, s); /* Dovecot ignores P (passed) */
    assert_string_equal(s->str, "");

    bool changed = false;
    g_string_assign(s, "");
    assert_int_equal(md_info_for("\\Seen \\Draft bar", 16, "PRbz", &kw, &changed, s), 0);
    assert_string_equal(s->str, "DPSbcz"); /* P and the unlisted b, z kept; sorted */
    assert_false(changed);
    g_string_assign(s, "");
    assert_int_equal(md_info_for("New $Label1", 11, NULL, &kw, &changed, s), 0);
    assert_true(changed);
    assert_string_equal(kw.name[1], "New");
    assert_string_equal(s->str, "ab");
    changed = false;
    g_string_assign(s, "");
    /* a free letter this file holds already is not given to a new keyword */
    assert_int_equal(md_info_for("Other", 5, "d,xyz", &kw, &changed, s), 0);
    assert_string_equal(kw.name[4], "Other");
    assert_string_equal(s->str, "de,xyz");
    g_string_assign(s, "");
    assert_int_equal(md_info_for("", 0, "FSab", &kw, &changed, s), 0);
    assert_string_equal(s->str, "");
    assert_int_equal(md_info_for("\\Recent", 7, NULL, &kw, &changed, s), -EINVAL);
    assert_int_equal(md_info_for("\\Bogus", 6, NULL, &kw, &changed, s), -EINVAL);
    /* the letters run out: nothing added, nothing written */
    md_keywords full = {{0}};
    for (int i = 0; i < MD_KEYWORDS_MAX - 1; i++)
        full.name[i] = g_strdup_printf("k%d", i);
    changed = false;
    g_string_assign(s, "");
    assert_int_equal(md_info_for("last k3", 7, NULL, &full, &changed, s), 0);
    assert_string_equal(s->str, "dz");
    assert_true(changed);
    changed = false;
    g_string_assign(s, "");
    assert_int_equal(md_info_for("k1 one-too-many", 15, "S", &full, &changed, s), -ENOSPC);
    assert_false(changed);
    assert_string_equal(s->str, "");
    for (int i = 0; i < MD_KEYWORDS_MAX; i++)
        assert_true(!full.name[i] || strcmp(full.name[i], "one-too-many"));
    md_keywords_clear(&full);
    md_keywords_clear(&kw);
    g_string_free(s, TRUE);
}

/* ---------------------------------------------------- dovecot-uidlist */

static const char *const corrupt_lists[] = {
    "",                          /* Dovecot: empty is broken */
    "3 V1 N2",                   /* no complete header line */
    "4 V1 N2\n",                 /* unknown version */
    "x V1 N2\n",                 /* no version */
    "3 N2\n",                    /* no V */
    "3 V1\n",                    /* no N */
    "3 V0 N2\n",                 /* V 0 */
    "3 Vx N2\n",                 /* V not a number */
    "3 V1 N99999999999\n",       /* N overflows */
    "3 V1 N2 Gxyz\n",            /* bad mailbox GUID */
    "3 V1 N5\n2 :a\n1 :b\n",     /* out of order */
    "3 V1 N5\n2 :a\n2 :b\n",     /* repeated uid */
    "3 V1 N5\n0 :a\n",           /* uid 0 */
    "3 V1 N5\nx :a\n",           /* not a uid */
    "3 V1 N5\n1:a\n",            /* no space */
    "3 V1 N5\n1 a\n",            /* no ':' before the name */
    "3 V1 N5\n1 S12 :\n",        /* empty name */
    "3 V1 N5\n1 :a/b\n",         /* '/' in the name */
    "3 V1 N5\n4294967295 :a\n",  /* UID too high */
    "3 V1 N5\n99999999999 :a\n", /* UID overflows */
    "3 V1 N5\n1 :a\n\n",         /* an empty line */
    "1 5\n",                     /* v1 without next uid */
};

static void test_uidlist_corrupt(void **state)
{
    fixture *f = *state;
    md_uidlist *u = NULL;
    char *err = NULL;
    assert_int_equal(md_uidlist_read(f->dirfd, &u, &err), -ENOENT);
    for (size_t i = 0; i < G_N_ELEMENTS(corrupt_lists); i++) {
        put(f->dirfd, "dovecot-uidlist", corrupt_lists[i]);
        err = NULL;
        u = NULL;
        int rc = md_uidlist_read(f->dirfd, &u, &err);
        if (rc != -EINVAL)
            fail_msg("list %zu (%s) read: %d", i, corrupt_lists[i], rc);
        assert_non_null(err);
        assert_null(strchr(err, '\n'));
        assert_null(u);
        g_free(err);
    }
}

static void test_uidlist_read(void **state)
{
    fixture *f = *state;
    put(f->dirfd, "dovecot-uidlist",
        "3 V1234 N3 G2e07b021c019086b6130000083ecc375 Pformat X\n"
        "1 :a.M1P1.h,S=10\n"
        "2 W99 S12 :b:2,S\n" /* an old file name with info: matched by base */
        "3 W5 x1 S7 :c\r\n"  /* invalid extension dropped, as Dovecot does */
        "5 :b\n"             /* b listed again: the later uid wins */
        "7 :d\n"
        "6 :partial"); /* being appended: ignored */
    md_uidlist *u = NULL;
    char *err = NULL;
    assert_int_equal(md_uidlist_read(f->dirfd, &u, &err), 0);
    assert_null(err);
    assert_int_equal(u->uidvalidity, 1234);
    assert_int_equal(u->next_uid, 8); /* past the last record, as Dovecot */
    assert_string_equal(u->header_rest, "G2e07b021c019086b6130000083ecc375 Pformat X");
    assert_int_equal(u->recs->len, 4);
    assert_int_equal(md_uidlist_uid(u, "a.M1P1.h,S=10", 13), 1);
    assert_int_equal(md_uidlist_uid(u, "b", 1), 5);
    assert_int_equal(md_uidlist_uid(u, "b:2,FS", 1), 5);
    assert_int_equal(md_uidlist_uid(u, "c", 1), 3);
    assert_int_equal(md_uidlist_uid(u, "d", 1), 7);
    assert_int_equal(md_uidlist_uid(u, "partial", 7), 0);
    md_uid_rec *r = &g_array_index(u->recs, md_uid_rec, 1);
    assert_int_equal(r->uid, 3);
    assert_string_equal(r->ext, "W5 S7");
    assert_null(g_array_index(u->recs, md_uid_rec, 0).ext);
    struct stat st;
    assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist", &st, 0), 0);
    assert_int_equal(u->ino, st.st_ino);
    assert_int_equal(u->size, st.st_size);
    /* edits */
    assert_int_equal(md_uidlist_add(u, "e", 7, NULL), -EINVAL); /* not above 7 */
    assert_int_equal(md_uidlist_add(u, "d", 9, NULL), -EEXIST);
    assert_int_equal(md_uidlist_add(u, "e:x", 9, NULL), -EINVAL);
    assert_int_equal(md_uidlist_add(u, "e", 9, "f:2,S"), -EINVAL);
    assert_int_equal(md_uidlist_add(u, ".e", 9, NULL), -EINVAL);
    assert_int_equal(md_uidlist_add(u, "e", 9, "e:2,S"), 0);
    assert_int_equal(u->next_uid, 10);
    md_uidlist_remove(u, "b:2,S", 1);
    md_uidlist_remove(u, "nothere", 7);
    assert_int_equal(md_uidlist_uid(u, "b", 1), 0);
    assert_int_equal(md_uidlist_uid(u, "d", 1), 7); /* indexes after it still right */
    assert_int_equal(md_uidlist_uid(u, "e", 1), 9);
    md_uidlist_free(u);

    /* version 1, as Dovecot 1.0 and Courier wrote it */
    put(f->dirfd, "dovecot-uidlist", "1 77 10\n3 name:2,S\n4 other\n");
    assert_int_equal(md_uidlist_read(f->dirfd, &u, &err), 0);
    assert_int_equal(u->uidvalidity, 77);
    assert_int_equal(u->next_uid, 10);
    assert_int_equal(md_uidlist_uid(u, "name", 4), 3);
    md_uidlist_free(u);
}

static void test_uidlist_commit(void **state)
{
    fixture *f = *state;
    md_uidlist *u = md_uidlist_new(555, 1);
    assert_true(g_str_has_prefix(u->header_rest, "G"));
    assert_int_equal(strlen(u->header_rest), 33);
    assert_int_equal(md_uidlist_add(u, "m1", 3, "m1:2,S"), 0);
    assert_int_equal(md_uidlist_add(u, "m2", 8, NULL), 0);
    g_array_index(u->recs, md_uid_rec, 1).ext = g_strdup("W10 S9");
    u->next_uid = 20;
    md_lock *l = NULL;
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    char *lock = get(f->dirfd, "dovecot-uidlist.lock");
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char *want = g_strdup_printf("%ld:%s", (long)getpid(), host);
    assert_string_equal(lock, want); /* what Dovecot writes: PID:HOST */
    g_free(want);
    g_free(lock);
    assert_int_equal(md_uidlist_commit(l, u, (uid_t)-1, (gid_t)-1, 0604), 0);
    struct stat st;
    assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist.lock", &st, 0), -1); /* released */
    assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist.tmp", &st, 0), -1);
    assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist", &st, 0), 0);
    assert_int_equal(st.st_mode & 07777, 0604);
    char *text = get(f->dirfd, "dovecot-uidlist");
    char *expect = g_strdup_printf("3 V555 N20 %s\n3 :m1\n8 W10 S9 :m2\n", u->header_rest);
    assert_string_equal(text, expect); /* base names only, as Dovecot 2.3 */
    g_free(expect);
    g_free(text);
    md_uidlist *back = NULL;
    char *err = NULL;
    assert_int_equal(md_uidlist_read(f->dirfd, &back, &err), 0);
    assert_int_equal(back->uidvalidity, 555);
    assert_int_equal(back->next_uid, 20);
    assert_string_equal(back->header_rest, u->header_rest);
    assert_int_equal(md_uidlist_uid(back, "m2", 2), 8);
    md_uidlist_free(back);
    /* without a GUID in the header one is added, as Dovecot would */
    g_free(u->header_rest);
    u->header_rest = g_strdup("Pfmt");
    u->next_uid = 2; /* below the last uid: written past it */
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    if (getuid() == 0) {
        assert_int_equal(md_uidlist_commit(l, u, 65534, 65534, 0600), 0);
        assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist", &st, 0), 0);
        assert_int_equal(st.st_uid, 65534);
        assert_int_equal(st.st_gid, 65534);
    } else {
        assert_int_equal(md_uidlist_commit(l, u, (uid_t)-1, (gid_t)-1, 0600), 0);
    }
    text = get(f->dirfd, "dovecot-uidlist");
    assert_true(g_str_has_prefix(text, "3 V555 N9 G"));
    assert_non_null(strstr(text, " Pfmt\n3 :m1\n"));
    g_free(text);
    /* a lock broken under us: commit writes nothing */
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    assert_int_equal(unlinkat(f->dirfd, "dovecot-uidlist.lock", 0), 0);
    put(f->dirfd, "dovecot-uidlist.lock", "1:otherhost");
    assert_int_equal(md_uidlist_commit(l, u, (uid_t)-1, (gid_t)-1, 0600), -EAGAIN);
    assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist.lock", &st, 0), 0); /* not ours: kept */
    unlinkat(f->dirfd, "dovecot-uidlist.lock", 0);
    /* what Dovecot would not read back is not written */
    char *good = get(f->dirfd, "dovecot-uidlist");
    const char *bad_ext[] = {"x1", "S1  W2", "S1 ", "S1\nW2", ":S1"};
    md_uid_rec *r = &g_array_index(u->recs, md_uid_rec, 1);
    char *keep = r->ext;
    for (size_t i = 0; i < G_N_ELEMENTS(bad_ext); i++) {
        r->ext = (char *)bad_ext[i];
        assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
        assert_int_equal(md_uidlist_commit(l, u, (uid_t)-1, (gid_t)-1, 0600), -EINVAL);
    }
    r->ext = keep;
    char *rest = u->header_rest;
    u->header_rest = "G0\n1 :x";
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    assert_int_equal(md_uidlist_commit(l, u, (uid_t)-1, (gid_t)-1, 0600), -EINVAL);
    u->header_rest = rest;
    u->uidvalidity = 0;
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    assert_int_equal(md_uidlist_commit(l, u, (uid_t)-1, (gid_t)-1, 0600), -EINVAL);
    assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist.lock", &st, 0), -1); /* released */
    text = get(f->dirfd, "dovecot-uidlist");
    assert_string_equal(text, good);
    g_free(text);
    g_free(good);
    md_uidlist_free(u);
}

static void count_uid(void *ctx, const char *base, size_t len, uint32_t uid)
{
    GString *seen = ctx;
    g_string_append_printf(seen, "%.*s=%u ", (int)len, base, uid);
}

/* Records appended as Dovecot appends them, and what refuses to append. */
static void test_uidlist_append(void **state)
{
    fixture *f = *state;
    md_uidlist *u = md_uidlist_new(777, 1);
    assert_int_equal(md_uidlist_add(u, "a", 2, NULL), 0);
    md_lock *l = NULL;
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    assert_int_equal(md_uidlist_commit(l, u, (uid_t)-1, (gid_t)-1, 0600), 0);
    struct stat st, after;
    assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist", &st, 0), 0);
    md_uid_rec recs[2] = {{5, "b", "W10 S9", NULL}, {9, "c", NULL, NULL}};
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    assert_int_equal(md_uidlist_append(l, st.st_size, recs, 2, &after), 0);
    assert_int_equal(after.st_ino, st.st_ino); /* the same file, grown */
    assert_true(after.st_size > st.st_size);
    /* not the size the caller read, or out of order: nothing written */
    assert_int_equal(md_uidlist_append(l, st.st_size, recs, 2, &after), -ESTALE);
    md_uid_rec back[2] = {{12, "d", NULL, NULL}, {11, "e", NULL, NULL}};
    assert_int_equal(md_uidlist_append(l, after.st_size, back, 2, &st), -EINVAL);
    md_uid_rec bad = {13, "f:2,S", NULL, NULL};
    assert_int_equal(md_uidlist_append(l, after.st_size, &bad, 1, &st), -EINVAL);
    md_uidlist_unlock(l);
    char *text = get(f->dirfd, "dovecot-uidlist");
    assert_true(g_str_has_suffix(text, "2 :a\n5 W10 S9 :b\n9 :c\n"));
    g_free(text);
    md_uidlist *r = NULL;
    char *err = NULL;
    assert_int_equal(md_uidlist_read(f->dirfd, &r, &err), 0);
    assert_int_equal(r->recs->len, 3);
    assert_int_equal(r->next_uid, 10); /* the header's N2 is below: past the last */
    assert_int_equal(r->last_uid, 9);
    assert_false(r->partial);
    assert_int_equal(md_uidlist_uid(r, "b", 1), 5);
    assert_string_equal(g_array_index(r->recs, md_uid_rec, 1).ext, "W10 S9");
    md_uidlist_free(r);
    /* read as a stream: every record handed over, none kept */
    GString *seen = g_string_new(NULL);
    assert_int_equal(md_uidlist_scan(f->dirfd, count_uid, seen, &r, &err), 0);
    assert_string_equal(seen->str, "a=2 b=5 c=9 ");
    assert_true(r->partial);
    assert_int_equal(r->recs->len, 0);
    assert_int_equal(r->last_uid, 9);
    assert_int_equal(r->uidvalidity, 777);
    md_uidlist *h = md_uidlist_header(r);
    assert_true(h->partial);
    assert_int_equal(h->next_uid, 10);
    md_uidlist_free(h);
    md_uidlist_free(r);
    g_string_free(seen, TRUE);
    /* a last line cut short by a crash is not appended to */
    text = get(f->dirfd, "dovecot-uidlist");
    char *cut = g_strconcat(text, "10 :g", NULL);
    put(f->dirfd, "dovecot-uidlist", cut);
    assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist", &st, 0), 0);
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    md_uid_rec next = {11, "h", NULL, NULL};
    assert_int_equal(md_uidlist_append(l, st.st_size, &next, 1, &after), -ESTALE);
    md_uidlist_unlock(l);
    char *now = get(f->dirfd, "dovecot-uidlist");
    assert_string_equal(now, cut);
    g_free(now);
    g_free(cut);
    g_free(text);
    md_uidlist_free(u);
}

/* ------------------------------------------------------------- lock */

static pid_t dead_pid(void)
{
    pid_t p = fork();
    if (!p)
        _exit(0);
    waitpid(p, NULL, 0);
    return p;
}

static void put_lock(int dirfd, pid_t pid, const char *host, time_t age)
{
    char *c = g_strdup_printf("%ld:%s", (long)pid, host);
    put(dirfd, "dovecot-uidlist.lock", c);
    g_free(c);
    struct timespec ts[2] = {{time(NULL) - age, 0}, {time(NULL) - age, 0}};
    assert_int_equal(utimensat(dirfd, "dovecot-uidlist.lock", ts, 0), 0);
}

static void test_lock_stale(void **state)
{
    fixture *f = *state;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    md_lock *l = NULL;
    /* a dead pid on this host: broken at once */
    put_lock(f->dirfd, dead_pid(), host, 10);
    gint64 t0 = g_get_monotonic_time();
    assert_int_equal(md_uidlist_lock_opts(f->dirfd, 5000, 120, &l), 0);
    assert_true(g_get_monotonic_time() - t0 < 2000000);
    md_uidlist_unlock(l);
    /* a live pid: waited for, then -EAGAIN */
    put_lock(f->dirfd, getppid(), host, 10);
    t0 = g_get_monotonic_time();
    assert_int_equal(md_uidlist_lock_opts(f->dirfd, 300, 120, &l), -EAGAIN);
    assert_true(g_get_monotonic_time() - t0 >= 300000);
    /* a dead pid made less than 2 s ago: not checked yet (Dovecot too) */
    put_lock(f->dirfd, dead_pid(), host, 0);
    assert_int_equal(md_uidlist_lock_opts(f->dirfd, 200, 120, &l), -EAGAIN);
    /* another host's pid: only the stale timeout breaks it */
    put_lock(f->dirfd, 1, "some.other.host", 10);
    assert_int_equal(md_uidlist_lock_opts(f->dirfd, 300, 120, &l), -EAGAIN);
    assert_int_equal(md_uidlist_lock_opts(f->dirfd, 5000, 0, &l), 0);
    md_uidlist_unlock(l);
    /* our own pid, made after we started: another thread's, kept */
    put_lock(f->dirfd, getpid(), host, 0);
    assert_int_equal(md_uidlist_lock_opts(f->dirfd, 300, 120, &l), -EAGAIN);
    unlinkat(f->dirfd, "dovecot-uidlist.lock", 0);
    /* no tmp/: the temporary file goes into the folder; none is left */
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    struct stat st;
    assert_int_equal(md_uidlist_lock_touch(l), 0);
    md_uidlist_unlock(l);
    assert_int_equal(fstatat(f->dirfd, "dovecot-uidlist.lock", &st, 0), -1);
    GDir *d = g_dir_open(f->dir, 0, NULL);
    assert_null(g_dir_read_name(d));
    g_dir_close(d);
    /* with tmp/, the temporary file is made there, as Dovecot does */
    assert_int_equal(mkdirat(f->dirfd, "tmp", 0700), 0);
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    md_uidlist_unlock(l);
    d = g_dir_open(f->dir, 0, NULL);
    assert_string_equal(g_dir_read_name(d), "tmp");
    assert_null(g_dir_read_name(d));
    g_dir_close(d);
}

/* A lock released while waited for is taken. */
typedef struct waiter {
    int dirfd;
    int rc;
} waiter;

static void *wait_lock(void *arg)
{
    waiter *w = arg;
    md_lock *l = NULL;
    w->rc = md_uidlist_lock_opts(w->dirfd, 20000, 120, &l);
    if (!w->rc)
        md_uidlist_unlock(l);
    return NULL;
}

static void test_lock_waits(void **state)
{
    fixture *f = *state;
    md_lock *l = NULL;
    assert_int_equal(md_uidlist_lock(f->dirfd, &l), 0);
    waiter w = {f->dirfd, 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_lock, &w), 0);
    /* the waiter cannot take it while held; once released it must */
    assert_int_equal(md_uidlist_lock_opts(f->dirfd, 100, 120, &(md_lock *){NULL}), -EAGAIN);
    md_uidlist_unlock(l);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
}

/* Threads and a process take the lock in a loop; inside, each makes a
 * marker file with O_EXCL: two holders at once would collide. */
#define LOOPS 150

typedef struct looper {
    int dirfd;
    int overlaps, errors;
} looper;

static void lock_loop(looper *lp)
{
    for (int i = 0; i < LOOPS; i++) {
        md_lock *l = NULL;
        if (md_uidlist_lock_opts(lp->dirfd, 30000, 120, &l)) {
            lp->errors++;
            continue;
        }
        int fd = openat(lp->dirfd, "inside", O_CREAT | O_EXCL | O_WRONLY, 0600);
        if (fd < 0)
            lp->overlaps++;
        else {
            close(fd);
            unlinkat(lp->dirfd, "inside", 0);
        }
        md_uidlist_unlock(l);
    }
}

static void *lock_loop_thread(void *arg)
{
    lock_loop(arg);
    return NULL;
}

static void test_lock_exclusion(void **state)
{
    fixture *f = *state;
    pid_t child = fork();
    if (!child) {
        looper lp = {f->dirfd, 0, 0};
        lock_loop(&lp);
        _exit(lp.overlaps || lp.errors ? 1 : 0);
    }
    looper a = {f->dirfd, 0, 0}, b = {f->dirfd, 0, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, lock_loop_thread, &a);
    pthread_create(&tb, NULL, lock_loop_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    int status = 0;
    waitpid(child, &status, 0);
    assert_int_equal(a.overlaps + b.overlaps, 0);
    assert_int_equal(a.errors + b.errors, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* -------------------------------------------------------------- ACL */

static void test_acl(void **state)
{
    (void)state;
    GString *s = g_string_new(NULL);
    const char *v = "anyone lr\nauthenticated lrs\nowner lrswipkxtea\nbob lrc\n$staff lrd\n"
                    "-eve w\n!$ops a";
    assert_int_equal(md_acl_to_dovecot(v, strlen(v), s), 0);
    assert_string_equal(s->str, "anyone lr\nauthenticated lrs\nowner akxeilprwts\n"
                                "user=bob kxlr\ngroup=staff elrt\n-user=eve w\n"
                                "group-override=ops a");
    g_string_assign(s, "");
    assert_int_equal(md_acl_from_dovecot(v, 0, s), 0);
    assert_string_equal(s->str, "");
    GString *back = g_string_new(NULL);
    g_string_assign(s, "anyone lr\nauthenticated lrs\nowner akxeilprwts\nuser=bob kxlr\n"
                       "group=staff elrt\n-user=eve w\ngroup-override=ops a\n");
    assert_int_equal(md_acl_from_dovecot(s->str, s->len, back), 0);
    assert_string_equal(back->str, "anyone lr\nauthenticated lrs\nowner lrswipkxtea\nbob lrkx\n"
                                   "$staff lrte\n-eve w\n!$ops a");
    /* what Dovecot reads that mailfs cannot show */
    const char *dv = "# comment\n\nanonymous r\nuser=bob l\nuser=bob r\n\"user=a b\" lr\n"
                     "user=owner lr\nuser=x lrz\nuser=y lr :custom\nuser=z\ngroup= l\nbogus lr\n"
                     "user=last lr";
    g_string_assign(back, "");
    assert_int_equal(md_acl_from_dovecot(dv, strlen(dv), back), 0);
    assert_string_equal(back->str, "anyone r\nbob lr\ny lr\nlast lr");
    const char *bad[] = {"bob", "bob lrq", " bob lr", "bob lr x", "bob  lr", "- lr", "bob "};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
        assert_int_equal(md_acl_to_dovecot(bad[i], strlen(bad[i]), s), -EINVAL);
    g_string_free(back, TRUE);
    g_string_free(s, TRUE);
}

/* ------------------------------------------ Dovecot as the oracle */

/* Runs md-fixture.sh with args; its stdout in *out when out. */
static int fixture_run(const char *dir, char **args, char **out)
{
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, "bash");
    g_ptr_array_add(argv, (char *)(getenv("MD_FIXTURE") ? getenv("MD_FIXTURE") : MD_FIXTURE));
    g_ptr_array_add(argv, (char *)dir);
    for (; *args; args++)
        g_ptr_array_add(argv, *args);
    g_ptr_array_add(argv, NULL);
    int rc = run((char **)argv->pdata, out);
    g_ptr_array_free(argv, TRUE);
    return rc;
}

static char *testdata_eml(const char *rel)
{
    const char *td = getenv("MD_TESTDATA") ? getenv("MD_TESTDATA") : MD_TESTDATA;
    char *p = g_build_filename(td, "mail", "eml", rel, NULL);
    if (!td[0] || !g_file_test(p, G_FILE_TEST_EXISTS)) {
        g_free(p);
        return NULL;
    }
    return p;
}

/* The virtual size of a file, as md_vsize_add counts it in chunks. */
static int64_t file_vsize(const char *path, int64_t *size)
{
    char *data = NULL;
    gsize len = 0;
    assert_true(g_file_get_contents(path, &data, &len, NULL));
    bool cr = false;
    int64_t v = 0;
    for (gsize i = 0; i < len; i += 7)
        v += md_vsize_add(data + i, MIN(7, len - i), &cr);
    *size = (int64_t)len;
    g_free(data);
    return v;
}

static void chown_nobody(const char *path)
{
    if (getuid() == 0)
        assert_int_equal(chown(path, 65534, 65534), 0);
}

static void test_dovecot_oracle(void **state)
{
    fixture *f = *state;
    char *emls[3] = {testdata_eml("cpython/msg_03.txt"), testdata_eml("cpython/msg_04.txt"),
                     testdata_eml("postal-mime/bounce.eml")};
    if (!have_doveadm() || !emls[0] || !emls[1] || !emls[2]) {
        for (int i = 0; i < 3; i++)
            g_free(emls[i]);
        skip();
    }
    chmod(f->dir, 0755); /* md-fixture.sh runs doveadm as nobody under root */
    char *dv = g_build_filename(f->dir, "dv", NULL);
    char *args[] = {emls[0], emls[1], emls[2], NULL};
    assert_int_equal(fixture_run(dv, args, NULL), 0);
    char *root = g_build_filename(dv, "Maildir", NULL);
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    assert_true(rfd >= 0);

    /* what Dovecot wrote, as we read it */
    md_uidlist *u = NULL;
    char *err = NULL;
    assert_int_equal(md_uidlist_read(rfd, &u, &err), 0);
    assert_int_equal(u->recs->len, 3);
    assert_true(u->uidvalidity > 0);
    assert_int_equal(u->next_uid, 4); /* Dovecot's header says N3 (appends keep the header) */
    assert_true(g_str_has_prefix(u->header_rest, "G"));
    md_keywords kw = {{0}};
    assert_int_equal(md_keywords_load(rfd, &kw), 0);
    assert_string_equal(kw.name[0], "$Label1");
    assert_string_equal(kw.name[1], "Foo");
    assert_string_equal(kw.name[2], "Bar");
    const char *want_flags[] = {"", "\\Seen $Label1", "\\Answered \\Flagged Foo",
                                "\\Deleted \\Draft $Label1 Bar"};
    int seen = 0;
    for (int sub = 0; sub < 2; sub++) {
        char *d = g_build_filename(root, sub ? "cur" : "new", NULL);
        GDir *dir = g_dir_open(d, 0, NULL);
        for (const char *e; (e = g_dir_read_name(dir));) {
            size_t bl;
            const char *info;
            assert_true(md_filename_split(e, &bl, &info));
            uint32_t uid = md_uidlist_uid(u, e, bl);
            assert_true(uid >= 1 && uid <= 3);
            GString *fl = g_string_new(NULL);
            md_flags_of_info(info, &kw, fl);
            assert_string_equal(fl->str, want_flags[uid]);
            /* Dovecot's ,S= and ,W= are our size and virtual size */
            char *path = g_build_filename(d, e, NULL);
            int64_t size, vsize = file_vsize(path, &size);
            char *base = g_strndup(e, bl), *b = NULL;
            assert_int_equal(md_base_for(base, size, vsize, &b), 0);
            assert_string_equal(b, base);
            /* and flags written back as Dovecot writes them */
            bool ch = false;
            GString *again = g_string_new(NULL);
            assert_int_equal(md_info_for(fl->str, fl->len, info, &kw, &ch, again), 0);
            assert_string_equal(again->str, info);
            assert_false(ch);
            g_string_free(again, TRUE);
            g_free(b);
            g_free(base);
            g_free(path);
            g_string_free(fl, TRUE);
            seen++;
        }
        g_dir_close(dir);
        g_free(d);
    }
    assert_int_equal(seen, 3);
    GDir *dir = g_dir_open(root, 0, NULL);
    GString *names = g_string_new(NULL);
    GPtrArray *found = g_ptr_array_new_with_free_func(g_free);
    for (const char *e; (e = g_dir_read_name(dir));) {
        g_string_assign(names, "");
        if (e[0] == '.' && !md_folder_path(MD_LAYOUT_MAILDIRPP, e, names))
            g_ptr_array_add(found, g_strdup(names->str));
    }
    g_dir_close(dir);
    assert_int_equal(found->len, 3);
    for (guint i = 0; i < found->len; i++)
        assert_true(!strcmp(found->pdata[i], "Café/Ünïcode") || !strcmp(found->pdata[i], "a&b") ||
                    !strcmp(found->pdata[i], "日本語"));
    g_ptr_array_free(found, TRUE);

    /* what we write, as Dovecot reads it: a folder, a message with a
     * flag and a keyword, the uidlist with our UIDVALIDITY and UIDs */
    g_string_assign(names, "");
    assert_int_equal(md_folder_dir(MD_LAYOUT_MAILDIRPP, "Ours/Über", names), 0);
    char *fdir = g_build_filename(root, names->str, NULL);
    assert_int_equal(g_mkdir(fdir, 0700), 0);
    chown_nobody(fdir);
    const char *subs[] = {"cur", "new", "tmp"};
    for (int i = 0; i < 3; i++) {
        char *p = g_build_filename(fdir, subs[i], NULL);
        assert_int_equal(g_mkdir(p, 0700), 0);
        chown_nobody(p);
        g_free(p);
    }
    int ffd = open(fdir, O_RDONLY | O_DIRECTORY);
    uid_t ou = getuid() == 0 ? 65534 : (uid_t)-1;
    gid_t og = getuid() == 0 ? 65534 : (gid_t)-1;
    md_keywords okw = {{0}};
    bool ch = false;
    GString *info = g_string_new(NULL);
    assert_int_equal(md_info_for("\\Seen Ourkw", 11, NULL, &okw, &ch, info), 0);
    assert_true(ch);
    assert_int_equal(md_keywords_save(ffd, &okw, ou, og, 0600), 0);
    char *data = NULL;
    gsize len = 0;
    assert_true(g_file_get_contents(emls[0], &data, &len, NULL));
    char *fname = g_strdup_printf("mine:2,%s", info->str);
    char *mpath = g_build_filename(fdir, "cur", fname, NULL);
    assert_true(g_file_set_contents(mpath, data, (gssize)len, NULL));
    chown_nobody(mpath);
    md_uidlist *ours = md_uidlist_new(4242, 50);
    assert_int_equal(md_uidlist_add(ours, "mine", 41, fname), 0);
    md_lock *l = NULL;
    assert_int_equal(md_uidlist_lock(ffd, &l), 0);
    assert_int_equal(md_uidlist_commit(l, ours, ou, og, 0600), 0);
    char *out = NULL;
    char *fetch[] = {"run", "fetch", "uid flags", "mailbox", "Ours.Über", NULL};
    assert_int_equal(fixture_run(dv, fetch, &out), 0);
    assert_non_null(strstr(out, "uid: 41\n"));
    assert_non_null(strstr(out, "\\Seen"));
    assert_non_null(strstr(out, "Ourkw"));
    g_free(out);
    char *status[] = {"run", "mailbox", "status", "uidvalidity uidnext", "Ours.Über", NULL};
    assert_int_equal(fixture_run(dv, status, &out), 0);
    assert_non_null(strstr(out, "uidvalidity=4242"));
    assert_non_null(strstr(out, "uidnext=50"));
    g_free(out);

    /* our lock keeps Dovecot out: a delivery gets no UID while we hold
     * it (Dovecot waits, times out), and gets one once we let go */
    assert_int_equal(md_uidlist_lock(rfd, &l), 0);
    char *cmd =
        g_strdup_printf("bash '%s' '%s' run save -m INBOX < '%s'",
                        getenv("MD_FIXTURE") ? getenv("MD_FIXTURE") : MD_FIXTURE, dv, emls[1]);
    assert_int_equal(system(cmd), 0);
    g_free(cmd);
    char *fetch_in[] = {"run",   "-o", "mail_max_lock_timeout=2s", "fetch", "uid", "mailbox",
                        "INBOX", NULL};
    gint64 t0 = g_get_monotonic_time();
    fixture_run(dv, fetch_in, &out);
    /* Dovecot counts whole seconds: 2s is a wait of 1 to 2 s */
    assert_true(g_get_monotonic_time() - t0 >= 900000);
    assert_null(strstr(out, "uid: 4"));
    g_free(out);
    md_uidlist_unlock(l);
    char *fetch_all[] = {"run", "fetch", "uid", "mailbox", "INBOX", NULL};
    assert_int_equal(fixture_run(dv, fetch_all, &out), 0);
    assert_non_null(strstr(out, "uid: 4"));
    g_free(out);
    md_uidlist_free(u);
    assert_int_equal(md_uidlist_read(rfd, &u, &err), 0);
    assert_int_equal(u->recs->len, 4);

    /* dovecot-acl as Dovecot's acl plugin reads and writes it */
    const char *acl = "owner lrswipkxtea\nbob lrc\n$staff lrd\n-eve w\nanyone l";
    GString *dacl = g_string_new(NULL);
    assert_int_equal(md_acl_to_dovecot(acl, strlen(acl), dacl), 0);
    g_string_append_c(dacl, '\n');
    char *aclpath = g_build_filename(root, "dovecot-acl", NULL);
    assert_true(g_file_set_contents(aclpath, dacl->str, -1, NULL));
    char *aclget[] = {"run",   "-o", "mail_plugins=acl", "-o", "plugin/acl=vfile", "acl", "get",
                      "INBOX", NULL};
    assert_int_equal(fixture_run(dv, aclget, &out), 0); /* 'c' or 'd' would fail it */
    assert_non_null(strstr(out, "user=bob "));
    assert_non_null(strstr(out, "create delete lookup read"));
    assert_non_null(strstr(out, "expunge lookup read write-deleted"));
    assert_non_null(strstr(out, "-write"));
    g_free(out);
    char *aclset[] = {
        "run",   "-o",         "mail_plugins=acl", "-o",   "plugin/acl=vfile", "acl", "set",
        "INBOX", "user=carol", "lookup",           "read", "write-seen",       NULL};
    assert_int_equal(fixture_run(dv, aclset, NULL), 0);
    char *written = NULL;
    assert_true(g_file_get_contents(aclpath, &written, NULL, NULL));
    g_string_assign(dacl, "");
    assert_int_equal(md_acl_from_dovecot(written, strlen(written), dacl), 0);
    assert_non_null(strstr(dacl->str, "carol lrs"));
    assert_non_null(strstr(dacl->str, "bob lrkx"));
    assert_non_null(strstr(dacl->str, "$staff lrte"));
    assert_non_null(strstr(dacl->str, "-eve w"));
    g_free(written);
    g_free(aclpath);
    g_string_free(dacl, TRUE);

    close(ffd);
    close(rfd);
    md_uidlist_free(ours);
    md_uidlist_free(u);
    md_keywords_clear(&kw);
    md_keywords_clear(&okw);
    g_string_free(info, TRUE);
    g_string_free(names, TRUE);
    g_free(data);
    g_free(fname);
    g_free(mpath);
    g_free(fdir);
    g_free(root);
    g_free(dv);
    for (int i = 0; i < 3; i++)
        g_free(emls[i]);
}

/* The uids doveadm fetch lists, in a sorted array. */
static GArray *fetched_uids(const char *dv)
{
    char *out = NULL;
    char *fetch[] = {"run", "fetch", "uid", "mailbox", "INBOX", NULL};
    assert_int_equal(fixture_run(dv, fetch, &out), 0);
    GArray *uids = g_array_new(FALSE, FALSE, sizeof(uint32_t));
    for (const char *p = out; (p = strstr(p, "uid: ")); p += 5) {
        uint32_t v = (uint32_t)strtoul(p + 5, NULL, 10);
        g_array_append_val(uids, v);
    }
    g_free(out);
    return uids;
}

/*
 * Dovecot delivers while we add messages under the lock, both in a loop:
 * afterwards every message has one UID, none reused, ours as we gave
 * them, and Dovecot's force-resync changes nothing.  Our messages go into
 * cur/ while we hold the lock: a file there before it would be Dovecot's
 * to number at its next sync.
 */
#define DELIVERIES 25
#define MAX_OURS 400

static void test_dovecot_concurrent(void **state)
{
    fixture *f = *state;
    char *eml = testdata_eml("cpython/msg_05.txt");
    if (!have_doveadm() || !eml) {
        g_free(eml);
        skip();
    }
    chmod(f->dir, 0755);
    char *dv = g_build_filename(f->dir, "dv", NULL);
    char *none[] = {NULL};
    assert_int_equal(fixture_run(dv, none, NULL), 0);
    char *first =
        g_strdup_printf("bash '%s' '%s' run save -m INBOX < '%s'",
                        getenv("MD_FIXTURE") ? getenv("MD_FIXTURE") : MD_FIXTURE, dv, eml);
    assert_int_equal(system(first), 0); /* Dovecot makes the Maildir */
    pid_t child = fork();
    if (!child) {
        int bad = 0;
        for (int i = 1; i < DELIVERIES; i++)
            bad += system(first) != 0;
        _exit(bad ? 1 : 0);
    }
    char *root = g_build_filename(dv, "Maildir", NULL);
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    assert_true(rfd >= 0);
    char *data = NULL;
    gsize len = 0;
    assert_true(g_file_get_contents(eml, &data, &len, NULL));
    /* ours go in for as long as Dovecot delivers */
    uint32_t ours[MAX_OURS];
    int n = 0, status = 0;
    bool child_done = false;
    for (; n < MAX_OURS && (!child_done || n < 5); n++) {
        int i = n;
        md_lock *l = NULL;
        assert_int_equal(md_uidlist_lock(rfd, &l), 0);
        md_uidlist *u = NULL;
        char *err = NULL;
        assert_int_equal(md_uidlist_read(rfd, &u, &err), 0);
        char *base = g_strdup_printf("mailfs%03d", i);
        char *fname = g_strconcat(base, ":2,S", NULL);
        char *tmp = g_build_filename(root, "tmp", base, NULL);
        char *cur = g_build_filename(root, "cur", fname, NULL);
        assert_true(g_file_set_contents(tmp, data, (gssize)len, NULL));
        chown_nobody(tmp);
        assert_int_equal(rename(tmp, cur), 0);
        ours[i] = u->next_uid;
        assert_int_equal(md_uidlist_add(u, base, ours[i], fname), 0);
        assert_int_equal(md_uidlist_commit(l, u, getuid() == 0 ? 65534 : (uid_t)-1,
                                           getuid() == 0 ? 65534 : (gid_t)-1, 0600),
                         0);
        md_uidlist_free(u);
        g_free(base);
        g_free(fname);
        g_free(tmp);
        g_free(cur);
        child_done = child_done || waitpid(child, &status, WNOHANG) == child;
    }
    if (!child_done)
        waitpid(child, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    print_message("%d messages added by us while Dovecot delivered %d\n", n, DELIVERIES);
    GArray *uids = fetched_uids(dv);
    assert_int_equal(uids->len, DELIVERIES + n);
    for (guint i = 1; i < uids->len; i++)
        assert_true(g_array_index(uids, uint32_t, i) > g_array_index(uids, uint32_t, i - 1));
    md_uidlist *u = NULL;
    char *err = NULL;
    assert_int_equal(md_uidlist_read(rfd, &u, &err), 0);
    assert_int_equal(u->recs->len, DELIVERIES + n);
    for (int i = 0; i < n; i++) {
        char base[16];
        snprintf(base, sizeof base, "mailfs%03d", i);
        assert_int_equal(md_uidlist_uid(u, base, strlen(base)), ours[i]);
    }
    char *resync[] = {"run", "force-resync", "INBOX", NULL};
    assert_int_equal(fixture_run(dv, resync, NULL), 0);
    GArray *again = fetched_uids(dv);
    assert_int_equal(again->len, uids->len);
    assert_memory_equal(again->data, uids->data, uids->len * sizeof(uint32_t));
    g_array_free(again, TRUE);
    g_array_free(uids, TRUE);
    md_uidlist_free(u);
    close(rfd);
    g_free(data);
    g_free(root);
    g_free(first);
    g_free(dv);
    g_free(eml);
}

/* Writes a file of a few bytes at dir/name. */
static void touch_file(const char *dir, const char *name)
{
    g_autofree char *p = g_build_filename(dir, name, NULL);
    assert_true(g_file_set_contents(p, "x\n", 2, NULL));
}

/*
 * Removing a folder that turns out to hold a message (in new/ or cur/)
 * leaves it whole: its uidlist and keywords name the message's UID and
 * flags.  Before the audit after issue 14 they were unlinked in the same
 * pass as the rmdir of cur/ and new/ that failed.
 */
static void test_remove_maildir_not_empty(void **state)
{
    (void)state;
    g_autofree char *dir = g_dir_make_tmp("mailfs-rmmd-XXXXXX", NULL);
    const char *sub[] = {"new", "cur"};
    for (int i = 0; i < 2; i++) {
        g_autofree char *f = g_build_filename(dir, ".Folder", NULL);
        for (int k = 0; k < 3; k++) {
            g_autofree char *d =
                g_build_filename(f, (const char *[]){"cur", "new", "tmp"}[k], NULL);
            assert_int_equal(g_mkdir_with_parents(d, 0700), 0);
        }
        touch_file(f, "dovecot-uidlist");
        touch_file(f, "dovecot-keywords");
        g_autofree char *holder = g_build_filename(f, sub[i], NULL);
        touch_file(holder, "1700000000.M1P1.host:2,a");
        assert_int_equal(md_remove_maildir(f, false), -ENOTEMPTY);
        const char *kept[] = {"dovecot-uidlist", "dovecot-keywords", "cur", "new", "tmp"};
        for (size_t k = 0; k < G_N_ELEMENTS(kept); k++) {
            g_autofree char *p = g_build_filename(f, kept[k], NULL);
            assert_true(g_file_test(p, G_FILE_TEST_EXISTS));
        }
        g_autofree char *msg = g_build_filename(holder, "1700000000.M1P1.host:2,a", NULL);
        assert_int_equal(g_unlink(msg), 0);
        assert_int_equal(md_remove_maildir(f, false), 0); /* empty now: gone */
        assert_false(g_file_test(f, G_FILE_TEST_EXISTS));
    }
    assert_int_equal(g_rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutf7_vectors),
        cmocka_unit_test(test_mutf7_doveadm),
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_filenames),
        cmocka_unit_test_setup_teardown(test_keywords, setup, teardown),
        cmocka_unit_test(test_flags),
        cmocka_unit_test_setup_teardown(test_uidlist_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uidlist_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uidlist_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uidlist_append, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_exclusion, setup, teardown),
        cmocka_unit_test(test_acl),
        cmocka_unit_test(test_remove_maildir_not_empty),
        cmocka_unit_test_setup_teardown(test_dovecot_oracle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dovecot_concurrent, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
