/* The reverse map of a guest_memfd's pages: a range map of ownership states, O(ranges) in memory. */
#include "platform/rmp.h"

struct rmp *rmp_create(pgoff_t npages)
{
	struct rmp *r = gm_zalloc(sizeof(*r));

	if (!r)
		return NULL;
	if (pthread_mutex_init(&r->lock, NULL))
		goto err_free;
	if (attr_map_init(&r->map, npages, RMP_HYPERVISOR))
		goto err_lock;
	return r;

err_lock:
	pthread_mutex_destroy(&r->lock);
err_free:
	gm_free(r);
	return NULL;
}

void rmp_destroy(struct rmp *r)
{
	if (!r)
		return;
	attr_map_destroy(&r->map);
	pthread_mutex_destroy(&r->lock);
	gm_free(r);
}

enum rmp_state rmp_get(struct rmp *r, pgoff_t index)
{
	enum rmp_state s;

	pthread_mutex_lock(&r->lock);
	s = (enum rmp_state)attr_get(&r->map, index, NULL);
	pthread_mutex_unlock(&r->lock);
	return s;
}

bool rmp_uniform(struct rmp *r, pgoff_t start, pgoff_t end, enum rmp_state state)
{
	uint64_t found;
	bool uniform;

	pthread_mutex_lock(&r->lock);
	uniform = attr_uniform(&r->map, start, end, &found);
	pthread_mutex_unlock(&r->lock);
	return uniform && found == state;
}

int rmp_reserve(struct rmp *r)
{
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = attr_reserve(&r->map);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int rmp_set(struct rmp *r, pgoff_t start, pgoff_t end, enum rmp_state state)
{
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = attr_reserve(&r->map);
	if (!ret) {
		attr_set(&r->map, start, end, state);
		attr_shrink(&r->map);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

bool rmp_next_guest_run(struct rmp *r, pgoff_t start, pgoff_t end, pgoff_t *run_start,
			pgoff_t *run_end)
{
	bool found = false;
	pgoff_t at = start, next;

	pthread_mutex_lock(&r->lock);
	while (at < end) {
		uint64_t s = attr_get(&r->map, at, &next);

		if (s != RMP_HYPERVISOR) {
			*run_start = at;
			*run_end = next < end ? next : end;
			found = true;
			break;
		}
		at = next;
	}
	pthread_mutex_unlock(&r->lock);
	return found;
}

pgoff_t rmp_count(struct rmp *r, enum rmp_state state)
{
	pgoff_t n;

	pthread_mutex_lock(&r->lock);
	n = attr_count(&r->map, state);
	pthread_mutex_unlock(&r->lock);
	return n;
}
