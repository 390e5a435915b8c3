/* A stack of its own for guest code, and the switch to it and back on the calling thread. */
#ifndef GMEM_FIBER_H
#define GMEM_FIBER_H

#include "internal.h"

struct fiber {
	void *map;               /* guard page + stack */
	size_t map_size;
	void *sp;                /* the fiber's stack pointer while it is switched out */
	void *caller_sp;         /* the caller's while the fiber runs */
	void (*entry)(void *arg);
	void *arg;
	/* Sanitizers: the stacks each side runs on, as ASan and TSan are told at each switch. */
	void *asan_fake_stack;
	const void *caller_stack;
	size_t caller_stack_size;
	void *tsan_fiber, *tsan_caller;
};

/* A fiber that will run entry(arg) on a stack of stack_size bytes: 0 or -ENOMEM. */
int fiber_init(struct fiber *f, size_t stack_size, void (*entry)(void *), void *arg);
/* Frees the stack of a fiber that is not running, wherever it stopped. */
void fiber_destroy(struct fiber *f);
/* From the caller: runs the fiber until it yields or exits. */
void fiber_resume(struct fiber *f);
/* From the fiber: back to the caller of fiber_resume, until the next resume. */
void fiber_yield(struct fiber *f);
/* From the fiber, the last time: back to the caller, never resumed. */
__attribute__((noreturn)) void fiber_exit(struct fiber *f);

#endif
