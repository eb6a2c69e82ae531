/* Unit tests of common/shardmap: the shard list's rules and limits, its
 * normal form and tag, and the rendezvous hash, whose values are part of
 * the on-disk contract: the expected numbers below were computed by an
 * independent implementation of the formula in shardmap.h (Python), so a
 * change to the hash fails here before it moves anyone's items. */
#include "err.h"
#include "harness.h"
#include "shardmap.h"

#include <stdint.h>

static vr_shardmap *parse_ok(const char *list)
{
	vr_shardmap *m = NULL;
	char why[256] = "";
	int rc = vr_shardmap_parse(&m, list, why, sizeof why);
	if (rc)
		fprintf(stderr, "parse of \"%s\" failed: %s\n", list, why);
	return m;
}

/* The list is refused with rc, and why holds want. */
#define REFUSED(list, rc, want) do { vr_shardmap *m_ = NULL; char why_[256] = ""; \
	int rc_ = vr_shardmap_parse(&m_, (list), why_, sizeof why_); \
	ASSERT_MSG(rc_ == (rc) && !m_, "\"%.60s\" gave rc %d (%s)", (list), rc_, why_); \
	ASSERT_CONTAINS(why_, (want)); } while (0)

TEST(hash_values_are_the_contract)
{
	ASSERT_MSG(vr_shard_hash("127.0.0.1:7001", "i00001", 6) == 0x589f0d2b3819ab5dULL, "hash 1");
	ASSERT_MSG(vr_shard_hash("127.0.0.1:7002", "i00001", 6) == 0x69cab4424494f79dULL, "hash 2");
	ASSERT_MSG(vr_shard_hash("shard-0.featured:50051", "item-42", 7) == 0x738d3ad5008351a7ULL,
		   "hash 3");
	ASSERT_MSG(vr_shard_hash("a:1", "", 0) == 0x26a5ac253384e0d2ULL, "hash of an empty id");
}

TEST(owner_is_rendezvous_and_order_free)
{
	vr_shardmap *a = parse_ok("127.0.0.1:7003,127.0.0.1:7001,127.0.0.1:7002");
	vr_shardmap *b = parse_ok("127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003");
	ASSERT_MSG(a && b, "parsed");
	ASSERT_STR_EQ(a->list, "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003");
	ASSERT_STR_EQ(a->tag, b->tag);
	ASSERT_STR_EQ(a->tag, "3-6c2565106146565a");
	/* Owners of i00000..i00009 and the spread over 1000 ids, as the
	 * independent implementation has them. */
	static const int want[10] = { 1, 2, 2, 1, 0, 0, 1, 2, 2, 2 };
	size_t count[3] = { 0 };
	char id[16];
	for (int j = 0; j < 1000; j++) {
		snprintf(id, sizeof id, "i%05d", j);
		size_t o = vr_shardmap_owner(a, id, strlen(id));
		ASSERT_EQ_INT(o, vr_shardmap_owner(b, id, strlen(id)));
		if (j < 10)
			ASSERT_EQ_INT(o, want[j]);
		count[o]++;
	}
	ASSERT_EQ_INT(count[0], 360);
	ASSERT_EQ_INT(count[1], 322);
	ASSERT_EQ_INT(count[2], 318);
	ASSERT_EQ_INT(vr_shardmap_find(a, "127.0.0.1:7002"), 1);
	ASSERT_EQ_INT(vr_shardmap_find(a, "127.0.0.1:7009"), -1);
	vr_shardmap_free(a);
	vr_shardmap_free(b);
}

TEST(adding_a_shard_moves_only_to_it)
{
	vr_shardmap *two = parse_ok("h:1,h:2"), *three = parse_ok("h:1,h:2,h:3");
	ASSERT_MSG(two && three, "parsed");
	size_t moved = 0;
	char id[16];
	for (int j = 0; j < 3000; j++) {
		snprintf(id, sizeof id, "item%d", j);
		const char *before = two->names[vr_shardmap_owner(two, id, strlen(id))];
		const char *after = three->names[vr_shardmap_owner(three, id, strlen(id))];
		if (strcmp(before, after)) {
			ASSERT_STR_EQ(after, "h:3");
			moved++;
		}
	}
	ASSERT_MSG(moved > 800 && moved < 1200, "%zu of 3000 moved (about a third expected)", moved);
	vr_shardmap_free(two);
	vr_shardmap_free(three);
}

TEST(single_shard_and_ipv6)
{
	vr_shardmap *m = parse_ok("[::1]:50051");
	ASSERT_MSG(m, "parsed");
	ASSERT_EQ_INT(m->n, 1);
	ASSERT_EQ_INT(vr_shardmap_owner(m, "x", 1), 0);
	vr_shardmap_free(m);
}

TEST(bad_entries)
{
	REFUSED("", VR_EINVAL, "is empty");
	REFUSED("a:1,,b:2", VR_EINVAL, "entry 2 of the shard list is empty");
	REFUSED("a:1,", VR_EINVAL, "entry 2 of the shard list is empty");
	REFUSED("a", VR_EINVAL, "has no :port");
	REFUSED(":80", VR_EINVAL, "no host");
	REFUSED("a:0", VR_EINVAL, "has port \"0\"");
	REFUSED("a:65536", VR_EINVAL, "has port 65536");
	REFUSED("a:08", VR_EINVAL, "no leading zero");
	REFUSED("a:8x", VR_EINVAL, "digits only");
	REFUSED("a b:1", VR_EINVAL, "in its host (byte 1)");
	REFUSED("a:1, b:2", VR_EINVAL, "entry 2");
	REFUSED("[::1:80", VR_EINVAL, "closing ']'");
	REFUSED("[::g]:80", VR_EINVAL, "inside [...]");
	REFUSED("[::1]80", VR_EINVAL, "no :port after");
	REFUSED("b:2,a:1,b:2", VR_EINVAL, "names b:2 twice");
}

TEST(limits)
{
	char *big = malloc(VR_SHARD_LIST_MAX + 2);
	ASSERT_MSG(big, "malloc");
	/* An address of 255 bytes is allowed, 256 is not. */
	memset(big, 'h', 253);
	memcpy(big + 253, ":1", 3);
	vr_shardmap *m = parse_ok(big);
	ASSERT_MSG(m, "255 bytes");
	vr_shardmap_free(m);
	memset(big, 'h', 254);
	memcpy(big + 254, ":1", 3);
	REFUSED(big, VR_ETOOBIG, "256 bytes, over the limit of 255");
	/* 256 shards are allowed, 257 are not. */
	size_t w = 0;
	for (int k = 0; k < VR_SHARDS_MAX + 1; k++)
		w += (size_t)sprintf(big + w, "%sh:%d", k ? "," : "", k + 1);
	REFUSED(big, VR_ETOOBIG, "257 entries, over the limit of 256");
	*strrchr(big, ',') = 0;
	m = parse_ok(big);
	ASSERT_MSG(m && m->n == VR_SHARDS_MAX, "256 shards");
	vr_shardmap_free(m);
	memset(big, ',', VR_SHARD_LIST_MAX + 1);
	big[VR_SHARD_LIST_MAX + 1] = 0;
	REFUSED(big, VR_ETOOBIG, "over the limit");
	free(big);
}

TEST(tags_agree_or_are_refused)
{
	vr_shardmap *three = parse_ok("h:1,h:2,h:3"), *two = parse_ok("h:1,h:2");
	char why[512] = "";
	ASSERT_MSG(three && two, "parsed");
	ASSERT_OK(vr_shardmap_check_tag(NULL, NULL, NULL, why, sizeof why));
	ASSERT_OK(vr_shardmap_check_tag(three, "h:1", three->tag, why, sizeof why));
	ASSERT_EQ_INT(vr_shardmap_check_tag(three, "h:1", two->tag, why, sizeof why), VR_ESTATE);
	ASSERT_CONTAINS(why, "this featured h:1 holds a map of 3 shards (fingerprint ");
	ASSERT_CONTAINS(why, "made with a map of 2 shards (fingerprint ");
	ASSERT_CONTAINS(why, two->tag + 2);
	ASSERT_EQ_INT(vr_shardmap_check_tag(three, "h:1", NULL, why, sizeof why), VR_ESTATE);
	ASSERT_CONTAINS(why, "made with no shard map");
	ASSERT_EQ_INT(vr_shardmap_check_tag(NULL, NULL, two->tag, why, sizeof why), VR_ESTATE);
	ASSERT_CONTAINS(why, "holds no shard map");
	ASSERT_EQ_INT(vr_shardmap_check_tag(two, NULL, "garbage", why, sizeof why), VR_ESTATE);
	ASSERT_CONTAINS(why, "no N-FINGERPRINT");
	vr_shardmap_free(three);
	vr_shardmap_free(two);
}

static const struct vr_test tests[] = {
	T(hash_values_are_the_contract), T(owner_is_rendezvous_and_order_free),
	T(adding_a_shard_moves_only_to_it), T(single_shard_and_ipv6), T(bad_entries), T(limits),
	T(tags_agree_or_are_refused), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
