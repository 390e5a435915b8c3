/* The VM: memslots, the stage-2, vCPUs and the VM ioctls, as in virt/kvm/kvm_main.c. */
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "attr_mode.h"
#include "gmem.h"
#include "kvm/host.h"
#include "vm.h"
#include "x86_state.h"

static atomic_ullong live_vms;

static void vm_release(struct gm_object *obj)
{
	struct vm *vm = gm_container_of(obj, struct vm, obj);
	struct vm_platform *platform = atomic_load(&vm->platform);

	if (platform)
		platform->release(platform);
	memslots_destroy(&vm->slots);
	attr_map_destroy(&vm->mem_attrs);
	pthread_rwlock_destroy(&vm->attrs_lock);
	/* call_rcu frees of retired tables must not outlive the tables' owner. */
	gm_rcu_barrier();
	mmu_destroy(&vm->mmu);
	if (vm->host_fd >= 0)
		close(vm->host_fd);
	gm_free(vm);
	atomic_fetch_sub(&live_vms, 1);
}

/* The backend a VM without a backend bit gets: GMEM_BACKEND, else soft. */
static unsigned long default_backend(void)
{
	const char *env = getenv("GMEM_BACKEND");

	if (env && !strcmp(env, "kvm"))
		return GM_VM_BACKEND_KVM;
	if (env && !strcmp(env, "auto") && host_kvm_fd() >= 0)
		return GM_VM_BACKEND_KVM;
	return GM_VM_BACKEND_SOFT;
}

bool vm_default_backend_is_kvm(void)
{
	return default_backend() == GM_VM_BACKEND_KVM && host_kvm_fd() >= 0;
}

static bool default_is_auto(void)
{
	const char *env = getenv("GMEM_BACKEND");

	return env && !strcmp(env, "auto");
}

/* GPAs are 64-bit: the per-VM map covers every gfn a KVM_SET_MEMORY_ATTRIBUTES can name. */
#define VM_ATTR_GFNS (1ULL << (64 - GM_PAGE_SHIFT))

/* The mode is fixed with the first VM; every VM starts all shared, as the kernel's empty xarray. */
static int vm_attrs_init(struct vm *vm)
{
	int ret = pthread_rwlock_init(&vm->attrs_lock, NULL);

	if (ret)
		return -ret;
	vm->attrs_in_vm = attr_mode_latch();
	ret = attr_map_init(&vm->mem_attrs, VM_ATTR_GFNS, 0);
	if (ret)
		pthread_rwlock_destroy(&vm->attrs_lock);
	return ret;
}

/*
 * KVM_CAP_VM_TYPES: DEFAULT, SW_PROTECTED and SNP on both backends. With
 * per-VM attributes the kvm backend splits its host slots by attribute
 * (memslots_split_by), so shared GPAs come from userspace_addr there too.
 */
static unsigned long vm_types(void)
{
	/* SNP VMs are always soft (the software platform), whatever the default backend. */
	return (1UL << KVM_X86_DEFAULT_VM) | (1UL << KVM_X86_SW_PROTECTED_VM) |
	       (1UL << KVM_X86_SNP_VM);
}

int vm_create(unsigned long type)
{
	unsigned long backend = type & (GM_VM_BACKEND_SOFT | GM_VM_BACKEND_KVM);
	unsigned long type_bits = backend;
	struct vm *vm;
	int fd, ret;

	type &= ~(GM_VM_BACKEND_SOFT | GM_VM_BACKEND_KVM);
	if ((type != KVM_X86_DEFAULT_VM && type != KVM_X86_SW_PROTECTED_VM &&
	     type != KVM_X86_SNP_VM) ||
	    backend == (GM_VM_BACKEND_SOFT | GM_VM_BACKEND_KVM))
		return -EINVAL;
	if (!backend)
		backend = default_backend();
	/* The software SNP platform runs soft vCPUs only (docs/platform.md). */
	if (type == KVM_X86_SNP_VM) {
		if (backend == GM_VM_BACKEND_KVM && (type_bits & GM_VM_BACKEND_KVM))
			return -EINVAL;
		backend = GM_VM_BACKEND_SOFT;
	}
	vm = gm_zalloc(sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->host_fd = -1;
	if (backend == GM_VM_BACKEND_KVM) {
		vm->host_fd = host_vm_create();
		/* GMEM_BACKEND=auto settles for software vCPUs; an explicit request fails. */
		if (vm->host_fd < 0 && !(type_bits & GM_VM_BACKEND_KVM) && default_is_auto()) {
			vm->host_fd = -1;
		} else if (vm->host_fd < 0) {
			ret = vm->host_fd;
			gm_free(vm);
			return ret;
		}
	}
	ret = mmu_init(&vm->mmu);
	if (ret)
		goto err_host;
	ret = vm_attrs_init(vm);
	if (ret)
		goto err_mmu;
	if (!(vm_types() & (1UL << type))) {
		ret = -EINVAL;
		goto err_attrs;
	}
	gm_object_init(&vm->obj, vm_release);
	vm->type = type;
	memslots_init(&vm->slots, &vm->mmu, &vm->obj, vm->host_fd);
	atomic_fetch_add(&live_vms, 1);
	/* The host VM serves shared GPAs from userspace_addr only in host slots of their own. */
	if (vm->host_fd >= 0 && vm->attrs_in_vm) {
		ret = memslots_split_by(&vm->slots, &vm->mem_attrs);
		if (ret) {
			vm_put(vm);
			return ret;
		}
	}
	/* The kernel's VM fd is close-on-exec. */
	fd = gm_file_install(GM_FILE_VM, &vm->obj, "kvm-vm", true);
	if (fd < 0)
		vm_put(vm);
	return fd;

err_attrs:
	attr_map_destroy(&vm->mem_attrs);
	pthread_rwlock_destroy(&vm->attrs_lock);
err_mmu:
	mmu_destroy(&vm->mmu);
err_host:
	if (vm->host_fd >= 0)
		close(vm->host_fd);
	gm_free(vm);
	return ret;
}

void vm_get(struct vm *vm)
{
	gm_object_get(&vm->obj);
}

void vm_put(struct vm *vm)
{
	gm_object_put(&vm->obj);
}

unsigned long vm_type(const struct vm *vm)
{
	return vm->type;
}

bool vm_has_private_mem(const struct vm *vm)
{
	return vm->type == KVM_X86_SW_PROTECTED_VM || vm->type == KVM_X86_SNP_VM;
}

bool vm_attrs_in_vm(const struct vm *vm)
{
	return vm->attrs_in_vm;
}

bool vm_gfn_is_private(struct vm *vm, gfn_t gfn)
{
	uint64_t attrs;

	pthread_rwlock_rdlock(&vm->attrs_lock);
	attrs = attr_get(&vm->mem_attrs, gfn, NULL);
	pthread_rwlock_unlock(&vm->attrs_lock);
	return attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE;
}

bool vm_attrs_uniform(struct vm *vm, gfn_t start, gfn_t end, uint64_t attrs)
{
	uint64_t found;
	bool uniform;

	pthread_rwlock_rdlock(&vm->attrs_lock);
	uniform = attr_uniform(&vm->mem_attrs, start, end, &found);
	pthread_rwlock_unlock(&vm->attrs_lock);
	return uniform && found == attrs;
}

/* kvm_supported_mem_attributes: PRIVATE for a VM with private memory in the per-VM mode. */
static uint64_t vm_supported_attrs(const struct vm *vm)
{
	if (!vm->attrs_in_vm || !vm_has_private_mem(vm))
		return 0;
	return KVM_MEMORY_ATTRIBUTE_PRIVATE;
}

uint64_t vm_count(void)
{
	return atomic_load(&live_vms);
}

/* KVM_CAP_NR_VCPUS: the online CPUs, at most KVM_CAP_MAX_VCPUS. */
static long vm_recommended_vcpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > GM_MAX_VCPU_IDS ? GM_MAX_VCPU_IDS : n;
}

long vm_check_extension(struct vm *vm, long cap)
{
	switch (cap) {
	case KVM_CAP_USER_MEMORY:
	case KVM_CAP_USER_MEMORY2:
	case KVM_CAP_MEMORY_FAULT_INFO:
	case KVM_CAP_IMMEDIATE_EXIT: /* soft vCPUs honour it; the kvm backend's host does */
	case KVM_CAP_ENABLE_CAP_VM:
	case KVM_CAP_GUEST_MEMFD:
		return 1;
	case KVM_CAP_NR_MEMSLOTS:
		return 32764;
	/* x86 state of soft vCPUs (src/x86_state.c); the kvm backend's host has it too. */
	case KVM_CAP_IRQCHIP:
	case KVM_CAP_SET_TSS_ADDR:
	case KVM_CAP_SET_IDENTITY_MAP_ADDR:
	case KVM_CAP_EXT_CPUID:
	case KVM_CAP_MP_STATE:
	case KVM_CAP_GET_TSC_KHZ:
		return 1;
	case KVM_CAP_NR_VCPUS:
		return vm_recommended_vcpus();
	case KVM_CAP_MAX_VCPUS:
	case KVM_CAP_MAX_VCPU_ID:
		return GM_MAX_VCPU_IDS;
	case KVM_CAP_EXIT_HYPERCALL:
		return KVM_EXIT_HYPERCALL_VALID_MASK;
	case KVM_CAP_GUEST_MEMFD_FLAGS:
		return (long)gmem_supported_flags(vm && vm->attrs_in_vm && vm_has_private_mem(vm));
	case KVM_CAP_MEMORY_ATTRIBUTES:
		/*
		 * Per-VM attributes (kvm.vm_memory_attributes=1): what this VM can set;
		 * on the system fd, what a VM of the default backend can.
		 */
		if (!vm)
			return attr_mode_per_vm() ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
		return (long)vm_supported_attrs(vm);
	case KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES:
		/*
		 * Attributes live in the file (series v8): settable where the VM has
		 * private memory; for a CoCo type (SNP) only because its launch
		 * command takes a NULL source, populating in place.
		 */
		if (vm ? vm->attrs_in_vm : attr_mode_per_vm())
			return 0;
		return !vm || vm_has_private_mem(vm) ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
	case KVM_CAP_VM_TYPES:
		return (long)vm_types();
	default:
		return 0;
	}
}

static long vm_ioctl_create_guest_memfd(struct vm *vm, unsigned long arg)
{
	struct kvm_create_guest_memfd args;
	int ret = gm_copy_from_user(&args, (void *)arg, sizeof(args));
	struct gmem_vm owner = {
		.obj = &vm->obj, .slots_lock = &vm->slots.lock, .mmu = &vm->mmu,
		.host_fd = vm->host_fd, .private_mem = vm_has_private_mem(vm),
		.attrs_in_vm = vm->attrs_in_vm,
		.has_rmp = vm->type == KVM_X86_SNP_VM,
	};

	if (ret)
		return ret;
	/* reserved[] is not checked, as in 6.18. */
	return gmem_create(&owner, args.size, args.flags);
}

static long vm_ioctl_set_memory_region(struct vm *vm, unsigned long request, unsigned long arg)
{
	struct kvm_userspace_memory_region2 mem = { 0 };
	size_t size = request == KVM_SET_USER_MEMORY_REGION ? sizeof(struct kvm_userspace_memory_region)
							     : sizeof(mem);
	int ret = gm_copy_from_user(&mem, (void *)arg, size);

	if (ret)
		return ret;
	/* The v1 ioctl knows only these flags. */
	if (request == KVM_SET_USER_MEMORY_REGION &&
	    (mem.flags & ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY)))
		return -EINVAL;
	return memslot_set(&vm->slots, &mem);
}

/* Sets [start, end) to attrs and zaps the stage-2 there, so the guest faults again. */
static int vm_set_mem_attributes(struct vm *vm, gfn_t start, gfn_t end, uint64_t attrs)
{
	uint64_t cur;
	int ret = 0;

	memslots_host_let_vcpus_in(&vm->slots);
	/* slots_lock serialises the writers, so the map is stable to read under it. */
	pthread_mutex_lock(&vm->slots.lock);
	if (attr_uniform(&vm->mem_attrs, start, end, &cur) && cur == attrs)
		goto out;
	pthread_rwlock_wrlock(&vm->attrs_lock);
	ret = attr_reserve(&vm->mem_attrs);
	pthread_rwlock_unlock(&vm->attrs_lock);
	if (ret)
		goto out;
	/* The host VM's slots first: they are the last thing that can fail. */
	ret = memslots_host_attrs_change(&vm->slots, start, end, attrs);
	if (ret)
		goto out;
	/* From here nothing fails: a fault that read the old value retries on the new one. */
	mmu_invalidate_begin(&vm->mmu, start, end);
	pthread_rwlock_wrlock(&vm->attrs_lock);
	attr_set(&vm->mem_attrs, start, end, attrs);
	attr_shrink(&vm->mem_attrs);
	pthread_rwlock_unlock(&vm->attrs_lock);
	mmu_invalidate_end(&vm->mmu);
out:
	pthread_mutex_unlock(&vm->slots.lock);
	return ret;
}

/* KVM_SET_MEMORY_ATTRIBUTES on the VM, with kvm_vm_ioctl_set_mem_attributes' checks in its order. */
static long vm_ioctl_set_memory_attributes(struct vm *vm, unsigned long arg)
{
	struct kvm_memory_attributes a;
	uint64_t end;
	int ret = gm_copy_from_user(&a, (void *)arg, sizeof(a));

	if (ret)
		return ret;
	if (a.flags)
		return -EINVAL;
	if (a.attributes & ~vm_supported_attrs(vm))
		return -EINVAL;
	if (!a.size || !gm_range_ok(a.address, a.size, &end))
		return -EINVAL;
	if (!GM_ALIGNED(a.address, GM_PAGE_SIZE) || !GM_ALIGNED(a.size, GM_PAGE_SIZE))
		return -EINVAL;
	return vm_set_mem_attributes(vm, a.address >> GM_PAGE_SHIFT, end >> GM_PAGE_SHIFT,
				     a.attributes);
}

static long vm_ioctl_enable_cap(struct vm *vm, unsigned long arg)
{
	struct kvm_enable_cap cap;
	int ret = gm_copy_from_user(&cap, (void *)arg, sizeof(cap));

	if (ret)
		return ret;
	if (cap.flags)
		return -EINVAL;
	switch (cap.cap) {
	case KVM_CAP_EXIT_HYPERCALL:
		if (cap.args[0] & ~(uint64_t)KVM_EXIT_HYPERCALL_VALID_MASK)
			return -EINVAL;
		/* On the kvm backend the host's own VMCALL exits follow the same mask. */
		if (vm->host_fd >= 0 && ioctl(vm->host_fd, KVM_ENABLE_CAP, &cap) < 0)
			return -errno;
		atomic_store(&vm->exit_hypercall_mask, cap.args[0]);
		return 0;
	default:
		return -EINVAL;
	}
}

/* KVM_CREATE_IRQCHIP on a soft VM: one, before any vCPU; its vCPUs get an in-kernel APIC state. */
static long vm_ioctl_create_irqchip(struct vm *vm)
{
	long ret = 0;

	pthread_mutex_lock(&vm->slots.lock);
	if (vm->irqchip)
		ret = -EEXIST;
	else if (vm->created_vcpus)
		ret = -EINVAL;
	else
		vm->irqchip = true;
	pthread_mutex_unlock(&vm->slots.lock);
	return ret;
}

/* Keeps a value a soft VM is given and does not use. */
static long vm_keep(struct vm *vm, unsigned long *field, unsigned long value)
{
	pthread_mutex_lock(&vm->slots.lock);
	*field = value;
	pthread_mutex_unlock(&vm->slots.lock);
	return 0;
}

/* Before any vCPU exists, as the kernel (which maps the page for real-mode guests). */
static long vm_ioctl_set_identity_map_addr(struct vm *vm, unsigned long arg)
{
	uint64_t addr;
	long ret = -EINVAL;

	pthread_mutex_lock(&vm->slots.lock);
	if (!vm->created_vcpus) {
		ret = gm_copy_from_user(&addr, (void *)arg, sizeof(addr));
		if (!ret)
			vm->identity_map_addr = addr;
	}
	pthread_mutex_unlock(&vm->slots.lock);
	return ret;
}

/* The x86 VM ioctls a soft VM answers itself (the kvm backend's host VM answers them there). */
static long vm_ioctl_soft_x86(struct vm *vm, unsigned long request, unsigned long arg)
{
	switch (request) {
	case KVM_CREATE_IRQCHIP:
		return vm_ioctl_create_irqchip(vm);
	case KVM_SET_NR_MMU_PAGES:
		/* KVM_MIN_ALLOC_MMU_PAGES; the soft stage-2 has no shadow page budget. */
		return arg < 64 ? -EINVAL : vm_keep(vm, &vm->nr_mmu_pages, arg);
	case KVM_GET_TSC_KHZ:
		return x86_tsc_khz();
	case KVM_SET_TSS_ADDR:
		/* Three pages below 4 GiB, as kvm_vm_ioctl_set_tss_addr checks. */
		return arg > 0xffffd000UL ? -EINVAL : vm_keep(vm, &vm->tss_addr, arg);
	case KVM_SET_IDENTITY_MAP_ADDR:
		return vm_ioctl_set_identity_map_addr(vm, arg);
	default:
		return -ENOTTY;
	}
}

long vm_ioctl(struct vm *vm, unsigned long request, unsigned long arg)
{
	switch (request) {
	case KVM_CHECK_EXTENSION:
		return vm_check_extension(vm, (long)arg);
	case KVM_CREATE_GUEST_MEMFD:
		return vm_ioctl_create_guest_memfd(vm, arg);
	case KVM_SET_USER_MEMORY_REGION:
	case KVM_SET_USER_MEMORY_REGION2:
		return vm_ioctl_set_memory_region(vm, request, arg);
	case KVM_ENABLE_CAP:
		return vm_ioctl_enable_cap(vm, arg);
	case KVM_SET_MEMORY_ATTRIBUTES:
		/* Only with kvm.vm_memory_attributes=1; otherwise the VM has no such ioctl. */
		if (vm->attrs_in_vm)
			return vm_ioctl_set_memory_attributes(vm, arg);
		/* fall through */
	default:
		/* The host VM answers what libgmem does not model (TSS, irqchip...). */
		if (vm->host_fd >= 0)
			return host_ioctl(vm->host_fd, request, arg);
		return vm_ioctl_soft_x86(vm, request, arg);
	}
}

int vm_mmu_stats(struct vm *vm, struct gm_mmu_stats *stats)
{
	struct mmu *mmu = &vm->mmu;
	struct gm_mmu_stats out = {
		.faults = atomic_load(&mmu->faults),
		.retries = atomic_load(&mmu->retries),
		.zaps = atomic_load(&mmu->zaps),
		.mapped_4k_bytes = atomic_load(&mmu->mapped_pages[MMU_LEVEL_4K]) << GM_PAGE_SHIFT,
		.mapped_2m_bytes = atomic_load(&mmu->mapped_pages[MMU_LEVEL_2M]) << GM_HUGE_2M_SHIFT,
		.mapped_1g_bytes = atomic_load(&mmu->mapped_pages[MMU_LEVEL_1G]) << GM_HUGE_1G_SHIFT,
	};

	return gm_copy_to_user(stats, &out, sizeof(out));
}

int vm_info(struct vm *vm, struct gm_vm_info *info)
{
	struct gm_vm_info out = {
		.type = vm->type,
		.backend = vm->host_fd >= 0 ? GM_VM_BACKEND_KVM : GM_VM_BACKEND_SOFT,
		.host_hva_view = vm->host_fd >= 0 && host_kvm_needs_hva_view(),
		.host_gmem = vm->host_fd >= 0 && host_has_gmem(vm->host_fd),
		.nr_vcpus = atomic_load(&vm->nr_vcpus),
	};

	return gm_copy_to_user(info, &out, sizeof(out));
}
