/* The system fd (/dev/kvm). */
#ifndef GMEM_SRC_KVM_DEV_H
#define GMEM_SRC_KVM_DEV_H

#include "internal.h"

long kvm_dev_ioctl(unsigned long request, unsigned long arg);
/* A new system fd, as open("/dev/kvm") gives: the fd, or -errno. */
int kvm_dev_open(bool cloexec);

#endif
