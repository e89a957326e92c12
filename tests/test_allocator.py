"""The CPU allocator setting of tools/train.py and tools/test.py."""
import subprocess
import sys

import pytest

from sapa_mm.tools import allocator

# what glibc's mallinfo2 and a freed block tell: a freed 64 MiB block stays in the
# process (arena) with the setting, and goes back to the OS without it
PROBE = r'''
import ctypes, sys
from sapa_mm.tools.allocator import keep_freed_memory
libc = ctypes.CDLL('libc.so.6')
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks',
                 'uordblks', 'fordblks', 'keepcost')]
libc.mallinfo2.restype = Info
if sys.argv[1] == 'keep':
    assert keep_freed_memory()
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
p = libc.malloc(64 << 20)
ctypes.memset(p, 1, 64 << 20)
libc.free(p)
print(libc.mallinfo2().fordblks >= 64 << 20)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc')
@pytest.mark.parametrize('mode,kept', [('keep', 'True'), ('default', 'False')])
def test_freed_blocks_stay_in_the_process(mode, kept):
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == kept


def test_a_chosen_allocator_is_left_alone(monkeypatch):
    called = []
    monkeypatch.setattr(allocator, 'keep_freed_memory', lambda: called.append(1) or True)
    monkeypatch.setenv('LD_PRELOAD', '/usr/lib/libjemalloc.so.2')
    assert allocator.tune_cpu_allocator() == 'allocator left as set by LD_PRELOAD'
    assert not called
    monkeypatch.delenv('LD_PRELOAD')
    for name in allocator._USER_CHOICE:
        monkeypatch.delenv(name, raising=False)
    assert 'keeps freed memory' in allocator.tune_cpu_allocator() and called
