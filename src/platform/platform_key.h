/* The software SNP platform's signing key: an ECDSA P-384 key kept in one file per user. */
#ifndef GMEM_PLATFORM_KEY_H
#define GMEM_PLATFORM_KEY_H

#include <stddef.h>

#include <openssl/evp.h>

/* The key file's name under the state directory, and the variable that overrides its path. */
#define PLATFORM_KEY_FILE "snp-platform-key.pem"
#define PLATFORM_KEY_ENV  "GMEM_PLATFORM_KEY"

/*
 * Where the key lives: $GMEM_PLATFORM_KEY if set, else $XDG_STATE_HOME/libgmem/, else
 * $HOME/.local/state/libgmem/, then PLATFORM_KEY_FILE. -ENAMETOOLONG, -ENOENT (none of
 * the three, HOME and XDG_STATE_HOME counting only when absolute).
 */
int platform_key_path(char *buf, size_t len);

/*
 * A new reference to the platform key (EVP_PKEY_free it), created on first use: the
 * directories it needs with mode 0700, the file with 0600, published with link(2) so that
 * processes racing on first use all end with the one key that got there first. A file that
 * exists is only ever read: unreadable gives -errno, not a P-384 private key in PEM -EBADMSG.
 */
int platform_key_get(EVP_PKEY **key);

/* What went wrong with the platform key, for people: -EBADMSG says what a good file holds. */
const char *platform_key_strerror(int err);

/* The public half of key as PEM (SubjectPublicKeyInfo), NUL-terminated; its length or -ERANGE. */
int platform_key_public_pem(EVP_PKEY *key, char *buf, size_t len);

/* A PEM public key (SubjectPublicKeyInfo) on P-384, or -EBADMSG. */
int platform_key_from_public_pem(const char *pem, EVP_PKEY **key);

#endif
