/* SEV-SNP's launch on the software trusted entity, behind KVM's uAPI as arch/x86/kvm/svm/sev.c has it. */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "gmem.h"
#include "populate.h"
#include "platform/launch_digest.h"
#include "platform/psp.h"
#include "platform/snp.h"
#include "platform/snp_report.h"

/* The policy bits the platform knows: ABI minor and major, SMT, MBO, MIGRATE_MA, DEBUG, SINGLE_SOCKET. */
#define SNP_POLICY_MASK_VALID    0x1fffffULL
#define SNP_POLICY_MASK_RSVD_MBO (1ULL << 17)
#define GHCB_VERSION_MAX         2
#define GHCB_VERSION_DEFAULT     2
/* VMSA features a soft vCPU has: none (its state is not x86 registers). */
#define SNP_VMSA_FEATURES        0ULL

/* The ID block and ID authentication structure of LAUNCH_FINISH (SNP ABI, 56860). */
#define ID_BLOCK_LD_OFF        0x00
#define ID_BLOCK_FAMILY_OFF    0x30
#define ID_BLOCK_IMAGE_OFF     0x40
#define ID_BLOCK_SVN_OFF       0x54
#define ID_BLOCK_POLICY_OFF    0x58
#define ID_AUTH_ID_KEY_OFF     0x240
#define ID_AUTH_AUTHOR_KEY_OFF 0x680
#define ID_AUTH_KEY_SIZE       0x404

enum snp_guest_state {
	SNP_STATE_LAUNCH = 1, /* after LAUNCH_START: pages can be added */
	SNP_STATE_RUNNING,    /* after LAUNCH_FINISH */
};

/* The guest context (GCTX) the firmware keeps for one VM. */
struct snp_vm {
	struct vm_platform base;
	bool has_context;          /* LAUNCH_START made the context */
	enum snp_guest_state state;
	uint16_t ghcb_version;
	int sev_fd;                    /* LAUNCH_START's device fd: LAUNCH_FINISH goes to it */
	uint64_t policy;
	uint8_t gosvw[16];
	uint8_t ld[SNP_DIGEST_SIZE];   /* the launch digest, MEASUREMENT in reports */
	uint64_t measured[8];          /* pages added, by SNP page type */
	uint8_t host_data[KVM_SEV_SNP_FINISH_DATA_SIZE];
	uint8_t family_id[16], image_id[16];
	uint32_t guest_svn;
	uint8_t id_key_digest[SNP_DIGEST_SIZE], author_key_digest[SNP_DIGEST_SIZE];
	uint8_t report_id[32];
	bool vcek_disabled, author_key_en;
};

/* One command at a time, as the PSP runs them (sev_cmd_mutex); taken before slots.lock. */
static pthread_mutex_t psp_lock = PTHREAD_MUTEX_INITIALIZER;

static void snp_vm_release(struct vm_platform *p)
{
	gm_free(gm_container_of(p, struct snp_vm, base));
}

/* The VM's context once KVM_SEV_INIT2 made it an SNP guest (sev_snp_guest), else NULL. */
static struct snp_vm *snp_of(struct vm *vm)
{
	struct vm_platform *p = atomic_load(&vm->platform);

	return p ? gm_container_of(p, struct snp_vm, base) : NULL;
}

/* kvm->created_vcpus: any vCPU ever created, its fd closed or not (a vCPU lives with its VM). */
static bool vm_created_vcpus(struct vm *vm)
{
	bool any = false;

	pthread_mutex_lock(&vm->slots.lock);
	for (size_t i = 0; i < sizeof(vm->vcpu_ids) / sizeof(vm->vcpu_ids[0]); i++)
		any |= vm->vcpu_ids[i] != 0;
	pthread_mutex_unlock(&vm->slots.lock);
	return any;
}

/* sev_guest_init2 and __sev_guest_init, for the SNP type. */
static int snp_guest_init2(struct vm *vm, struct kvm_sev_cmd *cmd)
{
	struct kvm_sev_init data;
	struct snp_vm *snp;

	/* need_init: only the SEV types have it, and only until the first init. */
	if (vm_type(vm) != KVM_X86_SNP_VM || snp_of(vm))
		return -EINVAL;
	if (gm_copy_from_user(&data, (void *)(uintptr_t)cmd->data, sizeof(data)))
		return -EFAULT;
	if (vm_created_vcpus(vm))
		return -EINVAL;
	if (data.flags)
		return -EINVAL;
	if (data.vmsa_features & ~SNP_VMSA_FEATURES)
		return -EINVAL;
	/* SNP speaks GHCB version 2 or newer only. */
	if (data.ghcb_version > GHCB_VERSION_MAX || (data.ghcb_version && data.ghcb_version < 2))
		return -EINVAL;
	snp = gm_zalloc(sizeof(*snp));
	if (!snp)
		return -ENOMEM;
	snp->base.release = snp_vm_release;
	snp->ghcb_version = data.ghcb_version ? data.ghcb_version : GHCB_VERSION_DEFAULT;
	atomic_store(&vm->platform, &snp->base);
	return 0;
}

static int snp_launch_start(struct vm *vm, struct kvm_sev_cmd *cmd)
{
	struct snp_vm *snp = snp_of(vm);
	struct kvm_sev_snp_launch_start params;

	if (!snp)
		return -ENOTTY;
	if (gm_copy_from_user(&params, (void *)(uintptr_t)cmd->data, sizeof(params)))
		return -EFAULT;
	/* One context per VM. */
	if (snp->has_context)
		return -EINVAL;
	if (params.flags)
		return -EINVAL;
	if (params.policy & ~SNP_POLICY_MASK_VALID)
		return -EINVAL;
	if (!(params.policy & SNP_POLICY_MASK_RSVD_MBO))
		return -EINVAL;
	/* SNP_GCTX_CREATE goes to sev_fd first; KVM reports its failure as ENOTTY. */
	if (psp_check_fd((int)cmd->sev_fd))
		return -ENOTTY;
	if (RAND_bytes(snp->report_id, sizeof(snp->report_id)) != 1)
		return -ENOMEM;
	snp->has_context = true;
	snp->sev_fd = (int)cmd->sev_fd;
	snp->state = SNP_STATE_LAUNCH;
	snp->policy = params.policy;
	memcpy(snp->gosvw, params.gosvw, sizeof(snp->gosvw));
	memset(snp->ld, 0, sizeof(snp->ld));
	memset(snp->measured, 0, sizeof(snp->measured));
	return 0;
}

/*
 * The firmware's SNP_LAUNCH_UPDATE of one page already in the guest's RMP
 * state: sets its contents as the page type says and extends the digest.
 */
static int fw_launch_update(struct snp_vm *snp, int sev_fd, uint8_t type, gpa_t gpa, void *page,
			    uint32_t *fw_error)
{
	int ret = psp_check_fd(sev_fd);

	if (ret)
		return ret;
	if (snp->state != SNP_STATE_LAUNCH) {
		*fw_error = SEV_RET_INVALID_GUEST_STATE;
		return -EIO;
	}
	/* The firmware writes these: zeros, and a secrets page without keys (docs/platform.md). */
	if (type == KVM_SEV_SNP_PAGE_TYPE_ZERO || type == KVM_SEV_SNP_PAGE_TYPE_SECRETS)
		memset(page, 0, GM_PAGE_SIZE);
	ret = launch_digest_page(snp->ld, type, gpa, page);
	if (!ret)
		snp->measured[type]++;
	return ret;
}

struct snp_populate_args {
	struct snp_vm *snp;
	int sev_fd;
	uint8_t type;
	uint32_t fw_error;
};

/* sev_gmem_post_populate: the page must be the hypervisor's; it becomes the guest's, measured. */
static int snp_post_populate(struct gmem *g, pgoff_t index, gfn_t gfn, void *dst, const void *src,
			     void *opaque)
{
	struct snp_populate_args *a = opaque;
	int ret;

	if (!g->rmp)
		return -EINVAL;
	if (rmp_get(g->rmp, index) != RMP_HYPERVISOR)
		return -EEXIST;
	if (src)
		memcpy(dst, src, GM_PAGE_SIZE);
	/* rmp_make_private, then the firmware validates it; on failure it is reclaimed. */
	ret = rmp_set(g->rmp, index, index + 1, RMP_VALIDATED);
	if (ret)
		return ret;
	ret = fw_launch_update(a->snp, a->sev_fd, a->type, gfn << GM_PAGE_SHIFT, dst, &a->fw_error);
	if (ret)
		rmp_set(g->rmp, index, index + 1, RMP_HYPERVISOR);
	return ret;
}

static bool launch_update_type_ok(uint8_t type)
{
	return type == KVM_SEV_SNP_PAGE_TYPE_NORMAL || type == KVM_SEV_SNP_PAGE_TYPE_ZERO ||
	       type == KVM_SEV_SNP_PAGE_TYPE_UNMEASURED || type == KVM_SEV_SNP_PAGE_TYPE_SECRETS ||
	       type == KVM_SEV_SNP_PAGE_TYPE_CPUID;
}

/* Whether gfn's slot is bound to a guest_memfd (kvm_slot_has_gmem); slots.lock held. */
static bool slot_has_gmem(struct vm *vm, gfn_t gfn)
{
	struct memslot_view s;
	bool has_gmem;

	if (!memslot_lookup(&vm->slots, gfn, &s))
		return false;
	has_gmem = s.has_gmem;
	memslot_view_put_locked(&s);
	return has_gmem;
}

static int snp_launch_update(struct vm *vm, struct kvm_sev_cmd *cmd)
{
	struct snp_vm *snp = snp_of(vm);
	struct kvm_sev_snp_launch_update params;
	struct snp_populate_args args = { .snp = snp, .sev_fd = (int)cmd->sev_fd };
	const void *src;
	long count;

	if (!snp || !snp->has_context)
		return -EINVAL;
	if (gm_copy_from_user(&params, (void *)(uintptr_t)cmd->data, sizeof(params)))
		return -EFAULT;
	if (!params.len || !GM_ALIGNED(params.len, GM_PAGE_SIZE) || params.flags ||
	    !launch_update_type_ok(params.type))
		return -EINVAL;
	/* uaddr 0: the pages are taken over in place (the in-place conversion series). */
	if (params.type == KVM_SEV_SNP_PAGE_TYPE_ZERO || !params.uaddr)
		src = NULL;
	else if (!GM_ALIGNED(params.uaddr, GM_PAGE_SIZE))
		return -EINVAL;
	else
		src = (const void *)(uintptr_t)params.uaddr;
	args.type = params.type;

	pthread_mutex_lock(&vm->slots.lock);
	if (!slot_has_gmem(vm, params.gfn_start)) {
		pthread_mutex_unlock(&vm->slots.lock);
		gmem_put_flush();
		return -EINVAL;
	}
	count = gmem_populate(vm, params.gfn_start, src, (long)(params.len / GM_PAGE_SIZE),
			      snp_post_populate, &args);
	pthread_mutex_unlock(&vm->slots.lock);
	gmem_put_flush();
	/* Any failure of the first page is EIO, with the firmware's status if it had one. */
	if (count < 0) {
		cmd->error = args.fw_error;
		return -EIO;
	}
	/* Partial progress: the struct says what is left. */
	params.gfn_start += (uint64_t)count;
	params.len -= (uint64_t)count * GM_PAGE_SIZE;
	if (src)
		params.uaddr += (uint64_t)count * GM_PAGE_SIZE;
	if (gm_copy_to_user((void *)(uintptr_t)cmd->data, &params, sizeof(params)))
		return -EFAULT;
	return 0;
}

/*
 * snp_launch_update_vmsa: each vCPU's save area, in vCPU id order, becomes a
 * VMSA page of the digest. A soft vCPU's state is not x86 registers: its VMSA
 * is a page of zeros (docs/platform.md), which an offline calculator can add too.
 */
static int snp_launch_update_vmsa(struct vm *vm, struct snp_vm *snp, struct kvm_sev_cmd *cmd)
{
	static const uint8_t vmsa[GM_PAGE_SIZE];
	int ret = 0;

	pthread_mutex_lock(&vm->slots.lock);
	for (unsigned id = 0; id < 64 * (sizeof(vm->vcpu_ids) / sizeof(vm->vcpu_ids[0])); id++) {
		if (!(vm->vcpu_ids[id / 64] & (1ULL << (id % 64))))
			continue;
		ret = psp_check_fd((int)cmd->sev_fd);
		if (ret)
			break;
		if (snp->state != SNP_STATE_LAUNCH) {
			cmd->error = SEV_RET_INVALID_GUEST_STATE;
			ret = -EIO;
			break;
		}
		ret = launch_digest_page(snp->ld, SNP_PAGE_TYPE_VMSA, SNP_VMSA_GPA, vmsa);
		if (ret)
			break;
		snp->measured[SNP_PAGE_TYPE_VMSA]++;
	}
	pthread_mutex_unlock(&vm->slots.lock);
	return ret;
}

/* The firmware's SNP_LAUNCH_FINISH: the ID block must match the launch; the guest then runs. */
static int fw_launch_finish(struct snp_vm *snp, const struct kvm_sev_snp_launch_finish *params,
			    const uint8_t *id_block, const uint8_t *id_auth, uint32_t *fw_error)
{
	uint64_t policy;
	/* KVM issues it on the fd LAUNCH_START named (sev->fd): closed since, it is EBADF. */
	int ret = psp_check_fd(snp->sev_fd);

	if (ret)
		return ret;
	if (snp->state != SNP_STATE_LAUNCH) {
		*fw_error = SEV_RET_INVALID_GUEST_STATE;
		return -EIO;
	}
	if (id_block) {
		memcpy(&policy, id_block + ID_BLOCK_POLICY_OFF, sizeof(policy));
		if (memcmp(id_block + ID_BLOCK_LD_OFF, snp->ld, SNP_DIGEST_SIZE)) {
			*fw_error = SEV_RET_BAD_MEASUREMENT;
			return -EIO;
		}
		if (policy != snp->policy) {
			*fw_error = SEV_RET_POLICY_FAILURE;
			return -EIO;
		}
		/* The ID key's signature over the block is not checked (docs/compat.md). */
		if (!EVP_Digest(id_auth + ID_AUTH_ID_KEY_OFF, ID_AUTH_KEY_SIZE, snp->id_key_digest,
				NULL, EVP_sha384(), NULL))
			return -ENOMEM;
		if (params->auth_key_en &&
		    !EVP_Digest(id_auth + ID_AUTH_AUTHOR_KEY_OFF, ID_AUTH_KEY_SIZE,
				snp->author_key_digest, NULL, EVP_sha384(), NULL))
			return -ENOMEM;
		memcpy(snp->family_id, id_block + ID_BLOCK_FAMILY_OFF, sizeof(snp->family_id));
		memcpy(snp->image_id, id_block + ID_BLOCK_IMAGE_OFF, sizeof(snp->image_id));
		memcpy(&snp->guest_svn, id_block + ID_BLOCK_SVN_OFF, sizeof(snp->guest_svn));
		snp->author_key_en = params->auth_key_en;
	}
	memcpy(snp->host_data, params->host_data, sizeof(snp->host_data));
	snp->vcek_disabled = params->vcek_disabled;
	snp->state = SNP_STATE_RUNNING;
	return 0;
}

static int snp_launch_finish(struct vm *vm, struct kvm_sev_cmd *cmd)
{
	struct snp_vm *snp = snp_of(vm);
	struct kvm_sev_snp_launch_finish params;
	uint8_t *id_block = NULL, *id_auth = NULL;
	int ret;

	if (!snp)
		return -ENOTTY;
	if (!snp->has_context)
		return -EINVAL;
	if (gm_copy_from_user(&params, (void *)(uintptr_t)cmd->data, sizeof(params)))
		return -EFAULT;
	if (params.flags)
		return -EINVAL;
	ret = snp_launch_update_vmsa(vm, snp, cmd);
	if (ret)
		return ret;
	if (params.id_block_en) {
		id_block = gm_zalloc(KVM_SEV_SNP_ID_BLOCK_SIZE);
		id_auth = gm_zalloc(KVM_SEV_SNP_ID_AUTH_SIZE);
		ret = !id_block || !id_auth ? -ENOMEM : 0;
		if (!ret && gm_copy_from_user(id_block, (void *)(uintptr_t)params.id_block_uaddr,
					      KVM_SEV_SNP_ID_BLOCK_SIZE))
			ret = -EFAULT;
		if (!ret && gm_copy_from_user(id_auth, (void *)(uintptr_t)params.id_auth_uaddr,
					      KVM_SEV_SNP_ID_AUTH_SIZE))
			ret = -EFAULT;
	}
	if (!ret)
		ret = fw_launch_finish(snp, &params, id_block, id_auth, &cmd->error);
	gm_free(id_auth);
	gm_free(id_block);
	return ret;
}

long snp_mem_enc_ioctl(struct vm *vm, unsigned long arg)
{
	struct kvm_sev_cmd cmd;
	struct snp_vm *snp;
	long ret;

	if (!arg)
		return 0;
	if (gm_copy_from_user(&cmd, (void *)arg, sizeof(cmd)))
		return -EFAULT;
	pthread_mutex_lock(&psp_lock);
	snp = snp_of(vm);
	/* Once INIT2 made the VM an SNP guest, only SNP's commands. */
	if (snp && cmd.id < KVM_SEV_SNP_LAUNCH_START) {
		ret = -EPERM;
		goto out_unlock;
	}
	switch (cmd.id) {
	case KVM_SEV_INIT2:
		ret = snp_guest_init2(vm, &cmd);
		break;
	case KVM_SEV_SNP_LAUNCH_START:
		ret = snp_launch_start(vm, &cmd);
		break;
	case KVM_SEV_SNP_LAUNCH_UPDATE:
		ret = snp_launch_update(vm, &cmd);
		break;
	case KVM_SEV_SNP_LAUNCH_FINISH:
		ret = snp_launch_finish(vm, &cmd);
		break;
	default:
		/* SEV and SEV-ES are not emulated (docs/compat.md); nor is anything else. */
		ret = cmd.id < KVM_SEV_INIT2 ? -ENOTTY : -EINVAL;
		goto out_unlock;
	}
	if (gm_copy_to_user((void *)arg, &cmd, sizeof(cmd)))
		ret = -EFAULT;
out_unlock:
	pthread_mutex_unlock(&psp_lock);
	return ret;
}

GM_EXPORT int gm_snp_launch_info(int vm_fd, struct gm_snp_launch_info *info)
{
	struct gm_snp_launch_info out = { 0 };
	struct gm_object *obj;
	struct snp_vm *snp;
	int ret;

	obj = gm_file_get_typed(vm_fd, GM_FILE_VM, &ret);
	if (!obj)
		return ret;
	pthread_mutex_lock(&psp_lock);
	snp = snp_of(gm_container_of(obj, struct vm, obj));
	if (!snp) {
		ret = -EINVAL;
	} else {
		out.state = snp->has_context ? snp->state : 0;
		out.policy = snp->policy;
		memcpy(out.measurement, snp->ld, sizeof(out.measurement));
		memcpy(out.host_data, snp->host_data, sizeof(out.host_data));
		for (int t = 0; t < 8; t++)
			out.pages_measured[t] = snp->measured[t];
		ret = 0;
	}
	pthread_mutex_unlock(&psp_lock);
	gm_object_put(obj);
	return ret ? ret : gm_copy_to_user(info, &out, sizeof(out));
}

int snp_guest_report(struct vm *vm, const uint8_t data[64], uint32_t vmpl, uint8_t *report)
{
	struct snp_report_fields f = { .version = SNP_REPORT_VERSION, .vmpl = vmpl };
	struct snp_vm *snp;
	int ret = 0;

	pthread_mutex_lock(&psp_lock);
	snp = snp_of(vm);
	/* A guest can only ask once it runs: after LAUNCH_FINISH. */
	if (!snp || !snp->has_context || snp->state != SNP_STATE_RUNNING)
		ret = -EINVAL;
	if (!ret) {
		f.guest_svn = snp->guest_svn;
		f.policy = snp->policy;
		memcpy(f.family_id, snp->family_id, sizeof(f.family_id));
		memcpy(f.image_id, snp->image_id, sizeof(f.image_id));
		f.author_key_en = snp->author_key_en;
		memcpy(f.report_data, data, sizeof(f.report_data));
		memcpy(f.measurement, snp->ld, sizeof(f.measurement));
		memcpy(f.host_data, snp->host_data, sizeof(f.host_data));
		memcpy(f.id_key_digest, snp->id_key_digest, sizeof(f.id_key_digest));
		memcpy(f.author_key_digest, snp->author_key_digest, sizeof(f.author_key_digest));
		memcpy(f.report_id, snp->report_id, sizeof(f.report_id));
	}
	pthread_mutex_unlock(&psp_lock);
	return ret ? ret : snp_report_sign(&f, report);
}

GM_EXPORT int gm_snp_report_verify(const void *report, size_t len, const char *key_pem, char *why,
				   size_t n)
{
	return snp_report_verify(report, len, key_pem, why, n);
}
