"""``tools/benchmark_op.py --onnx``: the SAPA-B module exported to ONNX and run in
onnxruntime, against the eager module and bilinear upsampling, side by side.

The export is the plain graph every exporter records (:mod:`sapa_mm.ops.torch_backend`
inline: LayerNorm, 1x1 convs, the three window products as slices, multiplies and
sums; opset 17), so any ONNX runtime runs it. Inference, B = 1, the module in eval
mode; then one profiled run of the same graph, its time per ONNX op type.
"""
import collections
import json
import os
import tempfile
import warnings

import torch
import torch.nn.functional as F

OPSET = 17


def _session(path: str, threads: int, profile: bool = False):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(os.path.dirname(path), 'profile')
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def _time_per_op_type(path: str, threads: int, feeds) -> collections.Counter:
    """Microseconds per ONNX op type in one run (onnxruntime's profiler), after a warm-up."""
    session = _session(path, threads, profile=True)
    session.run(None, feeds)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    # the profile holds both runs; keep the second (the last event per node)
    last = {}
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            last[e['name']] = (e['args']['op_name'], e['dur'])
    per_type = collections.Counter()
    for op, dur in last.values():
        per_type[op] += dur
    return per_type


def onnx_report(threads: int, repeats: int, quick: bool = False) -> None:
    from ..layers import SAPA
    from .benchmark_op import timed
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print('--onnx needs onnxruntime (pip install onnxruntime)')
        return
    C, H = (8, 8) if quick else (256, 64)
    gen = torch.Generator().manual_seed(0)
    module = SAPA(C).eval()
    x = torch.randn(1, C, H, H, generator=gen)
    guide = torch.randn(1, C, 2 * H, 2 * H, generator=gen)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'sapa_b.onnx')
        with warnings.catch_warnings():  # the tracer's notes on Python values in the graph
            warnings.simplefilter('ignore')
            torch.onnx.export(module, (x, guide), path, input_names=['x', 'guide'],
                              output_names=['out'], dynamo=False, opset_version=OPSET)
        feeds = {'x': x.numpy(), 'guide': guide.numpy()}
        session = _session(path, threads)
        (got, ) = session.run(None, feeds)
        with torch.no_grad():
            error = (torch.from_numpy(got) - module(x, guide)).abs().max().item()

        def run(fn):
            def case():
                with torch.no_grad():
                    fn()
            case.reset = lambda: None
            return case
        t = timed({'bilinear, eager': run(lambda: F.interpolate(x, scale_factor=2, mode='bilinear')),
                   'SAPA-B module, eager': run(lambda: module(x, guide)),
                   'SAPA-B module, onnxruntime': run(lambda: session.run(None, feeds))},
                  torch.device('cpu'), repeats)
        per_type = _time_per_op_type(path, threads, feeds)
    eager = t['SAPA-B module, eager']
    print(f'\nSAPA-B module exported to ONNX (opset {OPSET}), inference, B=1 C={C} '
          f'{H}x{H} -> {2 * H}x{2 * H}, onnxruntime {onnxruntime.__version__} with {threads} '
          f'threads; max |onnxruntime - eager| = {error:.1e}')
    print('| run | ms | vs eager module | vs bilinear |')
    print('|---|---:|---:|---:|')
    for name, sec in t.items():
        print(f"| {name} | {sec * 1e3:.1f} | {sec / eager:.2f}x | {sec / t['bilinear, eager']:.2f}x |")
    total = sum(per_type.values()) or 1
    print('\nonnxruntime, one profiled run: time per op type')
    print('| op type | ms | share |')
    print('|---|---:|---:|')
    for op, us in per_type.most_common():
        print(f'| {op} | {us / 1e3:.1f} | {us / total:.0%} |')
