/*
 * pst_proto.h — what the pst backend (pst.c) and its helper process
 * mailfs-pst (pst_helper.c) say to each other over a pair of pipes.
 *
 * A record is a type byte, a 4-byte payload length (host order: both ends
 * are one machine) and the payload.  A request is the 8-byte d_id of a
 * folder (0: the top of the folder tree), or PP_REQ_OPEN.
 */
#ifndef MAILFS_PST_PROTO_H
#define MAILFS_PST_PROTO_H

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

/* What an item becomes.  Only Outlook's hidden (associated) items, its
 * configuration and rules, are skipped. */
typedef enum pr_class {
    PR_SKIP = 0,
    PR_MAIL,        /* IPM.Note, meeting requests, reports, posts, sticky
                       notes and anything else with mail properties (.eml) */
    PR_CONTACT,     /* contacts and distribution lists: vCard 3.0 (.vcf) */
    PR_APPOINTMENT, /* iCalendar VEVENT (.ics) */
    PR_JOURNAL,     /* iCalendar VJOURNAL (.ics) */
    PR_TASK,        /* iCalendar VTODO (.ics) */
} pr_class;

enum {
    PP_OPEN_OK = 'O',     /* the file is readable; requests may follow */
    PP_OPEN_FAILED = 'X', /* payload: why, one line; the helper exits */
    PP_FOLDER = 'F',      /* pp_folder, then the name (UTF-8, may be empty) */
    PP_ITEM = 'I',        /* pp_item; its size bytes follow in PP_DATA records */
    PP_DATA = 'B',        /* up to PP_CHUNK bytes of the item before */
    PP_WARN = 'W',        /* payload: a line for the daemon's log */
    PP_DONE = 'D',        /* the folder's children are all sent */
    PP_COUNT = 'C',       /* answers PP_REQ_COUNT: a uint64_t */
};

typedef struct pp_folder {
    uint64_t d_id;
    uint8_t has_children;
} pp_folder;

/* The file name extension of an item of class cls, without the dot. */
static inline const char *pp_extension(uint8_t cls)
{
    return cls == PR_MAIL ? "eml" : cls == PR_CONTACT ? "vcf" : "ics";
}

/* A request to close the file and open another (a helper reused for the
 * next file): PP_REQ_OPEN, then a 4-byte length and the path, a 4-byte
 * length and the stem; answered as at start, OPEN_OK or OPEN_FAILED. */
#define PP_REQ_OPEN UINT64_MAX
#define PP_PATH_MAX 4096

/* A request for the number of items below the top of folders, counted in
 * libpst's index without parsing or rendering any (folders without
 * children count as items: an upper count); answered by PP_COUNT. */
#define PP_REQ_COUNT (UINT64_MAX - 1)

/* Items travel in pieces so that the daemon never holds one whole. */
#define PP_CHUNK (1024 * 1024)

typedef struct pp_item {
    uint64_t size; /* bytes in the PP_DATA records that follow */
    uint8_t cls;   /* pr_class */
    int64_t mtime_ns;
    char flags[32]; /* IMAP flags, NUL-terminated */
} pp_item;

/*
 * All of len bytes to (out) or from fd, through EINTR: 0, or -1 on error
 * or end of file, or -2 when timeout_ms (if > 0) passed with nothing to
 * read.
 */
static inline int pp_io(int fd, void *buf, size_t len, bool out, int timeout_ms)
{
    char *p = buf;
    while (len) {
        if (timeout_ms > 0) {
            struct pollfd pfd = {.fd = fd, .events = out ? POLLOUT : POLLIN};
            int r = poll(&pfd, 1, timeout_ms);
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0)
                return -2;
        }
        ssize_t n = out ? write(fd, p, len) : read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

#endif
