/* Image sets (nn.h): a catalogue's decoded images in the backend's memory,
 * so a training step sends indices, not pixels, to the GPU. One backend
 * allocation holds them all; nn_net_forward_images (net.c) reads them. */
#include <stdlib.h>

#include "err.h"
#include "net_priv.h"
#include "nn.h"

int nn_images_create(nn_backend *b, size_t n, int size, nn_images **out)
{
	nn_images *set;
	int rc;
	*out = NULL;
	if (!n || size < 1)
		return VR_EINVAL;
	if (!(set = calloc(1, sizeof *set)))
		return VR_ENOMEM;
	set->b = b;
	set->n = n;
	set->size = size;
	if ((rc = b->ops->alloc(b, n * 3 * (size_t)size * size, (void **)&set->data))) {
		free(set);
		return rc;
	}
	*out = set;
	return 0;
}

void nn_images_destroy(nn_images *set)
{
	if (!set)
		return;
	set->b->ops->free(set->b, set->data);
	free(set);
}

size_t nn_images_count(const nn_images *set)
{
	return set->n;
}

int nn_images_size(const nn_images *set)
{
	return set->size;
}

int nn_images_put(nn_images *set, size_t first, size_t count, const uint8_t *images)
{
	const size_t per = 3 * (size_t)set->size * set->size;
	if (first > set->n || count > set->n - first || (count && !images))
		return VR_EINVAL;
	return set->b->ops->upload(set->b, set->data + first * per, images, count * per);
}
