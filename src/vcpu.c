/* vCPUs: the object, KVM_RUN and its exits; on the soft backend KVM_RUN runs the guest function. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gmem.h"
#include "vcpu.h"

static void vcpu_release(struct gm_object *obj)
{
	struct vcpu *v = gm_container_of(obj, struct vcpu, obj);

	/* Invalidations stop waiting for this vCPU. */
	mmu_vcpu_leave(&v->mmu);
	/* A guest stopped at an exit holds nothing of the library's but its stack. */
	fiber_destroy(&v->fiber);
	if (v->run)
		munmap(v->run, VCPU_MMAP_PAGES * GM_PAGE_SIZE);
	if (v->host.fd >= 0)
		close(v->host.fd);
	pthread_mutex_destroy(&v->lock);
	x86_state_destroy(&v->x86);
	atomic_fetch_sub(&v->vm->nr_vcpus, 1);
	/*
	 * A KVM vCPU lives as long as its VM, whatever becomes of its fd: its id
	 * stays taken (EEXIST) and SNP's LAUNCH_FINISH still measures its VMSA.
	 * Only a creation that failed gives the id back.
	 */
	if (!v->created) {
		pthread_mutex_lock(&v->vm->slots.lock);
		v->vm->vcpu_ids[v->id / 64] &= ~(1ULL << (v->id % 64));
		pthread_mutex_unlock(&v->vm->slots.lock);
	}
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
	pthread_mutex_lock(&vm->slots.lock);
	if (vm->vcpu_ids[id / 64] & (1ULL << (id % 64))) {
		pthread_mutex_unlock(&vm->slots.lock);
		gm_free(v);
		return -EEXIST;
	}
	vm->vcpu_ids[id / 64] |= 1ULL << (id % 64);
	vm->created_vcpus = true;
	x86_state_init(&v->x86, id, vm->irqchip);
	pthread_mutex_unlock(&vm->slots.lock);
	gm_object_init(&v->obj, vcpu_release);
	v->id = id;
	v->host.fd = -1;
	pthread_mutex_init(&v->lock, NULL);
	vm_get(vm);
	v->vm = vm;
	v->private_vm = vm_has_private_mem(vm);
	atomic_fetch_add(&vm->nr_vcpus, 1);
	mmu_vcpu_join(&vm->mmu, &v->mmu);
	v->run = MAP_FAILED;
	/* The vCPU fd is close-on-exec, as the kernel's. */
	fd = gm_file_install(GM_FILE_VCPU, &v->obj, "kvm-vcpu", true);
	if (fd < 0)
		goto err;
	if (vm->host_fd >= 0) {
		/* kvm backend: the host's vCPU and its run area; the handle stays empty. */
		v->host.fd = gm_fd_hide(ioctl(vm->host_fd, KVM_CREATE_VCPU, id));
		if (v->host.fd < 0 ||
		    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
			goto err_close;
		v->run_fd = v->host.fd;
	} else {
		/*
		 * The run area lives in the handle memfd, so gm_mmap of the fd shares
		 * it. Its size is sealed: a plain ftruncate would make the next
		 * KVM_RUN fault. Writes stay open, as the VMM's mapping must be.
		 */
		if (ftruncate(fd, VCPU_MMAP_PAGES * GM_PAGE_SIZE) < 0 ||
		    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
			goto err_close;
		v->run_fd = fd;
	}
	v->run = mmap(NULL, VCPU_MMAP_PAGES * GM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->run_fd, 0);
	if (v->run == MAP_FAILED)
		goto err_close;
	v->host.run = v->run;
	v->created = true;
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

/* The guest's stack: as large as a thread's default, reserved, touched pages only cost memory. */
#define VCPU_STACK_SIZE (8ULL << 20)

/* The bottom of the guest's stack: the guest function, then a halt for good. */
static void guest_main(void *arg)
{
	struct vcpu *v = arg;

	v->fn((struct gm_guest *)v, v->arg);
	v->guest_done = true;
	v->run->exit_reason = KVM_EXIT_HLT;
	v->exit_errno = 0;
	fiber_exit(&v->fiber);
}

/*
 * KVM_RUN of a soft vCPU without a guest function. With no memslot at all,
 * KVM's first fetch (at the reset vector) finds no memory and fails to
 * emulate it: an internal error. Otherwise the vCPU would run x86 code in
 * guest memory, which soft vCPUs cannot: the entry fails, saying so.
 */
static void vcpu_run_no_guest(struct vcpu *v)
{
	if (memslots_empty(&v->vm->slots, 0)) {
		v->ran = true;
		v->run->exit_reason = KVM_EXIT_INTERNAL_ERROR;
		v->run->internal.suberror = KVM_INTERNAL_ERROR_EMULATION;
		v->run->internal.ndata = 0;
		return;
	}
	v->run->exit_reason = KVM_EXIT_FAIL_ENTRY;
	v->run->fail_entry.hardware_entry_failure_reason = GM_FAIL_ENTRY_NO_GUEST;
	v->run->fail_entry.cpu = 0;
}

/* Whether KVM_RUN may enter the guest; else the run area holds the exit to return at once. */
static long vcpu_run_check(struct vcpu *v)
{
	if (!v->fn) {
		vcpu_run_no_guest(v);
		return 0;
	}
	if (v->guest_done) {
		v->run->exit_reason = KVM_EXIT_HLT;
		return 0;
	}
	/* As the kernel, which leaves exit_reason as it was. */
	if (__atomic_load_n(&v->run->immediate_exit, __ATOMIC_RELAXED))
		return -EINTR;
	if (!v->started) {
		if (fiber_init(&v->fiber, VCPU_STACK_SIZE, guest_main, v))
			return -ENOMEM;
		v->started = true;
	}
	v->ran = true;
	return 1;
}

/* Runs the guest on the calling thread until its next exit. */
static long vcpu_run(struct vcpu *v)
{
	long ret;

	pthread_mutex_lock(&v->lock);
	if (v->in_run) {
		pthread_mutex_unlock(&v->lock);
		return -EBUSY;
	}
	ret = vcpu_run_check(v);
	if (ret <= 0) {
		pthread_mutex_unlock(&v->lock);
		return ret;
	}
	v->in_run = true;
	pthread_mutex_unlock(&v->lock);
	fiber_resume(&v->fiber);
	pthread_mutex_lock(&v->lock);
	v->in_run = false;
	ret = -v->exit_errno;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

/* On the guest's stack: back to KVM_RUN's frame, until the next KVM_RUN resumes here. */
void vcpu_exit(struct vcpu *v, uint32_t reason, int err)
{
	v->run->exit_reason = reason;
	v->exit_errno = err;
	fiber_yield(&v->fiber);
}

/*
 * An MMIO exit of the host's vCPU: a vCPU that ran while its host slot was
 * being re-split gets its access done on the right memory (0: the guest goes
 * on, as if it had waited); one at a private GPA nothing serves is the
 * kernel's private memory fault (-EFAULT, kept to be done on the next
 * KVM_RUN, as the kernel's faulting instruction runs again); other MMIO is
 * userspace's (1).
 */
static long vcpu_host_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->host.run;

	switch (memslots_host_mmio(&v->vm->slots, run)) {
	case HOST_MMIO_DONE:
		v->host_fault_pending = false;
		return 0;
	case HOST_MMIO_PRIVATE_FAULT:
		v->host_fault_pending = true;
		v->host_fault_mmio = run->mmio;
		run->exit_reason = KVM_EXIT_MEMORY_FAULT;
		memset(&run->memory_fault, 0, sizeof(run->memory_fault));
		run->memory_fault.flags = KVM_MEMORY_EXIT_FLAG_PRIVATE;
		run->memory_fault.gpa = v->host_fault_mmio.phys_addr & ~(GM_PAGE_SIZE - 1);
		run->memory_fault.size = GM_PAGE_SIZE;
		return -EFAULT;
	default:
		v->host_fault_pending = false;
		return 1;
	}
}

static long vcpu_host_run(struct vcpu *v)
{
	struct kvm_run *run = v->host.run;
	long ret;

	if (v->host_fault_pending) {
		run->exit_reason = KVM_EXIT_MMIO;
		run->mmio = v->host_fault_mmio;
		ret = vcpu_host_mmio(v);
		if (ret)
			return ret < 0 ? ret : 0;
	}
	for (;;) {
		ret = host_vcpu_run(&v->host, atomic_load(&v->vm->exit_hypercall_mask));
		if (ret || run->exit_reason != KVM_EXIT_MMIO)
			return ret;
		ret = vcpu_host_mmio(v);
		if (ret)
			return ret < 0 ? ret : 0;
	}
}

long vcpu_ioctl(struct vcpu *v, unsigned long request, unsigned long arg)
{
	long ret;

	if (v->host.fd >= 0) {
		if (request == KVM_RUN)
			return arg ? -EINVAL : vcpu_host_run(v);
		/* Registers, CPUID and the rest are the host vCPU's. */
		return host_ioctl(v->host.fd, request, arg);
	}
	if (request == KVM_RUN)
		return arg ? -EINVAL : vcpu_run(v);
	pthread_mutex_lock(&v->lock);
	ret = x86_state_ioctl(&v->x86, request, arg, v->ran);
	pthread_mutex_unlock(&v->lock);
	/* x86's kvm_arch_vcpu_ioctl answers an unknown request with EINVAL. */
	return ret == -ENOTTY ? -EINVAL : ret;
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
	if (!fn || v->host.fd >= 0) {
		ret = -EINVAL;
	} else if (v->started) {
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
	if (!v->in_run && v->run->exit_reason == KVM_EXIT_IO &&
	    v->run->io.port == GM_UCALL_PORT)
		out = v->ucall;
	pthread_mutex_unlock(&v->lock);
	gm_object_put(obj);
	return gm_copy_to_user(uc, &out, sizeof(out));
}

/* ---- exits ---- */

void vcpu_exit_memory_fault(struct vcpu *v, gpa_t gpa, bool private)
{
	v->run->memory_fault.flags = private ? KVM_MEMORY_EXIT_FLAG_PRIVATE : 0;
	v->run->memory_fault.gpa = gpa & ~(GM_PAGE_SIZE - 1);
	v->run->memory_fault.size = GM_PAGE_SIZE;
	/* The access is retried when the guest resumes. */
	vcpu_exit(v, KVM_EXIT_MEMORY_FAULT, EFAULT);
}

void vcpu_exit_mmio(struct vcpu *v, gpa_t gpa, void *buf, size_t len, bool write)
{
	v->run->mmio.phys_addr = gpa;
	v->run->mmio.len = (uint32_t)len;
	v->run->mmio.is_write = write;
	memset(v->run->mmio.data, 0, sizeof(v->run->mmio.data));
	if (write)
		memcpy(v->run->mmio.data, buf, len);
	vcpu_exit(v, KVM_EXIT_MMIO, 0);
	if (!write)
		memcpy(buf, v->run->mmio.data, len);
}

uint64_t vcpu_exit_hypercall(struct vcpu *v, uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2)
{
	v->run->hypercall.nr = nr;
	memset(v->run->hypercall.args, 0, sizeof(v->run->hypercall.args));
	v->run->hypercall.args[0] = a0;
	v->run->hypercall.args[1] = a1;
	v->run->hypercall.args[2] = a2;
	v->run->hypercall.ret = 0;
	v->run->hypercall.flags = KVM_EXIT_HYPERCALL_LONG_MODE;
	vcpu_exit(v, KVM_EXIT_HYPERCALL, 0);
	return v->run->hypercall.ret;
}

void vcpu_exit_ucall(struct vcpu *v)
{
	/* As the x86 selftests' ucall: a one-byte IN from the ucall port. */
	v->run->io.direction = KVM_EXIT_IO_IN;
	v->run->io.size = 1;
	v->run->io.port = GM_UCALL_PORT;
	v->run->io.count = 1;
	v->run->io.data_offset = GM_PAGE_SIZE; /* the PIO page */
	vcpu_exit(v, KVM_EXIT_IO, 0);
}
