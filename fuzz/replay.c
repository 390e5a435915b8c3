/*
 * Runs a fuzz target without libFuzzer: every file of the given directories
 * (default: the target's seeds and regressions, REPLAY_DIRS) once, through
 * LLVMFuzzerInitialize and LLVMFuzzerTestOneInput. Built with the compiler
 * and sanitizers of the build variant, so make test replays them all.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp_names(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int not_hidden(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

static uint8_t *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		/* One byte more, so an empty file still gets a buffer. */
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*size = (size_t)n;
	}
	fclose(f);
	return buf;
}

/*
 * Replays the files of dir in name order. A directory that cannot be read or holds
 * nothing is a failure: a replay that runs no input proves nothing (a wrong path, a
 * tree copied without its corpus), and must not pass.
 */
static int replay_dir(const char *dir, int *failed)
{
	struct dirent **names;
	int n = scandir(dir, &names, not_hidden, cmp_names), done = 0;

	if (n <= 0) {
		fprintf(stderr, "replay: %s: %s\n", dir, n < 0 ? strerror(errno) : "no input to replay");
		(*failed)++;
		return 0;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		size_t size = 0;
		uint8_t *data;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		free(names[i]);
		data = read_file(path, &size);
		if (!data) {
			fprintf(stderr, "replay: cannot read %s\n", path);
			(*failed)++;
			continue;
		}
		/* A broken invariant aborts: the file named last is the one that broke it. */
		printf("replay: %s\n", path);
		fflush(stdout);
		LLVMFuzzerTestOneInput(data, size);
		free(data);
		done++;
	}
	free(names);
	return done;
}

int main(int argc, char **argv)
{
	char defaults[] = REPLAY_DIRS;
	int passed = 0, failed = 0;

	LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			passed += replay_dir(argv[i], &failed);
	} else {
		for (char *save, *d = strtok_r(defaults, ":", &save); d; d = strtok_r(NULL, ":", &save))
			passed += replay_dir(d, &failed);
	}
	printf("%s: %d passed, %d failed\n", TARGET_NAME, passed, failed);
	if (!passed)
		printf("%s: no input was replayed: failing\n", TARGET_NAME);
	return failed || !passed ? 1 : 0;
}
