"""CPU runs keep freed memory in the process, as PyTorch's caching allocator does on GPU.

By default glibc hands every block above a dynamic threshold (128 KiB to 32 MiB) back
to the OS when it is freed, and the next step's block of the same size comes back as
fresh pages: a page fault for every 4 KiB touched, every step. A training step frees
and re-allocates the same large activations each iteration, so the faults recur;
measured on the SegFormer-B1 step through ``tools/train.py`` they cost SAPA-B more
than bilinear, as its module makes more output-sized temporaries
(docs/performance.md). ``keep_freed_memory`` raises glibc's mmap and trim thresholds
so that freed blocks stay in the heap and the next step reuses them.

The process then keeps its peak memory until it exits, which a training process
reaches in its first step anyway. ``tools/train.py`` and ``tools/test.py`` call it for
runs without a GPU, unless the user chose an allocator already (``MALLOC_*``
variables, or a ``LD_PRELOAD`` such as jemalloc or tcmalloc).
"""
import ctypes
import ctypes.util
import os

__all__ = ['keep_freed_memory', 'tune_cpu_allocator']

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_USER_CHOICE = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_',
                'GLIBC_TUNABLES', 'LD_PRELOAD')


def keep_freed_memory() -> bool:
    """Raise glibc's mmap threshold to 1 GiB and its trim threshold to 2 GiB: freed
    blocks below 1 GiB stay in the process. True if set (glibc only)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31))
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False


def tune_cpu_allocator() -> str:
    """``keep_freed_memory`` unless the user chose an allocator; says what it did."""
    chosen = [name for name in _USER_CHOICE if os.environ.get(name)]
    if chosen:
        return f'allocator left as set by {", ".join(chosen)}'
    if keep_freed_memory():
        return 'CPU run: glibc keeps freed memory for reuse (mmap threshold 1 GiB, trim 2 GiB)'
    return 'CPU run: allocator unchanged (not glibc)'
