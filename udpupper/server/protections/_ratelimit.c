/*
 * udpupper.server.protections._ratelimit: udpupper.server.protections.ratelimit.RateLimiter, in C.
 *
 * The same class, the same arguments, the same answers (the tests run both
 * on one table of cases); only the tables differ.  A flood of spoofed
 * sources looks up a prefix the CPU's caches have long let go for every
 * datagram, and a Python dict's look-up is a chain of four cache misses
 * (index, entry, key object, value object).  Here a key is one 16-byte slot
 * of an open-addressed array, its hash and its bucket side by side: one
 * miss.  A key is known by its hash alone, as the loop breaker's table
 * knows a request: Python's hash of bytes and str is SipHash with a key of
 * the process's own, and two of the 65,536 prefixes of a full table share a
 * 64-bit hash about once in 10^10 tables (they would then share a bucket).
 *
 * The tables are _table.h's: multiply-shift on a random odd multiplier,
 * then linear probing, at most half full.
 *
 * The two generations of ratelimit.py are two arrays of twice `size` slots: a key
 * seen is in `recent`, or is copied there from `older`; when `recent` holds
 * `size` keys the arrays swap and the new `recent` is cleared.  16 bytes a
 * slot, four slots a key: 4 MiB at the default 65,536 keys.
 *
 * The keys on trial are two more arrays the same way, of twice `trial`
 * slots of 24 bytes (the bucket and the datagrams from addresses that asked
 * before); a key that settles leaves them (backward-shift deletion), so
 * each key is in one place.  3 MiB at the default 65,536.
 *
 * The senders on probation are two more arrays of twice `probation`
 * hashes, 8 bytes each, that swap the same way, and every PROBATION_TIME
 * seconds too: 8 MiB at the least, 262,144 entries a generation.
 *
 * PROBATION_TIME, SETTLE_HITS and SETTLE_TIME are ratelimit.py's, read
 * from it when the first table is made.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#include "_table.h"

typedef struct {
    uint64_t hash; /* the key's Python hash plus one; 0: a free slot */
    double full_at;
} slot;

typedef struct {
    uint64_t hash; /* as slot's */
    double full_at;
    uint64_t hits; /* datagrams from addresses that asked before */
} trial_slot;

typedef struct {
    PyObject_HEAD
    double rate, burst, new_rate;
    double interval, depth, limit, new_interval, new_depth, new_full_at;
    double settle_interval, settle_depth, settled_full_at;
    Py_ssize_t size, probation, trial;
    slot *recent, *older;
    Py_ssize_t recent_count, older_count, copied; /* copied: from older */
    table_shape shape;
    trial_slot *trial_recent, *trial_older;
    Py_ssize_t trial_recent_count, trial_older_count;
    table_shape trial_shape;
    uint64_t *seen, *seen_before; /* senders on probation: hash plus one, 0 free */
    Py_ssize_t seen_count;
    double seen_since; /* when `seen` began */
    table_shape seen_shape;
} Limiter;

/* ratelimit.py's constants, read from it once. */
static double PROBATION_TIME, SETTLE_TIME, TRIAL_MEMORY;
static long long SETTLE_HITS;
static int constants_read;

static int read_constants(void)
{
    PyObject *module, *value;
    double *floats[] = {&PROBATION_TIME, &SETTLE_TIME, &TRIAL_MEMORY};
    const char *names[] = {"PROBATION_TIME", "SETTLE_TIME", "TRIAL_MEMORY", "SETTLE_HITS"};

    if (constants_read)
        return 0;
    if (!(module = PyImport_ImportModule("udpupper.server.protections.ratelimit")))
        return -1;
    for (int i = 0; i < 4; i++) {
        double number;

        if (!(value = PyObject_GetAttrString(module, names[i]))) {
            Py_DECREF(module);
            return -1;
        }
        number = PyFloat_AsDouble(value);
        Py_DECREF(value);
        if (number == -1.0 && PyErr_Occurred()) {
            Py_DECREF(module);
            return -1;
        }
        if (i < 3)
            *floats[i] = number;
        else
            SETTLE_HITS = (long long)number;
    }
    Py_DECREF(module);
    constants_read = 1;
    return 0;
}

/* The slot of `hash` in `table`, or the free slot where it would go. */
static inline slot *find(const Limiter *self, slot *table, uint64_t hash)
{
    return &table[table_find(&self->shape, table, sizeof(slot), hash)];
}

static inline uint64_t find_on_trial(const Limiter *self, trial_slot *table, uint64_t hash)
{
    return table_find(&self->trial_shape, table, sizeof(trial_slot), hash);
}

static void next_generation(Limiter *self, double now)
{
    uint64_t *cleared = self->seen_before;

    memset(cleared, 0, (size_t)(self->seen_shape.mask + 1) * sizeof(uint64_t));
    self->seen_before = self->seen;
    self->seen = cleared;
    self->seen_count = 0;
    self->seen_since = now;
}

/* ratelimit.py's _recall: whether `sender` asked before; on probation, in
 * the recent generation, from now either way. */
static int recall(Limiter *self, uint64_t sender, double now)
{
    uint64_t at = table_find(&self->seen_shape, self->seen, sizeof(uint64_t), sender);
    int asked_before;

    if (self->seen[at])
        return 1;
    asked_before = self->seen_before[table_find(&self->seen_shape, self->seen_before,
                                                sizeof(uint64_t), sender)] != 0;
    if (self->seen_count >= self->probation) {
        next_generation(self, now);
        at = table_find(&self->seen_shape, self->seen, sizeof(uint64_t), sender);
    }
    self->seen[at] = sender;
    self->seen_count++;
    return asked_before;
}

/* ratelimit.gate: whether one more may pass at `now`, `*full_at` its state. */
static int gate(double *full_at, double now, double interval, double depth)
{
    double at = *full_at;

    if (at < now)
        at = now;
    else if (at > now + depth)
        at = now + depth; /* the clock stepped back */
    if (at - now > depth - interval * 0.999) {
        *full_at = at;
        return 0;
    }
    *full_at = at + interval;
    return 1;
}

static int new_key(Limiter *self, double now)
{
    return !self->new_interval
           || gate(&self->new_full_at, now, self->new_interval, self->new_depth);
}

/* One token from a bucket full again at `*full_at`, if it has one. */
static int spend(const Limiter *self, double *full_at, double now)
{
    double at = *full_at;

    if (at < now)
        at = now; /* full: tokens beyond the burst are not kept */
    else if (at > now + self->depth)
        at = now + self->depth; /* the clock stepped back: empty, from now */
    if (at - now > self->limit) {
        *full_at = at;
        return 0; /* less than one token left */
    }
    *full_at = at + self->interval;
    return 1;
}

/* The free slot of the table's recent generation where `hash` goes, a
 * generation turned first when it is full. */
static slot *take_in(Limiter *self, uint64_t hash)
{
    slot *found;

    if (self->recent_count >= self->size) {
        /* A generation is full: the one before it is forgotten. */
        slot *cleared = self->older;
        memset(cleared, 0, (size_t)(self->shape.mask + 1) * sizeof(slot));
        self->older = self->recent;
        self->older_count = self->recent_count;
        self->recent = cleared;
        self->recent_count = self->copied = 0;
    }
    found = find(self, self->recent, hash);
    found->hash = hash;
    self->recent_count++;
    return found;
}

/* ratelimit.py's _on_trial, step for step. */
static PyObject *on_trial(Limiter *self, uint64_t hash, uint64_t sender, double now)
{
    double elapsed = now - self->seen_since, full_at;
    uint64_t hits, at;
    int asked_before, in_recent, allowed;

    if (!(0.0 <= elapsed && elapsed < PROBATION_TIME)) { /* ratelimit.py's _age_probation */
        next_generation(self, now);
        if (!(elapsed < 2 * PROBATION_TIME))
            next_generation(self, now);
    }
    asked_before = recall(self, sender, now);
    if (!asked_before && !new_key(self, now))
        Py_RETURN_NONE; /* a stranger beyond the strangers' rate */
    at = find_on_trial(self, self->trial_recent, hash);
    in_recent = self->trial_recent[at].hash != 0;
    if (in_recent) {
        full_at = self->trial_recent[at].full_at;
        hits = self->trial_recent[at].hits;
    } else {
        uint64_t old = find_on_trial(self, self->trial_older, hash);

        if (self->trial_older[old].hash) {
            full_at = self->trial_older[old].full_at;
            hits = self->trial_older[old].hits;
            table_remove(&self->trial_shape, self->trial_older, sizeof(trial_slot), old);
            self->trial_older_count--;
        } else {
            full_at = now; /* on trial, with a full bucket */
            hits = 0;
        }
    }
    hits += (uint64_t)asked_before;
    allowed = spend(self, &full_at, now);
    if ((long long)hits >= SETTLE_HITS
        && gate(&self->settled_full_at, now, self->settle_interval, self->settle_depth)) {
        if (in_recent) {
            table_remove(&self->trial_shape, self->trial_recent, sizeof(trial_slot), at);
            self->trial_recent_count--;
        }
        take_in(self, hash)->full_at = full_at;
    } else {
        if (!in_recent) {
            if (self->trial_recent_count >= self->trial) {
                trial_slot *cleared = self->trial_older;

                memset(cleared, 0, (size_t)(self->trial_shape.mask + 1) * sizeof(trial_slot));
                self->trial_older = self->trial_recent;
                self->trial_older_count = self->trial_recent_count;
                self->trial_recent = cleared;
                self->trial_recent_count = 0;
            }
            at = find_on_trial(self, self->trial_recent, hash);
            self->trial_recent[at].hash = hash;
            self->trial_recent_count++;
        }
        self->trial_recent[at].full_at = full_at;
        self->trial_recent[at].hits = hits;
    }
    return Py_NewRef(allowed ? Py_True : Py_False);
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

/* A count argument that may be None (`fallback`), at least 1. */
static int count_argument(PyObject *given, Py_ssize_t fallback, const char *name,
                          Py_ssize_t *result)
{
    if (given == Py_None) {
        *result = fallback;
        return 0;
    }
    *result = PyLong_AsSsize_t(given);
    if (*result == -1 && PyErr_Occurred())
        return -1;
    if (*result < 1) {
        PyErr_Format(PyExc_ValueError, "%s must be 1 or more, not %zd", name, *result);
        return -1;
    }
    return 0;
}

static void free_tables(Limiter *self)
{
    PyMem_RawFree(self->recent);
    PyMem_RawFree(self->older);
    PyMem_RawFree(self->trial_recent);
    PyMem_RawFree(self->trial_older);
    PyMem_RawFree(self->seen);
    PyMem_RawFree(self->seen_before);
    self->recent = self->older = NULL;
    self->trial_recent = self->trial_older = NULL;
    self->seen = self->seen_before = NULL;
}

static int limiter_init(Limiter *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"rate", "burst", "size", "new_rate", "probation", "trial", NULL};
    double rate, burst, new_rate = 0.0;
    Py_ssize_t size = 65536, capacity, probation, seen_capacity, trial, trial_capacity;
    table_shape shape, seen_shape, trial_shape;
    PyObject *probation_arg = Py_None, *trial_arg = Py_None;

    if (read_constants() < 0)
        return -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "dd|ndOO", names, &rate, &burst, &size,
                                     &new_rate, &probation_arg, &trial_arg))
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
    probation = 4 * (size < (1 << 20) ? size : (1 << 20)); /* ratelimit.probation_size */
    probation = probation < (1 << 18) ? (1 << 18) : probation > (1 << 20) ? (1 << 20) : probation;
    if (count_argument(probation_arg, probation, "probation", &probation) < 0
        || count_argument(trial_arg, size < (Py_ssize_t)TRIAL_MEMORY ? size
                                                                      : (Py_ssize_t)TRIAL_MEMORY,
                          "trial", &trial) < 0)
        return -1;
    if ((capacity = table_shape_init(&shape, size, sizeof(slot), self)) < 0
        || (trial_capacity = table_shape_init(&trial_shape, trial, sizeof(trial_slot),
                                              self)) < 0
        || (seen_capacity = table_shape_init(&seen_shape, probation, sizeof(uint64_t), self)) < 0)
        return -1;
    /* All freed and set together: never one table of a generation without
     * the other (allow() checks `recent` alone). */
    free_tables(self);
    {
        slot *recent = PyMem_RawCalloc((size_t)capacity, sizeof(slot));
        slot *older = PyMem_RawCalloc((size_t)capacity, sizeof(slot));
        trial_slot *trial_recent = PyMem_RawCalloc((size_t)trial_capacity, sizeof(trial_slot));
        trial_slot *trial_older = PyMem_RawCalloc((size_t)trial_capacity, sizeof(trial_slot));
        uint64_t *seen = PyMem_RawCalloc((size_t)seen_capacity, sizeof(uint64_t));
        uint64_t *seen_before_ = PyMem_RawCalloc((size_t)seen_capacity, sizeof(uint64_t));

        if (!recent || !older || !trial_recent || !trial_older || !seen || !seen_before_) {
            PyMem_RawFree(recent);
            PyMem_RawFree(older);
            PyMem_RawFree(trial_recent);
            PyMem_RawFree(trial_older);
            PyMem_RawFree(seen);
            PyMem_RawFree(seen_before_);
            PyErr_NoMemory();
            return -1;
        }
        self->older = older;
        self->trial_recent = trial_recent;
        self->trial_older = trial_older;
        self->seen = seen;
        self->seen_before = seen_before_;
        self->recent = recent;
    }
    self->rate = rate;
    self->burst = burst;
    self->new_rate = new_rate;
    self->size = size;
    self->interval = 1.0 / rate;
    self->depth = burst * self->interval;
    self->limit = self->depth - self->interval * 0.999;
    self->new_interval = new_rate ? 1.0 / new_rate : 0.0;
    self->new_depth = self->new_interval > 1.0 ? self->new_interval : 1.0; /* gate_depth */
    self->settle_interval = SETTLE_TIME / (double)size;
    self->settle_depth = self->settle_interval > 1.0 ? self->settle_interval : 1.0;
    self->new_full_at = self->settled_full_at = 0.0;
    self->recent_count = self->older_count = self->copied = 0;
    self->shape = shape;
    self->trial = trial;
    self->trial_recent_count = self->trial_older_count = 0;
    self->trial_shape = trial_shape;
    self->probation = probation;
    self->seen_count = 0;
    self->seen_since = 0.0;
    self->seen_shape = seen_shape;
    return 0;
}

static void limiter_dealloc(Limiter *self)
{
    free_tables(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ratelimit.py's allow(), step for step. */
static PyObject *limiter_allow(Limiter *self, PyObject *const *given, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    static const char *const names[] = {"key", "now", "sender"};
    PyObject *args[3] = {NULL, NULL, NULL};
    Py_ssize_t i, count = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    double now, full_at;
    uint64_t hash;
    int error;
    slot *found;

    /* allow(key, now, sender=None), any of them by keyword too. */
    for (i = 0; i < nargs && i < 3; i++)
        args[i] = given[i];
    for (i = 0; i < count && nargs <= 3; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        int which = -1;
        for (int n = 0; n < 3; n++)
            if (PyUnicode_CompareWithASCIIString(name, names[n]) == 0)
                which = n;
        if (which < 0 || args[which]) {
            PyErr_Format(PyExc_TypeError, "allow() got an unexpected or repeated argument %R",
                         name);
            return NULL;
        }
        args[which] = given[nargs + i];
    }
    if (nargs > 3 || !args[0] || !args[1]) {
        PyErr_SetString(PyExc_TypeError,
                        "allow() takes 2 or 3 arguments: key, now and sender");
        return NULL;
    }
    if (args[2] == Py_None)
        args[2] = NULL;
    if (!self->recent) {
        PyErr_SetString(PyExc_ValueError, "RateLimiter.__init__ was not called");
        return NULL;
    }
    now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    hash = table_hash(args[0], &error);
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
        } else if (args[2]) {
            uint64_t sender = table_hash(args[2], &error);

            if (error)
                return NULL;
            return on_trial(self, hash, sender, now);
        } else {
            if (!new_key(self, now))
                Py_RETURN_NONE;
            full_at = now; /* a new key has a full bucket */
        }
        found = take_in(self, hash);
    }
    int allowed = spend(self, &full_at, now);
    found->full_at = full_at;
    return Py_NewRef(allowed ? Py_True : Py_False);
}

/* 0: unknown; 1: on trial; 2: in the table.  -1: an error. */
static int where_of(Limiter *self, PyObject *key)
{
    int error;
    uint64_t hash = table_hash(key, &error);

    if (error)
        return -1;
    if (!self->recent)
        return 0;
    if (find(self, self->recent, hash)->hash == hash
        || find(self, self->older, hash)->hash == hash)
        return 2;
    return self->trial_recent[find_on_trial(self, self->trial_recent, hash)].hash == hash
           || self->trial_older[find_on_trial(self, self->trial_older, hash)].hash == hash;
}

static PyObject *limiter_where(Limiter *self, PyObject *key)
{
    int where = where_of(self, key);

    return where < 0 ? NULL : PyLong_FromLong(where);
}

static int limiter_contains(Limiter *self, PyObject *key)
{
    int where = where_of(self, key);

    return where < 0 ? -1 : where != 0;
}

static Py_ssize_t limiter_length(Limiter *self)
{
    return self->recent_count + self->older_count - self->copied + self->trial_recent_count
           + self->trial_older_count;
}

static PyMethodDef limiter_methods[] = {
    {"allow", (PyCFunction)(void (*)(void))limiter_allow, METH_FASTCALL | METH_KEYWORDS,
     "allow(key, now, sender=None) -> True, False, or None for a new key beyond the new keys' rate"},
    {"where", (PyCFunction)limiter_where, METH_O,
     "where(key) -> 0: not known; 1: on trial; 2: in the table"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef limiter_members[] = {
    {"rate", T_DOUBLE, offsetof(Limiter, rate), READONLY, "tokens a second per key"},
    {"burst", T_DOUBLE, offsetof(Limiter, burst), READONLY, "tokens a bucket holds"},
    {"size", T_PYSSIZET, offsetof(Limiter, size), READONLY, "keys a generation holds"},
    {"new_rate", T_DOUBLE, offsetof(Limiter, new_rate), READONLY,
     "new keys taken in a second, all together (0: no limit)"},
    {"probation", T_PYSSIZET, offsetof(Limiter, probation), READONLY,
     "senders on probation a generation holds"},
    {"trial", T_PYSSIZET, offsetof(Limiter, trial), READONLY,
     "keys on trial a generation holds"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods limiter_sequence = {
    .sq_length = (lenfunc)limiter_length,
    .sq_contains = (objobjproc)limiter_contains,
};

static PyTypeObject LimiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpupper.server.protections._ratelimit.RateLimiter",
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
    PyModuleDef_HEAD_INIT, "udpupper.server.protections._ratelimit",
    "udpupper.server.protections.ratelimit.RateLimiter in C: one cache line a look-up.", -1, NULL,
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
