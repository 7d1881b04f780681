/* safetensors.c: the file format (see "Files" in rnnext.h). A strict parser of safetensors
 * headers, the checks of every tensor's byte range, reading tensors as float32, and building a
 * model from a file's metadata and tensors.
 *
 * The parser only accepts the JSON a safetensors header holds (an object of tensor entries and
 * one string-to-string metadata object), so it needs no recursion. It reads only inside the
 * buffer it is given, and every size it computes from the file is overflow-checked. */
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rnx_internal.h"

typedef struct meta_entry {
    const char *key, *value;
} meta_entry;

struct rnx_file {
    const unsigned char *data;        /* the file's bytes (not owned) */
    size_t size;
    rnx_tensor_info *tensors;         /* (ntensors), in file order */
    const rnx_tensor_info **by_name;  /* (ntensors), sorted by name */
    size_t ntensors;
    meta_entry *meta;                 /* (nmeta), sorted by key */
    size_t nmeta;
    char *strings;                    /* one block holding every decoded name, key and value */
};

/* Room for a name in a message: names are cut there, so messages stay short. */
#define NAME_FMT "%.80s"

static rnx_status fail(char *message, size_t message_size, rnx_status status, const char *fmt,
                       ...) {
    if (message && message_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(message, message_size, fmt, ap);
        va_end(ap);
    }
    return status;
}

static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I8", 1}};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

const char *rnx_dtype_name(rnx_dtype dtype) {
    return (unsigned)dtype < N_DTYPES ? DTYPES[dtype].name : "unknown";
}

/* ---------------------------------------------------------------------------------------------
 * JSON: the subset a safetensors header is made of
 * ------------------------------------------------------------------------------------------- */

typedef struct parser {
    const unsigned char *start, *p, *end; /* the header, and the next byte to read */
    const char *context;                  /* the tensor being parsed, or NULL */
    char *arena;                          /* decoded strings; never fuller than the header */
    size_t arena_used;
    char *message;
    size_t message_size;
} parser;

/* A temporary tensor entry: its byte range is relative to the data until it is checked. */
typedef struct entry {
    rnx_tensor_info info;
    uint64_t begin, end;
} entry;

static rnx_status syntax(parser *ps, const char *what) {
    return fail(ps->message, ps->message_size, RNX_ERR_FILE_HEADER,
                "header: %s%s%s%s at byte %zu of the JSON header", ps->context ? "'" : "",
                ps->context ? ps->context : "", ps->context ? "': " : "", what,
                (size_t)(ps->p - ps->start));
}

static void skip_space(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Skips whitespace, then consumes `c` or fails. */
static rnx_status expect(parser *ps, char c) {
    skip_space(ps);
    if (ps->p >= ps->end || *ps->p != (unsigned char)c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return syntax(ps, what);
    }
    ps->p++;
    return RNX_OK;
}

/* Skips whitespace; consumes `c` and returns 1 when it comes next, else returns 0. */
static int accept(parser *ps, char c) {
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == (unsigned char)c) {
        ps->p++;
        return 1;
    }
    return 0;
}

static int hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d == 16) return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

/* The length of the well-formed UTF-8 sequence at s (at most n bytes available), or 0. Refuses
 * overlong forms, surrogates and code points past U+10FFFF. */
static size_t utf8_length(const unsigned char *s, size_t n) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

static char *put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) {
        *out++ = (char)cp;
    } else if (cp < 0x800) {
        *out++ = (char)(0xC0 | (cp >> 6));
        *out++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *out++ = (char)(0xE0 | (cp >> 12));
        *out++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *out++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *out++ = (char)(0xF0 | (cp >> 18));
        *out++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *out++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *out++ = (char)(0x80 | (cp & 0x3F));
    }
    return out;
}

/* A JSON string, decoded into the arena as NUL-terminated UTF-8. The decoded form is never longer
 * than the quoted source, so the arena (as large as the header) cannot overflow. Strings holding
 * U+0000 are refused, since names and values are C strings. */
static rnx_status parse_string(parser *ps, const char **out) {
    skip_space(ps);
    if (ps->p >= ps->end || *ps->p != '"') return syntax(ps, "expected a string");
    ps->p++;
    char *dst = ps->arena + ps->arena_used, *w = dst;
    for (;;) {
        if (ps->p >= ps->end) return syntax(ps, "unterminated string");
        unsigned char c = *ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20) return syntax(ps, "control character in a string");
        if (c >= 0x80) {
            size_t len = utf8_length(ps->p, (size_t)(ps->end - ps->p));
            if (!len) return syntax(ps, "invalid UTF-8 in a string");
            memcpy(w, ps->p, len);
            w += len;
            ps->p += len;
            continue;
        }
        if (c != '\\') {
            *w++ = (char)c;
            ps->p++;
            continue;
        }
        if (ps->end - ps->p < 2) return syntax(ps, "unterminated string");
        unsigned char e = ps->p[1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            *w++ = decoded[simple - "\"\\/bfnrt"];
            ps->p += 2;
            continue;
        }
        unsigned cp, low;
        if (e != 'u' || ps->end - ps->p < 6 || !hex4(ps->p + 2, &cp))
            return syntax(ps, "invalid escape in a string");
        ps->p += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return syntax(ps, "unpaired surrogate in a string");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
                !hex4(ps->p + 2, &low) || low < 0xDC00 || low > 0xDFFF)
                return syntax(ps, "unpaired surrogate in a string");
            ps->p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        if (cp == 0) return syntax(ps, "NUL character in a string");
        w = put_utf8(w, cp);
    }
    *w++ = '\0';
    ps->arena_used += (size_t)(w - dst);
    *out = dst;
    return RNX_OK;
}

/* A non-negative JSON integer that fits 64 bits (no sign, fraction or exponent). */
static rnx_status parse_uint(parser *ps, uint64_t *out) {
    skip_space(ps);
    const unsigned char *first = ps->p;
    uint64_t v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        if (__builtin_mul_overflow(v, 10u, &v) || __builtin_add_overflow(v, *ps->p - '0', &v))
            return syntax(ps, "integer too large for 64 bits");
        ps->p++;
    }
    if (ps->p == first) return syntax(ps, "expected a non-negative integer");
    if (*first == '0' && ps->p - first > 1) return syntax(ps, "integer with a leading zero");
    if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
        return syntax(ps, "expected an integer, got a fraction or exponent");
    *out = v;
    return RNX_OK;
}

/* [u, u, ...] with at most `max` integers, their count in *n. */
static rnx_status parse_uint_array(parser *ps, uint64_t *values, int max, int *n,
                                   const char *name, const char *key) {
    rnx_status s = expect(ps, '[');
    if (s != RNX_OK) return s;
    *n = 0;
    if (accept(ps, ']')) return RNX_OK;
    do {
        if (*n == max)
            return fail(ps->message, ps->message_size, RNX_ERR_FILE_HEADER,
                        "tensor '" NAME_FMT "': %s has more than %d entries", name, key, max);
        if ((s = parse_uint(ps, &values[(*n)++])) != RNX_OK) return s;
    } while (accept(ps, ','));
    return expect(ps, ']');
}

/* {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, each key exactly once. */
static rnx_status parse_tensor(parser *ps, entry *t) {
    enum { DTYPE = 1, SHAPE = 2, OFFSETS = 4 };
    int seen = 0;
    rnx_status s = expect(ps, '{');
    if (s != RNX_OK) return s;
    if (!accept(ps, '}')) {
        do {
            const char *key, *dtype;
            if ((s = parse_string(ps, &key)) != RNX_OK || (s = expect(ps, ':')) != RNX_OK) return s;
            int which = !strcmp(key, "dtype") ? DTYPE : !strcmp(key, "shape") ? SHAPE
                        : !strcmp(key, "data_offsets") ? OFFSETS : 0;
            if (!which)
                return fail(ps->message, ps->message_size, RNX_ERR_FILE_HEADER,
                            "tensor '" NAME_FMT "': unexpected key '" NAME_FMT "'", t->info.name, key);
            if (seen & which)
                return fail(ps->message, ps->message_size, RNX_ERR_FILE_HEADER,
                            "tensor '" NAME_FMT "': duplicate key '%s'", t->info.name, key);
            seen |= which;
            if (which == DTYPE) {
                if ((s = parse_string(ps, &dtype)) != RNX_OK) return s;
                size_t d = 0;
                while (d < N_DTYPES && strcmp(dtype, DTYPES[d].name)) d++;
                if (d == N_DTYPES)
                    return fail(ps->message, ps->message_size, RNX_ERR_FILE_DTYPE,
                                "tensor '" NAME_FMT "': dtype '" NAME_FMT "' is not one of F32, F16, "
                                "BF16, F64, I8", t->info.name, dtype);
                t->info.dtype = (rnx_dtype)d;
            } else if (which == SHAPE) {
                if ((s = parse_uint_array(ps, t->info.shape, RNX_FILE_MAX_DIMS, &t->info.ndim,
                                          t->info.name, "shape")) != RNX_OK)
                    return s;
            } else {
                uint64_t offsets[2];
                int n;
                if ((s = parse_uint_array(ps, offsets, 2, &n, t->info.name, "data_offsets")) !=
                    RNX_OK)
                    return s;
                if (n != 2)
                    return fail(ps->message, ps->message_size, RNX_ERR_FILE_HEADER,
                                "tensor '" NAME_FMT "': data_offsets has %d entries, expected 2",
                                t->info.name, n);
                t->begin = offsets[0];
                t->end = offsets[1];
            }
        } while (accept(ps, ','));
        if ((s = expect(ps, '}')) != RNX_OK) return s;
    }
    if (seen != (DTYPE | SHAPE | OFFSETS))
        return fail(ps->message, ps->message_size, RNX_ERR_FILE_HEADER,
                    "tensor '" NAME_FMT "': missing '%s'", t->info.name,
                    !(seen & DTYPE) ? "dtype" : !(seen & SHAPE) ? "shape" : "data_offsets");
    return RNX_OK;
}

/* Makes room for one more item in a growing array. */
static rnx_status reserve(void **items, size_t *capacity, size_t count, size_t elem) {
    if (count < *capacity) return RNX_OK;
    size_t cap = *capacity ? *capacity : 16, bytes;
    if (__builtin_mul_overflow(cap, (size_t)2, &cap) || __builtin_mul_overflow(cap, elem, &bytes))
        return RNX_ERR_OVERFLOW;
    void *grown = realloc(*items, bytes);
    if (!grown) return RNX_ERR_OUT_OF_MEMORY;
    *items = grown;
    *capacity = cap;
    return RNX_OK;
}

/* {"key": "value", ...}: metadata, string values only. */
static rnx_status parse_metadata(parser *ps, meta_entry **meta, size_t *nmeta) {
    size_t capacity = 0;
    rnx_status s = expect(ps, '{');
    if (s != RNX_OK) return s;
    if (accept(ps, '}')) return RNX_OK;
    do {
        const char *key, *value;
        if ((s = parse_string(ps, &key)) != RNX_OK || (s = expect(ps, ':')) != RNX_OK) return s;
        skip_space(ps);
        if (ps->p >= ps->end || *ps->p != '"')
            return fail(ps->message, ps->message_size, RNX_ERR_FILE_HEADER,
                        "__metadata__: the value of '" NAME_FMT "' is not a string", key);
        if ((s = parse_string(ps, &value)) != RNX_OK) return s;
        if ((s = reserve((void **)meta, &capacity, *nmeta, sizeof **meta)) != RNX_OK)
            return fail(ps->message, ps->message_size, s, "__metadata__: too many entries");
        (*meta)[(*nmeta)++] = (meta_entry){key, value};
    } while (accept(ps, ','));
    return expect(ps, '}');
}

/* ---------------------------------------------------------------------------------------------
 * Checks of the tensor table
 * ------------------------------------------------------------------------------------------- */

static int by_range(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(const rnx_tensor_info *const *)a)->name,
                  (*(const rnx_tensor_info *const *)b)->name);
}

static int by_key(const void *a, const void *b) {
    return strcmp(((const meta_entry *)a)->key, ((const meta_entry *)b)->key);
}

/* "(2, 3)" into buf. */
static const char *shape_text(char *buf, size_t size, const uint64_t *shape, int ndim) {
    size_t used = (size_t)snprintf(buf, size, "(");
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, d ? ", %llu" : "%llu",
                                 (unsigned long long)shape[d]);
    if (used < size) snprintf(buf + used, size - used, ndim == 1 ? ",)" : ")");
    return buf;
}

/* Each tensor's size from its shape and dtype, matched against its byte range; then the ranges,
 * in order, must tile the data [0, data_len) exactly. */
static rnx_status check_ranges(entry *entries, size_t n, uint64_t data_len, char *message,
                               size_t message_size) {
    char text[256];
    for (size_t i = 0; i < n; i++) {
        entry *t = &entries[i];
        uint64_t bytes = DTYPES[t->info.dtype].size;
        for (int d = 0; d < t->info.ndim; d++)
            if (__builtin_mul_overflow(bytes, t->info.shape[d], &bytes))
                return fail(message, message_size, RNX_ERR_OVERFLOW,
                            "tensor '" NAME_FMT "': the size of shape %s overflows 64 bits",
                            t->info.name, shape_text(text, sizeof text, t->info.shape, t->info.ndim));
        if (t->end < t->begin)
            return fail(message, message_size, RNX_ERR_FILE_OFFSETS,
                        "tensor '" NAME_FMT "': data_offsets [%llu, %llu] end before they begin",
                        t->info.name, (unsigned long long)t->begin, (unsigned long long)t->end);
        if (t->end - t->begin != bytes)
            return fail(message, message_size, RNX_ERR_FILE_OFFSETS,
                        "tensor '" NAME_FMT "': data_offsets [%llu, %llu] hold %llu bytes, but "
                        "shape %s of %s needs %llu", t->info.name, (unsigned long long)t->begin,
                        (unsigned long long)t->end, (unsigned long long)(t->end - t->begin),
                        shape_text(text, sizeof text, t->info.shape, t->info.ndim),
                        DTYPES[t->info.dtype].name, (unsigned long long)bytes);
        t->info.nbytes = bytes;
    }
    if (n) qsort(entries, n, sizeof *entries, by_range);
    uint64_t next = 0;
    for (size_t i = 0; i < n; i++) {
        if (entries[i].begin < next)
            return fail(message, message_size, RNX_ERR_FILE_OFFSETS,
                        "tensor '" NAME_FMT "': data_offsets [%llu, %llu] overlap tensor '" NAME_FMT
                        "'", entries[i].info.name, (unsigned long long)entries[i].begin,
                        (unsigned long long)entries[i].end, entries[i - 1].info.name);
        if (entries[i].begin > next)
            return fail(message, message_size, RNX_ERR_FILE_OFFSETS,
                        "tensor '" NAME_FMT "': data_offsets [%llu, %llu] leave a gap of %llu bytes "
                        "before it", entries[i].info.name, (unsigned long long)entries[i].begin,
                        (unsigned long long)entries[i].end,
                        (unsigned long long)(entries[i].begin - next));
        next = entries[i].end;
    }
    if (next > data_len)
        return fail(message, message_size, RNX_ERR_FILE_LENGTH,
                    "truncated: the tensors need %llu bytes of data, the file holds %llu",
                    (unsigned long long)next, (unsigned long long)data_len);
    if (next < data_len)
        return fail(message, message_size, RNX_ERR_FILE_LENGTH,
                    "%llu bytes after the last tensor's data", (unsigned long long)(data_len - next));
    return RNX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Parsing a file
 * ------------------------------------------------------------------------------------------- */

/* The tensor entries and metadata of the header into f (the entries still relative to the data). */
static rnx_status parse_header(parser *ps, rnx_file *f, entry **entries) {
    size_t capacity = 0;
    int have_metadata = 0;
    rnx_status s;
    if (ps->p >= ps->end || *ps->p != '{') return syntax(ps, "the header does not start with '{'");
    ps->p++;
    if (!accept(ps, '}')) {
        do {
            const char *name;
            if ((s = parse_string(ps, &name)) != RNX_OK || (s = expect(ps, ':')) != RNX_OK) return s;
            ps->context = name;
            if (!strcmp(name, "__metadata__")) {
                if (have_metadata)
                    return fail(ps->message, ps->message_size, RNX_ERR_FILE_HEADER,
                                "header: duplicate key '__metadata__'");
                have_metadata = 1;
                if ((s = parse_metadata(ps, &f->meta, &f->nmeta)) != RNX_OK) return s;
            } else {
                if ((s = reserve((void **)entries, &capacity, f->ntensors, sizeof **entries)) !=
                    RNX_OK)
                    return fail(ps->message, ps->message_size, s, "header: too many tensors");
                entry *t = &(*entries)[f->ntensors++];
                memset(t, 0, sizeof *t);
                t->info.name = name;
                if ((s = parse_tensor(ps, t)) != RNX_OK) return s;
            }
            ps->context = NULL;
        } while (accept(ps, ','));
        if ((s = expect(ps, '}')) != RNX_OK) return s;
    }
    skip_space(ps);
    if (ps->p != ps->end) return syntax(ps, "unexpected bytes after the JSON object");
    return RNX_OK;
}

/* Unique names and metadata keys; the name index for rnx_file_find. */
static rnx_status index_names(rnx_file *f, char *message, size_t message_size) {
    if (f->ntensors) {
        f->by_name = malloc(f->ntensors * sizeof *f->by_name);
        if (!f->by_name) return RNX_ERR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < f->ntensors; i++) f->by_name[i] = &f->tensors[i];
    if (f->ntensors) qsort(f->by_name, f->ntensors, sizeof *f->by_name, by_name);
    for (size_t i = 1; i < f->ntensors; i++)
        if (!strcmp(f->by_name[i]->name, f->by_name[i - 1]->name))
            return fail(message, message_size, RNX_ERR_FILE_HEADER,
                        "header: duplicate tensor '" NAME_FMT "'", f->by_name[i]->name);
    if (f->nmeta) qsort(f->meta, f->nmeta, sizeof *f->meta, by_key);
    for (size_t i = 1; i < f->nmeta; i++)
        if (!strcmp(f->meta[i].key, f->meta[i - 1].key))
            return fail(message, message_size, RNX_ERR_FILE_HEADER,
                        "__metadata__: duplicate key '" NAME_FMT "'", f->meta[i].key);
    return RNX_OK;
}

static rnx_status parse_file(rnx_file *f, char *message, size_t message_size) {
    if (f->size < 8)
        return fail(message, message_size, RNX_ERR_FILE_LENGTH,
                    "truncated: %zu bytes, fewer than the 8 of the header length", f->size);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | f->data[i];
    if (header_len > RNX_FILE_MAX_HEADER)
        return fail(message, message_size, RNX_ERR_FILE_HEADER,
                    "header length %llu exceeds the limit of %u bytes",
                    (unsigned long long)header_len, RNX_FILE_MAX_HEADER);
    if (header_len > f->size - 8)
        return fail(message, message_size, RNX_ERR_FILE_LENGTH,
                    "truncated: the header length is %llu bytes, the file holds %zu after it",
                    (unsigned long long)header_len, f->size - 8);
    parser ps = {f->data + 8, f->data + 8, f->data + 8 + header_len, NULL, NULL, 0, message,
                 message_size};
    /* decoded strings plus their NULs never outgrow the quoted strings of the header */
    f->strings = ps.arena = malloc((size_t)header_len + 1);
    if (!f->strings) return RNX_ERR_OUT_OF_MEMORY;
    entry *entries = NULL;
    rnx_status s = parse_header(&ps, f, &entries);
    if (s == RNX_OK)
        s = check_ranges(entries, f->ntensors, f->size - 8 - header_len, message, message_size);
    if (s == RNX_OK && f->ntensors) {
        f->tensors = malloc(f->ntensors * sizeof *f->tensors);
        if (!f->tensors) s = RNX_ERR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; s == RNX_OK && i < f->ntensors; i++) {
        f->tensors[i] = entries[i].info;
        f->tensors[i].offset = 8 + header_len + entries[i].begin; /* <= size, checked above */
    }
    free(entries);
    if (s == RNX_OK) s = index_names(f, message, message_size);
    return s;
}

rnx_status rnx_file_parse(rnx_file **out, const void *data, size_t size, char *message,
                          size_t message_size) {
    if (message && message_size) message[0] = '\0';
    if (!out) return RNX_ERR_NULL_ARGUMENT;
    *out = NULL;
    if (!data && size) return RNX_ERR_NULL_ARGUMENT;
    rnx_file *f = calloc(1, sizeof *f);
    if (!f) return RNX_ERR_OUT_OF_MEMORY;
    f->data = data;
    f->size = size;
    rnx_status s = parse_file(f, message, message_size);
    if (s != RNX_OK) {
        if (s == RNX_ERR_OUT_OF_MEMORY && message && message_size && !message[0])
            fail(message, message_size, s, "out of memory while parsing the header");
        rnx_file_free(f);
        return s;
    }
    *out = f;
    return RNX_OK;
}

void rnx_file_free(rnx_file *file) {
    if (!file) return;
    free(file->tensors);
    free(file->by_name);
    free(file->meta);
    free(file->strings);
    free(file);
}

size_t rnx_file_tensor_count(const rnx_file *file) { return file ? file->ntensors : 0; }

const rnx_tensor_info *rnx_file_tensor(const rnx_file *file, size_t index) {
    return file && index < file->ntensors ? &file->tensors[index] : NULL;
}

/* strcmp of the concatenation of head and tail with name, without building it. */
static int compare_joined(const char *head, const char *tail, const char *name) {
    for (; *head; head++, name++)
        if (*head != *name) return (unsigned char)*head - (unsigned char)*name;
    return strcmp(tail, name);
}

/* The tensor called head followed by tail, or NULL (a binary search of the names, which
 * index_names sorted by strcmp). */
static const rnx_tensor_info *find_joined(const rnx_file *file, const char *head,
                                          const char *tail) {
    size_t lo = 0, hi = file->ntensors;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const int c = compare_joined(head, tail, file->by_name[mid]->name);
        if (!c) return file->by_name[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const rnx_tensor_info *rnx_file_find(const rnx_file *file, const char *name) {
    return file && name ? find_joined(file, name, "") : NULL;
}

size_t rnx_file_metadata_count(const rnx_file *file) { return file ? file->nmeta : 0; }

rnx_status rnx_file_metadata(const rnx_file *file, size_t index, const char **key,
                             const char **value) {
    if (!file || !key || !value) return RNX_ERR_NULL_ARGUMENT;
    if (index >= file->nmeta) return RNX_ERR_BAD_ARGUMENT;
    *key = file->meta[index].key;
    *value = file->meta[index].value;
    return RNX_OK;
}

const char *rnx_file_metadata_get(const rnx_file *file, const char *key) {
    if (!file || !key || !file->nmeta) return NULL;
    meta_entry probe = {key, NULL};
    const meta_entry *hit = bsearch(&probe, file->meta, file->nmeta, sizeof *file->meta, by_key);
    return hit ? hit->value : NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Reading tensors
 * ------------------------------------------------------------------------------------------- */

static float float_from_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    if (exponent == 0x1F) return float_from_bits(sign | 0x7F800000u | mantissa << 13);
    if (exponent) return float_from_bits(sign | (exponent + 112) << 23 | mantissa << 13);
    const float subnormal = (float)mantissa * (1.0f / 16777216.0f); /* mantissa * 2^-24, exact */
    return sign ? -subnormal : subnormal;
}

/* Little-endian unsigned integer of n bytes at p. */
static uint64_t load_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* The name of an I8 tensor's scales is its own followed by this. */
#define SCALE_SUFFIX ".scale"

/* The scales of I8 tensor t (rnx_dtype) in *out: the F32 tensor of t's name and SCALE_SUFFIX,
 * of shape (rows), each scale finite and > 0. */
static rnx_status i8_scales(const rnx_file *f, const rnx_tensor_info *t,
                            const rnx_tensor_info **out, char *message, size_t message_size) {
    const rnx_tensor_info *scale = find_joined(f, t->name, SCALE_SUFFIX);
    const uint64_t rows[1] = {t->ndim ? t->shape[0] : 1};
    char have[256], want[256];
    if (!scale)
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "tensor '" NAME_FMT "': an I8 tensor needs its row scales, tensor '" NAME_FMT
                    SCALE_SUFFIX "', which is missing", t->name, t->name);
    if (scale->dtype != RNX_DTYPE_F32)
        return fail(message, message_size, RNX_ERR_FILE_DTYPE,
                    "tensor '" NAME_FMT "': dtype %s, expected F32 (the row scales of an I8 "
                    "tensor)", scale->name, DTYPES[scale->dtype].name);
    if (scale->ndim != 1 || scale->shape[0] != rows[0])
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "tensor '" NAME_FMT "': expected shape %s (a scale per row of '" NAME_FMT
                    "'), got %s", scale->name, shape_text(want, sizeof want, rows, 1), t->name,
                    shape_text(have, sizeof have, scale->shape, scale->ndim));
    const unsigned char *p = f->data + scale->offset;
    for (uint64_t r = 0; r < rows[0]; r++, p += 4) {
        const float value = float_from_bits((uint32_t)load_le(p, 4));
        if (!(value > 0.0f && isfinite(value)))
            return fail(message, message_size, RNX_ERR_FILE_MODEL,
                        "tensor '" NAME_FMT "': entry %llu is %g, expected a finite scale > 0",
                        scale->name, (unsigned long long)r, (double)value);
    }
    *out = scale;
    return RNX_OK;
}

rnx_status rnx_file_read_f32(const rnx_file *file, const rnx_tensor_info *tensor, float *out,
                             size_t count) {
    if (!file || !tensor || (!out && count)) return RNX_ERR_NULL_ARGUMENT;
    if (tensor < file->tensors || tensor >= file->tensors + file->ntensors)
        return RNX_ERR_BAD_ARGUMENT;
    const size_t width = DTYPES[tensor->dtype].size;
    if (tensor->nbytes / width != count) return RNX_ERR_BAD_ARGUMENT;
    const unsigned char *scales = NULL; /* an I8 tensor's: each row's, columns values a row */
    size_t columns = 1;
    if (tensor->dtype == RNX_DTYPE_I8) {
        const rnx_tensor_info *scale;
        const rnx_status s = i8_scales(file, tensor, &scale, NULL, 0);
        if (s != RNX_OK) return s;
        scales = file->data + scale->offset;
        if (count) columns = count / (size_t)scale->shape[0]; /* rows > 0 when count > 0 */
    }
    const unsigned char *p = file->data + tensor->offset;
    for (size_t i = 0; i < count; i++, p += width) {
        switch (tensor->dtype) {
        case RNX_DTYPE_F32: out[i] = float_from_bits((uint32_t)load_le(p, 4)); break;
        case RNX_DTYPE_F16: out[i] = half_to_float((uint16_t)load_le(p, 2)); break;
        case RNX_DTYPE_BF16: out[i] = float_from_bits((uint32_t)load_le(p, 2) << 16); break;
        case RNX_DTYPE_F64: {
            const uint64_t bits = load_le(p, 8);
            double d;
            memcpy(&d, &bits, sizeof d);
            out[i] = (float)d;
            break;
        }
        case RNX_DTYPE_I8:
            out[i] = (float)(*p < 128 ? *p : *p - 256) *
                     float_from_bits((uint32_t)load_le(scales + i / columns * 4, 4));
            break;
        }
    }
    return RNX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Model files: the layer list in the metadata (format versions 1 and 2), checked against the
 * tensors
 * ------------------------------------------------------------------------------------------- */

/* A metadata spelling and the enum value it stands for; lists end with a NULL name. */
typedef struct choice {
    const char *name;
    int value;
} choice;

/* Version 2's layer types, and the kind of each. */
enum { TYPE_EMBEDDING, TYPE_RNN, TYPE_LSTM, TYPE_GRU, TYPE_READOUT, TYPE_DENSE, TYPE_MASKING };
static const choice LAYER_TYPES[] = {{"embedding", TYPE_EMBEDDING}, {"rnn", TYPE_RNN},
                                     {"lstm", TYPE_LSTM}, {"gru", TYPE_GRU},
                                     {"readout", TYPE_READOUT}, {"dense", TYPE_DENSE},
                                     {"masking", TYPE_MASKING}, {NULL, 0}};
static const int TYPE_KINDS[] = {RNX_LAYER_EMBEDDING, RNX_LAYER_RECURRENT, RNX_LAYER_RECURRENT,
                                 RNX_LAYER_RECURRENT, RNX_LAYER_READOUT, RNX_LAYER_DENSE,
                                 RNX_LAYER_MASKING};
static const choice DIRECTIONS[] = {{"forward", RNX_DIRECTION_FORWARD},
                                    {"reverse", RNX_DIRECTION_REVERSE},
                                    {"bidirectional", RNX_DIRECTION_BIDIRECTIONAL}, {NULL, 0}};
static const choice MERGES[] = {{"concat", RNX_MERGE_CONCAT}, {"sum", RNX_MERGE_SUM},
                                {"mul", RNX_MERGE_MUL}, {"ave", RNX_MERGE_AVE}, {NULL, 0}};
static const choice READOUTS[] = {{"sequence", RNX_READOUT_SEQUENCE}, {"last", RNX_READOUT_LAST},
                                  {"final", RNX_READOUT_FINAL}, {"mean", RNX_READOUT_MEAN},
                                  {"max", RNX_READOUT_MAX}, {NULL, 0}};
static const choice NONLINEARITIES[] = {{"tanh", RNX_CELL_RNN_TANH}, {"relu", RNX_CELL_RNN_RELU},
                                        {NULL, 0}};
static const choice CELL_ACTIVATIONS[] = {
    {"linear", RNX_ACT_LINEAR}, {"sigmoid", RNX_ACT_SIGMOID}, {"tanh", RNX_ACT_TANH},
    {"relu", RNX_ACT_RELU}, {"hard_sigmoid", RNX_ACT_HARD_SIGMOID}, {"affine", RNX_ACT_AFFINE},
    {"leaky_relu", RNX_ACT_LEAKY_RELU}, {"thresholded_relu", RNX_ACT_THRESHOLDED_RELU},
    {"scaled_tanh", RNX_ACT_SCALED_TANH}, {"elu", RNX_ACT_ELU}, {"softsign", RNX_ACT_SOFTSIGN},
    {"softplus", RNX_ACT_SOFTPLUS}, {"relu6", RNX_ACT_RELU6}, {"selu", RNX_ACT_SELU},
    {"gelu", RNX_ACT_GELU}, {"silu", RNX_ACT_SILU}, {"exponential", RNX_ACT_EXPONENTIAL},
    {"mish", RNX_ACT_MISH}, {"hard_silu", RNX_ACT_HARD_SILU}, {"hard_tanh", RNX_ACT_HARD_TANH},
    {"celu", RNX_ACT_CELU}, {"log_sigmoid", RNX_ACT_LOG_SIGMOID},
    {"tanh_shrink", RNX_ACT_TANH_SHRINK}, {"soft_shrink", RNX_ACT_SOFT_SHRINK},
    {"hard_shrink", RNX_ACT_HARD_SHRINK}, {"squareplus", RNX_ACT_SQUAREPLUS},
    {"sparse_plus", RNX_ACT_SPARSE_PLUS}, {"sparse_sigmoid", RNX_ACT_SPARSE_SIGMOID}, {NULL, 0}};
static const choice DENSE_ACTIVATIONS[] = {{"none", RNX_ACT_LINEAR}, {"relu", RNX_ACT_RELU},
                                           {"tanh", RNX_ACT_TANH}, {"sigmoid", RNX_ACT_SIGMOID},
                                           {"softmax", RNX_ACT_SOFTMAX}, {NULL, 0}};
static const choice PRECISIONS[] = {{"fp32", RNX_PRECISION_FP32}, {"bf16", RNX_PRECISION_BF16},
                                    {"int8", RNX_PRECISION_INT8}, {NULL, 0}};
/* Version 1: the cell, the head's placement and its activation. */
static const choice V1_CELLS[] = {{"rnn", RNX_CELL_RNN_TANH}, {"lstm", RNX_CELL_LSTM},
                                  {"gru", RNX_CELL_GRU}, {NULL, 0}};
static const choice V1_OUTPUTS[] = {{"many_to_one", RNX_READOUT_LAST},
                                    {"many_to_many", RNX_READOUT_SEQUENCE}, {NULL, 0}};
static const choice V1_ACTIVATIONS[] = {{"none", RNX_ACT_LINEAR}, {"softmax", RNX_ACT_SOFTMAX},
                                        {"sigmoid", RNX_ACT_SIGMOID}, {NULL, 0}};

/* The fields `layer{i}.{field}` of each layer type of version 2; any other
 * key of a layer is refused, so that a misspelt option cannot be silently dropped. */
#define RECURRENT_FIELDS "type", "units", "input_size", "direction", "merge", "activations", \
                         "activation_alpha", "activation_beta", "clip"
static const char *const TYPE_FIELDS[][13] = {
    {"type", "vocab_size", "dim", "padding_idx", "mask_zero", NULL},
    {RECURRENT_FIELDS, "nonlinearity", NULL},
    {RECURRENT_FIELDS, "proj_size", "peepholes", "input_forget", NULL},
    {RECURRENT_FIELDS, "reset_after", NULL},
    {"type", "mode", NULL},
    {"type", "units", "activation", NULL},
    {"type", "mask_value", NULL}};

/* Recurrent parameter tensors, in the order of a layer's direction (LAYERS.md). */
static const char *const PARAM_KINDS[] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                          "weight_hr", "weight_peephole"};

/* Room for a metadata key ("layer1023.activation_alpha") and for one item of a list value. */
#define KEY_SIZE 48
#define ITEM_SIZE 48

/* Reads the metadata keys of one layer (`layer{layer}.{field}`), or top-level ones (layer -1). */
typedef struct meta_reader {
    const rnx_file *file;
    int layer;
    char *message;
    size_t message_size;
} meta_reader;

/* The value of `field`, its full key in key; a failure naming the key when it is missing. */
static rnx_status meta_value(const meta_reader *r, const char *field, char *key,
                             const char **value) {
    if (r->layer < 0) snprintf(key, KEY_SIZE, "%s", field);
    else snprintf(key, KEY_SIZE, "layer%d.%s", r->layer, field);
    *value = rnx_file_metadata_get(r->file, key);
    if (!*value)
        return fail(r->message, r->message_size, RNX_ERR_FILE_MODEL, "metadata: missing '%s'",
                    key);
    return RNX_OK;
}

static rnx_status bad_value(const meta_reader *r, const char *key, const char *value,
                            const char *expected) {
    return fail(r->message, r->message_size, RNX_ERR_FILE_MODEL,
                "metadata: '%s' is '" NAME_FMT "', expected %s", key, value, expected);
}

/* A decimal integer in [lo, hi] without sign, spaces or leading zeros. */
static int text_int(const char *text, int lo, int hi, int *out) {
    long long v = 0;
    const char *c = text;
    for (; *c >= '0' && *c <= '9' && v <= hi; c++) v = v * 10 + (*c - '0');
    if (c == text || *c || (text[0] == '0' && c - text > 1) || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

/* A finite float as Python's repr writes it: digits, sign, point and exponent only (no spaces,
 * hex, inf or nan), all of it consumed by strtof. strtof reads the decimal point of LC_NUMERIC,
 * which a host program may have set to a locale with another one ("0,5"), so the file's '.' is
 * swapped for the locale's first. */
static int text_float(const char *text, float *out) {
    char buf[2 * ITEM_SIZE];
    const char *point = localeconv()->decimal_point;
    const size_t len = strlen(text), dot = strcspn(text, "."), point_len = strlen(point);
    if (!len || len >= ITEM_SIZE || text[strspn(text, "0123456789+-.eE")]) return 0;
    if (dot == len || point_len >= ITEM_SIZE) {
        memcpy(buf, text, len + 1);
    } else {
        memcpy(buf, text, dot);
        memcpy(buf + dot, point, point_len);
        memcpy(buf + dot + point_len, text + dot + 1, len - dot);
    }
    char *end;
    const float v = strtof(buf, &end);
    if (*end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int text_choice(const char *text, const choice *choices, int *out) {
    for (; choices->name; choices++)
        if (!strcmp(text, choices->name)) {
            *out = choices->value;
            return 1;
        }
    return 0;
}

/* An integer in [lo, hi]; with `none`, the text "none" gives -1. */
static rnx_status meta_int(const meta_reader *r, const char *field, int lo, int hi, int none,
                           int *out) {
    char key[KEY_SIZE], expected[80];
    const char *text;
    rnx_status s = meta_value(r, field, key, &text);
    if (s != RNX_OK) return s;
    if (none && !strcmp(text, "none")) {
        *out = -1;
        return RNX_OK;
    }
    if (text_int(text, lo, hi, out)) return RNX_OK;
    snprintf(expected, sizeof expected, "a decimal integer in [%d, %d]%s", lo, hi,
             none ? " or 'none'" : "");
    return bad_value(r, key, text, expected);
}

static rnx_status meta_size(const meta_reader *r, const char *field, int *out) {
    return meta_int(r, field, 1, RNX_MAX_SIZE, 0, out);
}

static rnx_status meta_flag(const meta_reader *r, const char *field, int *out) {
    return meta_int(r, field, 0, 1, 0, out);
}

/* "'a', 'b' or 'c'" into buf. */
static const char *choice_list(char *buf, size_t size, const choice *choices) {
    size_t used = 0;
    buf[0] = '\0';
    for (const choice *c = choices; c->name && used < size; c++)
        used += (size_t)snprintf(buf + used, size - used, "%s'%s'",
                                 c == choices ? "" : c[1].name ? ", " : " or ", c->name);
    return buf;
}

static rnx_status meta_choice(const meta_reader *r, const char *field, const choice *choices,
                              int *out) {
    char key[KEY_SIZE], expected[256];
    const char *text;
    rnx_status s = meta_value(r, field, key, &text);
    if (s != RNX_OK) return s;
    if (text_choice(text, choices, out)) return RNX_OK;
    return bad_value(r, key, text, choice_list(expected, sizeof expected, choices));
}

/* "none" (0) or a finite float > 0. */
static rnx_status meta_clip(const meta_reader *r, const char *field, float *out) {
    char key[KEY_SIZE];
    const char *text;
    rnx_status s = meta_value(r, field, key, &text);
    if (s != RNX_OK) return s;
    if (!strcmp(text, "none")) {
        *out = 0;
        return RNX_OK;
    }
    if (text_float(text, out) && *out > 0) return RNX_OK;
    return bad_value(r, key, text, "'none' or a finite float > 0");
}

/* A finite float. */
static rnx_status meta_float(const meta_reader *r, const char *field, float *out) {
    char key[KEY_SIZE];
    const char *text;
    rnx_status s = meta_value(r, field, key, &text);
    if (s != RNX_OK) return s;
    if (text_float(text, out)) return RNX_OK;
    return bad_value(r, key, text, "a finite float");
}

/* n comma-separated names of `choices` (choices NULL: finite floats) into ints or floats. */
static rnx_status meta_list(const meta_reader *r, const char *field, int n, const choice *choices,
                            int *ints, float *floats) {
    char key[KEY_SIZE], item[ITEM_SIZE], expected[320], names[256];
    const char *text;
    rnx_status s = meta_value(r, field, key, &text);
    if (s != RNX_OK) return s;
    const char *p = text;
    int count = 0, ok = 1;
    for (; ok; count++) {
        const size_t len = strcspn(p, ",");
        ok = count < n && len < sizeof item;
        if (ok) {
            memcpy(item, p, len);
            item[len] = '\0';
            ok = choices ? text_choice(item, choices, &ints[count])
                         : text_float(item, &floats[count]);
        }
        if (!p[len]) break;
        p += len + 1;
    }
    if (ok && count + 1 == n) return RNX_OK;
    if (choices)
        snprintf(expected, sizeof expected, "%d comma-separated names, each one of %s", n,
                 choice_list(names, sizeof names, choices));
    else
        snprintf(expected, sizeof expected, "%d comma-separated finite floats", n);
    return bad_value(r, key, text, expected);
}

/* The width a recurrent layer gives the layer above it: S, or 2S for a bidirectional concat. */
static int output_width(const rnx_layer *l) {
    const int S = l->proj_size ? l->proj_size : l->units;
    return l->direction == RNX_DIRECTION_BIDIRECTIONAL && l->merge == RNX_MERGE_CONCAT ? 2 * S : S;
}

/* The caller's array is shorter than the file's layer list. */
static rnx_status no_room(int n, int max_layers, char *message, size_t message_size) {
    return fail(message, message_size, RNX_ERR_BAD_ARGUMENT,
                "metadata: the file has %d layers, more than max_layers (%d)", n, max_layers);
}

/* Version 2: layer r->layer, of file type `type`, into *l; *width is the width of the layer
 * below, and becomes this layer's. */
static rnx_status read_layer(const meta_reader *r, int type, int *width, rnx_layer *l) {
    rnx_status s;
    int a, b, direction;
    if (type == TYPE_EMBEDDING) {
        if ((s = meta_size(r, "vocab_size", &a)) != RNX_OK ||
            (s = meta_size(r, "dim", &b)) != RNX_OK)
            return s;
        *l = rnx_embedding_layer(a, b, -1);
        *width = b;
        if ((s = meta_int(r, "padding_idx", 0, a - 1, 1, &l->padding_idx)) != RNX_OK) return s;
        return meta_flag(r, "mask_zero", &l->mask_zero);
    }
    if (type == TYPE_MASKING) {
        *l = rnx_masking_layer(0.0f);
        return meta_float(r, "mask_value", &l->mask_value);
    }
    if (type == TYPE_READOUT) {
        if ((s = meta_choice(r, "mode", READOUTS, &a)) != RNX_OK) return s;
        *l = rnx_readout_layer((rnx_readout)a);
        return RNX_OK;
    }
    if (type == TYPE_DENSE) {
        if ((s = meta_size(r, "units", &a)) != RNX_OK ||
            (s = meta_choice(r, "activation", DENSE_ACTIVATIONS, &b)) != RNX_OK)
            return s;
        *l = rnx_dense_layer(*width, a, (rnx_act)b);
        *width = a;
        return RNX_OK;
    }
    int cell = type == TYPE_LSTM ? RNX_CELL_LSTM : RNX_CELL_GRU;
    if (type == TYPE_RNN && (s = meta_choice(r, "nonlinearity", NONLINEARITIES, &cell)) != RNX_OK)
        return s;
    if (type == TYPE_GRU) {
        if ((s = meta_flag(r, "reset_after", &a)) != RNX_OK) return s;
        if (!a) cell = RNX_CELL_GRU_RESET_BEFORE;
    }
    if ((s = meta_size(r, "units", &a)) != RNX_OK || (s = meta_size(r, "input_size", &b)) != RNX_OK ||
        (s = meta_choice(r, "direction", DIRECTIONS, &direction)) != RNX_OK)
        return s;
    if (b != *width) {
        char key[KEY_SIZE], expected[96];
        const char *text;
        meta_value(r, "input_size", key, &text);
        snprintf(expected, sizeof expected, "%d, the width of %s", *width,
                 r->layer ? "the layer below" : "the model's 'input_size'");
        return bad_value(r, key, text, expected);
    }
    *l = rnx_recurrent_layer((rnx_cell)cell, b, a, (rnx_direction)direction);
    const int n = rnx_cell_functions(cell);
    if ((s = meta_choice(r, "merge", MERGES, &l->merge)) != RNX_OK ||
        (s = meta_list(r, "activations", n, CELL_ACTIVATIONS, l->activations, NULL)) != RNX_OK ||
        (s = meta_list(r, "activation_alpha", n, NULL, NULL, l->alpha)) != RNX_OK ||
        (s = meta_list(r, "activation_beta", n, NULL, NULL, l->beta)) != RNX_OK ||
        (s = meta_clip(r, "clip", &l->clip)) != RNX_OK)
        return s;
    /* one direction has nothing to merge, and fields a layer does not use are zero */
    if (direction != RNX_DIRECTION_BIDIRECTIONAL) l->merge = 0;
    if (type == TYPE_LSTM &&
        ((s = meta_int(r, "proj_size", 0, l->units - 1, 0, &l->proj_size)) != RNX_OK ||
         (s = meta_flag(r, "peepholes", &l->peepholes)) != RNX_OK ||
         (s = meta_flag(r, "input_forget", &l->input_forget)) != RNX_OK))
        return s;
    /* alpha and beta are 0 where the function has none (the core's rule) */
    static const char *const PARAMS[2] = {"activation_alpha", "activation_beta"};
    for (int which = 0; which < 2; which++)
        for (int i = 0; i < n; i++) {
            const int act = l->activations[i];
            if ((which ? l->beta : l->alpha)[i] != 0.0f &&
                !(which ? rnx_act_uses_beta(act) : rnx_act_uses_alpha(act))) {
                char key[KEY_SIZE], expected[96];
                const char *text;
                meta_value(r, PARAMS[which], key, &text);
                snprintf(expected, sizeof expected, "0 for each function of 'activations' that "
                         "takes no %s", which ? "beta" : "alpha");
                return bad_value(r, key, text, expected);
            }
        }
    *width = output_width(l);
    return RNX_OK;
}

/* Whether a layer of `kind` may follow one of kind `below` (-1: it comes first), in
 * [embedding | masking] recurrent+ [readout] dense*. */
static int may_follow(int kind, int below) {
    switch (kind) {
    case RNX_LAYER_EMBEDDING:
    case RNX_LAYER_MASKING: return below < 0;
    case RNX_LAYER_RECURRENT:
        return below < 0 || below == RNX_LAYER_EMBEDDING || below == RNX_LAYER_MASKING ||
               below == kind;
    case RNX_LAYER_READOUT: return below == RNX_LAYER_RECURRENT;
    default: return below == RNX_LAYER_RECURRENT || below == RNX_LAYER_READOUT || below == kind;
    }
}

static const char *const KIND_NAMES[] = {"an embedding", "a recurrent", "a readout", "a dense",
                                         "a masking"};

/* Every `layer{i}.{field}` key names a layer i < n and a field of its type. */
static rnx_status check_layer_keys(const rnx_file *f, const int *types, int n, char *message,
                                   size_t message_size) {
    for (size_t k = 0; k < f->nmeta; k++) {
        const char *key = f->meta[k].key;
        if (strncmp(key, "layer", 5) || key[5] < '0' || key[5] > '9') continue;
        char digits[12];
        const size_t len = strcspn(key + 5, ".");
        int i = -1;
        if (len < sizeof digits && key[5 + len]) {
            memcpy(digits, key + 5, len);
            digits[len] = '\0';
            if (!text_int(digits, 0, n - 1, &i)) i = -1;
        }
        if (i < 0)
            return fail(message, message_size, RNX_ERR_FILE_MODEL,
                        "metadata: unexpected key '" NAME_FMT "': the file has %d layers, "
                        "keys 'layer0.*' to 'layer%d.*'", key, n, n - 1);
        const char *const *field = TYPE_FIELDS[types[i]];
        while (*field && strcmp(*field, key + 5 + len + 1)) field++;
        if (!*field)
            return fail(message, message_size, RNX_ERR_FILE_MODEL,
                        "metadata: unexpected key '" NAME_FMT "': a '%s' layer has no such field",
                        key, LAYER_TYPES[types[i]].name);
    }
    return RNX_OK;
}

/* Version 2: the layer types in order, then each layer's fields. */
static rnx_status read_layers_v2(const rnx_file *f, rnx_layer *layers, int max_layers,
                                 int *n_layers, char *message, size_t message_size) {
    meta_reader r = {f, -1, message, message_size};
    int n, width = 0;
    rnx_status s = meta_int(&r, "layers", 1, RNX_MAX_LAYERS, 0, &n);
    if (s != RNX_OK) return s;
    if (n > max_layers) return no_room(n, max_layers, message, message_size);
    int *types = malloc((size_t)n * sizeof *types);
    if (!types) return RNX_ERR_OUT_OF_MEMORY;
    for (int i = 0; s == RNX_OK && i < n; i++) {
        r.layer = i;
        if ((s = meta_choice(&r, "type", LAYER_TYPES, &types[i])) != RNX_OK) break;
        const int below = i ? TYPE_KINDS[types[i - 1]] : -1;
        if (!may_follow(TYPE_KINDS[types[i]], below))
            s = fail(message, message_size, RNX_ERR_FILE_MODEL,
                     "metadata: 'layer%d.type' is '%s', which cannot %s%s%s (the order is "
                     "[embedding | masking] recurrent+ [readout] dense*)", i,
                     LAYER_TYPES[types[i]].name, below < 0 ? "come first" : "follow ",
                     below < 0 ? "" : KIND_NAMES[below], below < 0 ? "" : " layer");
    }
    if (s == RNX_OK && (types[n - 1] == TYPE_EMBEDDING || types[n - 1] == TYPE_MASKING))
        s = fail(message, message_size, RNX_ERR_FILE_MODEL,
                 "metadata: 'layers' is '1', %s alone: expected recurrent layers above it",
                 types[n - 1] == TYPE_EMBEDDING ? "an embedding" : "a masking layer");
    if (s == RNX_OK) s = check_layer_keys(f, types, n, message, message_size);
    /* the first recurrent layer reads the embedding's vectors or the model's input_size features */
    r.layer = -1;
    if (s == RNX_OK && types[0] == TYPE_EMBEDDING && rnx_file_metadata_get(f, "input_size"))
        s = fail(message, message_size, RNX_ERR_FILE_MODEL,
                 "metadata: unexpected 'input_size': a model with an embedding takes token ids");
    if (s == RNX_OK && types[0] != TYPE_EMBEDDING) s = meta_size(&r, "input_size", &width);
    for (int i = 0; s == RNX_OK && i < n; i++) {
        r.layer = i;
        s = read_layer(&r, types[i], &width, &layers[i]);
    }
    free(types);
    if (s == RNX_OK) *n_layers = n;
    return s;
}

/* Version 1: a uniform stack of num_layers recurrent layers, and an optional head (output_size
 * units on the last valid step or on every step), which becomes a readout and a dense layer. */
static rnx_status read_layers_v1(const rnx_file *f, rnx_layer *layers, int max_layers,
                                 int *n_layers, char *message, size_t message_size) {
    const meta_reader r = {f, -1, message, message_size};
    int cell, input_size, hidden_size, num_layers, bidirectional, output_size = 0;
    int readout = RNX_READOUT_LAST, activation = RNX_ACT_LINEAR; /* many_to_one, no activation */
    rnx_status s = meta_choice(&r, "cell", V1_CELLS, &cell);
    if (s != RNX_OK) return s;
    const char *cell_name = rnx_file_metadata_get(f, "cell");
    if (rnx_file_metadata_get(f, "nonlinearity")) {
        int nonlinearity;
        if ((s = meta_choice(&r, "nonlinearity", NONLINEARITIES, &nonlinearity)) != RNX_OK)
            return s;
        if (nonlinearity == RNX_CELL_RNN_RELU && cell != RNX_CELL_RNN_TANH)
            return fail(message, message_size, RNX_ERR_FILE_MODEL,
                        "metadata: nonlinearity 'relu' is for the 'rnn' cell only, got cell '%s'",
                        cell_name);
        if (cell == RNX_CELL_RNN_TANH) cell = nonlinearity;
    }
    if (rnx_file_metadata_get(f, "linear_before_reset")) {
        int linear_before_reset;
        if (cell != RNX_CELL_GRU)
            return fail(message, message_size, RNX_ERR_FILE_MODEL,
                        "metadata: 'linear_before_reset' is for the 'gru' cell only, got cell '%s'",
                        cell_name);
        if ((s = meta_flag(&r, "linear_before_reset", &linear_before_reset)) != RNX_OK) return s;
        if (!linear_before_reset) cell = RNX_CELL_GRU_RESET_BEFORE;
    }
    /* room for the head's readout and dense layer within RNX_MAX_LAYERS */
    if ((s = meta_size(&r, "input_size", &input_size)) != RNX_OK ||
        (s = meta_size(&r, "hidden_size", &hidden_size)) != RNX_OK ||
        (s = meta_int(&r, "num_layers", 1, RNX_MAX_LAYERS - 2, 0, &num_layers)) != RNX_OK ||
        (s = meta_flag(&r, "bidirectional", &bidirectional)) != RNX_OK)
        return s;
    if (rnx_file_metadata_get(f, "output_size") &&
        ((s = meta_size(&r, "output_size", &output_size)) != RNX_OK ||
         (rnx_file_metadata_get(f, "output") &&
          (s = meta_choice(&r, "output", V1_OUTPUTS, &readout)) != RNX_OK) ||
         (rnx_file_metadata_get(f, "activation") &&
          (s = meta_choice(&r, "activation", V1_ACTIVATIONS, &activation)) != RNX_OK)))
        return s;
    /* the head's layers: a readout unless it runs on every step, and the dense layer */
    const int head = output_size ? 1 + (readout != RNX_READOUT_SEQUENCE) : 0, n = num_layers + head;
    if (n > max_layers) return no_room(n, max_layers, message, message_size);
    const rnx_direction direction =
        bidirectional ? RNX_DIRECTION_BIDIRECTIONAL : RNX_DIRECTION_FORWARD;
    for (int l = 0; l < num_layers; l++)
        layers[l] = rnx_recurrent_layer((rnx_cell)cell,
                                        l ? (1 + bidirectional) * hidden_size : input_size,
                                        hidden_size, direction);
    if (head == 2) layers[num_layers] = rnx_readout_layer((rnx_readout)readout);
    if (head)
        layers[n - 1] = rnx_dense_layer((1 + bidirectional) * hidden_size, output_size,
                                        (rnx_act)activation);
    *n_layers = n;
    return RNX_OK;
}

/* ---- the tensors a layer list has ---- */

/* Called for each parameter tensor of a layer list, in the order of rnx_model_create's params. */
typedef rnx_status (*param_visitor)(void *context, const char *name, const uint64_t *shape,
                                    int ndim);

static rnx_status visit_param(param_visitor visit, void *context, const char *name, uint64_t rows,
                              uint64_t columns) {
    const uint64_t shape[2] = {rows, columns};
    return visit(context, name, shape, columns ? 2 : 1);
}

/* Visits the parameters of layers[0 .. n): LAYERS.md's names, or with `head_names` (version 1)
 * the dense layer's as head.weight and head.bias. */
static rnx_status for_each_param(const rnx_layer *layers, int n, int head_names,
                                 param_visitor visit, void *context) {
    char name[64];
    rnx_status s = RNX_OK;
    for (int i = 0, k = 0, j = 0; s == RNX_OK && i < n; i++) {
        const rnx_layer *l = &layers[i];
        if (l->kind == RNX_LAYER_EMBEDDING)
            s = visit_param(visit, context, "embedding.weight", (uint64_t)l->input_size,
                            (uint64_t)l->units);
        if (l->kind == RNX_LAYER_DENSE) {
            const uint64_t O = (uint64_t)l->units;
            if (head_names) snprintf(name, sizeof name, "head.weight");
            else snprintf(name, sizeof name, "dense%d.weight", j);
            s = visit_param(visit, context, name, O, (uint64_t)l->input_size);
            if (head_names) snprintf(name, sizeof name, "head.bias");
            else snprintf(name, sizeof name, "dense%d.bias", j);
            if (s == RNX_OK) s = visit_param(visit, context, name, O, 0);
            j++;
        }
        if (l->kind != RNX_LAYER_RECURRENT) continue;
        const uint64_t H = (uint64_t)l->units, GH = (uint64_t)rnx_cell_gates(l->cell) * H,
                       P = (uint64_t)l->proj_size;
        const uint64_t shapes[6][2] = {{GH, (uint64_t)l->input_size}, {GH, P ? P : H}, {GH, 0},
                                       {GH, 0}, {P, H}, {3, H}};
        for (int d = 0; d < 1 + (l->direction == RNX_DIRECTION_BIDIRECTIONAL); d++)
            for (int kind = 0; s == RNX_OK && kind < 6; kind++) {
                if ((kind == 4 && !P) || (kind == 5 && !l->peepholes)) continue;
                snprintf(name, sizeof name, "%s_l%d%s", PARAM_KINDS[kind], k,
                         d || l->direction == RNX_DIRECTION_REVERSE ? "_reverse" : "");
                s = visit_param(visit, context, name, shapes[kind][0], shapes[kind][1]);
            }
        k++;
    }
    return s;
}

/* Checks that the file has each visited tensor with its shape, marking it in `seen`. */
typedef struct tensor_check {
    const rnx_file *file;
    unsigned char *seen;   /* (ntensors), by index in file->tensors */
    const char *precision; /* the file's metadata precision, or NULL (version 1: ignored) */
    char *message;
    size_t message_size;
} tensor_check;

/* I8 tensor t: a recurrent weight_ih or weight_hh of a file at precision int8, with its scales,
 * which it marks in `seen`. */
static rnx_status check_i8(tensor_check *c, const rnx_tensor_info *t) {
    int precision = RNX_PRECISION_FP32;
    if (strncmp(t->name, PARAM_KINDS[0], strlen(PARAM_KINDS[0])) &&
        strncmp(t->name, PARAM_KINDS[1], strlen(PARAM_KINDS[1])))
        return fail(c->message, c->message_size, RNX_ERR_FILE_DTYPE,
                    "tensor '%s': dtype I8 is for the recurrent weights (%s_l*, %s_l*) only",
                    t->name, PARAM_KINDS[0], PARAM_KINDS[1]);
    if (!c->precision || !text_choice(c->precision, PRECISIONS, &precision) ||
        precision != RNX_PRECISION_INT8)
        return fail(c->message, c->message_size, RNX_ERR_FILE_DTYPE,
                    "tensor '%s': dtype I8 needs metadata precision 'int8', got %s" NAME_FMT
                    "%s", t->name, c->precision ? "'" : "none", c->precision ? c->precision : "",
                    c->precision ? "'" : "");
    const rnx_tensor_info *scale;
    const rnx_status s = i8_scales(c->file, t, &scale, c->message, c->message_size);
    if (s == RNX_OK) c->seen[scale - c->file->tensors] = 1;
    return s;
}

static rnx_status check_param(void *context, const char *name, const uint64_t *shape, int ndim) {
    tensor_check *c = context;
    const rnx_tensor_info *t = rnx_file_find(c->file, name);
    char have[256], want[256];
    if (!t)
        return fail(c->message, c->message_size, RNX_ERR_FILE_MODEL, "missing tensor '%s'", name);
    if (t->ndim != ndim || memcmp(t->shape, shape, (size_t)ndim * sizeof *shape))
        return fail(c->message, c->message_size, RNX_ERR_FILE_MODEL,
                    "tensor '%s': expected shape %s, got %s", name,
                    shape_text(want, sizeof want, shape, ndim),
                    shape_text(have, sizeof have, t->shape, t->ndim));
    c->seen[t - c->file->tensors] = 1;
    return t->dtype == RNX_DTYPE_I8 ? check_i8(c, t) : RNX_OK;
}

/* The layers of a version 1 or 2 file, checked against its tensors; the version in *version. */
static rnx_status read_model_layers(const rnx_file *f, rnx_layer *layers, int max_layers,
                                    int *n_layers, int *version, char *message,
                                    size_t message_size) {
    const meta_reader r = {f, -1, message, message_size};
    const char *format = rnx_file_metadata_get(f, "format");
    if (!format)
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "metadata: missing 'format': not an rnnext model file");
    if (strcmp(format, "rnnext"))
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "metadata: 'format' is '" NAME_FMT "', expected 'rnnext': not an rnnext model "
                    "file", format);
    rnx_status s = meta_int(&r, "format_version", 1, 0x7fffffff, 0, version);
    if (s != RNX_OK) return s;
    if (*version > RNX_FILE_FORMAT_VERSION)
        return fail(message, message_size, RNX_ERR_FILE_VERSION,
                    "metadata: format_version %d is newer than this library's (%d): upgrade rnnext",
                    *version, RNX_FILE_FORMAT_VERSION);
    s = *version == 1 ? read_layers_v1(f, layers, max_layers, n_layers, message, message_size)
                      : read_layers_v2(f, layers, max_layers, n_layers, message, message_size);
    if (s != RNX_OK) return s;
    tensor_check check = {f, calloc(f->ntensors + 1, 1),
                          *version >= 2 ? rnx_file_metadata_get(f, "precision") : NULL, message,
                          message_size};
    if (!check.seen) return RNX_ERR_OUT_OF_MEMORY;
    s = for_each_param(layers, *n_layers, *version == 1, check_param, &check);
    for (size_t i = 0; s == RNX_OK && i < f->ntensors; i++)
        if (!check.seen[i])
            s = fail(message, message_size, RNX_ERR_FILE_MODEL,
                     "unexpected tensor '" NAME_FMT "': the model's layers have no such parameter",
                     f->tensors[i].name);
    free(check.seen);
    return s;
}

rnx_status rnx_file_model_layers(const rnx_file *file, rnx_layer *layers, int max_layers,
                                 int *n_layers, char *message, size_t message_size) {
    if (message && message_size) message[0] = '\0';
    if (!file || !layers || !n_layers) return RNX_ERR_NULL_ARGUMENT;
    int version;
    return read_model_layers(file, layers, max_layers, n_layers, &version, message, message_size);
}

/* Reads each visited tensor, as float32, into the next floats of `params`. */
typedef struct param_reader {
    const rnx_file *file;
    float *next;
    size_t left; /* floats of params not yet filled */
} param_reader;

static rnx_status read_param(void *context, const char *name, const uint64_t *shape, int ndim) {
    param_reader *r = context;
    const rnx_tensor_info *t = rnx_file_find(r->file, name); /* checked to exist with this shape */
    const size_t count = (size_t)(t->nbytes / DTYPES[t->dtype].size);
    (void)shape, (void)ndim;
    /* rnx_param_count and LAYERS.md's tensors must agree, or create would read past params */
    if (count > r->left) return RNX_ERR_BAD_CONFIG;
    rnx_status s = rnx_file_read_f32(r->file, t, r->next, count);
    r->next += count;
    r->left -= count;
    return s;
}

rnx_status rnx_model_load(rnx_model **out, const void *data, size_t size, int isa, char *message,
                          size_t message_size) {
    if (message && message_size) message[0] = '\0';
    if (!out) return RNX_ERR_NULL_ARGUMENT;
    *out = NULL;
    rnx_file *f = NULL;
    rnx_layer *layers = malloc(RNX_MAX_LAYERS * sizeof *layers);
    int n = 0, version = 0;
    size_t count = 0, bytes = 0;
    float *params = NULL;
    rnx_status s = layers ? RNX_OK : RNX_ERR_OUT_OF_MEMORY;
    if (s == RNX_OK) s = rnx_file_parse(&f, data, size, message, message_size);
    if (s == RNX_OK)
        s = read_model_layers(f, layers, RNX_MAX_LAYERS, &n, &version, message, message_size);
    if (s == RNX_OK) s = rnx_param_count(layers, n, &count);
    if (s == RNX_OK && __builtin_mul_overflow(count, sizeof(float), &bytes)) s = RNX_ERR_OVERFLOW;
    if (s == RNX_OK && !(params = malloc(bytes ? bytes : 1))) s = RNX_ERR_OUT_OF_MEMORY;
    param_reader reader = {f, params, count};
    if (s == RNX_OK) s = for_each_param(layers, n, version == 1, read_param, &reader);
    if (s == RNX_OK && reader.left) s = RNX_ERR_BAD_CONFIG;
    int precision = RNX_PRECISION_FP32;
    const meta_reader top = {f, -1, message, message_size};
    if (s == RNX_OK && version >= 2 && rnx_file_metadata_get(f, "precision"))
        s = meta_choice(&top, "precision", PRECISIONS, &precision);
    if (s == RNX_OK) s = rnx_model_create_precision(out, layers, n, isa, precision, params);
    if (s == RNX_ERR_BAD_CONFIG) /* the list is valid as a file; the core names no field */
        fail(message, message_size, s, "metadata: the layers are not a model this library builds "
             "(%s)", rnx_status_string(s));
    if (s != RNX_OK && message && message_size && !message[0])
        fail(message, message_size, s, "%s", rnx_status_string(s));
    free(params);
    free(layers);
    rnx_file_free(f);
    return s;
}
