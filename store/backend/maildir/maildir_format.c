/*
 * maildir_format.c — Dovecot's on-disk formats (see maildir_format.h).
 *
 * Ground truth is Dovecot 2.3.19: src/lib-imap/imap-utf7.c,
 * src/lib-storage/index/maildir/maildir-{uidlist,keywords,filename,
 * filename-flags}.c, src/lib/file-dotlock.c and src/plugins/acl/.  Where
 * this file is stricter than Dovecot, the comment says so and why.
 */
#include "maildir_format.h"
#include "mailstore.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ============================================================ mUTF-7 */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* The 6-bit value of a modified-base64 character, or -1. */
static int b64_value(unsigned char c)
{
    const char *p = c ? strchr(b64_chars, c) : NULL;
    return p ? (int)(p - b64_chars) : -1;
}

/* Appends "&...-": the UTF-16BE bytes in modified base64. */
static void b64_run(GString *out, const guint8 *in, size_t len)
{
    g_string_append_c(out, '&');
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        g_string_append_c(out, b64_chars[in[i] >> 2]);
        g_string_append_c(out, b64_chars[((in[i] & 3) << 4) | (in[i + 1] >> 4)]);
        g_string_append_c(out, b64_chars[((in[i + 1] & 0x0f) << 2) | (in[i + 2] >> 6)]);
        g_string_append_c(out, b64_chars[in[i + 2] & 0x3f]);
    }
    if (len - i == 1) {
        g_string_append_c(out, b64_chars[in[i] >> 2]);
        g_string_append_c(out, b64_chars[(in[i] & 3) << 4]);
    } else if (len - i == 2) {
        g_string_append_c(out, b64_chars[in[i] >> 2]);
        g_string_append_c(out, b64_chars[((in[i] & 3) << 4) | (in[i + 1] >> 4)]);
        g_string_append_c(out, b64_chars[(in[i + 1] & 0x0f) << 2]);
    }
    g_string_append_c(out, '-');
}

/* Printable ASCII stands for itself; everything else is base64'd. */
static bool mutf7_direct(unsigned char c) { return c >= 0x20 && c < 0x7f; }

int md_mutf7_encode(const char *utf8, GString *out)
{
    if (!g_utf8_validate(utf8, -1, NULL))
        return -EINVAL;
    GByteArray *u16 = g_byte_array_new();
    const char *p = utf8;
    while (*p) {
        if (*p == '&') {
            g_string_append(out, "&-");
            p++;
            continue;
        }
        if (mutf7_direct((unsigned char)*p)) {
            g_string_append_c(out, *p++);
            continue;
        }
        g_byte_array_set_size(u16, 0);
        while (*p && !mutf7_direct((unsigned char)*p)) {
            gunichar c = g_utf8_get_char(p);
            guint8 b[4];
            if (c < 0x10000) {
                b[0] = (guint8)(c >> 8), b[1] = (guint8)c;
                g_byte_array_append(u16, b, 2);
            } else {
                gunichar hi = 0xd800 + ((c - 0x10000) >> 10), lo = 0xdc00 + ((c - 0x10000) & 0x3ff);
                b[0] = (guint8)(hi >> 8), b[1] = (guint8)hi, b[2] = (guint8)(lo >> 8),
                b[3] = (guint8)lo;
                g_byte_array_append(u16, b, 4);
            }
            p = g_utf8_next_char(p);
        }
        b64_run(out, u16->data, u16->len);
    }
    g_byte_array_free(u16, TRUE);
    return 0;
}

/*
 * Decodes one base64 run starting after '&' (*pp points at its first
 * character) up to and including its '-', into UTF-8 as Dovecot's
 * mbase64_decode_to_utf8 does: a run must end with '-', hold an even
 * number of bytes, encode no NUL and no printable ASCII, and pair its
 * surrogates.
 */
static int mutf7_run(const char **pp, GString *out)
{
    const char *p = *pp;
    GByteArray *bytes = g_byte_array_new();
    guint32 bits = 0;
    int nbits = 0, rc = 0;
    size_t nchars = 0;
    for (; *p != '-'; p++, nchars++) {
        int v = b64_value((unsigned char)*p);
        if (v < 0) {
            rc = -EINVAL; /* bad character, or the string ended */
            goto done;
        }
        bits = (bits << 6) | (guint32)v;
        nbits += 6;
        if (nbits >= 8) {
            guint8 b = (guint8)(bits >> (nbits - 8));
            g_byte_array_append(bytes, &b, 1);
            nbits -= 8;
            bits &= (1u << nbits) - 1;
        }
    }
    /* Dovecot: a lone sixth of a byte, or an odd byte count, is refused.
     * Non-zero padding bits it lets through; the round-trip check in
     * md_mutf7_decode refuses them (see there). */
    if (nchars % 4 == 1 || bytes->len % 2 || !bytes->len) {
        rc = -EINVAL;
        goto done;
    }
    for (guint i = 0; i < bytes->len; i += 2) {
        gunichar u = ((gunichar)bytes->data[i] << 8) | bytes->data[i + 1];
        if (u >= 0xd800 && u <= 0xdbff) {
            if (i + 3 >= bytes->len) {
                rc = -EINVAL;
                goto done;
            }
            gunichar lo = ((gunichar)bytes->data[i + 2] << 8) | bytes->data[i + 3];
            if (lo < 0xdc00 || lo > 0xdfff) {
                rc = -EINVAL;
                goto done;
            }
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
        } else if ((u >= 0xdc00 && u <= 0xdfff) || u == 0 || (u < 0x80 && mutf7_direct(u))) {
            rc = -EINVAL; /* lone low surrogate, NUL, printable ASCII */
            goto done;
        }
        g_string_append_unichar(out, u);
    }
    /* A run right after another is an unnecessary shift ("&-" is '&'). */
    if (p[1] == '&' && p[2] != '-')
        rc = -EINVAL;
    *pp = p + 1;
done:
    g_byte_array_free(bytes, TRUE);
    return rc;
}

/*
 * Dovecot's imap_utf7_to_utf8, plus one check Dovecot lacks: the result
 * must encode back to exactly the input.  Dovecot ignores the padding bits
 * of a run ("&AOl-" and "&AOk-" are both "é"); mailfs maps tree names back
 * to directory names by encoding, so a name that does not round-trip
 * would resolve to another directory.  Such a name is shown raw instead.
 */
int md_mutf7_decode(const char *mutf7, GString *out)
{
    gsize start = out->len;
    const char *p = mutf7;
    int rc = 0;
    while (*p && !rc) {
        unsigned char c = (unsigned char)*p;
        if (!mutf7_direct(c))
            rc = -EINVAL;
        else if (c != '&')
            g_string_append_c(out, *p++);
        else if (p[1] == '-') {
            g_string_append_c(out, '&');
            p += 2;
        } else {
            p++;
            rc = mutf7_run(&p, out);
        }
    }
    if (!rc) {
        GString *again = g_string_new(NULL);
        if (md_mutf7_encode(out->str + start, again) || strcmp(again->str, mutf7))
            rc = -EINVAL;
        g_string_free(again, TRUE);
    }
    if (rc)
        g_string_truncate(out, start);
    return rc;
}

/* ============================================================ layouts */

/* A tree path component a folder directory can be named after. */
static int check_component(md_layout layout, const char *c, bool top)
{
    if (!*c)
        return -EINVAL;
    if (!strcmp(c, "cur") || !strcmp(c, "new") || !strcmp(c, "tmp"))
        return -EINVAL;
    /* Dovecot finds INBOX case-insensitively at the top: "Inbox" would
     * name a second directory for the same mailbox. */
    if (top && !g_ascii_strcasecmp(c, "INBOX") && strcmp(c, "INBOX"))
        return -EINVAL;
    if (layout == MD_LAYOUT_MAILDIRPP)
        return strchr(c, '.') ? -EINVAL : 0;
    if (c[0] == '.' || (!top && !strcmp(c, "INBOX")))
        return -EINVAL;
    return 0;
}

int md_folder_dir(md_layout layout, const char *tree_path, GString *out)
{
    if (!strcmp(tree_path, "INBOX")) {
        g_string_truncate(out, 0);
        return 0;
    }
    gchar **parts = g_strsplit(tree_path, "/", -1);
    GString *dir = g_string_new(NULL);
    int rc = 0;
    for (size_t i = 0; !rc && parts[i]; i++) {
        rc = check_component(layout, parts[i], i == 0);
        if (rc)
            break;
        if (layout == MD_LAYOUT_MAILDIRPP || i > 0)
            g_string_append_c(dir, layout == MD_LAYOUT_MAILDIRPP ? '.' : '/');
        /* a file name: the whole ".a.b.c" in maildir++, one level in fs */
        gsize name_start = layout == MD_LAYOUT_MAILDIRPP ? 0 : dir->len;
        rc = md_mutf7_encode(parts[i], dir);
        if (!rc && dir->len - name_start > 255)
            rc = -ENAMETOOLONG;
    }
    if (!rc && !parts[0])
        rc = -EINVAL;
    if (!rc)
        g_string_assign(out, dir->str);
    g_string_free(dir, TRUE);
    g_strfreev(parts);
    return rc;
}

int md_folder_path(md_layout layout, const char *dir, GString *out)
{
    const char *names = dir;
    char sep = '/';
    if (layout == MD_LAYOUT_MAILDIRPP) {
        if (dir[0] != '.' || strchr(dir, '/'))
            return -EINVAL;
        names = dir + 1;
        sep = '.';
    }
    if (!*names)
        return -EINVAL;
    char seps[2] = {sep, 0};
    gchar **parts = g_strsplit(names, seps, -1);
    GString *path = g_string_new(NULL);
    int rc = 0;
    for (size_t i = 0; !rc && parts[i]; i++) {
        if (i)
            g_string_append_c(path, '/');
        rc = parts[i][0] ? md_mutf7_decode(parts[i], path) : -EINVAL;
    }
    g_strfreev(parts);
    /* Only a name that maps back to this very directory is a folder of
     * this layout (".INBOX", ".cur", "a/INBOX" are not). */
    GString *back = g_string_new(NULL);
    if (!rc && (!strcmp(path->str, "INBOX") || md_folder_dir(layout, path->str, back) ||
                strcmp(back->str, dir)))
        rc = -EINVAL;
    if (!rc)
        g_string_append(out, path->str);
    g_string_free(back, TRUE);
    g_string_free(path, TRUE);
    return rc;
}

void md_folder_raw_path(md_layout layout, const char *dir, GString *out)
{
    if (layout == MD_LAYOUT_FS) {
        g_string_append(out, dir);
        return;
    }
    const char *p = dir[0] == '.' ? dir + 1 : dir;
    for (; *p; p++)
        g_string_append_c(out, *p == '.' ? '/' : *p);
}

/* ========================================================= file names */

bool md_filename_split(const char *fname, size_t *base_len, const char **info)
{
    if (!fname[0] || fname[0] == '.')
        return false;
    size_t b = strcspn(fname, ":");
    if (!b)
        return false;
    /* Dovecot takes the flags after the last ':' (strrchr) and the base
     * up to the first (maildir_filename_base_cmp). */
    const char *last = strrchr(fname, ':');
    *base_len = b;
    *info = last && last[1] == '2' && last[2] == ',' ? last + 3 : NULL;
    return true;
}

/*
 * Whether every ",X=digits" field of name (X = 'S' or 'W') that Dovecot
 * would read as a size is value.  Dovecot reads digits up to ',', ':' or
 * the end (none: 0); a field followed by anything else it ignores, and so
 * may we.
 */
static bool size_fields_match(const char *name, char key, int64_t value)
{
    char pat[4] = {',', key, '=', 0};
    for (const char *p = strstr(name, pat); p; p = strstr(p + 1, pat)) {
        const char *d = p + 3;
        uint64_t v = 0;
        bool overflow = false;
        for (; *d >= '0' && *d <= '9'; d++) {
            overflow = overflow || v > (UINT64_MAX - 9) / 10;
            v = v * 10 + (uint64_t)(*d - '0');
        }
        if (*d != ',' && *d != ':' && *d)
            continue;
        if (overflow || value < 0 || v != (uint64_t)value)
            return false;
    }
    return true;
}

/* The bytes md_base_for writes as %XX once a name needs encoding:
 * control bytes too, which Dovecot's uidlist cannot hold (it ignores a
 * file whose name holds CR or LF). */
static bool needs_escape(const char *name, const char *p)
{
    unsigned char c = (unsigned char)*p;
    return c == '%' || c == ':' || c == ',' || c < 0x20 || c == 0x7f || (p == name && c == '.');
}

/* name as md_base_for writes a name that needs encoding. */
static char *escape_name(const char *name)
{
    GString *s = g_string_new(NULL);
    for (const char *p = name; *p; p++) {
        if (needs_escape(name, p))
            g_string_append_printf(s, "%%%02X", (unsigned char)*p);
        else
            g_string_append_c(s, *p);
    }
    return g_string_free(s, FALSE);
}

int md_base_for(const char *name, int64_t size, int64_t vsize, char **out)
{
    if (!*name || strchr(name, '/'))
        return -EINVAL;
    bool verbatim =
        name[0] != '.' && size_fields_match(name, 'S', size) && size_fields_match(name, 'W', vsize);
    for (const char *p = name; verbatim && *p; p++)
        verbatim = !needs_escape(name, p) || *p == ',';
    char *base = verbatim ? g_strdup(name) : escape_name(name);
    if (strlen(base) > MD_BASE_MAX) {
        g_free(base);
        return -ENAMETOOLONG;
    }
    *out = base;
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* md_base_for writes upper case only */
}

char *md_name_of_base(const char *base, size_t base_len)
{
    char *raw = g_strndup(base, base_len);
    if (!strchr(raw, '%'))
        return raw;
    GString *dec = g_string_new(NULL);
    for (const char *p = raw; *p; p++) {
        int h, l;
        if (*p == '%' && (h = hex_digit(p[1])) >= 0 && (l = hex_digit(p[2])) >= 0) {
            g_string_append_c(dec, (char)(h << 4 | l));
            p += 2;
        } else {
            g_string_append_c(dec, *p);
        }
    }
    /* Only what md_base_for makes of the decoded name is decoded: any
     * other base with a '%' (Dovecot's, another tool's) shows as it is. */
    bool ours = dec->len == strlen(dec->str) && dec->len && !strchr(dec->str, '/');
    if (ours) {
        char *again = escape_name(dec->str);
        ours = !strcmp(again, raw);
        g_free(again);
    }
    if (!ours) {
        g_string_free(dec, TRUE);
        return raw;
    }
    g_free(raw);
    return g_string_free(dec, FALSE);
}

int64_t md_vsize_add(const char *buf, size_t len, bool *prev_cr)
{
    int64_t n = (int64_t)len;
    bool cr = *prev_cr;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\n' && !cr)
            n++;
        cr = buf[i] == '\r';
    }
    *prev_cr = cr;
    return n;
}

/* ================================================== files, atomically */

/* A name for a temporary file no other process or thread picks. */
static char *temp_name(const char *prefix)
{
    char host[256] = "";
    guint64 r;
    if (gethostname(host, sizeof host - 1) || getrandom(&r, sizeof r, 0) != sizeof r)
        r = g_random_int() ^ ((guint64)g_random_int() << 32);
    for (char *h = host; *h; h++)
        if (*h == '/' || *h == ':')
            *h = '_';
    return g_strdup_printf("%s.temp.%s.%ld.%016" G_GINT64_MODIFIER "x", prefix, host,
                           (long)getpid(), r);
}

/* Gives fd the owner and mode Dovecot needs (only what differs, so an
 * unprivileged daemon writing its own files does not need CAP_CHOWN). */
static int set_owner_mode(int fd, uid_t uid, gid_t gid, mode_t mode)
{
    struct stat st;
    if (fstat(fd, &st))
        return -errno;
    if ((uid != (uid_t)-1 && st.st_uid != uid) || (gid != (gid_t)-1 && st.st_gid != gid))
        if (fchown(fd, uid, gid))
            return -errno;
    if ((st.st_mode & 07777) != (mode & 07777) && fchmod(fd, mode & 07777))
        return -errno;
    return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Writes data to tmp (in dirfd; created or truncated), owned uid:gid with
 * mode, its mtime at least min_mtime (0: now), synced, then renamed over
 * name and the directory synced: durable when this returns 0.  tmp is
 * gone on failure.
 */
static int replace_file(int dirfd, const char *tmp, const char *name, const char *data, size_t len,
                        uid_t uid, gid_t gid, mode_t mode, time_t min_mtime)
{
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = set_owner_mode(fd, uid, gid, mode);
    if (!rc)
        rc = write_all(fd, data, len);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (!rc && min_mtime > now.tv_sec) {
        struct timespec ts[2] = {now, {.tv_sec = min_mtime, .tv_nsec = 0}};
        if (futimens(fd, ts))
            rc = -errno;
    }
    if (!rc && fsync(fd))
        rc = -errno;
    if (close(fd) && !rc)
        rc = -errno;
    if (!rc && renameat(dirfd, tmp, dirfd, name))
        rc = -errno;
    if (rc) {
        unlinkat(dirfd, tmp, 0);
        return rc;
    }
    return fsync(dirfd) ? -errno : 0;
}

/* Reads all of name in dirfd into *out (g_free), its stat in *st. */
static int read_file(int dirfd, const char *name, char **out, size_t *len, struct stat *st)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (fstat(fd, st)) {
        int e = -errno;
        close(fd);
        return e;
    }
    GString *s = g_string_sized_new(st->st_size > 0 ? (gsize)st->st_size + 1 : 256);
    char buf[65536];
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = -errno;
        if (n <= 0)
            break;
        g_string_append_len(s, buf, n);
    }
    close(fd);
    if (rc) {
        g_string_free(s, TRUE);
        return rc;
    }
    *len = s->len;
    *out = g_string_free(s, FALSE);
    return 0;
}

/*
 * The complete lines of text (as Dovecot's i_stream_read_next_line: a last
 * line without '\n' is not returned; a '\r' before '\n' is dropped).
 * Modifies text; returns a NULL-terminated array of pointers into it.
 */
static GPtrArray *split_lines(char *text, size_t len)
{
    GPtrArray *lines = g_ptr_array_new();
    char *p = text, *end = text + len;
    for (char *nl; p < end && (nl = memchr(p, '\n', (size_t)(end - p))); p = nl + 1) {
        *nl = '\0';
        if (nl > p && nl[-1] == '\r')
            nl[-1] = '\0';
        g_ptr_array_add(lines, p);
    }
    g_ptr_array_add(lines, NULL);
    return lines;
}

/* Dovecot's str_to_uint: decimal digits only, no sign, no overflow. */
static bool parse_uint(const char *s, size_t len, uint32_t *out)
{
    uint64_t v = 0;
    if (!len)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* ================================================== flags, keywords */

#define KEYWORDS_FILE "dovecot-keywords"

void md_keywords_clear(md_keywords *kw)
{
    for (int i = 0; i < MD_KEYWORDS_MAX; i++)
        g_clear_pointer(&kw->name[i], g_free);
}

/* The index of keyword name (IMAP keywords are case-insensitive, and so
 * is Dovecot's lookup in dovecot-keywords), or -1. */
static int keyword_index(const md_keywords *kw, const char *name, size_t len)
{
    for (int i = 0; i < MD_KEYWORDS_MAX; i++)
        if (kw->name[i] && strlen(kw->name[i]) == len &&
            !g_ascii_strncasecmp(kw->name[i], name, len))
            return i;
    return -1;
}

/*
 * As maildir_keywords_sync: "N NAME" split at the first space; a line
 * without a space, with N not a number below 26, an empty NAME or a NAME
 * already seen is skipped; a later line for an index replaces an earlier.
 */
int md_keywords_load(int dirfd, md_keywords *kw)
{
    md_keywords_clear(kw);
    char *text;
    size_t len;
    struct stat st;
    int rc = read_file(dirfd, KEYWORDS_FILE, &text, &len, &st);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        return rc;
    GPtrArray *lines = split_lines(text, len);
    unsigned skipped = 0;
    for (guint i = 0; lines->pdata[i]; i++) {
        const char *line = lines->pdata[i], *sp = strchr(line, ' ');
        uint32_t idx;
        if (!sp || !parse_uint(line, (size_t)(sp - line), &idx) || idx >= MD_KEYWORDS_MAX ||
            !sp[1] || keyword_index(kw, sp + 1, strlen(sp + 1)) >= 0) {
            skipped++;
            continue;
        }
        g_free(kw->name[idx]);
        kw->name[idx] = g_strdup(sp + 1);
    }
    if (skipped)
        ms_log(LOG_WARNING, "maildir: %s: %u line(s) skipped, not \"N NAME\" or a repeated name",
               KEYWORDS_FILE, skipped);
    g_ptr_array_free(lines, TRUE);
    g_free(text);
    return 0;
}

/*
 * Dovecot reads dovecot-keywords again only when its mtime (in seconds)
 * changed, so the new file's mtime must be later than the old one's even
 * within one second (maildir_keywords_write_fd does the same).
 */
int md_keywords_save(int dirfd, const md_keywords *kw, uid_t uid, gid_t gid, mode_t mode)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < MD_KEYWORDS_MAX; i++)
        if (kw->name[i])
            g_string_append_printf(s, "%d %s\n", i, kw->name[i]);
    struct stat old;
    time_t min_mtime =
        fstatat(dirfd, KEYWORDS_FILE, &old, AT_SYMLINK_NOFOLLOW) ? 0 : old.st_mtime + 1;
    char *tmp = temp_name(KEYWORDS_FILE); /* no leading dot: not a maildir++ folder name */
    int rc = replace_file(dirfd, tmp, KEYWORDS_FILE, s->str, s->len, uid, gid, mode, min_mtime);
    g_free(tmp);
    g_string_free(s, TRUE);
    return rc;
}

/* The system flags as Dovecot maps the info letters, in the order IMAP
 * FETCH FLAGS (and doveadm fetch flags) lists them. */
static const struct {
    char letter;
    const char *flag;
} sys_flags[] = {
    {'R', "\\Answered"}, {'F', "\\Flagged"}, {'T', "\\Deleted"}, {'S', "\\Seen"}, {'D', "\\Draft"},
};

static bool is_known_letter(char c) { return strchr("DFRST", c) || (c >= 'a' && c <= 'z'); }

void md_flags_of_info(const char *info, const md_keywords *kw, GString *out)
{
    if (!info)
        return;
    size_t n = strcspn(info, ","); /* a second ",..." set is not flags */
    bool first = true;
    for (size_t f = 0; f < G_N_ELEMENTS(sys_flags); f++) {
        if (memchr(info, sys_flags[f].letter, n)) {
            g_string_append_printf(out, "%s%s", first ? "" : " ", sys_flags[f].flag);
            first = false;
        }
    }
    for (char c = 'a'; c <= 'z'; c++) {
        const char *name = kw ? kw->name[c - 'a'] : NULL;
        if (name && memchr(info, c, n)) {
            g_string_append_printf(out, "%s%s", first ? "" : " ", name);
            first = false;
        }
    }
}

static int char_cmp(const void *a, const void *b)
{
    return *(const unsigned char *)a - *(const unsigned char *)b;
}

int md_info_for(const char *flags, size_t len, const char *old_info, md_keywords *kw,
                bool *kw_changed, GString *out)
{
    md_keywords added = {{0}}; /* new keywords, kept apart until all fit */
    GString *letters = g_string_new(NULL);
    size_t n = old_info ? strcspn(old_info, ",") : 0;
    int rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        size_t j = i;
        while (j < len && flags[j] != ' ')
            j++;
        const char *w = flags + i;
        size_t wl = j - i;
        i = j + 1;
        if (!wl)
            continue;
        if (w[0] == '\\') {
            size_t f = 0;
            while (f < G_N_ELEMENTS(sys_flags) && !(strlen(sys_flags[f].flag) == wl &&
                                                    !g_ascii_strncasecmp(sys_flags[f].flag, w, wl)))
                f++;
            if (f == G_N_ELEMENTS(sys_flags))
                rc = -EINVAL; /* \Recent and unknown system flags are not stored */
            else
                g_string_append_c(letters, sys_flags[f].letter);
            continue;
        }
        int k = keyword_index(kw, w, wl);
        if (k < 0)
            k = keyword_index(&added, w, wl);
        /* a free letter, but not one this file already holds for a
         * keyword nobody listed: that would give it the new keyword */
        for (int f = 0; k < 0 && f < MD_KEYWORDS_MAX; f++)
            if (!kw->name[f] && !added.name[f] && !memchr(old_info ? old_info : "", 'a' + f, n))
                added.name[k = f] = g_strndup(w, wl);
        if (k < 0)
            rc = -ENOSPC;
        else
            g_string_append_c(letters, (char)('a' + k));
    }
    for (size_t i = 0; i < n; i++) {
        char c = old_info[i];
        /* letters Dovecot does not know, and keyword letters with no
         * keyword here, stay as they are */
        bool unknown_kw = c >= 'a' && c <= 'z' && !kw->name[c - 'a'] && !added.name[c - 'a'];
        if (!is_known_letter(c) || unknown_kw)
            g_string_append_c(letters, c);
    }
    if (rc) {
        md_keywords_clear(&added);
        g_string_free(letters, TRUE);
        return rc;
    }
    qsort(letters->str, letters->len, 1, char_cmp);
    for (size_t i = 0; i < letters->len; i++)
        if (!i || letters->str[i] != letters->str[i - 1])
            g_string_append_c(out, letters->str[i]);
    if (old_info && old_info[n])
        g_string_append(out, old_info + n);
    for (int f = 0; f < MD_KEYWORDS_MAX; f++) {
        if (added.name[f]) {
            kw->name[f] = added.name[f];
            *kw_changed = true;
        }
    }
    g_string_free(letters, TRUE);
    return 0;
}

/* =================================================== dovecot-uidlist */

#define UIDLIST_FILE "dovecot-uidlist"
#define UIDLIST_TMP "dovecot-uidlist.tmp"
#define UIDLIST_LOCK "dovecot-uidlist.lock"

static void rec_clear(md_uid_rec *r)
{
    g_free(r->base);
    g_free(r->ext);
    g_free(r->fname);
}

static md_uidlist *uidlist_alloc(void)
{
    md_uidlist *u = g_new0(md_uidlist, 1);
    u->recs = g_array_new(FALSE, TRUE, sizeof(md_uid_rec));
    u->by_base = g_hash_table_new(g_str_hash, g_str_equal); /* keys: the recs' base */
    return u;
}

void md_uidlist_free(md_uidlist *u)
{
    if (!u)
        return;
    for (guint i = 0; i < u->recs->len; i++)
        rec_clear(&g_array_index(u->recs, md_uid_rec, i));
    g_array_free(u->recs, TRUE);
    g_hash_table_destroy(u->by_base);
    g_free(u->header_rest);
    g_free(u);
}

/* A mailbox GUID field as Dovecot writes it ("G" and 32 hex digits). */
static char *new_guid_field(void)
{
    guint8 b[16];
    if (getrandom(b, sizeof b, 0) != sizeof b)
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (guint8)g_random_int();
    GString *s = g_string_new("G");
    for (size_t i = 0; i < sizeof b; i++)
        g_string_append_printf(s, "%02x", b[i]);
    return g_string_free(s, FALSE);
}

md_uidlist *md_uidlist_new(uint32_t uidvalidity, uint32_t next_uid)
{
    md_uidlist *u = uidlist_alloc();
    u->uidvalidity = uidvalidity;
    u->next_uid = next_uid ? next_uid : 1;
    u->header_rest = new_guid_field(); /* Dovecot writes one in every header */
    return u;
}

/* Rebuilds by_base's indexes from recs position from on. */
static void reindex_from(md_uidlist *u, guint from)
{
    for (guint i = from; i < u->recs->len; i++) {
        md_uid_rec *r = &g_array_index(u->recs, md_uid_rec, i);
        g_hash_table_insert(u->by_base, r->base, GUINT_TO_POINTER(i + 1));
    }
}

/* The index in recs of base, or -1. */
static gssize find_base(const md_uidlist *u, const char *base, size_t base_len)
{
    char stack[256];
    char *key = base_len < sizeof stack ? stack : g_malloc(base_len + 1);
    memcpy(key, base, base_len);
    key[base_len] = '\0';
    gpointer v = g_hash_table_lookup(u->by_base, key);
    if (key != stack)
        g_free(key);
    return v ? (gssize)GPOINTER_TO_UINT(v) - 1 : -1;
}

uint32_t md_uidlist_uid(const md_uidlist *u, const char *base, size_t base_len)
{
    gssize i = find_base(u, base, base_len);
    return i < 0 ? 0 : g_array_index(u->recs, md_uid_rec, i).uid;
}

void md_uidlist_remove(md_uidlist *u, const char *base, size_t base_len)
{
    gssize i = find_base(u, base, base_len);
    if (i < 0)
        return;
    md_uid_rec *r = &g_array_index(u->recs, md_uid_rec, i);
    g_hash_table_remove(u->by_base, r->base);
    rec_clear(r);
    g_array_remove_index(u->recs, (guint)i);
    reindex_from(u, (guint)i);
}

/* Appends a record (uid above every listed one, base not listed). */
static void push_rec(md_uidlist *u, uint32_t uid, const char *fname, char *ext)
{
    md_uid_rec r = {.uid = uid,
                    .base = g_strndup(fname, strcspn(fname, ":")),
                    .ext = ext,
                    .fname = g_strdup(fname)};
    g_array_append_val(u->recs, r);
    g_hash_table_insert(u->by_base, r.base, GUINT_TO_POINTER(u->recs->len));
}

/* What a record's file name may be: what Dovecot's uidlist can hold and
 * its sync would list (no '/', no CR or LF, not empty, no leading '.'). */
static bool valid_fname(const char *f)
{
    return f[0] && f[0] != ':' && f[0] != '.' && !strpbrk(f, "/\r\n");
}

int md_uidlist_add(md_uidlist *u, const char *base, uint32_t uid, const char *fname)
{
    if (!fname)
        fname = base;
    size_t bl = strlen(base);
    if (!valid_fname(base) || strchr(base, ':') || !valid_fname(fname) ||
        strncmp(fname, base, bl) || (fname[bl] && fname[bl] != ':'))
        return -EINVAL;
    if (!uid || uid == UINT32_MAX ||
        (u->recs->len && uid <= g_array_index(u->recs, md_uid_rec, u->recs->len - 1).uid))
        return -EINVAL;
    if (find_base(u, base, bl) >= 0)
        return -EEXIST;
    push_rec(u, uid, fname, NULL);
    if (u->next_uid <= uid)
        u->next_uid = uid + 1;
    if (u->last_uid < uid)
        u->last_uid = uid;
    return 0;
}

/* Sets *err (first error only) and returns -EINVAL. */
static int corrupt(char **err, unsigned line, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int corrupt(char **err, unsigned line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (err && !*err)
        *err = g_strdup_printf(UIDLIST_FILE " line %u: %s", line, msg);
    g_free(msg);
    return -EINVAL;
}

/* The header line after "3 " (maildir_uidlist_read_v3_header). */
static int parse_v3_header(md_uidlist *u, const char *p, char **err)
{
    GString *rest = g_string_new(NULL);
    int rc = 0;
    while (*p && !rc) {
        char key = *p++;
        size_t vl = strcspn(p, " ");
        if (key == 'V' && !parse_uint(p, vl, &u->uidvalidity))
            rc = corrupt(err, 1, "invalid UIDVALIDITY %.*s", (int)vl, p);
        else if (key == 'N' && !parse_uint(p, vl, &u->next_uid))
            rc = corrupt(err, 1, "invalid next UID %.*s", (int)vl, p);
        else if (key != 'V' && key != 'N') {
            /* Dovecot refuses a mailbox GUID that is not 32 hex digits */
            bool hex = vl == 32;
            for (size_t i = 0; key == 'G' && hex && i < vl; i++)
                hex = g_ascii_isxdigit(p[i]);
            if (key == 'G' && !hex)
                rc = corrupt(err, 1, "invalid mailbox GUID %.*s", (int)vl, p);
            g_string_append_printf(rest, "%s%c%.*s", rest->len ? " " : "", key, (int)vl, p);
        }
        p += vl;
        while (*p == ' ')
            p++;
    }
    u->header_rest = g_string_free(rest, FALSE);
    return rc;
}

static int parse_header(md_uidlist *u, const char *line, unsigned *version, char **err)
{
    if (!line)
        return corrupt(err, 1, "no header line");
    if (line[0] < '0' || line[0] > '9' || line[1] != ' ')
        return corrupt(err, 1, "invalid version number");
    *version = (unsigned)(line[0] - '0');
    if (*version == 3) {
        int rc = parse_v3_header(u, line + 2, err);
        if (rc)
            return rc;
    } else if (*version == 1) {
        /* "1 <uidvalidity> <next uid>" (Courier's courierimapuiddb too) */
        const char *a = line + 2, *sp = strchr(a, ' ');
        const char *b = sp ? sp + 1 : "";
        if (!sp || !parse_uint(a, (size_t)(sp - a), &u->uidvalidity) ||
            !parse_uint(b, strcspn(b, " "), &u->next_uid))
            return corrupt(err, 1, "corrupted version 1 header");
        u->header_rest = g_strdup("");
    } else {
        return corrupt(err, 1, "unsupported version %u", *version);
    }
    if (!u->uidvalidity || !u->next_uid)
        return corrupt(err, 1, "broken header (uidvalidity %u, next uid %u)", u->uidvalidity,
                       u->next_uid);
    return 0;
}

/* Extension fields of a v3 record up to its " :" (maildir_uidlist_read_
 * extended): each is a key A-Z and a value; others Dovecot drops. */
static char *parse_ext(const char **pp, unsigned lineno)
{
    const char *p = *pp;
    GString *ext = g_string_new(NULL);
    while (*p && *p != ':') {
        size_t fl = strcspn(p, " ");
        if (*p >= 'A' && *p <= 'Z')
            g_string_append_printf(ext, "%s%.*s", ext->len ? " " : "", (int)fl, p);
        else
            ms_log(LOG_WARNING, "maildir: " UIDLIST_FILE " line %u: invalid extension %.*s dropped",
                   lineno, (int)fl, p);
        p += fl;
        while (*p == ' ')
            p++;
    }
    *pp = p;
    /* Kept for every record of a folder (tens of thousands): the exact
     * size, not the GString's growth slack. */
    char *out = ext->len ? g_strndup(ext->str, ext->len) : NULL;
    g_string_free(ext, TRUE);
    return out;
}

/* One record line (maildir_uidlist_next); *prev is the last uid read. */
typedef struct uid_sink {
    md_uid_fn fn;
    void *ctx;
} uid_sink;

static int parse_record(md_uidlist *u, const uid_sink *each, unsigned version, const char *line,
                        unsigned lineno, uint32_t *prev, char **err)
{
    uint64_t uid = 0;
    const char *p = line;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((uid = uid * 10 + (uint64_t)(*p - '0')) > UINT32_MAX)
            return corrupt(err, lineno, "UID too high");
    if (!uid || *p != ' ')
        return corrupt(err, lineno, "invalid data: %s", line);
    if (uid <= *prev)
        return corrupt(err, lineno, "UIDs not ordered (%u after %u)", (unsigned)uid, *prev);
    if (uid == UINT32_MAX)
        return corrupt(err, lineno, "UID too high (%u)", (unsigned)uid);
    *prev = (uint32_t)uid;
    while (*p == ' ')
        p++;
    char *ext = NULL;
    if (version == 3) {
        ext = parse_ext(&p, lineno);
        if (*p == ':')
            p++;
        if (!*p) {
            g_free(ext);
            return corrupt(err, lineno, "invalid extended fields: %s", line);
        }
    }
    if (strchr(p, '/')) {
        g_free(ext);
        return corrupt(err, lineno, "broken filename: %s", p);
    }
    if (each) { /* md_uidlist_scan: handed over, not kept (a later line wins) */
        g_free(ext);
        each->fn(each->ctx, p, strcspn(p, ":"), (uint32_t)uid);
        return 0;
    }
    gssize old = find_base(u, p, strcspn(p, ":"));
    if (old >= 0) {
        if (g_array_index(u->recs, md_uid_rec, old).uid == uid) {
            g_free(ext); /* listed twice with one uid: Dovecot lets it be */
            return 0;
        }
        /* Dovecot: an expunged file moved back and appended again; the
         * later uid wins. */
        ms_log(LOG_WARNING, "maildir: " UIDLIST_FILE " line %u: %s listed again (uid %u -> %u)",
               lineno, p, g_array_index(u->recs, md_uid_rec, old).uid, (unsigned)uid);
        md_uidlist_remove(u, p, strcspn(p, ":"));
    }
    push_rec(u, (uint32_t)uid, p, ext);
    return 0;
}

/* md_uidlist_read, or md_uidlist_scan when each is given. */
static int uidlist_read(int dirfd, const uid_sink *each, md_uidlist **out, char **err)
{
    if (err)
        *err = NULL;
    char *text;
    size_t len;
    struct stat st;
    int rc = read_file(dirfd, UIDLIST_FILE, &text, &len, &st);
    if (rc)
        return rc;
    md_uidlist *u = uidlist_alloc();
    u->dev = st.st_dev;
    u->ino = st.st_ino;
    u->size = (off_t)len; /* what was read: a later append changes it */
    u->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    GPtrArray *lines = split_lines(text, len);
    unsigned version = 0;
    rc = parse_header(u, lines->pdata[0], &version, err);
    uint32_t prev = 0;
    for (guint i = 1; !rc && lines->pdata[i]; i++)
        rc = parse_record(u, each, version, lines->pdata[i], i + 1, &prev, err);
    /* Dovecot moves next uid past the last record rather than fail. */
    if (!rc && u->next_uid <= prev)
        u->next_uid = prev + 1;
    u->last_uid = prev;
    u->partial = each != NULL;
    g_ptr_array_free(lines, TRUE);
    g_free(text);
    if (rc) {
        md_uidlist_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

int md_uidlist_read(int dirfd, md_uidlist **out, char **err)
{
    return uidlist_read(dirfd, NULL, out, err);
}

int md_uidlist_scan(int dirfd, md_uid_fn fn, void *ctx, md_uidlist **out, char **err)
{
    uid_sink each = {fn, ctx};
    return uidlist_read(dirfd, &each, out, err);
}

/* ====================================================== uidlist lock */

/* Dovecot's values (maildir-uidlist.h, file-dotlock.c). */
#define LOCK_STALE_SECS 120     /* MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT */
#define LOCK_PID_CHECK_SECS 2   /* STALE_PID_CHECK_SECS */
#define LOCK_WAIT_MIN_US 5000   /* first wait; Dovecot waits on inotify */
#define LOCK_WAIT_MAX_US 200000 /* longest wait between two tries */

struct md_lock {
    int dirfd; /* our own dup of the folder's fd */
    dev_t dev; /* the lock file we made: an inode number alone can be */
    ino_t ino; /* reused at once by a lock made after ours was broken */
    struct timespec ctime;
};

/* What check_lock last saw of a file (file-dotlock.c's file_change_info). */
typedef struct lock_seen {
    dev_t dev;
    ino_t ino;
    off_t size;
    time_t ctime, mtime;
} lock_seen;

/* Records st in *seen; when it changed, moves *last_change on as
 * Dovecot's update_change_info does. */
static void note_change(const struct stat *st, lock_seen *seen, time_t *last_change, time_t now)
{
    if (seen->ino == st->st_ino && seen->dev == st->st_dev && seen->ctime == st->st_ctime &&
        seen->mtime == st->st_mtime && seen->size == st->st_size)
        return;
    time_t t = now;
    if (!seen->ctime) /* first look: the file's own time */
        t = st->st_mtime <= now && st->st_mtime > st->st_ctime ? st->st_mtime : st->st_ctime;
    if (*last_change < t)
        *last_change = t;
    *seen = (lock_seen){st->st_dev, st->st_ino, st->st_size, st->st_ctime, st->st_mtime};
}

/* "PID:HOST" as Dovecot writes it into a dotlock. */
static char *lock_content(void)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    return g_strdup_printf("%ld:%s", (long)getpid(), host);
}

/* The pid in the lock file when it was made on this host, else 0. */
static pid_t lock_local_pid(int dirfd)
{
    char buf[512], host[256] = "";
    int fd = openat(dirfd, UIDLIST_LOCK, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    if (buf[n - 1] == '\n')
        n--;
    buf[n] = '\0';
    char *colon = strchr(buf, ':');
    gethostname(host, sizeof host - 1);
    if (!colon || strcmp(colon + 1, host))
        return 0;
    uint32_t pid;
    if (!parse_uint(buf, (size_t)(colon - buf), &pid) || !pid || pid > INT32_MAX)
        return 0;
    return (pid_t)pid;
}

/* When this process started (seconds since the epoch), from /proc; 0 when
 * unknown. */
static time_t process_start(void)
{
    char buf[1024];
    time_t btime = 0;
    FILE *f = fopen("/proc/stat", "re");
    if (f) {
        while (fgets(buf, sizeof buf, f))
            if (!strncmp(buf, "btime ", 6))
                btime = (time_t)strtoll(buf + 6, NULL, 10);
        fclose(f);
    }
    f = fopen("/proc/self/stat", "re");
    if (!f || !btime) {
        if (f)
            fclose(f);
        return 0;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (!p)
        return 0;
    return btime + (time_t)(strtoull(p + 1, NULL, 10) / (unsigned long long)sysconf(_SC_CLK_TCK));
}

/*
 * Whether a lock file made by pid (on this host) is left over: the
 * process is gone.  Our own pid is Dovecot's "it's us" case; Dovecot
 * breaks such a lock, but here it is most likely another thread of this
 * process holding it, so it is broken only when made before this process
 * started (a previous process that had our pid).
 */
static bool pid_is_gone(pid_t pid, const struct stat *lock_st)
{
    if (pid == getpid()) {
        time_t start = process_start();
        return start && lock_st->st_ctime < start;
    }
    return kill(pid, 0) && errno == ESRCH;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/*
 * Removes the lock file judged stale, unless it changed since it was
 * judged (another process broke it and locked meanwhile).
 */
static int break_lock(int dirfd, const lock_seen *judged, const char *why)
{
    struct stat st;
    if (fstatat(dirfd, UIDLIST_LOCK, &st, AT_SYMLINK_NOFOLLOW))
        return errno == ENOENT ? 0 : -errno;
    if (st.st_ino != judged->ino || st.st_dev != judged->dev || st.st_mtime != judged->mtime ||
        st.st_size != judged->size)
        return 0;
    if (unlinkat(dirfd, UIDLIST_LOCK, 0) && errno != ENOENT)
        return -errno;
    ms_log(LOG_WARNING, "maildir: broke stale " UIDLIST_LOCK " (%s)", why);
    /* As Dovecot's dotlock_override: another process that judged the
     * same lock stale may be about to unlink it; a lock made at once
     * would be the one it unlinks. */
    sleep_us(100000 + g_random_int_range(0, 100000));
    return 0;
}

/*
 * One look at an existing lock (file-dotlock.c's check_lock): 1 when it
 * is gone or was broken (try again now), 0 to wait, or -errno.
 */
static int check_lock(int dirfd, unsigned stale_secs, lock_seen *seen, lock_seen *file_seen,
                      time_t *last_change)
{
    time_t now = time(NULL);
    struct stat st;
    if (fstatat(dirfd, UIDLIST_LOCK, &st, AT_SYMLINK_NOFOLLOW))
        return errno == ENOENT ? 1 : -errno;
    note_change(&st, seen, last_change, now);
    /* a lock made a moment ago most likely has a live owner */
    if (st.st_mtime < now - LOCK_PID_CHECK_SECS) {
        pid_t pid = lock_local_pid(dirfd);
        if (pid) {
            if (!pid_is_gone(pid, &st))
                return 0; /* alive: Dovecot never breaks it, nor do we */
            char why[64];
            snprintf(why, sizeof why, "pid %ld is gone", (long)pid);
            int rc = break_lock(dirfd, seen, why);
            return rc ? rc : 1;
        }
    }
    if (now <= *last_change + (time_t)stale_secs)
        return 0;
    /* no change to the lock for a while: stale unless the uidlist it
     * protects changed meanwhile */
    if (!fstatat(dirfd, UIDLIST_FILE, &st, 0))
        note_change(&st, file_seen, last_change, now);
    if (now <= *last_change + (time_t)stale_secs)
        return 0;
    int rc = break_lock(dirfd, seen, "unchanged for the stale timeout");
    return rc ? rc : 1;
}

/* A temporary file holding the lock content, in the folder's tmp/ as
 * Dovecot makes it (so Dovecot's tmp/ cleaning takes one left behind),
 * or in the folder itself when it has no tmp/. */
static int make_lock_temp(int dirfd, char **path, int *fd)
{
    char *content = lock_content();
    int rc = -EEXIST;
    for (int tries = 0; rc == -EEXIST && tries < 2 * 10; tries++) {
        char *name = temp_name("");
        g_free(*path);
        *path = tries < 10 ? g_strconcat("tmp/", name, NULL) : g_strdup(name);
        g_free(name);
        *fd = openat(dirfd, *path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        rc = *fd < 0 ? -errno : 0;
        if (rc == -ENOENT && tries < 10) {
            tries = 9; /* no tmp/: the folder itself */
            rc = -EEXIST;
        }
    }
    if (!rc && (rc = write_all(*fd, content, strlen(content)))) {
        close(*fd);
        unlinkat(dirfd, *path, 0);
    }
    g_free(content);
    return rc;
}

/* Tries once to link the temporary file in as the lock: 1 when made, 0
 * when a lock exists, -errno.  Over NFS a link can succeed and still
 * report an error: the link count tells (Dovecot's nfs_safe_link). */
static int try_link(int dirfd, const char *tmp, int tmpfd)
{
    if (!linkat(dirfd, tmp, dirfd, UIDLIST_LOCK, 0))
        return 1;
    int e = errno;
    struct stat st;
    if (e != EEXIST && !fstat(tmpfd, &st) && st.st_nlink == 2)
        return 1;
    return e == EEXIST ? 0 : -e;
}

int md_uidlist_lock_opts(int dirfd, unsigned timeout_ms, unsigned stale_secs, md_lock **out)
{
    char *tmp = NULL;
    int tmpfd = -1;
    int rc = make_lock_temp(dirfd, &tmp, &tmpfd);
    if (rc) {
        g_free(tmp);
        return rc;
    }
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    lock_seen seen = {0}, file_seen = {0};
    time_t last_change = 0;
    long wait = LOCK_WAIT_MIN_US;
    for (;;) {
        rc = try_link(dirfd, tmp, tmpfd);
        if (rc)
            break;
        rc = check_lock(dirfd, stale_secs, &seen, &file_seen, &last_change);
        if (rc < 0)
            break;
        if (rc == 1 && g_get_monotonic_time() < deadline)
            continue; /* gone or broken: try again at once */
        if (g_get_monotonic_time() >= deadline) {
            rc = -EAGAIN;
            ms_log(LOG_WARNING, "maildir: " UIDLIST_LOCK " held by another for %u ms, giving up",
                   timeout_ms);
            break;
        }
        sleep_us(wait + g_random_int_range(0, (gint32)wait));
        wait = MIN(wait * 3 / 2, LOCK_WAIT_MAX_US);
    }
    /* the temporary name goes first: its unlink changes the ctime */
    unlinkat(dirfd, tmp, 0);
    struct stat st;
    if (rc == 1 && fstat(tmpfd, &st))
        rc = -errno; /* cannot happen; then the lock stays until stale */
    close(tmpfd);
    g_free(tmp);
    if (rc != 1)
        return rc;
    md_lock *l = g_new0(md_lock, 1);
    l->dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    l->ctime = st.st_ctim; /* after the link, which changed it */
    if (l->dirfd < 0) {
        rc = -errno;
        unlinkat(dirfd, UIDLIST_LOCK, 0);
        g_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

int md_uidlist_lock(int dirfd, md_lock **out)
{
    return md_uidlist_lock_opts(dirfd, MD_LOCK_TIMEOUT * 1000, LOCK_STALE_SECS, out);
}

/* Whether the lock file is still the one we made (not broken as stale). */
static bool lock_is_ours(const md_lock *l)
{
    struct stat st;
    return !fstatat(l->dirfd, UIDLIST_LOCK, &st, AT_SYMLINK_NOFOLLOW) && st.st_ino == l->ino &&
           st.st_dev == l->dev && st.st_ctim.tv_sec == l->ctime.tv_sec &&
           st.st_ctim.tv_nsec == l->ctime.tv_nsec;
}

int md_uidlist_lock_touch(md_lock *l)
{
    if (!lock_is_ours(l))
        return -ESTALE;
    if (utimensat(l->dirfd, UIDLIST_LOCK, NULL, AT_SYMLINK_NOFOLLOW))
        return -errno;
    struct stat st;
    if (fstatat(l->dirfd, UIDLIST_LOCK, &st, AT_SYMLINK_NOFOLLOW))
        return -errno;
    l->ctime = st.st_ctim;
    return 0;
}

void md_uidlist_unlock(md_lock *l)
{
    if (!l)
        return;
    if (lock_is_ours(l))
        unlinkat(l->dirfd, UIDLIST_LOCK, 0);
    else
        ms_log(LOG_WARNING, "maildir: our " UIDLIST_LOCK " was broken by another process");
    close(l->dirfd);
    g_free(l);
}

/* u as Dovecot writes a whole uidlist (maildir_uidlist_write_fd). */
/* One record's line, as Dovecot 2.3 writes it: the base name only. */
static void rec_line(GString *s, const md_uid_rec *r)
{
    g_string_append_printf(s, "%u", r->uid);
    if (r->ext && r->ext[0])
        g_string_append_printf(s, " %s", r->ext);
    g_string_append_printf(s, " :%s\n", r->base);
}

static GString *uidlist_text(const md_uidlist *u)
{
    GString *s = g_string_new(NULL);
    uint32_t next = MAX(u->next_uid, 1); /* Dovecot calls N0 corrupt */
    if (u->recs->len) {
        uint32_t last = g_array_index(u->recs, md_uid_rec, u->recs->len - 1).uid;
        next = MAX(next, last + 1);
    }
    const char *rest = u->header_rest ? u->header_rest : "";
    bool has_guid = rest[0] == 'G' || strstr(rest, " G");
    char *guid = has_guid ? NULL : new_guid_field();
    g_string_append_printf(s, "3 V%u N%u", u->uidvalidity, next);
    if (guid)
        g_string_append_printf(s, " %s", guid);
    if (rest[0])
        g_string_append_printf(s, " %s", rest);
    g_string_append_c(s, '\n');
    g_free(guid);
    for (guint i = 0; i < u->recs->len; i++)
        rec_line(s, &g_array_index(u->recs, md_uid_rec, i));
    return s;
}

/* Extension fields Dovecot reads back as they are: "K..." fields, one
 * space apart, no line break (else the file would be corrupt to it). */
static bool valid_ext(const char *ext)
{
    if (!ext || !ext[0])
        return true;
    for (const char *p = ext; *p; p++) {
        if (*p == '\n' || *p == '\r' || (*p == ' ' && (p[1] == ' ' || !p[1])))
            return false;
        if ((p == ext || p[-1] == ' ') && !(*p >= 'A' && *p <= 'Z'))
            return false;
    }
    return true;
}

/* What md_uidlist_commit can write so that Dovecot reads it back. */
static bool writable_list(const md_uidlist *u)
{
    if (!u->uidvalidity || (u->header_rest && strpbrk(u->header_rest, "\r\n")))
        return false;
    for (guint i = 0; i < u->recs->len; i++) {
        const md_uid_rec *r = &g_array_index(u->recs, md_uid_rec, i);
        if (!r->uid || r->uid == UINT32_MAX || !valid_fname(r->base) || strchr(r->base, ':') ||
            !valid_ext(r->ext) || (i && r->uid <= g_array_index(u->recs, md_uid_rec, i - 1).uid))
            return false;
    }
    return true;
}

int md_uidlist_commit(md_lock *l, const md_uidlist *u, uid_t uid, gid_t gid, mode_t mode)
{
    /* A list read without its records written whole would lose them. */
    g_assert(!u->partial);
    int rc = writable_list(u) ? 0 : -EINVAL;
    if (!rc && !lock_is_ours(l)) {
        ms_log(LOG_ERR, "maildir: " UIDLIST_LOCK " was broken by another process: not written");
        rc = -EAGAIN;
    }
    if (!rc) {
        GString *s = uidlist_text(u);
        /* Dovecot's own way (maildir_uidlist_recreate): a fixed temporary
         * name, safe under the lock, renamed over the list. */
        rc = replace_file(l->dirfd, UIDLIST_TMP, UIDLIST_FILE, s->str, s->len, uid, gid, mode, 0);
        g_string_free(s, TRUE);
    }
    md_uidlist_unlock(l);
    return rc;
}

int md_uidlist_append(md_lock *l, off_t size, const md_uid_rec *recs, guint n, struct stat *after)
{
    if (!lock_is_ours(l)) {
        ms_log(LOG_ERR, "maildir: " UIDLIST_LOCK " was broken by another process: not written");
        return -EAGAIN;
    }
    GString *text = g_string_new(NULL);
    int rc = 0;
    for (guint i = 0; !rc && i < n; i++) {
        const md_uid_rec *r = &recs[i];
        if (!r->uid || r->uid == UINT32_MAX || !valid_fname(r->base) || strchr(r->base, ':') ||
            !valid_ext(r->ext) || (i && r->uid <= recs[i - 1].uid))
            rc = -EINVAL;
        else
            rec_line(text, r);
    }
    int fd = rc ? -1 : openat(l->dirfd, UIDLIST_FILE, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
    if (!rc && fd < 0)
        rc = -errno;
    struct stat sb;
    char last = 0;
    if (!rc && fstat(fd, &sb) < 0)
        rc = -errno;
    /* Not the file the caller read, or one whose last line a crash cut
     * short (a reader skips it; a line appended to it would join it). */
    if (!rc &&
        (sb.st_size != size || size < 1 || pread(fd, &last, 1, size - 1) != 1 || last != '\n'))
        rc = -ESTALE;
    for (size_t done = 0; !rc && done < text->len;) {
        ssize_t w = write(fd, text->str + done, text->len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            /* No half line left behind for the next writer. */
            if (ftruncate(fd, size) < 0)
                ms_log(LOG_ERR, "maildir: " UIDLIST_FILE ": a short append could not be undone: %s",
                       g_strerror(errno));
            break;
        }
        done += (size_t)w;
    }
    if (!rc && fstat(fd, after) < 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    g_string_free(text, TRUE);
    return rc;
}

md_uidlist *md_uidlist_header(const md_uidlist *u)
{
    md_uidlist *h = uidlist_alloc();
    h->uidvalidity = u->uidvalidity;
    h->next_uid = u->next_uid;
    h->last_uid = u->last_uid;
    h->header_rest = g_strdup(u->header_rest);
    h->dev = u->dev;
    h->ino = u->ino;
    h->size = u->size;
    h->mtime_ns = u->mtime_ns;
    h->partial = true;
    return h;
}

/* ======================================================= dovecot-acl */

/* RFC 4314 letters in the order mailfs shows them. */
#define ACL_LETTERS "lrswipkxtea"

/* One "grantee rights" line's rights as the letters Dovecot reads: its
 * own ones, with RFC 2086's obsolete 'c' and 'd' expanded as Dovecot's
 * IMAP SETACL does (c = kx, d = et).  Sorted by right name, as doveadm
 * acl set writes them. */
static void dovecot_rights(const char *r, size_t len, GString *out)
{
    static const char by_name[] = "akxeilprwts"; /* admin create delete expunge ... */
    char want[128] = {0};
    for (size_t i = 0; i < len; i++) {
        if (r[i] == 'c')
            want['k'] = want['x'] = 1;
        else if (r[i] == 'd')
            want['e'] = want['t'] = 1;
        else if ((unsigned char)r[i] < 128)
            want[(unsigned char)r[i]] = 1;
    }
    for (const char *p = by_name; *p; p++)
        if (want[(unsigned char)*p])
            g_string_append_c(out, *p);
}

/* The Dovecot identifier of a mailfs grantee (as Dovecot's IMAP ACL
 * names them: anyone, authenticated, owner, $group, !$group-override). */
static void dovecot_id(const char *g, size_t len, GString *out)
{
    if ((len == 6 && !memcmp(g, "anyone", 6)) || (len == 13 && !memcmp(g, "authenticated", 13)) ||
        (len == 5 && !memcmp(g, "owner", 5)))
        g_string_append_len(out, g, (gssize)len);
    else if (len > 2 && !memcmp(g, "!$", 2))
        g_string_append_printf(out, "group-override=%.*s", (int)len - 2, g + 2);
    else if (len > 1 && g[0] == '$')
        g_string_append_printf(out, "group=%.*s", (int)len - 1, g + 1);
    else
        g_string_append_printf(out, "user=%.*s", (int)len, g);
}

int md_acl_to_dovecot(const char *v, size_t len, GString *out)
{
    bool first = true;
    for (size_t i = 0; i < len;) {
        const char *line = v + i, *nl = memchr(line, '\n', len - i);
        size_t ll = nl ? (size_t)(nl - line) : len - i;
        i += ll + 1;
        const char *sp = memchr(line, ' ', ll);
        if (!ll)
            continue;
        if (!sp || sp == line || sp == line + ll - 1 ||
            memchr(sp + 1, ' ', ll - (size_t)(sp + 1 - line)))
            return -EINVAL;
        const char *g = line;
        size_t gl = (size_t)(sp - line);
        bool neg = g[0] == '-';
        if (neg && gl == 1)
            return -EINVAL;
        for (const char *r = sp + 1; r < line + ll; r++)
            if (!strchr(ACL_LETTERS "cd", *r))
                return -EINVAL;
        if (!first)
            g_string_append_c(out, '\n');
        first = false;
        if (neg)
            g_string_append_c(out, '-');
        dovecot_id(g + neg, gl - neg, out);
        g_string_append_c(out, ' ');
        dovecot_rights(sp + 1, ll - gl - 1, out);
    }
    return 0;
}

/* The mailfs grantee for Dovecot identifier id, or NULL when mailfs has
 * no name for it (a user called "anyone", "$x" or "!$x"). */
static char *mailfs_grantee(const char *id)
{
    if (!strcmp(id, "anyone") || !strcmp(id, "anonymous"))
        return g_strdup("anyone");
    if (!strcmp(id, "authenticated") || !strcmp(id, "owner"))
        return g_strdup(id);
    if (g_str_has_prefix(id, "group=") && id[6])
        return g_strconcat("$", id + 6, NULL);
    if (g_str_has_prefix(id, "group-override=") && id[15])
        return g_strconcat("!$", id + 15, NULL);
    if (!g_str_has_prefix(id, "user=") || !id[5])
        return NULL;
    const char *u = id + 5;
    if (!strcmp(u, "anyone") || !strcmp(u, "authenticated") || !strcmp(u, "owner") ||
        !strcmp(u, "anonymous") || u[0] == '$' || u[0] == '-' || g_str_has_prefix(u, "!$"))
        return NULL;
    return g_strdup(u);
}

/* A grantee mailfs can store (store.c: printable UTF-8, no spaces). */
static bool storable_grantee(const char *g)
{
    if (!g_utf8_validate(g, -1, NULL))
        return false;
    for (const char *p = g; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        if (g_unichar_isspace(c) || !g_unichar_isprint(c))
            return false;
    }
    return true;
}

/* One dovecot-acl line as Dovecot's acl_rights_parse_line reads it: the
 * grantee (NULL when it cannot be shown) and its rights letters. */
static int parse_acl_line(const char *line, char **grantee, char *rights, bool *neg)
{
    if (line[0] == '"')
        return -EINVAL; /* a quoted identifier holds a space: mailfs has none */
    size_t il = strcspn(line, " ");
    char *id = g_strndup(line, il);
    const char *r = line + il;
    while (*r == ' ' || *r == '\t')
        r++;
    *neg = id[0] == '-';
    for (; *r && !strchr(" \t:", *r); r++) {
        if (!strchr("lrwstipekxa", *r)) {
            g_free(id);
            return -EINVAL; /* Dovecot refuses the whole file */
        }
        if (!strchr(rights, *r))
            strncat(rights, r, 1);
    }
    while (*r == ' ' || *r == '\t')
        r++;
    if (*r && *r != ':') {
        g_free(id);
        return -EINVAL;
    }
    if (*r == ':')
        ms_log(LOG_WARNING, "maildir: dovecot-acl: named rights \"%s\" not shown", r + 1);
    *grantee = mailfs_grantee(id + *neg);
    g_free(id);
    return 0;
}

int md_acl_from_dovecot(const char *text, size_t len, GString *out)
{
    char *copy = g_strndup(text, len);
    /* Dovecot reads a last line without newline too (return_partial_line). */
    gchar **lines = g_strsplit(copy, "\n", -1);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    GPtrArray *rights = g_ptr_array_new_with_free_func(g_free);
    for (size_t i = 0; lines[i]; i++) {
        char *line = lines[i];
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\r')
            line[--ll] = '\0';
        if (!ll || line[0] == '#')
            continue;
        char *grantee = NULL, r[16] = "";
        bool neg = false;
        if (parse_acl_line(line, &grantee, r, &neg) || !grantee || !storable_grantee(grantee)) {
            ms_log(LOG_WARNING, "maildir: dovecot-acl line %zu not shown: %s", i + 1, line);
            g_free(grantee);
            continue;
        }
        char *name = neg ? g_strconcat("-", grantee, NULL) : g_strdup(grantee);
        g_free(grantee);
        /* Dovecot merges lines of one identifier; mailfs allows one. */
        guint k = 0;
        while (k < names->len && strcmp(names->pdata[k], name))
            k++;
        if (k == names->len) {
            g_ptr_array_add(names, name);
            g_ptr_array_add(rights, g_strdup(r));
        } else {
            g_free(name);
            char *merged = g_strconcat(rights->pdata[k], r, NULL);
            g_free(rights->pdata[k]);
            rights->pdata[k] = merged;
        }
    }
    bool first = true;
    for (guint k = 0; k < names->len; k++) {
        GString *ordered = g_string_new(NULL);
        for (const char *p = ACL_LETTERS; *p; p++)
            if (strchr(rights->pdata[k], *p))
                g_string_append_c(ordered, *p);
        /* no rights is no grant (mailfs values hold no empty rights) */
        if (ordered->len) {
            g_string_append_printf(out, "%s%s %s", first ? "" : "\n", (char *)names->pdata[k],
                                   ordered->str);
            first = false;
        }
        g_string_free(ordered, TRUE);
    }
    g_ptr_array_free(names, TRUE);
    g_ptr_array_free(rights, TRUE);
    g_strfreev(lines);
    g_free(copy);
    return 0;
}
