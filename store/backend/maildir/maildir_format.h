/*
 * maildir_format.h — what the maildir backend reads and writes in Dovecot's
 * own formats (internal to store/backend/maildir/).
 *
 * Everything here is pure format knowledge, with no node ids and no
 * caches: modified UTF-7 folder names, folder paths of the two layouts,
 * message file names (base name and ":2," info), flag letters and
 * dovecot-keywords, dovecot-uidlist and its dotlock, dovecot-acl.  The
 * compatibility target is Dovecot 2.3 as Debian 12 ships it, with its
 * defaults; where these functions accept or write something, they accept
 * or write what Dovecot does (see dovecot/core src/lib-storage/index/
 * maildir/ and src/lib-imap/imap-utf7.c).
 *
 * Every function returns 0 or a negative errno.  Functions taking a
 * directory fd work relative to it (openat and friends), so a caller can
 * hold a folder open while Dovecot renames things in it.  Private names
 * are prefixed md_.
 */
#ifndef MAILFS_MAILDIR_FORMAT_H
#define MAILFS_MAILDIR_FORMAT_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* ----------------------------------------------------- folder names */

/*
 * Modified UTF-7 (RFC 3501 5.1.3), as Dovecot's imap-utf7.c: encode
 * fails (-EINVAL) for input that is not valid UTF-8; decode fails
 * (-EINVAL) for anything Dovecot's decoder refuses (unterminated or
 * empty "&...-" runs other than "&-", bad base64, a run right after a
 * run, an odd byte count, printable ASCII or NUL encoded, bad surrogates,
 * raw bytes outside printable ASCII), and also for what Dovecot accepts
 * but does not encode back to the same bytes (non-zero padding bits:
 * Dovecot reads "&AOl-" as "é" like "&AOk-"), so a decoded name always
 * maps back to its own directory.  Appends to out (nothing on failure).
 */
int md_mutf7_encode(const char *utf8, GString *out);
int md_mutf7_decode(const char *mutf7, GString *out);

typedef enum md_layout {
    MD_LAYOUT_MAILDIRPP = 0, /* ".Sent", ".Archive.2019"; INBOX is the root */
    MD_LAYOUT_FS = 1,        /* "Sent", "Archive/2019"; INBOX is the root */
} md_layout;

/*
 * The directory, relative to the mailbox root, of the folder at tree path
 * ("INBOX", "Sent", "Archive/2019": UTF-8 components separated by '/').
 * "INBOX" is the root itself: out gets "".  Each component is encoded
 * with md_mutf7_encode.  -EINVAL for a path this layout cannot hold:
 * a component holding '.' in maildir++ (its hierarchy separator), a
 * component "cur", "new" or "tmp" (any layout: they would be taken for
 * the Maildir's own), a component starting with '.' in fs, an empty
 * component, "INBOX" below the top in fs layout, or a top component that
 * is "inbox" in another case (Dovecot's INBOX is case-insensitive: it
 * would be a second directory for one mailbox).  -ENAMETOOLONG when a
 * directory name exceeds 255 bytes (maildir++: all of ".a.b"; fs: each
 * level).  In maildir++, "INBOX/x" is
 * ".INBOX.x", as Dovecot names it.
 */
int md_folder_dir(md_layout layout, const char *tree_path, GString *out);
/*
 * The tree path of a folder directory name as found on disk: maildir++
 * gets one name (".Archive.2019", without a '/'), fs the relative path
 * ("Archive/2019").  -EINVAL when it is not a folder of this layout
 * (maildir++: no leading '.', "." or "..", empty components as in
 * ".a..b") or a component is not valid modified UTF-7: the caller logs
 * it and shows the folder under its raw name (md_folder_raw_path).
 * Only a directory that md_folder_dir gives back for the result is a
 * folder (".INBOX", ".cur", ".Inbox" are not).  Appends to out.
 */
int md_folder_path(md_layout layout, const char *dir, GString *out);
/* The tree path showing a folder directory's components verbatim (the
 * name bytes as they are, '.' separators as '/' in maildir++). */
void md_folder_raw_path(md_layout layout, const char *dir, GString *out);

/* ------------------------------------------------------ file names */

/*
 * A Maildir file name is "BASE" (in new/) or "BASE:2,INFO" (in cur/).
 * md_filename_split gives the length of BASE and a pointer to INFO (the
 * letters after ":2,"; NULL when there is no ":2," part).  Returns false
 * for names that are no message (starting with '.', empty base).
 */
bool md_filename_split(const char *fname, size_t *base_len, const char **info);

/*
 * A message's name in the tree is its base name, so it stays while its
 * flags change.  Names given through the mount are kept as the base name
 * when Dovecot can take them verbatim (md_base_for), or percent-encoded
 * when not; md_name_of_base shows such a base decoded again.
 *
 * md_base_for: the base name for tree name `name` of a message of size
 * bytes and vsize virtual bytes (CRLF line endings): name itself when it
 * holds no '%' or ':', does not start with '.', and every ",S=N" / ",W=N"
 * field in it is exactly size / vsize (Dovecot trusts those fields for
 * RFC822.SIZE; it reads ",S=" with no digits as 0, and ignores a field
 * whose digits are followed by anything but ',' or the end), and it
 * holds no control byte (Dovecot ignores files whose name holds CR or
 * LF); else name with '%', ':', ',', control bytes and a leading '.' as
 * "%XX" (upper-case hex).  -ENAMETOOLONG when the result exceeds
 * MD_BASE_MAX (room left for ":2," and every flag letter); -EINVAL for
 * an empty name or one with '/'.  g_free *out.
 */
#define MD_BASE_MAX 200
int md_base_for(const char *name, int64_t size, int64_t vsize, char **out);
/* The tree name of base name base (g_free): base decoded when it is
 * exactly what md_base_for's encoding makes of the decoded name, else
 * base verbatim.  Never fails. */
char *md_name_of_base(const char *base, size_t base_len);
/* The virtual size Dovecot gives bytes: their size with every bare LF
 * counted as CRLF.  Feed it chunk by chunk; *prev_cr carries state. */
int64_t md_vsize_add(const char *buf, size_t len, bool *prev_cr);

/* -------------------------------------------------- flags, keywords */

/*
 * A folder's keywords: dovecot-keywords lines "N NAME"; keyword N is
 * the info letter 'a' + N, so a folder holds at most 26.  Loaded from and
 * saved to the folder's directory.  A missing file is no keywords.  A
 * line that does not parse is skipped and logged once (the file stays
 * as it is until the next save, which keeps every index that parsed).
 */
#define MD_KEYWORDS_MAX 26
typedef struct md_keywords {
    char *name[MD_KEYWORDS_MAX]; /* NULL: index unused */
} md_keywords;
int md_keywords_load(int dirfd, md_keywords *kw);
/* Atomically (a temporary file renamed over it, then the directory
 * synced), owned uid:gid, mode; its mtime later than the old file's even
 * within one second (Dovecot rereads it only when the mtime's seconds
 * change).  Call it holding the uidlist lock: Dovecot changes
 * dovecot-keywords only under that lock and relies on it. */
int md_keywords_save(int dirfd, const md_keywords *kw, uid_t uid, gid_t gid, mode_t mode);
void md_keywords_clear(md_keywords *kw);

/*
 * INFO letters to the flags value mailfs shows (user.mail.flags, the
 * canonical form of ms_flags_normalize): the system flags of D F R S T as
 * Dovecot maps them (maildir-filename-flags.c; what it does with P, so
 * do we: Dovecot ignores P, "passed", and keeps it), then keywords in
 * letter order.  System flags come in the order IMAP FETCH and doveadm
 * fetch list them: \Answered \Flagged \Deleted \Seen \Draft.  Unknown
 * letters (upper-case ones Dovecot does not know, lower-case ones with
 * no keyword) are left out of the value but kept by md_info_for when the
 * flags are written back; letters after a second ',' are no flags.
 * Appends to out.  (Dovecot itself names a lower-case letter with no
 * keyword "unknown-N" and adds it to dovecot-keywords at its next sync.)
 */
void md_flags_of_info(const char *info, const md_keywords *kw, GString *out);
/*
 * The INFO letters (sorted, as Dovecot writes them) for flags (a
 * canonical user.mail.flags value), given the file's current info (its
 * unknown letters are kept; NULL: none).  Keywords not yet in kw are
 * added to it (*kw_changed set to true, never cleared: the caller saves
 * dovecot-keywords before renaming the file); a new keyword never gets a
 * letter this file already holds.  Keywords match case-insensitively, as
 * in Dovecot.  -ENOSPC when the folder has no free keyword letter (kw
 * and out unchanged); -EINVAL for \Recent or an unknown system flag.
 * Appends to out, with any ",..." tail of old_info kept.
 */
int md_info_for(const char *flags, size_t len, const char *old_info, md_keywords *kw,
                bool *kw_changed, GString *out);

/* ----------------------------------------------------- dovecot-uidlist */

/*
 * dovecot-uidlist, version 3 (Dovecot 2.x): a header "3 V<uidvalidity>
 * N<next uid> G<guid> ..." then one line per message "<uid> [ext...]
 * :<filename>".  Records keep their extension fields (key A-Z; others
 * Dovecot drops on its next rewrite, and so does md_uidlist_read),
 * the header its unknown fields, so a rewrite loses nothing Dovecot
 * wrote.  Dovecot 2.3 writes the base name only ("12 W1234 :BASE"), and
 * appends records without rewriting the header, so its N is often below
 * the last uid + 1: next_uid is computed past the last record, as
 * Dovecot does.  Version 1 files ("1 V N", "<uid> <fname>") are read too.
 */
typedef struct md_uid_rec {
    uint32_t uid;
    char *base;  /* the base name (filename up to ':'), the record's key */
    char *ext;   /* extension fields verbatim ("W1234 S1200"), or NULL */
    char *fname; /* the file name as recorded (may hold ":2,..."), g_free */
} md_uid_rec;

typedef struct md_uidlist {
    uint32_t uidvalidity, next_uid;
    char *header_rest;   /* header fields other than V and N, verbatim ("G... ") */
    GArray *recs;        /* md_uid_rec, in increasing uid order */
    GHashTable *by_base; /* base (char*) -> index+1 in recs (GUINT_TO_POINTER) */
    uint32_t last_uid;   /* the highest record's uid as read or added (0: none) */
    /* recs does not hold every record (md_uidlist_scan, md_uidlist_header):
     * such a list is never written whole (md_uidlist_commit asserts). */
    bool partial;
    /* The file read (0s when none): a reader compares them to know
     * whether to read again. */
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
} md_uidlist;

/*
 * Reads dir's dovecot-uidlist without locking (Dovecot replaces it by
 * rename and appends whole lines, so a reader sees a consistent file;
 * a last line without its newline is being appended and is ignored).
 * -ENOENT when there is none; -EINVAL (one line in *err, g_free) when it
 * does not parse: empty, unknown version, no V or N (or 0), a G that is
 * not 32 hex digits, a uid line out of order, uid 0 or 2^32-1, no ':'
 * before the name, an empty name, a '/' in it, an empty line: anything
 * Dovecot calls corrupt.  (Dovecot DELETES a corrupt dovecot-uidlist and
 * starts over with a new UIDVALIDITY.)  A name listed twice with one uid
 * is read once; with another uid the later wins (Dovecot does the same).
 */
int md_uidlist_read(int dirfd, md_uidlist **out, char **err);
/*
 * As md_uidlist_read, but each record goes to fn as it is read (base not
 * NUL-terminated; a base listed again comes again, and the last wins)
 * and *out keeps only the header and what was read (no records): for a
 * reader that wants the UIDs of files it already holds and not a second
 * copy of their names (a folder of 50,000 messages: about 10 MB).
 */
typedef void (*md_uid_fn)(void *ctx, const char *base, size_t base_len, uint32_t uid);
int md_uidlist_scan(int dirfd, md_uid_fn fn, void *ctx, md_uidlist **out, char **err);
/* A new, empty list (no file yet) with a new mailbox GUID in
 * header_rest ("G" + 32 hex digits), as Dovecot makes one; a list
 * committed without a G gets a new one. */
md_uidlist *md_uidlist_new(uint32_t uidvalidity, uint32_t next_uid);
/* The uid of base, 0 when not listed. */
uint32_t md_uidlist_uid(const md_uidlist *u, const char *base, size_t base_len);
/* Appends base with uid (> every uid listed, < 2^32-1: else -EINVAL);
 * next_uid becomes at least uid + 1.  fname (NULL: base) is base or
 * base:INFO.  -EINVAL for a base with ':', '/', CR, LF or a leading '.';
 * -EEXIST when base is listed. */
int md_uidlist_add(md_uidlist *u, const char *base, uint32_t uid, const char *fname);
/* Forgets base (expunged); no-op when not listed. */
void md_uidlist_remove(md_uidlist *u, const char *base, size_t base_len);
void md_uidlist_free(md_uidlist *u);
/* A partial copy of u: its header and what was read, no records. */
md_uidlist *md_uidlist_header(const md_uidlist *u);

/*
 * dovecot-uidlist.lock, Dovecot's dotlock for the uidlist (lib/
 * file-dotlock.c with maildir-uidlist.c's settings), which works over
 * NFS: made by link() of a unique temporary file (in the folder's tmp/,
 * as Dovecot does) holding "PID:HOSTNAME"; Dovecot's own dotlock_use_excl
 * default makes it with O_EXCL instead: the two exclude each other.
 * Waited for up to MD_LOCK_TIMEOUT seconds (-EAGAIN after, logged;
 * Dovecot itself waits 122 s).  Broken when stale as Dovecot breaks it:
 * made on this host more than 2 s ago by a pid that is gone, or, with no
 * such pid (another host, unreadable), unchanged for 120 s while
 * dovecot-uidlist did not change either.  A live local pid is never
 * broken.  Unlike Dovecot, a lock holding our own pid is taken for
 * another thread's and waited for, unless made before this process
 * started.  Hold it briefly, or md_uidlist_lock_touch it: Dovecot breaks
 * a lock from another host unchanged for 120 s.
 * md_uidlist_commit writes u as Dovecot 2.3 does (maildir_uidlist_
 * recreate: dovecot-uidlist.tmp, owned uid:gid with mode, fsync'd,
 * renamed over dovecot-uidlist, the directory fsync'd), then removes the
 * lock: it always releases and frees l, also on failure; -EAGAIN when
 * the lock was broken meanwhile (nothing written), -EINVAL for
 * uidvalidity 0 or uids out of order.  (file_dotlock_replace, renaming
 * the lock file itself, is what Dovecot does for dovecot-keywords and
 * dovecot-acl, not for the uidlist.)  md_uidlist_unlock releases it
 * without writing (NULL: no-op); neither removes a lock that is no
 * longer ours.
 */
#define MD_LOCK_TIMEOUT 30
typedef struct md_lock md_lock;
int md_uidlist_lock(int dirfd, md_lock **out);
/* md_uidlist_lock with its waits given: timeout_ms before -EAGAIN, and
 * the seconds without change after which a lock with no live local pid is
 * stale (Dovecot: 120).  For tests and tools. */
int md_uidlist_lock_opts(int dirfd, unsigned timeout_ms, unsigned stale_secs, md_lock **out);
/* Marks the lock as in use (its mtime now), as Dovecot does every 10 s
 * while it works under it: a lock unchanged for 120 s with no live pid on
 * this host is broken by Dovecot.  -ESTALE when it was broken already. */
int md_uidlist_lock_touch(md_lock *l);
int md_uidlist_commit(md_lock *l, const md_uidlist *u, uid_t uid, gid_t gid, mode_t mode);
/*
 * Appends recs[0..n) (uids increasing, above every uid in the file: the
 * caller knows) to dovecot-uidlist under lock l, as Dovecot adds records
 * without rewriting the list; *after: the file then.  -ESTALE when the
 * file is not size bytes long or its last line is cut short (the caller
 * writes the list whole instead); nothing is left half-written.  The lock
 * is kept.
 */
int md_uidlist_append(md_lock *l, off_t size, const md_uid_rec *recs, guint n, struct stat *after);
void md_uidlist_unlock(md_lock *l);

/* -------------------------------------------------------- dovecot-acl */

/*
 * user.mail.acl ("grantee rights" lines, RFC 4314 letters) to and from
 * a dovecot-acl file (vfile): grantees "anyone", "authenticated" and
 * "owner" are Dovecot's identifiers of that name, "$NAME" is
 * "group=NAME", "!$NAME" "group-override=NAME", any other NAME is
 * "user=NAME" (the names Dovecot's IMAP ACL uses); a leading '-'
 * (negative rights) stays in front.  Dovecot knows the letters
 * "lrwstipekxa" and REFUSES A WHOLE FILE with any other, so RFC 2086's
 * obsolete 'c' is written as "kx" and 'd' as "et" (as Dovecot's SETACL
 * does); letters are written in Dovecot's order (by right name, as
 * doveadm acl set writes: "akxeilprwts").  -EINVAL for a value that is
 * not "grantee rights" lines.  Reading skips comments and blank lines,
 * "anonymous" is "anyone", lines of one identifier are merged (as
 * Dovecot does), rights are shown in "lrswipkxtea" order; lines mailfs
 * cannot show (a quoted identifier, a user named like a special
 * identifier, an unknown identifier, a bad letter, no rights) are
 * skipped and logged, and named ":rights" dropped and logged: a rewrite
 * through md_acl_to_dovecot loses them.  Appends to out, no final
 * newline.
 */
int md_acl_to_dovecot(const char *v, size_t len, GString *out);
int md_acl_from_dovecot(const char *text, size_t len, GString *out);

#endif
