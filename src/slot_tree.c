/*
 * A persistent treap of disjoint gfn ranges for the memslots. A change copies
 * only the nodes on the paths it touches, so it costs O(log n) expected time
 * and memory whatever the number of slots, and readers keep walking the version
 * they found; replaced nodes are freed after a grace period.
 */
#include "rcu.h"

#include "slot_tree.h"

struct slot_node {
	gfn_t base;
	uint64_t npages;
	void *item;
	uint32_t prio;
	uint64_t gen;                   /* the change that made it */
	struct slot_node *left, *right;
	struct slot_node *next;         /* on a change's fresh or retired list */
	struct rcu_head rcu;
};

static uint32_t next_prio(struct slot_tree *t)
{
	/* xorshift32: priorities need only be independent of the keys. */
	uint32_t x = t->seed ? t->seed : 0x9e3779b9;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	t->seed = x;
	return x;
}

static struct slot_node *node_new(struct slot_tree_change *c)
{
	struct slot_node *n = gm_zalloc(sizeof(*n));

	if (!n) {
		c->err = -ENOMEM;
		return NULL;
	}
	n->gen = c->tree->gen;
	n->next = c->fresh;
	c->fresh = n;
	return n;
}

/* A node this change may modify: itself if the change made it, else a copy (the old one retires). */
static struct slot_node *node_own(struct slot_tree_change *c, struct slot_node *n)
{
	struct slot_node *copy, *next;

	if (n->gen == c->tree->gen)
		return n;
	copy = node_new(c);
	if (!copy)
		return NULL;
	next = copy->next;
	*copy = *n;
	copy->gen = c->tree->gen;
	copy->next = next;
	n->next = c->retired;
	c->retired = n;
	return copy;
}

/* Splits t into the ranges starting below key (*l) and the others (*r). */
static void split(struct slot_tree_change *c, struct slot_node *t, gfn_t key,
		  struct slot_node **l, struct slot_node **r)
{
	if (!t) {
		*l = *r = NULL;
		return;
	}
	t = node_own(c, t);
	if (!t) {
		*l = *r = NULL;
		return;
	}
	if (t->base < key) {
		split(c, t->right, key, &t->right, r);
		*l = t;
	} else {
		split(c, t->left, key, l, &t->left);
		*r = t;
	}
}

/* Joins a and b, every range of a before every range of b. */
static struct slot_node *merge(struct slot_tree_change *c, struct slot_node *a, struct slot_node *b)
{
	if (!a || !b)
		return a ? a : b;
	if (a->prio > b->prio) {
		a = node_own(c, a);
		if (a)
			a->right = merge(c, a->right, b);
		return a;
	}
	b = node_own(c, b);
	if (b)
		b->left = merge(c, a, b->left);
	return b;
}

void slot_tree_change_begin(struct slot_tree *t, struct slot_tree_change *c)
{
	*c = (struct slot_tree_change){
		.tree = t,
		.root = atomic_load_explicit(&t->root, memory_order_relaxed),
		.nr = t->nr,
	};
	t->gen++;
}

void slot_tree_insert(struct slot_tree_change *c, gfn_t base, uint64_t npages, void *item)
{
	struct slot_node *n, *l, *r;

	if (c->err)
		return;
	n = node_new(c);
	if (!n)
		return;
	n->base = base;
	n->npages = npages;
	n->item = item;
	n->prio = next_prio(c->tree);
	split(c, c->root, base, &l, &r);
	if (!c->err)
		c->root = merge(c, merge(c, l, n), r);
	c->nr++;
}

void slot_tree_remove(struct slot_tree_change *c, gfn_t base)
{
	struct slot_node *l, *mid, *r;

	if (c->err)
		return;
	split(c, c->root, base, &l, &r);
	if (c->err)
		return;
	split(c, r, base + 1, &mid, &r);
	if (c->err)
		return;
	/* mid is the one node that starts at base: this version no longer has it. */
	if (mid) {
		c->nr--;
		if (mid->gen != c->tree->gen) {
			mid->next = c->retired;
			c->retired = mid;
		}
	}
	c->root = merge(c, l, r);
}

/* Frees a change's retired nodes, chained by next, after the grace period. */
static void nodes_free_rcu(struct rcu_head *head)
{
	struct slot_node *n = caa_container_of(head, struct slot_node, rcu), *next;

	for (; n; n = next) {
		next = n->next;
		gm_free(n);
	}
}

/* The fresh node mid removed by slot_tree_remove is unreachable: free it with the others at once. */
static bool reachable(const struct slot_node *t, const struct slot_node *n)
{
	while (t && t != n)
		t = n->base < t->base ? t->left : t->right;
	return t == n;
}

int slot_tree_change_end(struct slot_tree_change *c)
{
	struct slot_node *n, *next;

	if (c->err) {
		/* Nothing old was changed: the fresh nodes go and the tree is as it was. */
		for (n = c->fresh; n; n = next) {
			next = n->next;
			gm_free(n);
		}
		return c->err;
	}
	atomic_store_explicit(&c->tree->root, c->root, memory_order_release);
	c->tree->nr = c->nr;
	for (n = c->fresh; n; n = next) {
		next = n->next;
		if (!reachable(c->root, n))
			gm_free(n); /* made and dropped by this change: no reader saw it */
	}
	/* Unreachable now: no later change walks them, so next keeps chaining them. */
	if (c->retired)
		gm_call_rcu(&c->retired->rcu, nodes_free_rcu);
	return 0;
}

void *slot_tree_find(struct slot_tree *t, gfn_t gfn)
{
	struct slot_node *n = atomic_load_explicit(&t->root, memory_order_acquire), *best = NULL;

	/* The range with the largest base <= gfn. */
	while (n) {
		if (n->base <= gfn) {
			best = n;
			n = n->right;
		} else {
			n = n->left;
		}
	}
	return best && gfn - best->base < best->npages ? best->item : NULL;
}

/* The node with the largest base below key, or NULL. */
static struct slot_node *below(struct slot_node *n, gfn_t key)
{
	struct slot_node *best = NULL;

	while (n) {
		if (n->base < key) {
			best = n;
			n = n->right;
		} else {
			n = n->left;
		}
	}
	return best;
}

void *slot_tree_overlap(struct slot_tree *t, gfn_t start, gfn_t end, const void *skip)
{
	struct slot_node *root = atomic_load_explicit(&t->root, memory_order_relaxed);
	struct slot_node *n = below(root, end);

	/* Ranges are disjoint: only the last one starting below end can reach start. */
	if (n && n->item == skip)
		n = below(root, n->base);
	return n && n->base + n->npages > start ? n->item : NULL;
}

static void walk(struct slot_node *n, void (*fn)(void *item, void *arg), void *arg)
{
	if (!n)
		return;
	walk(n->left, fn, arg);
	fn(n->item, arg);
	walk(n->right, fn, arg);
}

void slot_tree_for_each(struct slot_tree *t, void (*fn)(void *item, void *arg), void *arg)
{
	walk(atomic_load_explicit(&t->root, memory_order_acquire), fn, arg);
}

static void free_tree(struct slot_node *n)
{
	if (!n)
		return;
	free_tree(n->left);
	free_tree(n->right);
	gm_free(n);
}

void slot_tree_destroy(struct slot_tree *t)
{
	free_tree(atomic_load_explicit(&t->root, memory_order_relaxed));
	atomic_store_explicit(&t->root, NULL, memory_order_relaxed);
	t->nr = 0;
}
