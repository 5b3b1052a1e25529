/*
 * maildir_format.c — STAND-IN, replaced by the full implementation
 * (branch md-format).  Just enough of Dovecot's formats to run the
 * backend while that is written.
 */
#include "maildir_format.h"
#include "mailstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

int md_mutf7_encode(const char *utf8, GString *out)
{
    if (!g_utf8_validate(utf8, -1, NULL))
        return -EINVAL;
    const char *p = utf8;
    while (*p) {
        gunichar c = g_utf8_get_char(p);
        if (c >= 0x20 && c < 0x7f) {
            if (c == '&')
                g_string_append(out, "&-");
            else
                g_string_append_c(out, (char)c);
            p = g_utf8_next_char(p);
            continue;
        }
        GArray *u16 = g_array_new(FALSE, FALSE, sizeof(guint16));
        while (*p) {
            c = g_utf8_get_char(p);
            if (c >= 0x20 && c < 0x7f)
                break;
            if (c >= 0x10000) {
                guint16 hi = (guint16)(0xd800 + ((c - 0x10000) >> 10));
                guint16 lo = (guint16)(0xdc00 + ((c - 0x10000) & 0x3ff));
                g_array_append_val(u16, hi);
                g_array_append_val(u16, lo);
            } else {
                guint16 v = (guint16)c;
                g_array_append_val(u16, v);
            }
            p = g_utf8_next_char(p);
        }
        g_string_append_c(out, '&');
        guint32 bits = 0;
        int nb = 0;
        for (guint i = 0; i < u16->len; i++) {
            bits = (bits << 16) | g_array_index(u16, guint16, i);
            nb += 16;
            while (nb >= 6) {
                nb -= 6;
                g_string_append_c(out, B64[(bits >> nb) & 0x3f]);
            }
        }
        if (nb)
            g_string_append_c(out, B64[(bits << (6 - nb)) & 0x3f]);
        g_string_append_c(out, '-');
        g_array_free(u16, TRUE);
    }
    return 0;
}

int md_mutf7_decode(const char *s, GString *out)
{
    while (*s) {
        if (*s != '&') {
            if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
                return -EINVAL;
            g_string_append_c(out, *s++);
            continue;
        }
        s++;
        if (*s == '-') {
            g_string_append_c(out, '&');
            s++;
            continue;
        }
        guint32 bits = 0;
        int nb = 0;
        gunichar hi = 0;
        while (*s && *s != '-') {
            const char *q = strchr(B64, *s);
            if (!q)
                return -EINVAL;
            bits = (bits << 6) | (guint32)(q - B64);
            nb += 6;
            if (nb >= 16) {
                nb -= 16;
                gunichar u = (bits >> nb) & 0xffff;
                if (u >= 0xd800 && u < 0xdc00) {
                    hi = u;
                    continue;
                }
                if (u >= 0xdc00 && u < 0xe000) {
                    if (!hi)
                        return -EINVAL;
                    u = 0x10000 + ((hi - 0xd800) << 10) + (u - 0xdc00);
                    hi = 0;
                }
                g_string_append_unichar(out, u);
            }
            s++;
        }
        if (*s != '-')
            return -EINVAL;
        s++;
    }
    return 0;
}

int md_folder_dir(md_layout layout, const char *tree_path, GString *out)
{
    if (!strcmp(tree_path, "INBOX"))
        return 0;
    g_auto(GStrv) parts = g_strsplit(tree_path, "/", -1);
    if (layout == MD_LAYOUT_MAILDIRPP)
        g_string_append_c(out, '.');
    for (size_t i = 0; parts[i]; i++) {
        const char *c = parts[i];
        if (!*c || !strcmp(c, "cur") || !strcmp(c, "new") || !strcmp(c, "tmp"))
            return -EINVAL;
        if (layout == MD_LAYOUT_MAILDIRPP && strchr(c, '.'))
            return -EINVAL;
        if (layout == MD_LAYOUT_FS && c[0] == '.')
            return -EINVAL;
        if (i)
            g_string_append_c(out, layout == MD_LAYOUT_FS ? '/' : '.');
        if (md_mutf7_encode(c, out))
            return -EINVAL;
    }
    return 0;
}

int md_folder_path(md_layout layout, const char *dir, GString *out)
{
    if (layout == MD_LAYOUT_MAILDIRPP) {
        if (dir[0] != '.' || !dir[1])
            return -EINVAL;
        dir++;
    }
    g_auto(GStrv) parts = g_strsplit(dir, layout == MD_LAYOUT_FS ? "/" : ".", -1);
    for (size_t i = 0; parts[i]; i++) {
        if (!*parts[i])
            return -EINVAL;
        if (i)
            g_string_append_c(out, '/');
        if (md_mutf7_decode(parts[i], out))
            return -EINVAL;
    }
    return 0;
}

void md_folder_raw_path(md_layout layout, const char *dir, GString *out)
{
    if (layout == MD_LAYOUT_MAILDIRPP && dir[0] == '.')
        dir++;
    for (; *dir; dir++)
        g_string_append_c(out, layout == MD_LAYOUT_MAILDIRPP && *dir == '.' ? '/' : *dir);
}

bool md_filename_split(const char *fname, size_t *base_len, const char **info)
{
    if (fname[0] == '.' || fname[0] == ':' || !fname[0])
        return false;
    const char *c = strchr(fname, ':');
    *base_len = c ? (size_t)(c - fname) : strlen(fname);
    *info = c && c[1] == '2' && c[2] == ',' ? c + 3 : NULL;
    return true;
}

static bool field_ok(const char *name, const char *key, int64_t want)
{
    const char *p = name;
    while ((p = strstr(p, key))) {
        p += strlen(key);
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v != want)
            return false;
    }
    return true;
}

static char *encode_name(const char *name)
{
    GString *o = g_string_new(NULL);
    for (const char *p = name; *p; p++) {
        if (*p == '%' || *p == ':' || *p == ',' || (p == name && *p == '.'))
            g_string_append_printf(o, "%%%02X", (unsigned char)*p);
        else
            g_string_append_c(o, *p);
    }
    return g_string_free(o, FALSE);
}

int md_base_for(const char *name, int64_t size, int64_t vsize, char **out)
{
    char *b;
    if (!strchr(name, '%') && !strchr(name, ':') && name[0] != '.' && field_ok(name, ",S=", size) &&
        field_ok(name, ",W=", vsize))
        b = g_strdup(name);
    else
        b = encode_name(name);
    if (strlen(b) > MD_BASE_MAX) {
        g_free(b);
        return -ENAMETOOLONG;
    }
    *out = b;
    return 0;
}

char *md_name_of_base(const char *base, size_t base_len)
{
    g_autofree char *b = g_strndup(base, base_len);
    if (!strchr(b, '%'))
        return g_steal_pointer(&b);
    GString *d = g_string_new(NULL);
    for (const char *p = b; *p; p++) {
        if (p[0] == '%' && g_ascii_isxdigit(p[1]) && g_ascii_isxdigit(p[2])) {
            g_string_append_c(d,
                              (char)(g_ascii_xdigit_value(p[1]) * 16 + g_ascii_xdigit_value(p[2])));
            p += 2;
        } else {
            g_string_append_c(d, *p);
        }
    }
    g_autofree char *again = encode_name(d->str);
    if (!strcmp(again, b))
        return g_string_free(d, FALSE);
    g_string_free(d, TRUE);
    return g_steal_pointer(&b);
}

int64_t md_vsize_add(const char *buf, size_t len, bool *prev_cr)
{
    int64_t v = (int64_t)len;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\n' && !*prev_cr)
            v++;
        *prev_cr = buf[i] == '\r';
    }
    return v;
}

int md_keywords_load(int dirfd, md_keywords *kw)
{
    memset(kw, 0, sizeof *kw);
    int fd = openat(dirfd, "dovecot-keywords", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    GString *t = g_string_new(NULL);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        g_string_append_len(t, buf, n);
    close(fd);
    g_auto(GStrv) lines = g_strsplit(t->str, "\n", -1);
    g_string_free(t, TRUE);
    for (size_t i = 0; lines[i]; i++) {
        char *sp = strchr(lines[i], ' ');
        if (!sp)
            continue;
        int idx = atoi(lines[i]);
        if (idx >= 0 && idx < MD_KEYWORDS_MAX && !kw->name[idx])
            kw->name[idx] = g_strdup(sp + 1);
    }
    return 0;
}

int md_keywords_save(int dirfd, const md_keywords *kw, uid_t uid, gid_t gid, mode_t mode)
{
    GString *t = g_string_new(NULL);
    for (int i = 0; i < MD_KEYWORDS_MAX; i++)
        if (kw->name[i])
            g_string_append_printf(t, "%d %s\n", i, kw->name[i]);
    int fd =
        openat(dirfd, "dovecot-keywords.mailfs", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    int rc = fd < 0 ? -errno : 0;
    if (!rc && (write(fd, t->str, t->len) != (ssize_t)t->len || fchown(fd, uid, gid) < 0 ||
                fchmod(fd, mode) < 0))
        rc = -errno;
    if (fd >= 0)
        close(fd);
    if (!rc && renameat(dirfd, "dovecot-keywords.mailfs", dirfd, "dovecot-keywords") < 0)
        rc = -errno;
    g_string_free(t, TRUE);
    return rc;
}

void md_keywords_clear(md_keywords *kw)
{
    for (int i = 0; i < MD_KEYWORDS_MAX; i++)
        g_clear_pointer(&kw->name[i], g_free);
}

static const struct {
    char letter;
    const char *flag;
} SYS[] = {
    {'D', "\\Draft"}, {'F', "\\Flagged"}, {'R', "\\Answered"}, {'S', "\\Seen"}, {'T', "\\Deleted"}};

void md_flags_of_info(const char *info, const md_keywords *kw, GString *out)
{
    for (size_t i = 0; i < G_N_ELEMENTS(SYS); i++)
        if (strchr(info, SYS[i].letter)) {
            if (out->len)
                g_string_append_c(out, ' ');
            g_string_append(out, SYS[i].flag);
        }
    for (const char *p = info; *p; p++)
        if (*p >= 'a' && *p <= 'z' && kw->name[*p - 'a']) {
            if (out->len)
                g_string_append_c(out, ' ');
            g_string_append(out, kw->name[*p - 'a']);
        }
}

static gint char_cmp(gconstpointer a, gconstpointer b)
{
    return *(const char *)a - *(const char *)b;
}

int md_info_for(const char *flags, size_t len, const char *old_info, md_keywords *kw,
                bool *kw_changed, GString *out)
{
    g_autofree char *f = g_strndup(flags, len);
    g_auto(GStrv) words = g_strsplit_set(f, " ", -1);
    GString *letters = g_string_new(NULL);
    for (size_t i = 0; words[i]; i++) {
        if (!*words[i])
            continue;
        bool sys = false;
        for (size_t k = 0; k < G_N_ELEMENTS(SYS); k++)
            if (!g_ascii_strcasecmp(words[i], SYS[k].flag)) {
                g_string_append_c(letters, SYS[k].letter);
                sys = true;
            }
        if (sys || words[i][0] == '\\')
            continue;
        int idx = -1, free_idx = -1;
        for (int k = 0; k < MD_KEYWORDS_MAX; k++) {
            if (kw->name[k] && !strcmp(kw->name[k], words[i]))
                idx = k;
            if (!kw->name[k] && free_idx < 0)
                free_idx = k;
        }
        if (idx < 0) {
            if (free_idx < 0) {
                g_string_free(letters, TRUE);
                return -ENOSPC;
            }
            kw->name[free_idx] = g_strdup(words[i]);
            *kw_changed = true;
            idx = free_idx;
        }
        g_string_append_c(letters, (char)('a' + idx));
    }
    if (old_info)
        for (const char *p = old_info; *p; p++)
            if ((*p >= 'A' && *p <= 'Z' && !strchr("DFRST", *p)) ||
                (*p >= 'a' && *p <= 'z' && !kw->name[*p - 'a']))
                g_string_append_c(letters, *p);
    qsort(letters->str, letters->len, 1, (int (*)(const void *, const void *))char_cmp);
    g_string_append(out, letters->str);
    g_string_free(letters, TRUE);
    return 0;
}

static void rec_clear(gpointer p)
{
    md_uid_rec *r = p;
    g_free(r->base);
    g_free(r->ext);
    g_free(r->fname);
}

md_uidlist *md_uidlist_new(uint32_t uidvalidity, uint32_t next_uid)
{
    md_uidlist *u = g_new0(md_uidlist, 1);
    u->uidvalidity = uidvalidity;
    u->next_uid = next_uid;
    u->recs = g_array_new(FALSE, FALSE, sizeof(md_uid_rec));
    g_array_set_clear_func(u->recs, rec_clear);
    u->by_base = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return u;
}

void md_uidlist_free(md_uidlist *u)
{
    if (!u)
        return;
    g_array_free(u->recs, TRUE);
    g_hash_table_destroy(u->by_base);
    g_free(u->header_rest);
    g_free(u);
}

int md_uidlist_read(int dirfd, md_uidlist **out, char **err)
{
    int fd = openat(dirfd, "dovecot-uidlist", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat sb;
    fstat(fd, &sb);
    GString *t = g_string_new(NULL);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        g_string_append_len(t, buf, n);
    close(fd);
    g_auto(GStrv) lines = g_strsplit(t->str, "\n", -1);
    g_string_free(t, TRUE);
    md_uidlist *u = md_uidlist_new(0, 0);
    u->dev = sb.st_dev;
    u->ino = sb.st_ino;
    u->size = sb.st_size;
    u->mtime_ns = sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
    if (!lines[0] || lines[0][0] != '3') {
        *err = g_strdup("unknown version");
        md_uidlist_free(u);
        return -EINVAL;
    }
    g_auto(GStrv) h = g_strsplit(lines[0], " ", -1);
    GString *rest = g_string_new(NULL);
    for (size_t i = 1; h[i]; i++) {
        if (h[i][0] == 'V')
            u->uidvalidity = (uint32_t)strtoul(h[i] + 1, NULL, 10);
        else if (h[i][0] == 'N')
            u->next_uid = (uint32_t)strtoul(h[i] + 1, NULL, 10);
        else if (h[i][0]) {
            if (rest->len)
                g_string_append_c(rest, ' ');
            g_string_append(rest, h[i]);
        }
    }
    u->header_rest = g_string_free(rest, FALSE);
    size_t nl = g_strv_length(lines);
    for (size_t i = 1; i + 1 < nl; i++) {
        char *c = strstr(lines[i], " :");
        if (!c)
            continue;
        uint32_t uid = (uint32_t)strtoul(lines[i], NULL, 10);
        const char *fname = c + 2;
        size_t bl;
        const char *info;
        md_filename_split(fname, &bl, &info);
        g_autofree char *base = g_strndup(fname, bl);
        md_uidlist_add(u, base, uid, fname);
    }
    *out = u;
    return 0;
}

uint32_t md_uidlist_uid(const md_uidlist *u, const char *base, size_t base_len)
{
    g_autofree char *b = g_strndup(base, base_len);
    guint i = GPOINTER_TO_UINT(g_hash_table_lookup(u->by_base, b));
    return i ? g_array_index(u->recs, md_uid_rec, i - 1).uid : 0;
}

int md_uidlist_add(md_uidlist *u, const char *base, uint32_t uid, const char *fname)
{
    md_uid_rec r = {uid, g_strdup(base), NULL, g_strdup(fname)};
    g_array_append_val(u->recs, r);
    g_hash_table_insert(u->by_base, g_strdup(base), GUINT_TO_POINTER(u->recs->len));
    if (u->next_uid <= uid)
        u->next_uid = uid + 1;
    return 0;
}

void md_uidlist_remove(md_uidlist *u, const char *base, size_t base_len)
{
    g_autofree char *b = g_strndup(base, base_len);
    guint i = GPOINTER_TO_UINT(g_hash_table_lookup(u->by_base, b));
    if (!i)
        return;
    g_array_remove_index(u->recs, i - 1);
    g_hash_table_remove_all(u->by_base);
    for (guint k = 0; k < u->recs->len; k++)
        g_hash_table_insert(u->by_base, g_strdup(g_array_index(u->recs, md_uid_rec, k).base),
                            GUINT_TO_POINTER(k + 1));
}

struct md_lock {
    int dirfd;
};

int md_uidlist_lock(int dirfd, md_lock **out)
{
    for (int i = 0; i < 3000; i++) {
        int fd =
            openat(dirfd, "dovecot-uidlist.lock", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            close(fd);
            *out = g_new0(md_lock, 1);
            (*out)->dirfd = dup(dirfd);
            return 0;
        }
        g_usleep(10000);
    }
    return -EAGAIN;
}

int md_uidlist_commit(md_lock *l, const md_uidlist *u, uid_t uid, gid_t gid, mode_t mode)
{
    GString *t = g_string_new(NULL);
    g_string_append_printf(t, "3 V%u N%u", u->uidvalidity, u->next_uid);
    if (u->header_rest && *u->header_rest)
        g_string_append_printf(t, " %s", u->header_rest);
    g_string_append_c(t, '\n');
    for (guint i = 0; i < u->recs->len; i++) {
        md_uid_rec *r = &g_array_index(u->recs, md_uid_rec, i);
        g_string_append_printf(t, "%u :%s\n", r->uid, r->fname ? r->fname : r->base);
    }
    int fd = openat(l->dirfd, "dovecot-uidlist.lock", O_WRONLY | O_TRUNC | O_CLOEXEC);
    int rc = fd < 0 ? -errno : 0;
    if (!rc && (write(fd, t->str, t->len) != (ssize_t)t->len || fchown(fd, uid, gid) < 0 ||
                fchmod(fd, mode) < 0 || fsync(fd) < 0))
        rc = -errno;
    if (fd >= 0)
        close(fd);
    if (!rc && renameat(l->dirfd, "dovecot-uidlist.lock", l->dirfd, "dovecot-uidlist") < 0)
        rc = -errno;
    if (rc)
        unlinkat(l->dirfd, "dovecot-uidlist.lock", 0);
    fsync(l->dirfd);
    close(l->dirfd);
    g_free(l);
    g_string_free(t, TRUE);
    return rc;
}

void md_uidlist_unlock(md_lock *l)
{
    if (!l)
        return;
    unlinkat(l->dirfd, "dovecot-uidlist.lock", 0);
    close(l->dirfd);
    g_free(l);
}

int md_acl_to_dovecot(const char *v, size_t len, GString *out)
{
    g_autofree char *s = g_strndup(v, len);
    g_auto(GStrv) lines = g_strsplit(s, "\n", -1);
    for (size_t i = 0; lines[i]; i++) {
        char *sp = strrchr(lines[i], ' ');
        if (!sp)
            continue;
        *sp = '\0';
        const char *g = lines[i];
        bool neg = g[0] == '-';
        if (neg)
            g++;
        if (out->len)
            g_string_append_c(out, '\n');
        if (neg)
            g_string_append_c(out, '-');
        if (!strcmp(g, "anyone") || !strcmp(g, "authenticated") || !strcmp(g, "owner"))
            g_string_append(out, g);
        else if (g[0] == '$')
            g_string_append_printf(out, "group=%s", g + 1);
        else
            g_string_append_printf(out, "user=%s", g);
        g_string_append_printf(out, " %s", sp + 1);
    }
    return 0;
}

int md_acl_from_dovecot(const char *text, size_t len, GString *out)
{
    g_autofree char *s = g_strndup(text, len);
    g_auto(GStrv) lines = g_strsplit(s, "\n", -1);
    for (size_t i = 0; lines[i]; i++) {
        char *l = g_strstrip(lines[i]);
        if (!*l || *l == '#')
            continue;
        char *sp = strrchr(l, ' ');
        if (!sp)
            continue;
        *sp = '\0';
        const char *g = l;
        bool neg = g[0] == '-';
        if (neg)
            g++;
        if (out->len)
            g_string_append_c(out, '\n');
        if (neg)
            g_string_append_c(out, '-');
        if (g_str_has_prefix(g, "user="))
            g_string_append(out, g + 5);
        else if (g_str_has_prefix(g, "group="))
            g_string_append_printf(out, "$%s", g + 6);
        else
            g_string_append(out, g);
        g_string_append_printf(out, " %s", sp + 1);
    }
    return 0;
}
