/* RCU for the library: liburcu-bp, or under ThreadSanitizer a rwlock TSan can follow. */
#ifndef GMEM_RCU_H
#define GMEM_RCU_H

#include <pthread.h>
#include <stdbool.h>
#include <urcu-bp.h>

/*
 * Read-side sections this thread is in. A signal handler that interrupted one
 * must not wait for a grace period: it would wait for its own thread.
 */
extern __thread unsigned gm_rcu_nesting;

static inline bool gm_rcu_read_held(void)
{
	return gm_rcu_nesting != 0;
}

#if defined(__SANITIZE_THREAD__)
/*
 * TSan cannot see liburcu's grace periods and would report every reclaim as a
 * race. Readers then share a rwlock that a grace period takes exclusively:
 * the same guarantee, visible to TSan. Readers never block inside a section.
 */
extern pthread_rwlock_t gm_rcu_tsan_lock;

static inline void gm_rcu_read_lock(void)
{
	gm_rcu_nesting++;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	pthread_rwlock_rdlock(&gm_rcu_tsan_lock);
}

static inline void gm_rcu_read_unlock(void)
{
	pthread_rwlock_unlock(&gm_rcu_tsan_lock);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	gm_rcu_nesting--;
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
	gm_rcu_nesting++;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	rcu_read_lock();
}

static inline void gm_rcu_read_unlock(void)
{
	rcu_read_unlock();
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	gm_rcu_nesting--;
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
