/* Toy buffer pool header. */
struct pool {
	int nr;
	int free[16];
};

int pool_get(struct pool *p);
void pool_put(struct pool *p, int id);
int pool_count(const struct pool *p);
