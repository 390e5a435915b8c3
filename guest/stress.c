/* The stress guest: writes and reads the words gmem-stress asks for, one command at a time. */
#include "gapi.h"
#include "layout.h"
#include "stress.h"

#define PAGE 4096ULL

/* Reads gather here first: the mailbox is shared, the data may be accessed as private. */
static void do_read(struct gapi *g, uint64_t mailbox, uint64_t gpa, uint64_t pages)
{
	uint64_t seen[STRESS_MAX_PAGES * STRESS_WORDS_PER_PAGE];

	for (uint64_t p = 0; p < pages; p++)
		for (unsigned w = 0; w < STRESS_WORDS_PER_PAGE; w++)
			seen[p * STRESS_WORDS_PER_PAGE + w] =
				gapi_read64(g, gpa + p * PAGE + w * STRESS_WORD_STRIDE);
	gapi_set_access(g, 0);
	for (uint64_t i = 0; i < pages * STRESS_WORDS_PER_PAGE; i++)
		gapi_write64(g, mailbox + (STRESS_MAILBOX_RESULTS + i) * 8, seen[i]);
}

void stress_guest_scenario(struct gapi *g, unsigned vcpu, uint64_t boot_params_gpa)
{
	uint64_t mailbox = STRESS_MAILBOX_GPA + vcpu * PAGE;

	(void)boot_params_gpa;
	for (;;) {
		uint64_t op, gpa, pages, value;

		gapi_ucall(g, STRESS_UCALL_NEXT, vcpu, 0, 0);
		op = gapi_read64(g, mailbox + STRESS_MAILBOX_OP * 8);
		gpa = gapi_read64(g, mailbox + STRESS_MAILBOX_GPA_WORD * 8);
		pages = gapi_read64(g, mailbox + STRESS_MAILBOX_PAGES * 8);
		value = gapi_read64(g, mailbox + STRESS_MAILBOX_VALUE * 8);
		if (op == STRESS_OP_QUIT)
			return;
		if (pages > STRESS_MAX_PAGES)
			pages = STRESS_MAX_PAGES;
		gapi_set_access(g, (unsigned)gapi_read64(g, mailbox + STRESS_MAILBOX_ACCESS * 8));
		if (op == STRESS_OP_WRITE) {
			for (uint64_t p = 0; p < pages; p++)
				for (unsigned w = 0; w < STRESS_WORDS_PER_PAGE; w++)
					gapi_write64(g, gpa + p * PAGE + w * STRESS_WORD_STRIDE,
						     value + p * STRESS_VALUE_STEP + w);
			gapi_set_access(g, 0);
		} else {
			do_read(g, mailbox, gpa, pages);
		}
	}
}
