#!/usr/bin/env python
"""What tools/setup_env.sh needs to know about building mmcv for the torch at hand.

    python tools/mmcv_env.py key        # the wheel cache key
    python tools/mmcv_env.py build-env  # `export ...` lines for the mmcv build
    python tools/mmcv_env.py health     # mmcv's ops import and, with a GPU, run on it

A CPU torch builds mmcv's CPU ops. A CUDA torch builds its CUDA ops as well, for the
architectures in $TORCH_CUDA_ARCH_LIST or else those of the GPUs visible here; the
cache key names the CUDA version and the architectures, so a wheel built on a login
node for other GPUs (or without CUDA) is never taken on a GPU node. Failures print
one line that names what is missing (nvcc, CUDA_HOME, TORCH_CUDA_ARCH_LIST) and exit 1.
Needs torch alone (it runs before sapa_mm is installed).
"""
import os
import platform
import shutil
import sys


class SetupError(Exception):
    pass


def arch_list(env=os.environ):
    """The CUDA architectures to build for, e.g. ['8.0', '9.0']; [] for a CPU torch."""
    import torch
    if not torch.version.cuda:
        return []
    given = env.get('TORCH_CUDA_ARCH_LIST', '').replace(',', ';').replace(' ', ';')
    if given.strip(';'):
        return sorted({a for a in given.split(';') if a})
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        raise SetupError(
            f'torch {torch.__version__} is a CUDA build but no GPU is visible here, so the GPUs '
            'mmcv must be built for are unknown: set TORCH_CUDA_ARCH_LIST to those of the '
            "compute nodes (e.g. TORCH_CUDA_ARCH_LIST='8.0;9.0' for A100 and H100) or run the "
            'set-up on a GPU node')
    return sorted({'%d.%d' % torch.cuda.get_device_capability(i)
                   for i in range(torch.cuda.device_count())})


def cuda_home(env=os.environ):
    """The CUDA toolkit that compiles mmcv's kernels: $CUDA_HOME, else the one nvcc is in."""
    home = env.get('CUDA_HOME') or env.get('CUDA_PATH')
    if home:
        if not os.path.isfile(os.path.join(home, 'bin', 'nvcc')):
            raise SetupError(f'CUDA_HOME={home} has no bin/nvcc: point CUDA_HOME at a CUDA toolkit '
                             'matching torch (e.g. /usr/local/cuda-12.1; `module load cuda` on a cluster)')
        return home
    nvcc = shutil.which('nvcc', path=env.get('PATH'))
    if nvcc is None:
        import torch
        raise SetupError(f'building mmcv with CUDA ops for torch {torch.__version__} (CUDA '
                         f'{torch.version.cuda}) needs nvcc: install the CUDA toolkit {torch.version.cuda} '
                         '(or `module load cuda`) and set CUDA_HOME, or use a CPU-only torch')
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def key(env=os.environ):
    """``torch-<version>-cp<py>-<machine>``, plus ``-cu<cuda>-sm<archs>`` for a CUDA torch."""
    import torch
    k = (f'torch-{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}-'
         f'{platform.machine()}')
    archs = arch_list(env)
    if archs:
        k += f'-cu{torch.version.cuda}-sm' + '_'.join(a.replace('.', '') for a in archs)
    return k


def build_env(env=os.environ):
    """The variables of the mmcv build: MMCV_WITH_OPS always; with a CUDA torch
    FORCE_CUDA, TORCH_CUDA_ARCH_LIST and CUDA_HOME."""
    out = {'MMCV_WITH_OPS': '1'}
    archs = arch_list(env)
    if archs:
        out.update(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST=';'.join(archs), CUDA_HOME=cuda_home(env))
    return out


def health():
    """mmcv 2.1's compiled ops import; with a GPU visible, nms and roi_align run on it
    (a CPU-only or wrong-architecture build fails here, not at the first training step)."""
    import torch
    try:
        from mmcv.ops import nms, roi_align
    except Exception as exc:  # ImportError, or a broken _ext
        raise SetupError(f'mmcv.ops does not import ({type(exc).__name__}: {exc})') from None
    if not torch.cuda.is_available():
        return 'mmcv ops import (no GPU visible: CUDA ops not run)'
    dev = torch.device('cuda')
    try:
        boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]], device=dev)
        kept, _ = nms(boxes, torch.tensor([0.9, 0.8], device=dev), 0.5)
        rois = torch.tensor([[0., 0., 0., 4., 4.]], device=dev)
        pooled = roi_align(torch.ones(1, 1, 8, 8, device=dev), rois, (2, 2), 1.0, 0)
        torch.cuda.synchronize()
    except Exception as exc:
        try:
            gpu = 'sm %d.%d' % torch.cuda.get_device_capability()
        except Exception:  # the GPU itself is unusable
            gpu = 'unusable'
        raise SetupError(f'mmcv was built without working CUDA ops for this GPU ({gpu}): '
                         f'{type(exc).__name__}: {str(exc)[:200]}') from None
    if kept.tolist() != [0] or not torch.allclose(pooled, torch.ones_like(pooled)):
        raise SetupError('mmcv CUDA ops gave wrong results on this GPU')
    return f'mmcv CUDA ops run on {torch.cuda.get_device_name()}'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else ''
    try:
        if cmd == 'key':
            print(key())
        elif cmd == 'build-env':
            for name, value in build_env().items():
                print(f"export {name}='{value}'")
        elif cmd == 'health':
            print(health())
        else:
            print('usage: mmcv_env.py {key|build-env|health}', file=sys.stderr)
            return 2
    except SetupError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
