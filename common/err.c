/* Names for the VR_E* codes of err.h. */
#include "err.h"

#include <string.h>

const char *vr_strerror(int rc)
{
	switch (rc) {
	case VR_OK: return "success";
	case VR_ENOMEM: return "out of memory";
	case VR_EINVAL: return "invalid argument";
	case VR_ENOTFOUND: return "not found";
	case VR_EEXIST: return "already exists";
	case VR_EIO: return "input/output error";
	case VR_ESTORE: return "storage (LMDB) error";
	case VR_EMAPFULL: return "storage map is full and cannot grow";
	case VR_ECORRUPT: return "data failed validation";
	case VR_ETOOBIG: return "input exceeds a configured limit";
	case VR_EFULL: return "queue is full";
	case VR_ECANCELLED: return "cancelled";
	case VR_ETIMEDOUT: return "deadline exceeded";
	case VR_ESHUTDOWN: return "shutting down";
	case VR_EUNSUPPORTED: return "not supported";
	case VR_EDEVICE: return "GPU device error";
	case VR_ERPC: return "remote call failed";
	case VR_EEOF: return "end of stream";
	case VR_ESHAPE: return "tensor shape mismatch";
	case VR_ESTATE: return "invalid state for this operation";
	case VR_ENOSPACE: return "disk full";
	}
	if (rc < 0 && rc > -4096)
		return strerror(-rc);
	return "unknown error";
}
