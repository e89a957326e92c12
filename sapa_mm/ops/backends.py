"""The table of SAPA backends: which kernels run on which tensors.

A backend is a module of kernels with the contract of :mod:`.torch_backend` and a
:class:`Backend` record, ``BACKEND``, that the module declares itself. Dispatch
(:mod:`.library`), the choice of a backend (:func:`.sapa.resolve_backend`) and the
self-check (:mod:`.check`) loop over :func:`table`; 'torch' runs everywhere and is
the fallback.

Adding a backend: a module with its kernels and its ``BACKEND``, and its place in
:func:`table` (the order is the preference among backends serving the same device).
"""
import functools
import sys
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional, Tuple

#: the window products (docs/design.md), which every backend provides
PRODUCTS = ('correlate', 'aggregate', 'scatter')
#: optional: the fused forward (composed from the products where absent) and SAPA-D's
#: kernels (where absent, SAPA-D runs on 'torch')
OPTIONAL = ('upsample_forward', 'deform_forward', 'deform_backward')
FALLBACK = 'torch'

_DEVICE_NAMES = {'cpu': 'CPU', 'cuda': 'CUDA'}


@dataclass(frozen=True)
class Backend:
    """One backend: its name, its devices, its kernels and whether it can run here.

    ``why_unavailable(kernel)`` is None when the kernel can run in this process, else
    a short reason (no compiler, Triton not installed). ``warns_itself``: it warns
    once itself when unavailable (the C++ build, with the compiler's output), so the
    dispatcher only logs the fallback. ``check_first_call``: the first result of each
    kernel and dtype is compared with 'torch', and a failure moves the process to
    'torch' (:func:`.library.triton_failed`).
    """
    name: str
    module: str                      # the module holding the kernels, by its import name
    device_types: Tuple[str, ...]    # the tensors it runs on; () for every device
    kernels: FrozenSet[str]          # PRODUCTS and any of OPTIONAL
    why_unavailable: Callable[[str], Optional[str]]
    warns_itself: bool = False
    check_first_call: bool = False

    def __post_init__(self):
        missing = set(PRODUCTS) - self.kernels
        unknown = self.kernels - set(PRODUCTS) - set(OPTIONAL)
        if missing or unknown:
            raise ValueError(f'backend {self.name!r}: missing kernels {sorted(missing)}, '
                             f'unknown kernels {sorted(unknown)}')

    def runs_on(self, device_type: str) -> bool:
        return not self.device_types or device_type in self.device_types

    @property
    def devices(self) -> str:
        """The devices in words, for messages: 'CPU', 'CUDA', 'any device'."""
        return ' or '.join(_DEVICE_NAMES.get(t, t) for t in self.device_types) or 'any device'

    def kernel(self, name: str) -> Optional[Callable]:
        """The kernel ``name``, or None where the backend declares none. Looked up on
        its module at each call, so the module's current function is the one run."""
        return getattr(sys.modules[self.module], name) if name in self.kernels else None


@functools.lru_cache(maxsize=None)
def table() -> Dict[str, Backend]:
    """Every backend by name, in order of preference ('torch' first: it is the fallback,
    never preferred to a backend made for the device)."""
    from . import cpu_backend, torch_backend, triton_backend  # they import this module
    return {b.name: b for b in (torch_backend.BACKEND, cpu_backend.BACKEND, triton_backend.BACKEND)}


def get(name: str) -> Backend:
    try:
        return table()[name]
    except KeyError:
        raise ValueError(f'unknown SAPA backend {name!r}; one of {tuple(table())}') from None
