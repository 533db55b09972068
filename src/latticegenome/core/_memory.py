"""Give freed large arrays back to the operating system at once.

glibc's ``malloc`` serves blocks above a threshold with ``mmap`` (returned
to the system on ``free``), but raises that threshold to the size of the
largest block freed so far, up to 32 MiB. After the first image-sized
temporary is freed, later ones of up to 32 MiB come from the heap and stay
resident after use: the peak memory of an image analysis grows by their
sum. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD, 128 KiB)``, which also
turns the adjustment off) keeps every image-sized array in ``mmap``.

Called by the processes this package starts (the command line, the batch
jobs' workers); a library user's process is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
_THRESHOLD = 128 * 1024
_done = False


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold; True if it was set (False off glibc)."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
    return _done
