/* Copies between arrays of any memory order, without the GIL.
 *
 * Precomputed chunks are x-fastest; NumPy, Dask and most callers want C order
 * (last axis fastest).  NumPy's own assignment between the two runs one strided
 * element at a time (and one call per element when the fastest axis has length
 * 1), 10-40x slower than a straight copy.  Here the two fastest axes form a
 * plane that is transposed in cache-sized tiles: 16x16 bytes at a time with
 * SSE2 shuffles for one-byte elements, scalar tiles otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define MAXDIM 8

typedef struct {
    Py_ssize_t n_a, n_b;            /* plane extents: a is src-fastest, b dst-fastest */
    Py_ssize_t sa, sb, da, db;      /* byte strides of src and dst along a and b */
    Py_ssize_t item;
} plane_t;

#if defined(__SSE2__)
/* Transposes a 16x16 byte tile: 16 rows of src (row stride ss) become the 16
 * columns of dst (row stride ds).  Four rounds of interleaving rows k and k+8
 * rotate the 8-bit (row, column) index by one bit each, i.e. by four in all. */
static inline void tile16_u8(const char *s, Py_ssize_t ss, char *d, Py_ssize_t ds)
{
    __m128i r[16], t[16];
    int k, round;
    for (k = 0; k < 16; k++)
        r[k] = _mm_loadu_si128((const __m128i *)(s + k * ss));
    for (round = 0; round < 4; round++) {
        for (k = 0; k < 8; k++) {
            t[2 * k] = _mm_unpacklo_epi8(r[k], r[k + 8]);
            t[2 * k + 1] = _mm_unpackhi_epi8(r[k], r[k + 8]);
        }
        memcpy(r, t, sizeof(r));
    }
    for (k = 0; k < 16; k++)
        _mm_storeu_si128((__m128i *)(d + k * ds), r[k]);
}
#endif

#define SCALAR_TILE(T)                                                          \
    for (j = j0; j < j1; j++)                                                   \
        for (i = i0; i < i1; i++)                                               \
            *(T *)(dst + i * p->da + j * p->db) = *(const T *)(src + i * p->sa + j * p->sb);

/* One tile of the plane, element (i, j): src + i*sa + j*sb  ->  dst + i*da + j*db. */
static void copy_tile(const char *src, char *dst, const plane_t *p, Py_ssize_t i0,
                      Py_ssize_t i1, Py_ssize_t j0, Py_ssize_t j1)
{
    Py_ssize_t i, j;
#if defined(__SSE2__)
    if (p->item == 1 && p->sa == 1 && p->db == 1 && i1 - i0 == 16 && j1 - j0 == 16) {
        tile16_u8(src + j0 * p->sb + i0, p->sb, dst + i0 * p->da + j0, p->da);
        return;
    }
#endif
    switch (p->item) {
    case 1: SCALAR_TILE(uint8_t); break;
    case 2: SCALAR_TILE(uint16_t); break;
    case 4: SCALAR_TILE(uint32_t); break;
    case 8: SCALAR_TILE(uint64_t); break;
    default:
        for (j = j0; j < j1; j++)
            for (i = i0; i < i1; i++)
                memcpy(dst + i * p->da + j * p->db, src + i * p->sa + j * p->sb, (size_t)p->item);
    }
}

/* A run of n elements along one axis; contiguous runs are one memcpy. */
static void copy_run(const char *src, char *dst, Py_ssize_t n, Py_ssize_t ss, Py_ssize_t ds,
                     Py_ssize_t item)
{
    Py_ssize_t i;
    if (ss == item && ds == item) {
        memcpy(dst, src, (size_t)(n * item));
        return;
    }
    for (i = 0; i < n; i++)
        memcpy(dst + i * ds, src + i * ss, (size_t)item);
}

static Py_ssize_t fastest_axis(const Py_buffer *v)
{
    Py_ssize_t best = -1, k;
    for (k = 0; k < v->ndim; k++) {
        if (v->shape[k] < 2)
            continue;
        if (best < 0 || llabs((long long)v->strides[k]) < llabs((long long)v->strides[best]))
            best = k;
    }
    return best;
}

static void copy_nd(const Py_buffer *dv, const Py_buffer *sv)
{
    const Py_ssize_t ndim = sv->ndim, item = sv->itemsize;
    Py_ssize_t a = fastest_axis(sv), b = fastest_axis(dv);
    Py_ssize_t outer[MAXDIM], counter[MAXDIM], n_outer = 0, k;
    Py_ssize_t tile_a, tile_b, i0, j0;
    plane_t p;
    if (a < 0) { /* a single element */
        memcpy(dv->buf, sv->buf, (size_t)item);
        return;
    }
    if (b < 0)
        b = a;
    for (k = 0; k < ndim; k++)
        if (k != a && k != b && sv->shape[k] > 1)
            outer[n_outer++] = k;
    p.n_a = sv->shape[a];
    p.n_b = a == b ? 1 : sv->shape[b];
    p.sa = sv->strides[a];
    p.da = dv->strides[a];
    p.sb = a == b ? 0 : sv->strides[b];
    p.db = a == b ? 0 : dv->strides[b];
    p.item = item;
    if (a == b) {
        tile_a = p.n_a;
        tile_b = 1;
    } else {
        tile_a = tile_b = item >= 8 ? 8 : 16;
    }
    /* Tiles outermost, the other axes inside: consecutive planes of one tile lie
     * close together in both arrays, so their pages and cache lines are reused. */
    for (j0 = 0; j0 < p.n_b; j0 += tile_b) {
        const Py_ssize_t j1 = j0 + tile_b < p.n_b ? j0 + tile_b : p.n_b;
        for (i0 = 0; i0 < p.n_a; i0 += tile_a) {
            const Py_ssize_t i1 = i0 + tile_a < p.n_a ? i0 + tile_a : p.n_a;
            memset(counter, 0, sizeof(counter));
            for (;;) {
                const char *s = (const char *)sv->buf;
                char *d = (char *)dv->buf;
                for (k = 0; k < n_outer; k++) {
                    s += counter[k] * sv->strides[outer[k]];
                    d += counter[k] * dv->strides[outer[k]];
                }
                if (a == b)
                    copy_run(s, d, p.n_a, p.sa, p.da, item);
                else
                    copy_tile(s, d, &p, i0, i1, j0, j1);
                for (k = n_outer - 1; k >= 0; k--) {
                    if (++counter[k] < sv->shape[outer[k]])
                        break;
                    counter[k] = 0;
                }
                if (k < 0)
                    break;
            }
        }
    }
}

static PyObject *layout_copy(PyObject *self, PyObject *args)
{
    PyObject *dst_obj, *src_obj;
    Py_buffer dv, sv;
    Py_ssize_t k, total = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO:copy", &dst_obj, &src_obj))
        return NULL;
    if (PyObject_GetBuffer(dst_obj, &dv, PyBUF_RECORDS) < 0)
        return NULL;
    if (PyObject_GetBuffer(src_obj, &sv, PyBUF_RECORDS_RO) < 0) {
        PyBuffer_Release(&dv);
        return NULL;
    }
    if (dv.ndim != sv.ndim || dv.itemsize != sv.itemsize || sv.ndim > MAXDIM) {
        PyErr_Format(PyExc_ValueError,
                     "copy: dst and src need the same number of dimensions (at most %d) and "
                     "item size; got %zd-d/%zd bytes and %zd-d/%zd bytes",
                     MAXDIM, dv.ndim, dv.itemsize, sv.ndim, sv.itemsize);
        goto fail;
    }
    for (k = 0; k < sv.ndim; k++) {
        if (dv.shape[k] != sv.shape[k]) {
            PyErr_Format(PyExc_ValueError, "copy: shapes differ on axis %zd (%zd != %zd)", k,
                         dv.shape[k], sv.shape[k]);
            goto fail;
        }
        total *= sv.shape[k];
    }
    if (total > 0) {
        Py_BEGIN_ALLOW_THREADS
        copy_nd(&dv, &sv);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&dv);
    PyBuffer_Release(&sv);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&dv);
    PyBuffer_Release(&sv);
    return NULL;
}

static PyMethodDef methods[] = {
    {"copy", layout_copy, METH_VARARGS,
     "copy(dst, src): dst[...] = src for buffers of equal shape and item size, any strides.\n"
     "The GIL is released while copying; dst and src must not overlap."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_layout", NULL, -1, methods};

PyMODINIT_FUNC PyInit__layout(void) { return PyModule_Create(&module); }
