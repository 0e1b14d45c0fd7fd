/* Synthetic fuse.h excerpt for tests: generation C (bufpool + zero-copy, as merged). */
#define FUSE_KERNEL_VERSION 7
#define FUSE_KERNEL_MINOR_VERSION 46
#define FOPEN_IO_URING_ZERO_COPY (1 << 8)
#define FUSE_OVER_IO_URING (1ULL << 41)
#define FUSE_HAS_IO_URING_BUFPOOL (1ULL << 43)
#define FUSE_URING_ENT_ZERO_COPY (1 << 0)

struct fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t offset;
	uint64_t reserved;
};

enum fuse_uring_cmd {
	FUSE_IO_URING_CMD_INVALID = 0,
	FUSE_IO_URING_CMD_REGISTER = 1,
	FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
	FUSE_IO_URING_CMD_ADD_QUEUE = 3,
	FUSE_IO_URING_CMD_ADD_BUFPOOL = 4,
};

#define FUSE_URING_ZERO_COPY (1 << 0)

struct fuse_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
	union {
		struct {
			uint64_t uaddr;
			uint32_t len;
			uint32_t reserved;
		} bufpool;
		uint16_t ent_zero_copy_buf_index;
	};
};
