"""Raw io_uring through ctypes: syscalls, uapi layouts, the Ring object."""
