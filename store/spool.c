/*
 * spool.c — see spool.h.
 */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <nettle/sha2.h>

struct ms_spool {
    char *dir;
    char *mem; /* while fd < 0 */
    size_t cap;
    int64_t size;
    int fd;
    /* SHA-256 of bytes [0, hashed), kept while writes only append: the
     * commit then needs no second pass over the bytes under the store's
     * write lock.  hashed < 0: broken by a rewrite or a truncation. */
    struct sha256_ctx sha;
    int64_t hashed;
};

ms_spool *ms_spool_new(const char *dir)
{
    ms_spool *sp = g_new0(ms_spool, 1);
    sp->dir = g_strdup(dir ? dir : g_get_tmp_dir());
    sp->fd = -1;
    sha256_init(&sp->sha);
    return sp;
}

void ms_spool_free(ms_spool *sp)
{
    if (!sp)
        return;
    if (sp->fd >= 0)
        close(sp->fd);
    g_free(sp->mem);
    g_free(sp->dir);
    g_free(sp);
}

/* An unlinked file: nothing to clean up if the daemon dies. */
static int open_tmpfile(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
        return fd >= 0 ? fd : -errno;
    g_autofree char *tmpl = g_build_filename(dir, "mailfs-spool-XXXXXX", NULL);
    fd = mkostemp(tmpl, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(tmpl);
    return fd;
}

static int write_all(int fd, const char *buf, size_t len, int64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static int move_to_file(ms_spool *sp)
{
    int fd = open_tmpfile(sp->dir);
    if (fd < 0)
        return fd;
    int rc = write_all(fd, sp->mem, (size_t)sp->size, 0);
    if (rc) {
        close(fd);
        return rc;
    }
    sp->fd = fd;
    g_clear_pointer(&sp->mem, g_free);
    sp->cap = 0;
    return 0;
}

ssize_t ms_spool_pwrite(ms_spool *sp, const void *buf, size_t len, int64_t off)
{
    if (off < 0)
        return -EINVAL;
    int64_t end = off + (int64_t)len;
    if (sp->fd < 0 && end > MS_SPOOL_MEM_MAX) {
        int rc = move_to_file(sp);
        if (rc)
            return rc;
    }
    if (sp->fd >= 0) {
        int rc = write_all(sp->fd, buf, len, off);
        if (rc)
            return rc;
    } else {
        if ((size_t)end > sp->cap) {
            size_t cap = sp->cap ? sp->cap : 8192;
            while (cap < (size_t)end)
                cap *= 2;
            sp->mem = g_realloc(sp->mem, cap);
            sp->cap = cap;
        }
        if (off > sp->size) /* a hole reads as zeros, as in a file */
            memset(sp->mem + sp->size, 0, (size_t)(off - sp->size));
        if (len > 0) /* mem is still NULL for an empty write to an empty spool */
            memcpy(sp->mem + off, buf, len);
    }
    if (end > sp->size)
        sp->size = end;
    if (sp->hashed >= 0 && off == sp->hashed) {
        sha256_update(&sp->sha, len, buf);
        sp->hashed = end;
    } else if (sp->hashed >= 0 && off < sp->hashed) {
        sp->hashed = -1;
    }
    return (ssize_t)len;
}

bool ms_spool_sha256(const ms_spool *sp, uint8_t out[32])
{
    if (sp->hashed != sp->size)
        return false;
    struct sha256_ctx copy = sp->sha; /* digest resets the context */
    sha256_digest(&copy, 32, out);
    return true;
}

ssize_t ms_spool_pread(ms_spool *sp, void *buf, size_t len, int64_t off)
{
    if (off >= sp->size)
        return 0;
    if ((int64_t)len > sp->size - off)
        len = (size_t)(sp->size - off);
    if (sp->fd < 0) {
        memcpy(buf, sp->mem + off, len);
        return (ssize_t)len;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(sp->fd, (char *)buf + done, len - done, off + (int64_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) /* the file is shorter than its size: a hole at the end */
            break;
        done += (size_t)n;
    }
    if (done < len)
        memset((char *)buf + done, 0, len - done);
    return (ssize_t)len;
}

int ms_spool_truncate(ms_spool *sp, int64_t size)
{
    if (size < 0)
        return -EINVAL;
    if (sp->fd < 0 && size > MS_SPOOL_MEM_MAX) {
        int rc = move_to_file(sp);
        if (rc)
            return rc;
    }
    if (sp->fd >= 0) {
        if (ftruncate(sp->fd, size) < 0)
            return -errno;
    } else if (size > sp->size) {
        char zero = 0;
        if (size > 0) {
            ssize_t rc = ms_spool_pwrite(sp, &zero, 1, size - 1);
            if (rc < 0)
                return (int)rc;
        }
    }
    if (size != sp->size)
        sp->hashed = -1;
    sp->size = size;
    return 0;
}

int64_t ms_spool_size(const ms_spool *sp) { return sp->size; }
