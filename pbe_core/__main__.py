import sys


def keep_freed_blocks_in_the_heap() -> None:
    """In our own process only, never inside a host: glibc gives every freed block of its (dynamic)
    mmap threshold or more back to the system, so each sampling step faults its activations'
    pages in again. Its ceiling for the mmap threshold (32 MiB) and a trim threshold far above
    let the heap reuse them."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another C library: leave it be
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


def run() -> int:
    """`python -m pbe_core` and the `pbe` command."""
    keep_freed_blocks_in_the_heap()
    try:  # Ctrl-C while Python starts up is an interrupt, not a traceback
        from .cli import main
    except KeyboardInterrupt:
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
