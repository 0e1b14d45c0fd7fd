/* Synthetic io_uring.h excerpt for tests: what the kmbuf v4 series (03/25, 04/25) adds,
 * with the 7.2 forward-port's numbering (7.2's BPF_FILTER moved from 37 to 39). */
#include <stdint.h>
#define IORING_SETUP_SQE128		(1U << 10)
#define IORING_SETUP_SINGLE_ISSUER	(1U << 12)
#define IORING_SETUP_DEFER_TASKRUN	(1U << 13)
#define IORING_CQE_F_BUFFER		(1U << 0)
#define IORING_CQE_BUFFER_SHIFT		16
#define IORING_OFF_PBUF_RING		0x80000000ULL
#define IORING_OFF_PBUF_SHIFT		16
#define IORING_OFF_KMBUF_RING		0x88000000ULL
#define IORING_OFF_KMBUF_SHIFT		16

enum io_uring_op { IORING_OP_NOP, IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC,
	IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED, IORING_OP_URING_CMD = 46 };

enum io_uring_register_op {
	IORING_REGISTER_BUFFERS2 = 15,
	IORING_REGISTER_BUFFERS_UPDATE = 16,
	IORING_REGISTER_KMBUF_RING = 37,
	IORING_UNREGISTER_KMBUF_RING = 38,
	IORING_REGISTER_BPF_FILTER = 39,
};

struct io_uring_buf_reg {
	union {
		uint64_t ring_addr;
		uint32_t buf_size;
	};
	uint32_t ring_entries;
	uint16_t bgid;
	uint16_t flags;
	uint32_t min_left;
	uint32_t resv[5];
};
