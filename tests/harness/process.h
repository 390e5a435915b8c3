/* What the process holds, read from /proc: leak checks that do not trust the library's counters. */
#ifndef TESTS_HARNESS_PROCESS_H
#define TESTS_HARNESS_PROCESS_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>

/* Open fds of the process, or -1 when /proc/self/fd cannot be read. */
static inline int process_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *d;
	int n = 0;

	if (!dir)
		return -1;
	while ((d = readdir(dir)))
		n += d->d_name[0] != '.';
	closedir(dir);
	return n - 1; /* the directory's own fd */
}

/*
 * Mappings of the process that hold memory a library could leak: file and memfd mappings,
 * and the anonymous ones the library makes for stores. Mapping counts of the whole process
 * move with malloc's arenas, so a leak check compares these only, or -1 without /proc.
 */
static inline int process_maps(const char *needle)
{
	FILE *maps = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	if (!maps)
		return -1;
	while (fgets(line, sizeof(line), maps))
		n += !needle || strstr(line, needle) != NULL;
	fclose(maps);
	return n;
}

#endif
