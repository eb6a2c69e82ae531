/* Every RPC that takes an id, in the real featured and rankd processes,
 * refuses each kind of bad id (empty, too long, a NUL inside, not UTF-8,
 * control characters) with INVALID_ARGUMENT naming the id's place and the
 * reason, and accepts a valid multi-byte UTF-8 id; the CLI refuses the same
 * ids in the files it reads. Requests go out as the wire twins of
 * idwire.proto (ids as bytes), so a test can send what no protobuf-c
 * string holds.
 *
 * Why one file at ~870 lines: one rule (ids) checked at every RPC and
 * file that takes one. */
#include "err.h"
#include "harness.h"
#include "ids.h"
#include "jpeg_fixtures.h"
#include "procs.h"
#include "rpc.h"
#include "idwire.pb-c.h"
#include "visrec/v1/featured.pb-c.h"
#include "visrec/v1/rankd.pb-c.h"

#include <sys/stat.h>

#define FEATURED "/visrec.v1.Featured/"
#define RANK "/visrec.v1.Rank/"

static char tmpdir[64];

/* ---- the ids --------------------------------------------------------------- */

struct bad {
	const char *what;
	const char *id;
	size_t len;
	const char *reason; /* in the refusal's message */
};

static char long_id[VR_ID_MAX + 1];

#define BAD(what, lit, reason) { what, lit, sizeof(lit) - 1, reason }
static struct bad bads[] = {
	BAD("empty", "", "is empty"),
	{ "too long", long_id, VR_ID_MAX + 1, "is longer than 256 bytes (257)" },
	BAD("a NUL inside", "i000005\0evil", "contains a NUL byte at offset 7"),
	BAD("cut UTF-8", "caf\xc3", "is not valid UTF-8 at byte 3"),
	BAD("overlong UTF-8", "a\xc0\xaf", "is not valid UTF-8 at byte 1 (an overlong encoding)"),
	BAD("a surrogate", "x\xed\xa0\x80", "at byte 1 (a UTF-16 surrogate)"),
	BAD("above U+10FFFF", "\xf4\x90\x80\x80", "above U+10FFFF"),
	BAD("a C0 control", "a\tb", "contains a control character (U+0009) at byte 1"),
	BAD("DEL", "del\x7f", "contains a control character (U+007F) at byte 3"),
	BAD("a C1 control", "c1\xc2\x85", "contains a control character (U+0085) at byte 2"),
};
#define N_BAD (sizeof bads / sizeof bads[0])

/* é, € and 👗: multi-byte UTF-8 every RPC must take. */
static const char MB_ITEM[] = "caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x91\x97";
static const char MB_USER[] = "\xe5\xb1\xb1\xe7\x94\xb0-\xc3\xb8";

static ProtobufCBinaryData bin(const char *s, size_t len)
{
	return (ProtobufCBinaryData){ len, (uint8_t *)s };
}

static ProtobufCBinaryData str(const char *s)
{
	return bin(s, strlen(s));
}

/* Whether s is valid UTF-8: this test's own reading of RFC 3629, so the
 * daemons' replies are not checked with the code under test. */
static int utf8_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		unsigned c = p[i];
		size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 :
			     c >= 0xf0 && c <= 0xf4 ? 4 : 0;
		if (!len || i + len > n)
			return 0;
		uint32_t cp = len == 1 ? c : c & (0xff >> (len + 1));
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		static const uint32_t least[] = { 0, 0, 0x80, 0x800, 0x10000 };
		if (cp < least[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return 0;
		i += len;
	}
	return 1;
}

/* A refusal of bad id b at place pos: INVALID_ARGUMENT, the message names
 * pos first and says why, in valid UTF-8. */
#define ASSERT_REFUSED(rc, st, pos, b) do { int rc_ = (rc); const char *p_ = (pos), *m_ = (st).message; \
	ASSERT_MSG(rc_ == VR_ERPC && (st).code == GRPC_STATUS_INVALID_ARGUMENT, \
		   "%s at %s: rc %d, %s \"%s\"", (b)->what, p_, rc_, vr_status_name((st).code), m_); \
	ASSERT_MSG(!strncmp(m_, p_, strlen(p_)) && m_[strlen(p_)] == ' ', \
		   "%s: \"%s\" does not start with \"%s \"", (b)->what, m_, p_); \
	ASSERT_MSG(strstr(m_, (b)->reason), "%s: \"%s\" does not say \"%s\"", (b)->what, m_, (b)->reason); \
	ASSERT_MSG(utf8_ok(m_, strlen(m_)), "%s: the message is not UTF-8", (b)->what); } while (0)

/* ---- daemons and calls ---------------------------------------------------- */

static int start_featured(struct proc *p, const char *tag)
{
	char data[128], err[128];
	snprintf(data, sizeof data, "%s/%s-data", tmpdir, tag);
	snprintf(err, sizeof err, "%s/%s.stderr", tmpdir, tag);
	char *argv[] = { FEATURED_BIN, "--listen", "127.0.0.1:0", "--data", data, "--arch", "small",
			 "--input-size", "32", "--threads", "2", NULL };
	if (proc_spawn(p, err, argv))
		return -1;
	return proc_wait_ready(p, "featured", 30000);
}

static int start_rankd(struct proc *p, const char *tag)
{
	char data[128], err[128];
	snprintf(data, sizeof data, "%s/%s-data", tmpdir, tag);
	snprintf(err, sizeof err, "%s/%s.stderr", tmpdir, tag);
	char *argv[] = { RANKD_BIN, "--listen", "127.0.0.1:0", "--data", data, "--threads", "2",
			 "--featured", "127.0.0.1:9", "--follow-featured=false", NULL };
	if (proc_spawn(p, err, argv))
		return -1;
	return proc_wait_ready(p, "rankd", 20000);
}

static vr_channel *channel(const struct proc *p)
{
	vr_channel *ch = NULL;
	vr_channel_create(&ch, p->addr, NULL);
	return ch;
}

/* A unary call; *resp (may be NULL: dropped) is the caller's. */
static int unary(vr_channel *ch, const char *path, const ProtobufCMessage *req,
		 const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, vr_status *st)
{
	ProtobufCMessage *r = NULL;
	int rc = vr_client_unary(ch, path, req, rd, &r, 30000, NULL, st);
	if (resp)
		*resp = r;
	else if (r)
		protobuf_c_message_free_unpacked(r, NULL);
	return rc;
}

/* A server stream: sends req, keeps the replies (n of them, freed by the
 * caller with free_all) and the status. */
static int server_stream(vr_channel *ch, const char *path, const ProtobufCMessage *req,
			 const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out, int cap, int *n,
			 vr_status *st)
{
	vr_ccall *cc = NULL;
	ProtobufCMessage *m;
	*n = 0;
	int rc = vr_ccall_start(&cc, ch, path, rd, 60000, NULL);
	if (rc)
		return rc;
	if (!(rc = vr_ccall_send(cc, req)))
		rc = vr_ccall_close_send(cc);
	while (!rc && !(rc = vr_ccall_recv(cc, &m))) {
		if (*n < cap)
			out[(*n)++] = m;
		else
			protobuf_c_message_free_unpacked(m, NULL);
	}
	int frc = vr_ccall_finish(cc, st);
	return rc == VR_EEOF ? frc : rc;
}

static void free_all(ProtobufCMessage **m, int n)
{
	for (int i = 0; i < n; i++)
		protobuf_c_message_free_unpacked(m[i], NULL);
}

struct image {
	uint8_t *jpeg;
	size_t len;
};

static struct image image(unsigned seed)
{
	struct image im = { 0 };
	im.jpeg = fixture_jpeg(48, 40, seed, VR_SUBSAMP_420, 85, &im.len);
	return im;
}

/* One PutItems stream of n items (ids as bytes); *resp is the caller's. */
static int put(vr_channel *ch, const ProtobufCBinaryData *ids, const struct image *im, int n,
	       Visrec__V1__PutItemsResponse **resp, vr_status *st)
{
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	*resp = NULL;
	int rc = vr_ccall_start(&cc, ch, FEATURED "PutItems", &visrec__v1__put_items_response__descriptor,
				60000, NULL);
	if (rc)
		return rc;
	for (int i = 0; i < n && !rc; i++) {
		Visrec__Idwire__PutItemsRequest req = VISREC__IDWIRE__PUT_ITEMS_REQUEST__INIT;
		req.item_id = ids[i];
		req.image = bin((const char *)im[i].jpeg, im[i].len);
		rc = vr_ccall_send(cc, &req.base);
	}
	if (!rc)
		rc = vr_ccall_close_send(cc);
	if (!rc)
		rc = vr_ccall_recv(cc, &m);
	int frc = vr_ccall_finish(cc, st);
	*resp = (Visrec__V1__PutItemsResponse *)m;
	return rc ? rc : frc;
}

/* GetVectors of n ids: the vectors found, in order, into out (cap). */
static int get_vectors(vr_channel *ch, const ProtobufCBinaryData *ids, int n, Visrec__V1__Vector **out,
		       int cap, int *found, ProtobufCMessage **keep, int *nkeep, vr_status *st)
{
	Visrec__Idwire__GetVectorsRequest req = VISREC__IDWIRE__GET_VECTORS_REQUEST__INIT;
	req.n_item_ids = (size_t)n;
	req.item_ids = (ProtobufCBinaryData *)ids;
	int rc = server_stream(ch, FEATURED "GetVectors", &req.base,
			       &visrec__v1__get_vectors_response__descriptor, keep, 8, nkeep, st);
	*found = 0;
	for (int i = 0; i < *nkeep; i++) {
		const Visrec__V1__GetVectorsResponse *r = (const void *)keep[i];
		for (size_t v = 0; v < r->n_vectors && *found < cap; v++)
			out[(*found)++] = r->vectors[v];
	}
	return rc;
}

/* ---- featured ------------------------------------------------------------ */

TEST(featured_put_items)
{
	struct proc f;
	vr_status st;
	ASSERT_OK(start_featured(&f, "put"));
	vr_channel *ch = channel(&f);
	/* i000005 first, with its own image. */
	struct image orig = image(1), other = image(2);
	ProtobufCBinaryData first = str("i000005");
	Visrec__V1__PutItemsResponse *r = NULL;
	ASSERT_OK(put(ch, &first, &orig, 1, &r, &st));
	ASSERT_EQ_INT(r->accepted, 1);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	Visrec__V1__Vector *before[1];
	ProtobufCMessage *keep[8];
	int found, nkeep;
	ASSERT_OK(get_vectors(ch, &first, 1, before, 1, &found, keep, &nkeep, &st));
	ASSERT_EQ_INT(found, 1);
	uint32_t dims = (uint32_t)before[0]->n_values;
	float *orig_vec = malloc(dims * sizeof(float));
	ASSERT(orig_vec);
	memcpy(orig_vec, before[0]->values, dims * sizeof(float));
	free_all(keep, nkeep);

	/* One stream: a good item, every bad id (with another image), the
	 * multi-byte id, a good item. */
	enum { N = N_BAD + 3 };
	ProtobufCBinaryData ids[N];
	struct image ims[N];
	ids[0] = str("g1");
	for (size_t b = 0; b < N_BAD; b++)
		ids[1 + b] = bin(bads[b].id, bads[b].len);
	ids[N - 2] = str(MB_ITEM);
	ids[N - 1] = str("g2");
	for (int i = 0; i < N; i++)
		ims[i] = other;
	ASSERT_OK(put(ch, ids, ims, N, &r, &st));
	ASSERT_EQ_INT(r->n_items, N);
	ASSERT_EQ_INT(r->accepted, 3);
	ASSERT_EQ_INT(r->rejected, N_BAD);
	for (int i = 0; i < N; i++) {
		const Visrec__V1__ItemStatus *s = r->items[i];
		/* Nothing in the reply may be invalid UTF-8: strict clients
		 * would drop the whole reply. */
		ASSERT_MSG(utf8_ok(s->item_id, strlen(s->item_id)) && utf8_ok(s->message, strlen(s->message)),
			   "item %d's status is not UTF-8", i);
		if (i == 0 || i >= N - 2) {
			ASSERT_EQ_INT(s->code, GRPC_STATUS_OK);
			ASSERT(!memcmp(s->item_id, ids[i].data, ids[i].len) && strlen(s->item_id) == ids[i].len);
			continue;
		}
		const struct bad *b = &bads[i - 1];
		char pos[64];
		snprintf(pos, sizeof pos, "message %d of the stream: item_id", i + 1);
		ASSERT_MSG(s->code == GRPC_STATUS_INVALID_ARGUMENT, "%s: code %d", b->what, s->code);
		ASSERT_MSG(!strncmp(s->message, pos, strlen(pos)), "%s: \"%s\"", b->what, s->message);
		ASSERT_MSG(strstr(s->message, b->reason), "%s: \"%s\"", b->what, s->message);
		/* A refused id is not echoed. */
		ASSERT_STR_EQ(s->item_id, "");
	}
	protobuf_c_message_free_unpacked(&r->base, NULL);

	/* i000005 kept its image: "i000005\0evil" replaced nothing. */
	Visrec__V1__Vector *after[4];
	ProtobufCBinaryData want[3] = { first, str(MB_ITEM), str("g2") };
	ASSERT_OK(get_vectors(ch, want, 3, after, 4, &found, keep, &nkeep, &st));
	ASSERT_EQ_INT(found, 3);
	ASSERT(!memcmp(after[0]->values, orig_vec, dims * sizeof(float)));
	ASSERT_STR_EQ(after[1]->item_id, MB_ITEM);
	ASSERT(memcmp(after[2]->values, orig_vec, dims * sizeof(float))); /* the other image differs */
	free_all(keep, nkeep);
	Visrec__V1__FeaturedInfoRequest iq = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	Visrec__V1__FeaturedInfoResponse *info = NULL;
	ASSERT_OK(unary(ch, FEATURED "Info", &iq.base, &visrec__v1__featured_info_response__descriptor,
			(ProtobufCMessage **)&info, &st));
	ASSERT_EQ_INT(info->items, 4);
	protobuf_c_message_free_unpacked(&info->base, NULL);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&f, 10000), 0);
	free(orig_vec);
	vr_jpeg_free(orig.jpeg);
	vr_jpeg_free(other.jpeg);
}

TEST(featured_embed)
{
	struct proc f;
	vr_status st;
	ASSERT_OK(start_featured(&f, "embed"));
	vr_channel *ch = channel(&f);
	struct image im = image(3);
	for (size_t b = 0; b < N_BAD; b++) {
		Visrec__Idwire__EmbedRequest req = VISREC__IDWIRE__EMBED_REQUEST__INIT;
		req.item_id = bin(bads[b].id, bads[b].len);
		req.image = bin((const char *)im.jpeg, im.len);
		int rc = unary(ch, FEATURED "Embed", &req.base, &visrec__v1__embed_response__descriptor,
			       NULL, &st);
		ASSERT_REFUSED(rc, st, "item_id", &bads[b]);
	}
	Visrec__Idwire__EmbedRequest req = VISREC__IDWIRE__EMBED_REQUEST__INIT;
	Visrec__V1__EmbedResponse *e = NULL;
	req.item_id = str(MB_ITEM);
	req.image = bin((const char *)im.jpeg, im.len);
	ASSERT_OK(unary(ch, FEATURED "Embed", &req.base, &visrec__v1__embed_response__descriptor,
			(ProtobufCMessage **)&e, &st));
	ASSERT_STR_EQ(e->vector->item_id, MB_ITEM);
	ASSERT(e->vector->n_values > 0);
	ASSERT_EQ_INT(e->seq, 1);
	protobuf_c_message_free_unpacked(&e->base, NULL);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&f, 10000), 0);
	vr_jpeg_free(im.jpeg);
}

TEST(featured_get_vectors)
{
	struct proc f;
	vr_status st;
	ASSERT_OK(start_featured(&f, "getv"));
	vr_channel *ch = channel(&f);
	struct image ims[2] = { image(4), image(5) };
	ProtobufCBinaryData ids[2] = { str("g1"), str(MB_ITEM) };
	Visrec__V1__PutItemsResponse *r = NULL;
	ASSERT_OK(put(ch, ids, ims, 2, &r, &st));
	ASSERT_EQ_INT(r->accepted, 2);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	Visrec__V1__Vector *v[4];
	ProtobufCMessage *keep[8];
	int found, nkeep;
	for (size_t b = 0; b < N_BAD; b++) {
		ProtobufCBinaryData ask[3] = { str("g1"), bin(bads[b].id, bads[b].len), str(MB_ITEM) };
		int rc = get_vectors(ch, ask, 3, v, 4, &found, keep, &nkeep, &st);
		free_all(keep, nkeep);
		ASSERT_EQ_INT(found, 0);
		ASSERT_REFUSED(rc, st, "item_ids[1]", &bads[b]);
	}
	ProtobufCBinaryData ask[2] = { str(MB_ITEM), str("g1") };
	ASSERT_OK(get_vectors(ch, ask, 2, v, 4, &found, keep, &nkeep, &st));
	ASSERT_EQ_INT(found, 2);
	ASSERT_STR_EQ(v[0]->item_id, MB_ITEM);
	ASSERT_STR_EQ(v[1]->item_id, "g1");
	free_all(keep, nkeep);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&f, 10000), 0);
	vr_jpeg_free(ims[0].jpeg);
	vr_jpeg_free(ims[1].jpeg);
}

/* Resharding's admin calls check their ids before anything else: on a
 * featured that is no shard, a good id gets past them to the refusal of
 * its state (FAILED_PRECONDITION). */
TEST(featured_reshard)
{
	struct proc f;
	vr_status st;
	ASSERT_OK(start_featured(&f, "reshard"));
	vr_channel *ch = channel(&f);
	for (size_t b = 0; b <= N_BAD; b++) {
		ProtobufCBinaryData id = b < N_BAD ? bin(bads[b].id, bads[b].len) : str(MB_ITEM);
		Visrec__Idwire__ReshardItem x = VISREC__IDWIRE__RESHARD_ITEM__INIT, y = x;
		Visrec__Idwire__ReshardItem *items[2] = { &x, &y };
		x.item_id = str("r1");
		x.image = y.image = str("\xff\xd8");
		y.item_id = id;
		Visrec__Idwire__ReshardImportRequest im = VISREC__IDWIRE__RESHARD_IMPORT_REQUEST__INIT;
		im.to_shards = "127.0.0.1:1,127.0.0.1:2";
		im.items = items;
		im.n_items = 2;
		int rc = unary(ch, FEATURED "ReshardImport", &im.base,
			       &visrec__v1__reshard_import_response__descriptor, NULL, &st);
		if (b < N_BAD)
			ASSERT_REFUSED(rc, st, "items[1].item_id", &bads[b]);
		else
			ASSERT_MSG(rc == VR_ERPC && st.code == GRPC_STATUS_FAILED_PRECONDITION,
				   "import of a good id: %s %s", vr_status_name(st.code), st.message);
		ProtobufCBinaryData ids[2] = { str("r1"), id };
		Visrec__Idwire__ReshardDeleteRequest del = VISREC__IDWIRE__RESHARD_DELETE_REQUEST__INIT;
		del.to_shards = im.to_shards;
		del.item_ids = ids;
		del.n_item_ids = 2;
		rc = unary(ch, FEATURED "ReshardDelete", &del.base,
			   &visrec__v1__reshard_delete_response__descriptor, NULL, &st);
		if (b < N_BAD)
			ASSERT_REFUSED(rc, st, "item_ids[1]", &bads[b]);
		else
			ASSERT_MSG(rc == VR_ERPC && st.code == GRPC_STATUS_FAILED_PRECONDITION,
				   "delete of a good id: %s %s", vr_status_name(st.code), st.message);
	}
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&f, 10000), 0);
}

#define TV_DIMS 4

/* Starts a TrainVisual session on a new call, then sends one step (embed
 * 0) or embed (embed 1) whose ids are pos (and neg) and takes the reply
 * and the status. Returns 0 when the reply came and the stream ended OK. */
static int tv_exchange(vr_channel *ch, int embed, const ProtobufCBinaryData *pos,
		       const ProtobufCBinaryData *neg, size_t n, vr_status *st)
{
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	Visrec__V1__TrainVisualStart s = VISREC__V1__TRAIN_VISUAL_START__INIT;
	Visrec__V1__TrainVisualRequest start = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	s.arch = "small";
	s.dims = TV_DIMS;
	s.input_size = 16;
	s.learning_rate = 1e-3f;
	s.session_id = "ids";
	start.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_START;
	start.start = &s;
	int rc = vr_ccall_start(&cc, ch, FEATURED "TrainVisual",
				&visrec__v1__train_visual_response__descriptor, 60000, NULL);
	if (rc)
		return rc;
	if (!(rc = vr_ccall_send(cc, &start.base)) && !(rc = vr_ccall_recv(cc, &m)))
		protobuf_c_message_free_unpacked(m, NULL);
	m = NULL;
	float theta[8 * TV_DIMS] = { 0.5f }, margin[8] = { 0 };
	Visrec__Idwire__TrainVisualStep step = VISREC__IDWIRE__TRAIN_VISUAL_STEP__INIT;
	Visrec__Idwire__TrainVisualEmbed emb = VISREC__IDWIRE__TRAIN_VISUAL_EMBED__INIT;
	Visrec__Idwire__TrainVisualRequest req = VISREC__IDWIRE__TRAIN_VISUAL_REQUEST__INIT;
	if (embed) {
		emb.session_id = "ids";
		emb.n_items = n;
		emb.items = (ProtobufCBinaryData *)pos;
		req.msg_case = VISREC__IDWIRE__TRAIN_VISUAL_REQUEST__MSG_EMBED;
		req.embed = &emb;
	} else {
		step.session_id = "ids";
		step.step = 1;
		step.n_pos_items = step.n_neg_items = step.n_margin = n;
		step.pos_items = (ProtobufCBinaryData *)pos;
		step.neg_items = (ProtobufCBinaryData *)neg;
		step.margin = margin;
		step.n_theta = n * TV_DIMS;
		step.theta = theta;
		req.msg_case = VISREC__IDWIRE__TRAIN_VISUAL_REQUEST__MSG_STEP;
		req.step = &step;
	}
	if (!rc)
		rc = vr_ccall_send(cc, &req.base);
	if (!rc && !(rc = vr_ccall_recv(cc, &m))) {
		const Visrec__V1__TrainVisualResponse *r = (const void *)m;
		int want = embed ? VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_EMBEDDED
				 : VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_STEP;
		if (r->msg_case != (Visrec__V1__TrainVisualResponse__MsgCase)want)
			rc = VR_EINVAL;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	if (!rc)
		rc = vr_ccall_close_send(cc);
	int frc = vr_ccall_finish(cc, st);
	return rc == VR_ERPC || rc == VR_EEOF ? frc : rc ? rc : frc;
}

TEST(featured_train_visual)
{
	struct proc f;
	vr_status st;
	ASSERT_OK(start_featured(&f, "tv"));
	vr_channel *ch = channel(&f);
	struct image ims[3] = { image(6), image(7), image(8) };
	ProtobufCBinaryData ids[3] = { str("it0"), str("it1"), str(MB_ITEM) };
	Visrec__V1__PutItemsResponse *r = NULL;
	ASSERT_OK(put(ch, ids, ims, 3, &r, &st));
	ASSERT_EQ_INT(r->accepted, 3);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	for (size_t b = 0; b < N_BAD; b++) {
		ProtobufCBinaryData pos[2] = { str("it0"), bin(bads[b].id, bads[b].len) };
		ProtobufCBinaryData neg[2] = { str("it1"), str("it1") };
		ASSERT_REFUSED(tv_exchange(ch, 0, pos, neg, 2, &st), st, "step.pos_items[1]", &bads[b]);
		ASSERT_REFUSED(tv_exchange(ch, 0, neg, pos + 1, 1, &st), st, "step.neg_items[0]", &bads[b]);
		ASSERT_REFUSED(tv_exchange(ch, 1, pos, NULL, 2, &st), st, "embed.items[1]", &bads[b]);
	}
	ProtobufCBinaryData pos[2] = { str(MB_ITEM), str("it0") }, neg[2] = { str("it1"), str(MB_ITEM) };
	ASSERT_OK(tv_exchange(ch, 0, pos, neg, 2, &st));
	ASSERT_OK(tv_exchange(ch, 1, pos, NULL, 2, &st));
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&f, 10000), 0);
	for (int i = 0; i < 3; i++)
		vr_jpeg_free(ims[i].jpeg);
}

/* ---- rankd ----------------------------------------------------------------- */

/* AddInteractions of n (user, item) pairs given as bytes. */
static int add(vr_channel *ch, const ProtobufCBinaryData *users, const ProtobufCBinaryData *items,
	       int n, Visrec__V1__AddInteractionsResponse **resp, vr_status *st)
{
	Visrec__Idwire__Interaction rows[64], *ptrs[64];
	Visrec__Idwire__AddInteractionsRequest req = VISREC__IDWIRE__ADD_INTERACTIONS_REQUEST__INIT;
	for (int i = 0; i < n && i < 64; i++) {
		visrec__idwire__interaction__init(&rows[i]);
		rows[i].user_id = users[i];
		rows[i].item_id = items[i];
		rows[i].timestamp = 1000 + i;
		ptrs[i] = &rows[i];
	}
	req.n_interactions = (size_t)n;
	req.interactions = ptrs;
	return unary(ch, RANK "AddInteractions", &req.base,
		     &visrec__v1__add_interactions_response__descriptor, (ProtobufCMessage **)resp, st);
}

static Visrec__V1__RankInfoResponse *rank_info(vr_channel *ch)
{
	Visrec__V1__RankInfoRequest q = VISREC__V1__RANK_INFO_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	vr_status st;
	unary(ch, RANK "Info", &q.base, &visrec__v1__rank_info_response__descriptor, &m, &st);
	return (Visrec__V1__RankInfoResponse *)m;
}

TEST(rankd_add_interactions)
{
	struct proc k;
	vr_status st;
	Visrec__V1__AddInteractionsResponse *r = NULL;
	ASSERT_OK(start_rankd(&k, "add"));
	vr_channel *ch = channel(&k);
	ProtobufCBinaryData u[3] = { str("u1"), str("u2"), str(MB_USER) };
	ProtobufCBinaryData i[3] = { str("i1"), str("i2"), str(MB_ITEM) };
	ASSERT_OK(add(ch, u, i, 2, &r, &st));
	ASSERT_EQ_INT(r->added, 2);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	for (size_t b = 0; b < N_BAD; b++) {
		ProtobufCBinaryData bu[3] = { str("u1"), str("u3"), bin(bads[b].id, bads[b].len) };
		ProtobufCBinaryData bi[3] = { str("i3"), bin(bads[b].id, bads[b].len), str("i1") };
		ASSERT_REFUSED(add(ch, bu, i, 3, &r, &st), st, "interactions[2].user_id", &bads[b]);
		ASSERT_REFUSED(add(ch, u, bi, 3, &r, &st), st, "interactions[1].item_id", &bads[b]);
	}
	/* "NEWUSER\0tail" must not record NEWUSER. */
	ProtobufCBinaryData nu = bin("NEWUSER\0tail", 12), ni = str("i1");
	ASSERT_REFUSED(add(ch, &nu, &ni, 1, &r, &st), st, "interactions[0].user_id", &bads[2]);
	Visrec__V1__RankInfoResponse *info = rank_info(ch);
	ASSERT(info);
	ASSERT_EQ_INT(info->users, 2);
	ASSERT_EQ_INT(info->items, 2);
	ASSERT_EQ_INT(info->interactions, 2);
	protobuf_c_message_free_unpacked(&info->base, NULL);
	/* Multi-byte ids are stored as they came. */
	ASSERT_OK(add(ch, u + 2, i + 2, 1, &r, &st));
	ASSERT_EQ_INT(r->added, 1);
	ASSERT_EQ_INT(r->users, 3);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	/* A NUL is refused in any string, not only in ids. */
	Visrec__Idwire__EvaluateRequest ev = VISREC__IDWIRE__EVALUATE_REQUEST__INIT;
	ev.protocol = bin("standard\0x", 10);
	int rc = unary(ch, RANK "Evaluate", &ev.base, &visrec__v1__evaluate_response__descriptor, NULL, &st);
	ASSERT_EQ_INT(rc, VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_STR_EQ(st.message, "protocol contains a NUL byte at offset 8");
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&k, 10000), 0);
}

enum { USERS = 12, ITEMS = 24 };

static void user_name(char *buf, int u)
{
	if (u == USERS - 1)
		snprintf(buf, 32, "%s", MB_USER);
	else
		snprintf(buf, 32, "u%02d", u);
}

static void item_name(char *buf, int i)
{
	if (i == ITEMS - 1)
		snprintf(buf, 32, "%s", MB_ITEM);
	else
		snprintf(buf, 32, "i%02d", i);
}

/* A rankd with a BPR model trained on a few users (the last has the
 * multi-byte id) and items (the last too). */
static int trained_rankd(struct proc *k, const char *tag, vr_channel **ch)
{
	static char names[2][64][32];
	ProtobufCBinaryData u[64], i[64];
	vr_status st = { 0 };
	Visrec__V1__AddInteractionsResponse *r = NULL;
	if (start_rankd(k, tag) || !(*ch = channel(k)))
		return -1;
	int n = 0;
	for (int x = 0; x < USERS; x++)
		for (int y = 0; y < 5; y++, n++) {
			user_name(names[0][n], x);
			item_name(names[1][n], (x * 7 + y * 5) % ITEMS);
			u[n] = str(names[0][n]);
			i[n] = str(names[1][n]);
		}
	if (add(*ch, u, i, n, &r, &st))
		return -1;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	Visrec__V1__TrainRequest t = VISREC__V1__TRAIN_REQUEST__INIT;
	t.model = VISREC__V1__MODEL_KIND__BPR;
	t.epochs = 2;
	t.dims = 4;
	t.triples_per_epoch = 500;
	t.threads = 1;
	t.seed = 3;
	ProtobufCMessage *out[64];
	int got = 0;
	int rc = server_stream(*ch, RANK "Train", &t.base, &visrec__v1__train_progress__descriptor, out,
			       64, &got, &st);
	int done = got && ((Visrec__V1__TrainProgress *)out[got - 1])->done;
	free_all(out, got);
	if (rc || !done)
		fprintf(stderr, "  Train: rc %d, %s \"%s\"\n", rc, vr_status_name(st.code), st.message);
	return rc || !done ? -1 : 0;
}

static int recommend(vr_channel *ch, const Visrec__Idwire__RecommendRequest *req,
		     Visrec__V1__RecommendResponse **resp, vr_status *st)
{
	return unary(ch, RANK "Recommend", &req->base, &visrec__v1__recommend_response__descriptor,
		     (ProtobufCMessage **)resp, st);
}

TEST(rankd_recommend)
{
	struct proc k;
	vr_channel *ch = NULL;
	vr_status st;
	Visrec__V1__RecommendResponse *r = NULL;
	ASSERT_OK(trained_rankd(&k, "rec", &ch));
	for (size_t b = 0; b < N_BAD; b++) {
		ProtobufCBinaryData bad = bin(bads[b].id, bads[b].len);
		ProtobufCBinaryData cand[2] = { str("i01"), bad };
		Visrec__Idwire__RecommendRequest q = VISREC__IDWIRE__RECOMMEND_REQUEST__INIT;
		q.k = 3;
		q.user_id = bad;
		ASSERT_REFUSED(recommend(ch, &q, &r, &st), st, "user_id", &bads[b]);
		q.user_id = str("u01");
		q.n_candidates = 2;
		q.candidates = cand;
		ASSERT_REFUSED(recommend(ch, &q, &r, &st), st, "candidates[1]", &bads[b]);
		q.n_candidates = 0;
		q.n_context_items = 1;
		q.context_items = &bad;
		ASSERT_REFUSED(recommend(ch, &q, &r, &st), st, "context_items[0]", &bads[b]);
	}
	/* The multi-byte user is ranked by the model; the multi-byte item is a
	 * candidate like any other, and comes back as it went in. */
	ProtobufCBinaryData cand[2] = { str(MB_ITEM), str("i03") };
	Visrec__Idwire__RecommendRequest q = VISREC__IDWIRE__RECOMMEND_REQUEST__INIT;
	q.user_id = str(MB_USER);
	q.k = 5;
	ASSERT_OK(recommend(ch, &q, &r, &st));
	ASSERT_EQ_INT(r->n_items, 5);
	ASSERT_STR_EQ(r->fallback, "");
	protobuf_c_message_free_unpacked(&r->base, NULL);
	q.user_id = str("u02");
	q.include_seen = 1;
	q.n_candidates = 2;
	q.candidates = cand;
	ASSERT_OK(recommend(ch, &q, &r, &st));
	ASSERT_EQ_INT(r->n_items, 2);
	ASSERT(!strcmp(r->items[0]->item_id, MB_ITEM) || !strcmp(r->items[1]->item_id, MB_ITEM));
	protobuf_c_message_free_unpacked(&r->base, NULL);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&k, 10000), 0);
}

/* Two requests of k items, for users a and b. */
static void two_requests(Visrec__Idwire__RecommendRequest *q, int k, ProtobufCBinaryData a,
			 ProtobufCBinaryData b)
{
	for (int x = 0; x < 2; x++) {
		visrec__idwire__recommend_request__init(&q[x]);
		q[x].k = k;
		q[x].user_id = x ? b : a;
	}
}

/* RecommendBatch of q[0] and q[1]; *resp (may be NULL) is the caller's. */
static int recommend_two(vr_channel *ch, Visrec__Idwire__RecommendRequest *q,
			 Visrec__V1__RecommendBatchResponse **resp, vr_status *st)
{
	Visrec__Idwire__RecommendRequest *qp[2] = { &q[0], &q[1] };
	Visrec__Idwire__RecommendBatchRequest batch = VISREC__IDWIRE__RECOMMEND_BATCH_REQUEST__INIT;
	batch.n_requests = 2;
	batch.requests = qp;
	return unary(ch, RANK "RecommendBatch", &batch.base, &visrec__v1__recommend_batch_response__descriptor,
		     (ProtobufCMessage **)resp, st);
}

TEST(rankd_recommend_batch)
{
	struct proc k;
	vr_channel *ch = NULL;
	vr_status st;
	Visrec__Idwire__RecommendRequest q[2];
	Visrec__V1__RecommendBatchResponse *r = NULL;
	ASSERT_OK(trained_rankd(&k, "batch", &ch));
	for (size_t b = 0; b < N_BAD; b++) {
		ProtobufCBinaryData bad = bin(bads[b].id, bads[b].len);
		ProtobufCBinaryData cand[3] = { str("i01"), str("i02"), bad };
		two_requests(q, 2, str("u01"), bad);
		ASSERT_REFUSED(recommend_two(ch, q, NULL, &st), st, "requests[1].user_id", &bads[b]);
		two_requests(q, 2, str("u01"), str("u02"));
		q[0].n_candidates = 3;
		q[0].candidates = cand;
		ASSERT_REFUSED(recommend_two(ch, q, NULL, &st), st, "requests[0].candidates[2]", &bads[b]);
	}
	two_requests(q, 3, str(MB_USER), str("u04"));
	ASSERT_OK(recommend_two(ch, q, &r, &st));
	ASSERT_EQ_INT(r->n_responses, 2);
	ASSERT_EQ_INT(r->responses[0]->n_items, 3);
	ASSERT_EQ_INT(r->responses[1]->n_items, 3);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&k, 10000), 0);
}

TEST(rankd_score)
{
	struct proc k;
	vr_channel *ch = NULL;
	vr_status st;
	ASSERT_OK(trained_rankd(&k, "score", &ch));
	for (size_t b = 0; b < N_BAD; b++) {
		ProtobufCBinaryData bad = bin(bads[b].id, bads[b].len);
		ProtobufCBinaryData items[2] = { str("i01"), bad };
		Visrec__Idwire__ScoreRequest q = VISREC__IDWIRE__SCORE_REQUEST__INIT;
		q.user_id = bad;
		q.n_item_ids = 1;
		q.item_ids = items;
		int rc = unary(ch, RANK "Score", &q.base, &visrec__v1__score_response__descriptor, NULL, &st);
		ASSERT_REFUSED(rc, st, "user_id", &bads[b]);
		q.user_id = str("u01");
		q.n_item_ids = 2;
		rc = unary(ch, RANK "Score", &q.base, &visrec__v1__score_response__descriptor, NULL, &st);
		ASSERT_REFUSED(rc, st, "item_ids[1]", &bads[b]);
	}
	ProtobufCBinaryData items[2] = { str("i01"), str(MB_ITEM) };
	Visrec__Idwire__ScoreRequest q = VISREC__IDWIRE__SCORE_REQUEST__INIT;
	Visrec__V1__ScoreResponse *r = NULL;
	q.user_id = str(MB_USER);
	q.n_item_ids = 2;
	q.item_ids = items;
	ASSERT_OK(unary(ch, RANK "Score", &q.base, &visrec__v1__score_response__descriptor,
			(ProtobufCMessage **)&r, &st));
	ASSERT_EQ_INT(r->n_items, 2);
	ASSERT_STR_EQ(r->items[0]->item_id, "i01");
	ASSERT_STR_EQ(r->items[1]->item_id, MB_ITEM);
	ASSERT(r->items[0]->score != r->items[1]->score);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&k, 10000), 0);
}

/* ---- the CLI ----------------------------------------------------------------- */

/* Runs the visrec CLI with args; its exit status, stdout+stderr in out. */
static int visrec(char *const *args, char *out, size_t cap)
{
	char log[128];
	snprintf(log, sizeof log, "%s/visrec.out", tmpdir);
	unlink(log);
	char *argv[24] = { VISREC_BIN };
	int n = 1;
	for (; args[n - 1] && n < 23; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	struct proc p;
	if (proc_spawn(&p, log, argv))
		return -1;
	char buf[4096];
	ssize_t r;
	int fd = open(log, O_WRONLY | O_APPEND | O_CREAT, 0644);
	while ((r = read(p.out, buf, sizeof buf)) > 0)
		if (fd >= 0 && write(fd, buf, (size_t)r) != r)
			break;
	if (fd >= 0)
		close(fd);
	int status = -1;
	waitpid(p.pid, &status, 0);
	close(p.out);
	size_t len = 0;
	char *text = vr_test_read_file(log, &len);
	snprintf(out, cap, "%s", text ? text : "");
	free(text);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	int ok = fwrite(data, 1, len, f) == len;
	return fclose(f) == 0 && ok ? 0 : -1;
}

TEST(cli_import_and_ingest)
{
	struct proc f, k;
	char out[8192], csv[128], dir[128], path[256];
	ASSERT_OK(start_featured(&f, "cli-f"));
	ASSERT_OK(start_rankd(&k, "cli-r"));
	/* import: the whole file is checked first, each bad row named by its
	 * line and reason, and nothing is sent. */
	static const char rows[] = "user,item,timestamp\n"
				   "u1,i1,100\n"
				   "u2,caf\xc3,101\n"
				   "u3\x7f,i2,102\n"
				   "NEWUSER\0tail,i3,103\n"
				   "u4,i4,104\n";
	snprintf(csv, sizeof csv, "%s/bad.csv", tmpdir);
	ASSERT_OK(write_file(csv, rows, sizeof rows - 1));
	char *imp[] = { "--rankd", k.addr, "import", csv, NULL };
	ASSERT_EQ_INT(visrec(imp, out, sizeof out), 1);
	ASSERT_CONTAINS(out, "bad.csv:3: the item id \"caf\\xc3\" is not valid UTF-8 at byte 3");
	ASSERT_CONTAINS(out, "bad.csv:4: the user id \"u3\\x7f\" contains a control character (U+007F)");
	ASSERT_CONTAINS(out, "bad.csv:5: a NUL byte at offset 7 of the line");
	ASSERT_CONTAINS(out, "3 malformed row(s)");
	vr_channel *ch = channel(&k);
	Visrec__V1__RankInfoResponse *info = rank_info(ch);
	ASSERT(info);
	ASSERT_EQ_INT(info->interactions, 0);
	protobuf_c_message_free_unpacked(&info->base, NULL);
	/* A file of valid ids, multi-byte ones included, goes in. */
	char good[256];
	snprintf(good, sizeof good, "u1,i1,100\n%s,%s,101\n", MB_USER, MB_ITEM);
	ASSERT_OK(write_file(csv, good, strlen(good)));
	ASSERT_EQ_INT(visrec(imp, out, sizeof out), 0);
	info = rank_info(ch);
	ASSERT(info);
	ASSERT_EQ_INT(info->interactions, 2);
	protobuf_c_message_free_unpacked(&info->base, NULL);
	vr_channel_destroy(ch);

	/* ingest: a file name that is no id is listed and not sent; the
	 * others are stored. */
	snprintf(dir, sizeof dir, "%s/images", tmpdir);
	ASSERT_OK(mkdir(dir, 0755));
	const char *names[] = { "good", "ctl\x01", "caf\xc3", MB_ITEM };
	struct image im = image(9);
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof path, "%s/%s.jpg", dir, names[i]);
		ASSERT_OK(write_file(path, im.jpeg, im.len));
	}
	vr_jpeg_free(im.jpeg);
	char *ing[] = { "--featured", f.addr, "ingest", dir, NULL };
	ASSERT_EQ_INT(visrec(ing, out, sizeof out), 3);
	ASSERT_CONTAINS(out, "2 stored, 2 rejected");
	ASSERT_CONTAINS(out, "ctl\\x01: not sent: the item id (the file name without .jpg) \"ctl\\x01\" "
			     "contains a control character (U+0001) at byte 3");
	ASSERT_CONTAINS(out, "caf\\xc3: not sent: the item id (the file name without .jpg) \"caf\\xc3\" "
			     "is not valid UTF-8 at byte 3");
	ch = channel(&f);
	Visrec__V1__Vector *v[2];
	ProtobufCMessage *keep[8];
	int found, nkeep;
	vr_status st;
	ProtobufCBinaryData ask[2] = { str("good"), str(MB_ITEM) };
	ASSERT_OK(get_vectors(ch, ask, 2, v, 2, &found, keep, &nkeep, &st));
	ASSERT_EQ_INT(found, 2);
	free_all(keep, nkeep);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(proc_stop(&f, 10000), 0);
	ASSERT_EQ_INT(proc_stop(&k, 10000), 0);
}

static const struct vr_test tests[] = {
	T(featured_put_items), T(featured_embed), T(featured_get_vectors), T(featured_train_visual),
	T(featured_reshard),
	T(rankd_add_interactions), T(rankd_recommend), T(rankd_recommend_batch), T(rankd_score),
	T(cli_import_and_ingest), { 0 },
};

int main(int argc, char **argv)
{
	memset(long_id, 'x', sizeof long_id);
	return vr_test_main_in_tmpdir(tests, argc, argv, tmpdir, sizeof tmpdir, "/tmp/vr_id_rpcs.XXXXXX",
				      vr_rpc_init, vr_rpc_shutdown);
}
