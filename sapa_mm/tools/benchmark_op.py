"""``tools/benchmark_op.py``: benchmark the SAPA operator against the reference and
against bilinear upsampling.

For every backend available on the device, measures forward+backward time and the
peak memory allocated on top of the inputs, side by side in one run (the cases are
interleaved, so machine noise hits them alike), and prints ratios. The operator tables
have bilinear, the reference, SAPA-B (``sapa[backend]``) and SAPA-D (``sapa-d[backend]``,
G = 4 groups, P = 9 points) side by side:

    python tools/benchmark_op.py                 # CPU, 2 threads, docs/design.md setting + sweep
    python tools/benchmark_op.py --device cuda   # GPU setting of the Triton issue, fp32 + fp16
    python tools/benchmark_op.py --modules       # whole upsamplers at one x2 step, C = 256
                                                 # (which: --modules below)
    python tools/benchmark_op.py --compile       # SAPA-B module: eager vs torch.compile
    python tools/benchmark_op.py --parts         # SAPA-B module and its parts timed apart,
                                                 # and its memory-traffic floor
    python tools/benchmark_op.py --onnx          # SAPA-B module in onnxruntime vs eager
    python tools/benchmark_op.py --models A.py B.py [--shape H W] [--batch N]
                                                 # one training step of two configs

Needs torch alone (no mm* package), so it runs on a bare GPU machine; the CARAFE row of
``--modules`` needs mmcv (CARAFEPack) and is skipped without it, ``--onnx`` needs
onnxruntime (:mod:`.benchmark_onnx`), and ``--models`` needs the OpenMMLab stack
(:mod:`.benchmark_models`).
"""
import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from ..ops import cpu_backend, sapa, sapa_deform_upsample, sapa_upsample, upsample_reference
from .allocator import keep_freed_memory

# the upsamplers of --modules, in table order: name -> upsample_cfg (``backend`` is added
# to the ones that take it)
MODULES = {
    'bilinear': dict(type='bilinear', align_corners=False),
    'CARAFE': dict(type='carafe', up_kernel=5, encoder_kernel=3, compressed_channels=64),
    'SAPA-B': dict(type='SAPA', kernel_size=5, embed_dim=32, variant='B'),
    'SAPA-D': dict(type='SAPA', embed_dim=32, variant='D', num_groups=4, num_points=9),
    'FADE': dict(type='FADE'),
    'FADE-Lite': dict(type='FADELite'),
    'DySample': dict(type='DySample', style='lp', groups=4),
    'DySample+': dict(type='DySample', style='lp', groups=4, dynamic=True),
    'IndexNet': dict(type='IndexNet'),
    'A2U': dict(type='A2U'),
}
_TAKES_BACKEND = ('SAPA', 'A2U')


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what C++ code writes to fd 2 (torch 2.13's profiler logs two 'USDT ...
    profiler_start/stop' lines per use); Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_extra_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated by fn beyond what was allocated when it started."""
    fn.reset()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # CPU: replay the allocator's events recorded by the profiler (exact, noise-free)
    from torch.profiler import ProfilerActivity, profile
    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'),
                    key=lambda e: e.start_ns())
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak


def timed(fns: Dict[str, Callable[[], None]], device: torch.device, repeats: int) -> Dict[str, float]:
    """Median seconds of each fn, the fns interleaved round by round."""
    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()
    for fn in fns.values():  # warm-up: JIT builds, autotuning, allocator
        fn()
        fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            fn.reset()
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def cases(B, C, d, H, W, K, s, dtype, device, backends, with_reference=True, points=9):
    """name -> fn running forward+backward, plus the bytes of the output tensor.

    Beside bilinear, the reference and SAPA-B (``sapa[backend]``), SAPA-D
    (``sapa-d[backend]``) with the module's defaults: G = 4 groups sharing the d
    query/key channels, ``points`` offsets each, offsets of about 1.5 low-res pixels."""
    gen = torch.Generator(device='cpu').manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_()
    q, k, v = rand(B, d, s * H, s * W), rand(B, d, H, W), rand(B, C, H, W)
    G = 4 if d % 4 == 0 and C % 4 == 0 else 1
    offset = (torch.randn(B, G * points * 2, s * H, s * W, generator=gen) * 1.5).to(
        device=device, dtype=dtype).requires_grad_()
    grad = torch.randn(B, C, s * H, s * W, generator=gen).to(device=device, dtype=dtype)

    def reset():  # drop the gradients outside the measured region
        for t in (q, k, v, offset):
            t.grad = None

    def fwd_bwd(forward):
        def run():
            forward().backward(grad)
        run.reset = reset
        return run
    fns = {'bilinear': fwd_bwd(lambda: F.interpolate(v, scale_factor=s, mode='bilinear', align_corners=False))}
    if with_reference:
        fns['reference'] = fwd_bwd(lambda: upsample_reference(q, k, v, K, s))
    for b in backends:
        fns[f'sapa[{b}]'] = fwd_bwd(lambda b=b: sapa_upsample(q, k, v, K, s, backend=b))
    for b in backends:
        fns[f'sapa-d[{b}]'] = fwd_bwd(lambda b=b: sapa_deform_upsample(q, k, v, offset, G, s, backend=b))
    return fns, grad.numel() * grad.element_size()


def report(title, fns, out_bytes, device, repeats, params=None):
    """Print the table; with ``params`` (name -> count, whole upsamplers) that column
    takes the place of the speed-up against the reference."""
    t = timed(fns, device, repeats)
    m = {name: peak_extra_bytes(fn, device) for name, fn in fns.items()}
    print(f'\n{title}')
    second = 'params' if params else 'vs reference'
    print(f'| method | fwd+bwd ms | {second} | vs bilinear | peak extra MiB | peak / output |')
    print('|---|---:|---:|---:|---:|---:|')
    for name in fns:
        if params:
            col = f'{params[name]:,}'
        else:
            col = f"{t['reference'] / t[name]:.1f}x faster" if 'reference' in t else '-'
        print(f"| {name} | {t[name] * 1e3:.1f} | {col} | {t[name] / t['bilinear']:.2f}x | "
              f'{m[name] / 2**20:.1f} | {m[name] / out_bytes:.2f} |')
    return t, m


def module_cases(B, C, H, W, s, device, backend=None):
    """name -> fn running forward+backward of a whole upsampler ``up(x, guide)`` (x and
    guide C-channel, guide s times x), plus the output bytes and the parameter counts."""
    from ..layers.guided import build_guided_upsampler
    gen = torch.Generator(device='cpu').manual_seed(0)
    x = torch.randn(B, C, H, W, generator=gen).to(device).requires_grad_()
    guide = torch.randn(B, C, s * H, s * W, generator=gen).to(device).requires_grad_()
    grad = torch.randn(B, C, s * H, s * W, generator=gen).to(device)
    ups = {}
    for name, cfg in MODULES.items():
        if cfg['type'] in _TAKES_BACKEND:
            cfg = dict(cfg, backend=backend)
        try:
            ups[name] = build_guided_upsampler(cfg, C, C, s)
        except (ImportError, KeyError) as e:  # no mmcv (or no mmcv ops): no CARAFE
            if cfg['type'] != 'carafe':
                raise
            print(f'{name} skipped: {e}')
    fns = {}
    for name, up in ups.items():
        up.to(device).train()

        def run(up=up):
            up(x, guide).backward(grad)

        def reset(up=up):
            up.zero_grad(set_to_none=True)
            x.grad = guide.grad = None
        run.reset = reset
        fns[name] = run
    params = {name: sum(p.numel() for p in up.parameters()) for name, up in ups.items()}
    return fns, grad.numel() * grad.element_size(), params


def parts_report(device: torch.device, repeats: int, quick: bool = False) -> None:
    """SAPA-B's module and its parts, each timed on its own, interleaved with bilinear:
    the norm + projection of the guide and of x, and the operator (docs/performance.md).

    And the module's memory-traffic floor: the passes over memory SAPA-B cannot avoid,
    each timed as a copy-like pass. Forward: read the guide and x, write the output
    (``out.copy_(guide)``, ``x`` copied); backward: read the output's gradient and
    write the guide's (``copy_``), read the guide again (its gradient depends on it:
    ``sum``), read x and write its gradient (``copy_``)."""
    from ..layers import SAPA
    from ..layers.norm import norm_project
    B, C, H = (1, 8, 8) if quick else (2, 256, 64)
    gen = torch.Generator().manual_seed(0)
    m = SAPA(C, C, 2).to(device).train()

    def rand(*shape, grad=True):
        return torch.randn(*shape, generator=gen).to(device).requires_grad_(grad)
    x, guide, grad = rand(B, C, H, H), rand(B, C, 2 * H, 2 * H), rand(B, C, 2 * H, 2 * H, grad=False)
    with torch.no_grad():
        q, = norm_project(m.norm_guide, guide, [m.query_proj])
        k, = norm_project(m.norm_x, x, [m.key_proj])
    q, k = q.requires_grad_(), k.requires_grad_()
    gq, gk = torch.randn_like(q), torch.randn_like(k)

    def case(run):
        def reset():
            m.zero_grad(set_to_none=True)
            for t in (x, guide, q, k):
                t.grad = None
        run.reset = reset
        return run
    fns = {
        'bilinear': case(lambda: F.interpolate(x, scale_factor=2, mode='bilinear').backward(grad)),
        'SAPA-B module': case(lambda: m(x, guide).backward(grad)),
        'norm + projection of the guide': case(
            lambda: norm_project(m.norm_guide, guide, [m.query_proj])[0].backward(gq)),
        'norm + projection of x': case(lambda: norm_project(m.norm_x, x, [m.key_proj])[0].backward(gk)),
        'operator forward': case(lambda: sapa_upsample(q.detach(), k.detach(), x.detach(), 5, 2)),
        'operator forward + backward': case(lambda: sapa_upsample(q, k, x, 5, 2).backward(grad)),
    }
    out, x_copy = torch.empty_like(guide), torch.empty_like(x)
    grad_guide, grad_x = torch.empty_like(guide), torch.empty_like(x)

    def forward_floor():
        out.copy_(guide)
        x_copy.copy_(x)

    def backward_floor():
        grad_guide.copy_(grad)
        guide.detach().sum()
        grad_x.copy_(x)
    fns['floor: forward traffic'] = case(torch.no_grad()(forward_floor))
    fns['floor: forward + backward traffic'] = case(torch.no_grad()(lambda: (forward_floor(), backward_floor())))
    t = timed(fns, device, repeats)
    floor = t['floor: forward + backward traffic']
    print(f'\nSAPA-B at B={B} C={C} {H}x{H} -> {2 * H}x{2 * H}, train mode, parts timed on their own; '
          'floor: the memory passes the module cannot avoid')
    print('| part | ms | vs bilinear | vs floor (fwd + bwd) |')
    print('|---|---:|---:|---:|')
    for name in fns:
        print(f"| {name} | {t[name] * 1e3:.1f} | {t[name] / t['bilinear']:.2f}x | {t[name] / floor:.2f}x |")


def compile_report(device: torch.device, repeats: int, quick: bool = False) -> None:
    """SAPA-B module forward+backward, eager vs torch.compile: first call and steady state."""
    from ..layers import SAPA
    C, H = (8, 8) if quick else (256, 64)
    torch.manual_seed(0)
    module = SAPA(C).to(device)
    x = torch.randn(1, C, H, H, device=device)
    guide = torch.randn(1, C, 2 * H, 2 * H, device=device)

    def step(m):
        def run():
            m(x, guide).sum().backward()
        run.reset = lambda: module.zero_grad(set_to_none=True)
        return run
    explain = torch._dynamo.explain(module)(x, guide)
    compiled = torch.compile(module)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    t0 = time.perf_counter()
    step(compiled)()
    sync()
    first = time.perf_counter() - t0
    t = timed({'eager': step(module), 'compiled': step(compiled)}, device, repeats)
    print(f'\nSAPA-B module (C={C}, {H}x{H} -> {2 * H}x{2 * H}), forward+backward, '
          f'graph breaks under dynamo: {explain.graph_break_count}')
    print('| mode | first call s | steady ms | vs eager |')
    print('|---|---:|---:|---:|')
    print(f"| eager | - | {t['eager'] * 1e3:.1f} | 1.00x |")
    print(f"| torch.compile | {first:.1f} | {t['compiled'] * 1e3:.1f} | {t['compiled'] / t['eager']:.2f}x |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--threads', type=int, default=2, help='CPU threads (default 2)')
    parser.add_argument('--repeats', type=int, help='timed rounds (default 7; 4 with --models)')
    parser.add_argument('--no-sweep', action='store_true', help='only the main setting')
    parser.add_argument('--quick', action='store_true', help='tiny sizes, for smoke tests')
    parser.add_argument('--modules', action='store_true',
                        help=f"whole upsamplers ({', '.join(MODULES)}) at one x2 step, C = 256, "
                        'instead of the operator')
    parser.add_argument('--parts', action='store_true',
                        help="SAPA-B's module and its parts (norm + projections, operator) timed apart")
    parser.add_argument('--compile', action='store_true',
                        help='only the SAPA-B module, eager vs torch.compile')
    parser.add_argument('--onnx', action='store_true',
                        help='only the SAPA-B module exported to ONNX, onnxruntime vs eager, '
                        'and where onnxruntime spends its time')
    parser.add_argument('--models', nargs='+', metavar='CONFIG',
                        help='time one training step of each config (forward + backward, train mode, '
                        'pretrained weights off), interleaved; ratios to the first')
    parser.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'),
                        help='--models: input size (default: the first config\'s crop / test size)')
    parser.add_argument('--batch', type=int, default=2, help='--models: images per step (default 2)')
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is visible')
    torch.set_num_threads(args.threads)
    repeats = args.repeats or 7
    if device.type == 'cpu' and keep_freed_memory():
        print('(glibc keeps freed memory in the process: every case runs on warm pages)')
    if args.onnx:
        if device.type != 'cpu':
            parser.error('--onnx runs on the CPU')
        from .benchmark_onnx import onnx_report
        return onnx_report(args.threads, repeats, args.quick)
    if args.models:
        if device.type != 'cpu':
            parser.error('--models runs on the CPU')
        from .benchmark_models import compare_models
        compare_models(args.models, args.shape, args.batch, args.repeats or 4)
        return
    backends = ['torch']
    if device.type == 'cpu' and cpu_backend.available():
        backends.append('cpu')
    if device.type == 'cuda' and sapa._triton_ready():
        backends.append('triton')
    if device.type == 'cpu':
        info = f'{args.threads} CPU threads'
        main_cfg, dtypes = dict(B=2, C=256, d=32, H=64, W=64, K=5, s=2), [torch.float32]
        sweep = [dict(B=1, C=64, d=32, H=32, W=32, K=5, s=2), dict(B=2, C=128, d=32, H=64, W=64, K=3, s=2),
                 dict(B=1, C=256, d=64, H=128, W=128, K=5, s=2), dict(B=2, C=256, d=32, H=32, W=48, K=7, s=4)]
    else:
        info = torch.cuda.get_device_name()
        main_cfg, dtypes = dict(B=8, C=256, d=32, H=128, W=128, K=5, s=2), [torch.float32, torch.float16]
        sweep = [dict(B=8, C=256, d=32, H=64, W=64, K=5, s=2), dict(B=2, C=512, d=64, H=128, W=128, K=7, s=2),
                 dict(B=8, C=128, d=32, H=64, W=64, K=3, s=4)]
    if args.quick:
        main_cfg, sweep = dict(B=1, C=8, d=4, H=8, W=8, K=5, s=2), [dict(B=1, C=4, d=2, H=5, W=7, K=3, s=3)]
    if args.modules:
        c = dict(B=1, C=8, H=8, W=8) if args.quick else (
            dict(B=2, C=256, H=64, W=64) if device.type == 'cpu' else dict(B=8, C=256, H=128, W=128))
        print(f'Upsampler benchmark: torch {torch.__version__}, {info}; peak extra = peak bytes '
              'allocated during forward+backward beyond the inputs and parameters')
        fns, out_bytes, params = module_cases(**c, s=2, device=device)
        report(f"B={c['B']} C={c['C']} {c['H']}x{c['W']} -> {2 * c['H']}x{2 * c['W']} "
               'float32, train mode', fns, out_bytes, device, repeats, params)
        return
    print(f'SAPA operator benchmark: torch {torch.__version__}, {info}, backends {backends}')
    if args.compile:
        return compile_report(device, repeats, args.quick)
    if args.parts:
        return parts_report(device, repeats, args.quick)
    print('peak extra = peak bytes allocated during forward+backward beyond the inputs; '
          'output = bytes of the (B, C, sH, sW) output')
    for dtype in dtypes:
        c = main_cfg
        title = (f"B={c['B']} C={c['C']} d={c['d']} {c['H']}x{c['W']} -> {c['s'] * c['H']}x{c['s'] * c['W']} "
                 f"K={c['K']} {str(dtype).replace('torch.', '')}")
        fns, out_bytes = cases(**c, dtype=dtype, device=device, backends=backends)
        report(title, fns, out_bytes, device, repeats)
    if args.no_sweep:
        return
    print('\nsweep (float32)')
    for c in sweep:
        title = (f"B={c['B']} C={c['C']} d={c['d']} {c['H']}x{c['W']} -> {c['s'] * c['H']}x{c['s'] * c['W']} "
                 f"K={c['K']}")
        fns, out_bytes = cases(**c, dtype=torch.float32, device=device, backends=backends)
        report(title, fns, out_bytes, device, max(3, repeats // 2))
