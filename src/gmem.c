/* The guest_memfd file: creation, fallocate, fstat and host mmap, as in virt/kvm/guest_memfd.c. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gmem.h"
#include "kvm/host.h"
#include "mmu/stage2.h"
#include "rcu.h"

static atomic_ullong live_gmem_files;

static uint64_t flags_offered = ~0ULL;
static pthread_once_t flags_offered_once = PTHREAD_ONCE_INIT;

/* GMEM_GUEST_MEMFD_FLAGS: a mask of the flags offered; 0 is a kernel before 6.17, which has none. */
static void flags_offered_read(void)
{
	const char *env = getenv("GMEM_GUEST_MEMFD_FLAGS");
	char *end;

	if (env && *env) {
		unsigned long long mask = strtoull(env, &end, 0);

		if (!*end)
			flags_offered = mask;
	}
}

uint64_t gmem_supported_flags(bool private_in_vm)
{
	/*
	 * MMAP always; INIT_SHARED for every VM type once attributes live in the
	 * file (the in-place conversion series), but with per-VM attributes only
	 * for VMs without private memory, as in 6.18.
	 */
	uint64_t flags = GUEST_MEMFD_FLAG_MMAP;

	if (!private_in_vm)
		flags |= GUEST_MEMFD_FLAG_INIT_SHARED;
	pthread_once(&flags_offered_once, flags_offered_read);
	return flags & flags_offered;
}

/* Clears every binding of the file being released (slots_lock and invalidate_lock held). */
static void gmem_release_bindings(struct gmem *g)
{
	unsigned nr;

	/* The file is going: its slots stay, but faults through them now fail. */
	for (struct gmem_binding *b = g->bindings; b; b = b->next)
		atomic_store(&b->gmem, NULL);
	nr = gmem_invalidate_begin(g, 0, gmem_npages(g));
	/* memslot_lookup may still be looking at the file through a slot. */
	if (nr)
		gm_synchronize_rcu();
	gmem_invalidate_end(g, nr);
	g->bindings = NULL;
}

static __thread struct gmem *puts_deferred;

void gmem_put_deferred(struct gmem *g)
{
	long refs = atomic_load_explicit(&g->obj.refs, memory_order_relaxed);

	while (refs > 1)
		if (atomic_compare_exchange_weak_explicit(&g->obj.refs, &refs, refs - 1,
							  memory_order_acq_rel, memory_order_relaxed))
			return;
	/* The only reference is ours: no other thread can defer this file meanwhile. */
	g->put_next = puts_deferred;
	puts_deferred = g;
}

void gmem_put_flush(void)
{
	while (puts_deferred) {
		struct gmem *g = puts_deferred;

		puts_deferred = g->put_next;
		gmem_put(g);
	}
}

static void gmem_release(struct gm_object *obj)
{
	struct gmem *g = gm_container_of(obj, struct gmem, obj);

	/* As kvm_gmem_release: slots_lock, then the file's lock; bound slots lose the file. */
	pthread_mutex_lock(g->vm.slots_lock);
	pthread_rwlock_wrlock(&g->invalidate_lock);
	gmem_release_bindings(g);
	gmem_pins_destroy(g);
	pthread_rwlock_unlock(&g->invalidate_lock);
	pthread_mutex_unlock(g->vm.slots_lock);
	backing_destroy(&g->backing);
	rmp_destroy(g->rmp);
	attr_map_destroy(&g->attrs);
	pthread_rwlock_destroy(&g->invalidate_lock);
	gm_object_put(g->vm.obj);
	gm_free(g);
	atomic_fetch_sub(&live_gmem_files, 1);
}

static int folio_shift_from_flags(uint64_t flags, unsigned *shift)
{
	switch ((flags & GM_GUEST_MEMFD_FOLIO_MASK) >> GM_GUEST_MEMFD_FOLIO_SHIFT) {
	case 0:
	case GM_PAGE_SHIFT:
		*shift = GM_PAGE_SHIFT;
		return 0;
	case GM_HUGE_2M_SHIFT:
		*shift = GM_HUGE_2M_SHIFT;
		return 0;
	case GM_HUGE_1G_SHIFT:
		*shift = GM_HUGE_1G_SHIFT;
		return 0;
	default:
		return -EINVAL;
	}
}

int gmem_create(const struct gmem_vm *vm, uint64_t size, uint64_t flags)
{
	struct gmem *g;
	unsigned shift;
	int fd, ret;

	/* The kernel's order: flags, then size (signed, page aligned). */
	if (flags & ~(gmem_supported_flags(vm->attrs_in_vm && vm->private_mem) |
		      GM_GUEST_MEMFD_FOLIO_MASK))
		return -EINVAL;
	if (folio_shift_from_flags(flags, &shift))
		return -EINVAL;
	if ((int64_t)size <= 0 || !GM_ALIGNED(size, GM_PAGE_SIZE))
		return -EINVAL;
	if (!GM_ALIGNED(size, 1ULL << shift))
		return -EINVAL;
	/* The kernel allocates on use at any size; the library must map the store whole. */
	if (size > BACKING_MAX_SIZE)
		return -ENOMEM;

	g = gm_zalloc(sizeof(*g));
	if (!g)
		return -ENOMEM;
	gm_object_init(&g->obj, gmem_release);
	g->size = size;
	g->flags = flags;
	g->folio_shift = shift;
	ret = pthread_rwlock_init(&g->invalidate_lock, NULL);
	if (ret) {
		ret = -ret;
		goto err_free;
	}
	ret = attr_map_init(&g->attrs, size >> GM_PAGE_SHIFT,
			    (flags & GUEST_MEMFD_FLAG_INIT_SHARED) ? 0 : KVM_MEMORY_ATTRIBUTE_PRIVATE);
	if (ret)
		goto err_lock;
	/*
	 * The kvm backend uses the host's guest_memfd where the host has one;
	 * otherwise (and on the soft backend) a memfd, which the host VM then
	 * gets as ordinary host-address memory (see slot_to_host).
	 */
	if (vm->host_fd >= 0 && host_has_gmem(vm->host_fd))
		ret = backing_init_host(&g->backing, vm->host_fd, size, host_kvm_needs_hva_view());
	else
		ret = backing_init(&g->backing, size, vm->host_fd >= 0 ? GM_PAGE_SHIFT : shift);
	if (ret)
		goto err_attrs;
	if (vm->has_rmp) {
		g->rmp = rmp_create(size >> GM_PAGE_SHIFT);
		if (!g->rmp) {
			backing_destroy(&g->backing);
			ret = -ENOMEM;
			goto err_attrs;
		}
	}
	gm_object_get(vm->obj);
	g->vm = *vm;
	atomic_fetch_add(&live_gmem_files, 1);

	/* Like the kernel's, the fd is not close-on-exec. */
	fd = gm_file_install(GM_FILE_GMEM, &g->obj, "[kvm-gmem]", false);
	if (fd < 0)
		gmem_put(g);
	return fd;

err_attrs:
	attr_map_destroy(&g->attrs);
err_lock:
	pthread_rwlock_destroy(&g->invalidate_lock);
err_free:
	gm_free(g);
	return ret;
}

#define FALLOC_KNOWN_MODES                                                                  \
	(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE |            \
	 FALLOC_FL_ZERO_RANGE | FALLOC_FL_INSERT_RANGE | FALLOC_FL_UNSHARE_RANGE | 0x80)

unsigned gmem_invalidate_begin(struct gmem *g, pgoff_t start, pgoff_t end)
{
	unsigned nr = 0;

	for (struct gmem_binding *b = g->bindings; b; b = b->next) {
		pgoff_t s = start > b->pgoff ? start : b->pgoff;
		pgoff_t e = end < b->pgoff + b->npages ? end : b->pgoff + b->npages;

		if (s >= e)
			continue;
		/* Returns once no vCPU can still use a zapped translation. */
		mmu_invalidate_begin(g->vm.mmu, b->base_gfn + (s - b->pgoff),
				     b->base_gfn + (e - b->pgoff));
		nr++;
	}
	return nr;
}

void gmem_invalidate_end(struct gmem *g, unsigned nr)
{
	while (nr--)
		mmu_invalidate_end(g->vm.mmu);
}

int gmem_bind(struct gmem *g, struct gmem_binding *b, const struct gm_object *vm_obj,
	      uint64_t offset)
{
	uint64_t end;
	int ret = 0;

	if (g->vm.obj != vm_obj || (int64_t)offset < 0 || !GM_ALIGNED(offset, GM_PAGE_SIZE) ||
	    !gm_range_ok(offset, b->npages << GM_PAGE_SHIFT, &end) || end > g->size)
		return -EINVAL;
	pthread_rwlock_wrlock(&g->invalidate_lock);
	/* A file range backs one slot only (EEXIST as in mainline after 6.18). */
	for (struct gmem_binding *o = g->bindings; o; o = o->next)
		if (o->pgoff < (end >> GM_PAGE_SHIFT) && (offset >> GM_PAGE_SHIFT) < o->pgoff + o->npages)
			ret = -EEXIST;
	if (!ret) {
		b->pgoff = offset >> GM_PAGE_SHIFT;
		atomic_store(&b->gmem, g);
		b->next = g->bindings;
		g->bindings = b;
	}
	pthread_rwlock_unlock(&g->invalidate_lock);
	/* The binding holds no reference: the file clears it when it goes. */
	return ret;
}

void gmem_unbind(struct gmem_binding *b)
{
	/* slots_lock is held, so a file's release cannot run concurrently. */
	struct gmem *g = atomic_load(&b->gmem);

	if (!g)
		return;
	pthread_rwlock_wrlock(&g->invalidate_lock);
	for (struct gmem_binding **pp = &g->bindings; *pp; pp = &(*pp)->next) {
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	}
	atomic_store(&b->gmem, NULL);
	pthread_rwlock_unlock(&g->invalidate_lock);
}

static int gmem_punch_hole(struct gmem *g, uint64_t off, uint64_t len)
{
	pgoff_t start = off >> GM_PAGE_SHIFT;
	pgoff_t end = start + (len >> GM_PAGE_SHIFT);
	unsigned nr;
	int ret;

	if (end < start || end > gmem_npages(g))
		end = gmem_npages(g);
	pthread_rwlock_wrlock(&g->invalidate_lock);
	/* Freed pages go back to the hypervisor (kvm_arch_gmem_invalidate): room first. */
	if (g->rmp && rmp_reserve(g->rmp)) {
		pthread_rwlock_unlock(&g->invalidate_lock);
		return -ENOMEM;
	}
	nr = gmem_invalidate_begin(g, start, end);
	/* Attributes stay as they are; only memory goes back to the system. */
	ret = backing_punch(&g->backing, off, len);
	if (!ret && g->rmp)
		rmp_set(g->rmp, start, end, RMP_HYPERVISOR);
	gmem_invalidate_end(g, nr);
	pthread_rwlock_unlock(&g->invalidate_lock);
	return ret;
}

static int gmem_allocate(struct gmem *g, uint64_t off, uint64_t len)
{
	uint64_t end;
	int ret;

	if (!gm_range_ok(off, len, &end) || end > g->size)
		return -EINVAL;
	pthread_rwlock_rdlock(&g->invalidate_lock);
	ret = backing_allocate(&g->backing, off, len);
	pthread_rwlock_unlock(&g->invalidate_lock);
	return ret;
}

int gmem_fallocate(struct gmem *g, int mode, int64_t off, int64_t len)
{
	int64_t end;
	uint64_t align = 1ULL << g->folio_shift;

	/* vfs_fallocate's checks come first, then the guest_memfd's own. */
	if (off < 0 || len <= 0)
		return -EINVAL;
	if (mode & ~FALLOC_KNOWN_MODES)
		return -EOPNOTSUPP;
	if (mode != FALLOC_FL_KEEP_SIZE && mode != (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))
		return -EOPNOTSUPP;
	if (__builtin_add_overflow(off, len, &end))
		return -EFBIG;
	if (!GM_ALIGNED((uint64_t)off, align) || !GM_ALIGNED((uint64_t)len, align))
		return -EINVAL;
	if (mode & FALLOC_FL_PUNCH_HOLE)
		return gmem_punch_hole(g, (uint64_t)off, (uint64_t)len);
	return gmem_allocate(g, (uint64_t)off, (uint64_t)len);
}

int gmem_fstat(struct gmem *g, int fd, struct stat *st)
{
	struct stat tmp;

	if (fstat(fd, &tmp) < 0)
		return -errno;
	tmp.st_mode = S_IFREG | S_IRUSR | S_IWUSR;
	tmp.st_nlink = 1; /* the handle is an unlinked memfd; the kernel's inode has one link */
	tmp.st_size = (off_t)g->size;
	tmp.st_blksize = GM_PAGE_SIZE;
	tmp.st_blocks = (blkcnt_t)(backing_allocated_bytes(&g->backing) / 512);
	return gm_copy_to_user(st, &tmp, sizeof(tmp));
}

int gmem_info(struct gmem *g, struct gm_gmem_info *info)
{
	struct gm_gmem_info out;

	/* A plain munmap of a host mapping counts once its event is applied. */
	hostmap_sync();
	out = (struct gm_gmem_info){
		.size = g->size,
		.flags = g->flags,
		.folio_size = 1ULL << g->folio_shift,
		.allocated_bytes = backing_allocated_bytes(&g->backing),
		.backing = g->backing.kind,
		.host_mappings = atomic_load(&g->host_mappings),
	};

	pthread_rwlock_rdlock(&g->invalidate_lock);
	out.shared_bytes = attr_count(&g->attrs, 0) << GM_PAGE_SHIFT;
	out.split_folios = g->backing.nr_split;
	pthread_rwlock_unlock(&g->invalidate_lock);
	return gm_copy_to_user(info, &out, sizeof(out));
}

/* The guest_memfd's own checks, made after the generic ones of mmap(2). */
int gmem_mmap_check(const struct gmem *g, size_t len, int flags, int64_t off)
{
	/* The kernel refuses in this order: no MMAP flag, then a private mapping. */
	if (!(g->flags & GUEST_MEMFD_FLAG_MMAP))
		return -ENODEV;
	if ((flags & MAP_TYPE) == MAP_PRIVATE)
		return -EINVAL;
	/* hugetlbfs maps whole huge pages only. */
	if (g->backing.kind == GM_BACKING_HUGETLB &&
	    (!GM_ALIGNED((uint64_t)off, g->backing.page_size) ||
	     !GM_ALIGNED(len, g->backing.page_size)))
		return -EINVAL;
	return 0;
}

uint64_t gmem_count(void)
{
	return atomic_load(&live_gmem_files);
}
