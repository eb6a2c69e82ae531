/* fstore: featured's records in LMDB (layout and contract in fstore.h).
 * Model rows are JSON (cJSON) so an operator can read them with mdb_dump
 * and new fields need no format version; the per-item records are small
 * fixed structs because there are millions of them.
 *
 * Why one file at ~900 lines: it is featured's whole LMDB record layout;
 * every read and write of those records goes through it, with its decoders
 * beside them. */
#include "fstore.h"

#include "deadline.h"
#include "err.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fd_fstore {
	vr_store *st;
	vr_dbi images, items, vectors, changes, models, meta;
	pthread_mutex_t mu; /* guards last_seq */
	pthread_cond_t cv;  /* broadcast after every commit that added changes */
	uint64_t last_seq;
	atomic_uint_least64_t models_gen; /* model rows added since open */
};

struct item_row {
	uint64_t num, seq;
	uint32_t version, zero;
	int64_t added;
};
_Static_assert(sizeof(struct item_row) == 32, "items record is 32 bytes");

struct vec_head {
	uint32_t version, dims, dtype, id_len;
};
enum { DTYPE_F32 = 1 };

struct change_head {
	uint32_t kind, version;
};

static const char KEY_ACTIVE[] = "active_version";
static const char KEY_NEXT_NUM[] = "next_num";
static const char KEY_LIVE[] = "live_versions";

/* ---- record helpers ------------------------------------------------------ */

static void vec_key(uint8_t key[12], uint32_t version, uint64_t num)
{
	for (int i = 0; i < 4; i++)
		key[i] = (uint8_t)(version >> (24 - 8 * i));
	for (int i = 0; i < 8; i++)
		key[4 + i] = (uint8_t)(num >> (56 - 8 * i));
}

static uint64_t key_num(const uint8_t *key)
{
	uint64_t num = 0;
	for (int i = 0; i < 8; i++)
		num = num << 8 | key[4 + i];
	return num;
}

static uint32_t key_version(const uint8_t *key)
{
	return (uint32_t)key[0] << 24 | (uint32_t)key[1] << 16 | (uint32_t)key[2] << 8 | key[3];
}

int fd_vec_decode(const void *k, size_t kl, const void *v, size_t vl, fd_vec *out)
{
	struct vec_head h;
	if (kl != 12 || vl < sizeof h)
		return VR_ECORRUPT;
	memcpy(&h, v, sizeof h);
	if (h.dtype != DTYPE_F32 || vl != sizeof h + (size_t)h.dims * 4 + h.id_len ||
	    h.version != key_version(k))
		return VR_ECORRUPT;
	out->version = h.version;
	out->dims = h.dims;
	out->num = key_num(k);
	out->values = (const uint8_t *)v + sizeof h;
	out->item_id = (const char *)v + sizeof h + (size_t)h.dims * 4;
	out->id_len = h.id_len;
	return 0;
}

static int put_vec(fd_fstore *fs, vr_txn *txn, uint32_t version, uint64_t num, uint32_t dims,
		   const char *id, size_t id_len, const float *values)
{
	uint8_t key[12];
	void *dst;
	struct vec_head h = { version, dims, DTYPE_F32, (uint32_t)id_len };
	size_t bytes = (size_t)dims * 4;
	vec_key(key, version, num);
	int rc = vr_put_reserve(txn, fs->vectors, key, sizeof key, sizeof h + bytes + id_len, &dst);
	if (rc)
		return rc;
	memcpy(dst, &h, sizeof h);
	memcpy((uint8_t *)dst + sizeof h, values, bytes);
	memcpy((uint8_t *)dst + sizeof h + bytes, id, id_len);
	return 0;
}

static int get_row(fd_fstore *fs, vr_txn *txn, const char *id, size_t id_len, struct item_row *row)
{
	const void *v;
	size_t vl;
	int rc = vr_get(txn, fs->items, id, id_len, &v, &vl);
	if (rc)
		return rc;
	if (vl != sizeof *row)
		return VR_ECORRUPT;
	memcpy(row, v, sizeof *row);
	return 0;
}

static int put_change(fd_fstore *fs, vr_txn *txn, uint64_t seq, int kind, uint32_t version,
		      const char *id, size_t id_len)
{
	struct change_head h = { (uint32_t)kind, version };
	void *dst;
	int rc = vr_put_reserve(txn, fs->changes, &seq, 8, sizeof h + id_len, &dst);
	if (rc)
		return rc;
	memcpy(dst, &h, sizeof h);
	if (id_len)
		memcpy((uint8_t *)dst + sizeof h, id, id_len);
	return 0;
}

static int last_seq_txn(fd_fstore *fs, vr_txn *txn, uint64_t *seq)
{
	int rc = vr_last_u64(txn, fs->changes, seq);
	if (rc == VR_ENOTFOUND) {
		*seq = 0;
		rc = 0;
	}
	return rc;
}

static int meta_get(fd_fstore *fs, vr_txn *txn, const char *key, void *val, size_t len)
{
	const void *v;
	size_t vl;
	int rc = vr_get(txn, fs->meta, key, strlen(key), &v, &vl);
	if (rc)
		return rc;
	if (vl != len)
		return VR_ECORRUPT;
	memcpy(val, v, len);
	return 0;
}

static int active_txn(fd_fstore *fs, vr_txn *txn, uint32_t *version)
{
	return meta_get(fs, txn, KEY_ACTIVE, version, sizeof *version);
}

static void published(fd_fstore *fs, uint64_t seq)
{
	pthread_mutex_lock(&fs->mu);
	if (seq > fs->last_seq)
		fs->last_seq = seq;
	pthread_cond_broadcast(&fs->cv);
	pthread_mutex_unlock(&fs->mu);
}

/* ---- model rows (JSON) --------------------------------------------------- */

char *fd_model_encode(const fd_model_info *m)
{
	char *text = NULL;
	cJSON *o = cJSON_CreateObject(), *mean, *std;
	if (!o)
		return NULL;
	int ok = cJSON_AddNumberToObject(o, "version", m->version) &&
		 cJSON_AddStringToObject(o, "arch", m->arch) &&
		 cJSON_AddStringToObject(o, "layer", m->layer) &&
		 cJSON_AddNumberToObject(o, "dims", m->dims) &&
		 cJSON_AddNumberToObject(o, "input_size", m->input_size) &&
		 cJSON_AddNumberToObject(o, "num_outputs", m->num_outputs) &&
		 cJSON_AddStringToObject(o, "weights", m->weights) &&
		 cJSON_AddNumberToObject(o, "created_unix", (double)m->created_unix) &&
		 cJSON_AddStringToObject(o, "purpose", m->purpose) &&
		 (!m->precision[0] || cJSON_AddStringToObject(o, "precision", m->precision)) &&
		 (mean = cJSON_AddArrayToObject(o, "mean")) && (std = cJSON_AddArrayToObject(o, "std"));
	for (int c = 0; ok && c < 3; c++) {
		cJSON *a = cJSON_CreateNumber(m->mean[c]), *b = cJSON_CreateNumber(m->std[c]);
		ok = a && b;
		if (a)
			cJSON_AddItemToArray(mean, a);
		if (b)
			cJSON_AddItemToArray(std, b);
	}
	if (ok)
		text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

static int json_str(const cJSON *o, const char *name, char *dst, size_t cap)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap)
		return VR_ECORRUPT;
	memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
	return 0;
}

/* A JSON number that is a whole number in [lo, hi), as an int64 (every
 * bound used here is exact in a double; converting one out of range would
 * be undefined). */
static int json_int(const cJSON *o, const char *name, double lo, double hi, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble < hi))
		return VR_ECORRUPT;
	*out = (int64_t)v->valuedouble;
	return (double)*out == v->valuedouble ? 0 : VR_ECORRUPT;
}

/* A double that converts to a finite float (NaN does not). */
static int in_float(double d)
{
	return d >= -FLT_MAX && d <= FLT_MAX;
}

#define U32_END 4294967296.0          /* 2^32 */
#define I64_END 9223372036854775808.0 /* 2^63 */

int fd_model_decode(const void *v, size_t vl, fd_model_info *m)
{
	int rc = VR_ECORRUPT;
	int64_t version, dims, size, outs;
	memset(m, 0, sizeof *m);
	cJSON *o = cJSON_ParseWithLength(v, vl);
	if (!o)
		return VR_ECORRUPT;
	const cJSON *mean = cJSON_GetObjectItemCaseSensitive(o, "mean");
	const cJSON *std = cJSON_GetObjectItemCaseSensitive(o, "std");
	if (json_int(o, "version", 0, U32_END, &version) || json_int(o, "dims", 0, U32_END, &dims) ||
	    json_int(o, "input_size", 0, U32_END, &size) ||
	    json_int(o, "num_outputs", 0, U32_END, &outs) ||
	    json_int(o, "created_unix", -I64_END, I64_END, &m->created_unix) ||
	    json_str(o, "arch", m->arch, sizeof m->arch) ||
	    json_str(o, "layer", m->layer, sizeof m->layer) ||
	    json_str(o, "weights", m->weights, sizeof m->weights) ||
	    json_str(o, "purpose", m->purpose, sizeof m->purpose) ||
	    cJSON_GetArraySize(mean) != 3 || cJSON_GetArraySize(std) != 3 ||
	    (cJSON_GetObjectItemCaseSensitive(o, "precision") &&
	     json_str(o, "precision", m->precision, sizeof m->precision)))
		goto leave;
	m->version = (uint32_t)version;
	m->dims = (uint32_t)dims;
	m->input_size = (uint32_t)size;
	m->num_outputs = (uint32_t)outs;
	for (int c = 0; c < 3; c++) {
		const cJSON *a = cJSON_GetArrayItem(mean, c), *b = cJSON_GetArrayItem(std, c);
		if (!cJSON_IsNumber(a) || !cJSON_IsNumber(b) || !in_float(a->valuedouble) ||
		    !in_float(b->valuedouble))
			goto leave;
		m->mean[c] = (float)a->valuedouble;
		m->std[c] = (float)b->valuedouble;
		if (m->std[c] == 0.0f) /* fd_normalize divides by it */
			goto leave;
	}
	rc = 0;
leave:
	cJSON_Delete(o);
	return rc;
}

static int model_txn(fd_fstore *fs, vr_txn *txn, uint32_t version, fd_model_info *out)
{
	uint64_t key = version;
	const void *v;
	size_t vl;
	int rc = vr_get(txn, fs->models, &key, 8, &v, &vl);
	if (!rc && out)
		rc = fd_model_decode(v, vl, out);
	return rc;
}

/* ---- open ---------------------------------------------------------------- */

int fd_fstore_open(fd_fstore **out, vr_store *st)
{
	int rc;
	vr_txn *txn = NULL;
	fd_fstore *fs = calloc(1, sizeof *fs);
	*out = NULL;
	if (!fs)
		return VR_ENOMEM;
	fs->st = st;
	atomic_init(&fs->models_gen, 0);
	pthread_mutex_init(&fs->mu, NULL);
	vr_cond_init(&fs->cv);
	if ((rc = vr_store_dbi(st, "images", 0, &fs->images)) ||
	    (rc = vr_store_dbi(st, "items", 0, &fs->items)) ||
	    (rc = vr_store_dbi(st, "vectors", 0, &fs->vectors)) ||
	    (rc = vr_store_dbi(st, "changes", VR_DB_INTEGERKEY, &fs->changes)) ||
	    (rc = vr_store_dbi(st, "models", VR_DB_INTEGERKEY, &fs->models)) ||
	    (rc = vr_store_dbi(st, "meta", 0, &fs->meta)) ||
	    (rc = vr_store_read_begin(st, &txn)) || (rc = last_seq_txn(fs, txn, &fs->last_seq)))
		goto fail;
	vr_store_read_end(txn);
	*out = fs;
	return 0;
fail:
	vr_store_read_end(txn);
	fd_fstore_close(fs);
	return rc;
}

void fd_fstore_close(fd_fstore *fs)
{
	if (!fs)
		return;
	pthread_mutex_destroy(&fs->mu);
	pthread_cond_destroy(&fs->cv);
	free(fs);
}

vr_store *fd_fstore_store(fd_fstore *fs)
{
	return fs->st;
}

/* ---- put items ------------------------------------------------------------ */

struct put_ctx {
	fd_fstore *fs;
	uint32_t version, dims;
	fd_put *puts;
	size_t n;
	const fd_more_vecs *more;
	size_t nmore;
	int64_t now;
	uint64_t last_seq;
};

/* Deletes num's vectors of every version but keep. */
static int drop_other_vectors(fd_fstore *fs, vr_txn *txn, uint64_t num, uint32_t keep)
{
	vr_cursor *c = NULL;
	const void *k;
	int rc = vr_cursor_open(txn, fs->models, &c);
	uint32_t versions[64];
	size_t n = 0;
	for (rc = rc ? rc : vr_cursor_seek(c, NULL, 0, &k, NULL, NULL, NULL); !rc;
	     rc = vr_cursor_next(c, &k, NULL, NULL, NULL)) {
		uint64_t v;
		memcpy(&v, k, 8);
		if (v != keep && n < sizeof versions / sizeof versions[0])
			versions[n++] = (uint32_t)v;
	}
	vr_cursor_close(c);
	if (rc != VR_ENOTFOUND)
		return rc;
	for (size_t i = 0; i < n; i++) {
		uint8_t key[12];
		vec_key(key, versions[i], num);
		rc = vr_del(txn, fs->vectors, key, sizeof key);
		if (rc && rc != VR_ENOTFOUND)
			return rc;
	}
	return 0;
}

/* The feed's last seq and the next item num, for a transaction that
 * stores items. */
static int item_counters(fd_fstore *fs, vr_txn *txn, uint64_t *seq, uint64_t *next_num)
{
	int rc = last_seq_txn(fs, txn, seq);
	if (rc)
		return rc;
	rc = meta_get(fs, txn, KEY_NEXT_NUM, next_num, sizeof *next_num);
	if (rc == VR_ENOTFOUND) {
		*next_num = 1;
		rc = 0;
	}
	return rc;
}

/* The row of an item about to be stored anew: a fresh one with the next
 * num (FD_ADDED), or its own with every vector but version keep's
 * deleted, since they describe what it was (FD_REPLACED). */
static int item_slot(fd_fstore *fs, vr_txn *txn, const char *id, size_t id_len, uint32_t keep,
		     uint64_t *next_num, struct item_row *row, int *kind)
{
	int rc = get_row(fs, txn, id, id_len, row);
	if (rc == VR_ENOTFOUND) {
		*row = (struct item_row){ .num = (*next_num)++ };
		*kind = FD_ADDED;
		return 0;
	}
	if (rc)
		return rc;
	*kind = FD_REPLACED;
	return drop_other_vectors(fs, txn, row->num, keep);
}

/* An item's image bytes under its id (written in place, no copy). */
static int put_image(fd_fstore *fs, vr_txn *txn, const char *id, size_t id_len, const void *image,
		     size_t len)
{
	void *dst;
	int rc = vr_put_reserve(txn, fs->images, id, id_len, len, &dst);
	if (!rc)
		memcpy(dst, image, len);
	return rc;
}

static int put_items_txn(vr_txn *txn, void *arg)
{
	struct put_ctx *c = arg;
	fd_fstore *fs = c->fs;
	uint64_t seq, next_num;
	int rc = item_counters(fs, txn, &seq, &next_num);
	if (rc)
		return rc;
	for (size_t i = 0; i < c->n; i++) {
		fd_put *p = &c->puts[i];
		size_t id_len = strlen(p->item_id);
		struct item_row row;
		if ((rc = item_slot(fs, txn, p->item_id, id_len, c->version, &next_num, &row, &p->kind)))
			return rc;
		if (p->kind == FD_ADDED)
			row.added = c->now;
		row.seq = ++seq;
		row.version = c->version;
		p->seq = row.seq;
		if ((rc = put_image(fs, txn, p->item_id, id_len, p->image, p->image_len)) ||
		    (rc = put_vec(fs, txn, c->version, row.num, c->dims, p->item_id, id_len, p->vector)) ||
		    (rc = put_change(fs, txn, row.seq, p->kind, c->version, p->item_id, id_len)))
			return rc;
		/* A live version's vector, and its change: the item is new to
		 * whoever follows that version. row.seq ends at the last one,
		 * so a re-embedding that read the item before sees it moved. */
		for (size_t m = 0; m < c->nmore; m++) {
			const fd_more_vecs *mv = &c->more[m];
			if ((rc = put_vec(fs, txn, mv->version, row.num, mv->dims, p->item_id, id_len,
					  mv->vectors + i * mv->dims)) ||
			    (rc = put_change(fs, txn, ++seq, FD_REEMBEDDED, mv->version, p->item_id,
					     id_len)))
				return rc;
			row.seq = seq;
		}
		if ((rc = vr_put(txn, fs->items, p->item_id, id_len, &row, sizeof row)))
			return rc;
	}
	c->last_seq = seq;
	return vr_put(txn, fs->meta, KEY_NEXT_NUM, strlen(KEY_NEXT_NUM), &next_num, sizeof next_num);
}

int fd_fstore_put_items(fd_fstore *fs, uint32_t version, uint32_t dims, fd_put *puts, size_t n)
{
	return fd_fstore_put_items_more(fs, version, dims, puts, n, NULL, 0);
}

int fd_fstore_put_items_more(fd_fstore *fs, uint32_t version, uint32_t dims, fd_put *puts,
			     size_t n, const fd_more_vecs *more, size_t nmore)
{
	struct put_ctx c = { fs, version, dims, puts, n, more, nmore, (int64_t)time(NULL), 0 };
	if (!n)
		return 0;
	int rc = vr_store_write(fs->st, put_items_txn, &c);
	if (!rc)
		published(fs, c.last_seq);
	return rc;
}

/* ---- moved items (resharding) -------------------------------------------- */

struct import_ctx {
	fd_fstore *fs;
	fd_import *items;
	size_t n;
	uint64_t last_seq;
};

static int import_txn(vr_txn *txn, void *arg)
{
	struct import_ctx *c = arg;
	fd_fstore *fs = c->fs;
	uint64_t seq, next_num;
	int rc = item_counters(fs, txn, &seq, &next_num);
	if (rc)
		return rc;
	for (size_t i = 0; i < c->n; i++) {
		fd_import *m = &c->items[i];
		size_t id_len = strlen(m->item_id);
		struct item_row row;
		/* Version 0 is never a model: every vector goes. */
		if ((rc = item_slot(fs, txn, m->item_id, id_len, 0, &next_num, &row, &m->kind)))
			return rc;
		row.seq = m->seq = ++seq;
		row.version = m->version;
		row.added = m->added_unix;
		if ((rc = put_image(fs, txn, m->item_id, id_len, m->image, m->image_len)))
			return rc;
		for (size_t v = 0; v < m->nvecs; v++) {
			const fd_import_vec *iv = &m->vecs[v];
			if ((rc = put_vec(fs, txn, iv->version, row.num, iv->dims, m->item_id, id_len,
					  iv->values)))
				return rc;
		}
		if ((rc = put_change(fs, txn, row.seq, m->kind, m->version, m->item_id, id_len)) ||
		    (rc = vr_put(txn, fs->items, m->item_id, id_len, &row, sizeof row)))
			return rc;
	}
	c->last_seq = seq;
	return vr_put(txn, fs->meta, KEY_NEXT_NUM, strlen(KEY_NEXT_NUM), &next_num, sizeof next_num);
}

int fd_fstore_import(fd_fstore *fs, fd_import *items, size_t n)
{
	struct import_ctx c = { fs, items, n, 0 };
	if (!n)
		return 0;
	int rc = vr_store_write(fs->st, import_txn, &c);
	if (!rc)
		published(fs, c.last_seq);
	return rc;
}

struct remove_ctx {
	fd_fstore *fs;
	const char *const *ids;
	size_t n;
	const char *key;
	const void *val;
	size_t len;
	uint64_t deleted;
	uint64_t last_seq;
};

static int remove_txn(vr_txn *txn, void *arg)
{
	struct remove_ctx *c = arg;
	fd_fstore *fs = c->fs;
	uint64_t seq;
	int rc = last_seq_txn(fs, txn, &seq);
	if (rc)
		return rc;
	c->deleted = 0;
	for (size_t i = 0; i < c->n; i++) {
		size_t id_len = strlen(c->ids[i]);
		struct item_row row;
		rc = get_row(fs, txn, c->ids[i], id_len, &row);
		if (rc == VR_ENOTFOUND)
			continue;
		/* Version 0 is never a model: every vector goes. */
		if (rc || (rc = drop_other_vectors(fs, txn, row.num, 0)) ||
		    (rc = vr_del(txn, fs->images, c->ids[i], id_len)) ||
		    (rc = vr_del(txn, fs->items, c->ids[i], id_len)) ||
		    (rc = put_change(fs, txn, ++seq, FD_REMOVED, 0, c->ids[i], id_len)))
			return rc;
		c->deleted++;
	}
	c->last_seq = seq;
	return vr_put(txn, fs->meta, c->key, strlen(c->key), c->val, c->len);
}

int fd_fstore_remove(fd_fstore *fs, const char *const *ids, size_t n, const char *key,
		     const void *val, size_t len, uint64_t *deleted)
{
	struct remove_ctx c = { fs, ids, n, key, val, len, 0, 0 };
	int rc = vr_store_write(fs->st, remove_txn, &c);
	if (!rc && c.deleted)
		published(fs, c.last_seq);
	if (!rc && deleted)
		*deleted = c.deleted;
	return rc;
}

int fd_fstore_note_get(fd_fstore *fs, const char *key, void **val, size_t *len)
{
	vr_txn *txn;
	const void *v;
	size_t vl;
	int rc = vr_store_read_begin(fs->st, &txn);
	if (rc)
		return rc;
	if (!(rc = vr_get(txn, fs->meta, key, strlen(key), &v, &vl))) {
		*val = malloc(vl ? vl : 1);
		if (*val) {
			memcpy(*val, v, vl);
			*len = vl;
		} else {
			rc = VR_ENOMEM;
		}
	}
	vr_store_read_end(txn);
	return rc;
}

struct note_ctx {
	fd_fstore *fs;
	const char *key;
	const void *val;
	size_t len;
};

static int note_txn(vr_txn *txn, void *arg)
{
	struct note_ctx *c = arg;
	return vr_put(txn, c->fs->meta, c->key, strlen(c->key), c->val, c->len);
}

int fd_fstore_note_put(fd_fstore *fs, const char *key, const void *val, size_t len)
{
	struct note_ctx c = { fs, key, val, len };
	return vr_store_write(fs->st, note_txn, &c);
}

/* ---- re-embedded vectors ------------------------------------------------- */

struct revec_ctx {
	fd_fstore *fs;
	uint32_t version, dims;
	fd_revec *v;
	size_t n;
	uint64_t last_seq;
};

static int put_vectors_txn(vr_txn *txn, void *arg)
{
	struct revec_ctx *c = arg;
	fd_fstore *fs = c->fs;
	uint32_t active = 0;
	uint64_t seq;
	int rc = model_txn(fs, txn, c->version, NULL);
	if (rc || (rc = last_seq_txn(fs, txn, &seq)))
		return rc;
	rc = active_txn(fs, txn, &active);
	if (rc && rc != VR_ENOTFOUND)
		return rc;
	for (size_t i = 0; i < c->n; i++) {
		fd_revec *r = &c->v[i];
		size_t id_len = strlen(r->item_id);
		struct item_row row;
		r->stored = 0;
		rc = get_row(fs, txn, r->item_id, id_len, &row);
		if (rc == VR_ENOTFOUND || (!rc && row.seq != r->seq))
			continue;
		if (rc || (rc = put_vec(fs, txn, c->version, row.num, c->dims, r->item_id, id_len,
					r->vector)))
			return rc;
		r->stored = 1;
		if (c->version != active)
			continue;
		row.seq = ++seq;
		row.version = c->version;
		r->seq = row.seq;
		if ((rc = put_change(fs, txn, seq, FD_REEMBEDDED, c->version, r->item_id, id_len)) ||
		    (rc = vr_put(txn, fs->items, r->item_id, id_len, &row, sizeof row)))
			return rc;
	}
	c->last_seq = seq;
	return 0;
}

int fd_fstore_put_vectors(fd_fstore *fs, uint32_t version, uint32_t dims, fd_revec *v, size_t n)
{
	struct revec_ctx c = { fs, version, dims, v, n, 0 };
	int rc = vr_store_write(fs->st, put_vectors_txn, &c);
	if (!rc)
		published(fs, c.last_seq);
	return rc;
}

/* ---- switch --------------------------------------------------------------- */

struct switch_ctx {
	fd_fstore *fs;
	uint32_t version;
	uint64_t missing, seq;
};

static int switch_txn(vr_txn *txn, void *arg)
{
	struct switch_ctx *c = arg;
	fd_fstore *fs = c->fs;
	vr_cursor *cur = NULL;
	const void *k, *v;
	size_t kl, vl;
	int rc = model_txn(fs, txn, c->version, NULL);
	if (rc || (rc = last_seq_txn(fs, txn, &c->seq)))
		return rc;
	c->missing = 0;
	/* Two passes: nothing is written unless every item has its vector. */
	for (int pass = 0; pass < 2; pass++) {
		if ((rc = vr_cursor_open(txn, fs->items, &cur)))
			return rc;
		for (rc = vr_cursor_seek(cur, NULL, 0, &k, &kl, &v, &vl); !rc;
		     rc = vr_cursor_next(cur, &k, &kl, &v, &vl)) {
			struct item_row row;
			uint8_t key[12];
			const void *x;
			size_t xl;
			if (vl != sizeof row) {
				rc = VR_ECORRUPT;
				break;
			}
			memcpy(&row, v, sizeof row);
			if (pass == 0) {
				vec_key(key, c->version, row.num);
				rc = vr_get(txn, fs->vectors, key, sizeof key, &x, &xl);
				if (rc == VR_ENOTFOUND)
					c->missing++;
				else if (rc)
					break;
				continue;
			}
			row.version = c->version;
			if ((rc = vr_put(txn, fs->items, k, kl, &row, sizeof row)))
				break;
		}
		vr_cursor_close(cur);
		if (rc != VR_ENOTFOUND)
			return rc;
		if (c->missing)
			return VR_ESTATE;
	}
	c->seq++;
	if ((rc = put_change(fs, txn, c->seq, FD_MODEL_SWITCHED, c->version, NULL, 0)))
		return rc;
	return vr_put(txn, fs->meta, KEY_ACTIVE, strlen(KEY_ACTIVE), &c->version, sizeof c->version);
}

int fd_fstore_switch(fd_fstore *fs, uint32_t version, uint64_t *seq, uint64_t *missing)
{
	struct switch_ctx c = { fs, version, 0, 0 };
	int rc = vr_store_write(fs->st, switch_txn, &c);
	if (missing)
		*missing = c.missing;
	if (!rc) {
		published(fs, c.seq);
		if (seq)
			*seq = c.seq;
	}
	return rc;
}

/* ---- models -------------------------------------------------------------- */

struct model_ctx {
	fd_fstore *fs;
	fd_model_info *info;
	int activate;
	const char *json;
};

static int model_add_txn(vr_txn *txn, void *arg)
{
	struct model_ctx *c = arg;
	fd_fstore *fs = c->fs;
	uint64_t key = c->info->version, items;
	const void *v;
	size_t vl;
	int rc = vr_get(txn, fs->models, &key, 8, &v, &vl);
	if (rc != VR_ENOTFOUND)
		return rc ? rc : VR_EEXIST;
	if (c->activate) {
		if ((rc = vr_count(txn, fs->items, &items)))
			return rc;
		if (items)
			return VR_ESTATE;
		rc = vr_put(txn, fs->meta, KEY_ACTIVE, strlen(KEY_ACTIVE), &c->info->version,
			    sizeof c->info->version);
		if (rc)
			return rc;
	}
	return vr_put(txn, fs->models, &key, 8, c->json, strlen(c->json));
}

int fd_fstore_model_add(fd_fstore *fs, fd_model_info *info, int activate)
{
	int rc;
	if (!info->arch[0])
		return VR_EINVAL;
	if (!info->version && (rc = fd_fstore_model_next(fs, &info->version)))
		return rc;
	char *json = fd_model_encode(info);
	if (!json)
		return VR_ENOMEM;
	struct model_ctx c = { fs, info, activate, json };
	rc = vr_store_write(fs->st, model_add_txn, &c);
	cJSON_free(json);
	if (!rc)
		atomic_fetch_add(&fs->models_gen, 1);
	return rc;
}

int fd_fstore_model_next(fd_fstore *fs, uint32_t *version)
{
	vr_txn *txn;
	uint64_t last = 0;
	int rc = vr_store_read_begin(fs->st, &txn);
	if (rc)
		return rc;
	rc = vr_last_u64(txn, fs->models, &last);
	vr_store_read_end(txn);
	if (rc && rc != VR_ENOTFOUND)
		return rc;
	*version = (uint32_t)last + 1;
	return 0;
}

int fd_fstore_active(fd_fstore *fs, uint32_t *version)
{
	vr_txn *txn;
	int rc = vr_store_read_begin(fs->st, &txn);
	if (rc)
		return rc;
	rc = active_txn(fs, txn, version);
	vr_store_read_end(txn);
	return rc;
}

int fd_fstore_model_get(fd_fstore *fs, uint32_t version, fd_model_info *out)
{
	vr_txn *txn;
	int rc = vr_store_read_begin(fs->st, &txn);
	if (rc)
		return rc;
	if (!version)
		rc = active_txn(fs, txn, &version);
	if (!rc)
		rc = model_txn(fs, txn, version, out);
	vr_store_read_end(txn);
	return rc;
}

int fd_fstore_model_list(fd_fstore *fs, fd_model_info *out, size_t cap, size_t *n)
{
	vr_txn *txn;
	vr_cursor *c = NULL;
	const void *v;
	size_t vl;
	*n = 0;
	int rc = vr_store_read_begin(fs->st, &txn);
	if (rc)
		return rc;
	if ((rc = vr_cursor_open(txn, fs->models, &c)))
		goto leave;
	for (rc = vr_cursor_seek(c, NULL, 0, NULL, NULL, &v, &vl); !rc;
	     rc = vr_cursor_next(c, NULL, NULL, &v, &vl)) {
		if (*n < cap && (rc = fd_model_decode(v, vl, &out[*n])))
			break;
		(*n)++;
	}
	if (rc == VR_ENOTFOUND)
		rc = 0;
leave:
	vr_cursor_close(c);
	vr_store_read_end(txn);
	return rc;
}

/* ---- live versions ---------------------------------------------------------- */

int fd_fstore_live_get(fd_fstore *fs, uint32_t *versions, size_t *n)
{
	vr_txn *txn;
	const void *v;
	size_t vl;
	*n = 0;
	int rc = vr_store_read_begin(fs->st, &txn);
	if (rc)
		return rc;
	rc = vr_get(txn, fs->meta, KEY_LIVE, strlen(KEY_LIVE), &v, &vl);
	if (!rc && (vl % 4 || vl / 4 > FD_MAX_LIVE))
		rc = VR_ECORRUPT;
	if (!rc) {
		memcpy(versions, v, vl);
		*n = vl / 4;
	}
	vr_store_read_end(txn);
	return rc == VR_ENOTFOUND ? 0 : rc;
}

struct live_ctx {
	fd_fstore *fs;
	const uint32_t *versions;
	size_t n;
};

static int live_set_txn(vr_txn *txn, void *arg)
{
	struct live_ctx *c = arg;
	for (size_t i = 0; i < c->n; i++) {
		int rc = model_txn(c->fs, txn, c->versions[i], NULL);
		if (rc)
			return rc;
	}
	if (!c->n) {
		int rc = vr_del(txn, c->fs->meta, KEY_LIVE, strlen(KEY_LIVE));
		return rc == VR_ENOTFOUND ? 0 : rc;
	}
	return vr_put(txn, c->fs->meta, KEY_LIVE, strlen(KEY_LIVE), c->versions, 4 * c->n);
}

int fd_fstore_live_set(fd_fstore *fs, const uint32_t *versions, size_t n)
{
	struct live_ctx c = { fs, versions, n };
	if (n > FD_MAX_LIVE)
		return VR_EINVAL;
	return vr_store_write(fs->st, live_set_txn, &c);
}

/* ---- reads --------------------------------------------------------------- */

int fd_fstore_stats(fd_fstore *fs, uint64_t *items, uint64_t *last_seq)
{
	vr_txn *txn;
	int rc = vr_store_read_begin(fs->st, &txn);
	if (rc)
		return rc;
	rc = vr_count(txn, fs->items, items);
	if (!rc)
		rc = last_seq_txn(fs, txn, last_seq);
	vr_store_read_end(txn);
	return rc;
}

uint64_t fd_fstore_models_gen(fd_fstore *fs)
{
	return atomic_load(&fs->models_gen);
}

uint64_t fd_fstore_last_seq(fd_fstore *fs)
{
	pthread_mutex_lock(&fs->mu);
	uint64_t seq = fs->last_seq;
	pthread_mutex_unlock(&fs->mu);
	return seq;
}

int fd_fstore_wait(fd_fstore *fs, uint64_t after_seq, int64_t deadline_ms, int (*stop)(void *),
		   void *arg)
{
	pthread_mutex_lock(&fs->mu);
	while (fs->last_seq <= after_seq && !(stop && stop(arg)))
		if (vr_cond_wait_until(&fs->cv, &fs->mu, deadline_ms))
			break;
	int past = fs->last_seq > after_seq;
	pthread_mutex_unlock(&fs->mu);
	return past;
}

void fd_fstore_wake(void *arg)
{
	fd_fstore *fs = arg;
	pthread_mutex_lock(&fs->mu);
	pthread_cond_broadcast(&fs->cv);
	pthread_mutex_unlock(&fs->mu);
}

int fd_fstore_vec_num(fd_fstore *fs, vr_txn *txn, uint32_t version, uint64_t num, fd_vec *out)
{
	uint8_t key[12];
	const void *v;
	size_t vl;
	vec_key(key, version, num);
	int rc = vr_get(txn, fs->vectors, key, sizeof key, &v, &vl);
	return rc ? rc : fd_vec_decode(key, sizeof key, v, vl, out);
}

int fd_fstore_vec_get(fd_fstore *fs, vr_txn *txn, uint32_t version, const char *item_id,
		      fd_vec *out)
{
	struct item_row row;
	int rc = get_row(fs, txn, item_id, strlen(item_id), &row);
	return rc ? rc : fd_fstore_vec_num(fs, txn, version, row.num, out);
}

int fd_fstore_vec_next(fd_fstore *fs, vr_txn *txn, uint32_t version, uint64_t from_num,
		       fd_vec *out)
{
	uint8_t key[12];
	vr_cursor *c;
	const void *k, *v;
	size_t kl, vl;
	vec_key(key, version, from_num);
	int rc = vr_cursor_open(txn, fs->vectors, &c);
	if (rc)
		return rc;
	rc = vr_cursor_seek(c, key, sizeof key, &k, &kl, &v, &vl);
	if (!rc)
		rc = kl == 12 && key_version(k) == version ? fd_vec_decode(k, kl, v, vl, out) : VR_ENOTFOUND;
	vr_cursor_close(c);
	return rc;
}

int fd_item_decode(const void *k, size_t kl, const void *v, size_t vl, fd_item *out)
{
	struct item_row row;
	if (vl != sizeof row)
		return VR_ECORRUPT;
	memcpy(&row, v, sizeof row);
	out->item_id = k;
	out->id_len = kl;
	out->num = row.num;
	out->seq = row.seq;
	out->version = row.version;
	out->added_unix = row.added;
	out->image = NULL;
	out->image_len = 0;
	return 0;
}

static int fill_item(fd_fstore *fs, vr_txn *txn, const void *k, size_t kl, const void *v,
		     size_t vl, fd_item *out)
{
	int rc = fd_item_decode(k, kl, v, vl, out);
	if (!rc)
		rc = vr_get(txn, fs->images, k, kl, &out->image, &out->image_len);
	return rc == VR_ENOTFOUND ? VR_ECORRUPT : rc;
}

int fd_fstore_item_get(fd_fstore *fs, vr_txn *txn, const char *item_id, fd_item *out)
{
	size_t len = strlen(item_id);
	const void *v;
	size_t vl;
	int rc = vr_get(txn, fs->items, item_id, len, &v, &vl);
	return rc ? rc : fill_item(fs, txn, item_id, len, v, vl, out);
}

int fd_fstore_item_next(fd_fstore *fs, vr_txn *txn, const char *after_id, fd_item *out)
{
	vr_cursor *c;
	const void *k, *v;
	size_t kl, vl;
	size_t len = after_id ? strlen(after_id) : 0;
	int rc = vr_cursor_open(txn, fs->items, &c);
	if (rc)
		return rc;
	rc = vr_cursor_seek(c, len ? after_id : NULL, len, &k, &kl, &v, &vl);
	if (!rc && len && kl == len && !memcmp(k, after_id, len))
		rc = vr_cursor_next(c, &k, &kl, &v, &vl);
	vr_cursor_close(c);
	return rc ? rc : fill_item(fs, txn, k, kl, v, vl, out);
}

int fd_fstore_change_next(fd_fstore *fs, vr_txn *txn, uint64_t after_seq, fd_change *out)
{
	vr_cursor *c;
	const void *k, *v;
	size_t kl, vl;
	uint64_t from = after_seq + 1;
	int rc = vr_cursor_open(txn, fs->changes, &c);
	if (rc)
		return rc;
	rc = vr_cursor_seek(c, &from, 8, &k, &kl, &v, &vl);
	vr_cursor_close(c);
	return rc ? rc : fd_change_decode(k, kl, v, vl, out);
}

int fd_change_decode(const void *k, size_t kl, const void *v, size_t vl, fd_change *out)
{
	struct change_head h;
	if (kl != 8 || vl < sizeof h)
		return VR_ECORRUPT;
	memcpy(&out->seq, k, 8);
	memcpy(&h, v, sizeof h);
	out->kind = (int)h.kind;
	out->version = h.version;
	out->item_id = (const char *)v + sizeof h;
	out->id_len = vl - sizeof h;
	return 0;
}
