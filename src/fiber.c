/*
 * Fibers for soft vCPUs: KVM_RUN runs the guest function on the calling
 * thread, on a stack the vCPU owns. The switch saves only the callee-saved
 * registers and the FPU control words: no signal-mask syscalls, unlike
 * swapcontext(3), whose two sigprocmask calls per switch would cost more
 * than the exit itself.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "fiber.h"

#if defined(GM_SANITIZE_ADDRESS)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(GM_SANITIZE_THREAD)
#include <sanitizer/tsan_interface.h>
#endif

#if !defined(__x86_64__)
#error "soft vCPUs switch stacks with x86-64 code: port fiber_switch to this architecture"
#endif

/* Saves the caller's callee-saved state on its stack and *save_sp, then resumes new_sp's. */
void fiber_switch(void **save_sp, void *new_sp);
/* Where a new fiber starts: its first argument is in r12 (see fiber_init). */
void fiber_trampoline(void);
__attribute__((noreturn)) void fiber_start(struct fiber *f);

__asm__(".text\n"
	".globl fiber_switch\n"
	".hidden fiber_switch\n"
	".type fiber_switch, @function\n"
	"fiber_switch:\n"
	"	pushq %rbp\n"
	"	pushq %rbx\n"
	"	pushq %r12\n"
	"	pushq %r13\n"
	"	pushq %r14\n"
	"	pushq %r15\n"
	"	subq $8, %rsp\n"
	"	stmxcsr (%rsp)\n"
	"	fnstcw 4(%rsp)\n"
	"	movq %rsp, (%rdi)\n"
	"	movq %rsi, %rsp\n"
	"	ldmxcsr (%rsp)\n"
	"	fldcw 4(%rsp)\n"
	"	addq $8, %rsp\n"
	"	popq %r15\n"
	"	popq %r14\n"
	"	popq %r13\n"
	"	popq %r12\n"
	"	popq %rbx\n"
	"	popq %rbp\n"
	"	ret\n"
	".size fiber_switch, .-fiber_switch\n"
	".globl fiber_trampoline\n"
	".hidden fiber_trampoline\n"
	".type fiber_trampoline, @function\n"
	"fiber_trampoline:\n"
	"	movq %r12, %rdi\n"
	"	call fiber_start\n"
	"	ud2\n"
	".size fiber_trampoline, .-fiber_trampoline\n");

/* The frame fiber_switch pops, lowest address first. */
struct fiber_frame {
	uint32_t mxcsr;
	uint16_t fpu_cw, pad;
	uint64_t r15, r14, r13, r12, rbx, rbp;
	uint64_t ret;
};

int fiber_init(struct fiber *f, size_t stack_size, void (*entry)(void *), void *arg)
{
	size_t size = stack_size + GM_PAGE_SIZE;
	struct fiber_frame *frame;
	char *top;

	*f = (struct fiber){ .entry = entry, .arg = arg };
	f->map = mmap(NULL, size, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
	if (f->map == MAP_FAILED) {
		f->map = NULL;
		return -ENOMEM;
	}
	f->map_size = size;
	/* A guest that overflows its stack faults on the guard page instead of corrupting memory. */
	if (mprotect(f->map, GM_PAGE_SIZE, PROT_NONE)) {
		munmap(f->map, size);
		f->map = NULL;
		return -ENOMEM;
	}
	/* fiber_switch's ret enters the trampoline with the stack 16-byte aligned, as a call needs. */
	top = (char *)f->map + size;
	frame = (struct fiber_frame *)(top - sizeof(*frame));
	*frame = (struct fiber_frame){
		.mxcsr = 0x1f80,  /* the ABI's initial values: all exceptions masked, round to nearest */
		.fpu_cw = 0x037f,
		.r12 = (uint64_t)(uintptr_t)f,
		.ret = (uint64_t)(uintptr_t)fiber_trampoline,
	};
	f->sp = frame;
#if defined(GM_SANITIZE_THREAD)
	f->tsan_fiber = __tsan_create_fiber(0);
#endif
	return 0;
}

void fiber_destroy(struct fiber *f)
{
	if (!f->map)
		return;
#if defined(GM_SANITIZE_THREAD)
	__tsan_destroy_fiber(f->tsan_fiber);
#endif
#if defined(GM_SANITIZE_ADDRESS)
	/* A fiber stopped mid-function leaves its frames' redzones poisoned. */
	__asan_unpoison_memory_region(f->map, f->map_size);
#endif
	munmap(f->map, f->map_size);
	f->map = NULL;
}

void fiber_start(struct fiber *f)
{
#if defined(GM_SANITIZE_ADDRESS)
	__sanitizer_finish_switch_fiber(NULL, &f->caller_stack, &f->caller_stack_size);
#endif
	f->entry(f->arg);
	fiber_exit(f);
}

void fiber_resume(struct fiber *f)
{
#if defined(GM_SANITIZE_ADDRESS)
	void *fake_stack;

	__sanitizer_start_switch_fiber(&fake_stack, (char *)f->map + GM_PAGE_SIZE,
				       f->map_size - GM_PAGE_SIZE);
#endif
#if defined(GM_SANITIZE_THREAD)
	f->tsan_caller = __tsan_get_current_fiber();
	__tsan_switch_to_fiber(f->tsan_fiber, 0);
#endif
	fiber_switch(&f->caller_sp, f->sp);
#if defined(GM_SANITIZE_ADDRESS)
	__sanitizer_finish_switch_fiber(fake_stack, NULL, NULL);
#endif
}

void fiber_yield(struct fiber *f)
{
#if defined(GM_SANITIZE_ADDRESS)
	__sanitizer_start_switch_fiber(&f->asan_fake_stack, f->caller_stack, f->caller_stack_size);
#endif
#if defined(GM_SANITIZE_THREAD)
	__tsan_switch_to_fiber(f->tsan_caller, 0);
#endif
	fiber_switch(&f->sp, f->caller_sp);
	/* Resumed, perhaps by another thread: its stack is the caller's now. */
#if defined(GM_SANITIZE_ADDRESS)
	__sanitizer_finish_switch_fiber(f->asan_fake_stack, &f->caller_stack, &f->caller_stack_size);
#endif
}

void fiber_exit(struct fiber *f)
{
	void *dead_sp;

#if defined(GM_SANITIZE_ADDRESS)
	/* No fake stack to keep: this stack is never resumed. */
	__sanitizer_start_switch_fiber(NULL, f->caller_stack, f->caller_stack_size);
#endif
#if defined(GM_SANITIZE_THREAD)
	__tsan_switch_to_fiber(f->tsan_caller, 0);
#endif
	fiber_switch(&dead_sp, f->caller_sp);
	__builtin_unreachable();
}
