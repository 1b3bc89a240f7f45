/*
 * udpupper._transform: upper-case an ASCII payload eight bytes at a time.
 *
 * bytes.upper() looks every byte up in a table, one at a time: at 1,400
 * bytes that was a fifth of the daemon's time.  This does the same for
 * ASCII, eight bytes a step, and says when the payload is not ASCII, in the
 * same pass (at 64 KiB, where the payload is no longer in the CPU's caches,
 * a pass of its own to look was a quarter of the daemon's time), so that
 * transform.upper can take its UTF-8 path instead.
 *
 * upper_ascii(payload: bytes) -> bytes | None
 *     payload.upper() when payload.isascii(), else None.
 * portable_upper_ascii(payload: bytes) -> bytes | None
 *     the same, never with AVX2: what a CPU without it runs (for the tests).
 * upper(payload: bytes) -> bytes
 *     transform.python_upper: upper_ascii, else str.upper() on the payload
 *     decoded with surrogateescape.  The daemon's transform, called for
 *     every datagram: a Python function around upper_ascii was a frame more
 *     (docs/performance.md has what it cost).
 *
 * On x86-64 the block loop is built twice, once for AVX2 (32 bytes a step
 * where the baseline's SSE2 takes 16), and the one the CPU can run chosen
 * when the module loads; INSTRUCTIONS says which (docs/performance.md has
 * what it saves).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define HIGH_BITS 0x8080808080808080ULL
#define LOW_SEVEN 0x7f7f7f7f7f7f7f7fULL
#define ONES 0x0101010101010101ULL
#define BLOCK 256 /* bytes upper-cased between two looks for a non-ASCII byte */

/* Eight ASCII bytes, upper-cased: in each byte, 'a' <= b <= 'z' sets bit 7
 * of (b + 0x80 - 'a') and not of (b + 0x80 - 'z' - 1); no byte carries into
 * the next, for none is above 0x7f. */
static inline uint64_t upper8(uint64_t word)
{
    uint64_t from_a = word + ONES * (0x80 - 'a');
    uint64_t past_z = word + ONES * (0x80 - 'z' - 1);
    return word ^ (((from_a & ~past_z) & HIGH_BITS) >> 2);
}

/* The first `words` bytes (a multiple of eight), upper-cased from `in` to
 * `out` a block at a time, given up at the end of the first block that was
 * not ASCII (the loop within a block has no exit, so that the compiler can
 * make it wider than eight bytes); every byte looked at, OR-ed. */
static inline __attribute__((always_inline)) uint64_t
upper_words(const unsigned char *in, unsigned char *out, Py_ssize_t words)
{
    uint64_t seen = 0, word;
    Py_ssize_t i;

    for (i = 0; i < words;) {
        Py_ssize_t end = i + BLOCK < words ? i + BLOCK : words;
        for (; i < end; i += 8) {
            memcpy(&word, in + i, 8);
            seen |= word;
            word = upper8(word);
            memcpy(out + i, &word, 8);
        }
        if (seen & HIGH_BITS)
            break;
    }
    return seen;
}

typedef uint64_t (*words_function)(const unsigned char *, unsigned char *, Py_ssize_t);

static uint64_t portable_words(const unsigned char *in, unsigned char *out, Py_ssize_t words)
{
    return upper_words(in, out, words);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define WIDE_WORDS 1
__attribute__((target("avx2"))) static uint64_t
avx2_words(const unsigned char *in, unsigned char *out, Py_ssize_t words)
{
    return upper_words(in, out, words);
}
#endif

static words_function best_words = portable_words; /* set when the module loads */

static PyObject *upper_with(words_function words_of, PyObject *payload)
{
    const unsigned char *in;
    unsigned char *out;
    Py_ssize_t size, words, i;
    uint64_t seen;
    PyObject *result;

    if (!PyBytes_CheckExact(payload)) {
        PyErr_SetString(PyExc_TypeError, "the payload must be bytes");
        return NULL;
    }
    in = (const unsigned char *)PyBytes_AS_STRING(payload);
    size = PyBytes_GET_SIZE(payload);
    if (!(result = PyBytes_FromStringAndSize(NULL, size)))
        return NULL;
    out = (unsigned char *)PyBytes_AS_STRING(result);
    words = size - size % 8;
    seen = words_of(in, out, words);
    for (i = words; i < size && !(seen & HIGH_BITS); i++) {
        seen |= in[i];
        out[i] = (unsigned char)(in[i] - ((unsigned)(in[i] - 'a') < 26u ? 32 : 0));
    }
    if (seen & HIGH_BITS) {
        Py_DECREF(result);
        Py_RETURN_NONE;
    }
    return result;
}

static PyObject *upper_ascii(PyObject *module, PyObject *payload)
{
    return upper_with(best_words, payload);
}

static PyObject *portable_upper_ascii(PyObject *module, PyObject *payload)
{
    return upper_with(portable_words, payload);
}

static PyObject *upper(PyObject *module, PyObject *payload)
{
    PyObject *result, *text, *upper_text;

    if ((result = upper_with(best_words, payload)) != Py_None)
        return result; /* upper-cased, or NULL: not bytes, or no memory */
    Py_DECREF(result);
    /* Not ASCII: as transform.python_upper, through str. */
    text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                                "surrogateescape");
    if (!text)
        return NULL;
    upper_text = PyObject_CallMethod(text, "upper", NULL);
    Py_DECREF(text);
    if (!upper_text)
        return NULL;
    result = PyUnicode_AsEncodedString(upper_text, "utf-8", "surrogateescape");
    Py_DECREF(upper_text);
    return result;
}

static PyMethodDef methods[] = {
    {"upper", upper, METH_O,
     "upper(payload) -> payload upper-cased as UTF-8 text, other bytes kept as they are"},
    {"upper_ascii", upper_ascii, METH_O,
     "upper_ascii(payload) -> payload.upper() if payload.isascii() else None"},
    {"portable_upper_ascii", portable_upper_ascii, METH_O,
     "upper_ascii without AVX2, as a CPU without it runs it (for the tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "udpupper._transform",
    "Upper-case an ASCII payload eight bytes at a time.", -1, methods,
};

PyMODINIT_FUNC PyInit__transform(void)
{
    PyObject *created = PyModule_Create(&module);
    const char *width = "portable";

#ifdef WIDE_WORDS
    width = "SSE2"; /* x86-64's baseline */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        best_words = avx2_words;
        width = "AVX2";
    }
#endif
    if (created && PyModule_AddStringConstant(created, "INSTRUCTIONS", width) < 0)
        Py_CLEAR(created);
    return created;
}
