/*
 * sqlite_util.h — what every SQLite database of mailfs needs, stores and
 * the move journal alike (internal to store/; implemented in sqlite.c).
 * The sqlite backend's own internals stay in sqlite_int.h.
 */
#ifndef MAILFS_SQLITE_UTIL_H
#define MAILFS_SQLITE_UTIL_H

#include <stddef.h>
#include <sys/stat.h>

#include <sqlite3.h>

/* Creates path as an empty file of mode 0600 (O_EXCL); *err says why not. */
int sq_create_private(const char *path, char **err);
/* Logs one warning naming path when group or others have any access. */
void sq_warn_if_shared(const char *path, const struct stat *sb, const char *what);
/* Busy handler for every mailfs SQLite handle (stores and journal). */
int sq_busy_wait(void *ctx, int tries);
/* Copies column col (text or blob) into dst of size bytes, cut to fit and
 * always NUL-terminated: for the fixed-size names of info structures. */
void sq_column_copy(char *dst, size_t size, sqlite3_stmt *q, int col);

#endif
