/* The platform device (/dev/sev): the fd that names the trusted entity in SEV commands. */
#ifndef GMEM_PLATFORM_PSP_H
#define GMEM_PLATFORM_PSP_H

#include "internal.h"

/* A new platform device fd (open("/dev/sev")), or -errno. */
int psp_open(bool cloexec);

/* __sev_issue_cmd's check of a command's sev_fd: 0, or -EBADF when it is not the device. */
int psp_check_fd(int sev_fd);

#endif
