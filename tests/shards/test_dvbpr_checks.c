/* Unit tests of the request checks of the two RPCs DVBPR across shards
 * adds to featured (featured.proto): GetImages (a trainer shard reading
 * another's images) and AdoptModel (a shard taking the trainer's
 * version). Both run before anything is read or copied, so each refusal
 * is checked here with its precise status and a reason that names what
 * to fix. */
#include "err.h"
#include "harness.h"
#include "model_copy.h"
#include "service.h"
#include "shardmap.h"
#include "visrec/v1/featured.pb-c.h"

#include <stdio.h>
#include <string.h>

/* Shard "b:2" of the map "a:1,b:2,c:3". */
static fd_service *shard_b(void)
{
	static fd_service svc;
	char why[256];
	if (!svc.shards) {
		if (vr_shardmap_parse(&svc.shards, "a:1,b:2,c:3", why, sizeof why))
			return NULL;
		svc.shard_self = (size_t)vr_shardmap_find(svc.shards, "b:2");
	}
	return &svc;
}

/* An id of the map that shard want owns. */
static void id_owned_by(const fd_service *svc, size_t want, char *out, size_t cap)
{
	for (int i = 0;; i++) {
		snprintf(out, cap, "item-%d", i);
		if (vr_shardmap_owner(svc->shards, out, strlen(out)) == want)
			return;
	}
}

TEST(get_images_bounds_and_ids)
{
	fd_service *svc = shard_b();
	Visrec__V1__GetImagesRequest r = VISREC__V1__GET_IMAGES_REQUEST__INIT;
	char mine[32], theirs[32], why[512], *ids[FD_GET_IMAGES_MAX + 1];
	ASSERT_MSG(svc, "the map parses");
	id_owned_by(svc, svc->shard_self, mine, sizeof mine);
	id_owned_by(svc, (svc->shard_self + 1) % 3, theirs, sizeof theirs);
	/* A page from the start, and a page after an id: fine. */
	ASSERT_EQ_INT(fd_get_images_check(svc, &r, why, sizeof why), GRPC_STATUS_OK);
	r.after = mine;
	r.max_items = FD_GET_IMAGES_MAX;
	ASSERT_EQ_INT(fd_get_images_check(svc, &r, why, sizeof why), GRPC_STATUS_OK);
	r.max_items = FD_GET_IMAGES_MAX + 1;
	ASSERT_EQ_INT(fd_get_images_check(svc, &r, why, sizeof why), GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(why, "max_items 65 is over 64");
	/* ids and a page together */
	r.max_items = 0;
	ids[0] = mine;
	r.item_ids = ids;
	r.n_item_ids = 1;
	ASSERT_EQ_INT(fd_get_images_check(svc, &r, why, sizeof why), GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(why, "not both");
	r.after = (char *)"";
	ASSERT_EQ_INT(fd_get_images_check(svc, &r, why, sizeof why), GRPC_STATUS_OK);
	/* too many ids */
	for (int i = 0; i <= FD_GET_IMAGES_MAX; i++)
		ids[i] = mine;
	r.n_item_ids = FD_GET_IMAGES_MAX + 1;
	ASSERT_EQ_INT(fd_get_images_check(svc, &r, why, sizeof why), GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(why, "at most 64");
	/* a bad id, named by its index */
	r.n_item_ids = 2;
	ids[1] = (char *)"";
	ASSERT_EQ_INT(fd_get_images_check(svc, &r, why, sizeof why), GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(why, "item_ids[1]");
	/* an id another shard owns: FAILED_PRECONDITION naming the owner */
	ids[1] = theirs;
	ASSERT_EQ_INT(fd_get_images_check(svc, &r, why, sizeof why), GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(why, "item_ids[1]");
	ASSERT_CONTAINS(why, svc->shards->names[(svc->shard_self + 1) % 3]);
	/* a bad after */
	Visrec__V1__GetImagesRequest p = VISREC__V1__GET_IMAGES_REQUEST__INIT;
	p.after = (char *)"bad\nid";
	ASSERT_EQ_INT(fd_get_images_check(svc, &p, why, sizeof why), GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(why, "after");
}

TEST(get_images_unsharded_serves_any_id)
{
	fd_service svc = { 0 };
	Visrec__V1__GetImagesRequest r = VISREC__V1__GET_IMAGES_REQUEST__INIT;
	char *ids[] = { (char *)"anything" }, why[256];
	r.item_ids = ids;
	r.n_item_ids = 1;
	ASSERT_EQ_INT(fd_get_images_check(&svc, &r, why, sizeof why), GRPC_STATUS_OK);
}

TEST(adopt_model_needs_another_shard_and_a_version)
{
	fd_service *svc = shard_b(), plain = { 0 };
	Visrec__V1__AdoptModelRequest r = VISREC__V1__ADOPT_MODEL_REQUEST__INIT;
	char why[1024];
	ASSERT_MSG(svc, "the map parses");
	r.model_version = 3;
	r.from = (char *)"a:1";
	ASSERT_EQ_INT(fd_adopt_check(svc, &r, why, sizeof why), GRPC_STATUS_OK);
	ASSERT_EQ_INT(fd_adopt_check(&plain, &r, why, sizeof why), GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(why, "without --shards");
	r.model_version = 0;
	ASSERT_EQ_INT(fd_adopt_check(svc, &r, why, sizeof why), GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(why, "model_version");
	r.model_version = 3;
	r.from = (char *)"b:2"; /* itself */
	ASSERT_EQ_INT(fd_adopt_check(svc, &r, why, sizeof why), GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(why, "this one is b:2");
	r.from = (char *)"evil.example:443"; /* not in the list: never dialled */
	ASSERT_EQ_INT(fd_adopt_check(svc, &r, why, sizeof why), GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(why, "a:1,b:2,c:3");
	r.from = (char *)"";
	ASSERT_EQ_INT(fd_adopt_check(svc, &r, why, sizeof why), GRPC_STATUS_INVALID_ARGUMENT);
}

static const struct vr_test tests[] = {
	T(get_images_bounds_and_ids), T(get_images_unsharded_serves_any_id),
	T(adopt_model_needs_another_shard_and_a_version), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
