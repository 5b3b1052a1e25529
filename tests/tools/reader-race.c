/*
 * reader-race — readers racing unlink and replace through a mount.
 *
 *   reader-race DIR MESSAGE ROUNDS
 *
 * Each round writes MESSAGE's bytes as DIR/race.eml, then releases two
 * threads at once: one changes the message, the other opens and reads it
 * whole.  The change is, in turn:
 *  - unlink: the reader gets the whole message, or ENOENT at open;
 *  - a rename of a copy with other bytes over it: the whole old or the
 *    whole new message (or ENOENT, which a local filesystem never answers
 *    here but which loses nothing: counted apart, not failed);
 *  - truncate(2) to the size it has, twice per four rounds: the bytes stay
 *    the same, but the store commits them again as new content and frees
 *    the old, so a reader that opened just before is left without its
 *    bytes unless it owns them.  The reader opens and reads again and
 *    again until the truncate is done: each read must be the whole message.
 * Never 0 bytes, a short read, other bytes or another error.  Prints one
 * line per bad read (up to 20) and "rounds N reads N whole N enoent N bad N
 * enoent-on-rename N"; exits 1 on any bad read, 2 on a setup failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum change { UNLINK, RENAME, RESIZE };
static const char *const change_names[] = {"unlink", "rename over", "truncate to its size"};

typedef struct race {
    pthread_barrier_t go;
    const char *path, *tmp;
    const char *old_bytes, *new_bytes;
    size_t old_len, new_len;
    enum change how; /* this round's change */
    long round;
    atomic_bool changed; /* the change returned */
    int change_err;
    char *got; /* old_len + 4096 bytes */
    /* totals over all rounds, written by the reader thread only */
    long reads, whole, enoent, enoent_rename, bad;
} race;

/* All of path's bytes in a malloc'd buffer, or NULL. */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat sb;
    char *buf = NULL;
    if (fstat(fd, &sb) == 0 && (buf = malloc((size_t)sb.st_size + 1))) {
        size_t n = 0;
        ssize_t r;
        while (n < (size_t)sb.st_size && (r = read(fd, buf + n, (size_t)sb.st_size - n)) > 0)
            n += (size_t)r;
        *len = n;
    }
    close(fd);
    return buf;
}

/* Writes len bytes as a new file at path: 0 or an errno. */
static int write_file(const char *path, const char *bytes, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        return errno;
    size_t n = 0;
    while (n < len) {
        ssize_t w = write(fd, bytes + n, len - n);
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            return e;
        }
        n += (size_t)w;
    }
    return close(fd) ? errno : 0;
}

static void bad_read(race *r, const char *why, size_t got)
{
    if (r->bad < 20)
        printf("bad read in round %ld (%s): %s, %zu bytes read (message: %zu)\n", r->round,
               change_names[r->how], why, got, r->old_len);
    r->bad++;
}

/* One open and read of the whole file, judged and counted. */
static void read_once(race *r)
{
    r->reads++;
    int fd = open(r->path, O_RDONLY);
    if (fd < 0) {
        if (errno == ENOENT && r->how != RESIZE) {
            r->enoent++;
            r->enoent_rename += r->how == RENAME;
        } else {
            bad_read(r, strerror(errno), 0);
        }
        return;
    }
    size_t got = 0;
    int err = 0;
    /* More than the old message (the longer one) is a failure already. */
    while (got <= r->old_len) {
        ssize_t n = read(fd, r->got + got, 4096);
        if (n <= 0) {
            err = n < 0 ? errno : 0;
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    bool old = got == r->old_len && !memcmp(r->got, r->old_bytes, got);
    bool new = r->how == RENAME &&got == r->new_len && !memcmp(r->got, r->new_bytes, got);
    if (err)
        bad_read(r, strerror(err), got);
    else if (old || new)
        r->whole++;
    else
        bad_read(r, got == 0 ? "0 bytes" : "other bytes (short, long or mixed)", got);
}

static void *reader(void *p)
{
    race *r = p;
    pthread_barrier_wait(&r->go);
    do
        read_once(r);
    while (r->how == RESIZE && !atomic_load(&r->changed));
    return NULL;
}

static void *changer(void *p)
{
    race *r = p;
    pthread_barrier_wait(&r->go);
    int rc = r->how == UNLINK   ? unlink(r->path)
             : r->how == RENAME ? rename(r->tmp, r->path)
                                : truncate(r->path, (off_t)r->old_len);
    r->change_err = rc ? errno : 0;
    atomic_store(&r->changed, true);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: reader-race DIR MESSAGE ROUNDS\n");
        return 2;
    }
    race r = {0};
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/race.eml", argv[1]);
    snprintf(tmp, sizeof tmp, "%s/race.new", argv[1]);
    r.path = path;
    r.tmp = tmp;
    char *old_bytes = slurp(argv[2], &r.old_len);
    if (!old_bytes || r.old_len == 0) {
        fprintf(stderr, "reader-race: cannot read %s\n", argv[2]);
        return 2;
    }
    /* The replacement: other bytes, and another size. */
    size_t new_len = r.old_len / 2 + 1;
    char *new_bytes = malloc(new_len);
    for (size_t i = 0; i < new_len; i++)
        new_bytes[i] = (char)('a' + i % 23);
    r.old_bytes = old_bytes;
    r.new_bytes = new_bytes;
    r.new_len = new_len;
    r.got = malloc(r.old_len + 4096);
    pthread_barrier_init(&r.go, NULL, 2);
    long rounds = atol(argv[3]);
    for (long i = 0; i < rounds; i++) {
        r.round = i;
        r.how = i % 4 == 0 ? UNLINK : i % 4 == 1 ? RENAME : RESIZE;
        atomic_store(&r.changed, false);
        int e = write_file(path, old_bytes, r.old_len);
        if (!e && r.how == RENAME)
            e = write_file(tmp, new_bytes, new_len);
        if (e) {
            fprintf(stderr, "reader-race: round %ld: cannot write the message: %s\n", i,
                    strerror(e));
            return 2;
        }
        pthread_t a, b;
        pthread_create(&a, NULL, reader, &r);
        pthread_create(&b, NULL, changer, &r);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        if (r.change_err || (r.how != UNLINK && unlink(path))) {
            fprintf(stderr, "reader-race: round %ld (%s): %s\n", i, change_names[r.how],
                    strerror(r.change_err ? r.change_err : errno));
            return 2;
        }
    }
    printf("rounds %ld reads %ld whole %ld enoent %ld bad %ld enoent-on-rename %ld\n", rounds,
           r.reads, r.whole, r.enoent, r.bad, r.enoent_rename);
    free(old_bytes);
    free(new_bytes);
    free(r.got);
    return r.bad ? 1 : 0;
}
