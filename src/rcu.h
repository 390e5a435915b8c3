/* RCU for the library: liburcu-bp, or under ThreadSanitizer a rwlock TSan can follow. */
#ifndef GMEM_RCU_H
#define GMEM_RCU_H

#include <pthread.h>
#include <urcu-bp.h>

#if defined(__SANITIZE_THREAD__)
/*
 * TSan cannot see liburcu's grace periods and would report every reclaim as a
 * race. Readers then share a rwlock that a grace period takes exclusively:
 * the same guarantee, visible to TSan. Readers never block inside a section.
 */
extern pthread_rwlock_t gm_rcu_tsan_lock;

static inline void gm_rcu_read_lock(void)
{
	pthread_rwlock_rdlock(&gm_rcu_tsan_lock);
}

static inline void gm_rcu_read_unlock(void)
{
	pthread_rwlock_unlock(&gm_rcu_tsan_lock);
}

static inline void gm_synchronize_rcu(void)
{
	pthread_rwlock_wrlock(&gm_rcu_tsan_lock);
	pthread_rwlock_unlock(&gm_rcu_tsan_lock);
}

static inline void gm_call_rcu(struct rcu_head *head, void (*fn)(struct rcu_head *))
{
	gm_synchronize_rcu();
	fn(head);
}

static inline void gm_rcu_barrier(void)
{
}
#else
static inline void gm_rcu_read_lock(void)
{
	rcu_read_lock();
}

static inline void gm_rcu_read_unlock(void)
{
	rcu_read_unlock();
}

static inline void gm_synchronize_rcu(void)
{
	synchronize_rcu();
}

static inline void gm_call_rcu(struct rcu_head *head, void (*fn)(struct rcu_head *))
{
	call_rcu(head, fn);
}

static inline void gm_rcu_barrier(void)
{
	rcu_barrier();
}
#endif

#endif
