/* The ThreadSanitizer stand-in for RCU grace periods, and the read-side nesting (see rcu.h). */
#include "rcu.h"

__thread unsigned gm_rcu_nesting;

#if defined(__SANITIZE_THREAD__)
pthread_rwlock_t gm_rcu_tsan_lock = PTHREAD_RWLOCK_INITIALIZER;
#endif
