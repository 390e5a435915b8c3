/* The software SEV-SNP platform: generic populate, the reverse map, #VC, PVALIDATE, scrub, the digest. */
#include <linux/falloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include <openssl/evp.h>

#include "unit/vmm.h"

#include "populate.h"

#define PAGE 4096ULL
#define POLICY ((1ULL << 17) | (1ULL << 16))
#define BASE_GPA 0x100000ULL /* the slot's first GPA: the digest sees real GPAs */

/* An SNP VM with one guest_memfd slot of npages at BASE_GPA, launched up to LAUNCH_START. */
struct snp {
	struct vmm m;
	int sev, gmem;
	uint64_t npages;
	char *host;
};

static int sev_cmd(struct snp *s, uint32_t id, void *data)
{
	struct kvm_sev_cmd c = { .id = id, .data = (uint64_t)(uintptr_t)data, .sev_fd = (uint32_t)s->sev };

	return gm_ioctl(s->m.vm, KVM_MEMORY_ENCRYPT_OP, &c) ? errno : 0;
}

static int convert(struct snp *s, uint64_t page, uint64_t n, bool private)
{
	struct kvm_memory_attributes2 a = { .offset = page * PAGE, .size = n * PAGE,
					    .attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0 };

	return gm_ioctl(s->gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;
}

/* As snp_create, with the slot at gpa and extra guest_memfd flags (a folio size). */
static void snp_create_at(struct snp *s, uint64_t npages, bool start, uint64_t gpa, uint64_t flags)
{
	struct kvm_sev_init init = { 0 };
	struct kvm_sev_snp_launch_start ls = { .policy = POLICY };

	vmm_init(&s->m, KVM_X86_SNP_VM);
	s->sev = gm_open_sev();
	cr_assert_geq(s->sev, 0);
	s->npages = npages;
	s->gmem = vmm_gmem(&s->m, npages * PAGE,
			   GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED | flags);
	cr_assert_eq(vmm_set_slot(&s->m, 0, gpa, npages * PAGE, s->gmem, 0), 0);
	s->host = gm_mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, s->gmem, 0);
	cr_assert_neq(s->host, MAP_FAILED);
	cr_assert_eq(sev_cmd(s, KVM_SEV_INIT2, &init), 0);
	if (start)
		cr_assert_eq(sev_cmd(s, KVM_SEV_SNP_LAUNCH_START, &ls), 0);
}

static void snp_create(struct snp *s, uint64_t npages, bool start)
{
	snp_create_at(s, npages, start, BASE_GPA, 0);
}

/* LAUNCH_UPDATE in place of n pages from page; 0 or errno. */
static int populate(struct snp *s, uint64_t page, uint64_t n, uint8_t type)
{
	struct kvm_sev_snp_launch_update u = { .gfn_start = (BASE_GPA >> 12) + page, .len = n * PAGE,
					       .type = type };

	return sev_cmd(s, KVM_SEV_SNP_LAUNCH_UPDATE, &u);
}

static int finish(struct snp *s)
{
	struct kvm_sev_snp_launch_finish f = { .host_data = { 0xaa, 0xbb } };

	return sev_cmd(s, KVM_SEV_SNP_LAUNCH_FINISH, &f);
}

static void snp_destroy(struct snp *s)
{
	gm_munmap(s->host, s->npages * PAGE);
	gm_close(s->gmem);
	gm_close(s->sev);
	vmm_destroy(&s->m);
}

static struct vm *vm_of(int fd)
{
	int err;
	struct gm_object *obj = gm_file_get_typed(fd, GM_FILE_VM, &err);

	cr_assert_not_null(obj);
	gm_object_put(obj); /* the fd keeps it */
	return gm_container_of(obj, struct vm, obj);
}

static struct gmem *gmem_of(int fd)
{
	int err;
	struct gm_object *obj = gm_file_get_typed(fd, GM_FILE_GMEM, &err);

	cr_assert_not_null(obj);
	gm_object_put(obj);
	return gm_container_of(obj, struct gmem, obj);
}

/* ---- The launch digest, computed here from the SNP ABI's PAGE_INFO without the library ---- */

struct __attribute__((packed)) page_info {
	uint8_t digest_cur[48];
	uint8_t contents[48];
	uint16_t length;
	uint8_t page_type;
	uint8_t imi_page;
	uint8_t vmpl3_perms, vmpl2_perms, vmpl1_perms;
	uint8_t reserved;
	uint64_t gpa;
};
_Static_assert(sizeof(struct page_info) == 0x70, "PAGE_INFO is 0x70 bytes");

static void kat_extend(uint8_t ld[48], uint8_t type, uint64_t gpa, const void *page)
{
	struct page_info pi = { .length = 0x70, .page_type = type, .gpa = gpa };
	unsigned len = 48;

	memcpy(pi.digest_cur, ld, 48);
	if (type == 1 || type == 2)
		cr_assert(EVP_Digest(page, PAGE, pi.contents, &len, EVP_sha384(), NULL));
	cr_assert(EVP_Digest(&pi, sizeof(pi), ld, &len, EVP_sha384(), NULL));
}

/* Two NORMAL pages in place, one ZERO page and one vCPU: the digest an offline calculator gets. */
Test(snp, launch_digest_known_answer)
{
	struct snp s;
	struct gm_snp_launch_info info;
	static uint8_t page0[PAGE], page1[PAGE], zero[PAGE];
	uint8_t ld[48] = { 0 }, lib[48] = { 0 };

	for (unsigned i = 0; i < PAGE; i++) {
		page0[i] = 0xab;
		page1[i] = (uint8_t)(i * 7 + 3);
	}
	kat_extend(ld, 1, BASE_GPA, page0);
	kat_extend(ld, 1, BASE_GPA + PAGE, page1);
	kat_extend(ld, 3, BASE_GPA + 2 * PAGE, NULL);
	kat_extend(ld, 2, 0xFFFFFFFFF000ULL, zero);

	snp_create(&s, 3, true);
	memcpy(s.host, page0, PAGE);
	memcpy(s.host + PAGE, page1, PAGE);
	memset(s.host + 2 * PAGE, 0x99, PAGE); /* a ZERO page's contents are the firmware's */
	cr_assert_eq(convert(&s, 0, 3, true), 0);
	cr_assert_eq(populate(&s, 0, 2, KVM_SEV_SNP_PAGE_TYPE_NORMAL), 0);
	cr_assert_eq(populate(&s, 2, 1, KVM_SEV_SNP_PAGE_TYPE_ZERO), 0);
	vmm_vcpu(&s.m, 0, NULL, NULL);
	cr_assert_eq(finish(&s), 0);
	cr_assert_eq(gm_snp_launch_info(s.m.vm, &info), 0);
	cr_expect_arr_eq(info.measurement, ld, 48, "the launch digest differs from the ABI's");
	cr_expect_eq(info.state, GM_SNP_STATE_RUNNING);
	cr_expect_eq(info.pages_measured[KVM_SEV_SNP_PAGE_TYPE_NORMAL], 2);
	cr_expect_eq(info.pages_measured[KVM_SEV_SNP_PAGE_TYPE_ZERO], 1);
	cr_expect_eq(info.pages_measured[2], 1, "one VMSA");
	cr_expect_eq(info.host_data[0], 0xaa);
	/* The exported step gives the same chain. */
	cr_assert_eq(gm_snp_launch_digest_page(lib, 1, BASE_GPA, page0), 0);
	cr_assert_eq(gm_snp_launch_digest_page(lib, 1, BASE_GPA + PAGE, page1), 0);
	cr_assert_eq(gm_snp_launch_digest_page(lib, 3, BASE_GPA + 2 * PAGE, NULL), 0);
	cr_assert_eq(gm_snp_launch_digest_page(lib, 2, GM_SNP_VMSA_GPA, zero), 0);
	cr_expect_arr_eq(lib, ld, 48);
	snp_destroy(&s);
}

/* ---- Generic populate (gmem_populate), called as a platform would ---- */

struct cb_log {
	int calls;
	int fail_at;          /* the call that fails with fail_err (1-based), 0: none */
	int fail_err;
	uint8_t first_src;    /* first byte of the source the callback was given */
	bool src_null;
	bool lock_exclusive;  /* the file's invalidate_lock was held for write */
	gfn_t gfns[8];
};

static int log_cb(struct gmem *g, pgoff_t index, gfn_t gfn, void *dst, const void *src, void *opaque)
{
	struct cb_log *l = opaque;

	if (l->calls < 8)
		l->gfns[l->calls] = gfn;
	l->calls++;
	l->src_null = !src;
	if (src)
		l->first_src = *(const uint8_t *)src;
	/* A reader would get in under a shared lock. */
	l->lock_exclusive = pthread_rwlock_tryrdlock(&g->invalidate_lock) == EBUSY;
	if (l->calls == l->fail_at)
		return l->fail_err;
	return 0;
}

static long populate_direct(struct snp *s, gfn_t gfn, const void *src, long n, struct cb_log *l)
{
	struct vm *vm = vm_of(s->m.vm);
	long r;

	pthread_mutex_lock(&vm->slots.lock);
	r = gmem_populate(vm, gfn, src, n, log_cb, l);
	pthread_mutex_unlock(&vm->slots.lock);
	gmem_put_flush();
	return r;
}

/* Per page: private or EINVAL; the count of pages done, unless the first failed. */
Test(snp, populate_rules)
{
	struct snp s;
	struct cb_log l = { 0 };
	gfn_t base = BASE_GPA >> 12;

	snp_create(&s, 4, false);
	cr_expect_eq(populate_direct(&s, base, NULL, 1, &l), -EINVAL, "shared destination");
	cr_expect_eq(l.calls, 0);
	cr_assert_eq(convert(&s, 0, 2, true), 0);
	cr_expect_eq(populate_direct(&s, base, NULL, 0, &l), -EINVAL, "no pages");
	cr_expect_eq(populate_direct(&s, base, (void *)(uintptr_t)8, 1, &l), -EINVAL, "unaligned src");
	cr_expect_eq(populate_direct(&s, 1, NULL, 1, &l), -EINVAL, "no slot");
	cr_expect_eq(l.calls, 0);
	/* Pages 0 and 1 private, 2 shared: two done, the failure lost (the kernel's count). */
	cr_expect_eq(populate_direct(&s, base, NULL, 4, &l), 2);
	cr_expect_eq(l.calls, 2);
	cr_expect(l.src_null, "NULL source: in place");
	cr_expect(l.lock_exclusive, "the invalidate lock is held exclusively");
	cr_expect_eq(l.gfns[1], base + 1);
	/* The callback's error: returned for the first page, a count after it. */
	l = (struct cb_log){ .fail_at = 1, .fail_err = -EEXIST };
	cr_expect_eq(populate_direct(&s, base, NULL, 2, &l), -EEXIST);
	l = (struct cb_log){ .fail_at = 2, .fail_err = -EIO };
	cr_expect_eq(populate_direct(&s, base, NULL, 2, &l), 1);
	/* Clamped to the slot: 10 pages asked, the slot ends after 4 (pages 2, 3 shared). */
	cr_assert_eq(convert(&s, 0, 4, true), 0);
	l = (struct cb_log){ 0 };
	cr_expect_eq(populate_direct(&s, base, NULL, 10, &l), 4);
	snp_destroy(&s);
}

/* Slot checks: a slot without guest_memfd is EINVAL, one whose file is gone EFAULT. */
Test(snp, populate_slot_and_file)
{
	struct snp s;
	struct cb_log l = { 0 };
	void *hva = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int gmem2;

	snp_create(&s, 1, false);
	cr_assert_eq(vmm_hva_slot(&s.m, 1, 0x10000000ULL, PAGE, hva), 0);
	cr_expect_eq(populate_direct(&s, 0x10000, NULL, 1, &l), -EINVAL, "slot without guest_memfd");
	gmem2 = vmm_gmem(&s.m, PAGE, 0);
	cr_assert_eq(vmm_set_slot(&s.m, 2, 0x20000000ULL, PAGE, gmem2, 0), 0);
	cr_assert_eq(gm_close(gmem2), 0);
	cr_expect_eq(populate_direct(&s, 0x20000, NULL, 1, &l), -EFAULT, "the file is gone");
	cr_expect_eq(l.calls, 0);
	munmap(hva, PAGE);
	snp_destroy(&s);
}

/* Closes the file's last fd from inside populate: only populate's own reference is left. */
static int close_file_cb(struct gmem *g, pgoff_t index, gfn_t gfn, void *dst, const void *src,
			 void *opaque)
{
	int *fd = opaque;

	if (*fd >= 0) {
		gm_close(*fd);
		*fd = -1;
	}
	return 0;
}

/*
 * The file's last fd closed while populate runs under slots_lock: the file's
 * release, which takes slots_lock, waits for the command's end (as the
 * kernel's fput); it must neither deadlock nor leave the slot its file.
 */
Test(snp, populate_outlives_the_file_close, .timeout = 20)
{
	struct snp s;
	struct cb_log l = { 0 };
	struct kvm_memory_attributes2 a = { .size = PAGE, .attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE };
	struct vm *vm;
	struct gm_stats before, after;
	int file;
	long r;

	snp_create(&s, 1, false);
	vm = vm_of(s.m.vm);
	file = vmm_gmem(&s.m, PAGE, GUEST_MEMFD_FLAG_INIT_SHARED);
	cr_assert_eq(vmm_set_slot(&s.m, 2, 0x20000000ULL, PAGE, file, 0), 0);
	cr_assert_eq(gm_ioctl(file, KVM_SET_MEMORY_ATTRIBUTES2, &a), 0);
	cr_assert_eq(gm_stats(&before), 0);
	pthread_mutex_lock(&vm->slots.lock);
	r = gmem_populate(vm, 0x20000, NULL, 1, close_file_cb, &file);
	pthread_mutex_unlock(&vm->slots.lock);
	gmem_put_flush();
	cr_expect_eq(r, 1);
	cr_assert_eq(gm_stats(&after), 0);
	cr_expect_eq(after.gmem_files, before.gmem_files - 1, "the file was released");
	cr_expect_eq(populate_direct(&s, 0x20000, NULL, 1, &l), -EFAULT, "the slot lost its file");
	snp_destroy(&s);
}

struct closer {
	int fd;
	atomic_bool started; /* LAUNCH_UPDATE is about to run */
};

static void *close_while_populating(void *arg)
{
	struct closer *c = arg;

	while (!atomic_load(&c->started))
		;
	usleep(20000);
	gm_close(c->fd);
	return NULL;
}

/* The same through LAUNCH_UPDATE: the file closed by another thread mid-command goes away after it. */
Test(snp, launch_update_outlives_the_file_close, .timeout = 60)
{
	enum { NPAGES = 16384 }; /* 64 MiB measured: long enough for the other thread's close */
	struct snp s;
	struct kvm_memory_attributes2 a = { .size = NPAGES * PAGE,
					    .attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE };
	struct kvm_sev_snp_launch_update u = { .gfn_start = 0x200000, .len = NPAGES * PAGE,
					       .type = KVM_SEV_SNP_PAGE_TYPE_NORMAL };
	struct closer c = { 0 };
	struct gm_stats before, after;
	pthread_t t;

	snp_create(&s, 1, true);
	c.fd = vmm_gmem(&s.m, NPAGES * PAGE, GUEST_MEMFD_FLAG_INIT_SHARED);
	cr_assert_eq(vmm_set_slot(&s.m, 2, 0x200000ULL << 12, NPAGES * PAGE, c.fd, 0), 0);
	cr_assert_eq(gm_ioctl(c.fd, KVM_SET_MEMORY_ATTRIBUTES2, &a), 0);
	cr_assert_eq(gm_stats(&before), 0);
	cr_assert_eq(pthread_create(&t, NULL, close_while_populating, &c), 0);
	atomic_store(&c.started, true);
	cr_expect_eq(sev_cmd(&s, KVM_SEV_SNP_LAUNCH_UPDATE, &u), 0);
	pthread_join(t, NULL);
	cr_assert_eq(gm_stats(&after), 0);
	cr_expect_eq(after.gmem_files, before.gmem_files - 1, "the closed file was released");
	snp_destroy(&s);
}

/* A source is read before the lock: plain memory is copied; a private guest_memfd page is EFAULT. */
Test(snp, populate_source)
{
	struct snp s, other;
	struct cb_log l = { 0 };
	char *plain = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	gfn_t base = BASE_GPA >> 12;

	snp_create(&s, 1, false);
	snp_create(&other, 1, false);
	cr_assert_eq(convert(&s, 0, 1, true), 0);
	plain[0] = 0x42;
	cr_expect_eq(populate_direct(&s, base, plain, 1, &l), 1);
	cr_expect_eq(l.first_src, 0x42);
	other.host[0] = 0x43;
	l = (struct cb_log){ 0 };
	cr_expect_eq(populate_direct(&s, base, other.host, 1, &l), 1, "a shared guest_memfd page");
	cr_expect_eq(l.first_src, 0x43);
	cr_assert_eq(convert(&other, 0, 1, true), 0);
	l = (struct cb_log){ 0 };
	cr_expect_eq(populate_direct(&s, base, other.host, 1, &l), -EFAULT, "a private source");
	cr_expect_eq(l.calls, 0);
	munmap(plain, PAGE);
	snp_destroy(&other);
	snp_destroy(&s);
}

/* A pending signal stops populate before the next page (EINTR). */
Test(snp, populate_signal)
{
	struct snp s;
	struct cb_log l = { 0 };
	sigset_t set, old;
	int sig;

	snp_create(&s, 1, false);
	cr_assert_eq(convert(&s, 0, 1, true), 0);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	raise(SIGUSR1);
	cr_expect_eq(populate_direct(&s, BASE_GPA >> 12, NULL, 1, &l), -EINTR);
	cr_expect_eq(l.calls, 0);
	sigwait(&set, &sig);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	cr_expect_eq(populate_direct(&s, BASE_GPA >> 12, NULL, 1, &l), 1, "once the signal is taken");
	snp_destroy(&s);
}

/* ---- The reverse map ---- */

/* Populate leaves pages assigned and validated, in a few ranges whatever their number. */
Test(snp, rmp_after_populate)
{
	struct snp s;
	struct gmem *g;

	snp_create(&s, 64, true);
	cr_assert_eq(convert(&s, 0, 64, true), 0);
	cr_assert_eq(populate(&s, 0, 60, KVM_SEV_SNP_PAGE_TYPE_ZERO), 0);
	g = gmem_of(s.gmem);
	cr_expect_eq(rmp_count(g->rmp, RMP_VALIDATED), 60);
	cr_expect_eq(rmp_count(g->rmp, RMP_HYPERVISOR), 4);
	cr_expect_leq(g->rmp->map.nr, 2, "%zu ranges for two runs of pages", g->rmp->map.nr);
	/* Punching a hole gives the pages back to the hypervisor. */
	cr_assert_eq(gm_fallocate(s.gmem, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * PAGE), 0);
	cr_expect_eq(rmp_count(g->rmp, RMP_VALIDATED), 58);
	snp_destroy(&s);
}

/* A page the guest already holds (assigned at run time) cannot be populated. */
Test(snp, populate_assigned_page)
{
	struct snp s;
	struct gmem *g;

	snp_create(&s, 2, true);
	cr_assert_eq(convert(&s, 0, 2, true), 0);
	g = gmem_of(s.gmem);
	cr_assert_eq(rmp_set(g->rmp, 1, 2, RMP_ASSIGNED), 0);
	cr_expect_eq(populate(&s, 1, 1, KVM_SEV_SNP_PAGE_TYPE_ZERO), EIO);
	cr_expect_eq(rmp_get(g->rmp, 1), RMP_ASSIGNED, "left as it was");
	cr_expect_eq(populate(&s, 0, 1, KVM_SEV_SNP_PAGE_TYPE_ZERO), 0);
	snp_destroy(&s);
}

/* Private to shared: the guest's pages go back to the hypervisor, zeroed. */
Test(snp, conversion_scrubs)
{
	struct snp s;
	struct gmem *g;

	snp_create(&s, 2, true);
	memset(s.host, 0x77, 2 * PAGE);
	cr_assert_eq(convert(&s, 0, 2, true), 0);
	cr_assert_eq(populate(&s, 0, 1, KVM_SEV_SNP_PAGE_TYPE_NORMAL), 0);
	cr_assert_eq(finish(&s), 0);
	cr_assert(vmm_host_faults(s.host), "the VMM reads a populated page");
	cr_assert_eq(convert(&s, 0, 2, false), 0);
	for (unsigned i = 0; i < PAGE; i++)
		cr_assert_eq(s.host[i], 0, "byte %u of the guest's page survived", i);
	/* Page 1 was never the guest's: the host's own bytes stay. */
	cr_expect_eq(s.host[PAGE], 0x77);
	g = gmem_of(s.gmem);
	cr_expect_eq(rmp_count(g->rmp, RMP_HYPERVISOR), 2);
	snp_destroy(&s);
}

/* ---- The guest's side: #VC, PVALIDATE, page state changes ---- */

struct vc_log {
	int vcs;
	uint64_t last_gpa, last_code;
	bool validate; /* the handler validates the page */
};

static void vc_handler(struct gm_guest *g, uint64_t code, uint64_t gpa, void *arg)
{
	struct vc_log *v = arg;

	v->vcs++;
	v->last_gpa = gpa;
	v->last_code = code;
	if (v->validate)
		GM_GUEST_ASSERT(g, gm_guest_pvalidate(g, gpa, true) == GM_PVALIDATE_SUCCESS);
}

/* Reads a populated page, then page 1 (never populated) twice, rescinds it, reads it again. */
static void guest_vc(struct gm_guest *g, void *arg)
{
	struct vc_log *v = arg;
	uint8_t first;

	gm_guest_set_vc_handler(g, v ? vc_handler : NULL, v);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)gm_guest_read8(g, BASE_GPA));
	first = gm_guest_read8(g, BASE_GPA + PAGE);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)first);
	gm_guest_write8(g, BASE_GPA + PAGE, 5);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)gm_guest_pvalidate(g, BASE_GPA + PAGE, true));
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)gm_guest_pvalidate(g, BASE_GPA + PAGE, false));
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)gm_guest_pvalidate(g, BASE_GPA + PAGE, false));
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)gm_guest_pvalidate(g, BASE_GPA + 8, true));
	gm_guest_ucall(g, GM_UCALL_DONE, 1, (uint64_t)gm_guest_read8(g, BASE_GPA + PAGE));
}

static void launch_two_pages(struct snp *s, gm_guest_fn fn, void *arg)
{
	snp_create(s, 2, true);
	memset(s->host, 0x61, PAGE);
	cr_assert_eq(convert(s, 0, 2, true), 0);
	cr_assert_eq(populate(s, 0, 1, KVM_SEV_SNP_PAGE_TYPE_NORMAL), 0);
	vmm_vcpu(&s->m, 0, fn, arg);
	cr_assert_eq(finish(s), 0);
}

/* The guest's handler sees each access to a page it has not validated; none is served before. */
Test(snp, vc_on_unvalidated_page)
{
	struct snp s;
	struct vc_log v = { .validate = true };
	struct gmem *g;

	launch_two_pages(&s, guest_vc, &v);
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_SYNC), 0x61, "populated: validated");
	cr_expect_eq(v.vcs, 0);
	g = gmem_of(s.gmem);
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_SYNC), 0, "a fresh private page");
	cr_expect_eq(v.vcs, 1, "one #VC, then validated");
	cr_expect_eq(v.last_gpa, BASE_GPA + PAGE);
	cr_expect_eq(v.last_code, GM_VC_NOT_VALIDATED);
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_SYNC), GM_PVALIDATE_FAIL_NOUPDATE,
		     "validating a validated page");
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_SYNC), GM_PVALIDATE_SUCCESS, "rescind");
	cr_expect_eq(rmp_get(g->rmp, 1), RMP_ASSIGNED);
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_SYNC), GM_PVALIDATE_FAIL_NOUPDATE,
		     "rescinding twice");
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_SYNC), GM_PVALIDATE_FAIL_INPUT, "unaligned");
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_DONE), 5, "the rescinded page, validated again");
	cr_expect_eq(v.vcs, 2, "the access after the rescind raised a #VC");
	snp_destroy(&s);
}

/* Without a handler the guest cannot go on: it aborts, and the page was not served. */
Test(snp, vc_without_handler)
{
	struct snp s;
	struct gm_ucall uc;

	launch_two_pages(&s, guest_vc, NULL);
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_SYNC), 0x61);
	cr_assert_eq(vmm_run(&s.m), 0);
	cr_assert_eq(gm_vcpu_get_ucall(s.m.vcpu, &uc), 0);
	cr_expect_eq(uc.cmd, GM_UCALL_ABORT);
	cr_expect(strstr(uc.msg, "#VC") != NULL, "%s", uc.msg);
	snp_destroy(&s);
}

/* Page 1 validated and written at run time; after shared and back, it is not validated. */
static void guest_round_trip(struct gm_guest *g, void *arg)
{
	struct vc_log *v = arg;

	gm_guest_set_vc_handler(g, vc_handler, v);
	gm_guest_write8(g, BASE_GPA + PAGE, 0x5a);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)v->vcs);
	gm_guest_ucall(g, GM_UCALL_DONE, 1, (uint64_t)gm_guest_read8(g, BASE_GPA + PAGE));
}

Test(snp, conversion_round_trip_takes_validation_away)
{
	struct snp s;
	struct vc_log v = { .validate = true };
	struct gmem *g;

	launch_two_pages(&s, guest_round_trip, &v);
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_SYNC), 1, "the first touch raised one #VC");
	g = gmem_of(s.gmem);
	cr_expect_eq(rmp_get(g->rmp, 1), RMP_VALIDATED);
	cr_assert_eq(convert(&s, 1, 1, false), 0);
	cr_expect_eq(s.host[PAGE], 0, "the guest's byte reached the host");
	cr_expect_eq(rmp_get(g->rmp, 1), RMP_HYPERVISOR);
	s.host[PAGE] = 0x33;
	cr_assert_eq(convert(&s, 1, 1, true), 0);
	cr_expect_eq(rmp_get(g->rmp, 1), RMP_HYPERVISOR, "private again, not yet the guest's");
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_DONE), 0x33, "the host's byte, after PVALIDATE");
	cr_expect_eq(v.vcs, 2, "the access after the round trip raised a #VC");
	cr_expect_eq(v.last_gpa, BASE_GPA + PAGE);
	cr_expect_eq(rmp_get(g->rmp, 1), RMP_VALIDATED);
	snp_destroy(&s);
}

/* A 2 MiB folio the guest validated whole and wrote: one 4 KiB page shared is scrubbed alone. */
#define HUGE_GPA 0x200000ULL
#define HUGE_PAGES 512

static void guest_huge(struct gm_guest *g, void *arg)
{
	for (uint64_t i = 0; i < HUGE_PAGES; i++)
		GM_GUEST_ASSERT(g, gm_guest_pvalidate(g, HUGE_GPA + i * PAGE, true) ==
					   GM_PVALIDATE_SUCCESS);
	for (uint64_t i = 0; i < HUGE_PAGES; i++)
		gm_guest_write8(g, HUGE_GPA + i * PAGE + 7, 0xee);
	gm_guest_ucall(g, GM_UCALL_SYNC, 0);
	gm_guest_ucall(g, GM_UCALL_DONE, 2, (uint64_t)gm_guest_read8(g, HUGE_GPA + 2 * PAGE + 7),
		       (uint64_t)gm_guest_read8(g, HUGE_GPA + PAGE + 7));
}

Test(snp, scrub_in_a_huge_folio)
{
	struct snp s;
	struct kvm_sev_snp_launch_finish f = { 0 };
	struct gm_ucall uc;

	snp_create_at(&s, HUGE_PAGES, true, HUGE_GPA, GM_GUEST_MEMFD_FOLIO_2M);
	cr_assert_eq(convert(&s, 0, HUGE_PAGES, true), 0);
	vmm_vcpu(&s.m, 0, guest_huge, NULL);
	cr_assert_eq(sev_cmd(&s, KVM_SEV_SNP_LAUNCH_FINISH, &f), 0);
	vmm_expect_ucall(&s.m, GM_UCALL_SYNC);
	cr_assert_eq(convert(&s, 1, 1, false), 0);
	for (unsigned i = 0; i < PAGE; i++)
		cr_assert_eq(s.host[PAGE + i], 0, "byte %u of the guest's page reached the host", i);
	cr_expect(vmm_host_faults(s.host), "the folio's other pages stay private");
	cr_expect(vmm_host_faults(s.host + 2 * PAGE));
	cr_assert_eq(vmm_run(&s.m), 0);
	cr_assert_eq(gm_vcpu_get_ucall(s.m.vcpu, &uc), 0);
	cr_assert_eq(uc.cmd, GM_UCALL_DONE, "%s", uc.msg);
	cr_expect_eq(uc.args[0], 0xee, "a page still private kept the guest's byte");
	cr_expect_eq(uc.args[1], 0, "the shared page reads as zeros to the guest too");
	snp_destroy(&s);
}

/* PVALIDATE of a shared page is a private access: the VMM sees a memory fault. */
static void guest_pvalidate_shared(struct gm_guest *g, void *arg)
{
	gm_guest_ucall(g, GM_UCALL_DONE, 1, (uint64_t)gm_guest_pvalidate(g, BASE_GPA + PAGE, true));
}

Test(snp, pvalidate_shared_page)
{
	struct snp s;

	launch_two_pages(&s, guest_pvalidate_shared, NULL);
	cr_assert_eq(convert(&s, 1, 1, false), 0);
	cr_expect_eq(vmm_run(&s.m), EFAULT);
	cr_expect_eq(s.m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	cr_expect_eq(s.m.run->memory_fault.gpa, BASE_GPA + PAGE);
	cr_expect(s.m.run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_PRIVATE);
	cr_assert_eq(convert(&s, 1, 1, true), 0);
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_DONE), GM_PVALIDATE_SUCCESS);
	snp_destroy(&s);
}

/* The page state change a guest makes before sharing reaches the VMM as MAP_GPA_RANGE. */
static void guest_psc(struct gm_guest *g, void *arg)
{
	uint64_t r = gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, BASE_GPA + PAGE, 1,
					KVM_MAP_GPA_RANGE_DECRYPTED);

	gm_guest_ucall(g, GM_UCALL_DONE, 1, r);
}

Test(snp, page_state_change)
{
	struct snp s;
	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_HYPERCALL,
				      .args = { 1ULL << KVM_HC_MAP_GPA_RANGE } };

	launch_two_pages(&s, guest_psc, NULL);
	cr_assert_eq(gm_ioctl(s.m.vm, KVM_ENABLE_CAP, &cap), 0);
	cr_assert_eq(vmm_run(&s.m), 0);
	cr_assert_eq(s.m.run->exit_reason, KVM_EXIT_HYPERCALL);
	cr_expect_eq(s.m.run->hypercall.args[0], BASE_GPA + PAGE);
	cr_expect_eq(s.m.run->hypercall.args[2], KVM_MAP_GPA_RANGE_DECRYPTED);
	s.m.run->hypercall.ret = 0;
	cr_expect_eq(vmm_expect_ucall(&s.m, GM_UCALL_DONE), 0);
	snp_destroy(&s);
}

/* A vCPU lives with its VM: one whose fd was closed before LAUNCH_FINISH is still measured. */
Test(snp, closed_vcpu_still_measured)
{
	struct snp s;
	struct gm_snp_launch_info info;
	int vcpu;

	snp_create(&s, 1, true);
	vcpu = gm_ioctl(s.m.vm, KVM_CREATE_VCPU, 0UL);
	cr_assert_geq(vcpu, 0);
	cr_assert_eq(gm_close(vcpu), 0);
	cr_assert_eq(finish(&s), 0);
	cr_assert_eq(gm_snp_launch_info(s.m.vm, &info), 0);
	cr_expect_eq(info.pages_measured[2], 1, "the closed vCPU's VMSA");
	snp_destroy(&s);
}

/* The software platform runs soft vCPUs only. */
Test(snp, soft_backend_only)
{
	int kvm = gm_open_kvm();

	cr_expect_eq(gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SNP_VM | GM_VM_BACKEND_KVM), -1);
	cr_expect_eq(errno, EINVAL);
	gm_close(kvm);
}

/* ---- The guest's report request ---- */

static char key_dir[32];

static void key_init(void)
{
	char path[64];

	strcpy(key_dir, "/tmp/gmem-snp-XXXXXX");
	cr_assert(mkdtemp(key_dir));
	snprintf(path, sizeof(path), "%s/platform.pem", key_dir);
	cr_assert_eq(setenv("GMEM_PLATFORM_KEY", path, 1), 0);
}

static void key_fini(void)
{
	char cmd[96];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", key_dir);
	if (system(cmd))
		fprintf(stderr, "snp_attest: could not remove %s\n", key_dir);
}

struct report_req {
	uint8_t data[64];
	uint8_t report[GM_SNP_REPORT_SIZE];
	int ret, ret_short;
};

static void guest_report(struct gm_guest *g, void *arg)
{
	struct report_req *r = arg;

	r->ret_short = gm_guest_snp_report(g, r->data, r->report, GM_SNP_REPORT_SIZE - 1);
	r->ret = gm_guest_snp_report(g, r->data, r->report, sizeof(r->report));
	gm_guest_ucall(g, GM_UCALL_DONE, 0);
}

/* The report carries the guest's data and the launch digest, signed by the platform key. */
Test(snp_attest, guest_report, .init = key_init, .fini = key_fini)
{
	struct snp s;
	struct gm_snp_launch_info info;
	static struct report_req r;
	char why[160], pem[GM_SNP_PLATFORM_KEY_PEM_MAX];

	for (int i = 0; i < 64; i++)
		r.data[i] = (uint8_t)(0xc0 + i);
	launch_two_pages(&s, guest_report, &r);
	vmm_expect_ucall(&s.m, GM_UCALL_DONE);
	cr_expect_eq(r.ret_short, -EINVAL, "a buffer short of the report");
	cr_assert_eq(r.ret, 0);
	cr_assert_eq(gm_snp_launch_info(s.m.vm, &info), 0);
	cr_expect_arr_eq(r.report + GM_SNP_REPORT_DATA_OFFSET, r.data, 64);
	cr_expect_arr_eq(r.report + GM_SNP_REPORT_MEASUREMENT_OFFSET, info.measurement, 48);
	cr_expect_eq(r.report[0xC0], 0xaa, "HOST_DATA from LAUNCH_FINISH");
	cr_expect_eq(r.report[0x08], 0x00);
	cr_expect_eq(r.report[0x0A], 0x03, "POLICY (bits 16, 17)");
	for (int i = 0; i < 4; i++)
		cr_expect_eq(r.report[0x30 + i], 0, "VMPL: a soft guest asks at VMPL 0");
	cr_assert_gt(gm_snp_platform_key_pem(pem, sizeof(pem)), 0);
	cr_expect_eq(gm_snp_report_verify(r.report, sizeof(r.report), pem, why, sizeof(why)), 0,
		     "%s", why);
	/* Any byte changed under the signature: it no longer verifies. */
	r.report[GM_SNP_REPORT_MEASUREMENT_OFFSET] ^= 1;
	cr_expect_eq(gm_snp_report_verify(r.report, sizeof(r.report), pem, why, sizeof(why)),
		     -EBADMSG);
	snp_destroy(&s);
}

/* Before LAUNCH_FINISH there is no running guest to report on. */
static void guest_report_early(struct gm_guest *g, void *arg)
{
	uint8_t data[64] = { 0 };
	static uint8_t report[GM_SNP_REPORT_SIZE];

	gm_guest_ucall(g, GM_UCALL_DONE, 1, (uint64_t)(int64_t)gm_guest_snp_report(g, data, report,
										   sizeof(report)));
}

Test(snp_attest, report_before_finish, .init = key_init, .fini = key_fini)
{
	struct snp s;

	snp_create(&s, 1, true);
	vmm_vcpu(&s.m, 0, guest_report_early, NULL);
	cr_expect_eq((int64_t)vmm_expect_ucall(&s.m, GM_UCALL_DONE), -EINVAL);
	snp_destroy(&s);
}

/* Only SNP guests have a platform to ask. */
Test(snp_attest, report_not_snp, .init = key_init, .fini = key_fini)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	vmm_vcpu(&m, 0, guest_report_early, NULL);
	cr_expect_eq((int64_t)vmm_expect_ucall(&m, GM_UCALL_DONE), -EINVAL);
	vmm_destroy(&m);
}
