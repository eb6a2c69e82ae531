/* icsv: the reader of interaction CSV files, the Wikimedia tutorial's raw
 * form "user,item,timestamp", for `visrec import` and the report.
 *
 * The first non-blank line may be a header naming the columns (user or
 * user_id, item or item_id, timestamp or time or ts; other columns are
 * ignored); without one the columns are user,item,timestamp in that order.
 * Fields may be quoted ("a,b" with "" for a quote); CRLF line ends, blank
 * lines and a UTF-8 byte order mark are fine; the timestamp is integer
 * seconds (a fraction is dropped) or ISO 8601 UTC: YYYY-MM-DD, optionally
 * followed by T or a space, HH:MM[:SS[.fff]] and Z; both ids
 * keep the id rule (ids.h: UTF-8, no NUL or control characters, at most
 * VR_ID_MAX bytes). A line may be at most ICSV_MAX_LINE bytes before its
 * newline: two ids of VR_ID_MAX and a timestamp leave room for other
 * columns, and the bound keeps a file without newlines from costing memory.
 * A bad row, a longer line included, is reported with its line number and
 * reading goes on with the next one. */
#ifndef VR_ICSV_H
#define VR_ICSV_H

#include <stdint.h>
#include <stdio.h>

#define ICSV_MAX_LINE 4096

typedef struct icsv icsv;

typedef struct icsv_row {
	const char *user, *item; /* valid until the next icsv_next */
	int64_t timestamp;
	long line;               /* 1-based line number in the file */
} icsv_row;

/* Opens path for reading. Returns 0, -errno, or VR_ENOMEM. */
int icsv_open(icsv **out, const char *path);
/* Reads from f, which the reader owns from now on (closed by icsv_close,
 * or at once on failure); name stands for it in errors. Returns 0 or
 * VR_ENOMEM. */
int icsv_open_stream(icsv **out, FILE *f, const char *name);
/* Makes the timestamp column optional (a split's test pairs:
 * user,item[,timestamp]); call before the first icsv_next. A row without
 * one reads as timestamp 0. */
void icsv_timestamp_optional(icsv *r);
/* Reads the next row into *row. Returns 0, VR_EEOF after the last row,
 * VR_EINVAL for a malformed row or header or a line over ICSV_MAX_LINE
 * bytes (icsv_error says which line and why; the next call reads on),
 * -errno on a read error. */
int icsv_next(icsv *r, icsv_row *row);
/* The reason of the last VR_EINVAL ("interactions.csv:12: timestamp
 * \"x\" is not integer seconds or ISO 8601 ..."). */
const char *icsv_error(const icsv *r);
/* Closes the file and frees the reader. NULL is allowed. */
void icsv_close(icsv *r);

#endif
