/* Error codes shared by every visrec library.
 *
 * Functions return int rc: 0 on success, a negative VR_E* code on failure.
 * The codes are negative and far below -4096 so they never collide with a
 * negated errno, which functions may also return (e.g. -ENOENT) where the
 * cause is a system call. vr_strerror() names either kind. */
#ifndef VR_ERR_H
#define VR_ERR_H

enum {
	VR_OK = 0,
	VR_ENOMEM = -10001,     /* allocation failed */
	VR_EINVAL = -10002,     /* an argument or input is malformed */
	VR_ENOTFOUND = -10003,  /* key, item, user or file does not exist */
	VR_EEXIST = -10004,     /* already exists */
	VR_EIO = -10005,        /* read/write/system failure */
	VR_ESTORE = -10006,     /* LMDB failure not covered by another code */
	VR_EMAPFULL = -10007,   /* the LMDB map could not grow further */
	VR_ECORRUPT = -10008,   /* stored data or a file failed validation */
	VR_ETOOBIG = -10009,    /* input over a configured limit */
	VR_EFULL = -10010,      /* a bounded queue is full */
	VR_ECANCELLED = -10011, /* the caller or peer cancelled */
	VR_ETIMEDOUT = -10012,  /* a deadline passed */
	VR_ESHUTDOWN = -10013,  /* the component is shutting down */
	VR_EUNSUPPORTED = -10014, /* feature/backend/format not available */
	VR_EDEVICE = -10015,    /* CUDA / cuDNN / cuBLAS failure */
	VR_ERPC = -10016,       /* a remote call failed; see its status */
	VR_EEOF = -10017,       /* end of a stream (not an error for readers) */
	VR_ESHAPE = -10018,     /* tensor shapes do not match */
	VR_ESTATE = -10019,     /* call not valid in the current state */
	VR_ENOSPACE = -10020,   /* disk full: the file system refused a write */
};

/* Returns a static, human-readable description of rc (VR_E* or -errno). */
const char *vr_strerror(int rc);

#endif
