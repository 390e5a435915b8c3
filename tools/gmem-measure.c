/* gmem-measure: the launch digest `gmem-vm --vm snp` will produce, computed offline from the image. */
#define _GNU_SOURCE
#include <gmem/gmem.h>

#include "vm_config.h"

int main(int argc, char **argv)
{
	static const uint8_t vmsa[PAGE]; /* a soft vCPU's VMSA is a zero page */
	struct measured_range r[NR_MEASURED_RANGES];
	struct options opt;
	struct layout lay;
	struct image img = { 0 };
	uint8_t digest[48] = { 0 };
	char *mem;

	prog = "gmem-measure";
	help_intro = "Prints the SEV-SNP launch digest (hex) that gmem-vm --vm snp with the same memory,\n"
		     "vCPU and image options produces, computed from the image without running a VM.\n"
		     "Options that only change the run (--vm, --report, -v, -q) are accepted and change\n"
		     "nothing here; what gmem-vm --vm snp refuses (--backend kvm, --image) is refused.";
	parse_options(argc, argv, &opt);
	if (opt.write_image) {
		write_image(opt.write_image);
		return 0;
	}
	snp_check_options(&opt);
	select_image(&opt, &img);
	plan_layout_or_exit(&lay, &opt, &img);
	/* What the VMM loads, laid out as in guest memory up to the end of the layout. */
	mem = calloc(1, lay.end);
	if (!mem)
		fatal("holding the launch contents", ENOMEM);
	fill_launch_memory(mem, &lay, &opt, &img, NULL);
	measured_ranges(&lay, &opt, r);
	for (int i = 0; i < NR_MEASURED_RANGES; i++)
		for (uint64_t gpa = r[i].gpa; gpa < r[i].gpa + r[i].size; gpa += PAGE)
			if (gm_snp_launch_digest_page(digest, KVM_SEV_SNP_PAGE_TYPE_NORMAL, gpa, mem + gpa))
				fatal("SHA-384", ENOMEM);
	/* LAUNCH_FINISH adds each vCPU's VMSA. */
	for (unsigned v = 0; v < opt.vcpus; v++)
		if (gm_snp_launch_digest_page(digest, 2, GM_SNP_VMSA_GPA, vmsa))
			fatal("SHA-384", ENOMEM);
	for (size_t i = 0; i < sizeof(digest); i++)
		printf("%02x", digest[i]);
	printf("\n");
	free(mem);
	free(img.owned);
	return 0;
}
