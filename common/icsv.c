/* icsv: the interaction CSV reader (icsv.h). One line at a time into a
 * buffer of ICSV_MAX_LINE bytes, fields split in place; a longer line is
 * read past, never held, so a file without newlines costs no memory. */
#include "icsv.h"

#include "err.h"
#include "ids.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_FIELDS 64

struct icsv {
	FILE *f;
	char *path;
	long lineno;
	int col_user, col_item, col_ts; /* -1 until the first line was seen */
	int ts_optional;                /* icsv_timestamp_optional */
	char error[512];
	char line[ICSV_MAX_LINE + 1];
};

int icsv_open_stream(icsv **out, FILE *f, const char *name)
{
	icsv *r = calloc(1, sizeof *r);
	if (!r || !(r->path = strdup(name))) {
		free(r);
		fclose(f);
		return VR_ENOMEM;
	}
	r->col_user = r->col_item = r->col_ts = -1;
	r->f = f;
	*out = r;
	return 0;
}

int icsv_open(icsv **out, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -errno;
	return icsv_open_stream(out, f, path);
}

void icsv_close(icsv *r)
{
	if (!r)
		return;
	fclose(r->f);
	free(r->path);
	free(r);
}

const char *icsv_error(const icsv *r)
{
	return r->error;
}

static int bad(icsv *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(icsv *r, const char *fmt, ...)
{
	int n = snprintf(r->error, sizeof r->error, "%s:%ld: ", r->path, r->lineno);
	if (n < 0 || (size_t)n >= sizeof r->error)
		n = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->error + n, sizeof r->error - (size_t)n, fmt, ap);
	va_end(ap);
	return VR_EINVAL;
}

/* Splits s into fields in place. Returns the count, or -1 for a quote that
 * does not close. */
static int split(char *s, char **fields)
{
	int n = 0;
	char *w = s;
	for (;;) {
		if (n == MAX_FIELDS)
			return n;
		/* Blanks before an opening quote go, as trim() drops them
		 * around an unquoted field. */
		char *q = s;
		while (*q == ' ' || *q == '\t')
			q++;
		if (*q == '"')
			s = q;
		fields[n++] = w;
		if (*s == '"') {
			s++;
			for (;;) {
				if (!*s)
					return -1;
				if (*s == '"' && s[1] == '"') {
					*w++ = '"';
					s += 2;
				} else if (*s == '"') {
					s++;
					break;
				} else {
					*w++ = *s++;
				}
			}
			while (*s && *s != ',')
				s++; /* text after the closing quote is dropped */
		} else {
			while (*s && *s != ',')
				*w++ = *s++;
		}
		if (!*s) {
			*w = 0;
			return n;
		}
		*w++ = 0;
		s++;
		w = s;
	}
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	return s;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int digits(const char **p, int n, int64_t *out)
{
	int64_t v = 0;
	for (int k = 0; k < n; k++) {
		if (**p < '0' || **p > '9')
			return -1;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	*out = v;
	return 0;
}

/* YYYY-MM-DD, optionally followed by T or a space, HH:MM[:SS[.fff]], and
 * an optional Z: UTC is the only zone (an offset is refused, not guessed).
 * The fraction is dropped. Returns 0 or -1. */
static int parse_iso(const char *p, int64_t *out)
{
	int64_t y, mo, d, h = 0, mi = 0, sec = 0;
	if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
	    digits(&p, 2, &d))
		return -1;
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap))
		return -1;
	if (*p == 'T' || *p == ' ') {
		p++;
		if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
			return -1;
		if (*p == ':') {
			p++;
			if (digits(&p, 2, &sec))
				return -1;
			if (*p == '.') {
				p++;
				if (*p < '0' || *p > '9')
					return -1;
				while (*p >= '0' && *p <= '9')
					p++;
			}
		}
		if (h > 23 || mi > 59 || sec > 60)
			return -1;
	}
	if (*p == 'Z')
		p++;
	if (*p)
		return -1;
	*out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
	return 0;
}

/* A timestamp: integer seconds (a fraction is dropped, toward zero) or
 * ISO 8601 UTC (parse_iso). Returns 1 with *v set, or 0. */
static int parse_ts(const char *s, int64_t *v)
{
	if (strlen(s) >= 10 && s[4] == '-')
		return !parse_iso(s, v);
	char *end;
	errno = 0;
	long long x = strtoll(s, &end, 10);
	if (end == s || !isdigit((unsigned char)end[-1]) || errno)
		return 0;
	if (*end == '.') {
		end++;
		while (isdigit((unsigned char)*end))
			end++;
	}
	if (*end)
		return 0;
	*v = x;
	return 1;
}

static int name_is(const char *s, const char *a, const char *b, const char *c)
{
	return !strcasecmp(s, a) || (b && !strcasecmp(s, b)) || (c && !strcasecmp(s, c));
}

/* Reads the column layout from the first line. Returns 1 when it was a
 * header, 0 when it is a data row, or VR_EINVAL. */
static int layout(icsv *r, char **f, int n)
{
	int64_t ts;
	if (n >= 3 && parse_ts(trim(f[2]), &ts)) {
		r->col_user = 0;
		r->col_item = 1;
		r->col_ts = 2;
		return 0;
	}
	for (int i = 0; i < n; i++) {
		char *s = trim(f[i]);
		if (name_is(s, "user", "user_id", "userid"))
			r->col_user = i;
		else if (name_is(s, "item", "item_id", "itemid"))
			r->col_item = i;
		else if (name_is(s, "timestamp", "time", "ts"))
			r->col_ts = i;
	}
	if (r->ts_optional && r->col_user >= 0 && r->col_item >= 0)
		return 1;
	if (r->ts_optional && r->col_user < 0 && r->col_item < 0 && r->col_ts < 0 && n >= 2) {
		/* No header: user,item[,timestamp]. */
		r->col_user = 0;
		r->col_item = 1;
		return 0;
	}
	if (r->col_user < 0 || r->col_item < 0 || r->col_ts < 0) {
		r->col_user = r->col_item = r->col_ts = -1;
		if (r->ts_optional)
			return bad(r, "expected a header naming the columns user and item (and timestamp), "
				   "or rows user,item[,timestamp]");
		return bad(r, "expected a header naming the columns user, item and timestamp, or a "
			   "row user,item,timestamp with a timestamp in seconds or ISO 8601");
	}
	return 1;
}

void icsv_timestamp_optional(icsv *r)
{
	r->ts_optional = 1;
}

/* Reads the next line, its newline dropped, into r->line as *len bytes.
 * Returns 0, 1 for a line over ICSV_MAX_LINE bytes (read to its end and
 * dropped), VR_EEOF at the end of the file, or -errno. */
static int read_line(icsv *r, size_t *len)
{
	size_t n = 0;
	int c, over = 0;
	flockfile(r->f);
	while ((c = getc_unlocked(r->f)) != EOF && c != '\n') {
		if (n < ICSV_MAX_LINE)
			r->line[n++] = (char)c;
		else
			over = 1;
	}
	int err = ferror(r->f) ? (errno ? errno : EIO) : 0;
	funlockfile(r->f);
	if (err)
		return -err;
	if (c == EOF && !n && !over)
		return VR_EEOF;
	r->line[n] = 0;
	*len = n;
	return over;
}

int icsv_next(icsv *r, icsv_row *row)
{
	char *f[MAX_FIELDS];
	for (;;) {
		size_t len;
		errno = 0;
		int rc = read_line(r, &len);
		if (rc < 0)
			return rc;
		r->lineno++;
		if (rc)
			return bad(r, "the line is longer than %d bytes (a row of two ids and a "
				   "timestamp fits in far less)", ICSV_MAX_LINE);
		/* Everything below reads the line as a C string. */
		const char *nul = memchr(r->line, 0, len);
		if (nul)
			return bad(r, "a NUL byte at offset %zu of the line", (size_t)(nul - r->line));
		char *s = r->line;
		/* A UTF-8 byte order mark, as spreadsheet programs write. */
		if (r->lineno == 1 && !strncmp(s, "\xef\xbb\xbf", 3))
			s += 3;
		s = trim(s);
		if (!*s)
			continue;
		int n = split(s, f);
		if (n < 0)
			return bad(r, "a quoted field does not end");
		if (r->col_user < 0) {
			int rc = layout(r, f, n);
			if (rc < 0)
				return rc;
			if (rc == 1)
				continue;
		}
		int need = r->col_user > r->col_item ? r->col_user : r->col_item;
		need = need > r->col_ts ? need : r->col_ts;
		if (n <= need)
			return bad(r, "%d field(s), expected at least %d", n, need + 1);
		row->user = trim(f[r->col_user]);
		row->item = trim(f[r->col_item]);
		const char *t = r->col_ts >= 0 ? trim(f[r->col_ts]) : "0";
		row->line = r->lineno;
		char why[VR_ID_WHY + 100];
		if (vr_id_check_named("the user id", row->user, strlen(row->user), why, sizeof why) ||
		    vr_id_check_named("the item id", row->item, strlen(row->item), why, sizeof why))
			return bad(r, "%s", why);
		if (!parse_ts(t, &row->timestamp))
			return bad(r, "timestamp \"%.40s\" is not integer seconds or ISO 8601 "
				   "(2021-04-13T13:30:00Z)", t);
		return 0;
	}
}
