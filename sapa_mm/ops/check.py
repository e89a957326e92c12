"""Self-check after installing: ``python -m sapa_mm.ops.check``.

Runs every backend available here (and on every visible device) against the
references of docs/design.md (the unfold formulation for SAPA, the grid_sample one for
SAPA-D) on small shapes, forward and backward, prints a table per operator and exits
with 1 if any result differs or a fast backend could not run (it fell back).
"""
import sys
import warnings
from typing import List, Tuple

import torch

from . import library
from .deform import sapa_deform_upsample
from .reference import (aggregate_reference, deform_upsample_reference, similarity_reference,
                        upsample_reference)
from .sapa import ready_backends, sapa_aggregate, sapa_similarity, sapa_upsample

# (B, C, d, H, W, K, s): windows wider than the image, non-square, odd channels, s = 1
SHAPES = [(2, 5, 3, 4, 6, 5, 2), (1, 7, 4, 3, 2, 3, 3), (1, 3, 2, 5, 5, 7, 1)]
# SAPA-D (B, G, d, C, H, W, P, s): offsets of a few pixels reach past the borders
DEFORM_SHAPES = [(2, 2, 3, 6, 4, 5, 4, 2), (1, 1, 2, 3, 1, 1, 3, 2), (1, 3, 1, 6, 3, 2, 2, 3)]


def _backends() -> List[Tuple[str, torch.device]]:
    """(backend, device) for every backend of the table that runs here, on every device."""
    devices = [torch.device('cpu')] + ([torch.device('cuda')] if torch.cuda.is_available() else [])
    return [(name, device) for device in devices for name in ready_backends(device.type)]


def _max_err(got, want) -> float:
    return max((g.double() - w.double()).abs().max().item() for g, w in zip(got, want))


def check_one(backend: str, device: torch.device, shape: tuple) -> Tuple[float, float]:
    """Largest forward and backward error of the three public functions, float32 vs float64."""
    B, C, d, H, W, K, s = shape
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*sh, generator=gen, dtype=torch.float64)
               for sh in ((B, d, s * H, s * W), (B, d, H, W), (B, C, H, W)))
    w = torch.randn(B, K * K, s * H, s * W, generator=gen, dtype=torch.float64).softmax(1)
    go = torch.randn(B, C, s * H, s * W, generator=gen, dtype=torch.float64)
    fwd = bwd = 0.0
    cases = ((lambda a, b, c: sapa_upsample(a, b, c, K, s, backend=backend), upsample_reference, (q, k, v)),
             (lambda a, b: sapa_similarity(a, b, K, s, backend=backend), similarity_reference, (q, k)),
             (lambda a, b: sapa_aggregate(a, b, K, s, backend=backend), aggregate_reference, (w, v)))
    for fn, ref, args in cases:
        ours = [a.float().to(device).requires_grad_() for a in args]
        theirs = [a.clone().requires_grad_() for a in args]
        out, want = fn(*ours), ref(*theirs, K, s)
        g = go if out.shape == go.shape else torch.randn(out.shape, generator=gen, dtype=torch.float64)
        grads = torch.autograd.grad(out, ours, g.float().to(device))
        fwd = max(fwd, _max_err([out.cpu()], [want]))
        bwd = max(bwd, _max_err([x.cpu() for x in grads], torch.autograd.grad(want, theirs, g)))
    return fwd, bwd


def check_deform(backend: str, device: torch.device, shape: tuple) -> Tuple[float, float]:
    """Largest forward and backward (query, key, value, offset) error of SAPA-D, float32
    vs float64. The offset gradient scales with the sampled values: relative to its size."""
    B, G, d, C, H, W, P, s = shape
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(*sh, generator=gen, dtype=torch.float64) for sh in (
        (B, G * d, s * H, s * W), (B, G * d, H, W), (B, C, H, W), (B, G * P * 2, s * H, s * W))]
    args[3] = args[3] * 2
    go = torch.randn(B, C, s * H, s * W, generator=gen, dtype=torch.float64)
    ours = [a.float().to(device).requires_grad_() for a in args]
    theirs = [a.clone().requires_grad_() for a in args]
    out = sapa_deform_upsample(*ours, G, s, backend=backend)
    want = deform_upsample_reference(*theirs, G, s)
    grads = torch.autograd.grad(out, ours, go.float().to(device))
    wants = torch.autograd.grad(want, theirs, go)
    bwd = max(_max_err([g.cpu()], [w]) / (1 + w.abs().max().item() if i == 3 else 1)
              for i, (g, w) in enumerate(zip(grads, wants)))
    return _max_err([out.cpu()], [want]), bwd


def main() -> int:
    print(f'sapa_mm operator self-check: torch {torch.__version__}, float32 against the float64 reference')
    failures = _table('SAPA (similarity, aggregate, upsample)', 'B,C,d,H,W,K,s', SHAPES, check_one)
    failures += _table('SAPA-D (deform_upsample)', 'B,G,d,C,H,W,P,s', DEFORM_SHAPES, check_deform)
    print('all backends agree with the reference' if not failures else f'{failures} check(s) failed')
    return 1 if failures else 0


def _table(title: str, columns: str, shapes, check) -> int:
    tol = 1e-4
    print(f'\n{title}')
    print(f"{'backend':8} {'device':6} {columns:20} {'fwd err':>9} {'bwd err':>9}  result")
    failures = 0
    for backend, device in _backends():
        for shape in shapes:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                try:
                    fwd, bwd = check(backend, device, shape)
                    result = 'ok' if max(fwd, bwd) <= tol else 'MISMATCH'
                except Exception as exc:  # report and go on with the other backends
                    fwd = bwd = float('nan')
                    result = f'ERROR {type(exc).__name__}: {exc}'[:200]
            if library.gave_up(backend):
                result = f"FELL BACK to 'torch' (the {backend!r} kernels failed here)"
            fell = [str(m.message) for m in caught if 'sapa_mm' in str(m.message)]
            if fell and result == 'ok':
                result = 'FELL BACK: ' + fell[0][:150]
            failures += result != 'ok'
            print(f"{backend:8} {device.type:6} {','.join(map(str, shape)):20} {fwd:9.1e} {bwd:9.1e}  {result}")
    return failures


if __name__ == '__main__':
    sys.exit(main())
