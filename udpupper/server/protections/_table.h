/*
 * The open addressing the protections' C tables share (_ratelimit.c,
 * _sources.c, _loops.c): a power of two of slots, at least twice the keys a
 * table holds (at most half full, so a look-up probes little more than one
 * slot), a key's first slot its hash times a random odd multiplier of the
 * table's own, shifted (multiply-shift hashing), then linear probing.
 *
 * The multiplier comes from getentropy: which keys share a run of slots
 * cannot be chosen from outside, even where Python's hash is not randomized
 * (PYTHONHASHSEED=0).
 */
#ifndef UDPUPPER_TABLE_H
#define UDPUPPER_TABLE_H

#include <Python.h>

#include <stdint.h>
#include <string.h>
#include <sys/random.h>

typedef struct {
    uint64_t mask, multiplier;
    int shift;
} table_shape;

/* Shapes a table for `size` keys, of `bytes` a slot across all the arrays
 * that share the shape, two generations of each: its number of slots, or -1
 * with MemoryError set where that is more than an address space holds.
 * `salt` varies the fallback multiplier where the system has no entropy. */
static Py_ssize_t table_shape_init(table_shape *shape, Py_ssize_t size, size_t bytes,
                                   const void *salt)
{
    Py_ssize_t capacity = 8;
    int bits = 3;

    if (size > PY_SSIZE_T_MAX / (4 * (Py_ssize_t)bytes)) {
        PyErr_NoMemory();
        return -1;
    }
    while (capacity < 2 * size) {
        capacity <<= 1;
        bits++;
    }
    shape->mask = (uint64_t)capacity - 1;
    shape->shift = 64 - bits;
    if (getentropy(&shape->multiplier, sizeof(shape->multiplier)) != 0)
        shape->multiplier = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)salt; /* no entropy */
    shape->multiplier |= 1; /* odd: every bit of the hash counts */
    return capacity;
}

/* The first slot to look at for `hash`, and the next after `at`. */
static inline uint64_t table_start(const table_shape *shape, uint64_t hash)
{
    return (hash * shape->multiplier) >> shape->shift;
}

static inline uint64_t table_next(const table_shape *shape, uint64_t at)
{
    return (at + 1) & shape->mask;
}

/* In an array of slots of `stride` bytes that each begin with a uint64_t
 * hash (0: a free slot), the slot holding `hash` or the free one where it
 * would go.  `hash` is never 0. */
static inline uint64_t table_find(const table_shape *shape, const void *slots, size_t stride,
                                  uint64_t hash)
{
    uint64_t at = table_start(shape, hash), stored;

    for (;; at = table_next(shape, at)) {
        memcpy(&stored, (const char *)slots + at * stride, sizeof(stored));
        if (!stored || stored == hash)
            return at;
    }
}

/* Empties slot `at` of an array of slots of `stride` bytes (each beginning
 * with its uint64_t hash), moving back the slots after it whose run it
 * would otherwise break (backward-shift deletion): no tombstones. */
static inline void table_remove(const table_shape *shape, void *slots, size_t stride,
                                uint64_t at)
{
    char *base = slots;
    uint64_t hole = at, next = at, stored, home;

    for (;;) {
        next = table_next(shape, next);
        memcpy(&stored, base + next * stride, sizeof(stored));
        if (!stored)
            break;
        home = table_start(shape, stored);
        /* It stays where it is when its first slot lies after the hole,
         * up to itself, going round. */
        if (hole <= next ? (hole < home && home <= next) : (hole < home || home <= next))
            continue;
        memcpy(base + hole * stride, base + next * stride, stride);
        hole = next;
    }
    memset(base + hole * stride, 0, stride);
}

/* A key's Python hash, plus one: never 0, as a Python hash is never -1.
 * Sets *error (and the exception) where the key cannot be hashed. */
static inline uint64_t table_hash(PyObject *key, int *error)
{
    Py_hash_t hash = PyObject_Hash(key);

    *error = hash == -1;
    return (uint64_t)hash + 1;
}

#endif
