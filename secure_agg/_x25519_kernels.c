/*
 * secure_agg._x25519_kernels: the batch loops of secure_agg.psi (hashing ids to X25519
 * u-coordinates and blinding them) in C, over the system's libsodium.
 *
 * Why: secure_agg.psi calls libsodium's crypto_scalarmult_curve25519 (~36 us) once per point.
 * Through ctypes each call also costs Python work under the GIL, the hashing is a Python loop,
 * and parallelism needs worker processes fed through pipes (every point copied out and back).
 * Here one call runs a whole request of a blinding worker (secure_agg._blind_worker) in C: the
 * records are parsed, hashed and blinded without a Python object per id, with the GIL released
 * (so threads may also run it in parallel).
 *
 * The functions are exactly those of secure_agg.psi's Python reference (tests check it byte
 * for byte): H(x) = SHA-512(len(domain) (2 bytes, big-endian) || domain || x)[:32] with the top
 * bit of the last byte cleared; blinding is X25519(scalar, u) (RFC 7748). libsodium returns -1
 * when the result is all zero (a low-order input point): the kernel stops and reports the index.
 *
 * libsodium is loaded at import with dlopen (no headers are needed to build this module; the
 * prototypes below are libsodium's stable API). If it cannot be loaded, importing the module
 * fails with ImportError and secure_agg.psi uses its Python path.
 *
 * Key material: the scalar is read from the caller's buffer in place (held by the call) and
 * never copied here; libsodium wipes its own working copy. Nothing here draws randomness.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define POINT_BYTES 32
#define SHA512_BYTES 64
#define SHA512_STATE_MAX 512

typedef int (*scalarmult_fn)(unsigned char *q, const unsigned char *n, const unsigned char *p);
typedef int (*sha512_init_fn)(void *state);
typedef int (*sha512_update_fn)(void *state, const unsigned char *in, unsigned long long inlen);
typedef int (*sha512_final_fn)(void *state, unsigned char *out);
typedef size_t (*statebytes_fn)(void);
typedef int (*sodium_init_fn)(void);

static scalarmult_fn scalarmult;
static sha512_init_fn sha512_init;
static sha512_update_fn sha512_update;
static sha512_final_fn sha512_final;
static size_t sha512_statebytes;

static const char *const LIBRARY_NAMES[] = {"libsodium.so.23", "libsodium.so.26", "libsodium.so",
                                            NULL};

/* Load libsodium and its symbols; 0 on success, else -1 with an ImportError set. */
static int load_sodium(void) {
    void *lib = NULL;
    for (int i = 0; LIBRARY_NAMES[i] != NULL && lib == NULL; i++) {
        lib = dlopen(LIBRARY_NAMES[i], RTLD_NOW | RTLD_LOCAL);
    }
    if (lib == NULL) {
        PyErr_SetString(PyExc_ImportError, "libsodium is not installed (libsodium.so.23/26)");
        return -1;
    }
    sodium_init_fn init = (sodium_init_fn)dlsym(lib, "sodium_init");
    statebytes_fn statebytes = (statebytes_fn)dlsym(lib, "crypto_hash_sha512_statebytes");
    scalarmult = (scalarmult_fn)dlsym(lib, "crypto_scalarmult_curve25519");
    sha512_init = (sha512_init_fn)dlsym(lib, "crypto_hash_sha512_init");
    sha512_update = (sha512_update_fn)dlsym(lib, "crypto_hash_sha512_update");
    sha512_final = (sha512_final_fn)dlsym(lib, "crypto_hash_sha512_final");
    if (init == NULL || statebytes == NULL || scalarmult == NULL || sha512_init == NULL ||
        sha512_update == NULL || sha512_final == NULL) {
        PyErr_SetString(PyExc_ImportError, "libsodium lacks crypto_scalarmult_curve25519 or SHA-512");
        return -1;
    }
    if (init() < 0) {
        PyErr_SetString(PyExc_ImportError, "sodium_init failed");
        return -1;
    }
    sha512_statebytes = statebytes();
    if (sha512_statebytes > SHA512_STATE_MAX) {
        PyErr_SetString(PyExc_ImportError, "libsodium's SHA-512 state is larger than expected");
        return -1;
    }
    return 0;
}

static int check_scalar(Py_buffer *scalar, int may_be_empty) {
    if (scalar->len != POINT_BYTES && !(may_be_empty && scalar->len == 0)) {
        PyErr_Format(PyExc_ValueError, "a scalar is %d bytes, got %zd", POINT_BYTES, scalar->len);
        return -1;
    }
    return 0;
}

/* (result, -1), or (None, index of the first low-order point); steals `result`. */
static PyObject *outcome(PyObject *result, long long bad) {
    if (bad >= 0) {
        Py_DECREF(result);
        return Py_BuildValue("(OL)", Py_None, bad);
    }
    return Py_BuildValue("(NL)", result, bad);
}

PyDoc_STRVAR(blind_doc,
             "blind(scalar, points) -> (bytes | None, int)\n\n"
             "X25519(scalar, u) for every 32-byte u of `points` (a bytes-like object), computed\n"
             "with the GIL released. Returns (result, -1), or (None, i) where point i is the\n"
             "first of low order (its result would be all zero). Raises ValueError for a\n"
             "scalar that is not 32 bytes or points that are not a whole number of 32 bytes.");

static PyObject *blind(PyObject *self, PyObject *args) {
    Py_buffer scalar, points;
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*", &scalar, &points)) {
        return NULL;
    }
    if (check_scalar(&scalar, 0) < 0) {
        goto done;
    }
    if (points.len % POINT_BYTES != 0) {
        PyErr_Format(PyExc_ValueError, "%zd bytes are not a whole number of %d-byte points",
                     points.len, POINT_BYTES);
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, points.len);
    if (result == NULL) {
        goto done;
    }
    long long bad = -1;
    {
        const unsigned char *key = scalar.buf;
        const unsigned char *src = points.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        Py_ssize_t n = points.len / POINT_BYTES;
        Py_BEGIN_ALLOW_THREADS;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (scalarmult(dst + i * POINT_BYTES, key, src + i * POINT_BYTES) != 0) {
                bad = (long long)i;
                break;
            }
        }
        Py_END_ALLOW_THREADS;
    }
    result = outcome(result, bad);
done:
    PyBuffer_Release(&points);
    PyBuffer_Release(&scalar);
    return result;
}

/* Count the `length (4, big-endian) + id` records of `buf`; -1 with ValueError if malformed. */
static Py_ssize_t count_records(const unsigned char *buf, Py_ssize_t len) {
    Py_ssize_t offset = 0, count = 0;
    while (offset < len) {
        if (len - offset < 4) {
            PyErr_Format(PyExc_ValueError,
                         "id record %zd has %zd bytes of its 4-byte length; records are "
                         "length (4) + id",
                         count, len - offset);
            return -1;
        }
        const unsigned char *p = buf + offset;
        uint32_t size = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                        (uint32_t)p[3];
        offset += 4;
        if ((Py_ssize_t)size > len - offset) {
            PyErr_Format(PyExc_ValueError,
                         "id record %zd claims %u bytes but only %zd remain; records are "
                         "length (4) + id",
                         count, size, len - offset);
            return -1;
        }
        offset += (Py_ssize_t)size;
        count++;
    }
    return count;
}

PyDoc_STRVAR(hash_blind_doc,
             "hash_blind(scalar, domain, records) -> (bytes | None, int)\n\n"
             "`records` holds ids as `length (4 bytes, big-endian) + id`. For every id x,\n"
             "u = SHA-512(len(domain) (2 bytes, big-endian) || domain || x)[:32] with the top\n"
             "bit cleared, then X25519(scalar, u), or u itself when `scalar` is empty; computed\n"
             "with the GIL released. Returns (result, -1), or (None, i) where id i is the first\n"
             "whose point is of low order. Raises ValueError for a scalar of another length than\n"
             "0 or 32, a domain over 65535 bytes, or malformed records.");

static PyObject *hash_blind(PyObject *self, PyObject *args) {
    Py_buffer scalar, domain, records;
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*", &scalar, &domain, &records)) {
        return NULL;
    }
    if (check_scalar(&scalar, 1) < 0) {
        goto done;
    }
    if (domain.len > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "a hashing domain is at most 65535 bytes, got %zd",
                     domain.len);
        goto done;
    }
    Py_ssize_t n = count_records(records.buf, records.len);
    if (n < 0) {
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, n * POINT_BYTES);
    if (result == NULL) {
        goto done;
    }
    long long bad = -1;
    {
        /* uint64_t: libsodium's SHA-512 state is a struct of 64-bit words. */
        uint64_t prefix_state[SHA512_STATE_MAX / 8], state[SHA512_STATE_MAX / 8];
        unsigned char digest[SHA512_BYTES], size[2];
        const unsigned char *key = scalar.buf, *src = records.buf;
        int blinding = scalar.len != 0;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        size[0] = (unsigned char)(domain.len >> 8);
        size[1] = (unsigned char)(domain.len & 0xFF);
        Py_BEGIN_ALLOW_THREADS;
        sha512_init(prefix_state);
        sha512_update(prefix_state, size, 2);
        sha512_update(prefix_state, domain.buf, (unsigned long long)domain.len);
        Py_ssize_t offset = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            const unsigned char *p = src + offset;
            uint32_t length = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                              ((uint32_t)p[2] << 8) | (uint32_t)p[3];
            memcpy(state, prefix_state, sha512_statebytes);
            sha512_update(state, p + 4, length);
            sha512_final(state, digest);
            offset += 4 + (Py_ssize_t)length;
            digest[POINT_BYTES - 1] &= 0x7F;
            unsigned char *target = dst + i * POINT_BYTES;
            if (!blinding) {
                memcpy(target, digest, POINT_BYTES);
            } else if (scalarmult(target, key, digest) != 0) {
                bad = (long long)i;
                break;
            }
        }
        Py_END_ALLOW_THREADS;
    }
    result = outcome(result, bad);
done:
    PyBuffer_Release(&records);
    PyBuffer_Release(&domain);
    PyBuffer_Release(&scalar);
    return result;
}

static PyMethodDef methods[] = {
    {"blind", blind, METH_VARARGS, blind_doc},
    {"hash_blind", hash_blind, METH_VARARGS, hash_blind_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "secure_agg._x25519_kernels",
    "Batch hashing to X25519 and blinding over libsodium, with the GIL released.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__x25519_kernels(void) {
    if (load_sodium() < 0) {
        return NULL;
    }
    return PyModule_Create(&module);
}
