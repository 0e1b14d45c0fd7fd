/* Toy buffer pool used by the series unit tests. */
#include "pool.h"

int pool_get(struct pool *p)
{
	for (int i = 0; i < p->nr; i++) {
		if (p->free[i]) {
			p->free[i] = 0;
			return i;
		}
	}
	return -1;
}

void pool_put(struct pool *p, int id)
{
	p->free[id] = 1;
}

int pool_count(const struct pool *p)
{
	int n = 0;

	for (int i = 0; i < p->nr; i++)
		n += p->free[i];
	return n;
}
