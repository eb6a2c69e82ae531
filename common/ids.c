/* ids: the id rule (ids.h). UTF-8 is decoded by the table of RFC 3629,
 * section 4, so the second byte's range rules out overlong forms,
 * surrogates and code points above U+10FFFF in one place. */
#include "ids.h"

#include "err.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Decodes the character at s[0..n), n >= 1. Returns its length (1..4)
 * with *cp set, or 0 with *what saying why it is not UTF-8. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp, const char **what)
{
	unsigned char b = s[0], lo = 0x80, hi = 0xbf;
	size_t len;
	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	if (b < 0xc2) {
		*what = b < 0xc0 ? "a continuation byte where a character should start"
				 : "an overlong encoding";
		return 0;
	}
	if (b < 0xe0) {
		len = 2;
		*cp = b & 0x1f;
	} else if (b < 0xf0) {
		len = 3;
		*cp = b & 0x0f;
		if (b == 0xe0)
			lo = 0xa0;
		else if (b == 0xed)
			hi = 0x9f;
	} else if (b < 0xf5) {
		len = 4;
		*cp = b & 0x07;
		if (b == 0xf0)
			lo = 0x90;
		else if (b == 0xf4)
			hi = 0x8f;
	} else {
		*what = "a byte that never occurs in UTF-8";
		return 0;
	}
	for (size_t k = 1; k < len; k++) {
		if (k >= n || (s[k] & 0xc0) != 0x80) {
			*what = "a character cut short";
			return 0;
		}
		if (k == 1 && (s[1] < lo || s[1] > hi)) {
			*what = b == 0xed ? "a UTF-16 surrogate" : b == 0xf4 ? "a code point above U+10FFFF"
									   : "an overlong encoding";
			return 0;
		}
		*cp = *cp << 6 | (s[k] & 0x3f);
	}
	return len;
}

static int is_control(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

int vr_id_check(const char *id, size_t len, char *why, size_t cap)
{
	char dummy[1];
	if (!why) {
		why = dummy;
		cap = sizeof dummy;
	}
	if (!len) {
		snprintf(why, cap, "is empty");
		return VR_EINVAL;
	}
	if (len > VR_ID_MAX) {
		snprintf(why, cap, "is longer than %d bytes (%zu)", VR_ID_MAX, len);
		return VR_EINVAL;
	}
	const unsigned char *s = (const unsigned char *)id;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		const char *what = NULL;
		size_t n = utf8_next(s + i, len - i, &cp, &what);
		if (!n) {
			snprintf(why, cap, "is not valid UTF-8 at byte %zu (%s)", i, what);
			return VR_EINVAL;
		}
		if (cp == 0) {
			snprintf(why, cap, "contains a NUL byte at offset %zu", i);
			return VR_EINVAL;
		}
		if (is_control(cp)) {
			snprintf(why, cap, "contains a control character (U+%04X) at byte %zu", (unsigned)cp, i);
			return VR_EINVAL;
		}
		i += n;
	}
	return 0;
}

int vr_id_check_named(const char *name, const char *id, size_t len, char *why, size_t cap)
{
	char reason[VR_ID_WHY], esc[72];
	if (!vr_id_check(id, len, reason, sizeof reason))
		return 0;
	if (len)
		snprintf(why, cap, "%s \"%s\" %s", name, vr_id_escape(esc, sizeof esc, id, len), reason);
	else
		snprintf(why, cap, "%s %s", name, reason);
	return VR_EINVAL;
}

/* The rendering of the character at s[0..n) into piece (8 bytes): its
 * width; *used gets the bytes of s it takes. */
static size_t escape_one(const unsigned char *s, size_t n, char *piece, size_t *used)
{
	uint32_t cp;
	const char *what;
	size_t len = utf8_next(s, n, &cp, &what);
	if (len && !is_control(cp) && cp != '\\') {
		for (size_t k = 0; k < len; k++)
			piece[k] = (char)s[k];
		*used = len;
		return len;
	}
	*used = 1;
	if (s[0] == '\\') {
		piece[0] = piece[1] = '\\';
		return 2;
	}
	snprintf(piece, 8, "\\x%02x", s[0]);
	return 4;
}

char *vr_id_escape(char *out, size_t cap, const char *s, size_t len)
{
	static const char ellipsis[] = "...";
	const unsigned char *p = (const unsigned char *)s;
	char piece[8];
	size_t total = 0, used, width, at = 0;
	for (size_t i = 0; i < len; i += used)
		total += escape_one(p + i, len - i, piece, &used);
	/* When it does not fit whole, what is shown leaves room for "...". */
	size_t limit = total < cap ? total : cap - sizeof ellipsis;
	for (size_t i = 0; i < len; i += used) {
		width = escape_one(p + i, len - i, piece, &used);
		if (at + width > limit)
			break;
		memcpy(out + at, piece, width);
		at += width;
	}
	if (total >= cap)
		memcpy(out + at, ellipsis, sizeof ellipsis);
	else
		out[at] = 0;
	return out;
}
