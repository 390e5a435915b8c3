/* The platform device: what open("/dev/sev") gives, a library fd SEV commands must name. */
#include "platform/psp.h"

int psp_open(bool cloexec)
{
	return gm_file_open_device(GM_FILE_SEV, "sev", cloexec);
}

GM_EXPORT int gm_open_sev(void)
{
	/* open(2) of the device: not close-on-exec unless asked. */
	int fd = psp_open(false);

	if (fd < 0) {
		errno = -fd;
		return -1;
	}
	return fd;
}

int psp_check_fd(int sev_fd)
{
	int err;
	struct gm_object *obj = gm_file_get_typed(sev_fd, GM_FILE_SEV, &err);

	/* The kernel answers EBADF for a closed fd and for a file that is not the device. */
	if (!obj)
		return -EBADF;
	gm_object_put(obj);
	return 0;
}
