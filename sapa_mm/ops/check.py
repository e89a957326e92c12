"""Self-check after installing: ``python -m sapa_mm.ops.check``.

Runs every backend available here (and on every visible device) against the
reference of DESIGN.md §1 on small shapes, forward and backward, prints a table and
exits with 1 if any result differs or a fast backend could not run (it fell back).
"""
import sys
import warnings
from typing import List, Tuple

import torch

from . import cpu_backend, library
from .reference import aggregate_reference, similarity_reference, upsample_reference
from .sapa import _triton_ready, sapa_aggregate, sapa_similarity, sapa_upsample

# (B, C, d, H, W, K, s): windows wider than the image, non-square, odd channels, s = 1
SHAPES = [(2, 5, 3, 4, 6, 5, 2), (1, 7, 4, 3, 2, 3, 3), (1, 3, 2, 5, 5, 7, 1)]


def _backends() -> List[Tuple[str, torch.device]]:
    found = [('torch', torch.device('cpu'))]
    if cpu_backend.available():
        found.append(('cpu', torch.device('cpu')))
    if torch.cuda.is_available():
        found.append(('torch', torch.device('cuda')))
        if _triton_ready():
            found.append(('triton', torch.device('cuda')))
    return found


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


def main() -> int:
    tol = 1e-4
    print(f'sapa_mm operator self-check: torch {torch.__version__}, float32 against the float64 reference')
    print(f"{'backend':8} {'device':6} {'B,C,d,H,W,K,s':20} {'fwd err':>9} {'bwd err':>9}  result")
    failures = 0
    for backend, device in _backends():
        for shape in SHAPES:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                try:
                    fwd, bwd = check_one(backend, device, shape)
                    result = 'ok' if max(fwd, bwd) <= tol else 'MISMATCH'
                except Exception as exc:  # report and go on with the other backends
                    fwd = bwd = float('nan')
                    result = f'ERROR {type(exc).__name__}: {exc}'[:200]
            if backend == 'triton' and library.triton_failed():
                result = "FELL BACK to 'torch' (the Triton kernels failed here)"
            fell = [str(m.message) for m in caught if 'sapa_mm' in str(m.message)]
            if fell and result == 'ok':
                result = 'FELL BACK: ' + fell[0][:150]
            failures += result != 'ok'
            print(f"{backend:8} {device.type:6} {','.join(map(str, shape)):20} {fwd:9.1e} {bwd:9.1e}  {result}")
    print('all backends agree with the reference' if not failures else f'{failures} check(s) failed')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
