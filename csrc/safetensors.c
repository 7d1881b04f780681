/* safetensors.c: the file format (see "Files" in rnnext.h). A strict parser of safetensors
 * headers, the checks of every tensor's byte range, reading tensors as float32, and building a
 * model from a file's metadata and tensors.
 *
 * The parser only accepts the JSON a safetensors header holds (an object of tensor entries and
 * one string-to-string metadata object), so it needs no recursion. It reads only inside the
 * buffer it is given, and every size it computes from the file is overflow-checked. */
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
} DTYPES[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}};
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
                                "BF16, F64", t->info.name, dtype);
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

const rnx_tensor_info *rnx_file_find(const rnx_file *file, const char *name) {
    if (!file || !name || !file->ntensors) return NULL;
    rnx_tensor_info key = {.name = name};
    const rnx_tensor_info *kp = &key;
    const rnx_tensor_info **hit =
        bsearch(&kp, file->by_name, file->ntensors, sizeof *file->by_name, by_name);
    return hit ? *hit : NULL;
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

rnx_status rnx_file_read_f32(const rnx_file *file, const rnx_tensor_info *tensor, float *out,
                             size_t count) {
    if (!file || !tensor || (!out && count)) return RNX_ERR_NULL_ARGUMENT;
    if (tensor < file->tensors || tensor >= file->tensors + file->ntensors)
        return RNX_ERR_BAD_ARGUMENT;
    const size_t width = DTYPES[tensor->dtype].size;
    if (tensor->nbytes / width != count) return RNX_ERR_BAD_ARGUMENT;
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
        }
    }
    return RNX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Model files
 * ------------------------------------------------------------------------------------------- */

static const char *const PARAM_KINDS[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};

/* A decimal integer in [1, INT_MAX] (or [0, 1] when `flag`), from metadata `key`. */
static rnx_status meta_int(const rnx_file *f, const char *key, int flag, int *out, char *message,
                           size_t message_size) {
    const char *text = rnx_file_metadata_get(f, key);
    if (!text)
        return fail(message, message_size, RNX_ERR_FILE_MODEL, "metadata: missing '%s'", key);
    uint64_t v = 0;
    const char *c = text;
    for (; *c >= '0' && *c <= '9' && v <= 0x7FFFFFFF; c++) v = v * 10 + (uint64_t)(*c - '0');
    const int ok = c != text && !*c && (c - text == 1 || text[0] != '0') &&
                   (flag ? v <= 1 : (v >= 1 && v <= 0x7FFFFFFF));
    if (!ok)
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "metadata: '%s' is '" NAME_FMT "', expected %s", key, text,
                    flag ? "'0' or '1'" : "a decimal integer in [1, 2147483647]");
    *out = (int)v;
    return RNX_OK;
}

/* The layer list of a version-1 architecture (its recurrent layers; the head is the Python
 * package's), in a new array *out. */
static rnx_status config_layers(const rnx_config *c, rnx_layer **out) {
    *out = NULL;
    if (c->num_layers > RNX_MAX_LAYERS) return RNX_ERR_BAD_CONFIG;
    rnx_layer *layers = malloc((size_t)c->num_layers * sizeof *layers);
    if (!layers) return RNX_ERR_OUT_OF_MEMORY;
    const int D = 1 + c->bidirectional;
    for (int l = 0; l < c->num_layers; l++)
        layers[l] = rnx_recurrent_layer((rnx_cell)c->cell, l ? D * c->hidden_size : c->input_size,
                                        c->hidden_size,
                                        D == 2 ? RNX_DIRECTION_BIDIRECTIONAL : RNX_DIRECTION_FORWARD);
    *out = layers;
    return RNX_OK;
}

/* The architecture in the metadata, without the tensors. */
static rnx_status read_architecture(const rnx_file *f, rnx_config *c, int *output_size,
                                    char *message, size_t message_size) {
    const char *format = rnx_file_metadata_get(f, "format");
    if (!format)
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "metadata: missing 'format': not an rnnext model file");
    if (strcmp(format, "rnnext"))
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "metadata: 'format' is '" NAME_FMT "', expected 'rnnext': not an rnnext model "
                    "file", format);
    const char *version = rnx_file_metadata_get(f, "format_version");
    int v;
    rnx_status s = meta_int(f, "format_version", 0, &v, message, message_size);
    if (s != RNX_OK) return s;
    if (v > RNX_FILE_FORMAT_VERSION)
        return fail(message, message_size, RNX_ERR_FILE_VERSION,
                    "metadata: format_version %s is newer than this library's (%d): upgrade rnnext",
                    version, RNX_FILE_FORMAT_VERSION);

    const char *cell = rnx_file_metadata_get(f, "cell");
    const char *nonlinearity = rnx_file_metadata_get(f, "nonlinearity");
    const int relu = nonlinearity && !strcmp(nonlinearity, "relu");
    if (nonlinearity && !relu && strcmp(nonlinearity, "tanh"))
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "metadata: 'nonlinearity' is '" NAME_FMT "', expected 'tanh' or 'relu'",
                    nonlinearity);
    if (cell && !strcmp(cell, "rnn")) c->cell = relu ? RNX_CELL_RNN_RELU : RNX_CELL_RNN_TANH;
    else if (cell && !strcmp(cell, "lstm")) c->cell = RNX_CELL_LSTM;
    else if (cell && !strcmp(cell, "gru")) c->cell = RNX_CELL_GRU;
    else if (!cell)
        return fail(message, message_size, RNX_ERR_FILE_MODEL, "metadata: missing 'cell'");
    else
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "metadata: 'cell' is '" NAME_FMT "', expected 'rnn', 'lstm' or 'gru'", cell);
    if (relu && c->cell != RNX_CELL_RNN_RELU)
        return fail(message, message_size, RNX_ERR_FILE_MODEL,
                    "metadata: nonlinearity 'relu' is for the 'rnn' cell only, got cell '%s'", cell);
    if (rnx_file_metadata_get(f, "linear_before_reset")) {
        int linear_before_reset;
        if (c->cell != RNX_CELL_GRU)
            return fail(message, message_size, RNX_ERR_FILE_MODEL,
                        "metadata: 'linear_before_reset' is for the 'gru' cell only, got cell '%s'",
                        cell);
        if ((s = meta_int(f, "linear_before_reset", 1, &linear_before_reset, message,
                          message_size)) != RNX_OK)
            return s;
        if (!linear_before_reset) c->cell = RNX_CELL_GRU_RESET_BEFORE;
    }

    int bidirectional;
    if ((s = meta_int(f, "input_size", 0, &c->input_size, message, message_size)) != RNX_OK ||
        (s = meta_int(f, "hidden_size", 0, &c->hidden_size, message, message_size)) != RNX_OK ||
        (s = meta_int(f, "num_layers", 0, &c->num_layers, message, message_size)) != RNX_OK ||
        (s = meta_int(f, "bidirectional", 1, &bidirectional, message, message_size)) != RNX_OK)
        return s;
    c->bidirectional = bidirectional;
    c->isa = RNX_ISA_AUTO;
    *output_size = 0;
    if (rnx_file_metadata_get(f, "output_size") &&
        (s = meta_int(f, "output_size", 0, output_size, message, message_size)) != RNX_OK)
        return s;
    size_t count;
    rnx_layer *layers = NULL;
    if ((s = config_layers(c, &layers)) == RNX_OK) s = rnx_param_count(layers, c->num_layers, &count);
    free(layers);
    if (s != RNX_OK)
        return fail(message, message_size, s, "metadata: the architecture's size overflows");
    return RNX_OK;
}

/* The name of recurrent parameter `kind` (0..3) of layer l and direction d into buf. */
static const char *param_name(char *buf, size_t size, int kind, int l, int d) {
    snprintf(buf, size, "%s_l%d%s", PARAM_KINDS[kind], l, d ? "_reverse" : "");
    return buf;
}

/* The shape tensor `name` must have in a model of c with a head of output_size (0: none), in
 * shape and *ndim; 0 when the model has no such tensor. */
static int expected_shape(const rnx_config *c, int output_size, const char *name, uint64_t *shape,
                          int *ndim) {
    const uint64_t D = 1 + (uint64_t)c->bidirectional, H = (uint64_t)c->hidden_size;
    if (output_size && (!strcmp(name, "head.weight") || !strcmp(name, "head.bias"))) {
        shape[0] = (uint64_t)output_size;
        shape[1] = D * H;
        *ndim = name[5] == 'w' ? 2 : 1;
        return 1;
    }
    for (int kind = 0; kind < 4; kind++) {
        const size_t len = strlen(PARAM_KINDS[kind]);
        if (strncmp(name, PARAM_KINDS[kind], len) || strncmp(name + len, "_l", 2)) continue;
        const char *digits = name + len + 2;
        uint64_t l = 0;
        const char *e = digits;
        for (; *e >= '0' && *e <= '9' && l < (uint64_t)c->num_layers; e++) l = l * 10 + (uint64_t)(*e - '0');
        const int d = !strcmp(e, "_reverse");
        if (e == digits || l >= (uint64_t)c->num_layers || (d && !c->bidirectional) || (!d && *e))
            return 0;
        char canonical[64];
        if (strcmp(name, param_name(canonical, sizeof canonical, kind, (int)l, d))) return 0;
        shape[0] = (uint64_t)rnx_cell_gates(c->cell) * H;
        shape[1] = kind == 1 ? H : l == 0 ? (uint64_t)c->input_size : D * H;
        *ndim = kind < 2 ? 2 : 1;
        return 1;
    }
    return 0;
}

rnx_status rnx_file_model_config(const rnx_file *file, rnx_config *config, int *output_size,
                                 char *message, size_t message_size) {
    if (message && message_size) message[0] = '\0';
    if (!file || !config) return RNX_ERR_NULL_ARGUMENT;
    rnx_config c = {0};
    int out_size;
    rnx_status s = read_architecture(file, &c, &out_size, message, message_size);
    if (s != RNX_OK) return s;
    char have[256], want[256];
    for (size_t i = 0; i < file->ntensors; i++) {
        const rnx_tensor_info *t = &file->tensors[i];
        uint64_t shape[2];
        int ndim;
        if (!expected_shape(&c, out_size, t->name, shape, &ndim))
            return fail(message, message_size, RNX_ERR_FILE_MODEL,
                        "unexpected tensor '" NAME_FMT "': the model's architecture has no such "
                        "parameter", t->name);
        if (t->ndim != ndim || memcmp(t->shape, shape, (size_t)ndim * sizeof *shape))
            return fail(message, message_size, RNX_ERR_FILE_MODEL,
                        "tensor '" NAME_FMT "': expected shape %s, got %s", t->name,
                        shape_text(want, sizeof want, shape, ndim),
                        shape_text(have, sizeof have, t->shape, t->ndim));
    }
    /* Every tensor is an expected one and names are unique, so a short count means a missing
     * tensor: the first absent name is found within ntensors + 1 probes. */
    const int D = 1 + c.bidirectional;
    for (int l = 0; l < c.num_layers; l++)
        for (int d = 0; d < D; d++)
            for (int kind = 0; kind < 4; kind++)
                if (!rnx_file_find(file, param_name(want, sizeof want, kind, l, d)))
                    return fail(message, message_size, RNX_ERR_FILE_MODEL,
                                "missing tensor '%s'", want);
    if (out_size && (!rnx_file_find(file, "head.weight") || !rnx_file_find(file, "head.bias")))
        return fail(message, message_size, RNX_ERR_FILE_MODEL, "missing tensor '%s'",
                    rnx_file_find(file, "head.weight") ? "head.bias" : "head.weight");
    *config = c;
    if (output_size) *output_size = out_size;
    return RNX_OK;
}

rnx_status rnx_model_load(rnx_model **out, const void *data, size_t size, int isa, char *message,
                          size_t message_size) {
    if (!out) return RNX_ERR_NULL_ARGUMENT;
    *out = NULL;
    rnx_file *f = NULL;
    rnx_config c;
    rnx_layer *layers = NULL;
    size_t count, bytes;
    float *params = NULL;
    rnx_status s = rnx_file_parse(&f, data, size, message, message_size);
    if (s == RNX_OK) s = rnx_file_model_config(f, &c, NULL, message, message_size);
    if (s == RNX_OK) s = config_layers(&c, &layers);
    if (s == RNX_OK) s = rnx_param_count(layers, c.num_layers, &count);
    if (s == RNX_OK && __builtin_mul_overflow(count, sizeof(float), &bytes)) s = RNX_ERR_OVERFLOW;
    if (s == RNX_OK && !(params = malloc(bytes ? bytes : 1))) s = RNX_ERR_OUT_OF_MEMORY;
    float *dst = params;
    char name[64];
    for (int l = 0; s == RNX_OK && l < c.num_layers; l++)
        for (int d = 0; s == RNX_OK && d <= c.bidirectional; d++)
            for (int kind = 0; s == RNX_OK && kind < 4; kind++) {
                const rnx_tensor_info *t = rnx_file_find(f, param_name(name, sizeof name, kind, l, d));
                const size_t n = t->nbytes / (DTYPES[t->dtype].size);
                s = rnx_file_read_f32(f, t, dst, n);
                dst += n;
            }
    if (s == RNX_OK) s = rnx_model_create(out, layers, c.num_layers, isa, params);
    if (s != RNX_OK && message && message_size && !message[0])
        fail(message, message_size, s, "%s", rnx_status_string(s));
    free(layers);
    free(params);
    rnx_file_free(f);
    return s;
}
