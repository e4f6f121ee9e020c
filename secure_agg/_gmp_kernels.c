/*
 * secure_agg._gmp_kernels: the arithmetic of secure_agg.paillier, secure_agg.packing and
 * secure_agg.ou (OU encryption, see OuEncryptor) in C.
 *
 * A CPython extension (plain C API) over GMP's mpn layer. Every kernel takes and returns fixed-width
 * big-endian byte strings, validates its input with the GIL held, then releases the GIL for the
 * arithmetic, so threads run it in parallel (secure_agg.paillier splits batches over threads of
 * the calling process; its worker processes use these kernels too). Errors are Python
 * exceptions (ValueError for malformed input, MemoryError).
 * The Python kernels of secure_agg.paillier / secure_agg.packing stay the reference: every kernel
 * here returns exactly the integers they return (tests/test_gmp_kernels.py checks it).
 *
 * Arithmetic modulo a square N = n^2 ("base-n digits")
 * ---------------------------------------------------
 * Every modulus of the Paillier layer is a square: n^2 (public operations) or p^2, q^2 (the key
 * holder's CRT encryption). A residue x mod n^2 is kept as its two base-n digits, x = x0 + x1*n
 * with x0, x1 in [0, n). Then
 *
 *     x*y mod n^2 = (x0*y0 mod n) + ((x0*y0 div n) + x0*y1 + x1*y0 mod n) * n,
 *
 * three half-size products and two half-size divisions instead of one full-size product and a
 * full-size reduction. Measured on this project's 2-core AMD EPYC (GMP 6.2.1), per operation at a
 * 2048-bit n: gmpy2 a*b % n^2 6.4 us, Montgomery (mpn_mul_n + REDC with mpn_addmul_1, which is
 * as fast as GMP's internal redc_1/redc_2 here) 5.1 us, base-n digits 4.1 us; squarings 3.3 us
 * against 4.5 us (Montgomery) and 4.7-5.0 us (mpz_powm per bit). At p^2 (1024-bit p): 1.22 us
 * against 1.37 us (Montgomery) and 1.9 us (gmpy2). Montgomery multiplication therefore does not
 * pay here and is not used.
 *
 * Group sums with many columns ("row tables")
 * -------------------------------------------
 * In a histogram each row's ciphertext c is multiplied into one accumulator per column. For wide
 * group matrices the kernel precomputes M_j = c * B^j mod N (B = 2^64, j < L = limbs(N) + 2) once
 * per row and keeps accumulators "relaxed" (L limbs, reduced only at the end): acc * c is then
 * sum_j acc_j * M_j, L multiply-accumulate passes and no reduction, as sum_j acc_j * M_j
 * < L * B * N < B^L. Each pass is an addmul_1; on x86-64 CPUs with BMI2 and ADX (checked at
 * run time with CPUID) a 4-way unrolled mulx/adcx/adox loop does it in 35 ns for 64 limbs
 * against 50 ns for GMP 6.2.1's mpn_addmul_1 here; elsewhere mpn_addmul_1 is used. 2.4 us per
 * multiplication at 2048 bits (3.4 us with mpn_addmul_1, 4.1 us with digits) for ~7 us per row
 * (66 mpn_tdiv_qr steps; a hand-written Knuth step measured no faster).
 *
 * binned_sums is the same kernel with each group id made as it is read, slot[i] * width +
 * bin[i, j], from a SecureBoost level's node slots and the job's bins (uint8 up to 256 groups
 * per node): no matrix of group ids (4 bytes per row x column) exists, and threads or tasks
 * summing different blocks of columns read the one copy of the bins in place.
 *
 * Key material
 * ------------
 * CrtEncryptor's tables (powers of h_s modulo p^2 and q^2) are derived from the factorisation.
 * They live in memory allocated here, are never exposed to Python, are overwritten when the
 * object is freed, and the object refuses pickling and copying. Scratch buffers that held
 * key-derived values are overwritten before they are freed. (GMP's own temporaries, e.g. inside
 * mpz_sqrtrem at construction, are not: the same limit as gmpy2 and Python integers.)
 * No kernel draws randomness: exponents come from the caller (secrets.token_bytes).
 * Nothing is constant-time: table look-ups and GMP's arithmetic depend on the exponents.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <gmp.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define HAVE_ADX_KERNEL 1
#else
#define HAVE_ADX_KERNEL 0
#endif

#if GMP_NAIL_BITS != 0
#error "GMP built with nails is not supported"
#endif

#define LIMB_BYTES ((size_t)sizeof(mp_limb_t))

/* Most bits of a CRT window (a table row has 2^w - 1 entries). */
#define MAX_WINDOW_BITS 16
/* Most squarings per packed value (SumPacker values are below the key length). */
#define MAX_PACK_BITS 65536
/* Default number of columns from which group_sums uses row tables (break-even measured at
 * 4 columns with the mulx/adx kernel, ~11 with mpn_addmul_1). */
#define DEFAULT_TABLE_MIN_COLS 4

/* ------------------------------------------------------------------------------------------ */
/* Memory                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Overwrite n bytes; the barrier keeps the compiler from dropping the stores to a dying buffer. */
static void
wipe(void *p, size_t n)
{
    if (p == NULL || n == 0) {
        return;
    }
#if defined(__GNUC__) || defined(__clang__)
    memset(p, 0, n);
    __asm__ __volatile__("" : : "r"(p) : "memory");
#else
    volatile unsigned char *v = (volatile unsigned char *)p;
    while (n--) {
        *v++ = 0;
    }
#endif
}

/* Limb buffers use the raw allocator: callable without the GIL. */
static mp_limb_t *
limbs_alloc(size_t count)
{
    if (count == 0) {
        count = 1;
    }
    if (count > PY_SSIZE_T_MAX / LIMB_BYTES) {
        return NULL;
    }
    return (mp_limb_t *)PyMem_RawCalloc(count, LIMB_BYTES);
}

static void
limbs_free(mp_limb_t *p, size_t count, int secret)
{
    if (p != NULL) {
        if (secret) {
            wipe(p, (count ? count : 1) * LIMB_BYTES);
        }
        PyMem_RawFree(p);
    }
}

/* *out = a * b, or 0 on overflow of Py_ssize_t. */
static int
mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > (size_t)PY_SSIZE_T_MAX / a) {
        return 0;
    }
    *out = a * b;
    return 1;
}

static inline void
prefetch(const void *p, size_t bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    const char *c = (const char *)p;
    for (size_t i = 0; i < bytes; i += 64) {
        __builtin_prefetch(c + i, 0, 1);
    }
#else
    (void)p;
    (void)bytes;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* addmul_1 for the row tables                                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef mp_limb_t (*addmul_fn)(mp_limb_t *, const mp_limb_t *, mp_size_t, mp_limb_t);

static mp_limb_t
addmul_gmp(mp_limb_t *rp, const mp_limb_t *up, mp_size_t n, mp_limb_t v)
{
    return mpn_addmul_1(rp, up, n, v);
}

#if HAVE_ADX_KERNEL
/* rp[0, n) += up[0, n) * v; returns the carry limb. Two carry chains: CF adds rp[i] to the low
 * half of up[i] * v, OF adds the high half of up[i - 1] * v (the idea of GMP's and Intel's ADX
 * multiplication loops). Loop control uses lea and jrcxz, which leave both flags alone. The
 * final high limb cannot overflow: it is at most B - 2 before the two carries. */
static mp_limb_t
addmul_adx4(mp_limb_t *rp, const mp_limb_t *up, long quads, mp_limb_t v)
{
    mp_limb_t hi = 0, l0, h0, l1, h1, zero;
    __asm__ volatile(
        "xor %k[zero], %k[zero]\n\t" /* CF = OF = 0 */
        "1:\n\t"
        "mulx 0(%[up]), %[l0], %[h0]\n\t"
        "adcx 0(%[rp]), %[l0]\n\t"
        "adox %[hi], %[l0]\n\t"
        "mov %[l0], 0(%[rp])\n\t"
        "mulx 8(%[up]), %[l1], %[h1]\n\t"
        "adcx 8(%[rp]), %[l1]\n\t"
        "adox %[h0], %[l1]\n\t"
        "mov %[l1], 8(%[rp])\n\t"
        "mulx 16(%[up]), %[l0], %[h0]\n\t"
        "adcx 16(%[rp]), %[l0]\n\t"
        "adox %[h1], %[l0]\n\t"
        "mov %[l0], 16(%[rp])\n\t"
        "mulx 24(%[up]), %[l1], %[hi]\n\t"
        "adcx 24(%[rp]), %[l1]\n\t"
        "adox %[h0], %[l1]\n\t"
        "mov %[l1], 24(%[rp])\n\t"
        "lea 32(%[up]), %[up]\n\t"
        "lea 32(%[rp]), %[rp]\n\t"
        "lea -1(%[quads]), %[quads]\n\t"
        "jrcxz 2f\n\t"
        "jmp 1b\n\t"
        "2:\n\t"
        "adcx %[zero], %[hi]\n\t"
        "adox %[zero], %[hi]\n\t"
        : [up] "+r"(up), [rp] "+r"(rp), [quads] "+c"(quads), [hi] "+r"(hi), [l0] "=&r"(l0),
          [h0] "=&r"(h0), [l1] "=&r"(l1), [h1] "=&r"(h1), [zero] "=&r"(zero)
        : "d"(v)
        : "cc", "memory");
    return hi;
}

static mp_limb_t
addmul_adx(mp_limb_t *rp, const mp_limb_t *up, mp_size_t n, mp_limb_t v)
{
    mp_size_t head = n & ~(mp_size_t)3;
    if (head == 0) {
        return mpn_addmul_1(rp, up, n, v);
    }
    mp_limb_t cy = addmul_adx4(rp, up, (long)(head / 4), v);
    if (head == n) {
        return cy;
    }
    mp_limb_t tail = mpn_addmul_1(rp + head, up + head, n - head, v);
    return tail + mpn_add_1(rp + head, rp + head, n - head, cy);
}

static int
cpu_has_adx(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        return 0;
    }
    return (b & (1u << 8)) != 0 && (b & (1u << 19)) != 0;  /* BMI2 (mulx), ADX */
}
#endif

/* The fastest addmul_1 this CPU runs (set at import). */
static addmul_fn fast_addmul = addmul_gmp;

/* ------------------------------------------------------------------------------------------ */
/* Fixed-width big-endian bytes <-> limbs                                                      */
/* ------------------------------------------------------------------------------------------ */
/* Written out instead of mpz_import/mpz_export: the values go straight into fixed-size limb
 * arrays that this module owns (and wipes), with no heap temporary per value. */

/* dst (nl limbs) = the width big-endian bytes at src; 0 if the value needs more than nl limbs. */
static int
bytes_to_limbs(mp_limb_t *dst, mp_size_t nl, const unsigned char *src, size_t width)
{
    memset(dst, 0, (size_t)nl * LIMB_BYTES);
    for (size_t i = 0; i < width; i++) {
        unsigned char b = src[width - 1 - i];
        size_t limb = i / LIMB_BYTES;
        if (limb >= (size_t)nl) {
            if (b != 0) {
                return 0;
            }
            continue;
        }
        dst[limb] |= (mp_limb_t)b << (8 * (i % LIMB_BYTES));
    }
    return 1;
}

/* The width big-endian bytes of src (nl limbs); the caller knows that the value fits. */
static void
limbs_to_bytes(unsigned char *dst, size_t width, const mp_limb_t *src, mp_size_t nl)
{
    for (size_t i = 0; i < width; i++) {
        size_t limb = i / LIMB_BYTES;
        dst[width - 1 - i] =
            limb < (size_t)nl ? (unsigned char)(src[limb] >> (8 * (i % LIMB_BYTES))) : 0;
    }
}

/* Limbs of a normalised value (no leading zero limbs; 0 for zero). */
static mp_size_t
limbs_size(const mp_limb_t *p, mp_size_t n)
{
    while (n > 0 && p[n - 1] == 0) {
        n--;
    }
    return n;
}

static int
limbs_is_zero(const mp_limb_t *p, mp_size_t n)
{
    return limbs_size(p, n) == 0;
}

/* Parse a positive integer given as big-endian bytes into a fresh buffer of *n_out limbs. */
static mp_limb_t *
parse_positive(const Py_buffer *buf, const char *name, mp_size_t *n_out)
{
    size_t nl = (size_t)buf->len / LIMB_BYTES + 1;
    mp_limb_t *p = limbs_alloc(nl);
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    bytes_to_limbs(p, (mp_size_t)nl, (const unsigned char *)buf->buf, (size_t)buf->len);
    mp_size_t n = limbs_size(p, (mp_size_t)nl);
    if (n == 0) {
        PyMem_RawFree(p);
        PyErr_Format(PyExc_ValueError, "%s must be a positive integer", name);
        return NULL;
    }
    *n_out = n;
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* Arithmetic modulo a square N = n^2, on base-n digits                                        */
/* ------------------------------------------------------------------------------------------ */
/* A residue is 2h limbs: digit x0 in limbs [0, h), digit x1 in limbs [h, 2h), both < n. */

typedef struct {
    mp_size_t h;   /* limbs of n (top limb non-zero) */
    mp_size_t nn;  /* limbs of N = n^2 (top limb non-zero) */
    mp_limb_t *n;  /* h limbs */
    mp_limb_t *N;  /* 2h limbs, top ones possibly zero */
    int secret;    /* wipe n and N when freed (the key holder's p and q) */
} sqmod_t;

/* Scratch limbs that sq_mul / sq_sqr / sq_mul_plain / sq_from_value need. */
#define SQ_SCRATCH(h) (7 * (size_t)(h) + 8)

/* Set up c for n (h limbs, top limb non-zero). Returns 0 on allocation failure. */
static int
sq_init(sqmod_t *c, const mp_limb_t *n, mp_size_t h, int secret)
{
    c->h = h;
    c->secret = secret;
    c->n = limbs_alloc((size_t)h);
    c->N = limbs_alloc(2 * (size_t)h);
    if (c->n == NULL || c->N == NULL) {
        return 0;
    }
    memcpy(c->n, n, (size_t)h * LIMB_BYTES);
    mpn_sqr(c->N, c->n, h);
    c->nn = limbs_size(c->N, 2 * h);
    return 1;
}

static void
sq_clear(sqmod_t *c)
{
    limbs_free(c->n, (size_t)c->h, c->secret);
    limbs_free(c->N, 2 * (size_t)c->h, c->secret);
    c->n = c->N = NULL;
}

/* r = a * b (digits); r may be a or b. */
static void
sq_mul(const sqmod_t *c, mp_limb_t *r, const mp_limb_t *a, const mp_limb_t *b, mp_limb_t *w)
{
    mp_size_t h = c->h;
    mp_limb_t *p = w, *s = w + 2 * h, *t = s + 2 * h + 1, *q = t + 2 * h;
    mpn_mul_n(s, a, b + h, h);
    mpn_mul_n(t, a + h, b, h);
    s[2 * h] = mpn_add_n(s, s, t, 2 * h);
    mpn_mul_n(p, a, b, h);
    mpn_tdiv_qr(q, r, 0, p, 2 * h, c->n, h);      /* r0 = a0 b0 mod n, q = a0 b0 div n */
    mpn_add(s, s, 2 * h + 1, q, h + 1);            /* < 2n^2 + n: no carry out */
    mpn_tdiv_qr(q, r + h, 0, s, 2 * h + 1, c->n, h);
}

/* r = a^2 (digits); r may be a. */
static void
sq_sqr(const sqmod_t *c, mp_limb_t *r, const mp_limb_t *a, mp_limb_t *w)
{
    mp_size_t h = c->h;
    mp_limb_t *p = w, *s = w + 2 * h, *q = s + 2 * h + 1;
    mpn_mul_n(s, a, a + h, h);
    s[2 * h] = mpn_lshift(s, s, 2 * h, 1);
    mpn_sqr(p, a, h);
    mpn_tdiv_qr(q, r, 0, p, 2 * h, c->n, h);
    mpn_add(s, s, 2 * h + 1, q, h + 1);
    mpn_tdiv_qr(q, r + h, 0, s, 2 * h + 1, c->n, h);
}

/* r = a * (1 + m n) for m < n (h limbs): digits (a0, a0 m + a1 mod n). r may be a. */
static void
sq_mul_plain(const sqmod_t *c, mp_limb_t *r, const mp_limb_t *a, const mp_limb_t *m,
             mp_limb_t *w)
{
    mp_size_t h = c->h;
    mp_limb_t *s = w, *q = w + 2 * h + 1;
    mpn_mul_n(s, a, m, h);
    s[2 * h] = mpn_add(s, s, 2 * h, a + h, h);
    if (r != a) {
        memcpy(r, a, (size_t)h * LIMB_BYTES);
    }
    mpn_tdiv_qr(q, r + h, 0, s, 2 * h + 1, c->n, h);
}

/* Digits of x (xn limbs, xn >= h, x < N). */
static void
sq_from_value(const sqmod_t *c, mp_limb_t *r, const mp_limb_t *x, mp_size_t xn, mp_limb_t *w)
{
    mp_size_t h = c->h;
    mpn_tdiv_qr(w, r, 0, x, xn, c->n, h);  /* quotient xn - h + 1 limbs, < n */
    memcpy(r + h, w, (size_t)h * LIMB_BYTES);
}

/* out (2h limbs) = x0 + x1 n. */
static void
sq_to_value(const sqmod_t *c, mp_limb_t *out, const mp_limb_t *a)
{
    mp_size_t h = c->h;
    mpn_mul_n(out, a + h, c->n, h);
    mpn_add(out, out, 2 * h, a, h);
}

/* Digits of 1. */
static void
sq_one(const sqmod_t *c, mp_limb_t *r)
{
    memset(r, 0, 2 * (size_t)c->h * LIMB_BYTES);
    r[0] = 1;
}

/* n = sqrt(N) for a perfect square N (limbs); NULL with ValueError otherwise. */
static mp_limb_t *
exact_sqrt(const mp_limb_t *N, mp_size_t nn, mp_size_t *h_out, const char *name)
{
    mp_size_t h = (nn + 1) / 2;
    mp_limb_t *root = limbs_alloc((size_t)h);
    mp_limb_t *rem = limbs_alloc((size_t)nn);
    if (root == NULL || rem == NULL) {
        PyMem_RawFree(root);
        PyMem_RawFree(rem);
        PyErr_NoMemory();
        return NULL;
    }
    mp_size_t rn = mpn_sqrtrem(root, rem, N, nn);
    wipe(rem, (size_t)nn * LIMB_BYTES);
    PyMem_RawFree(rem);
    if (rn != 0) {
        limbs_free(root, (size_t)h, 1);
        PyErr_Format(PyExc_ValueError, "%s must be the square of an integer", name);
        return NULL;
    }
    *h_out = limbs_size(root, h);
    return root;
}

/* ------------------------------------------------------------------------------------------ */
/* Fixed-base tables: rows[i][d - 1] = base^(d * 2^(w i)) for 1 <= d < 2^w, as digits          */
/* ------------------------------------------------------------------------------------------ */

/* Fill one row (entries = 2^w - 1 residues of 2h limbs) from step = base^(2^(w i)); then
 * step = base^(2^(w (i + 1))). */
static void
build_row(const sqmod_t *c, mp_limb_t *row, size_t entries, mp_limb_t *step, mp_limb_t *w)
{
    size_t size = 2 * (size_t)c->h;
    memcpy(row, step, size * LIMB_BYTES);
    for (size_t d = 1; d < entries; d++) {
        sq_mul(c, row + d * size, row + (d - 1) * size, step, w);
    }
    sq_mul(c, step, row + (entries - 1) * size, step, w);
}

/* Window digit number i of the little-endian exponent e (nbytes bytes). */
static inline unsigned
window_digit(const unsigned char *e, size_t nbytes, size_t i, int w)
{
    size_t bit = i * (size_t)w, byte = bit >> 3;
    uint32_t v = 0;
    for (size_t k = 0; k < 3 && byte + k < nbytes; k++) {
        v |= (uint32_t)e[byte + k] << (8 * k);
    }
    return (unsigned)(v >> (bit & 7)) & ((1u << w) - 1u);
}

/* acc = prod over rows i < n_rows of rows[i][digit_i]; 0 (acc untouched) if every digit is 0. */
static int
table_power(const sqmod_t *c, mp_limb_t *const *rows, size_t n_rows, int w,
            const unsigned char *e, size_t nbytes, mp_limb_t *acc, mp_limb_t *scratch)
{
    size_t size = 2 * (size_t)c->h;
    const mp_limb_t *next = NULL;
    size_t i = 0;
    int have = 0;
    /* find the first non-zero digit, prefetching each entry one step ahead */
    for (; i < n_rows; i++) {
        unsigned d = window_digit(e, nbytes, i, w);
        if (d) {
            next = rows[i] + (size_t)(d - 1) * size;
            i++;
            break;
        }
    }
    while (next != NULL) {
        const mp_limb_t *entry = next;
        next = NULL;
        for (; i < n_rows; i++) {
            unsigned d = window_digit(e, nbytes, i, w);
            if (d) {
                next = rows[i] + (size_t)(d - 1) * size;
                prefetch(next, size * LIMB_BYTES);
                i++;
                break;
            }
        }
        if (have) {
            sq_mul(c, acc, acc, entry, scratch);
        } else {
            memcpy(acc, entry, size * LIMB_BYTES);
            have = 1;
        }
    }
    return have;
}

/* ------------------------------------------------------------------------------------------ */
/* CrtEncryptor: the key holder's (1 + m n) h_s^a modulo p^2 and q^2                           */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    sqmod_t cp, cq;           /* modulo p^2 and q^2 (p < q); secret */
    int window;
    int exponent_bits;
    size_t n_rows;
    size_t entries;           /* 2^window - 1 per row */
    mp_limb_t *table_p;       /* n_rows * entries residues mod p^2; secret */
    mp_limb_t *table_q;
    mp_limb_t **rows_p;       /* row pointers into the tables */
    mp_limb_t **rows_q;
    mp_limb_t *p2_inv;        /* (p^2)^-1 mod q^2, nq limbs; secret */
    mp_limb_t *n2;            /* p^2 q^2 = n^2, n2_size limbs (public) */
    mp_size_t n2_size;
    size_t table_limbs;       /* limbs of each table */
} CrtEncryptorObject;

static void
crt_release(CrtEncryptorObject *self)
{
    limbs_free(self->table_p, self->table_limbs, 1);
    limbs_free(self->table_q, self->table_limbs, 1);
    self->table_p = self->table_q = NULL;
    PyMem_RawFree(self->rows_p);
    PyMem_RawFree(self->rows_q);
    self->rows_p = self->rows_q = NULL;
    limbs_free(self->p2_inv, 2 * (size_t)self->cq.h, 1);
    self->p2_inv = NULL;
    limbs_free(self->n2, (size_t)self->n2_size, 0);
    self->n2 = NULL;
    sq_clear(&self->cp);
    sq_clear(&self->cq);
}

static void
crt_dealloc(PyObject *op)
{
    crt_release((CrtEncryptorObject *)op);
    Py_TYPE(op)->tp_free(op);
}

/* Build one prime's table of base^(d 2^(w i)) mod c->N (base: digits, destroyed). */
static int
crt_build(const sqmod_t *c, mp_limb_t *table, mp_limb_t **rows, size_t n_rows, size_t entries,
          mp_limb_t *base)
{
    size_t size = 2 * (size_t)c->h;
    mp_limb_t *w = limbs_alloc(SQ_SCRATCH(c->h));
    if (w == NULL) {
        return 0;
    }
    for (size_t i = 0; i < n_rows; i++) {
        rows[i] = table + i * entries * size;
        build_row(c, rows[i], entries, base, w);
    }
    limbs_free(w, SQ_SCRATCH(c->h), 1);
    return 1;
}

/* Overwrite the limbs an mpz holds now, then clear it (best effort: GMP's reallocations and
 * internal temporaries are not covered). */
static void
mpz_wipe_clear(mpz_t z)
{
    size_t n = mpz_size(z);
    if (n) {
        wipe(mpz_limbs_modify(z, (mp_size_t)n), n * LIMB_BYTES);
    }
    mpz_clear(z);
}

/* (p^2)^-1 mod q^2 into out (2 hq limbs, as a value < q^2); 0 if not invertible. */
static int
crt_inverse(const sqmod_t *cp, const sqmod_t *cq, mp_limb_t *out)
{
    mpz_t a, m, inv;
    int ok;
    mpz_inits(a, m, inv, NULL);
    mpz_import(a, (size_t)cp->nn, -1, LIMB_BYTES, 0, 0, cp->N);
    mpz_import(m, (size_t)cq->nn, -1, LIMB_BYTES, 0, 0, cq->N);
    ok = mpz_invert(inv, a, m);
    if (ok) {
        memset(out, 0, 2 * (size_t)cq->h * LIMB_BYTES);
        mpz_export(out, NULL, -1, LIMB_BYTES, 0, 0, inv);
    }
    mpz_wipe_clear(a);
    mpz_wipe_clear(m);
    mpz_wipe_clear(inv);
    return ok;
}

static PyObject *
crt_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"p2", "q2", "h_s", "exponent_bits", "window_bits", NULL};
    Py_buffer p2b = {0}, q2b = {0}, hsb = {0};
    int exponent_bits, window;
    CrtEncryptorObject *self = NULL;
    mp_limb_t *p2 = NULL, *q2 = NULL, *hs = NULL, *p = NULL, *q = NULL;
    mp_limb_t *base_p = NULL, *base_q = NULL, *w = NULL, *tmp = NULL;
    mp_size_t np2 = 0, nq2 = 0, nhs = 0, hp = 0, hq = 0, big = 0;
    int ok = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*y*ii:CrtEncryptor", kwlist, &p2b, &q2b,
                                     &hsb, &exponent_bits, &window)) {
        return NULL;
    }
    if (window < 1 || window > MAX_WINDOW_BITS) {
        PyErr_Format(PyExc_ValueError, "window_bits must be in [1, %d], got %d",
                     MAX_WINDOW_BITS, window);
        goto done;
    }
    if (exponent_bits < 1 || exponent_bits > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "exponent_bits must be in [1, 2^20], got %d",
                     exponent_bits);
        goto done;
    }
    if ((p2 = parse_positive(&p2b, "p2", &np2)) == NULL
        || (q2 = parse_positive(&q2b, "q2", &nq2)) == NULL
        || (hs = parse_positive(&hsb, "h_s", &nhs)) == NULL) {
        goto done;
    }
    if ((p = exact_sqrt(p2, np2, &hp, "p2")) == NULL
        || (q = exact_sqrt(q2, nq2, &hq, "q2")) == NULL) {
        goto done;
    }
    if ((hp == 1 && p[0] < 3) || (hq == 1 && q[0] < 3)) {
        PyErr_SetString(PyExc_ValueError, "p2 and q2 must be squares of integers above 2");
        goto done;
    }
    if (np2 > nq2 || (np2 == nq2 && mpn_cmp(p2, q2, np2) >= 0)) {
        PyErr_SetString(PyExc_ValueError, "p2 must be smaller than q2 (pass the smaller prime first)");
        goto done;
    }

    self = (CrtEncryptorObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        goto done;
    }
    if (!sq_init(&self->cp, p, hp, 1) || !sq_init(&self->cq, q, hq, 1)) {
        PyErr_NoMemory();
        goto done;
    }
    self->window = window;
    self->exponent_bits = exponent_bits;
    self->n_rows = ((size_t)exponent_bits + (size_t)window - 1) / (size_t)window;
    self->entries = ((size_t)1 << window) - 1;

    /* n^2 = p^2 q^2, and h_s < n^2 */
    self->n2_size = np2 + nq2;
    self->n2 = limbs_alloc((size_t)self->n2_size);
    if (self->n2 == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    mpn_mul(self->n2, q2, nq2, p2, np2);
    self->n2_size = limbs_size(self->n2, self->n2_size);
    if (nhs > self->n2_size || (nhs == self->n2_size && mpn_cmp(hs, self->n2, nhs) >= 0)) {
        PyErr_SetString(PyExc_ValueError, "h_s must be below p2 * q2");
        goto done;
    }

    size_t per_row, total;
    if (!mul_size(self->entries, 2 * (size_t)(hp > hq ? hp : hq), &per_row)
        || !mul_size(per_row, self->n_rows, &total) || total > (size_t)PY_SSIZE_T_MAX / 16) {
        PyErr_SetString(PyExc_MemoryError, "CRT tables too large: lower window_bits");
        goto done;
    }
    self->table_limbs = total;
    self->table_p = limbs_alloc(total);
    self->table_q = limbs_alloc(total);
    self->rows_p = (mp_limb_t **)PyMem_RawCalloc(self->n_rows, sizeof(mp_limb_t *));
    self->rows_q = (mp_limb_t **)PyMem_RawCalloc(self->n_rows, sizeof(mp_limb_t *));
    self->p2_inv = limbs_alloc(2 * (size_t)hq);
    base_p = limbs_alloc(2 * (size_t)hp);
    base_q = limbs_alloc(2 * (size_t)hq);
    big = nhs > nq2 ? nhs : nq2;  /* q2 has at least as many limbs as p2 */
    tmp = limbs_alloc((size_t)big + 1);
    w = limbs_alloc(SQ_SCRATCH(big));
    if (self->table_p == NULL || self->table_q == NULL || self->rows_p == NULL
        || self->rows_q == NULL || self->p2_inv == NULL || base_p == NULL || base_q == NULL
        || tmp == NULL || w == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (!crt_inverse(&self->cp, &self->cq, self->p2_inv)) {
        PyErr_SetString(PyExc_ValueError, "p2 and q2 must be coprime");
        goto done;
    }
    /* h_s mod p^2 and mod q^2, as digits */
    /* h_s mod p^2 and mod q^2 (np2 limbs >= hp), as digits */
    memset(tmp, 0, ((size_t)big + 1) * LIMB_BYTES);
    if (nhs >= np2) {
        mpn_tdiv_qr(w, tmp, 0, hs, nhs, p2, np2);
    } else {
        memcpy(tmp, hs, (size_t)nhs * LIMB_BYTES);
    }
    sq_from_value(&self->cp, base_p, tmp, np2, w);
    memset(tmp, 0, ((size_t)big + 1) * LIMB_BYTES);
    if (nhs >= nq2) {
        mpn_tdiv_qr(w, tmp, 0, hs, nhs, q2, nq2);
    } else {
        memcpy(tmp, hs, (size_t)nhs * LIMB_BYTES);
    }
    sq_from_value(&self->cq, base_q, tmp, nq2, w);

    {
        int built;
        Py_BEGIN_ALLOW_THREADS
        built = crt_build(&self->cp, self->table_p, self->rows_p, self->n_rows, self->entries,
                          base_p)
                && crt_build(&self->cq, self->table_q, self->rows_q, self->n_rows,
                             self->entries, base_q);
        Py_END_ALLOW_THREADS
        if (!built) {
            PyErr_NoMemory();
            goto done;
        }
    }
    ok = 1;

done:
    limbs_free(p2, (size_t)np2, 1);
    limbs_free(q2, (size_t)nq2, 1);
    limbs_free(hs, (size_t)nhs, 0);
    limbs_free(p, (size_t)hp, 1);
    limbs_free(q, (size_t)hq, 1);
    limbs_free(base_p, 2 * (size_t)hp, 1);
    limbs_free(base_q, 2 * (size_t)hq, 1);
    limbs_free(tmp, (size_t)big + 1, 1);
    limbs_free(w, SQ_SCRATCH(big), 1);
    PyBuffer_Release(&p2b);
    PyBuffer_Release(&q2b);
    PyBuffer_Release(&hsb);
    if (!ok) {
        Py_XDECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Check that n (big-endian bytes) squares to this encryptor's n^2; returns its limbs. */
static mp_limb_t *
crt_check_n(CrtEncryptorObject *self, const Py_buffer *nb, mp_size_t *kn_out)
{
    mp_size_t kn;
    mp_limb_t *n = parse_positive(nb, "n", &kn);
    if (n == NULL) {
        return NULL;
    }
    mp_limb_t *sq = limbs_alloc(2 * (size_t)kn);
    if (sq == NULL) {
        PyMem_RawFree(n);
        PyErr_NoMemory();
        return NULL;
    }
    mpn_sqr(sq, n, kn);
    mp_size_t sn = limbs_size(sq, 2 * kn);
    int same = sn == self->n2_size && mpn_cmp(sq, self->n2, sn) == 0;
    PyMem_RawFree(sq);
    if (!same) {
        PyMem_RawFree(n);
        PyErr_SetString(PyExc_ValueError, "n does not match this encryptor's key (n^2 != p2 q2)");
        return NULL;
    }
    *kn_out = kn;
    return n;
}

/* Validate a batch: counts from byte lengths; exponent within the table. */
static int
check_batch(const Py_buffer *values, Py_ssize_t value_width, const Py_buffer *rand,
            Py_ssize_t rand_width, size_t table_bits, const char *what, Py_ssize_t *count)
{
    if (value_width < 1) {
        PyErr_Format(PyExc_ValueError, "%s_width must be positive, got %zd", what, value_width);
        return 0;
    }
    if (rand_width < 1) {
        PyErr_Format(PyExc_ValueError, "randomness_width must be positive, got %zd", rand_width);
        return 0;
    }
    if (values->len % value_width != 0) {
        PyErr_Format(PyExc_ValueError, "%zd bytes of %ss are not a whole number of %zd-byte values",
                     values->len, what, value_width);
        return 0;
    }
    Py_ssize_t n = values->len / value_width;
    if (rand_width > PY_SSIZE_T_MAX / (n ? n : 1) || rand->len != n * rand_width) {
        PyErr_Format(PyExc_ValueError, "%zd %ss need %zd x %zd bytes of randomness, got %zd",
                     n, what, n, rand_width, rand->len);
        return 0;
    }
    if ((size_t)rand_width > table_bits / 8) {
        PyErr_Format(PyExc_ValueError,
                     "randomness_width %zd exceeds this table's %zu exponent bytes",
                     rand_width, table_bits / 8);
        return 0;
    }
    *count = n;
    return 1;
}

PyDoc_STRVAR(crt_encrypt_doc,
"encrypt(n, plaintexts, plaintext_width, randomness, randomness_width) -> bytes\n"
"\n"
"DJN encryptions ``(1 + m n) h_s^a mod n^2`` computed modulo p^2 and q^2 and recombined by\n"
"CRT: exactly ``secure_agg.paillier._CrtEncryptor.encrypt(m, a)``.\n"
"\n"
"n: the public modulus, big-endian (its length in bytes sets the output width 2 * len(n)).\n"
"plaintexts: big-endian, plaintext_width bytes each, each below n.\n"
"randomness: the exponents a, randomness_width bytes each, LITTLE-endian (as\n"
"``int.from_bytes(chunk, 'little')`` in the Python kernel); at most exponent_bits / 8 bytes.\n"
"Returns the ciphertexts, big-endian, 2 * len(n) bytes each. Releases the GIL.");

static PyObject *
crt_encrypt(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n", "plaintexts", "plaintext_width", "randomness",
                             "randomness_width", NULL};
    CrtEncryptorObject *self = (CrtEncryptorObject *)op;
    Py_buffer nb = {0}, mb = {0}, rb = {0};
    Py_ssize_t mwidth, rwidth, count = 0, bad = -1;
    mp_limb_t *n = NULL, *scratch = NULL;
    mp_size_t kn = 0;
    size_t scratch_limbs = 0, out_width;
    PyObject *result = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*ny*n:encrypt", kwlist, &nb, &mb, &mwidth,
                                     &rb, &rwidth)) {
        return NULL;
    }
    if (!check_batch(&mb, mwidth, &rb, rwidth, self->n_rows * (size_t)self->window,
                     "plaintext", &count)) {
        goto done;
    }
    if ((n = crt_check_n(self, &nb, &kn)) == NULL) {
        goto done;
    }
    out_width = 2 * (size_t)nb.len;
    if ((size_t)count > (size_t)PY_SSIZE_T_MAX / out_width) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(out_width * (size_t)count));
    if (result == NULL) {
        goto done;
    }
    {
        const sqmod_t *cp = &self->cp, *cq = &self->cq;
        mp_size_t hp = cp->h, hq = cq->h, np2 = cp->nn, nq2 = cq->nn;
        mp_size_t mn = 2 * kn;              /* limbs of m n + 1 */
        mp_size_t on = 2 * hp + 2 * hq;     /* limbs of the output */
        /* m | mn | quotient | acc_p | acc_q | xp | xq | d | prod | out | sq scratch */
        size_t sizes[11] = {(size_t)kn, (size_t)mn, (size_t)mn + 1, 2 * (size_t)hp,
                            2 * (size_t)hq, 2 * (size_t)hp, 2 * (size_t)hq, 2 * (size_t)hq,
                            4 * (size_t)hq, (size_t)on, SQ_SCRATCH(hp > hq ? hp : hq)};
        for (int i = 0; i < 11; i++) {
            scratch_limbs += sizes[i];
        }
        scratch = limbs_alloc(scratch_limbs);
        if (scratch == NULL) {
            PyErr_NoMemory();
            Py_CLEAR(result);
            goto done;
        }
        mp_limb_t *m = scratch, *t = m + kn, *quot = t + mn, *acc_p = quot + mn + 1;
        mp_limb_t *acc_q = acc_p + 2 * hp, *xp = acc_q + 2 * hq, *xq = xp + 2 * hp;
        mp_limb_t *d = xq + 2 * hq, *prod = d + 2 * hq, *out = prod + 4 * hq, *w = out + on;
        const unsigned char *mbytes = (const unsigned char *)mb.buf;
        const unsigned char *rbytes = (const unsigned char *)rb.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        size_t rows_used = ((size_t)rwidth * 8 + (size_t)self->window - 1) / (size_t)self->window;

        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < count; i++) {
            const unsigned char *e = rbytes + i * rwidth;
            if (!bytes_to_limbs(m, kn, mbytes + i * mwidth, (size_t)mwidth)
                || mpn_cmp(m, n, kn) >= 0) {
                bad = i;
                break;
            }
            /* t = 1 + m n */
            mpn_mul_n(t, m, n, kn);
            mpn_add_1(t, t, mn, 1);
            /* xp = (1 + m n) h_s^a mod p^2 */
            mpn_tdiv_qr(quot, xp, 0, t, mn, cp->N, np2);
            memset(xp + np2, 0, (size_t)(2 * hp - np2) * LIMB_BYTES);
            if (table_power(cp, self->rows_p, rows_used, self->window, e, (size_t)rwidth, acc_p,
                            w)) {
                sq_from_value(cp, d, xp, 2 * hp, w);
                sq_mul(cp, acc_p, acc_p, d, w);
                sq_to_value(cp, xp, acc_p);
            }
            mpn_tdiv_qr(quot, xq, 0, t, mn, cq->N, nq2);
            memset(xq + nq2, 0, (size_t)(2 * hq - nq2) * LIMB_BYTES);
            if (table_power(cq, self->rows_q, rows_used, self->window, e, (size_t)rwidth, acc_q,
                            w)) {
                sq_from_value(cq, d, xq, 2 * hq, w);
                sq_mul(cq, acc_q, acc_q, d, w);
                sq_to_value(cq, xq, acc_q);
            }
            /* x = xp + p^2 ((xq - xp) (p^2)^-1 mod q^2); xp < p^2 < q^2 */
            memset(d, 0, 2 * (size_t)hq * LIMB_BYTES);
            memcpy(d, xp, 2 * (size_t)hp * LIMB_BYTES);
            if (mpn_sub_n(d, xq, d, 2 * hq)) {
                mpn_add_n(d, d, cq->N, 2 * hq);
            }
            mpn_mul_n(prod, d, self->p2_inv, 2 * hq);
            mpn_tdiv_qr(quot, d, 0, prod, 4 * hq, cq->N, nq2);
            memset(d + nq2, 0, (size_t)(2 * hq - nq2) * LIMB_BYTES);
            mpn_mul(out, d, 2 * hq, cp->N, 2 * hp);
            mpn_add(out, out, on, xp, 2 * hp);
            limbs_to_bytes(dst + (size_t)i * out_width, out_width, out, on);
        }
        Py_END_ALLOW_THREADS
    }
    if (bad >= 0) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "plaintext %zd is outside [0, n)", bad);
    }

done:
    limbs_free(scratch, scratch_limbs, 1);
    PyMem_RawFree(n);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&mb);
    PyBuffer_Release(&rb);
    return result;
}

static PyObject *
crt_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    (void)op;
    PyErr_SetString(PyExc_TypeError,
                    "a CrtEncryptor holds key material and must not be pickled or copied");
    return NULL;
}

static PyObject *
crt_reduce_ex(PyObject *op, PyObject *Py_UNUSED(protocol))
{
    return crt_reduce(op, NULL);
}

static PyObject *
crt_repr(PyObject *op)
{
    CrtEncryptorObject *self = (CrtEncryptorObject *)op;
    return PyUnicode_FromFormat("CrtEncryptor(<secret>, exponent_bits=%d, window_bits=%d)",
                                self->exponent_bits, self->window);
}

static PyObject *
crt_get_exponent_bits(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(((CrtEncryptorObject *)op)->exponent_bits);
}

static PyObject *
crt_get_window_bits(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(((CrtEncryptorObject *)op)->window);
}

static PyMethodDef crt_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))crt_encrypt, METH_VARARGS | METH_KEYWORDS,
     crt_encrypt_doc},
    {"__reduce__", crt_reduce, METH_NOARGS, "Refuse pickling (key material)."},
    {"__reduce_ex__", crt_reduce_ex, METH_O, "Refuse pickling (key material)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef crt_getset[] = {
    {"exponent_bits", crt_get_exponent_bits, NULL, "Bits of exponent the tables cover.", NULL},
    {"window_bits", crt_get_window_bits, NULL, "Bits per table row.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(crt_doc,
"CrtEncryptor(p2, q2, h_s, exponent_bits, window_bits)\n"
"\n"
"The key holder's fast DJN encryption: tables of h_s^(d 2^(w i)) modulo p^2 and q^2\n"
"(1 <= d < 2^w, i < ceil(exponent_bits / w)), as secure_agg.paillier._CrtEncryptor.\n"
"p2 < q2, h_s: big-endian bytes. The tables are key material: they stay in C memory, are\n"
"overwritten when the object is freed, and the object cannot be pickled or copied.\n"
"Memory: 2 * ceil(exponent_bits / w) * (2^w - 1) * len(p2) bytes (54 MB for a 2048-bit key,\n"
"w = 10). Built with the GIL released.");

static PyTypeObject CrtEncryptorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "secure_agg._gmp_kernels.CrtEncryptor",
    .tp_basicsize = sizeof(CrtEncryptorObject),
    .tp_dealloc = crt_dealloc,
    .tp_repr = crt_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = crt_doc,
    .tp_methods = crt_methods,
    .tp_getset = crt_getset,
    .tp_new = crt_new,
};

/* ------------------------------------------------------------------------------------------ */
/* FixedBase: public powers of h_s mod n^2 with byte digits (DJN encryption, re-randomisation)  */
/* ------------------------------------------------------------------------------------------ */

#define FB_WINDOW 8
#define FB_ENTRIES 255

typedef struct {
    PyObject_HEAD
    sqmod_t c;
    size_t n_bytes;           /* length of n as given: ciphertexts are 2 n_bytes wide */
    Py_ssize_t max_rows;
    Py_ssize_t n_rows;        /* rows built so far (under lock) */
    mp_limb_t **rows;         /* max_rows pointers, the first n_rows set */
    mp_limb_t *next;          /* base^(256^n_rows), digits */
    PyThread_type_lock lock;
} FixedBaseObject;

static void
fb_dealloc(PyObject *op)
{
    FixedBaseObject *self = (FixedBaseObject *)op;
    if (self->rows != NULL) {
        for (Py_ssize_t i = 0; i < self->n_rows; i++) {
            PyMem_RawFree(self->rows[i]);
        }
        PyMem_RawFree(self->rows);
    }
    PyMem_RawFree(self->next);
    sq_clear(&self->c);
    if (self->lock != NULL) {
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(op)->tp_free(op);
}

static PyObject *
fb_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n", "base", "max_exponent_bytes", NULL};
    Py_buffer nb = {0}, bb = {0};
    Py_ssize_t max_bytes;
    FixedBaseObject *self = NULL;
    mp_limb_t *n = NULL, *base = NULL, *w = NULL;
    mp_size_t h = 0, nbase = 0;
    int ok = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*n:FixedBase", kwlist, &nb, &bb,
                                     &max_bytes)) {
        return NULL;
    }
    if (max_bytes < 1 || max_bytes > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "max_exponent_bytes must be in [1, 2^20], got %zd",
                     max_bytes);
        goto done;
    }
    if ((n = parse_positive(&nb, "n", &h)) == NULL
        || (base = parse_positive(&bb, "base", &nbase)) == NULL) {
        goto done;
    }
    if (h == 1 && n[0] < 2) {
        PyErr_SetString(PyExc_ValueError, "n must be at least 2");
        goto done;
    }
    self = (FixedBaseObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        goto done;
    }
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL || !sq_init(&self->c, n, h, 0)) {
        PyErr_NoMemory();
        goto done;
    }
    if (nbase > self->c.nn
        || (nbase == self->c.nn && mpn_cmp(base, self->c.N, nbase) >= 0)) {
        PyErr_SetString(PyExc_ValueError, "base must be below n^2");
        goto done;
    }
    self->n_bytes = (size_t)nb.len;
    self->max_rows = max_bytes;
    self->rows = (mp_limb_t **)PyMem_RawCalloc((size_t)max_bytes, sizeof(mp_limb_t *));
    self->next = limbs_alloc(2 * (size_t)h);
    w = limbs_alloc(SQ_SCRATCH(nbase > h ? nbase : h));
    if (self->rows == NULL || self->next == NULL || w == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    {
        mp_limb_t *padded = limbs_alloc(2 * (size_t)h);
        if (padded == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(padded, base, (size_t)nbase * LIMB_BYTES);
        sq_from_value(&self->c, self->next, padded, 2 * h, w);
        PyMem_RawFree(padded);
    }
    ok = 1;

done:
    PyMem_RawFree(n);
    PyMem_RawFree(base);
    PyMem_RawFree(w);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&bb);
    if (!ok) {
        Py_XDECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Build rows up to `need` (call with self->lock held, without the GIL). 0 on allocation failure. */
static int
fb_grow(FixedBaseObject *self, Py_ssize_t need)
{
    size_t size = 2 * (size_t)self->c.h;
    if (self->n_rows >= need) {
        return 1;
    }
    mp_limb_t *w = limbs_alloc(SQ_SCRATCH(self->c.h));
    if (w == NULL) {
        return 0;
    }
    int ok = 1;
    while (self->n_rows < need) {
        mp_limb_t *row = limbs_alloc(FB_ENTRIES * size);
        if (row == NULL) {
            ok = 0;
            break;
        }
        build_row(&self->c, row, FB_ENTRIES, self->next, w);
        self->rows[self->n_rows] = row;
        self->n_rows++;
    }
    PyMem_RawFree(w);
    return ok;
}

/* Make sure `need` rows exist (takes the lock without the GIL). Returns 0 with MemoryError. */
static int
fb_ensure(FixedBaseObject *self, Py_ssize_t need)
{
    int ok;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    ok = fb_grow(self, need);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_NoMemory();
    }
    return ok;
}

/* The shared body of encrypt (plain = 1) and rerandomize (plain = 0). */
static PyObject *
fb_apply(FixedBaseObject *self, PyObject *args, PyObject *kwds, int plain)
{
    static char *enc_kw[] = {"plaintexts", "plaintext_width", "randomness", "randomness_width",
                             NULL};
    static char *rr_kw[] = {"ciphertexts", "ciphertext_width", "randomness", "randomness_width",
                            NULL};
    Py_buffer vb = {0}, rb = {0};
    Py_ssize_t vwidth, rwidth, count = 0, bad = -1;
    mp_limb_t *scratch = NULL;
    size_t scratch_limbs = 0, out_width = 2 * self->n_bytes;
    PyObject *result = NULL;
    const sqmod_t *c = &self->c;
    mp_size_t h = c->h;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, plain ? "y*ny*n:encrypt" : "y*ny*n:rerandomize",
                                     plain ? enc_kw : rr_kw, &vb, &vwidth, &rb, &rwidth)) {
        return NULL;
    }
    if (!check_batch(&vb, vwidth, &rb, rwidth, (size_t)self->max_rows * 8,
                     plain ? "plaintext" : "ciphertext", &count)) {
        goto done;
    }
    if (!fb_ensure(self, rwidth)) {
        goto done;
    }
    if ((size_t)count > (size_t)PY_SSIZE_T_MAX / out_width) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(out_width * (size_t)count));
    if (result == NULL) {
        goto done;
    }
    /* value (2h) | acc (2h) | x (2h) | sq scratch */
    scratch_limbs = 6 * (size_t)h + SQ_SCRATCH(h);
    scratch = limbs_alloc(scratch_limbs);
    if (scratch == NULL) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    {
        mp_limb_t *value = scratch, *acc = value + 2 * h, *x = acc + 2 * h, *w = x + 2 * h;
        const unsigned char *vbytes = (const unsigned char *)vb.buf;
        const unsigned char *rbytes = (const unsigned char *)rb.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        mp_limb_t *const *rows = self->rows;

        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < count; i++) {
            const unsigned char *src = vbytes + i * vwidth;
            int have = table_power(c, rows, (size_t)rwidth, FB_WINDOW, rbytes + i * rwidth,
                                   (size_t)rwidth, acc, w);
            if (plain) {
                /* m < n; result = (1 + m n) acc */
                if (!bytes_to_limbs(value, h, src, (size_t)vwidth)
                    || mpn_cmp(value, c->n, h) >= 0) {
                    bad = i;
                    break;
                }
                if (!have) {
                    sq_one(c, acc);
                }
                sq_mul_plain(c, acc, acc, value, w);
            } else {
                /* 0 < c < n^2; result = c acc */
                if (!bytes_to_limbs(value, 2 * h, src, (size_t)vwidth)
                    || limbs_is_zero(value, 2 * h) || mpn_cmp(value, c->N, 2 * h) >= 0) {
                    bad = i;
                    break;
                }
                sq_from_value(c, x, value, 2 * h, w);
                if (have) {
                    sq_mul(c, acc, acc, x, w);
                } else {
                    memcpy(acc, x, 2 * (size_t)h * LIMB_BYTES);
                }
            }
            sq_to_value(c, x, acc);
            limbs_to_bytes(dst + (size_t)i * out_width, out_width, x, 2 * h);
        }
        Py_END_ALLOW_THREADS
    }
    if (bad >= 0) {
        Py_CLEAR(result);
        if (plain) {
            PyErr_Format(PyExc_ValueError, "plaintext %zd is outside [0, n)", bad);
        } else {
            PyErr_Format(PyExc_ValueError, "ciphertext %zd is outside (0, n^2)", bad);
        }
    }

done:
    /* acc held randomisers: with the ciphertext they would reveal the plaintext */
    limbs_free(scratch, scratch_limbs, 1);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&rb);
    return result;
}

PyDoc_STRVAR(fb_encrypt_doc,
"encrypt(plaintexts, plaintext_width, randomness, randomness_width) -> bytes\n"
"\n"
"DJN encryptions ``(1 + m n) base^a mod n^2``: exactly ``(1 + m n) *\n"
"_FixedBaseTable.power(chunk) % n^2``. plaintexts: big-endian, each below n; randomness: the\n"
"exponents' little-endian byte digits, randomness_width bytes each. Output: 2 * len(n) bytes\n"
"per ciphertext. Releases the GIL.");

static PyObject *
fb_encrypt(PyObject *op, PyObject *args, PyObject *kwds)
{
    return fb_apply((FixedBaseObject *)op, args, kwds, 1);
}

PyDoc_STRVAR(fb_rerandomize_doc,
"rerandomize(ciphertexts, ciphertext_width, randomness, randomness_width) -> bytes\n"
"\n"
"``c * base^b mod n^2`` for each ciphertext c in (0, n^2) (big-endian) and exponent b\n"
"(little-endian byte digits): exactly PublicKey._obfuscate. Releases the GIL.");

static PyObject *
fb_rerandomize(PyObject *op, PyObject *args, PyObject *kwds)
{
    return fb_apply((FixedBaseObject *)op, args, kwds, 0);
}

PyDoc_STRVAR(fb_power_doc,
"power(digits) -> bytes\n"
"\n"
"``base^e mod n^2`` for the exponent e with little-endian byte digits ``digits`` (as\n"
"_FixedBaseTable.power), big-endian, 2 * len(n) bytes.");

static PyObject *
fb_power(PyObject *op, PyObject *arg)
{
    FixedBaseObject *self = (FixedBaseObject *)op;
    Py_buffer eb = {0};
    PyObject *result = NULL;
    mp_limb_t *scratch = NULL;
    mp_size_t h = self->c.h;
    size_t scratch_limbs = 4 * (size_t)h + SQ_SCRATCH(h);

    if (PyObject_GetBuffer(arg, &eb, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (eb.len > self->max_rows) {
        PyErr_Format(PyExc_ValueError, "%zd exponent bytes exceed this table's %zd", eb.len,
                     self->max_rows);
        goto done;
    }
    if (!fb_ensure(self, eb.len)) {
        goto done;
    }
    scratch = limbs_alloc(scratch_limbs);
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(2 * self->n_bytes));
    if (scratch == NULL || result == NULL) {
        Py_CLEAR(result);
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        goto done;
    }
    {
        mp_limb_t *acc = scratch, *x = acc + 2 * h, *w = x + 2 * h;
        Py_BEGIN_ALLOW_THREADS
        if (!table_power(&self->c, self->rows, (size_t)eb.len, FB_WINDOW,
                         (const unsigned char *)eb.buf, (size_t)eb.len, acc, w)) {
            sq_one(&self->c, acc);
        }
        sq_to_value(&self->c, x, acc);
        limbs_to_bytes((unsigned char *)PyBytes_AS_STRING(result), 2 * self->n_bytes, x, 2 * h);
        Py_END_ALLOW_THREADS
    }

done:
    limbs_free(scratch, scratch_limbs, 1);
    PyBuffer_Release(&eb);
    return result;
}

static PyObject *
fb_get_rows(PyObject *op, void *Py_UNUSED(closure))
{
    FixedBaseObject *self = (FixedBaseObject *)op;
    Py_ssize_t rows;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    rows = self->n_rows;
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    return PyLong_FromSsize_t(rows);
}

static PyObject *
fb_repr(PyObject *op)
{
    FixedBaseObject *self = (FixedBaseObject *)op;
    return PyUnicode_FromFormat("FixedBase(n_bytes=%zu, max_exponent_bytes=%zd)", self->n_bytes,
                                self->max_rows);
}

static PyMethodDef fb_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))fb_encrypt, METH_VARARGS | METH_KEYWORDS,
     fb_encrypt_doc},
    {"rerandomize", (PyCFunction)(void (*)(void))fb_rerandomize, METH_VARARGS | METH_KEYWORDS,
     fb_rerandomize_doc},
    {"power", fb_power, METH_O, fb_power_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fb_getset[] = {
    {"rows", fb_get_rows, NULL, "Rows (exponent bytes) built so far.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(fb_doc,
"FixedBase(n, base, max_exponent_bytes)\n"
"\n"
"Public fixed-base table of base^(d 256^i) mod n^2 (1 <= d < 256), rows built on demand up to\n"
"max_exponent_bytes (thread-safe), as secure_agg.paillier._FixedBaseTable. n, base:\n"
"big-endian bytes; ciphertexts are 2 * len(n) bytes. Memory: 255 * 2 * len(n) bytes per row\n"
"(17 MB for 128 rows, 35 MB for 272 at 2048 bits).");

static PyTypeObject FixedBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "secure_agg._gmp_kernels.FixedBase",
    .tp_basicsize = sizeof(FixedBaseObject),
    .tp_dealloc = fb_dealloc,
    .tp_repr = fb_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = fb_doc,
    .tp_methods = fb_methods,
    .tp_getset = fb_getset,
    .tp_new = fb_new,
};

/* ------------------------------------------------------------------------------------------ */
/* Shared input checks of group_sums and pack                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    mp_limb_t *N;      /* the modulus n^2, nn limbs */
    mp_size_t nn;
    mp_limb_t *n;      /* sqrt, h limbs */
    mp_size_t h;
} square_t;

static void
square_clear(square_t *s)
{
    PyMem_RawFree(s->N);
    PyMem_RawFree(s->n);
    s->N = s->n = NULL;
}

/* Parse n^2 and check that values of width bytes can hold every residue. */
static int
square_parse(square_t *s, const Py_buffer *nb, Py_ssize_t width)
{
    s->N = s->n = NULL;
    if ((s->N = parse_positive(nb, "n2", &s->nn)) == NULL) {
        return 0;
    }
    if ((s->n = exact_sqrt(s->N, s->nn, &s->h, "n2")) == NULL) {
        square_clear(s);
        return 0;
    }
    if (s->h == 1 && s->n[0] < 2) {
        square_clear(s);
        PyErr_SetString(PyExc_ValueError, "n2 must be the square of an integer n >= 2");
        return 0;
    }
    size_t bits = mpn_sizeinbase(s->N, s->nn, 2);
    if (width < 1 || (size_t)width < (bits + 7) / 8) {
        square_clear(s);
        PyErr_Format(PyExc_ValueError, "width %zd cannot hold values below n2 (%zu bytes)", width,
                     (bits + 7) / 8);
        return 0;
    }
    return 1;
}

/* Ciphertext i of width bytes into v (nv >= nn limbs); 0 unless 0 < c < N. */
static int
read_ciphertext(mp_limb_t *v, mp_size_t nv, const unsigned char *src, size_t width,
                const mp_limb_t *N, mp_size_t nn)
{
    if (!bytes_to_limbs(v, nv, src, width) || limbs_is_zero(v, nv)) {
        return 0;
    }
    return limbs_size(v, nv) < nn || (limbs_size(v, nv) == nn && mpn_cmp(v, N, nn) < 0);
}

/* ------------------------------------------------------------------------------------------ */
/* group_sums                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Where a kernel reads row i's group in column j: an int32 matrix of group ids, or (binned_sums)
 * the job's bins and the rows' node slots, group = slot * bin_width + bin (-1 where the slot is
 * -1), made as it is read so that no matrix of group ids exists. Columns col0 .. col0 + n_cols
 * of rows of stride entries. */
typedef struct {
    const unsigned char *cells;   /* int32 ids, or bins of itemsize bytes (native byte order) */
    int itemsize;                 /* 0: int32 group ids; 1, 2, 4: bins as uint8, uint16, int32 */
    const int32_t *slots;         /* bins only: each row's node slot */
    int32_t bin_width;
    size_t stride;
    size_t col0;
} groups_t;

/* Row i's node slot (bins), or 0 for a matrix of ids: -1 means the row has no group. */
static inline int32_t
groups_slot(const groups_t *G, size_t i)
{
    int32_t s = 0;
    if (G->itemsize) {
        memcpy(&s, G->slots + i, sizeof s);
    }
    return s;
}

/* The group of row i (whose slot is slot) in column j. */
static inline int32_t
groups_at(const groups_t *G, size_t i, int32_t slot, size_t j)
{
    size_t k = i * G->stride + G->col0 + j;
    switch (G->itemsize) {
    case 0: {
        int32_t g;
        memcpy(&g, G->cells + 4 * k, sizeof g);
        return g;
    }
    case 1:
        return slot < 0 ? -1 : slot * G->bin_width + (int32_t)G->cells[k];
    case 2: {
        uint16_t b;
        memcpy(&b, G->cells + 2 * k, sizeof b);
        return slot < 0 ? -1 : slot * G->bin_width + (int32_t)b;
    }
    default: {
        int32_t b;
        memcpy(&b, G->cells + 4 * k, sizeof b);
        return slot < 0 ? -1 : slot * G->bin_width + b;
    }
    }
}

/* Column by column with base-n digits: few columns. Returns the first bad row or -1. */
static Py_ssize_t
group_sums_digits(const square_t *s, const unsigned char *cts, size_t width, const groups_t *G,
                  Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t n_groups, unsigned char *dst,
                  mp_limb_t *digits, mp_limb_t *acc, unsigned char *used, mp_limb_t *w)
{
    sqmod_t c;
    mp_size_t h = s->h;
    size_t size = 2 * (size_t)h;
    c.h = h;
    c.nn = s->nn;
    c.n = s->n;
    c.N = NULL;
    c.secret = 0;
    mp_limb_t *value = w + SQ_SCRATCH(h);   /* 2h limbs */
    for (Py_ssize_t i = 0; i < n_rows; i++) {
        if (!read_ciphertext(value, 2 * h, cts + (size_t)i * width, width, s->N, s->nn)) {
            return i;
        }
        sq_from_value(&c, digits + (size_t)i * size, value, 2 * h, w);
    }
    for (Py_ssize_t j = 0; j < n_cols; j++) {
        memset(used, 0, (size_t)n_groups);
        for (Py_ssize_t i = 0; i < n_rows; i++) {
            int32_t g = groups_at(G, (size_t)i, groups_slot(G, (size_t)i), (size_t)j);
            if (g < 0) {
                continue;
            }
            mp_limb_t *a = acc + (size_t)g * size;
            if (used[g]) {
                sq_mul(&c, a, a, digits + (size_t)i * size, w);
            } else {
                memcpy(a, digits + (size_t)i * size, size * LIMB_BYTES);
                used[g] = 1;
            }
        }
        for (Py_ssize_t g = 0; g < n_groups; g++) {
            unsigned char *out = dst + ((size_t)j * (size_t)n_groups + (size_t)g) * width;
            if (used[g]) {
                sq_to_value(&c, value, acc + (size_t)g * size);
                limbs_to_bytes(out, width, value, 2 * h);
            } else {
                memset(out, 0, width);
            }
        }
    }
    return -1;
}

/* Row by row with per-row multiple tables and relaxed accumulators: many columns. */
static Py_ssize_t
group_sums_rows(const square_t *s, const unsigned char *cts, size_t width, const groups_t *G,
                Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t n_groups, unsigned char *dst,
                mp_limb_t *table, mp_limb_t *acc, unsigned char *used, mp_limb_t *w,
                addmul_fn addmul)
{
    mp_size_t nn = s->nn, L = nn + 2;
    const mp_limb_t *N = s->N;
    mp_limb_t *fresh = w, *shifted = w + L, *quot = shifted + nn + 1;  /* L | nn+1 | L+1 */
    for (Py_ssize_t i = 0; i < n_rows; i++) {
        int32_t slot = groups_slot(G, (size_t)i);
        int any = 0;
        for (Py_ssize_t j = 0; j < n_cols && slot >= 0; j++) {
            if (groups_at(G, (size_t)i, slot, (size_t)j) >= 0) {
                any = 1;
                break;
            }
        }
        if (!read_ciphertext(table, nn, cts + (size_t)i * width, width, N, nn)) {
            return i;
        }
        if (!any) {
            continue;
        }
        /* table[k] = c B^k mod N, k < L */
        for (mp_size_t k = 1; k < L; k++) {
            shifted[0] = 0;
            memcpy(shifted + 1, table + (size_t)(k - 1) * (size_t)nn, (size_t)nn * LIMB_BYTES);
            mpn_tdiv_qr(quot, table + (size_t)k * (size_t)nn, 0, shifted, nn + 1, N, nn);
        }
        int32_t g_next = groups_at(G, (size_t)i, slot, 0);
        for (Py_ssize_t j = 0; j < n_cols; j++) {
            int32_t g = g_next;
            if (j + 1 < n_cols) {
                g_next = groups_at(G, (size_t)i, slot, (size_t)(j + 1));
                if (g_next >= 0) {
                    prefetch(acc + ((size_t)(j + 1) * (size_t)n_groups + (size_t)g_next) * (size_t)L,
                             (size_t)L * LIMB_BYTES);
                }
            }
            if (g < 0) {
                continue;
            }
            size_t slot = (size_t)j * (size_t)n_groups + (size_t)g;
            mp_limb_t *a = acc + slot * (size_t)L;
            if (!used[slot]) {
                memcpy(a, table, (size_t)nn * LIMB_BYTES);
                a[nn] = a[nn + 1] = 0;
                used[slot] = 1;
                continue;
            }
            /* fresh = sum_k a_k table[k] < L B N <= B^L */
            mp_limb_t lo = 0, hi = 0;
            memset(fresh, 0, (size_t)nn * LIMB_BYTES);
            for (mp_size_t k = 0; k < L; k++) {
                if (a[k]) {
                    mp_limb_t cy = addmul(fresh, table + (size_t)k * (size_t)nn, nn, a[k]);
                    lo += cy;
                    hi += lo < cy;
                }
            }
            fresh[nn] = lo;
            fresh[nn + 1] = hi;
            memcpy(a, fresh, (size_t)L * LIMB_BYTES);
        }
    }
    for (size_t slot = 0; slot < (size_t)n_cols * (size_t)n_groups; slot++) {
        unsigned char *out = dst + slot * width;
        if (used[slot]) {
            mpn_tdiv_qr(quot, fresh, 0, acc + slot * (size_t)L, L, N, nn);
            limbs_to_bytes(out, width, fresh, nn);
        } else {
            memset(out, 0, width);
        }
    }
    return -1;
}

/* Allocate, check the groups, run one of the two loops. Sizes are checked by the caller; returns
 * a new bytes object of n_cols * n_groups values, or NULL with an exception set. */
static PyObject *
group_sums_run(const square_t *s, const unsigned char *cts, Py_ssize_t width, const groups_t *G,
               Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t n_groups,
               Py_ssize_t table_min_cols, int adx)
{
    Py_ssize_t bad_row = -1, bad_g_row = -1, bad_g_col = -1, bad_slot_row = -1;
    int32_t bad_g = 0;
    PyObject *result = NULL;
    mp_limb_t *rowbuf = NULL, *acc = NULL, *w = NULL;
    unsigned char *used = NULL;
    size_t rowbuf_limbs = 0, acc_limbs = 0, w_limbs = 0, slots = 0, out_size;
    int memory_error = 0, use_rows;

    if (!mul_size((size_t)n_cols, (size_t)n_groups, &slots)
        || !mul_size(slots, (size_t)width, &out_size)) {
        return PyErr_NoMemory();
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)out_size);
    if (result == NULL) {
        return NULL;
    }
    use_rows = n_cols >= table_min_cols;
    {
        mp_size_t L = s->nn + 2, h = s->h;
        size_t per_slot = use_rows ? (size_t)L : 2 * (size_t)h;
        if (use_rows) {
            rowbuf_limbs = (size_t)L * (size_t)s->nn;
            w_limbs = 3 * (size_t)L + 2;
        } else if (!mul_size((size_t)n_rows, 2 * (size_t)h, &rowbuf_limbs)) {
            memory_error = 1;
        } else {
            w_limbs = SQ_SCRATCH(h) + 2 * (size_t)h;
        }
        if (!memory_error) {
            if (!mul_size(use_rows ? slots : (size_t)n_groups, per_slot, &acc_limbs)) {
                memory_error = 1;
            }
        }
        if (!memory_error) {
            rowbuf = limbs_alloc(rowbuf_limbs);
            acc = limbs_alloc(acc_limbs);
            w = limbs_alloc(w_limbs);
            used = (unsigned char *)PyMem_RawCalloc(use_rows ? (slots ? slots : 1)
                                                             : (size_t)(n_groups ? n_groups : 1),
                                                    1);
            memory_error = rowbuf == NULL || acc == NULL || w == NULL || used == NULL;
        }
    }
    if (memory_error) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n_rows && bad_g_row < 0 && bad_slot_row < 0; i++) {
            int32_t slot = groups_slot(G, (size_t)i);
            if (G->itemsize
                && (slot < -1 || (slot >= 0 && (int64_t)(slot + 1) * G->bin_width > n_groups))) {
                bad_slot_row = i;
                bad_g = slot;
                break;
            }
            for (Py_ssize_t j = 0; j < n_cols; j++) {
                int32_t g = G->itemsize ? groups_at(G, (size_t)i, 0, (size_t)j)
                                        : groups_at(G, (size_t)i, slot, (size_t)j);
                if (G->itemsize ? (g < 0 || g >= G->bin_width) : (g < -1 || g >= n_groups)) {
                    bad_g = g;
                    bad_g_row = i;
                    bad_g_col = j;
                    break;
                }
            }
        }
        if (bad_g_row >= 0 || bad_slot_row >= 0) {
            /* reported below */
        } else if (use_rows) {
            bad_row = group_sums_rows(s, cts, (size_t)width, G, n_rows, n_cols, n_groups,
                                      dst, rowbuf, acc, used, w,
                                      adx ? fast_addmul : addmul_gmp);
        } else {
            bad_row = group_sums_digits(s, cts, (size_t)width, G, n_rows, n_cols, n_groups,
                                        dst, rowbuf, acc, used, w);
        }
        Py_END_ALLOW_THREADS
    }
    if (bad_slot_row >= 0) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "node slot %d of row %zd is outside [-1, %zd)", (int)bad_g,
                     bad_slot_row, n_groups / (G->bin_width ? G->bin_width : 1));
    } else if (bad_g_row >= 0 && G->itemsize) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "bin %d at row %zd, column %zd is outside [0, %d)",
                     (int)bad_g, bad_g_row, bad_g_col + (Py_ssize_t)G->col0, (int)G->bin_width);
    } else if (bad_g_row >= 0) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "group id %d at row %zd, column %zd is outside [-1, %zd)",
                     (int)bad_g, bad_g_row, bad_g_col, n_groups);
    } else if (bad_row >= 0) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "ciphertext %zd is outside (0, n2)", bad_row);
    }

done:
    PyMem_RawFree(rowbuf);
    PyMem_RawFree(acc);
    PyMem_RawFree(w);
    PyMem_RawFree(used);
    return result;
}

/* Check that n_rows ciphertexts of width bytes fill cb exactly. */
static int
check_ciphertext_bytes(const Py_buffer *cb, Py_ssize_t n_rows, Py_ssize_t width)
{
    size_t want;
    if (!mul_size((size_t)n_rows, (size_t)width, &want) || (size_t)cb->len != want) {
        PyErr_Format(PyExc_ValueError, "%zd rows of %zd-byte ciphertexts need %zd x %zd bytes, "
                     "got %zd", n_rows, width, n_rows, width, cb->len);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(group_sums_doc,
"group_sums(n2, ciphertexts, width, groups, n_rows, n_cols, n_groups, *,\n"
"           table_min_cols=TABLE_MIN_COLS, adx=True) -> bytes\n"
"\n"
"Per column j and group g, the product mod n2 of the ciphertexts of the rows i with\n"
"groups[i, j] == g: exactly secure_agg.paillier._sum_groups_kernel.\n"
"\n"
"n2: the modulus n^2, big-endian. ciphertexts: n_rows values in (0, n2), width bytes each,\n"
"big-endian. groups: the C-order int32 matrix (native byte order) of shape (n_rows, n_cols),\n"
"entries in [-1, n_groups); -1 skips a row for that column. Returns n_cols * n_groups values\n"
"of width bytes (column by column, groups in order), all-zero bytes for an empty group.\n"
"From table_min_cols columns on, per-row tables of c B^k mod n2 make each multiplication\n"
"cheaper (see the module notes); the result is the same. adx=False uses mpn_addmul_1 even\n"
"where the mulx/adx kernel runs (ADX tells whether it does). Releases the GIL.");

static PyObject *
kernels_group_sums(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n2", "ciphertexts", "width", "groups", "n_rows", "n_cols",
                             "n_groups", "table_min_cols", "adx", NULL};
    Py_buffer nb = {0}, cb = {0}, gb = {0};
    Py_ssize_t width, n_rows, n_cols, n_groups, table_min_cols = DEFAULT_TABLE_MIN_COLS;
    square_t s = {0};
    PyObject *result = NULL;
    int adx = 1;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*ny*nnn|$np:group_sums", kwlist, &nb, &cb,
                                     &width, &gb, &n_rows, &n_cols, &n_groups, &table_min_cols,
                                     &adx)) {
        return NULL;
    }
    if (n_rows < 0 || n_cols < 0 || n_groups < 0 || n_groups > INT32_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "n_rows, n_cols and n_groups must be non-negative (n_groups < 2^31), got "
                     "%zd, %zd, %zd", n_rows, n_cols, n_groups);
        goto done;
    }
    if (!square_parse(&s, &nb, width)) {
        goto done;
    }
    size_t cells, want;
    if (!check_ciphertext_bytes(&cb, n_rows, width)) {
        goto done;
    }
    if (!mul_size((size_t)n_rows, (size_t)n_cols, &cells) || !mul_size(cells, 4, &want)
        || (size_t)gb.len != want) {
        PyErr_Format(PyExc_ValueError, "a (%zd, %zd) int32 group matrix takes %zd x %zd x 4 "
                     "bytes, got %zd", n_rows, n_cols, n_rows, n_cols, gb.len);
        goto done;
    }
    {
        groups_t G = {(const unsigned char *)gb.buf, 0, NULL, 0, (size_t)n_cols, 0};
        result = group_sums_run(&s, (const unsigned char *)cb.buf, width, &G, n_rows, n_cols,
                                n_groups, table_min_cols, adx);
    }

done:
    square_clear(&s);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&gb);
    return result;
}

PyDoc_STRVAR(binned_sums_doc,
"binned_sums(n2, ciphertexts, width, bins, itemsize, n_rows, n_bin_cols, col_start, col_stop,\n"
"            slots, bin_width, n_groups, *, table_min_cols=TABLE_MIN_COLS, adx=True) -> bytes\n"
"\n"
"group_sums of columns col_start .. col_stop of bins with the groups\n"
"slots[i] * bin_width + bins[i, j] (none where slots[i] == -1), made as they are read: no\n"
"matrix of group ids is built. bins: the C-order (n_rows, n_bin_cols) matrix of itemsize-byte\n"
"bins (1: uint8, 2: uint16, 4: int32; native byte order), each in [0, bin_width); slots:\n"
"n_rows int32 in [-1, n_groups / bin_width). Returns (col_stop - col_start) * n_groups values\n"
"as group_sums does. Releases the GIL.");

static PyObject *
kernels_binned_sums(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n2", "ciphertexts", "width", "bins", "itemsize", "n_rows",
                             "n_bin_cols", "col_start", "col_stop", "slots", "bin_width",
                             "n_groups", "table_min_cols", "adx", NULL};
    Py_buffer nb = {0}, cb = {0}, bb = {0}, sb = {0};
    Py_ssize_t width, itemsize, n_rows, n_bin_cols, col_start, col_stop, bin_width, n_groups;
    Py_ssize_t table_min_cols = DEFAULT_TABLE_MIN_COLS;
    square_t s = {0};
    PyObject *result = NULL;
    int adx = 1;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*ny*nnnnny*nn|$np:binned_sums", kwlist, &nb,
                                     &cb, &width, &bb, &itemsize, &n_rows, &n_bin_cols,
                                     &col_start, &col_stop, &sb, &bin_width, &n_groups,
                                     &table_min_cols, &adx)) {
        return NULL;
    }
    if (itemsize != 1 && itemsize != 2 && itemsize != 4) {
        PyErr_Format(PyExc_ValueError, "itemsize must be 1, 2 or 4, got %zd", itemsize);
        goto done;
    }
    if (n_rows < 0 || n_bin_cols < 0 || col_start < 0 || col_stop < col_start
        || col_stop > n_bin_cols || n_groups < 0 || n_groups > INT32_MAX || bin_width < 1
        || bin_width > INT32_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "need n_rows >= 0, 0 <= col_start <= col_stop <= n_bin_cols, "
                     "0 <= n_groups < 2^31 and 1 <= bin_width < 2^31; got %zd, %zd, %zd, %zd, "
                     "%zd, %zd", n_rows, col_start, col_stop, n_bin_cols, n_groups, bin_width);
        goto done;
    }
    if (!square_parse(&s, &nb, width) || !check_ciphertext_bytes(&cb, n_rows, width)) {
        goto done;
    }
    size_t cells, want;
    if (!mul_size((size_t)n_rows, (size_t)n_bin_cols, &cells)
        || !mul_size(cells, (size_t)itemsize, &want) || (size_t)bb.len != want) {
        PyErr_Format(PyExc_ValueError, "a (%zd, %zd) matrix of %zd-byte bins takes %zd bytes, "
                     "got %zd", n_rows, n_bin_cols, itemsize, (Py_ssize_t)want, bb.len);
        goto done;
    }
    if ((size_t)sb.len != (size_t)n_rows * 4) {
        PyErr_Format(PyExc_ValueError, "%zd rows need %zd bytes of int32 slots, got %zd", n_rows,
                     n_rows * 4, sb.len);
        goto done;
    }
    {
        groups_t G = {(const unsigned char *)bb.buf, (int)itemsize, (const int32_t *)sb.buf,
                      (int32_t)bin_width, (size_t)n_bin_cols, (size_t)col_start};
        result = group_sums_run(&s, (const unsigned char *)cb.buf, width, &G, n_rows,
                                col_stop - col_start, n_groups, table_min_cols, adx);
    }

done:
    square_clear(&s);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&bb);
    PyBuffer_Release(&sb);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* pack                                                                                        */
/* ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(pack_doc,
"pack(n2, ciphertexts, width, bits, capacity) -> bytes\n"
"\n"
"Horner packing of consecutive groups of ``capacity`` ciphertexts c_0 .. c_{k-1}:\n"
"``(...(c_{k-1}^(2^bits) c_{k-2})^(2^bits) ...) c_0 mod n2``, exactly\n"
"secure_agg.packing._pack_kernel without re-randomisation. ciphertexts: values in (0, n2),\n"
"width bytes each, big-endian; the last group may be shorter. Returns ceil(count / capacity)\n"
"values of width bytes. Squarings use base-n digits. Releases the GIL.");

static PyObject *
kernels_pack(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n2", "ciphertexts", "width", "bits", "capacity", NULL};
    Py_buffer nb = {0}, cb = {0};
    Py_ssize_t width, bits, capacity, count, n_out, bad = -1;
    square_t s = {0};
    PyObject *result = NULL;
    mp_limb_t *scratch = NULL;
    size_t scratch_limbs = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*nnn:pack", kwlist, &nb, &cb, &width, &bits,
                                     &capacity)) {
        return NULL;
    }
    if (bits < 1 || bits > MAX_PACK_BITS) {
        PyErr_Format(PyExc_ValueError, "bits must be in [1, %d], got %zd", MAX_PACK_BITS, bits);
        goto done;
    }
    if (capacity < 1) {
        PyErr_Format(PyExc_ValueError, "capacity must be at least 1, got %zd", capacity);
        goto done;
    }
    if (!square_parse(&s, &nb, width)) {
        goto done;
    }
    if (cb.len % width != 0) {
        PyErr_Format(PyExc_ValueError, "%zd bytes of ciphertexts are not a whole number of "
                     "%zd-byte values", cb.len, width);
        goto done;
    }
    count = cb.len / width;
    n_out = count / capacity + (count % capacity != 0);
    result = PyBytes_FromStringAndSize(NULL, n_out * width);
    if (result == NULL) {
        goto done;
    }
    scratch_limbs = 6 * (size_t)s.h + SQ_SCRATCH(s.h);
    scratch = limbs_alloc(scratch_limbs);
    if (scratch == NULL) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    {
        sqmod_t c;
        mp_size_t h = s.h;
        c.h = h;
        c.nn = s.nn;
        c.n = s.n;
        c.N = NULL;
        c.secret = 0;
        mp_limb_t *value = scratch, *acc = value + 2 * h, *x = acc + 2 * h, *w = x + 2 * h;
        const unsigned char *src = (const unsigned char *)cb.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < n_out && bad < 0; k++) {
            Py_ssize_t start = k * capacity;
            Py_ssize_t stop = start + capacity < count ? start + capacity : count;
            for (Py_ssize_t i = stop - 1; i >= start; i--) {
                if (!read_ciphertext(value, 2 * h, src + (size_t)i * (size_t)width,
                                     (size_t)width, s.N, s.nn)) {
                    bad = i;
                    break;
                }
                if (i == stop - 1) {
                    sq_from_value(&c, acc, value, 2 * h, w);
                    continue;
                }
                for (Py_ssize_t b = 0; b < bits; b++) {
                    sq_sqr(&c, acc, acc, w);
                }
                sq_from_value(&c, x, value, 2 * h, w);
                sq_mul(&c, acc, acc, x, w);
            }
            if (bad < 0) {
                sq_to_value(&c, x, acc);
                limbs_to_bytes(dst + (size_t)k * (size_t)width, (size_t)width, x, 2 * h);
            }
        }
        Py_END_ALLOW_THREADS
    }
    if (bad >= 0) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "ciphertext %zd is outside (0, n2)", bad);
    }

done:
    PyMem_RawFree(scratch);
    square_clear(&s);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&cb);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* OuEncryptor: Okamoto-Uchiyama g^m h^r mod n (n = p^2 q, not a square) from fixed-base tables */
/* ------------------------------------------------------------------------------------------ */
/* OU's modulus is not a square, so the base-n digits above do not apply: a product is
 * mpn_mul_n (or mpn_sqr) and one mpn_tdiv_qr by n, h limbs each. Both bases are public and fixed
 * by the key: rows[i][d - 1] = base^(d 256^i) mod n for 1 <= d < 256, built once at construction
 * (GIL released), so g^m and h^r take one multiplication per non-zero byte of the exponent, as
 * secure_agg.ou.tables' Python tables. Tables are public; the scratch that held h^r is wiped. */

typedef struct {
    PyObject_HEAD
    mp_limb_t *n;             /* h limbs, top limb non-zero */
    mp_size_t h;
    size_t n_bytes;           /* ciphertexts are n_bytes wide */
    Py_ssize_t g_rows, h_rows;
    mp_limb_t *g_table;       /* g_rows * 255 entries of h limbs */
    mp_limb_t *h_table;       /* h_rows * 255 entries of h limbs */
} OuEncryptorObject;

#define OU_ENTRIES 255
#define OU_MAX_ROWS (1 << 16)
/* Scratch limbs of om_mul: a 2h-limb product and an (h + 1)-limb quotient. */
#define OM_SCRATCH(h) (3 * (size_t)(h) + 1)

/* r = a * b mod n (h limbs each); r may be a or b. */
static void
om_mul(const mp_limb_t *n, mp_size_t h, mp_limb_t *r, const mp_limb_t *a, const mp_limb_t *b,
       mp_limb_t *w)
{
    mp_limb_t *t = w, *q = w + 2 * h;
    if (a == b) {
        mpn_sqr(t, a, h);
    } else {
        mpn_mul_n(t, a, b, h);
    }
    mpn_tdiv_qr(q, r, 0, t, 2 * h, n, h);
}

/* Fill rows of base^(d 256^i) mod n; base (h limbs, < n) is destroyed. */
static void
om_build(const mp_limb_t *n, mp_size_t h, mp_limb_t *table, Py_ssize_t rows, mp_limb_t *step,
         mp_limb_t *w)
{
    size_t size = (size_t)h;
    for (Py_ssize_t i = 0; i < rows; i++) {
        mp_limb_t *row = table + (size_t)i * OU_ENTRIES * size;
        memcpy(row, step, size * LIMB_BYTES);
        for (size_t d = 1; d < OU_ENTRIES; d++) {
            om_mul(n, h, row + d * size, row + (d - 1) * size, step, w);
        }
        om_mul(n, h, step, row + (OU_ENTRIES - 1) * size, step, w);
    }
}

/* acc = base^e for e's little-endian byte digits (digit(i) below); 0 if every digit is 0. */
static int
om_power(const mp_limb_t *n, mp_size_t h, const mp_limb_t *table, const unsigned char *digits,
         size_t count, int big_endian, mp_limb_t *acc, mp_limb_t *w)
{
    int have = 0;
    size_t size = (size_t)h;
    for (size_t i = 0; i < count; i++) {
        unsigned d = big_endian ? digits[count - 1 - i] : digits[i];
        if (d == 0) {
            continue;
        }
        const mp_limb_t *entry = table + (i * OU_ENTRIES + d - 1) * size;
        if (have) {
            om_mul(n, h, acc, acc, entry, w);
        } else {
            memcpy(acc, entry, size * LIMB_BYTES);
            have = 1;
        }
    }
    return have;
}

static void
ou_dealloc(PyObject *op)
{
    OuEncryptorObject *self = (OuEncryptorObject *)op;
    PyMem_RawFree(self->n);
    PyMem_RawFree(self->g_table);
    PyMem_RawFree(self->h_table);
    Py_TYPE(op)->tp_free(op);
}

/* A base below n, as h limbs (fresh buffer); NULL with ValueError otherwise. */
static mp_limb_t *
ou_parse_base(const Py_buffer *buf, const char *name, const mp_limb_t *n, mp_size_t h)
{
    mp_size_t nb = 0;
    mp_limb_t *raw = parse_positive(buf, name, &nb);
    if (raw == NULL) {
        return NULL;
    }
    mp_limb_t *out = limbs_alloc((size_t)h);
    if (out == NULL) {
        PyMem_RawFree(raw);
        PyErr_NoMemory();
        return NULL;
    }
    if (nb > h || (nb == h && mpn_cmp(raw, n, h) >= 0)) {
        PyMem_RawFree(raw);
        PyMem_RawFree(out);
        PyErr_Format(PyExc_ValueError, "%s must be below n", name);
        return NULL;
    }
    memcpy(out, raw, (size_t)nb * LIMB_BYTES);
    PyMem_RawFree(raw);
    return out;
}

static PyObject *
ou_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n", "g", "h", "g_exponent_bytes", "h_exponent_bytes", NULL};
    Py_buffer nb = {0}, gb = {0}, hb = {0};
    Py_ssize_t g_rows, h_rows;
    OuEncryptorObject *self = NULL;
    mp_limb_t *g = NULL, *hv = NULL, *w = NULL;
    int ok = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*y*nn:OuEncryptor", kwlist, &nb, &gb, &hb,
                                     &g_rows, &h_rows)) {
        return NULL;
    }
    if (g_rows < 1 || g_rows > OU_MAX_ROWS || h_rows < 1 || h_rows > OU_MAX_ROWS) {
        PyErr_Format(PyExc_ValueError, "exponent bytes must be in [1, %d], got %zd and %zd",
                     OU_MAX_ROWS, g_rows, h_rows);
        goto done;
    }
    self = (OuEncryptorObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        goto done;
    }
    if ((self->n = parse_positive(&nb, "n", &self->h)) == NULL) {
        goto done;
    }
    if ((self->n[0] & 1) == 0 || (self->h == 1 && self->n[0] < 3)) {
        PyErr_SetString(PyExc_ValueError, "n must be odd and at least 3");
        goto done;
    }
    if ((g = ou_parse_base(&gb, "g", self->n, self->h)) == NULL
        || (hv = ou_parse_base(&hb, "h", self->n, self->h)) == NULL) {
        goto done;
    }
    self->n_bytes = (size_t)nb.len;
    self->g_rows = g_rows;
    self->h_rows = h_rows;
    {
        size_t entry = (size_t)self->h, g_limbs, h_limbs;
        if (!mul_size((size_t)g_rows * OU_ENTRIES, entry, &g_limbs)
            || !mul_size((size_t)h_rows * OU_ENTRIES, entry, &h_limbs)) {
            PyErr_NoMemory();
            goto done;
        }
        self->g_table = limbs_alloc(g_limbs);
        self->h_table = limbs_alloc(h_limbs);
        w = limbs_alloc(OM_SCRATCH(self->h));
        if (self->g_table == NULL || self->h_table == NULL || w == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    om_build(self->n, self->h, self->g_table, g_rows, g, w);
    om_build(self->n, self->h, self->h_table, h_rows, hv, w);
    Py_END_ALLOW_THREADS
    ok = 1;

done:
    PyMem_RawFree(g);
    PyMem_RawFree(hv);
    PyMem_RawFree(w);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&gb);
    PyBuffer_Release(&hb);
    if (!ok) {
        Py_XDECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* The shared body of encrypt (plain = 1) and rerandomize (plain = 0). */
static PyObject *
ou_apply(OuEncryptorObject *self, PyObject *args, PyObject *kwds, int plain)
{
    static char *enc_kw[] = {"plaintexts", "plaintext_width", "randomness", "randomness_width",
                             NULL};
    static char *rr_kw[] = {"ciphertexts", "ciphertext_width", "randomness", "randomness_width",
                            NULL};
    Py_buffer vb = {0}, rb = {0};
    Py_ssize_t vwidth, rwidth, count = 0, bad = -1;
    mp_limb_t *scratch = NULL;
    size_t scratch_limbs = 0, out_width = self->n_bytes;
    PyObject *result = NULL;
    mp_size_t h = self->h;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, plain ? "y*ny*n:encrypt" : "y*ny*n:rerandomize",
                                     plain ? enc_kw : rr_kw, &vb, &vwidth, &rb, &rwidth)) {
        return NULL;
    }
    if (!check_batch(&vb, vwidth, &rb, rwidth, (size_t)self->h_rows * 8,
                     plain ? "plaintext" : "ciphertext", &count)) {
        goto done;
    }
    if (plain && vwidth > self->g_rows) {
        PyErr_Format(PyExc_ValueError, "plaintext_width %zd exceeds this table's %zd bytes",
                     vwidth, self->g_rows);
        goto done;
    }
    if ((size_t)count > (size_t)PY_SSIZE_T_MAX / out_width) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(out_width * (size_t)count));
    if (result == NULL) {
        goto done;
    }
    /* acc (h) | x (h) | om scratch */
    scratch_limbs = 2 * (size_t)h + OM_SCRATCH(h);
    scratch = limbs_alloc(scratch_limbs);
    if (scratch == NULL) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    {
        mp_limb_t *acc = scratch, *x = acc + h, *w = x + h;
        const mp_limb_t *n = self->n;
        const unsigned char *vbytes = (const unsigned char *)vb.buf;
        const unsigned char *rbytes = (const unsigned char *)rb.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);

        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < count; i++) {
            const unsigned char *src = vbytes + i * vwidth;
            int have = om_power(n, h, self->h_table, rbytes + i * rwidth, (size_t)rwidth, 0, acc,
                                w);
            int have_x;
            if (plain) {
                /* x = g^m from m's big-endian bytes */
                have_x = om_power(n, h, self->g_table, src, (size_t)vwidth, 1, x, w);
            } else {
                /* 0 < c < n */
                if (!bytes_to_limbs(x, h, src, (size_t)vwidth) || limbs_is_zero(x, h)
                    || mpn_cmp(x, n, h) >= 0) {
                    bad = i;
                    break;
                }
                have_x = 1;
            }
            if (have && have_x) {
                om_mul(n, h, acc, acc, x, w);
            } else if (have_x) {
                memcpy(acc, x, (size_t)h * LIMB_BYTES);
            } else if (!have) {
                memset(acc, 0, (size_t)h * LIMB_BYTES);
                acc[0] = 1;
            }
            limbs_to_bytes(dst + (size_t)i * out_width, out_width, acc, h);
        }
        Py_END_ALLOW_THREADS
    }
    if (bad >= 0) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "ciphertext %zd is outside (0, n)", bad);
    }

done:
    /* acc held h^r: with the ciphertext it would reveal g^m */
    limbs_free(scratch, scratch_limbs, 1);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&rb);
    return result;
}

PyDoc_STRVAR(ou_encrypt_doc,
"encrypt(plaintexts, plaintext_width, randomness, randomness_width) -> bytes\n"
"\n"
"OU encryptions ``g^m h^r mod n``: exactly secure_agg.ou.kernels.encrypt_one. plaintexts:\n"
"big-endian, plaintext_width (at most g_exponent_bytes) bytes each; randomness: the exponents'\n"
"little-endian byte digits, randomness_width (at most h_exponent_bytes) bytes each. Output:\n"
"len(n) bytes per ciphertext. Releases the GIL.");

static PyObject *
ou_encrypt(PyObject *op, PyObject *args, PyObject *kwds)
{
    return ou_apply((OuEncryptorObject *)op, args, kwds, 1);
}

PyDoc_STRVAR(ou_rerandomize_doc,
"rerandomize(ciphertexts, ciphertext_width, randomness, randomness_width) -> bytes\n"
"\n"
"``c h^b mod n`` for each ciphertext c in (0, n) (big-endian) and exponent b (little-endian\n"
"byte digits): exactly secure_agg.ou.kernels.obfuscate_one. Releases the GIL.");

static PyObject *
ou_rerandomize(PyObject *op, PyObject *args, PyObject *kwds)
{
    return ou_apply((OuEncryptorObject *)op, args, kwds, 0);
}

PyDoc_STRVAR(ou_group_sums_doc,
"group_sums(ciphertexts, width, groups, n_rows, n_cols, n_groups) -> bytes\n"
"\n"
"Per column j and group g, the product mod n of the ciphertexts of the rows i with\n"
"groups[i, j] == g: exactly secure_agg.ou.kernels.group_sums (OU's histogram kernel).\n"
"ciphertexts: n_rows values in (0, n), width (= len(n)) bytes each, big-endian. groups: the\n"
"C-order int32 matrix (native byte order) of shape (n_rows, n_cols), entries in\n"
"[-1, n_groups); -1 skips a row for that column. Returns n_cols * n_groups values of width\n"
"bytes (column by column), all-zero bytes for an empty group. Releases the GIL.");

static PyObject *
ou_group_sums(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ciphertexts", "width", "groups", "n_rows", "n_cols", "n_groups",
                             NULL};
    OuEncryptorObject *self = (OuEncryptorObject *)op;
    Py_buffer cb = {0}, gb = {0};
    Py_ssize_t width, n_rows, n_cols, n_groups, bad_row = -1, bad_g_row = -1, bad_g_col = -1;
    PyObject *result = NULL;
    mp_limb_t *acc = NULL, *x = NULL, *w = NULL;
    unsigned char *used = NULL;
    size_t slots = 0, acc_limbs = 0;
    mp_size_t h = self->h;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*ny*nnn:group_sums", kwlist, &cb, &width, &gb,
                                     &n_rows, &n_cols, &n_groups)) {
        return NULL;
    }
    if (width != (Py_ssize_t)self->n_bytes) {
        PyErr_Format(PyExc_ValueError, "width must be %zu (the modulus' bytes), got %zd",
                     self->n_bytes, width);
        goto done;
    }
    if (n_rows < 0 || n_cols < 0 || n_groups < 0) {
        PyErr_SetString(PyExc_ValueError, "n_rows, n_cols and n_groups must be non-negative");
        goto done;
    }
    if (n_rows && (cb.len / width != n_rows || cb.len % width != 0)) {
        PyErr_Format(PyExc_ValueError, "%zd bytes of ciphertexts for %zd rows of %zd bytes",
                     cb.len, n_rows, width);
        goto done;
    }
    if (!n_rows && cb.len) {
        PyErr_SetString(PyExc_ValueError, "ciphertexts given for zero rows");
        goto done;
    }
    if (n_cols && n_rows > PY_SSIZE_T_MAX / 4 / n_cols) {
        PyErr_NoMemory();
        goto done;
    }
    if (gb.len != n_rows * n_cols * 4) {
        PyErr_Format(PyExc_ValueError, "groups must hold %zd x %zd int32 values", n_rows, n_cols);
        goto done;
    }
    if (n_groups && (size_t)n_cols > (size_t)PY_SSIZE_T_MAX / (size_t)n_groups / (size_t)width) {
        PyErr_NoMemory();
        goto done;
    }
    slots = (size_t)n_cols * (size_t)n_groups;
    if (!mul_size(slots, (size_t)h, &acc_limbs)) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(slots * (size_t)width));
    acc = limbs_alloc(acc_limbs);
    used = (unsigned char *)PyMem_RawCalloc(slots ? slots : 1, 1);
    x = limbs_alloc((size_t)h);
    w = limbs_alloc(OM_SCRATCH(h));
    if (result == NULL || acc == NULL || used == NULL || x == NULL || w == NULL) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    {
        const unsigned char *cbytes = (const unsigned char *)cb.buf;
        const int32_t *groups = (const int32_t *)gb.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        const mp_limb_t *n = self->n;

        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n_rows && bad_row < 0 && bad_g_row < 0; i++) {
            const int32_t *row = groups + i * n_cols;
            int any = 0;
            for (Py_ssize_t j = 0; j < n_cols; j++) {
                if (row[j] >= 0) {
                    any = 1;
                    break;
                }
            }
            if (!any) {
                continue;
            }
            if (!bytes_to_limbs(x, h, cbytes + i * width, (size_t)width) || limbs_is_zero(x, h)
                || mpn_cmp(x, n, h) >= 0) {
                bad_row = i;
                break;
            }
            for (Py_ssize_t j = 0; j < n_cols; j++) {
                int32_t g = row[j];
                if (g < 0 || g >= n_groups) {
                    if (g != -1) {
                        bad_g_row = i;
                        bad_g_col = j;
                        break;
                    }
                    continue;
                }
                size_t slot = (size_t)j * (size_t)n_groups + (size_t)g;
                mp_limb_t *a = acc + slot * (size_t)h;
                if (used[slot]) {
                    om_mul(n, h, a, a, x, w);
                } else {
                    memcpy(a, x, (size_t)h * LIMB_BYTES);
                    used[slot] = 1;
                }
            }
        }
        if (bad_row < 0 && bad_g_row < 0) {
            for (size_t slot = 0; slot < slots; slot++) {
                if (used[slot]) {
                    limbs_to_bytes(dst + slot * (size_t)width, (size_t)width,
                                   acc + slot * (size_t)h, h);
                } else {
                    memset(dst + slot * (size_t)width, 0, (size_t)width);
                }
            }
        }
        Py_END_ALLOW_THREADS
    }
    if (bad_row >= 0) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "ciphertext %zd is outside (0, n)", bad_row);
    } else if (bad_g_row >= 0) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "group id at row %zd, column %zd is outside [-1, %zd)",
                     bad_g_row, bad_g_col, n_groups);
    }

done:
    PyMem_RawFree(acc);
    PyMem_RawFree(used);
    PyMem_RawFree(x);
    PyMem_RawFree(w);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&gb);
    return result;
}

static PyObject *
ou_repr(PyObject *op)
{
    OuEncryptorObject *self = (OuEncryptorObject *)op;
    return PyUnicode_FromFormat("OuEncryptor(n_bytes=%zu, g_exponent_bytes=%zd, "
                                "h_exponent_bytes=%zd)",
                                self->n_bytes, self->g_rows, self->h_rows);
}

static PyMethodDef ou_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))ou_encrypt, METH_VARARGS | METH_KEYWORDS,
     ou_encrypt_doc},
    {"rerandomize", (PyCFunction)(void (*)(void))ou_rerandomize, METH_VARARGS | METH_KEYWORDS,
     ou_rerandomize_doc},
    {"group_sums", (PyCFunction)(void (*)(void))ou_group_sums, METH_VARARGS | METH_KEYWORDS,
     ou_group_sums_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(ou_doc,
"OuEncryptor(n, g, h, g_exponent_bytes, h_exponent_bytes)\n"
"\n"
"Public fixed-base tables of g and h modulo an odd n (Okamoto-Uchiyama's n = p^2 q), built at\n"
"construction: rows of base^(d 256^i) mod n for 1 <= d < 256, one row per exponent byte.\n"
"n, g, h: big-endian bytes, g and h below n. Memory: 255 * len(n) bytes per row (23 MB for\n"
"86 + 272 rows at 2048 bits).");

static PyTypeObject OuEncryptorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "secure_agg._gmp_kernels.OuEncryptor",
    .tp_basicsize = sizeof(OuEncryptorObject),
    .tp_dealloc = ou_dealloc,
    .tp_repr = ou_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = ou_doc,
    .tp_methods = ou_methods,
    .tp_new = ou_new,
};

/* ------------------------------------------------------------------------------------------ */
/* Module                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static PyMethodDef kernels_methods[] = {
    {"group_sums", (PyCFunction)(void (*)(void))kernels_group_sums, METH_VARARGS | METH_KEYWORDS,
     group_sums_doc},
    {"binned_sums", (PyCFunction)(void (*)(void))kernels_binned_sums,
     METH_VARARGS | METH_KEYWORDS, binned_sums_doc},
    {"pack", (PyCFunction)(void (*)(void))kernels_pack, METH_VARARGS | METH_KEYWORDS, pack_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc,
"GMP kernels of secure_agg.paillier and secure_agg.packing (see _gmp_kernels.c for the\n"
"arithmetic and the measurements behind it). Fixed-width big-endian bytes in and out; the\n"
"GIL is released around the arithmetic; results equal the Python reference kernels.");

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "secure_agg._gmp_kernels",
    .m_doc = module_doc,
    .m_size = -1,
    .m_methods = kernels_methods,
};

PyMODINIT_FUNC
PyInit__gmp_kernels(void)
{
#if HAVE_ADX_KERNEL
    if (cpu_has_adx()) {
        fast_addmul = addmul_adx;
    }
#endif
    if (PyType_Ready(&CrtEncryptorType) < 0 || PyType_Ready(&FixedBaseType) < 0
        || PyType_Ready(&OuEncryptorType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&kernels_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "CrtEncryptor", (PyObject *)&CrtEncryptorType) < 0
        || PyModule_AddObjectRef(m, "FixedBase", (PyObject *)&FixedBaseType) < 0
        || PyModule_AddObjectRef(m, "OuEncryptor", (PyObject *)&OuEncryptorType) < 0
        || PyModule_AddStringConstant(m, "GMP_VERSION", gmp_version) < 0
        || PyModule_AddIntConstant(m, "TABLE_MIN_COLS", DEFAULT_TABLE_MIN_COLS) < 0
        || PyModule_AddObjectRef(m, "ADX", fast_addmul == addmul_gmp ? Py_False : Py_True) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
