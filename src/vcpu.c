/* Software vCPUs: KVM_RUN runs a guest C function whose memory accesses go through the stage-2. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "rcu.h"

#include "gmem.h"
#include "kvm/host.h"
#include "vcpu.h"

struct gm_guest {
	struct vcpu vcpu;
};

static struct vcpu *guest_vcpu(struct gm_guest *guest)
{
	return &guest->vcpu;
}

/* ---- the guest's use of translations, and invalidations waiting for it ---- */

/* A full fence; TSan models a seq_cst read-modify-write but not a standalone fence. */
static inline void full_fence(void)
{
#if defined(__SANITIZE_THREAD__)
	static atomic_int fence_word;

	atomic_fetch_add_explicit(&fence_word, 0, memory_order_seq_cst);
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;
static bool membarrier_ok;
static void *barrier_page;

static void membarrier_init(void)
{
	membarrier_ok = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
	if (!membarrier_ok)
		barrier_page = mmap(NULL, GM_PAGE_SIZE, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

/*
 * A full barrier on every thread of the process that is running now, so a
 * vCPU's plain store of its access_seq is ordered before its later loads as
 * seen from here. Without membarrier, changing a touched page's protection
 * makes the kernel interrupt every CPU that runs this address space.
 */
static void process_barrier(void)
{
	if (membarrier_ok) {
		syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	} else if (barrier_page != MAP_FAILED && barrier_page) {
		*(volatile char *)barrier_page = 1;
		mprotect(barrier_page, GM_PAGE_SIZE, PROT_READ);
		mprotect(barrier_page, GM_PAGE_SIZE, PROT_READ | PROT_WRITE);
	}
	full_fence();
}

static inline void access_begin(struct vcpu *v)
{
	uint64_t seq = atomic_load_explicit(&v->access_seq, memory_order_relaxed);

	atomic_store_explicit(&v->access_seq, seq + 1, memory_order_relaxed);
#if defined(__SANITIZE_THREAD__)
	/* TSan does not model process_barrier(): a real fence it can see. */
	full_fence();
#else
	atomic_signal_fence(memory_order_seq_cst);
#endif
}

static inline void access_end(struct vcpu *v)
{
	uint64_t seq = atomic_load_explicit(&v->access_seq, memory_order_relaxed);

	atomic_store_explicit(&v->access_seq, seq + 1, memory_order_release);
}

void vm_quiesce_vcpus(struct vm *vm)
{
	/* Every running vCPU now either sees the zap or is seen inside an access. */
	process_barrier();
	pthread_mutex_lock(&vm->vcpus_lock);
	for (struct vcpu *v = vm->vcpus; v; v = v->next_in_vm) {
		uint64_t seq = atomic_load_explicit(&v->access_seq, memory_order_acquire);

		if (!(seq & 1))
			continue;
		while (atomic_load_explicit(&v->access_seq, memory_order_acquire) == seq)
			sched_yield();
	}
	pthread_mutex_unlock(&vm->vcpus_lock);
}

/* What a leaf must carry for a read ([0]) and a write ([1]) of the current access kind. */
static void vcpu_set_need(struct vcpu *v)
{
	/* An explicit kind on a VM with private memory must match the leaf's. */
	uint64_t kind_mask = v->private_vm && v->access != GM_ACCESS_AUTO ? SPTE_PRIVATE : 0;
	uint64_t kind_bits = v->private_vm && v->access == GM_ACCESS_PRIVATE ? SPTE_PRIVATE : 0;

	v->need_mask[0] = SPTE_PRESENT | kind_mask;
	v->need_bits[0] = SPTE_PRESENT | kind_bits;
	v->need_mask[1] = SPTE_PRESENT | SPTE_WRITABLE | kind_mask;
	v->need_bits[1] = SPTE_PRESENT | SPTE_WRITABLE | kind_bits;
}

/* ---- host side: KVM_RUN and the handoff ---- */

static void vcpu_release(struct gm_object *obj)
{
	struct vcpu *v = gm_container_of(obj, struct vcpu, obj);

	pthread_mutex_lock(&v->vm->vcpus_lock);
	for (struct vcpu **pp = &v->vm->vcpus; *pp; pp = &(*pp)->next_in_vm) {
		if (*pp == v) {
			*pp = v->next_in_vm;
			break;
		}
	}
	pthread_mutex_unlock(&v->vm->vcpus_lock);
	if (v->thread_started) {
		/* A guest parked at an exit is told to end, and ends on its own thread. */
		pthread_mutex_lock(&v->lock);
		v->dying = true;
		v->turn = VCPU_TURN_GUEST;
		pthread_cond_broadcast(&v->cond);
		pthread_mutex_unlock(&v->lock);
		pthread_join(v->thread, NULL);
	}
	if (v->run)
		munmap(v->run, VCPU_MMAP_PAGES * GM_PAGE_SIZE);
	if (v->host_fd >= 0)
		close(v->host_fd);
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->lock);
	atomic_fetch_sub(&v->vm->nr_vcpus, 1);
	pthread_mutex_lock(&v->vm->slots_lock);
	v->vm->vcpu_ids[v->id / 64] &= ~(1ULL << (v->id % 64));
	pthread_mutex_unlock(&v->vm->slots_lock);
	vm_put(v->vm);
	gm_free(v);
}

int vcpu_create(struct vm *vm, unsigned long id)
{
	struct vcpu *v;
	int fd;

	if (id >= GM_MAX_VCPU_IDS)
		return -EINVAL;
	v = gm_zalloc(sizeof(struct gm_guest));
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&vm->slots_lock);
	if (vm->vcpu_ids[id / 64] & (1ULL << (id % 64))) {
		pthread_mutex_unlock(&vm->slots_lock);
		gm_free(v);
		return -EEXIST;
	}
	vm->vcpu_ids[id / 64] |= 1ULL << (id % 64);
	pthread_mutex_unlock(&vm->slots_lock);
	gm_object_init(&v->obj, vcpu_release);
	v->id = id;
	v->host_fd = -1;
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->cond, NULL);
	pthread_once(&membarrier_once, membarrier_init);
	vm_get(vm);
	v->vm = vm;
	v->mmu = &vm->mmu;
	v->generation = &vm->mmu.generation;
	v->private_vm = vm_has_private_mem(vm);
	vcpu_set_need(v);
	atomic_fetch_add(&vm->nr_vcpus, 1);
	pthread_mutex_lock(&vm->vcpus_lock);
	v->next_in_vm = vm->vcpus;
	vm->vcpus = v;
	pthread_mutex_unlock(&vm->vcpus_lock);
	v->run = MAP_FAILED;
	/* The vCPU fd is close-on-exec, as the kernel's. */
	fd = gm_file_install(GM_FILE_VCPU, &v->obj, "kvm-vcpu", true);
	if (fd < 0)
		goto err;
	if (vm->host_fd >= 0) {
		/* kvm backend: the host's vCPU and its run area. */
		v->host_fd = ioctl(vm->host_fd, KVM_CREATE_VCPU, id);
		if (v->host_fd < 0)
			goto err_close;
		v->run_fd = v->host_fd;
	} else {
		/* The run area lives in the handle memfd, so gm_mmap of the fd shares it. */
		if (ftruncate(fd, VCPU_MMAP_PAGES * GM_PAGE_SIZE) < 0)
			goto err_close;
		v->run_fd = fd;
	}
	v->run = mmap(NULL, VCPU_MMAP_PAGES * GM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->run_fd, 0);
	if (v->run == MAP_FAILED)
		goto err_close;
	return fd;

err_close: {
	int err = -errno;

	v->run = NULL;
	gm_file_close(fd);
	return err;
	}
err:
	v->run = NULL;
	gm_object_put(&v->obj);
	return fd;
}

static void *guest_thread(void *arg);


/* Runs the guest until its next exit. */
static long vcpu_run(struct vcpu *v)
{
	long ret = 0;

	pthread_mutex_lock(&v->lock);
	if (v->in_run) {
		pthread_mutex_unlock(&v->lock);
		return -EBUSY;
	}
	if (!v->fn) {
		/* Nothing to run: the entry fails, as a vCPU with no valid state would. */
		v->run->exit_reason = KVM_EXIT_FAIL_ENTRY;
		v->run->fail_entry.hardware_entry_failure_reason = 0;
		v->run->fail_entry.cpu = 0;
		pthread_mutex_unlock(&v->lock);
		return 0;
	}
	if (v->guest_done) {
		v->run->exit_reason = KVM_EXIT_HLT;
		pthread_mutex_unlock(&v->lock);
		return 0;
	}
	v->in_run = true;
	if (!v->thread_started) {
		if (pthread_create(&v->thread, NULL, guest_thread, v)) {
			v->in_run = false;
			pthread_mutex_unlock(&v->lock);
			return -EAGAIN;
		}
		v->thread_started = true;
	}
	v->turn = VCPU_TURN_GUEST;
	pthread_cond_broadcast(&v->cond);
	while (v->turn != VCPU_TURN_HOST)
		pthread_cond_wait(&v->cond, &v->lock);
	ret = -v->exit_errno;
	v->in_run = false;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

/* Guest thread: hands the exit to KVM_RUN's caller and waits to be resumed. */
static void guest_exit(struct vcpu *v, uint32_t reason, int err)
{
	pthread_mutex_lock(&v->lock);
	v->run->exit_reason = reason;
	v->exit_errno = err;
	v->turn = VCPU_TURN_HOST;
	pthread_cond_broadcast(&v->cond);
	while (v->turn != VCPU_TURN_GUEST)
		pthread_cond_wait(&v->cond, &v->lock);
	if (v->dying) {
		pthread_mutex_unlock(&v->lock);
		pthread_exit(NULL);
	}
	pthread_mutex_unlock(&v->lock);
}

static void *guest_thread(void *arg)
{
	struct vcpu *v = arg;

	pthread_mutex_lock(&v->lock);
	while (v->turn != VCPU_TURN_GUEST)
		pthread_cond_wait(&v->cond, &v->lock);
	pthread_mutex_unlock(&v->lock);
	if (v->dying)
		return NULL;
	v->fn((struct gm_guest *)v, v->arg);
	/* Returning from the guest function halts the vCPU. */
	pthread_mutex_lock(&v->lock);
	v->guest_done = true;
	v->run->exit_reason = KVM_EXIT_HLT;
	v->exit_errno = 0;
	v->turn = VCPU_TURN_HOST;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

long vcpu_ioctl(struct vcpu *v, unsigned long request, unsigned long arg)
{
	if (v->host_fd >= 0) {
		if (request == KVM_RUN)
			return arg ? -EINVAL : host_vcpu_run(v);
		/* Registers, CPUID and the rest are the host vCPU's. */
		return host_ioctl(v->host_fd, request, arg);
	}
	switch (request) {
	case KVM_RUN:
		return arg ? -EINVAL : vcpu_run(v);
	default:
		/* x86's kvm_arch_vcpu_ioctl answers an unknown request with EINVAL. */
		return -EINVAL;
	}
}

int vcpu_mmap(struct vcpu *v, void *addr, size_t len, int prot, int flags, int64_t off, void **out)
{
	int ret = hostmap_check_generic(addr, len, prot, flags, off);
	void *p;

	if (ret)
		return ret;
	/* vCPU fds live on the noexec anonymous-inode mount. */
	if (prot & PROT_EXEC)
		return -EPERM;
	/* The run area is the memfd's size: pages past it raise SIGBUS, as the kernel's do. */
	p = mmap(addr, len, prot, flags, v->run_fd, off);
	if (p == MAP_FAILED)
		return -errno;
	if (flags & MAP_FIXED)
		hostmap_forget(p, len);
	*out = p;
	return 0;
}

GM_EXPORT int gm_vcpu_set_guest(int vcpu_fd, gm_guest_fn fn, void *arg)
{
	int ret;
	struct gm_object *obj = gm_file_get_typed(vcpu_fd, GM_FILE_VCPU, &ret);
	struct vcpu *v;

	if (!obj)
		return ret;
	v = gm_container_of(obj, struct vcpu, obj);
	pthread_mutex_lock(&v->lock);
	/* A hardware vCPU runs real code, not guest functions; one guest per vCPU, before it runs. */
	if (!fn || v->host_fd >= 0) {
		ret = -EINVAL;
	} else if (v->thread_started) {
		ret = -EBUSY;
	} else {
		v->fn = fn;
		v->arg = arg;
		ret = 0;
	}
	pthread_mutex_unlock(&v->lock);
	gm_object_put(obj);
	return ret;
}

GM_EXPORT int gm_vcpu_get_ucall(int vcpu_fd, struct gm_ucall *uc)
{
	int ret;
	struct gm_object *obj = gm_file_get_typed(vcpu_fd, GM_FILE_VCPU, &ret);
	struct gm_ucall out = { 0 };
	struct vcpu *v;

	if (!obj)
		return ret;
	v = gm_container_of(obj, struct vcpu, obj);
	pthread_mutex_lock(&v->lock);
	if (v->turn == VCPU_TURN_HOST && v->run->exit_reason == KVM_EXIT_IO &&
	    v->run->io.port == GM_UCALL_PORT)
		out = v->ucall;
	pthread_mutex_unlock(&v->lock);
	gm_object_put(obj);
	return gm_copy_to_user(uc, &out, sizeof(out));
}

/* ---- guest side: the fault path ---- */

enum fault_result { FAULT_MAPPED, FAULT_EXIT_MEMORY, FAULT_EXIT_MMIO };

/* The largest leaf the folio, the slot's alignment and uniform attributes allow. */
static enum mmu_level gmem_max_level(struct gmem *g, const struct memslot_view *s, gfn_t gfn,
				     pgoff_t index, uint64_t attrs)
{
	for (int l = (g->folio_shift - GM_PAGE_SHIFT) / 9; l > 0; l--) {
		uint64_t n = 1ULL << (9 * l);
		gfn_t gbase = gfn & ~(n - 1);
		pgoff_t ibase = index & ~(n - 1);
		uint64_t uniform;

		if ((gfn & (n - 1)) != (index & (n - 1)))
			continue;
		if (gbase < s->base_gfn || gbase + n > s->base_gfn + s->npages)
			continue;
		/* A folio split to 4 KiB pages is mapped by 4 KiB leaves. */
		if (backing_is_split(&g->backing, ibase << GM_PAGE_SHIFT))
			continue;
		if (!attr_uniform(&g->attrs, ibase, ibase + n, &uniform) || uniform != attrs)
			continue;
		return (enum mmu_level)l;
	}
	return MMU_LEVEL_4K;
}

static void prepare_memory_fault(struct vcpu *v, gpa_t gpa, bool private)
{
	v->run->memory_fault.flags = private ? KVM_MEMORY_EXIT_FLAG_PRIVATE : 0;
	v->run->memory_fault.gpa = gpa & ~(GM_PAGE_SIZE - 1);
	v->run->memory_fault.size = GM_PAGE_SIZE;
}

/* Maps a page of the file, private or shared, under the file's lock. */
static enum fault_result fault_gmem(struct vcpu *v, const struct memslot_view *s, gfn_t gfn,
				    bool private, bool want_private_attr, uint64_t seq)
{
	struct gmem *g = s->gmem;
	pgoff_t index = s->pgoff + (gfn - s->base_gfn);
	uint64_t attrs, private_attr;
	enum mmu_level level;
	char *hva;
	int ret;

	pthread_rwlock_rdlock(&g->invalidate_lock);
	attrs = attr_get(&g->attrs, index, NULL);
	private_attr = vm_has_private_mem(v->vm) ? (attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE) : 0;
	if (want_private_attr != !!private_attr) {
		/* A conversion ran since the decision: decide again. */
		pthread_rwlock_unlock(&g->invalidate_lock);
		return FAULT_MAPPED;
	}
	level = gmem_max_level(g, s, gfn, index, attrs);
	hva = backing_addr(&g->backing, (index & ~((1ULL << (9 * level)) - 1)) << GM_PAGE_SHIFT);
	ret = mmu_map(&v->vm->mmu, gfn & ~((1ULL << (9 * level)) - 1), level, hva, private, true, seq);
	pthread_rwlock_unlock(&g->invalidate_lock);
	(void)ret; /* -EAGAIN: an invalidation raced; the access retries either way */
	return FAULT_MAPPED;
}

static enum fault_result fault_hva(struct vcpu *v, const struct memslot_view *s, gfn_t gfn,
				   bool write, uint64_t seq)
{
	char *hva = (char *)(uintptr_t)(s->userspace_addr + ((gfn - s->base_gfn) << GM_PAGE_SHIFT));
	bool readonly = s->flags & KVM_MEM_READONLY;

	/* A write to a read-only slot is emulated as MMIO. */
	if (write && readonly)
		return FAULT_EXIT_MMIO;
	/* Fault the host page in as get_user_pages would; a bad address is a memory fault. */
	if (madvise(hva, GM_PAGE_SIZE, readonly ? MADV_POPULATE_READ : MADV_POPULATE_WRITE) < 0) {
		prepare_memory_fault(v, gfn << GM_PAGE_SHIFT, false);
		return FAULT_EXIT_MEMORY;
	}
	mmu_map(&v->vm->mmu, gfn, MMU_LEVEL_4K, hva, false, !readonly, seq);
	return FAULT_MAPPED;
}

static enum fault_result vcpu_fault(struct vcpu *v, gpa_t gpa, bool write)
{
	gfn_t gfn = gpa >> GM_PAGE_SHIFT;
	struct memslot_view s;
	enum fault_result r;
	bool private_vm = vm_has_private_mem(v->vm);
	bool private, is_private = false;
	uint64_t seq;

	atomic_fetch_add(&v->vm->mmu.faults, 1);
	seq = mmu_seq_begin(&v->vm->mmu);
	if (!memslot_lookup(v->vm, gfn, &s)) {
		/* No slot: a private access is a memory fault, a shared one is MMIO. */
		if (private_vm && v->access == GM_ACCESS_PRIVATE) {
			prepare_memory_fault(v, gpa, true);
			return FAULT_EXIT_MEMORY;
		}
		return FAULT_EXIT_MMIO;
	}
	if (private_vm && s.has_gmem && s.gmem) {
		pgoff_t index = s.pgoff + (gfn - s.base_gfn);

		pthread_rwlock_rdlock(&s.gmem->invalidate_lock);
		is_private = attr_get(&s.gmem->attrs, index, NULL) & KVM_MEMORY_ATTRIBUTE_PRIVATE;
		pthread_rwlock_unlock(&s.gmem->invalidate_lock);
	}
	private = private_vm && (v->access == GM_ACCESS_AUTO ? is_private
							     : v->access == GM_ACCESS_PRIVATE);
	if (private != is_private || (private && !s.gmem)) {
		/* The guest wants the other kind, or the file behind the slot is gone. */
		prepare_memory_fault(v, gpa, private);
		r = FAULT_EXIT_MEMORY;
	} else if (private || s.gmem_only) {
		if (!s.gmem) {
			prepare_memory_fault(v, gpa, private);
			r = FAULT_EXIT_MEMORY;
		} else {
			r = fault_gmem(v, &s, gfn, private, is_private, seq);
		}
	} else {
		r = fault_hva(v, &s, gfn, write, seq);
	}
	memslot_view_put(&s);
	return r;
}

/* ---- guest side: accesses ---- */

/* Whether a leaf allows this access: present, writable for a write, of the asked kind. */
static inline bool spte_allows(const struct vcpu *v, uint64_t spte, bool write)
{
	return (spte & v->need_mask[write]) == v->need_bits[write];
}

static inline char *spte_addr(uint64_t spte, gpa_t gpa)
{
	return (char *)(uintptr_t)(spte & ~SPTE_FLAGS) + (gpa & (GM_PAGE_SIZE - 1));
}

/* The cached leaf for gpa if it is valid in this MMU generation and allows the access, else 0. */
static inline uint64_t translate_cached(struct vcpu *v, gpa_t gpa, bool write)
{
	gfn_t gfn = gpa >> GM_PAGE_SHIFT;
	const struct vcpu_tlb_entry *t = &v->tlb[gfn % VCPU_TLB_ENTRIES];
	uint64_t gen = atomic_load_explicit(v->generation, memory_order_relaxed);

	if (t->gfn != gfn || t->generation != gen || !spte_allows(v, t->spte, write))
		return 0;
	return t->spte;
}

/* Walks the stage-2 and caches what it finds. Inside access_begin and an RCU section. */
static char *translate_walk(struct vcpu *v, gpa_t gpa, bool write)
{
	gfn_t gfn = gpa >> GM_PAGE_SHIFT;
	uint64_t gen = atomic_load_explicit(&v->mmu->generation, memory_order_acquire);
	enum mmu_level level;
	uint64_t spte = mmu_lookup(v->mmu, gfn, &level);

	if (!spte)
		return NULL;
	spte = (uint64_t)(uintptr_t)spte_hva(spte, level, gfn) | (spte & SPTE_FLAGS);
	v->tlb[gfn % VCPU_TLB_ENTRIES] = (struct vcpu_tlb_entry){ gfn, gen, spte };
	return spte_allows(v, spte, write) ? spte_addr(spte, gpa) : NULL;
}

/* An MMIO exit for up to 8 bytes; a read gets the data userspace put in kvm_run. */
static void guest_mmio(struct vcpu *v, gpa_t gpa, void *buf, size_t len, bool write)
{
	v->run->mmio.phys_addr = gpa;
	v->run->mmio.len = (uint32_t)len;
	v->run->mmio.is_write = write;
	memset(v->run->mmio.data, 0, sizeof(v->run->mmio.data));
	if (write)
		memcpy(v->run->mmio.data, buf, len);
	guest_exit(v, KVM_EXIT_MMIO, 0);
	if (!write)
		memcpy(buf, v->run->mmio.data, len);
}

/* Copies one piece that stays inside a page; loops through faults and exits until done. */
static void guest_access_page(struct vcpu *v, gpa_t gpa, void *buf, size_t len, bool write)
{
	for (;;) {
		char *hva;

		uint64_t spte;

		access_begin(v);
		spte = translate_cached(v, gpa, write);
		hva = spte ? spte_addr(spte, gpa) : NULL;
		if (!hva) {
			gm_rcu_read_lock();
			hva = translate_walk(v, gpa, write);
			gm_rcu_read_unlock();
		}
		if (hva) {
			if (write)
				memcpy(hva, buf, len);
			else
				memcpy(buf, hva, len);
			access_end(v);
			return;
		}
		access_end(v);
		switch (vcpu_fault(v, gpa, write)) {
		case FAULT_MAPPED:
			break;
		case FAULT_EXIT_MEMORY:
			/* KVM_RUN fails with EFAULT; the access is retried when the guest resumes. */
			guest_exit(v, KVM_EXIT_MEMORY_FAULT, EFAULT);
			break;
		case FAULT_EXIT_MMIO:
			for (size_t done = 0; done < len; done += 8) {
				size_t n = len - done < 8 ? len - done : 8;

				guest_mmio(v, gpa + done, (char *)buf + done, n, write);
			}
			return;
		}
	}
}

static void guest_access(struct vcpu *v, gpa_t gpa, void *buf, size_t len, bool write)
{
	while (len) {
		size_t n = GM_PAGE_SIZE - (gpa & (GM_PAGE_SIZE - 1));

		if (n > len)
			n = len;
		guest_access_page(v, gpa, buf, n, write);
		gpa += n;
		buf = (char *)buf + n;
		len -= n;
	}
}

GM_EXPORT void gm_guest_set_access(struct gm_guest *guest, enum gm_access access)
{
	struct vcpu *v = guest_vcpu(guest);

	v->access = access;
	vcpu_set_need(v);
}

/* The full path of a typed access, kept out of line so the hit path stays a leaf. */
static __attribute__((noinline)) void guest_access_slow(struct vcpu *v, gpa_t gpa, void *buf,
							size_t len, bool write)
{
	guest_access(v, gpa, buf, len, write);
}

/*
 * Typed accesses: a cached translation and one load or store of a constant
 * size; anything else (a miss, a page boundary, an exit) takes the full path.
 */
#define GUEST_RW(bits)                                                                      \
	typedef uint##bits##_t __attribute__((may_alias, aligned(1))) guest_u##bits;         \
	GM_EXPORT uint##bits##_t gm_guest_read##bits(struct gm_guest *guest, uint64_t gpa)  \
	{                                                                                   \
		struct vcpu *v = guest_vcpu(guest);                                         \
		uint##bits##_t val;                                                         \
		if (__builtin_expect((gpa & (GM_PAGE_SIZE - 1)) <= GM_PAGE_SIZE - sizeof(val), 1)) { \
			access_begin(v);                                                    \
			uint64_t spte = translate_cached(v, gpa, false);                    \
			if (__builtin_expect(spte != 0, 1)) {                               \
				val = *(const guest_u##bits *)spte_addr(spte, gpa);         \
				access_end(v);                                              \
				return val;                                                 \
			}                                                                   \
			access_end(v);                                                      \
		}                                                                           \
		guest_access_slow(v, gpa, &val, sizeof(val), false);                        \
		return val;                                                                 \
	}                                                                                   \
	GM_EXPORT void gm_guest_write##bits(struct gm_guest *guest, uint64_t gpa,           \
					    uint##bits##_t val)                             \
	{                                                                                   \
		struct vcpu *v = guest_vcpu(guest);                                         \
		if (__builtin_expect((gpa & (GM_PAGE_SIZE - 1)) <= GM_PAGE_SIZE - sizeof(val), 1)) { \
			access_begin(v);                                                    \
			uint64_t spte = translate_cached(v, gpa, true);                     \
			if (__builtin_expect(spte != 0, 1)) {                               \
				*(guest_u##bits *)spte_addr(spte, gpa) = val;               \
				access_end(v);                                              \
				return;                                                     \
			}                                                                   \
			access_end(v);                                                      \
		}                                                                           \
		guest_access_slow(v, gpa, &val, sizeof(val), true);                         \
	}
GUEST_RW(8)
GUEST_RW(16)
GUEST_RW(32)
GUEST_RW(64)

GM_EXPORT void gm_guest_read(struct gm_guest *guest, void *dst, uint64_t gpa, size_t len)
{
	guest_access(guest_vcpu(guest), gpa, dst, len, false);
}

GM_EXPORT void gm_guest_write(struct gm_guest *guest, uint64_t gpa, const void *src, size_t len)
{
	guest_access(guest_vcpu(guest), gpa, (void *)src, len, true);
}

GM_EXPORT void gm_guest_fetch(struct gm_guest *guest, void *dst, uint64_t gpa, size_t len)
{
	guest_access(guest_vcpu(guest), gpa, dst, len, false);
}

GM_EXPORT uint64_t gm_guest_hypercall(struct gm_guest *guest, uint64_t nr, uint64_t a0,
				      uint64_t a1, uint64_t a2)
{
	struct vcpu *v = guest_vcpu(guest);
	uint64_t mask = atomic_load(&v->vm->exit_hypercall_mask);

	if (nr != KVM_HC_MAP_GPA_RANGE || !(mask & (1ULL << KVM_HC_MAP_GPA_RANGE)))
		return (uint64_t)-KVM_ENOSYS;
	/* KVM checks the range itself; the attributes go to userspace unchecked. */
	if (!GM_ALIGNED(a0, GM_PAGE_SIZE) || !a1 ||
	    (a0 >> GM_PAGE_SHIFT) + a1 <= (a0 >> GM_PAGE_SHIFT))
		return (uint64_t)-KVM_EINVAL;
	v->run->hypercall.nr = nr;
	memset(v->run->hypercall.args, 0, sizeof(v->run->hypercall.args));
	v->run->hypercall.args[0] = a0;
	v->run->hypercall.args[1] = a1;
	v->run->hypercall.args[2] = a2;
	v->run->hypercall.ret = 0;
	v->run->hypercall.flags = KVM_EXIT_HYPERCALL_LONG_MODE;
	guest_exit(v, KVM_EXIT_HYPERCALL, 0);
	return v->run->hypercall.ret;
}

static void guest_ucall_exit(struct vcpu *v)
{
	/* As the x86 selftests' ucall: a one-byte IN from the ucall port. */
	v->run->io.direction = KVM_EXIT_IO_IN;
	v->run->io.size = 1;
	v->run->io.port = GM_UCALL_PORT;
	v->run->io.count = 1;
	v->run->io.data_offset = GM_PAGE_SIZE; /* the PIO page */
	guest_exit(v, KVM_EXIT_IO, 0);
}

GM_EXPORT void gm_guest_ucall(struct gm_guest *guest, uint64_t cmd, int nargs, ...)
{
	struct vcpu *v = guest_vcpu(guest);
	va_list ap;

	memset(&v->ucall, 0, sizeof(v->ucall));
	v->ucall.cmd = cmd;
	va_start(ap, nargs);
	for (int i = 0; i < nargs && i < GM_UCALL_MAX_ARGS; i++)
		v->ucall.args[i] = va_arg(ap, uint64_t);
	va_end(ap);
	guest_ucall_exit(v);
}

GM_EXPORT void gm_guest_abort(struct gm_guest *guest, const char *file, int line, const char *what)
{
	struct vcpu *v = guest_vcpu(guest);

	memset(&v->ucall, 0, sizeof(v->ucall));
	v->ucall.cmd = GM_UCALL_ABORT;
	v->ucall.args[0] = (uint64_t)line;
	snprintf(v->ucall.msg, sizeof(v->ucall.msg), "%s:%d: %s", file, line, what);
	/* An aborted guest never continues: each KVM_RUN reports the abort again. */
	for (;;)
		guest_ucall_exit(v);
}
