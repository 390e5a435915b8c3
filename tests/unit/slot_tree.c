/* The memslots' persistent treap against a plain array, including failed changes; and a VM with every slot. */
#include <stdlib.h>

#include <criterion/criterion.h>

#include "internal.h"
#include "rcu.h"
#include "slot_tree.h"
#include "unit/vmm.h"

#define RANGES 512          /* candidate ranges: range i is [i * 8, i * 8 + 1 + i % 7) */

static gfn_t range_base(int i)
{
	return (gfn_t)i * 8;
}

static uint64_t range_pages(int i)
{
	return 1 + (uint64_t)(i % 7);
}

/* Checks every gfn of the space against which ranges are in. */
static void check_against(struct slot_tree *t, const bool *in)
{
	for (gfn_t gfn = 0; gfn < RANGES * 8; gfn++) {
		int i = (int)(gfn / 8);
		void *want = in[i] && gfn - range_base(i) < range_pages(i) ? (void *)(uintptr_t)(i + 1) : NULL;

		cr_assert_eq(slot_tree_find(t, gfn), want, "gfn %llu", (unsigned long long)gfn);
	}
	for (int i = 0; i < RANGES; i++) {
		/* A range covering range i and its neighbours' first pages meets the ones that are in. */
		void *hit = slot_tree_overlap(t, range_base(i), range_base(i) + 8, NULL);

		cr_assert_eq(hit, in[i] ? (void *)(uintptr_t)(i + 1) : NULL, "overlap %d", i);
	}
}

Test(slot_tree, random_changes_match_an_array)
{
	struct slot_tree t = { 0 };
	bool in[RANGES] = { 0 };
	size_t nr = 0;
	int failures = 0;

	srand(7);
	for (int step = 0; step < 4000; step++) {
		struct slot_tree_change c;
		int i = rand() % RANGES, j = rand() % RANGES;
		bool fail = step % 11 == 0;

		/* Some changes run out of memory part way: the n-th node they make fails. */
		if (fail)
			gm_heap_fail_after(1 + rand() % 4);
		slot_tree_change_begin(&t, &c);
		/* One change may remove one range and add another, as a slot move does. */
		if (in[i])
			slot_tree_remove(&c, range_base(i));
		if (!in[j] || j == i)
			slot_tree_insert(&c, range_base(j), range_pages(j), (void *)(uintptr_t)(j + 1));
		int ret = slot_tree_change_end(&c);
		gm_heap_fail_after(0);
		if (ret) {
			/* A failed change left the tree as it was. */
			cr_assert_eq(ret, -ENOMEM);
			cr_assert_eq(t.nr, nr);
			failures++;
		} else {
			if (in[i])
				in[i] = false, nr--;
			if (!in[j])
				in[j] = true, nr++;
			cr_assert_eq(t.nr, nr);
		}
		if (step % 500 == 0)
			check_against(&t, in);
	}
	check_against(&t, in);
	cr_expect_gt(failures, 0, "no change ran out of memory: the failure path went untested");
	gm_rcu_barrier();
	slot_tree_destroy(&t);
}

static void guest_read_slots(struct gm_guest *g, void *arg)
{
	uint64_t sum = 0;

	/* First, a middle and the last slot: each page reads the slot's own number. */
	sum += gm_guest_read64(g, 0);
	sum += gm_guest_read64(g, 16000 * 2 * 4096ULL);
	sum += gm_guest_read64(g, 32763 * 2 * 4096ULL);
	gm_guest_ucall(g, GM_UCALL_DONE, 1, sum);
}

/* A VM with every slot KVM_CAP_NR_MEMSLOTS allows, as set_memory_region_test's max slots case. */
Test(slot_tree, vm_with_every_slot)
{
	struct vmm m;
	long nr;
	uint64_t *pages;

	vmm_init(&m, KVM_X86_DEFAULT_VM | GM_VM_BACKEND_SOFT);
	nr = gm_ioctl(m.vm, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	cr_assert_eq(nr, 32764);
	pages = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(pages, MAP_FAILED);
	pages[0] = 1;
	pages[512] = 16000;
	pages[1024] = 32763;
	for (long i = 0; i < nr; i++) {
		void *hva = i == 16000 ? &pages[512] : i == 32763 ? &pages[1024] : (void *)pages;

		cr_assert_eq(vmm_hva_slot(&m, (uint32_t)i, (uint64_t)i * 2 * 4096, 4096, hva), 0,
			     "slot %ld", i);
	}
	/* One more is refused, as the kernel refuses a slot id past the limit. */
	cr_expect_eq(vmm_hva_slot(&m, (uint32_t)nr, (uint64_t)nr * 2 * 4096, 4096, pages), EINVAL);
	/* Overlapping an existing slot anywhere in the array is EEXIST. */
	cr_expect_eq(vmm_hva_slot(&m, 0, 16000 * 2 * 4096ULL, 4096, pages), EEXIST);
	vmm_vcpu(&m, 0, guest_read_slots, NULL);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 1 + 16000 + 32763);
	for (long i = 0; i < nr; i++)
		cr_assert_eq(vmm_hva_slot(&m, (uint32_t)i, (uint64_t)i * 2 * 4096, 0, pages), 0);
	vmm_destroy(&m);
	munmap(pages, 3 * 4096);
}
