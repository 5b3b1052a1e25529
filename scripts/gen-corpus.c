/*
 * gen-corpus.c — a reproducible mailbox for benchmarks and the demo.
 *
 *   mailfs-gen-corpus [--seed N] [--messages N] [--folders N]
 *                     [--big-message MB] OUTDIR
 *
 * Writes OUTDIR/<folder>/<n>.eml as plain files, a Maildir-like tree of
 * RFC 5322 messages: a Received chain, the usual headers, text bodies of
 * log-normal size (median about 4 KB), and about 2% of messages with a
 * base64 attachment of 100 KB to 2 MB (so 10,000 messages come to about
 * 200 MB).  Each file's mtime is its Date.  The same seed gives the same
 * bytes, whatever the machine.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* xorshift64*: small, fast and the same everywhere. */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}
static double unif(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }
static double normal(void)
{
    double u = unif() + 1e-12, v = unif();
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static const char *const words[] = {
    "the",      "meeting",   "report",   "budget",   "server",   "mailbox", "quarter",  "project",
    "invoice",  "please",    "review",   "attached", "thanks",   "regards", "schedule", "update",
    "backup",   "migration", "storage",  "customer", "deadline", "draft",   "team",     "call",
    "question", "answer",    "tomorrow", "monday",   "policy",   "account", "password", "release",
};
#define NWORDS (sizeof words / sizeof words[0])
static const char *const names[] = {"alice", "bob",   "carol", "dave", "erin",
                                    "frank", "grace", "heidi", "ivan", "judy"};

static void put_words(FILE *f, size_t bytes)
{
    size_t col = 0;
    for (size_t n = 0; n < bytes;) {
        const char *w = words[rnd() % NWORDS];
        size_t l = strlen(w);
        fputs(w, f);
        n += l + 1;
        col += l + 1;
        if (col > 66) {
            fputc('\n', f);
            col = 0;
        } else {
            fputc(' ', f);
        }
    }
    fputc('\n', f);
}

static void put_base64(FILE *f, size_t bytes)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char line[77];
    for (size_t n = 0; n < bytes; n += 57) {
        for (int i = 0; i < 76; i++)
            line[i] = b64[rnd() & 63];
        line[76] = '\n';
        fwrite(line, 1, 77, f);
    }
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(tmp, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static int write_message(const char *path, long n, time_t date, size_t body, size_t attach)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const char *from = names[rnd() % 10], *to = names[rnd() % 10];
    char when[64];
    struct tm tm;
    gmtime_r(&date, &tm);
    strftime(when, sizeof when, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    for (int hop = 0; hop < 3; hop++)
        fprintf(f,
                "Received: from mx%d.example.org (mx%d.example.org [192.0.2.%d])\n\tby "
                "mail.example.org with ESMTPS id %016llx;\n\t%s\n",
                hop, hop, (int)(rnd() % 250 + 1), (unsigned long long)rnd(), when);
    fprintf(f, "From: %s <%s@example.org>\nTo: %s <%s@example.org>\n", from, from, to, to);
    fprintf(f, "Subject: %s %s %s #%ld\nDate: %s\n", words[rnd() % NWORDS], words[rnd() % NWORDS],
            words[rnd() % NWORDS], n, when);
    fprintf(f, "Message-ID: <%016llx.%ld@example.org>\nMIME-Version: 1.0\n",
            (unsigned long long)rnd(), n);
    if (!attach) {
        fprintf(f, "Content-Type: text/plain; charset=us-ascii\n\n");
        put_words(f, body);
    } else {
        fprintf(f,
                "Content-Type: multipart/mixed; boundary=\"b%ld\"\n\n--b%ld\n"
                "Content-Type: text/plain; charset=us-ascii\n\n",
                n, n);
        put_words(f, body);
        fprintf(f,
                "\n--b%ld\nContent-Type: application/pdf; name=\"doc%ld.pdf\"\n"
                "Content-Transfer-Encoding: base64\n"
                "Content-Disposition: attachment; filename=\"doc%ld.pdf\"\n\n",
                n, n, n);
        put_base64(f, attach);
        fprintf(f, "--b%ld--\n", n);
    }
    if (fclose(f) != 0)
        return -1;
    struct timespec ts[2] = {{date, 0}, {date, 0}};
    return utimensat(AT_FDCWD, path, ts, 0);
}

int main(int argc, char **argv)
{
    long messages = 10000, folders = 5, big_mb = 0;
    uint64_t seed = 42;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--messages") && i + 1 < argc)
            messages = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--folders") && i + 1 < argc)
            folders = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--big-message") && i + 1 < argc)
            big_mb = strtol(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && !out)
            out = argv[i];
        else {
            fprintf(stderr,
                    "usage: %s [--seed N] [--messages N] [--folders N] "
                    "[--big-message MB] OUTDIR\n",
                    argv[0]);
            return 2;
        }
    }
    if (!out || messages < 0 || folders < 1) {
        fprintf(stderr,
                "usage: %s [--seed N] [--messages N] [--folders N] [--big-message MB] "
                "OUTDIR\n",
                argv[0]);
        return 2;
    }
    rng_state = seed * 2654435761ULL + 88172645463325252ULL;
    static const char *const named[] = {"INBOX", "Sent", "Archive", "Archive/2019", "Drafts"};
    char(*dirs)[64] = calloc((size_t)folders, 64);
    for (long i = 0; i < folders; i++) {
        if (i < 5)
            snprintf(dirs[i], 64, "%s", named[i]);
        else
            snprintf(dirs[i], 64, "Folder%ld", i);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", out, dirs[i]);
        if (mkdirs(path) < 0) {
            fprintf(stderr, "%s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    time_t t0 = 1546300800; /* 2019-01-01: dates spread over the following years */
    for (long n = 1; n <= messages; n++) {
        /* INBOX gets most mail, as in real mailboxes */
        long fi =
            folders == 1 ? 0 : (rnd() % 100 < 45 ? 0 : 1 + (long)(rnd() % (uint64_t)(folders - 1)));
        size_t body = (size_t)fmin(200000, exp(log(3500) + 0.8 * normal()));
        size_t attach = rnd() % 100 < 2 ? (size_t)exp(log(100e3) + unif() * log(20)) : 0;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s/%ld.eml", out, dirs[fi], n);
        if (write_message(path, n, t0 + (time_t)(n * 6700 + rnd() % 3600), body, attach) < 0) {
            fprintf(stderr, "%s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    if (big_mb > 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s/big.eml", out, dirs[0]);
        if (write_message(path, 0, t0, 2000, (size_t)big_mb * 1024 * 1024 / 77 * 57) < 0) {
            fprintf(stderr, "%s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    free(dirs);
    return 0;
}
