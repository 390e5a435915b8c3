/* The contract between gmem-stress and its guest: mailboxes, commands and the words written. */
#ifndef GUEST_STRESS_H
#define GUEST_STRESS_H

#include <stdint.h>

/*
 * Guest-physical layout: the system slot from gpa 0 holds what layout.h
 * places there (page tables, stacks, the image at GUEST_IMAGE_GPA) and one
 * mailbox page per vCPU at STRESS_MAILBOX_GPA. It stays shared and bound.
 * The data under test starts at STRESS_DATA_GPA.
 */
#define STRESS_MAILBOX_GPA 0x200000ULL
#define STRESS_DATA_GPA 0x1000000ULL

/*
 * A command, written by the VMM into the vCPU's mailbox while the guest
 * waits in STRESS_UCALL_NEXT: word 0 the op, 1 the gpa of the first page,
 * 2 the number of pages, 3 the value of word 0 of the first page (writes),
 * 4 the access kind (enum gm_access; soft backend only). Reads leave their
 * results from word STRESS_MAILBOX_RESULTS on, STRESS_WORDS_PER_PAGE a page.
 */
enum stress_op { STRESS_OP_QUIT = 1, STRESS_OP_WRITE, STRESS_OP_READ };
#define STRESS_MAILBOX_OP 0
#define STRESS_MAILBOX_GPA_WORD 1
#define STRESS_MAILBOX_PAGES 2
#define STRESS_MAILBOX_VALUE 3
#define STRESS_MAILBOX_ACCESS 4
#define STRESS_MAILBOX_RESULTS 8
#define STRESS_MAX_PAGES 56

/* The guest's only exit of its own: "done, give me the next command" (a0 = vCPU). */
#define STRESS_UCALL_NEXT 0x200

/*
 * Each page carries STRESS_WORDS_PER_PAGE checked words, STRESS_WORD_STRIDE
 * bytes apart. Word w of a page written by write id holds
 * id << 24 | page << 4 | w: a value names the write, the page and the word,
 * and is never 0. Consecutive pages of one command take consecutive ids.
 */
#define STRESS_WORDS_PER_PAGE 8
#define STRESS_WORD_STRIDE 584 /* the last word ends the page */
#define STRESS_VALUE_STEP ((1ULL << 24) + (1ULL << 4))

static inline uint64_t stress_value(uint64_t id, uint64_t page, unsigned word)
{
	return id << 24 | (page & 0xfffff) << 4 | word;
}

#endif
