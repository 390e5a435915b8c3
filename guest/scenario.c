/* The default guest's scenario: checksum private data, talk through a shared page, punch memory. */
#include "gapi.h"
#include "layout.h"

/*
 * Values of the KVM hypercall ABI. No KVM header is included: this file is
 * built freestanding for the microVM as well as for the host.
 */
#define HC_MAP_GPA_RANGE 12
#define MAP_GPA_DECRYPTED 0ULL         /* shared, 4 KiB pages */
#define MAP_GPA_ENCRYPTED (1ULL << 4)  /* private, 4 KiB pages */

#define SCN_PAGE_SIZE 4096ULL
#define PUNCH_PATTERN 0x68636e7570726967ULL

struct scn {
	struct gapi *g;
	unsigned vcpu;
	unsigned failed; /* first failed check, GUEST_CHECK_NONE while all pass */
};

static void check(struct scn *s, int ok, unsigned nr)
{
	if (!ok && s->failed == GUEST_CHECK_NONE)
		s->failed = nr;
}

/*
 * The message goes to guest memory byte by byte, with no buffer and no libc;
 * the same code writes it and later compares it, so both agree on its text.
 */
struct msg {
	struct gapi *g;
	uint64_t gpa;
	uint64_t len;
	int verify;
	uint64_t differ;
};

static void msg_byte(struct msg *m, char c)
{
	uint64_t at = m->gpa + m->len++;

	if (m->verify)
		m->differ += gapi_read8(m->g, at) != (uint8_t)c;
	else
		gapi_write8(m->g, at, (uint8_t)c);
}

static void msg_str(struct msg *m, const char *str)
{
	while (*str)
		msg_byte(m, *str++);
}

static void msg_dec(struct msg *m, uint64_t v)
{
	char digits[20]; /* 2^64 - 1 has 20 digits */
	unsigned n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		msg_byte(m, digits[--n]);
}

/* "hello from vCPU <n>: private memory checksummed, <words> words", with no NUL. */
static struct msg compose(struct scn *s, uint64_t gpa, uint64_t words, int verify)
{
	struct msg m = { .g = s->g, .gpa = gpa, .verify = verify };

	msg_str(&m, "hello from vCPU ");
	msg_dec(&m, s->vcpu);
	msg_str(&m, ": private memory checksummed, ");
	msg_dec(&m, words);
	msg_str(&m, " words");
	return m;
}

/* (a) Checksum the private data the VMM filled and compare it word by word. */
static void checksum_data(struct scn *s, uint64_t gpa, uint64_t words)
{
	uint64_t sum = GUEST_CHECKSUM_INIT, differ = 0;

	for (uint64_t i = 0; i < words; i++) {
		uint64_t w = gapi_read64(s->g, gpa + 8 * i);

		sum = guest_checksum_step(sum, w);
		differ += w != guest_data_word(s->vcpu, i);
	}
	check(s, differ == 0, GUEST_CHECK_DATA);
	gapi_ucall(s->g, GUEST_UCALL_CHECKSUM, s->vcpu, sum, differ);
}

/* (b), (c) Say hello through a page made shared, then take the page back. */
static void message(struct scn *s, uint64_t gpa, uint64_t words)
{
	uint64_t ret = gapi_hypercall(s->g, HC_MAP_GPA_RANGE, gpa, 1, MAP_GPA_DECRYPTED);
	struct msg m;

	check(s, ret == 0, GUEST_CHECK_TO_SHARED);
	if (ret != 0)
		return; /* the page is still private: the VMM could not read a message */
	m = compose(s, gpa, words, 0);
	gapi_ucall(s->g, GUEST_UCALL_PRINT, s->vcpu, gpa, m.len);

	ret = gapi_hypercall(s->g, HC_MAP_GPA_RANGE, gpa, 1, MAP_GPA_ENCRYPTED);
	check(s, ret == 0, GUEST_CHECK_TO_PRIVATE);
	m = compose(s, gpa, words, 1);
	check(s, m.differ == 0, GUEST_CHECK_MESSAGE_KEPT);
}

/* (d) Dirty the punch area, have the VMM punch it, and see fresh zeroed pages. */
static void punch(struct scn *s, uint64_t gpa, uint64_t size)
{
	uint64_t nonzero = 0;

	for (uint64_t off = 0; off < size; off += 8)
		gapi_write64(s->g, gpa + off, PUNCH_PATTERN ^ off);
	gapi_ucall(s->g, GUEST_UCALL_PUNCH, s->vcpu, gpa, size);
	for (uint64_t off = 0; off < size; off += 8)
		nonzero += gapi_read64(s->g, gpa + off) != 0;
	check(s, nonzero == 0, GUEST_CHECK_PUNCH_ZERO);
}

static uint64_t param(struct scn *s, uint64_t boot_params_gpa, uint64_t offset)
{
	return gapi_read64(s->g, boot_params_gpa + offset);
}

#define PARAM(s, bp, field) param((s), (bp), __builtin_offsetof(struct gm_boot_params, field))

void guest_scenario(struct gapi *g, unsigned vcpu, uint64_t boot_params_gpa)
{
	struct scn s = { .g = g, .vcpu = vcpu, .failed = GUEST_CHECK_NONE };
	uint64_t nr_vcpus, data_size, punch_size, words;

	/* Nothing else in the parameters can be trusted without the magic. */
	if (PARAM(&s, boot_params_gpa, magic) != GUEST_BOOT_MAGIC) {
		gapi_ucall(g, GUEST_UCALL_FAIL, vcpu, GUEST_CHECK_MAGIC, 0);
		return;
	}
	nr_vcpus = PARAM(&s, boot_params_gpa, nr_vcpus);
	data_size = PARAM(&s, boot_params_gpa, data_size);
	punch_size = PARAM(&s, boot_params_gpa, punch_size);
	if (nr_vcpus > GUEST_MAX_VCPUS || vcpu >= nr_vcpus || data_size % 8 || punch_size % 8) {
		gapi_ucall(g, GUEST_UCALL_FAIL, vcpu, GUEST_CHECK_PARAMS, 0);
		return;
	}

	words = data_size / 8;
	checksum_data(&s, PARAM(&s, boot_params_gpa, data_gpa) + vcpu * data_size, words);
	message(&s, PARAM(&s, boot_params_gpa, shared_gpa) + vcpu * SCN_PAGE_SIZE, words);
	punch(&s, PARAM(&s, boot_params_gpa, punch_gpa) + vcpu * punch_size, punch_size);
	gapi_ucall(g, GUEST_UCALL_RESULT, vcpu, s.failed == GUEST_CHECK_NONE, s.failed);
}
