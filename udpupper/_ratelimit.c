/*
 * udpupper._ratelimit: udpupper.ratelimit.RateLimiter, in C.
 *
 * The same class, the same arguments, the same answers (the tests run both
 * on one table of cases); only the table differs.  A flood of spoofed
 * sources looks up a prefix the CPU's caches have long let go for every
 * datagram, and a Python dict's look-up is a chain of four cache misses
 * (index, entry, key object, value object).  Here a key is one 16-byte slot
 * of an open-addressed array, its hash and its bucket side by side: one
 * miss.  A key is known by its hash alone, as the loop breaker's table
 * knows a request: Python's hash of bytes and str is SipHash with a key of
 * the process's own, and two of the 65,536 prefixes of a full table share a
 * 64-bit hash about once in 10^10 tables (they would then share a bucket).
 *
 * Where a key's probe starts is its hash times a random odd multiplier of
 * each table's own (multiply-shift hashing): which prefixes share a run of
 * slots cannot be chosen from outside, even where Python's hash is not
 * randomized (PYTHONHASHSEED=0).
 *
 * The two generations of ratelimit.py are two arrays of twice `size` slots
 * (at most half full, so a look-up probes little more than one slot): a key
 * seen is in `recent`, or is copied there from `older`; when `recent` holds
 * `size` keys the arrays swap and the new `recent` is cleared.  16 bytes a
 * slot, four slots a key: 4 MiB at the default 65,536 keys.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>
#include <sys/random.h>

typedef struct {
    uint64_t hash; /* the key's Python hash plus one; 0: a free slot */
    double full_at;
} slot;

typedef struct {
    PyObject_HEAD
    double rate, burst, new_rate;
    double interval, depth, limit, new_interval, new_limit, new_full_at;
    Py_ssize_t size;
    slot *recent, *older;
    Py_ssize_t recent_count, older_count, copied; /* copied: from older */
    uint64_t mask, multiplier;
    int shift;
} Limiter;

/* The slot of `hash` in `table`, or the free slot where it would go
 * (multiply-shift, then linear probing). */
static inline slot *find(const Limiter *self, slot *table, uint64_t hash)
{
    uint64_t at = (hash * self->multiplier) >> self->shift;

    while (table[at].hash && table[at].hash != hash)
        at = (at + 1) & self->mask;
    return &table[at];
}

static uint64_t stored_hash(PyObject *key, int *error)
{
    Py_hash_t hash = PyObject_Hash(key);

    *error = hash == -1;
    return (uint64_t)hash + 1; /* never 0: a Python hash is never -1 */
}

/* A float as Python's f"{value:g}" writes it, for the error messages. */
static PyObject *format_g(double value)
{
    char *text = PyOS_double_to_string(value, 'g', 6, 0, NULL);
    PyObject *result;

    if (!text)
        return NULL;
    result = PyUnicode_FromString(text);
    PyMem_Free(text);
    return result;
}

static int bad_setting(const char *what, double value)
{
    PyObject *text = format_g(value);

    if (text) {
        PyErr_Format(PyExc_ValueError, what, text);
        Py_DECREF(text);
    }
    return -1;
}

static int limiter_init(Limiter *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"rate", "burst", "size", "new_rate", NULL};
    double rate, burst, new_rate = 0.0;
    Py_ssize_t size = 65536, capacity = 8;
    int bits = 3;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "dd|nd", names, &rate, &burst, &size,
                                     &new_rate))
        return -1;
    if (!(rate > 0))
        return bad_setting("rate must be more than 0, not %U", rate);
    if (!(burst >= 1))
        return bad_setting("burst must be 1 or more, not %U", burst);
    if (size < 1) {
        PyErr_Format(PyExc_ValueError, "size must be 1 or more, not %zd", size);
        return -1;
    }
    if (!(new_rate >= 0))
        return bad_setting("new_rate must be 0 or more, not %U", new_rate);
    if (size > PY_SSIZE_T_MAX / (4 * (Py_ssize_t)sizeof(slot))) {
        PyErr_NoMemory(); /* two arrays of twice that many slots */
        return -1;
    }
    while (capacity < 2 * size) {
        capacity <<= 1;
        bits++;
    }
    PyMem_RawFree(self->recent);
    PyMem_RawFree(self->older);
    self->recent = PyMem_RawCalloc((size_t)capacity, sizeof(slot));
    self->older = PyMem_RawCalloc((size_t)capacity, sizeof(slot));
    if (!self->recent || !self->older) {
        PyErr_NoMemory();
        return -1;
    }
    self->rate = rate;
    self->burst = burst;
    self->new_rate = new_rate;
    self->size = size;
    self->interval = 1.0 / rate;
    self->depth = burst * self->interval;
    self->limit = self->depth - self->interval * 0.999;
    self->new_interval = new_rate ? 1.0 / new_rate : 0.0;
    self->new_limit = 1.0 - self->new_interval * 0.999;
    self->new_full_at = 0.0;
    self->recent_count = self->older_count = self->copied = 0;
    self->mask = (uint64_t)capacity - 1;
    self->shift = 64 - bits;
    if (getentropy(&self->multiplier, sizeof(self->multiplier)) != 0)
        self->multiplier = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)self; /* no entropy */
    self->multiplier |= 1; /* odd: every bit of the hash counts */
    return 0;
}

static void limiter_dealloc(Limiter *self)
{
    PyMem_RawFree(self->recent);
    PyMem_RawFree(self->older);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ratelimit.py's allow(), step for step. */
static PyObject *limiter_allow(Limiter *self, PyObject *const *given, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    static const char *const names[] = {"key", "now"};
    PyObject *args[2] = {NULL, NULL};
    Py_ssize_t i, count = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    double now, full_at;
    uint64_t hash;
    int error;
    slot *found;

    /* allow(key, now), either by keyword too. */
    for (i = 0; i < nargs && i < 2; i++)
        args[i] = given[i];
    for (i = 0; i < count && nargs <= 2; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        int which = PyUnicode_CompareWithASCIIString(name, names[0]) == 0   ? 0
                    : PyUnicode_CompareWithASCIIString(name, names[1]) == 0 ? 1
                                                                            : -1;
        if (which < 0 || args[which]) {
            PyErr_Format(PyExc_TypeError, "allow() got an unexpected or repeated argument %R",
                         name);
            return NULL;
        }
        args[which] = given[nargs + i];
    }
    if (nargs > 2 || !args[0] || !args[1]) {
        PyErr_SetString(PyExc_TypeError, "allow() takes 2 arguments: key and now");
        return NULL;
    }
    if (!self->recent) {
        PyErr_SetString(PyExc_ValueError, "RateLimiter.__init__ was not called");
        return NULL;
    }
    now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    hash = stored_hash(args[0], &error);
    if (error)
        return NULL;
    found = find(self, self->recent, hash);
    if (found->hash == hash) {
        full_at = found->full_at; /* the hot path: one slot */
    } else {
        slot *old = find(self, self->older, hash);
        if (old->hash == hash) {
            full_at = old->full_at; /* copied; the old copy goes with its generation */
            self->copied++;
        } else {
            if (self->new_interval) {
                double new_full_at = self->new_full_at;
                if (new_full_at < now)
                    new_full_at = now;
                else if (new_full_at > now + 1.0)
                    new_full_at = now + 1.0; /* the clock stepped back */
                if (new_full_at - now > self->new_limit) {
                    self->new_full_at = new_full_at;
                    Py_RETURN_NONE;
                }
                self->new_full_at = new_full_at + self->new_interval;
            }
            full_at = now; /* a new key has a full bucket */
        }
        if (self->recent_count >= self->size) {
            /* A generation is full: the one before it is forgotten. */
            slot *cleared = self->older;
            memset(cleared, 0, (size_t)(self->mask + 1) * sizeof(slot));
            self->older = self->recent;
            self->older_count = self->recent_count;
            self->recent = cleared;
            self->recent_count = self->copied = 0;
            found = find(self, self->recent, hash);
        }
        found->hash = hash;
        self->recent_count++;
    }
    if (full_at < now)
        full_at = now; /* full: tokens beyond the burst are not kept */
    else if (full_at > now + self->depth)
        full_at = now + self->depth; /* the clock stepped back: empty, from now */
    if (full_at - now > self->limit) {
        found->full_at = full_at;
        Py_RETURN_FALSE; /* less than one token left */
    }
    found->full_at = full_at + self->interval;
    Py_RETURN_TRUE;
}

static int limiter_contains(Limiter *self, PyObject *key)
{
    int error;
    uint64_t hash = stored_hash(key, &error);

    if (error)
        return -1;
    if (!self->recent)
        return 0;
    return find(self, self->recent, hash)->hash == hash
           || find(self, self->older, hash)->hash == hash;
}

static Py_ssize_t limiter_length(Limiter *self)
{
    return self->recent_count + self->older_count - self->copied;
}

static PyMethodDef limiter_methods[] = {
    {"allow", (PyCFunction)(void (*)(void))limiter_allow, METH_FASTCALL | METH_KEYWORDS,
     "allow(key, now) -> True, False, or None for a new key beyond the new keys' rate"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef limiter_members[] = {
    {"rate", T_DOUBLE, offsetof(Limiter, rate), READONLY, "tokens a second per key"},
    {"burst", T_DOUBLE, offsetof(Limiter, burst), READONLY, "tokens a bucket holds"},
    {"size", T_PYSSIZET, offsetof(Limiter, size), READONLY, "keys a generation holds"},
    {"new_rate", T_DOUBLE, offsetof(Limiter, new_rate), READONLY,
     "new keys taken in a second, all together (0: no limit)"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods limiter_sequence = {
    .sq_length = (lenfunc)limiter_length,
    .sq_contains = (objobjproc)limiter_contains,
};

static PyTypeObject LimiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpupper._ratelimit.RateLimiter",
    .tp_doc = "Decides, key by key, whether one more token may be spent now.",
    .tp_basicsize = sizeof(Limiter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)limiter_init,
    .tp_dealloc = (destructor)limiter_dealloc,
    .tp_methods = limiter_methods,
    .tp_members = limiter_members,
    .tp_as_sequence = &limiter_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "udpupper._ratelimit",
    "udpupper.ratelimit.RateLimiter in C: one cache line a look-up.", -1, NULL,
};

PyMODINIT_FUNC PyInit__ratelimit(void)
{
    PyObject *m;

    if (PyType_Ready(&LimiterType) < 0 || !(m = PyModule_Create(&module)))
        return NULL;
    if (PyModule_AddObjectRef(m, "RateLimiter", (PyObject *)&LimiterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
