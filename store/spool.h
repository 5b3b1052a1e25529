/*
 * spool.h — bytes of a message being written, before they are committed.
 *
 * Small sequential writes (the common case: cp, rsync, delivery) stay in
 * memory; anything larger or written out of order goes to an unlinked
 * temporary file, so a 200 MB message never sits in the daemon's memory.
 */
#ifndef MAILFS_SPOOL_H
#define MAILFS_SPOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Above this many bytes a spool moves from memory to a temporary file. */
#define MS_SPOOL_MEM_MAX (1024 * 1024)

typedef struct ms_spool ms_spool;

/* dir: where the temporary file goes if one is needed (NULL: $TMPDIR). */
ms_spool *ms_spool_new(const char *dir);
void ms_spool_free(ms_spool *sp);
ssize_t ms_spool_pwrite(ms_spool *sp, const void *buf, size_t len, int64_t off);
/* Bytes read (short only at the end) or a negative errno. */
ssize_t ms_spool_pread(ms_spool *sp, void *buf, size_t len, int64_t off);
int ms_spool_truncate(ms_spool *sp, int64_t size);
int64_t ms_spool_size(const ms_spool *sp);
/* The SHA-256 of the bytes, when they were only ever appended (the usual
 * case) and so could be hashed as they came; false otherwise. */
bool ms_spool_sha256(const ms_spool *sp, uint8_t out[32]);

#endif
