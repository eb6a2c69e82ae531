/* Fuzzes what featured does with a request message before any state is
 * involved: our rpc layer's unpack of the bytes off the wire (vr__unpack,
 * from one slice or from several, as gRPC hands them over) into each
 * visrec.v1.Featured request type, then the checks its handler runs
 * first: the item check and the JPEG decode of PutItems and Embed
 * (featured's default limits, a 32-pixel input), the item ids of
 * GetVectors, TrainVisual's Start and step checks, and the request checks
 * of GetImages and AdoptModel (on an unsharded featured and on shard
 * "b:2" of "a:1,b:2,c:3"). Every message that unpacks must pack back
 * consistently (fz_repack).
 *
 * Checks that stay inline in a handler because they need its state (the
 * active model's version for GetVectors, the session for TrainVisual's
 * step order and its cache lookups) are not reached here; the daemon tests
 * cover them.
 *
 * Input: a selector byte (bits 0-6: the request type, modulo 8; bit 7:
 * hand the bytes over in two slices), then the message bytes. */
#include "decode.h"
#include "err.h"
#include "fstore.h"
#include "ids.h"
#include "fuzz_proto.h"
#include "model_copy.h"
#include "service.h"
#include "train_visual.h"
#include "visrec/v1/featured.pb-c.h"

#include <stdlib.h>
#include <string.h>

static const ProtobufCMessageDescriptor *const types[] = {
	&visrec__v1__put_items_request__descriptor,
	&visrec__v1__embed_request__descriptor,
	&visrec__v1__get_vectors_request__descriptor,
	&visrec__v1__watch_request__descriptor,
	&visrec__v1__train_visual_request__descriptor,
	&visrec__v1__featured_info_request__descriptor,
	&visrec__v1__get_images_request__descriptor,
	&visrec__v1__adopt_model_request__descriptor,
};
#define N_TYPES (sizeof types / sizeof types[0])

/* featured's flag defaults. */
static const fd_service svc = { .max_image_bytes = 8388608, .max_image_pixels = 50000000 };

static void check_image(const char *id, const ProtobufCBinaryData *image)
{
	static fd_decoder *dec;
	static uint8_t rgb[32 * 32 * 3];
	char why[400];
	if (!dec) {
		const fd_decode_limits l = { .max_bytes = svc.max_image_bytes,
					     .max_pixels = svc.max_image_pixels };
		if (fd_decoder_create(&dec, &l))
			abort();
	}
	if (fd_check_item(&svc, id, image->len, why, sizeof why)) {
		fz_touch(why, strlen(why));
		return;
	}
	fd_decode(dec, image->data, image->len, 32, 0, rgb, NULL, why, sizeof why);
}

static void check(int type, const ProtobufCMessage *m)
{
	char why[400];
	switch (type) {
	case 0: {
		const Visrec__V1__PutItemsRequest *r = (const void *)m;
		check_image(r->item_id, &r->image);
		break;
	}
	case 1: {
		const Visrec__V1__EmbedRequest *r = (const void *)m;
		check_image(r->item_id, &r->image);
		break;
	}
	case 2: {
		const Visrec__V1__GetVectorsRequest *r = (const void *)m;
		for (size_t i = 0; i < r->n_item_ids; i++)
			vr_id_check(r->item_ids[i], strlen(r->item_ids[i]), why, sizeof why);
		break;
	}
	case 4: {
		const Visrec__V1__TrainVisualRequest *r = (const void *)m;
		if (r->msg_case == VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_START)
			fd_tv_check_start(r->start, why, sizeof why);
		else if (r->msg_case == VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_STEP)
			for (size_t dims = 1; dims <= 128; dims *= 2)
				fd_tv_check_step(r->step, dims, FD_TV_MAX_HEAD_TRIPLES, why, sizeof why);
		break;
	}
	case 6:
	case 7: {
		static fd_service shard;
		if (!shard.shards) {
			if (vr_shardmap_parse(&shard.shards, "a:1,b:2,c:3", why, sizeof why))
				abort();
			shard.shard_self = 1;
		}
		if (type == 6) {
			if (fd_get_images_check(&svc, (const void *)m, why, sizeof why))
				fz_touch(why, strlen(why));
			if (fd_get_images_check(&shard, (const void *)m, why, sizeof why))
				fz_touch(why, strlen(why));
		} else {
			if (fd_adopt_check(&svc, (const void *)m, why, sizeof why) !=
			    GRPC_STATUS_FAILED_PRECONDITION)
				abort(); /* AdoptModel needs --shards */
			if (fd_adopt_check(&shard, (const void *)m, why, sizeof why))
				fz_touch(why, strlen(why));
		}
		break;
	}
	default: /* WatchRequest, FeaturedInfoRequest: numbers and flags only */
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fz_messages(data, size, types, N_TYPES, check);
}
