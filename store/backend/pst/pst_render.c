/*
 * pst_render.c — turns a parsed PST item into the bytes of a file: mail
 * into an RFC 5322 message built with GMime, contacts into vCards,
 * appointments and journal entries into iCalendar objects.
 *
 * Rendering is deterministic (boundaries and generated identifiers come
 * from the item's salt, never from a clock or a random number), because
 * the backend promises a message's size before anyone reads it and a
 * move verifies the SHA-256 of what it copied against a second render.
 */
#include "mailstore.h"
#include "pst_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <gmime/gmime.h>
#include <libpst/lzfu.h>
#include <libpst/timeconv.h>

#define MAX_EMBEDDING 8 /* hostile files nest messages without end */
/* 100 ns ticks between 1601-01-01 (FILETIME) and 1970-01-01. */
#define FILETIME_EPOCH 116444736000000000ULL

/* ------------------------------------------------------------ helpers */

/* The string in UTF-8, or NULL when absent or empty. */
static const char *u8(pst_item *it, pst_string *s)
{
    pst_convert_utf8_null(it, s);
    return s->str && *s->str ? s->str : NULL;
}

static int64_t ft_ns(const FILETIME *ft)
{
    if (!ft)
        return 0;
    uint64_t t = ((uint64_t)ft->dwHighDateTime << 32) | ft->dwLowDateTime;
    if (t < FILETIME_EPOCH)
        return 0;
    return (int64_t)((t - FILETIME_EPOCH) * 100);
}

pr_class pr_classify(const pst_item *it)
{
    if (!it || it->folder)
        return PR_SKIP;
    /* Associated items are a folder's hidden settings (views, rules,
     * configuration), never shown to users by Outlook either. */
    if (it->flags & PST_FLAG_ASSOCIATED)
        return PR_SKIP;
    const char *cls = it->ascii_type ? it->ascii_type : "";
    if (it->contact && (it->type == PST_TYPE_CONTACT || g_str_has_prefix(cls, "IPM.DistList")))
        return PR_CONTACT;
    if (it->email &&
        (it->type == PST_TYPE_NOTE || it->type == PST_TYPE_SCHEDULE || it->type == PST_TYPE_REPORT))
        return PR_MAIL;
    if (it->journal && it->type == PST_TYPE_JOURNAL)
        return PR_JOURNAL;
    if (it->appointment && it->type == PST_TYPE_APPOINTMENT)
        return PR_APPOINTMENT;
    if (it->type == PST_TYPE_TASK)
        return PR_TASK;
    if (it->type == PST_TYPE_STICKYNOTE || it->email)
        return PR_MAIL;
    return PR_SKIP;
}

int64_t pr_item_time_ns(const pst_item *it)
{
    int64_t t = 0;
    if (it->email)
        t = ft_ns(it->email->arrival_date);
    if (!t && it->email)
        t = ft_ns(it->email->sent_date);
    if (!t)
        t = ft_ns(it->modify_date);
    if (!t)
        t = ft_ns(it->create_date);
    return t;
}

const char *pr_item_flags(const pst_item *it)
{
    bool seen = it->flags & PST_FLAG_READ, draft = it->flags & PST_FLAG_UNSENT;
    return seen && draft ? "\\Seen \\Draft" : seen ? "\\Seen" : draft ? "\\Draft" : "";
}

/* Outlook stores CRLF; the headers we write use LF, so bodies do too. */
static char *without_cr(const char *s)
{
    char *d = g_malloc(strlen(s) + 1), *p = d;
    for (; *s; s++)
        if (*s != '\r')
            *p++ = *s;
    *p = '\0';
    return d;
}

/* ------------------------------------------------- streamed base64 */

enum { B64_LINE_GROUPS = 19, B64_OUT = 64 * 1024 };

/* The encoder behind pr_base64_open's FILE. */
typedef struct b64 {
    pr_emit_fn emit;
    void *ctx;
    uint64_t *written;
    uint64_t in;
    unsigned char rest[3]; /* bytes waiting for a group of three */
    size_t nrest;
    int groups; /* groups of four characters on the line */
    size_t nout;
    char out[B64_OUT];
} b64;

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_flush(b64 *e)
{
    if (e->nout)
        e->emit(e->ctx, e->out, e->nout);
    e->nout = 0;
}

/* One group: three bytes (fewer at the end, padded with '='). */
static void b64_group(b64 *e, const unsigned char *g, size_t n)
{
    if (e->nout + 5 > B64_OUT) /* a group and a line end */
        b64_flush(e);
    uint32_t v = (uint32_t)g[0] << 16 | (n > 1 ? (uint32_t)g[1] << 8 : 0) | (n > 2 ? g[2] : 0);
    char *o = e->out + e->nout;
    o[0] = b64_alphabet[v >> 18 & 63];
    o[1] = b64_alphabet[v >> 12 & 63];
    o[2] = n > 1 ? b64_alphabet[v >> 6 & 63] : '=';
    o[3] = n > 2 ? b64_alphabet[v & 63] : '=';
    e->nout += 4;
    if (++e->groups == B64_LINE_GROUPS) {
        e->out[e->nout++] = '\n';
        e->groups = 0;
    }
}

static ssize_t b64_write(void *cookie, const char *buf, size_t len)
{
    b64 *e = cookie;
    const unsigned char *p = (const unsigned char *)buf;
    size_t left = len;
    e->in += len;
    while (e->nrest && e->nrest < 3 && left) {
        e->rest[e->nrest++] = *p++;
        left--;
    }
    if (e->nrest == 3) {
        b64_group(e, e->rest, 3);
        e->nrest = 0;
    }
    /* Whole lines at the start of a line: one tight loop, no checks. */
    while (e->groups == 0 && left >= 57) {
        if (e->nout + 4 * B64_LINE_GROUPS + 1 > B64_OUT)
            b64_flush(e);
        char *o = e->out + e->nout;
        for (int g = 0; g < B64_LINE_GROUPS; g++, p += 3, o += 4) {
            uint32_t v = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
            o[0] = b64_alphabet[v >> 18];
            o[1] = b64_alphabet[v >> 12 & 63];
            o[2] = b64_alphabet[v >> 6 & 63];
            o[3] = b64_alphabet[v & 63];
        }
        *o = '\n';
        e->nout += 4 * B64_LINE_GROUPS + 1;
        left -= 57;
    }
    for (; left >= 3; p += 3, left -= 3)
        b64_group(e, p, 3);
    memcpy(e->rest + e->nrest, p, left);
    e->nrest += left;
    return (ssize_t)len;
}

static int b64_close(void *cookie)
{
    b64 *e = cookie;
    if (e->nrest)
        b64_group(e, e->rest, e->nrest);
    if (e->groups) {
        if (e->nout + 1 > B64_OUT)
            b64_flush(e);
        e->out[e->nout++] = '\n';
    }
    b64_flush(e);
    *e->written = e->in;
    g_free(e);
    return 0;
}

FILE *pr_base64_open(pr_emit_fn emit, void *ctx, uint64_t *written)
{
    b64 *e = g_new0(b64, 1);
    e->emit = emit;
    e->ctx = ctx;
    e->written = written;
    *written = 0;
    FILE *f = fopencookie(e, "w", (cookie_io_functions_t){.write = b64_write, .close = b64_close});
    if (!f)
        g_free(e);
    return f;
}

uint64_t pr_base64_len(uint64_t n)
{
    uint64_t groups = (n + 2) / 3;
    return groups * 4 + (groups + B64_LINE_GROUPS - 1) / B64_LINE_GROUPS;
}

int pr_stream_attachment(pst_file *pf, const pr_stream *s, pr_emit_fn emit, void *ctx)
{
    uint64_t written = 0;
    FILE *f = pr_base64_open(emit, ctx, &written);
    if (!f)
        return -errno;
    pst_attach_to_file(pf, s->attach, f);
    fclose(f);
    return written == s->raw ? 0 : -EIO;
}

/* ------------------------------------------------------------- headers */

static bool header_is(const char *line, size_t namelen, const char *name)
{
    return namelen == strlen(name) && !g_ascii_strncasecmp(line, name, namelen);
}

typedef struct seen_headers {
    bool from, to, cc, subject, date, msgid;
} seen_headers;

/*
 * Copies the item's transport headers, as readpst does, without the ones
 * that describe the original MIME structure (this body is rebuilt), and
 * notes which of the essential ones are there.  Returns false when the
 * text does not look like RFC 5322 headers (Outlook sometimes stores body
 * fragments there).
 */
static bool copy_transport_headers(const char *text, GString *out, seen_headers *seen)
{
    g_autofree char *t = without_cr(text);
    char *p = t;
    if (g_str_has_prefix(p, "Microsoft Mail Internet Headers")) {
        char *nl = strchr(p, '\n');
        p = nl ? nl + 1 : p + strlen(p);
    }
    size_t before = out->len;
    bool skipping = true, any = false;
    while (*p && *p != '\n') {
        char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (*p == ' ' || *p == '\t') { /* continuation of the field before */
            if (!skipping)
                g_string_append_len(out, p, len), g_string_append_c(out, '\n');
        } else {
            const char *colon = memchr(p, ':', len);
            size_t n = colon ? (size_t)(colon - p) : 0;
            bool valid = n > 0 && strspn(p, "!\"#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`"
                                            "abcdefghijklmnopqrstuvwxyz|~") == n;
            skipping = !valid || header_is(p, n, "Content-Type") ||
                       header_is(p, n, "Content-Transfer-Encoding") ||
                       header_is(p, n, "MIME-Version") || header_is(p, n, "Content-Disposition") ||
                       header_is(p, n, "Content-ID");
            if (!skipping) {
                any = true;
                seen->from |= header_is(p, n, "From");
                seen->to |= header_is(p, n, "To");
                seen->cc |= header_is(p, n, "Cc");
                seen->subject |= header_is(p, n, "Subject");
                seen->date |= header_is(p, n, "Date");
                seen->msgid |= header_is(p, n, "Message-ID");
                g_string_append_len(out, p, len);
                g_string_append_c(out, '\n');
            }
        }
        p = nl ? nl + 1 : p + len;
    }
    if (!any) {
        g_string_truncate(out, before);
        *seen = (seen_headers){0};
    }
    return any;
}

/* Appends "Name: value", encoded (RFC 2047) and folded by GMime. */
static void add_text_header(GString *out, const char *name, const char *value)
{
    g_autofree char *enc = g_mime_utils_header_encode_text(NULL, value, "utf-8");
    g_autofree char *line = g_strdup_printf("%s: %s", name, enc);
    g_autofree char *folded = g_mime_utils_unstructured_header_fold(NULL, NULL, line);
    g_string_append(out, folded);
    if (out->len && out->str[out->len - 1] != '\n')
        g_string_append_c(out, '\n');
}

static void add_from(GString *out, const char *name, const char *addr)
{
    InternetAddress *ia = internet_address_mailbox_new(name ? name : "", addr ? addr : "");
    g_autofree char *s = internet_address_to_string(ia, NULL, TRUE);
    g_object_unref(ia);
    g_string_append_printf(out, "From: %s\n", s);
}

static void add_generated_headers(pst_item *it, pst_item_email *em, const char *salt,
                                  const seen_headers *seen, GString *out)
{
    if (!seen->from) {
        const char *addr = u8(it, &em->sender_address);
        if (addr && !strchr(addr, '@'))
            addr = NULL; /* an Exchange DN, not an address */
        add_from(out, u8(it, &em->outlook_sender_name), addr);
    }
    if (!seen->to && u8(it, &em->sentto_address))
        add_text_header(out, "To", em->sentto_address.str);
    if (!seen->cc && u8(it, &em->cc_address))
        add_text_header(out, "Cc", em->cc_address.str);
    if (!seen->subject)
        add_text_header(out, "Subject", u8(it, &it->subject) ? it->subject.str : "");
    int64_t t = ft_ns(em->sent_date);
    if (!t)
        t = pr_item_time_ns(it);
    if (!seen->date && t) {
        GDateTime *dt = g_date_time_new_from_unix_utc(t / 1000000000);
        g_autofree char *d = g_mime_utils_header_format_date(dt);
        g_date_time_unref(dt);
        g_string_append_printf(out, "Date: %s\n", d);
    }
    if (!seen->msgid) {
        const char *id = u8(it, &em->messageid);
        if (id)
            g_string_append_printf(out, "Message-ID: %s\n", id);
        else
            g_string_append_printf(out, "Message-ID: <%s@pst.mailfs.invalid>\n", salt);
    }
}

/* --------------------------------------------------------------- parts */

static GMimeObject *text_part(const char *subtype, const char *text)
{
    g_autofree char *t = without_cr(text);
    GMimeTextPart *tp = g_mime_text_part_new_with_subtype(subtype);
    g_mime_text_part_set_text(tp, t);
    GMimePart *p = GMIME_PART(tp);
    g_mime_part_set_content_encoding(
        p, g_mime_part_get_best_content_encoding(p, GMIME_ENCODING_CONSTRAINT_7BIT));
    return GMIME_OBJECT(tp);
}

/* take: data is malloc'd and becomes the part's (no copy of big bytes). */
static GMimeObject *binary_part(const char *mimetype, const char *filename, const char *cid,
                                void *data, size_t size, bool take)
{
    GMimePart *p = g_mime_part_new_with_type("application", "octet-stream");
    GMimeContentType *ct = mimetype ? g_mime_content_type_parse(NULL, mimetype) : NULL;
    if (ct && ct->type && ct->subtype)
        g_mime_object_set_content_type(GMIME_OBJECT(p), ct);
    if (ct)
        g_object_unref(ct);
    GByteArray *bytes;
    if (take && data)
        bytes = g_byte_array_new_take(data, size);
    else
        bytes =
            g_byte_array_append(g_byte_array_sized_new((guint)size), data ? data : "", (guint)size);
    GMimeStream *s = g_mime_stream_mem_new_with_byte_array(bytes);
    GMimeDataWrapper *w = g_mime_data_wrapper_new_with_stream(s, GMIME_CONTENT_ENCODING_DEFAULT);
    g_mime_part_set_content(p, w);
    g_object_unref(w);
    g_object_unref(s);
    if (filename)
        g_mime_part_set_filename(p, filename);
    else
        g_mime_object_set_disposition(GMIME_OBJECT(p), GMIME_DISPOSITION_ATTACHMENT);
    if (cid)
        g_mime_part_set_content_id(p, cid);
    g_mime_part_set_content_encoding(p, GMIME_CONTENT_ENCODING_BASE64);
    return GMIME_OBJECT(p);
}

/*
 * An attachment part whose base64 text is streamed in later: GMime writes
 * its headers and, where the text goes, marker as it is (content already
 * in the part's encoding is copied, not encoded).
 */
static GMimeObject *streamed_part(const char *mimetype, const char *filename, const char *cid,
                                  const char *marker)
{
    GMimePart *p = GMIME_PART(binary_part(mimetype, filename, cid, NULL, 0, false));
    GByteArray *m = g_byte_array_new();
    g_byte_array_append(m, (const guint8 *)marker, (guint)strlen(marker));
    GMimeStream *s = g_mime_stream_mem_new_with_byte_array(m);
    GMimeDataWrapper *w = g_mime_data_wrapper_new_with_stream(s, GMIME_CONTENT_ENCODING_BASE64);
    g_mime_part_set_content(p, w);
    g_object_unref(w);
    g_object_unref(s);
    return GMIME_OBJECT(p);
}

/* An attachment to be streamed, until its place in the output is known. */
typedef struct pending {
    char *marker;
    pst_item_attach *attach;
    uint64_t raw;
} pending;

static void pending_clear(gpointer p) { g_free(((pending *)p)->marker); }

/* Streaming, when st asks for it and a is stored apart in more than one
 * block (so over 8 KiB) and at least st->min bytes: its part, with the
 * marker recorded in pend.  NULL: render it in memory. */
static GMimeObject *maybe_streamed(pst_file *pf, pst_item *it, pst_item_attach *a, const char *name,
                                   const char *salt, const pr_streaming *st, GArray *pend)
{
    if (!st || !pend || !(a->i_id & 2))
        return NULL;
    uint64_t raw = pst_attach_to_file(pf, a, NULL); /* counts, keeps nothing */
    if (raw == 0 || raw < st->min)
        return NULL;
    pending p = {g_strdup_printf("\001mailfs-stream-%u-%s\001", pend->len, salt), a, raw};
    g_array_append_val(pend, p);
    return streamed_part(u8(it, &a->mimetype), name, u8(it, &a->content_id), p.marker);
}

static int render_mail(pst_file *pf, pst_item *it, const char *salt, int depth, GByteArray *out,
                       const pr_streaming *st, GArray *pend, char **why);

/* An attachment that is itself a message: a message/rfc822 part. */
static GMimeObject *embedded_part(pst_file *pf, pst_item_attach *a, const char *salt, int depth)
{
    if (depth >= MAX_EMBEDDING) {
        ms_log(LOG_WARNING, "%s: messages nested deeper than %d: inner ones left out", pf->fname,
               MAX_EMBEDDING);
        return NULL;
    }
    pst_index_ll *ptr = pst_getID(pf, a->i_id);
    if (!ptr)
        return NULL;
    pst_desc_tree d = {.desc = ptr};
    pst_item *sub = pst_parse_item(pf, &d, a->id2_head);
    GMimeObject *part = NULL;
    if (sub && sub->email) {
        GByteArray *s = g_byte_array_new();
        g_autofree char *subsalt = g_strdup_printf("%s.%d", salt, depth + 1);
        char *why = NULL;
        if (render_mail(pf, sub, subsalt, depth + 1, s, NULL, NULL, &why) == 0) {
            GMimeStream *st = g_mime_stream_mem_new_with_byte_array(s);
            s = NULL; /* the stream's now */
            GMimeParser *p = g_mime_parser_new_with_stream(st);
            GMimeMessage *m = g_mime_parser_construct_message(p, NULL);
            if (m) {
                part = GMIME_OBJECT(g_mime_message_part_new_with_message("rfc822", m));
                g_object_unref(m);
            }
            g_object_unref(p);
            g_object_unref(st);
        }
        g_free(why);
        if (s)
            g_byte_array_free(s, TRUE);
    }
    if (sub)
        pst_freeItem(sub);
    return part;
}

/* Every attachment of it, in order, added to mixed; with st, big ones
 * left to be streamed (maybe_streamed). */
static void add_attachments(pst_file *pf, pst_item *it, const char *salt, int depth,
                            GMimeMultipart *mixed, const pr_streaming *st, GArray *pend)
{
    int n = 0;
    for (pst_item_attach *a = it->attach; a; a = a->next) {
        n++;
        const char *name = u8(it, &a->filename2);
        if (!name)
            name = u8(it, &a->filename1);
        GMimeObject *part = NULL;
        if (a->method == PST_ATTACH_EMBEDDED) {
            part = embedded_part(pf, a, salt, depth);
            if (!part)
                ms_log(LOG_WARNING, "%s: item %s: embedded message %d cannot be read: left out",
                       pf->fname, salt, n);
        } else if (a->data.data) {
            part = binary_part(u8(it, &a->mimetype), name, u8(it, &a->content_id), a->data.data,
                               a->data.size, false);
        } else if (a->i_id && pst_getID(pf, a->i_id)) {
            part = maybe_streamed(pf, it, a, name, salt, st, pend);
            if (!part) {
                pst_binary b = pst_attach_to_mem(pf, a);
                part = binary_part(u8(it, &a->mimetype), name, u8(it, &a->content_id), b.data,
                                   b.size, true);
            }
        } else if (a->method == PST_ATTACH_NONE && !a->i_id) {
            /* An empty attachment record (Outlook writes them): no bytes. */
        } else {
            ms_log(LOG_WARNING, "%s: item %s: attachment %d (%s) has no data: left out", pf->fname,
                   salt, n, name ? name : "unnamed");
        }
        if (part) {
            g_mime_multipart_add(mixed, part);
            g_object_unref(part);
        }
    }
}

static int render_mail(pst_file *pf, pst_item *it, const char *salt, int depth, GByteArray *out,
                       const pr_streaming *streaming, GArray *pend, char **why)
{
    (void)why;
    /* Sticky notes and some posts have no mail properties: only a subject
     * and a body, which an empty set of them turns into a message. */
    pst_item_email none = {0};
    pst_item_email *em = it->email ? it->email : &none;
    seen_headers seen = {0};
    GString *h = g_string_new(NULL);
    const char *th = u8(it, &em->header);
    if (th)
        copy_transport_headers(th, h, &seen);
    add_generated_headers(it, em, salt, &seen, h);
    g_string_append(h, "MIME-Version: 1.0\n");
    g_byte_array_append(out, (const guint8 *)h->str, (guint)h->len);
    g_string_free(h, TRUE);

    const char *plain = u8(it, &it->body), *html = u8(it, &em->htmlbody);
    GMimeObject *text = NULL;
    if (plain && html) {
        GMimeMultipart *alt = g_mime_multipart_new_with_subtype("alternative");
        g_autofree char *b = g_strdup_printf("=_mailfs_alt_%s", salt);
        g_mime_multipart_set_boundary(alt, b);
        GMimeObject *p1 = text_part("plain", plain), *p2 = text_part("html", html);
        g_mime_multipart_add(alt, p1);
        g_mime_multipart_add(alt, p2);
        g_object_unref(p1);
        g_object_unref(p2);
        text = GMIME_OBJECT(alt);
    } else if (plain || html) {
        text = text_part(plain ? "plain" : "html", plain ? plain : html);
    }

    GMimeMultipart *mixed =
        g_mime_multipart_new_with_subtype(it->type == PST_TYPE_REPORT ? "report" : "mixed");
    g_autofree char *b = g_strdup_printf("=_mailfs_%s", salt);
    g_mime_multipart_set_boundary(mixed, b);
    if (it->type == PST_TYPE_REPORT) {
        g_mime_object_set_content_type_parameter(GMIME_OBJECT(mixed), "report-type",
                                                 "delivery-status");
        if (u8(it, &em->report_text)) {
            GMimeObject *r = text_part("plain", em->report_text.str);
            g_mime_multipart_add(mixed, r);
            g_object_unref(r);
        }
    }
    if (text) {
        g_mime_multipart_add(mixed, text);
        g_object_unref(text);
    }
    /* Outlook keeps an RTF body next to most plain or HTML ones; only an
     * RTF-only body carries text nobody else has, so only that is kept. */
    if (!text && em->rtf_compressed.data) {
        size_t n = 0;
        char *rtf =
            pst_lzfu_decompress(em->rtf_compressed.data, (uint32_t)em->rtf_compressed.size, &n);
        if (rtf) {
            GMimeObject *r = binary_part("application/rtf", "rtf-body.rtf", NULL, rtf, n, true);
            g_mime_multipart_add(mixed, r);
            g_object_unref(r);
        }
    }
    if (em->encrypted_body.data) {
        GMimeObject *r =
            binary_part(NULL, NULL, NULL, em->encrypted_body.data, em->encrypted_body.size, false);
        g_mime_multipart_add(mixed, r);
        g_object_unref(r);
    }
    add_attachments(pf, it, salt, depth, mixed, streaming, pend);

    GMimeObject *body;
    int count = g_mime_multipart_get_count(mixed);
    if (count == 1 && it->type != PST_TYPE_REPORT && text) {
        body = g_object_ref(g_mime_multipart_get_part(mixed, 0));
        g_object_unref(mixed);
    } else if (count == 0) {
        g_object_unref(mixed);
        body = text_part("plain", "");
    } else {
        body = GMIME_OBJECT(mixed);
    }
    /* Straight into out: no string of the whole message in between. */
    GMimeStream *st = g_mime_stream_mem_new_with_byte_array(out);
    g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(st), FALSE);
    g_mime_stream_seek(st, 0, GMIME_STREAM_SEEK_END);
    ssize_t n = g_mime_object_write_to_stream(body, NULL, st);
    g_object_unref(st);
    g_object_unref(body);
    return n < 0 ? -EIO : 0;
}

/* ----------------------------------------------- vCard and iCalendar */

/* Appends "NAME:value" as a content line: escaped (RFC 2426/5545) unless
 * raw, folded at 75 octets without splitting UTF-8, CRLF-terminated. */
static void content_line(GString *out, const char *name, const char *value, bool raw)
{
    if (!value || !*value)
        return;
    GString *l = g_string_new(name);
    g_string_append_c(l, ':');
    for (const char *p = value; *p; p++) {
        if (raw) {
            g_string_append_c(l, *p);
        } else if (*p == '\\' || *p == ',' || *p == ';') {
            g_string_append_c(l, '\\');
            g_string_append_c(l, *p);
        } else if (*p == '\n') {
            g_string_append(l, "\\n");
        } else if (*p != '\r') {
            g_string_append_c(l, *p);
        }
    }
    size_t col = 0;
    for (size_t i = 0; i < l->len; i++) {
        unsigned char c = (unsigned char)l->str[i];
        if (col >= 74 && (c & 0xC0) != 0x80) {
            g_string_append(out, "\r\n ");
            col = 1;
        }
        g_string_append_c(out, (char)c);
        col++;
    }
    g_string_append(out, "\r\n");
    g_string_free(l, TRUE);
}

static void ical_time(GString *out, const char *name, const FILETIME *ft, bool date_only)
{
    int64_t ns = ft_ns(ft);
    if (!ft)
        return;
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[32];
    strftime(buf, sizeof buf, date_only ? "%Y%m%d" : "%Y%m%dT%H%M%SZ", &tm);
    g_autofree char *n = g_strdup_printf("%s%s", name, date_only ? ";VALUE=DATE" : "");
    content_line(out, n, buf, true);
}

/* A structured value (N, ADR): each component escaped, joined by ';'. */
static char *components(pst_item *it, pst_string *const *parts, int n)
{
    GString *s = g_string_new(NULL);
    bool any = false;
    for (int i = 0; i < n; i++) {
        if (i)
            g_string_append_c(s, ';');
        const char *v = parts[i] ? u8(it, parts[i]) : NULL;
        for (; v && *v; v++) {
            any = true;
            if (*v == '\\' || *v == ',' || *v == ';')
                g_string_append_c(s, '\\');
            if (*v == '\n')
                g_string_append(s, "\\n");
            else if (*v != '\r')
                g_string_append_c(s, *v);
        }
    }
    return g_string_free(s, !any);
}

static void render_contact(pst_item *it, const char *salt, GString *out)
{
    pst_item_contact *c = it->contact;
    g_string_append(out, "BEGIN:VCARD\r\nVERSION:3.0\r\n");
    const char *fn = u8(it, &c->fullname);
    if (!fn)
        fn = u8(it, &it->file_as);
    g_autofree char *joined = NULL;
    if (!fn && (u8(it, &c->first_name) || u8(it, &c->surname)))
        fn = joined = g_strjoin(" ", c->first_name.str ? c->first_name.str : "",
                                c->surname.str ? c->surname.str : "", NULL);
    content_line(out, "FN", fn ? g_strstrip((char *)fn) : "", false);
    pst_string *n[] = {&c->surname, &c->first_name, &c->middle_name, &c->display_name_prefix,
                       &c->suffix};
    g_autofree char *nv = components(it, n, 5);
    content_line(out, "N", nv ? nv : ";;;;", true);
    content_line(out, "NICKNAME", u8(it, &c->nickname), false);
    pst_string *org[] = {&c->company_name, &c->department};
    g_autofree char *ov = components(it, org, 2);
    content_line(out, "ORG", ov, true);
    content_line(out, "TITLE", u8(it, &c->job_title), false);
    content_line(out, "EMAIL;TYPE=INTERNET", u8(it, &c->address1), false);
    content_line(out, "EMAIL;TYPE=INTERNET", u8(it, &c->address2), false);
    content_line(out, "EMAIL;TYPE=INTERNET", u8(it, &c->address3), false);
    content_line(out, "TEL;TYPE=WORK,VOICE", u8(it, &c->business_phone), false);
    content_line(out, "TEL;TYPE=WORK,VOICE", u8(it, &c->business_phone2), false);
    content_line(out, "TEL;TYPE=HOME,VOICE", u8(it, &c->home_phone), false);
    content_line(out, "TEL;TYPE=CELL", u8(it, &c->mobile_phone), false);
    content_line(out, "TEL;TYPE=WORK,FAX", u8(it, &c->business_fax), false);
    content_line(out, "TEL;TYPE=HOME,FAX", u8(it, &c->home_fax), false);
    content_line(out, "TEL;TYPE=PAGER", u8(it, &c->pager_phone), false);
    pst_string *wa[] = {&c->business_po_box, NULL,
                        &c->business_street, &c->business_city,
                        &c->business_state,  &c->business_postal_code,
                        &c->business_country};
    g_autofree char *wv = components(it, wa, 7);
    content_line(out, "ADR;TYPE=WORK", wv, true);
    pst_string *ha[] = {&c->home_po_box, NULL,           &c->home_street,
                        &c->home_city,   &c->home_state, &c->home_postal_code,
                        &c->home_country};
    g_autofree char *hv = components(it, ha, 7);
    content_line(out, "ADR;TYPE=HOME", hv, true);
    content_line(out, "URL", u8(it, &c->business_homepage), true);
    content_line(out, "URL", u8(it, &c->personal_homepage), true);
    if (c->birthday)
        ical_time(out, "BDAY", c->birthday, true);
    const char *note = u8(it, &it->body);
    content_line(out, "NOTE", note ? note : u8(it, &it->comment), false);
    content_line(out, "UID", salt, true);
    if (it->modify_date)
        ical_time(out, "REV", it->modify_date, false);
    g_string_append(out, "END:VCARD\r\n");
}

static void render_calendar(pst_item *it, pr_class cls, const char *salt, GString *out)
{
    g_string_append(out, "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailfs//pst backend//EN\r\n");
    const char *component = cls == PR_JOURNAL ? "VJOURNAL" : cls == PR_TASK ? "VTODO" : "VEVENT";
    g_string_append_printf(out, "BEGIN:%s\r\n", component);
    g_autofree char *uid = g_strdup_printf("%s@pst.mailfs.invalid", salt);
    content_line(out, "UID", uid, true);
    /* DTSTAMP must be there; the item's own time keeps the render stable. */
    const FILETIME *stamp = it->modify_date ? it->modify_date : it->create_date;
    FILETIME zero = {0xd53e8000, 0x019db1de}; /* 1970-01-01 */
    ical_time(out, "DTSTAMP", stamp ? stamp : &zero, false);
    ical_time(out, "CREATED", it->create_date, false);
    ical_time(out, "LAST-MODIFIED", it->modify_date, false);
    content_line(out, "SUMMARY", u8(it, &it->subject), false);
    content_line(out, "DESCRIPTION", u8(it, &it->body), false);
    if (cls == PR_JOURNAL) {
        ical_time(out, "DTSTART", it->journal->start, false);
    } else if (cls == PR_TASK) {
        /* libpst reads no task properties (due date, status): what is
         * kept is what it has, subject, body and dates. */
        if (it->flags & PST_FLAG_READ)
            content_line(out, "X-MAILFS-READ", "TRUE", true);
    } else {
        pst_item_appointment *a = it->appointment;
        content_line(out, "LOCATION", u8(it, &a->location), false);
        ical_time(out, "DTSTART", a->start, a->all_day);
        ical_time(out, "DTEND", a->end, a->all_day);
        content_line(out, "TRANSP", a->showas == PST_FREEBUSY_FREE ? "TRANSPARENT" : "OPAQUE",
                     true);
        if (a->is_recurring)
            content_line(out, "X-MAILFS-RECURRENCE", u8(it, &a->recurrence_description), false);
    }
    g_string_append_printf(out, "END:%s\r\nEND:VCALENDAR\r\n", component);
}

/*
 * Takes each pending attachment's marker out of out (from start on),
 * recording where its text goes in st->parts.  False when a marker is
 * not there exactly once (the message's own bytes held one, however
 * unlikely): then the item is rendered again in memory.
 */
static bool place_streams(GByteArray *out, guint start, GArray *pend, pr_streaming *st)
{
    size_t from = start;
    for (guint i = 0; i < pend->len; i++) {
        const char *mk = g_array_index(pend, pending, i).marker;
        size_t n = strlen(mk);
        const guint8 *hit = memmem(out->data + from, out->len - from, mk, n);
        if (!hit || memmem(hit + n, out->data + out->len - (hit + n), mk, n))
            return false;
        size_t at = (size_t)(hit - out->data);
        g_byte_array_remove_range(out, (guint)at, (guint)n);
        pr_stream p = {at, g_array_index(pend, pending, i).attach,
                       g_array_index(pend, pending, i).raw};
        g_array_append_val(st->parts, p);
        from = at;
    }
    return true;
}

/* A message, its big attachments left to be streamed when st says so. */
static int render_top_mail(pst_file *pf, pst_item *item, const char *salt, GByteArray *out,
                           pr_streaming *st, char **why)
{
    guint start = out->len;
    GArray *pend = st ? g_array_new(FALSE, FALSE, sizeof(pending)) : NULL;
    if (pend)
        g_array_set_clear_func(pend, pending_clear);
    int rc = render_mail(pf, item, salt, 0, out, st, pend, why);
    if (!rc && pend && pend->len && !place_streams(out, start, pend, st)) {
        g_array_set_size(st->parts, 0);
        g_byte_array_set_size(out, start);
        rc = render_mail(pf, item, salt, 0, out, NULL, NULL, why);
    }
    if (pend)
        g_array_free(pend, TRUE);
    if (rc) {
        g_byte_array_set_size(out, start);
        if (st)
            g_array_set_size(st->parts, 0);
    }
    return rc;
}

static gsize gmime_ready;

int pr_render(pst_file *pf, pst_item *item, pr_class c, const char *salt, GByteArray *out,
              pr_streaming *st, char **why)
{
    if (g_once_init_enter(&gmime_ready)) {
        g_mime_init();
        g_once_init_leave(&gmime_ready, 1);
    }
    GString *s = g_string_new(NULL);
    int rc = 0;
    switch (c) {
    case PR_MAIL:
        rc = render_top_mail(pf, item, salt, out, st, why);
        break;
    case PR_CONTACT:
        render_contact(item, salt, s);
        break;
    case PR_APPOINTMENT:
    case PR_JOURNAL:
    case PR_TASK:
        render_calendar(item, c, salt, s);
        break;
    default:
        rc = -EINVAL;
    }
    if (!rc)
        g_byte_array_append(out, (const guint8 *)s->str, (guint)s->len);
    g_string_free(s, TRUE);
    return rc;
}
