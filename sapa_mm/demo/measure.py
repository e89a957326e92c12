"""Counting and timing the demo's models: parameters and multiply-accumulates
(sapa_mm.flops), and a training step of every variant timed side by side."""
import time
import warnings


def complexity(config):
    """Parameters and MACs of a config's model (whole model and its upsamplers)."""
    from sapa_mm.tools.complexity import config_complexity
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        c = config_complexity(config)
    return dict(params=c['params'], macs=c['macs'], upsampler_params=c['upsampler_params'],
                upsampler_macs=c['upsampler_macs'], input_shape=list(c['input_shape']))


def benchmark(configs, size, batch, reps=8, num_classes=6, threads=None):
    """Seconds per training step (forward, loss, backward, AdamW step) of each
    config's model on a random batch, median over ``reps`` rounds, at ``threads``
    torch threads (default: torch's; the demo passes its runs' count). The models take
    turns within every round, so a burst of load from other programs on the
    machine hits all of them alike."""
    import torch
    from sapa_mm.tools.allocator import keep_freed_memory
    keep_freed_memory()  # no page faults whose count depends on what ran before
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _timed_steps(configs, size, batch, reps, num_classes)
    finally:
        torch.set_num_threads(before)


def _timed_steps(configs, size, batch, reps, num_classes):
    import torch
    import torch.nn.functional as F
    from sapa_mm.tools.complexity import build_model
    torch.manual_seed(0)
    steps = {}
    for key, config in configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            model = build_model(config).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        steps[key] = (model, opt)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch, size, size))
    times = {k: [] for k in configs}
    for rep in range(reps + 2):
        for key, (model, opt) in steps.items():
            t0 = time.perf_counter()
            out = F.interpolate(model._forward(x), size=(size, size), mode='bilinear',
                                align_corners=False)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rep >= 2:  # two warm-up rounds
                times[key].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}
