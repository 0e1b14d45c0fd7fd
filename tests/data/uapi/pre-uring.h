/* Synthetic fuse.h excerpt for tests: a kernel before io-uring support. */
#define FUSE_KERNEL_VERSION 7
#define FUSE_KERNEL_MINOR_VERSION 40
#define FUSE_INIT_EXT (1 << 30)
/* A comment that mentions FUSE_OVER_IO_URING must not count. */
