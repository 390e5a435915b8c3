/* The VM: its type and its ioctls, as in virt/kvm/kvm_main.c. */
#include "vm.h"

static atomic_ullong live_vms;

static void vm_release(struct gm_object *obj)
{
	struct vm *vm = gm_container_of(obj, struct vm, obj);

	pthread_mutex_destroy(&vm->slots_lock);
	gm_free(vm);
	atomic_fetch_sub(&live_vms, 1);
}

int vm_create(unsigned long type)
{
	struct vm *vm;
	int fd;

	if (type != KVM_X86_DEFAULT_VM && type != KVM_X86_SW_PROTECTED_VM)
		return -EINVAL;
	vm = gm_zalloc(sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	gm_object_init(&vm->obj, vm_release);
	vm->type = type;
	pthread_mutex_init(&vm->slots_lock, NULL);
	atomic_fetch_add(&live_vms, 1);
	/* The kernel's VM fd is close-on-exec. */
	fd = gm_file_install(GM_FILE_VM, &vm->obj, "kvm-vm", true);
	if (fd < 0)
		vm_put(vm);
	return fd;
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
	return vm->type == KVM_X86_SW_PROTECTED_VM;
}

uint64_t vm_count(void)
{
	return atomic_load(&live_vms);
}

static long vm_ioctl_create_guest_memfd(struct vm *vm, unsigned long arg)
{
	struct kvm_create_guest_memfd args;
	int ret = gm_copy_from_user(&args, (void *)arg, sizeof(args));

	if (ret)
		return ret;
	/* reserved[] is not checked, as in 6.18. */
	return gmem_create(vm, args.size, args.flags);
}

long vm_ioctl(struct vm *vm, unsigned long request, unsigned long arg)
{
	switch (request) {
	case KVM_CHECK_EXTENSION:
		return kvm_check_extension(vm, (long)arg);
	case KVM_CREATE_GUEST_MEMFD:
		return vm_ioctl_create_guest_memfd(vm, arg);
	default:
		return -ENOTTY;
	}
}
