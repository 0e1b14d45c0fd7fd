/* Synthetic fuse.h excerpt for tests: generation B as bufring v2 10/14 has it (the layout of the
 * shared fixture's patched 7.2.13 uapi: FUSE_URING_BUFRING, 32-byte fuse_uring_cmd_req with
 * init.{buf_size,queue_depth}, ent_in_out.buf_id; the minor is not bumped). */
#define FUSE_KERNEL_VERSION 7
#define FUSE_KERNEL_MINOR_VERSION 45
#define FUSE_ASYNC_READ (1 << 0)
#define FUSE_ASYNC_DIO (1 << 15)
#define FUSE_MAX_PAGES (1 << 22)
#define FUSE_OVER_IO_URING (1ULL << 41)

struct fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint16_t buf_id;
	uint16_t padding;
	uint64_t reserved;
};

struct fuse_uring_req_header {
	char in_out[128];
	char op_in[128];
	struct fuse_uring_ent_in_out ring_ent_in_out;
};

enum fuse_uring_cmd {
	FUSE_IO_URING_CMD_INVALID = 0,
	FUSE_IO_URING_CMD_REGISTER = 1,
	FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

#define FUSE_URING_BUFRING		(1 << 0)

struct fuse_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint16_t padding;
	union {
		struct {
			uint32_t buf_size;
			uint16_t queue_depth;
			uint16_t padding;
		} init;
	};
};
