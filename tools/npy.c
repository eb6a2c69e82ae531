/* npy: the .npy header (see the header file). */
#include "npy.h"

#include <stdio.h>
#include <string.h>

#define MAGIC_LEN 6 /* "\x93NUMPY" */
#define PREFIX_LEN 10 /* magic, version (2 bytes), header length (2 bytes) */

size_t vr_npy_header(char out[VR_NPY_HEADER], uint64_t rows, uint32_t cols)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	const char *descr = ">f4";
#else
	const char *descr = "<f4";
#endif
	const size_t dict_room = VR_NPY_HEADER - PREFIX_LEN; /* dict, spaces and "\n" */
	memcpy(out, "\x93NUMPY", MAGIC_LEN);
	out[6] = 1; /* version 1.0: a 2-byte header length, ASCII dict */
	out[7] = 0;
	out[8] = (char)(dict_room & 0xff);
	out[9] = (char)(dict_room >> 8);
	/* The longest dict (20-digit rows, 10-digit cols) is 87 bytes: it
	 * always fits, with the newline, in the 118 of dict_room. */
	char *dict = out + PREFIX_LEN;
	int n = snprintf(dict, dict_room, "{'descr': '%s', 'fortran_order': False, 'shape': (%llu, %lu), }",
			 descr, (unsigned long long)rows, (unsigned long)cols);
	memset(dict + n, ' ', dict_room - (size_t)n - 1);
	dict[dict_room - 1] = '\n';
	return VR_NPY_HEADER;
}
