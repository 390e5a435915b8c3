/* A statically linked program: no dynamic loader, so LD_PRELOAD cannot reach it. */
#include <stdio.h>

int main(void)
{
	puts("hello from a static program");
	return 0;
}
