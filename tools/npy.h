/* npy: NumPy's .npy file format, version 1.0, for float32 matrices, so
 * `visrec vectors` writes what np.load reads without a NumPy of ours.
 *
 * A file is a header then the values, row after row (C order). The header
 * is the magic "\x93NUMPY", the version (1, 0), a little-endian uint16
 * length, and a Python dict literal ("{'descr': '<f4', 'fortran_order':
 * False, 'shape': (3, 4), }") padded with spaces and ended by "\n" so that
 * the values start at a multiple of 64 bytes (NumPy's rule, so they can be
 * mapped aligned). Ours is always VR_NPY_HEADER bytes long, room for any
 * shape of a uint64 row count: a writer that learns the row count only at
 * the end (a streamed export) writes a header of 0 rows first and
 * overwrites it in place, as NumPy's own format.open_memmap pads for. */
#ifndef VR_NPY_H
#define VR_NPY_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of every header vr_npy_header writes: a multiple of 64. */
#define VR_NPY_HEADER 128

/* Writes the header of a float32 matrix of rows x cols, in this machine's
 * byte order ('<f4' or '>f4'), into out. Returns VR_NPY_HEADER. */
size_t vr_npy_header(char out[VR_NPY_HEADER], uint64_t rows, uint32_t cols);

#endif
