/* The ThreadSanitizer stand-in for RCU grace periods (see rcu.h). */
#include "rcu.h"

#if defined(__SANITIZE_THREAD__)
pthread_rwlock_t gm_rcu_tsan_lock = PTHREAD_RWLOCK_INITIALIZER;
#endif
