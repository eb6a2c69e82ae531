/* Unit tests of common/ids: the id rule every daemon and the CLI apply,
 * one test per class of bad id, and the escaping used to show ids. */
#include "err.h"
#include "harness.h"
#include "ids.h"
#include "intern.h"

/* vr_id_check of len bytes of s: VR_EINVAL with want in the reason, or
 * (want NULL) 0. */
#define CHECK(s, len, want) do { char why_[VR_ID_WHY] = ""; \
	int rc_ = vr_id_check((s), (len), why_, sizeof why_); \
	if (want) { ASSERT_MSG(rc_ == VR_EINVAL, "\"%s\" was accepted", #s); \
		ASSERT_CONTAINS(why_, (const char *)(want)); } \
	else ASSERT_MSG(rc_ == 0, "%s refused: %s", #s, why_); } while (0)
#define CHECK_STR(s, want) CHECK(s, sizeof(s) - 1, want)

TEST(empty)
{
	CHECK("", 0, "is empty");
	CHECK("x", 0, "is empty"); /* the length rules, not the NUL */
}

TEST(length_limit_in_bytes)
{
	char id[VR_ID_MAX + 2];
	memset(id, 'x', sizeof id);
	CHECK(id, VR_ID_MAX, NULL);
	CHECK(id, VR_ID_MAX + 1, "is longer than 256 bytes (257)");
	/* 64 four-byte characters are 256 bytes: at the limit; one more byte is over. */
	for (int i = 0; i < 64; i++)
		memcpy(id + 4 * i, "\xf0\x9f\x91\x97", 4);
	CHECK(id, VR_ID_MAX, NULL);
	id[VR_ID_MAX] = 'a';
	CHECK(id, VR_ID_MAX + 1, "longer than");
}

TEST(nul_inside)
{
	CHECK_STR("i000005\0evil", "contains a NUL byte at offset 7");
	CHECK_STR("\0", "contains a NUL byte at offset 0");
	CHECK_STR("tail\0", "contains a NUL byte at offset 4");
}

TEST(invalid_utf8)
{
	CHECK_STR("caf\xc3", "is not valid UTF-8 at byte 3 (a character cut short)");
	CHECK_STR("caf\xc3\x28", "at byte 3 (a character cut short)");
	CHECK_STR("a\x80", "at byte 1 (a continuation byte");
	CHECK_STR("a\xff", "at byte 1 (a byte that never occurs in UTF-8)");
	CHECK_STR("\xf8\x88\x80\x80\x80", "at byte 0 (a byte that never occurs");
	/* Overlong forms of '/' and of U+0000 (modified UTF-8). */
	CHECK_STR("a\xc0\xaf", "at byte 1 (an overlong encoding)");
	CHECK_STR("\xc1\xbf", "overlong");
	CHECK_STR("\xc0\x80", "overlong");
	CHECK_STR("\xe0\x80\xaf", "overlong");
	CHECK_STR("\xe0\x9f\xbf", "overlong");
	CHECK_STR("\xf0\x80\x80\xaf", "overlong");
	CHECK_STR("\xf0\x8f\xbf\xbf", "overlong");
	/* UTF-16 surrogates U+D800 and U+DFFF. */
	CHECK_STR("x\xed\xa0\x80", "at byte 1 (a UTF-16 surrogate)");
	CHECK_STR("\xed\xbf\xbf", "surrogate");
	/* Above U+10FFFF. */
	CHECK_STR("\xf4\x90\x80\x80", "above U+10FFFF");
	CHECK_STR("\xf5\x80\x80\x80", "never occurs");
	CHECK_STR("ok\xe2\x82", "at byte 2 (a character cut short)");
}

TEST(control_characters)
{
	CHECK_STR("a\tb", "contains a control character (U+0009) at byte 1");
	CHECK_STR("\x01", "(U+0001) at byte 0");
	CHECK_STR("line\n", "(U+000A) at byte 4");
	CHECK_STR("a\x1f", "(U+001F)");
	CHECK_STR("del\x7f", "(U+007F) at byte 3");
	CHECK_STR("c1\xc2\x80", "(U+0080) at byte 2");
	CHECK_STR("c1\xc2\x85", "(U+0085)");
	CHECK_STR("c1\xc2\x9f", "(U+009F)");
}

TEST(valid_ids_accepted)
{
	CHECK_STR("sku-42/blue", NULL);
	CHECK_STR(" spaces and \"quotes\", commas ", NULL);
	CHECK_STR("caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x91\x97", NULL);     /* é, €, 👗 */
	CHECK_STR("\xc2\xa0", NULL);                                       /* U+00A0, just past C1 */
	CHECK_STR("\xc2\x7e", "cut short");                                /* lead without continuation */
	CHECK_STR("\xe0\xa0\x80", NULL);                                   /* U+0800, shortest form */
	CHECK_STR("\xed\x9f\xbf", NULL);                                   /* U+D7FF, below the surrogates */
	CHECK_STR("\xee\x80\x80", NULL);                                   /* U+E000, above them */
	CHECK_STR("\xef\xbf\xbd", NULL);                                   /* U+FFFD */
	CHECK_STR("\xf0\x90\x80\x80", NULL);                               /* U+10000 */
	CHECK_STR("\xf4\x8f\xbf\xbf", NULL);                               /* U+10FFFF */
	CHECK_STR("\xe6\x97\xa5\xe6\x9c\xac", NULL);                       /* 日本 */
	ASSERT_OK(vr_id_check("x", 1, NULL, 0));
	ASSERT_EQ_INT(vr_id_check("", 0, NULL, 0), VR_EINVAL);
}

TEST(named_messages)
{
	char why[300];
	ASSERT_OK(vr_id_check_named("user_id", "u1", 2, why, sizeof why));
	ASSERT_EQ_INT(vr_id_check_named("interactions[3].user_id", "", 0, why, sizeof why), VR_EINVAL);
	ASSERT_STR_EQ(why, "interactions[3].user_id is empty");
	ASSERT_EQ_INT(vr_id_check_named("item_id", "caf\xc3", 4, why, sizeof why), VR_EINVAL);
	ASSERT_STR_EQ(why, "item_id \"caf\\xc3\" is not valid UTF-8 at byte 3 (a character cut short)");
	ASSERT_EQ_INT(vr_id_check_named("item_ids[1]", "a\\b\x7f", 4, why, sizeof why), VR_EINVAL);
	ASSERT_STR_EQ(why, "item_ids[1] \"a\\\\b\\x7f\" contains a control character (U+007F) at byte 3");
	char big[300];
	memset(big, 'y', sizeof big);
	ASSERT_EQ_INT(vr_id_check_named("user_id", big, sizeof big, why, sizeof why), VR_EINVAL);
	ASSERT_CONTAINS(why, "...\" is longer than 256 bytes (300)");
	ASSERT(strlen(why) < 120);
}

TEST(escape)
{
	char out[64];
	ASSERT_STR_EQ(vr_id_escape(out, sizeof out, "plain", 5), "plain");
	ASSERT_STR_EQ(vr_id_escape(out, sizeof out, "i5\0evil", 7), "i5\\x00evil");
	ASSERT_STR_EQ(vr_id_escape(out, sizeof out, "caf\xc3\xa9", 5), "caf\xc3\xa9");
	ASSERT_STR_EQ(vr_id_escape(out, sizeof out, "caf\xc3", 4), "caf\\xc3");
	ASSERT_STR_EQ(vr_id_escape(out, sizeof out, "\xed\xa0\x80", 3), "\\xed\\xa0\\x80");
	ASSERT_STR_EQ(vr_id_escape(out, sizeof out, "c1\xc2\x85", 4), "c1\\xc2\\x85");
	ASSERT_STR_EQ(vr_id_escape(out, sizeof out, "a\\b", 3), "a\\\\b");
	ASSERT_STR_EQ(vr_id_escape(out, sizeof out, "", 0), "");
	/* Cut at a character boundary, never inside one, and marked. */
	ASSERT_STR_EQ(vr_id_escape(out, 8, "abcdefghij", 10), "abcd...");
	ASSERT_STR_EQ(vr_id_escape(out, 8, "abcdefg", 7), "abcdefg");
	ASSERT_STR_EQ(vr_id_escape(out, 9, "ab\xe2\x82\xac\xe2\x82\xac", 8), "ab\xe2\x82\xac\xe2\x82\xac");
	ASSERT_STR_EQ(vr_id_escape(out, 8, "ab\xe2\x82\xac\xe2\x82\xac", 8), "ab...");
	ASSERT_STR_EQ(vr_id_escape(out, 10, "ab\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", 11),
		      "ab\xe2\x82\xac...");
	ASSERT_STR_EQ(vr_id_escape(out, 8, "\x01\x02\x03", 3), "\\x01...");
	/* Whatever the input, the output is an id-safe string: valid UTF-8, no controls. */
	unsigned char all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	char wide[1100];
	vr_id_escape(wide, sizeof wide, (const char *)all, sizeof all);
	ASSERT_EQ_INT(strlen(wide), 32 * 4 + 95 + 1 + 129 * 4);
	for (size_t at = 0; at < strlen(wide); at += 200)
		ASSERT_OK(vr_id_check(wide + at, strlen(wide + at) < 200 ? strlen(wide + at) : 200, NULL, 0));
}

/* The id table (intern.h): dense indices in order of first sight, ids
 * with the same bytes one entry, lengths not C strings, through growth. */
TEST(intern_dense_indices)
{
	vr_intern t = { 0 };
	char id[32];
	ASSERT_EQ_INT(vr_intern_find(&t, "a", 1), VR_INTERN_NONE);
	ASSERT(!vr_intern_id(&t, 0, NULL));
	for (int k = 0; k < 5000; k++) {
		int n = snprintf(id, sizeof id, "id-%d", k);
		ASSERT_OK(vr_intern_reserve(&t, 2, 2 * ((size_t)n + 1)));
		ASSERT_EQ_INT(vr_intern_add(&t, id, (size_t)n), k);
		ASSERT_EQ_INT(vr_intern_add(&t, id, (size_t)n), k); /* again: the same index */
	}
	ASSERT_EQ_INT(t.n, 5000);
	for (int k = 0; k < 5000; k++) {
		size_t len;
		int n = snprintf(id, sizeof id, "id-%d", k);
		ASSERT_EQ_INT(vr_intern_find(&t, id, (size_t)n), k);
		ASSERT_STR_EQ(vr_intern_id(&t, (uint32_t)k, &len), id);
		ASSERT_EQ_INT(len, n);
	}
	/* Bytes, not C strings: "id-1" is not "id-12" cut short, and a prefix
	 * of a stored id is no hit. */
	ASSERT_EQ_INT(vr_intern_find(&t, "id-12", 4), 1);
	ASSERT_EQ_INT(vr_intern_find(&t, "id-", 3), VR_INTERN_NONE);
	ASSERT_EQ_INT(vr_intern_reserve(&t, UINT32_MAX, 0), VR_ETOOBIG);
	vr_intern_free(&t);
	ASSERT_EQ_INT(t.n, 0);
}

static const struct vr_test tests[] = {
	T(empty), T(length_limit_in_bytes), T(nul_inside), T(invalid_utf8), T(control_characters),
	T(valid_ids_accepted), T(named_messages), T(escape), T(intern_dense_indices), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
