/* shardmap: which featured shard owns an item (DESIGN.md section 10).
 *
 * The shard list LIST is the text every party is given the same way
 * (featured --shards, rankd and the CLI --featured): comma-separated
 * "host:port" addresses, one per shard. Its order does not matter: the map
 * holds the names sorted bytewise, and a shard's name is its address as
 * written in LIST. Two lists name the same map when their sorted names are
 * equal, so "a:1,b:2" and "b:2,a:1" agree, and "localhost:1" and
 * "127.0.0.1:1" do not.
 *
 * Ownership is rendezvous (highest random weight) hashing: the owner of
 * item id is the shard whose vr_shard_hash(name, id) is largest (the
 * smaller name wins a tie). Adding or removing a shard moves only the items
 * whose owner is the new or the removed shard.
 *
 * The hash is part of the on-disk contract (which LMDB holds which item)
 * and never changes:
 *   vr_shard_hash(name, id) = mix64(fnv1a64(name || 0x00 || id))
 * fnv1a64: offset basis 0xcbf29ce484222325, prime 0x100000001b3, over the
 * bytes of name, one zero byte, then the bytes of id; mix64 is the
 * finaliser of splitmix64: z ^= z >> 30; z *= 0xbf58476d1ce4e5b9;
 * z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31.
 *
 * The fingerprint of a map is mix64(fnv1a64(the sorted names joined by
 * ",")); with the shard count it forms the map's tag, "N-XXXXXXXXXXXXXXXX"
 * (N decimal, 16 lower-case hex digits), which a client of a sharded
 * featured sends as metadata VR_SHARDMAP_KEY with every call so that a
 * party holding another list is refused instead of mixing. A map of one
 * shard is the same as none: its clients send no tag, and its featured
 * accepts calls without one. */
#ifndef VR_SHARDMAP_H
#define VR_SHARDMAP_H

#include <stddef.h>
#include <stdint.h>

/* Most shards in a list. */
#define VR_SHARDS_MAX 256
/* Most bytes in one address. */
#define VR_SHARD_ADDR_MAX 255
/* Most bytes in a whole LIST (every address at its limit, and commas). */
#define VR_SHARD_LIST_MAX (VR_SHARDS_MAX * (VR_SHARD_ADDR_MAX + 1))
/* Room for a tag with its NUL. */
#define VR_SHARDMAP_TAG 32
/* The request metadata key that carries the client's tag. */
#define VR_SHARDMAP_KEY "visrec-shard-map"

typedef struct vr_shardmap {
	size_t n;              /* shards, 1..VR_SHARDS_MAX */
	char **names;          /* sorted bytewise; names[k] is shard k */
	char *list;            /* the names joined by "," (the normal form) */
	uint64_t fingerprint;
	char tag[VR_SHARDMAP_TAG];
} vr_shardmap;

/* Parses LIST (NUL-terminated) into *out. Every entry must be
 * "host:port": a host of letters, digits, '.', '-', '_' or a bracketed IPv6
 * address ("[::1]"), a colon, and a port 1..65535 without leading zeros;
 * at most VR_SHARD_ADDR_MAX bytes each, at most VR_SHARDS_MAX entries, no
 * empty entry, no entry twice. Returns 0; VR_EINVAL with the reason in why
 * (cap bytes), e.g. "entry 3 of the shard list, \"a:0\", has port 0 (want
 * 1..65535)"; VR_ETOOBIG for a list over the limits (why says which);
 * VR_ENOMEM. */
int vr_shardmap_parse(vr_shardmap **out, const char *list, char *why, size_t cap);
/* Frees a map. NULL is a no-op. */
void vr_shardmap_free(vr_shardmap *m);

/* The two halves of that hash, for other checksums of the same strength
 * (featured's resharding): one FNV-1a 64 step over len bytes from h
 * (VR_FNV_BASIS to start), and splitmix64's finaliser. */
#define VR_FNV_BASIS 0xcbf29ce484222325ULL
uint64_t vr_fnv1a64(uint64_t h, const void *p, size_t len);
uint64_t vr_mix64(uint64_t z);

/* The hash of (shard name, id of len bytes), as documented above. */
uint64_t vr_shard_hash(const char *name, const char *id, size_t len);
/* The index of the shard that owns id (len bytes). */
size_t vr_shardmap_owner(const vr_shardmap *m, const char *id, size_t len);
/* The index of the shard named name, or -1 when the map has none. */
int vr_shardmap_find(const vr_shardmap *m, const char *name);

/* Checks a client's tag (the value of VR_SHARDMAP_KEY; NULL when the call
 * carried none) against the map m of this server (NULL: not sharded).
 * Agreement: both unsharded and no tag, or the tag equal to m's. Returns 0,
 * or VR_ESTATE with a sentence for the client in why naming both sides'
 * shard counts and fingerprints, e.g. "this featured 127.0.0.1:7001 holds
 * a map of 3 shards (fingerprint 0123...), the call was made with a map of
 * 2 shards (fingerprint 4567...): give every party the same shard list
 * (...)". self names this server in the message (may be NULL). */
int vr_shardmap_check_tag(const vr_shardmap *m, const char *self, const char *tag, char *why,
			  size_t cap);

#endif
