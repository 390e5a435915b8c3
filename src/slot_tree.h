/* An ordered map of disjoint gfn ranges, persistent: readers walk a version under RCU while one writer builds the next. */
#ifndef GMEM_SLOT_TREE_H
#define GMEM_SLOT_TREE_H

#include "internal.h"

struct slot_node;

struct slot_tree {
	struct slot_node *_Atomic root; /* RCU-published */
	uint64_t gen;                   /* changes so far; a node made by the current one may change */
	uint32_t seed;                  /* the treap's priorities */
	size_t nr;
};

/*
 * One change: a new version built by path copying (O(log n) new nodes), made
 * visible at once by slot_tree_commit, or dropped by slot_tree_abort with the
 * tree as it was. Writers are serialised by the caller.
 */
struct slot_tree_change {
	struct slot_tree *tree;
	struct slot_node *root;
	struct slot_node *fresh;        /* made by this change */
	struct slot_node *retired;      /* the old versions it replaced */
	size_t nr;
	int err;
};

void slot_tree_change_begin(struct slot_tree *t, struct slot_tree_change *c);
/* Adds item for [base, base + npages); the range must not overlap another. */
void slot_tree_insert(struct slot_tree_change *c, gfn_t base, uint64_t npages, void *item);
/* Removes the range that starts at base. */
void slot_tree_remove(struct slot_tree_change *c, gfn_t base);
/* Publishes the new version (0), or drops it and returns -ENOMEM if building it failed. */
int slot_tree_change_end(struct slot_tree_change *c);

/* The item whose range holds gfn, or NULL; inside an RCU read-side section (or as the writer). */
void *slot_tree_find(struct slot_tree *t, gfn_t gfn);
/* As the writer: the item other than skip whose range meets [start, end), or NULL. */
void *slot_tree_overlap(struct slot_tree *t, gfn_t start, gfn_t end, const void *skip);
/* Calls fn on every item in gfn order; as the writer or inside an RCU read-side section. */
void slot_tree_for_each(struct slot_tree *t, void (*fn)(void *item, void *arg), void *arg);
/* Frees every node, no reader left; items are the caller's. */
void slot_tree_destroy(struct slot_tree *t);

#endif
