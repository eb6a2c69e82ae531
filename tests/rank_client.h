/* rank_client: the calls tests make to rankd's Rank service by hand (a
 * unary call by method name, Info, freeing an answer), shared by the test
 * programs that drive real rankd processes. */
#ifndef VR_TEST_RANK_CLIENT_H
#define VR_TEST_RANK_CLIENT_H

#include <stdio.h>

#include "rpc.h"
#include "visrec/v1/rankd.pb-c.h"

/* Calls /visrec.v1.Rank/<method> (30 s deadline); *resp gets the answer. */
static inline int unary(vr_channel *ch, const char *method, const ProtobufCMessage *req,
			const ProtobufCMessageDescriptor *d, void *resp, vr_status *st)
{
	char path[96];
	snprintf(path, sizeof path, "/visrec.v1.Rank/%s", method);
	return vr_client_unary(ch, path, req, d, (ProtobufCMessage **)resp, 30000, NULL, st);
}

static inline void release(void *m)
{
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
}

/* rankd's Info, or NULL when the call fails. */
static inline Visrec__V1__RankInfoResponse *info(vr_channel *ch)
{
	Visrec__V1__RankInfoRequest req = VISREC__V1__RANK_INFO_REQUEST__INIT;
	Visrec__V1__RankInfoResponse *resp = NULL;
	vr_status st;
	if (unary(ch, "Info", &req.base, &visrec__v1__rank_info_response__descriptor, &resp, &st))
		return NULL;
	return resp;
}

#endif
