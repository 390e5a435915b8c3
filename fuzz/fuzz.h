/* What the fuzz targets share: reading inputs, failing, fds, page sets, guarded touches, the probe vCPU. */
#ifndef FUZZ_FUZZ_H
#define FUZZ_FUZZ_H

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <gmem/gmem.h>
#include <urcu-bp.h>

#define FUZZ_UNUSED __attribute__((unused))

#define PAGE_SIZE 4096ULL
#define SZ_2M (2ULL << 20)
#define SZ_1G (1ULL << 30)

/* An fd number no process of ours reaches, for the EBADF paths. */
#define BAD_FD (1 << 24)

struct input {
	const uint8_t *p;
	size_t n;
};

/* The operation being run, for reports. */
static unsigned fuzz_op;

static FUZZ_UNUSED uint8_t u8(struct input *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

/* Little-endian; each byte read in its own statement, so the order is defined. */
static FUZZ_UNUSED uint16_t u16(struct input *in)
{
	uint16_t lo = u8(in);

	return (uint16_t)(lo | u8(in) << 8);
}

static FUZZ_UNUSED uint32_t u32(struct input *in)
{
	uint32_t lo = u16(in);

	return lo | (uint32_t)u16(in) << 16;
}

static FUZZ_UNUSED uint64_t u64(struct input *in)
{
	uint64_t lo = u32(in);

	return lo | (uint64_t)u32(in) << 32;
}

/* Fills buf with input bytes; zeros once the input runs out. */
static FUZZ_UNUSED void take_bytes(struct input *in, void *buf, size_t n)
{
	size_t k = n < in->n ? n : in->n;

	memcpy(buf, in->p, k);
	memset((char *)buf + k, 0, n - k);
	in->p += k;
	in->n -= k;
}

/* An invariant the library promises does not hold: abort, so libFuzzer keeps the input. */
static FUZZ_UNUSED void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nINVARIANT FAILED at op %u: ", fuzz_op);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* A failed call must return -1 and set one of the errnos listed (0-terminated). */
static FUZZ_UNUSED void check_errno(const char *what, int err, ...)
{
	va_list ap;
	int e;

	va_start(ap, err);
	while ((e = va_arg(ap, int)))
		if (e == err) {
			va_end(ap);
			return;
		}
	va_end(ap);
	fail("%s: unexpected errno %d (%s)", what, err, strerror(err));
}

static FUZZ_UNUSED int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		abort();
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* At the end of an input: the library holds no VM, file or fd, and the process no more fds. */
static FUZZ_UNUSED void check_nothing_left(int fds_before)
{
	struct gm_stats s;
	int fds_after = count_fds();

	if (gm_stats(&s))
		fail("gm_stats failed");
	if (s.vms || s.gmem_files || s.open_fds)
		fail("at the end of the input: %llu VMs, %llu files, %llu fds still live",
		     (unsigned long long)s.vms, (unsigned long long)s.gmem_files,
		     (unsigned long long)s.open_fds);
	if (fds_after != fds_before)
		fail("process fds %d before the input, %d after", fds_before, fds_after);
}

/* ---- sets of pages ------------------------------------------------------------------- */

/* Sorted, disjoint, non-adjacent ranges of pages [start, end). */
struct pageset {
	uint64_t (*r)[2];
	size_t nr, cap;
};

static FUZZ_UNUSED void ps_reserve(struct pageset *s, size_t nr)
{
	if (nr <= s->cap)
		return;
	s->cap = nr * 2;
	s->r = realloc(s->r, s->cap * sizeof(*s->r));
	if (!s->r)
		abort();
}

/* Takes [a, b) out of the set. */
static FUZZ_UNUSED void ps_remove(struct pageset *s, uint64_t a, uint64_t b)
{
	size_t out = 0;

	if (a >= b)
		return;
	ps_reserve(s, s->nr + 1);
	for (size_t i = 0; i < s->nr; i++) {
		uint64_t x = s->r[i][0], y = s->r[i][1];

		if (y <= a || x >= b) {
			s->r[out][0] = x;
			s->r[out++][1] = y;
			continue;
		}
		if (x < a) {
			s->r[out][0] = x;
			s->r[out++][1] = a;
		}
		if (b < y) {
			/* Only one range can straddle b, and it comes last: no overlap with what follows. */
			memmove(&s->r[out + 1], &s->r[i + 1], (s->nr - i - 1) * sizeof(*s->r));
			s->r[out][0] = b;
			s->r[out++][1] = y;
			s->nr = out + (s->nr - i - 1);
			return;
		}
	}
	s->nr = out;
}

/* Puts [a, b) in the set, merged with its neighbours. */
static FUZZ_UNUSED void ps_add(struct pageset *s, uint64_t a, uint64_t b)
{
	size_t at = 0;

	if (a >= b)
		return;
	ps_remove(s, a, b);
	ps_reserve(s, s->nr + 1);
	while (at < s->nr && s->r[at][0] < a)
		at++;
	memmove(&s->r[at + 1], &s->r[at], (s->nr - at) * sizeof(*s->r));
	s->r[at][0] = a;
	s->r[at][1] = b;
	s->nr++;
	if (at + 1 < s->nr && s->r[at + 1][0] == b) {
		s->r[at][1] = s->r[at + 1][1];
		memmove(&s->r[at + 1], &s->r[at + 2], (s->nr - at - 2) * sizeof(*s->r));
		s->nr--;
	}
	if (at > 0 && s->r[at - 1][1] == a) {
		s->r[at - 1][1] = s->r[at][1];
		memmove(&s->r[at], &s->r[at + 1], (s->nr - at - 1) * sizeof(*s->r));
		s->nr--;
	}
}

/* Whether any page of [a, b) is in the set. */
static FUZZ_UNUSED bool ps_meets(const struct pageset *s, uint64_t a, uint64_t b)
{
	for (size_t i = 0; i < s->nr; i++)
		if (s->r[i][0] < b && a < s->r[i][1])
			return true;
	return false;
}

/* Whether every page of [a, b) is in the set (its ranges are merged: one holds them all). */
static FUZZ_UNUSED bool ps_meets_all(const struct pageset *s, uint64_t a, uint64_t b)
{
	for (size_t i = 0; i < s->nr; i++)
		if (s->r[i][0] <= a && b <= s->r[i][1])
			return true;
	return a >= b;
}

static FUZZ_UNUSED uint64_t ps_count(const struct pageset *s)
{
	uint64_t n = 0;

	for (size_t i = 0; i < s->nr; i++)
		n += s->r[i][1] - s->r[i][0];
	return n;
}

/* ---- guarded host accesses ------------------------------------------------------------ */

static sigjmp_buf sigbus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(sigbus_jmp, 1);
}

/* Touches one byte (writing val first if write); true when the access raised SIGBUS. */
static FUZZ_UNUSED bool touch(volatile char *addr, bool write, uint8_t val, uint8_t *seen)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	volatile bool faulted = false;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(sigbus_jmp, 1) == 0) {
		if (write)
			*addr = (char)val;
		*seen = (uint8_t)*addr;
	} else {
		faulted = true;
	}
	sigaction(SIGBUS, &old, NULL);
	return faulted;
}

/* Reads 8 bytes; true when the access raised SIGBUS. */
static FUZZ_UNUSED bool peek64(const volatile char *addr, uint64_t *val)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	volatile bool faulted = false;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(sigbus_jmp, 1) == 0)
		memcpy(val, (const char *)addr, sizeof(*val));
	else
		faulted = true;
	sigaction(SIGBUS, &old, NULL);
	return faulted;
}

/* ---- the probe vCPU: one guest access to a guest-physical address, to see the bindings -- */

/*
 * The probe guest waits at a ucall; each KVM_RUN then reads 8 bytes at
 * req.gpa, writes req.tag there if it read req.expect and req.write is set,
 * and waits again. What the access met (memory, MMIO, a memory fault) is what
 * the VM's memslots and files say about that address.
 */
struct probe_req {
	uint64_t gpa, expect, tag, val;
	int write;
	enum gm_access access; /* the kind of the single access (AUTO for a batch) */
	uint64_t fault_flags;  /* memory_fault.flags of the exit, when it ended in one */
	/* A batch instead (probe_batch): read batch[next..n), each into vals[]. */
	const uint64_t *batch;
	size_t batch_n, batch_next;
	uint64_t vals[16];
};

static struct probe_req probe_req;

#define PROBE_MMIO_DATA 0x6d6d696f6d6d696fULL

static void probe_guest(struct gm_guest *guest, void *arg)
{
	struct probe_req *p = arg;

	for (;;) {
		uint64_t v;

		gm_guest_ucall(guest, GM_UCALL_SYNC, 0);
		/* One run for a whole batch: a vCPU handoff costs more than the reads. */
		if (p->batch_n) {
			gm_guest_set_access(guest, GM_ACCESS_AUTO);
			for (size_t i = p->batch_next; i < p->batch_n; i = p->batch_next) {
				p->vals[i] = gm_guest_read64(guest, p->batch[i]);
				p->batch_next = i + 1;
			}
			continue;
		}
		gm_guest_set_access(guest, p->access);
		v = gm_guest_read64(guest, p->gpa);
		p->val = v;
		if (p->write && v == p->expect)
			gm_guest_write64(guest, p->gpa, p->tag);
	}
}

struct probe_vcpu {
	int fd; /* -1: none */
	struct kvm_run *run;
	size_t run_size;
	unsigned long started; /* vCPUs made so far: a vCPU's id stays taken after its close */
};

/*
 * A vCPU of vm_fd running the probe guest, parked at its first ucall; false if creation
 * failed. Its id is id, then id + 1 for the next one a stopped probe makes, and so on.
 */
static FUZZ_UNUSED bool probe_start(struct probe_vcpu *pv, int vm_fd, unsigned long id)
{
	int kvm_size = 3 * (int)PAGE_SIZE;

	pv->fd = gm_ioctl(vm_fd, KVM_CREATE_VCPU, id + pv->started);
	if (pv->fd < 0)
		return false;
	pv->started++;
	if (gm_vcpu_set_guest(pv->fd, probe_guest, &probe_req))
		fail("gm_vcpu_set_guest on a fresh vCPU failed");
	pv->run_size = (size_t)kvm_size;
	pv->run = gm_mmap(NULL, pv->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, pv->fd, 0);
	if (pv->run == MAP_FAILED)
		fail("gm_mmap of a vCPU: %s", strerror(errno));
	if (gm_ioctl(pv->fd, KVM_RUN, 0) || pv->run->exit_reason != KVM_EXIT_IO)
		fail("the probe guest did not reach its first ucall");
	return true;
}

static FUZZ_UNUSED void probe_stop(struct probe_vcpu *pv)
{
	if (pv->fd < 0)
		return;
	if (gm_munmap(pv->run, pv->run_size))
		fail("gm_munmap of a vCPU's run area: %s", strerror(errno));
	if (gm_close(pv->fd))
		fail("gm_close(vcpu): %s", strerror(errno));
	pv->fd = -1;
	pv->run = NULL;
}

enum probe_result {
	PROBE_MEMORY,  /* the access read memory; probe_req.val has it */
	PROBE_MMIO,    /* no slot: an MMIO exit at the address */
	PROBE_FAULT,   /* KVM_EXIT_MEMORY_FAULT: the vCPU stays stuck there and is stopped */
};

/*
 * One access of the given kind through the probe vCPU; the result, with what
 * the exits said checked (a memory fault's flags are left in probe_req.fault_flags).
 */
static FUZZ_UNUSED enum probe_result probe_access_kind(struct probe_vcpu *pv, uint64_t gpa,
						       enum gm_access access, bool write,
						       uint64_t expect, uint64_t tag)
{
	bool mmio = false;
	struct gm_ucall uc;
	int ret;

	probe_req = (struct probe_req){
		.gpa = gpa, .expect = expect, .tag = tag, .write = write, .access = access,
	};
	for (;;) {
		ret = gm_ioctl(pv->fd, KVM_RUN, 0);
		if (ret && errno == EFAULT && pv->run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			if (pv->run->memory_fault.gpa != (gpa & ~(PAGE_SIZE - 1)) ||
			    pv->run->memory_fault.size != PAGE_SIZE)
				fail("memory fault at %#llx size %#llx for an access at %#llx",
				     (unsigned long long)pv->run->memory_fault.gpa,
				     (unsigned long long)pv->run->memory_fault.size,
				     (unsigned long long)gpa);
			probe_req.fault_flags = pv->run->memory_fault.flags;
			probe_stop(pv);
			return PROBE_FAULT;
		}
		if (ret)
			fail("KVM_RUN of the probe at %#llx: %s", (unsigned long long)gpa,
			     strerror(errno));
		if (pv->run->exit_reason != KVM_EXIT_MMIO)
			break;
		if (pv->run->mmio.phys_addr != gpa || pv->run->mmio.len != 8 || pv->run->mmio.is_write)
			fail("MMIO exit at %#llx len %u write %u for a read at %#llx",
			     (unsigned long long)pv->run->mmio.phys_addr, pv->run->mmio.len,
			     pv->run->mmio.is_write, (unsigned long long)gpa);
		memcpy(pv->run->mmio.data, &(uint64_t){ PROBE_MMIO_DATA }, 8);
		mmio = true;
	}
	if (pv->run->exit_reason != KVM_EXIT_IO || gm_vcpu_get_ucall(pv->fd, &uc) ||
	    uc.cmd != GM_UCALL_SYNC)
		fail("the probe at %#llx ended with exit %u", (unsigned long long)gpa,
		     pv->run->exit_reason);
	if (mmio && probe_req.val != PROBE_MMIO_DATA)
		fail("the probe read %#llx, not the MMIO data", (unsigned long long)probe_req.val);
	return mmio ? PROBE_MMIO : PROBE_MEMORY;
}

/* probe_access_kind with the SW_PROTECTED default: private where the memory is private. */
static FUZZ_UNUSED enum probe_result probe_access(struct probe_vcpu *pv, uint64_t gpa,
						  bool write, uint64_t expect, uint64_t tag)
{
	return probe_access_kind(pv, gpa, GM_ACCESS_AUTO, write, expect, tag);
}

/*
 * probe_access for each of gpas[0..n) (n <= 16), in one run of the probe
 * guest but for the exits: results[i] and, for memory, vals[i]. A memory
 * fault stops the probe vCPU and a new one goes on with the next address;
 * the probe is left running.
 */
static FUZZ_UNUSED void probe_batch(struct probe_vcpu *pv, int vm_fd, unsigned long id,
				    const uint64_t *gpas, size_t n, int *results, uint64_t *vals)
{
	struct gm_ucall uc;
	int ret;

	probe_req = (struct probe_req){ .batch = gpas, .batch_n = n };
	for (size_t i = 0; i < n; i++)
		results[i] = PROBE_MEMORY;
	for (;;) {
		size_t i;

		if (pv->fd < 0 && !probe_start(pv, vm_fd, id))
			fail("KVM_CREATE_VCPU for the probe: %s", strerror(errno));
		ret = gm_ioctl(pv->fd, KVM_RUN, 0);
		/* The address the guest stopped at: it moves on only after a read. */
		i = probe_req.batch_next;
		if (ret && errno == EFAULT && pv->run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			if (i >= n || pv->run->memory_fault.gpa != (gpas[i] & ~(PAGE_SIZE - 1)) ||
			    pv->run->memory_fault.size != PAGE_SIZE)
				fail("memory fault at %#llx size %#llx, not at the batch's next address",
				     (unsigned long long)pv->run->memory_fault.gpa,
				     (unsigned long long)pv->run->memory_fault.size);
			results[i] = PROBE_FAULT;
			probe_stop(pv);
			probe_req.batch_next = i + 1;
			continue;
		}
		if (ret)
			fail("KVM_RUN of the probe batch: %s", strerror(errno));
		if (pv->run->exit_reason == KVM_EXIT_MMIO) {
			if (i >= n || pv->run->mmio.phys_addr != gpas[i] || pv->run->mmio.len != 8 ||
			    pv->run->mmio.is_write)
				fail("MMIO exit at %#llx in a batch", (unsigned long long)pv->run->mmio.phys_addr);
			memcpy(pv->run->mmio.data, &(uint64_t){ PROBE_MMIO_DATA }, 8);
			results[i] = PROBE_MMIO;
			continue;
		}
		if (pv->run->exit_reason != KVM_EXIT_IO || gm_vcpu_get_ucall(pv->fd, &uc) ||
		    uc.cmd != GM_UCALL_SYNC)
			fail("the probe batch ended with exit %u", pv->run->exit_reason);
		if (probe_req.batch_next == n)
			break;
	}
	for (size_t i = 0; i < n; i++) {
		if (results[i] == PROBE_MMIO && probe_req.vals[i] != PROBE_MMIO_DATA)
			fail("the probe read %#llx, not the MMIO data",
			     (unsigned long long)probe_req.vals[i]);
		vals[i] = results[i] == PROBE_MEMORY ? probe_req.vals[i] : 0;
	}
	probe_req.batch_n = 0;
}

/*
 * liburcu's call_rcu thread batches callbacks with a 10 ms sleep, so each
 * rcu_barrier (one per VM release) would cost 10 ms, and a use after free
 * of an RCU-freed object would show only when the batch ran. The targets run
 * callbacks at once after a grace period instead, as the library's TSan
 * build does: the same guarantee, deterministic and fast.
 */
void call_rcu(struct rcu_head *head, void (*fn)(struct rcu_head *head))
{
	synchronize_rcu();
	fn(head);
}

void rcu_barrier(void)
{
}

#endif
