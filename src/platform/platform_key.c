/* The software SNP platform's signing key: found or created on first use, only its public half exported. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/pem.h>

#include "internal.h"
#include "platform/platform_key.h"

/* The curve the SNP ABI signs reports with (SIGNATURE_ALGO 1). */
#define KEY_GROUP "secp384r1"

/* The key last loaded, and the path it came from: the variables may point elsewhere later. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static char cache_path[PATH_MAX];       /* protected by cache_lock */
static EVP_PKEY *cache_key;             /* protected by cache_lock */

static int put_path(char *buf, size_t len, const char *dir, const char *sub)
{
	int n = snprintf(buf, len, "%s%s/%s", dir, sub, PLATFORM_KEY_FILE);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int platform_key_path(char *buf, size_t len)
{
	const char *env = getenv(PLATFORM_KEY_ENV);

	if (env && *env) {
		if (strlen(env) >= len)
			return -ENAMETOOLONG;
		strcpy(buf, env);
		return 0;
	}
	/* The XDG base directory rules ignore a relative path. */
	env = getenv("XDG_STATE_HOME");
	if (env && env[0] == '/')
		return put_path(buf, len, env, "/libgmem");
	/* Not the password database: NSS would tie a static program to the build's glibc. */
	env = getenv("HOME");
	if (!env || env[0] != '/')
		return -ENOENT;
	return put_path(buf, len, env, "/.local/state/libgmem");
}

/* No passphrase prompt, ever: an encrypted key file is a file this library cannot use. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

static bool is_p384(EVP_PKEY *key)
{
	char group[32];

	return EVP_PKEY_is_a(key, "EC") &&
	       EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group,
					      sizeof(group), NULL) &&
	       !strcmp(group, KEY_GROUP);
}

/* A key just read, handed over if it is on P-384; anything else (or nothing) is -EBADMSG. */
static int keep_if_p384(EVP_PKEY *k, EVP_PKEY **key)
{
	if (!k || !is_p384(k)) {
		EVP_PKEY_free(k);
		return -EBADMSG;
	}
	*key = k;
	return 0;
}

static int load_key(const char *path, EVP_PKEY **key)
{
	FILE *f = fopen(path, "re");
	EVP_PKEY *k;

	if (!f)
		return -errno;
	k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	fclose(f);
	return keep_if_p384(k, key);
}

/* Every missing directory above path, mode 0700: the key is the user's alone. */
static int make_parents(const char *path)
{
	char dir[PATH_MAX];

	if (strlen(path) >= sizeof(dir))
		return -ENAMETOOLONG;
	strcpy(dir, path);
	for (char *p = dir + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

static int sync_parent(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int fd;

	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	fsync(fd);
	close(fd);
	return 0;
}

/* Writes the whole key to an exclusive temporary file, synced, mode 0600. */
static int write_temp_key(EVP_PKEY *key, char *tmp)
{
	FILE *f;
	int fd = mkostemp(tmp, O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0600) < 0) {
		ret = -errno;
		close(fd);
		goto err_unlink;
	}
	f = fdopen(fd, "w");
	if (!f) {
		ret = -errno;
		close(fd);
		goto err_unlink;
	}
	errno = 0;
	if (!PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) || fflush(f) || fsync(fd))
		ret = errno ? -errno : -EIO;
	if (fclose(f) && !ret)
		ret = -errno;
	if (ret)
		goto err_unlink;
	return 0;

err_unlink:
	unlink(tmp);
	return ret;
}

/*
 * A new key at path, or -EEXIST when another process published one first. link(2) fails
 * rather than replace, where rename(2) would silently swap the other process's key.
 */
static int create_key(const char *path, EVP_PKEY **key)
{
	char tmp[PATH_MAX];
	EVP_PKEY *k;
	int ret;

	if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	k = EVP_EC_gen(KEY_GROUP);
	if (!k)
		return -ENOMEM;
	ret = write_temp_key(k, tmp);
	if (ret)
		goto err_free;
	ret = link(tmp, path) < 0 ? -errno : 0;
	unlink(tmp);
	if (ret)
		goto err_free;
	sync_parent(path);
	*key = k;
	return 0;

err_free:
	EVP_PKEY_free(k);
	return ret;
}

static int find_or_create(const char *path, EVP_PKEY **key)
{
	int ret = load_key(path, key);

	if (ret != -ENOENT)
		return ret;
	ret = make_parents(path);
	if (ret)
		return ret;
	ret = create_key(path, key);
	/* Lost the race: the winner's file is complete (it was linked after its fsync). */
	return ret == -EEXIST ? load_key(path, key) : ret;
}

int platform_key_get(EVP_PKEY **key)
{
	char path[PATH_MAX];
	EVP_PKEY *k;
	int ret = platform_key_path(path, sizeof(path));

	if (ret)
		return ret;
	pthread_mutex_lock(&cache_lock);
	if (cache_key && !strcmp(cache_path, path)) {
		EVP_PKEY_up_ref(cache_key);
		*key = cache_key;
		pthread_mutex_unlock(&cache_lock);
		return 0;
	}
	ret = find_or_create(path, &k);
	if (!ret) {
		EVP_PKEY_free(cache_key);
		cache_key = k;
		strcpy(cache_path, path);
		EVP_PKEY_up_ref(k);
		*key = k;
	}
	pthread_mutex_unlock(&cache_lock);
	return ret;
}

const char *platform_key_strerror(int err)
{
	return err == -EBADMSG ? "not a PEM ECDSA P-384 private key" : strerror(-err);
}

int platform_key_public_pem(EVP_PKEY *key, char *buf, size_t len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;
	int ret;

	if (!bio)
		return -ENOMEM;
	if (!PEM_write_bio_PUBKEY(bio, key)) {
		ret = -ENOMEM;
		goto out;
	}
	n = BIO_get_mem_data(bio, &data);
	if (n < 0 || (size_t)n >= len) {
		ret = -ERANGE;
		goto out;
	}
	memcpy(buf, data, (size_t)n);
	buf[n] = '\0';
	ret = (int)n;
out:
	BIO_free(bio);
	return ret;
}

int platform_key_from_public_pem(const char *pem, EVP_PKEY **key)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k;

	if (!bio)
		return -ENOMEM;
	k = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	return keep_if_p384(k, key);
}

GM_EXPORT int gm_snp_platform_key_pem(char *buf, size_t len)
{
	EVP_PKEY *key;
	int ret;

	if (!buf)
		return -EINVAL;
	ret = platform_key_get(&key);
	if (ret)
		return ret;
	ret = platform_key_public_pem(key, buf, len);
	EVP_PKEY_free(key);
	return ret;
}
