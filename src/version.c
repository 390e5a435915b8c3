/* The running library's version, for programs that were built against another header. */
#include <gmem/gmem.h>

#include "internal.h"

GM_EXPORT const char *gm_version(void)
{
	return GM_VERSION_STRING;
}
