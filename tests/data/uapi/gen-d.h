/* Synthetic fuse.h excerpt for tests: generation D (kernel-managed buffer ring, kmbuf),
 * shaped as the kmbuf v4 uapi (19/25, 24/25): init.{flags,queue_depth} at 18/20, 24 bytes. */
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
	uint32_t padding;
	uint64_t reserved;
};

enum fuse_uring_cmd {
	FUSE_IO_URING_CMD_INVALID = 0,
	FUSE_IO_URING_CMD_REGISTER = 1,
	FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

#define FUSE_URING_BUF_RING	(1 << 0)
#define FUSE_URING_ZERO_COPY	(1 << 1)

struct fuse_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	union {
		struct {
			uint16_t flags;
			uint16_t queue_depth;
		} init;
	};
	uint8_t padding[2];
};
