"""tools/benchmark_op.py in its modes, at tiny sizes (what runs, not how fast)."""
import pytest

from sapa_mm.tools.benchmark_op import main


def table_rows(text):
    return {line.split('|')[1].strip(): line for line in text.splitlines() if line.startswith('| ')}


def test_operator_mode_quick(capfd):
    main(['--quick', '--no-sweep', '--repeats', '1'])
    out, err = capfd.readouterr()  # fd-level: what the profiler's C++ side prints, too
    assert {'bilinear', 'reference', 'sapa[torch]', 'sapa[cpu]', 'sapa-d[cpu]'} <= set(table_rows(out))
    assert 'USDT' not in err and 'USDT' not in out


def test_modules_mode_quick(capsys):
    main(['--quick', '--modules', '--repeats', '1'])
    rows = table_rows(capsys.readouterr().out)
    assert {'bilinear', 'CARAFE', 'SAPA-B', 'SAPA-D', 'IndexNet', 'A2U'} <= set(rows)


@pytest.mark.parametrize('configs,shape', [
    (['configs/demo/segformer_demo_bilinear.py', 'configs/demo/segformer_demo_sapa.py'], ['64', '64']),
    (['configs/demo/mask_rcnn_demo_nearest.py', 'configs/demo/mask_rcnn_demo_sapa.py'], ['96', '128']),
])
def test_models_mode_times_a_training_step_of_each_config(capsys, configs, shape):
    from sapa_mm.tools.benchmark_models import compare_models
    results = compare_models(configs, tuple(map(int, shape)), batch=1, repeats=1)
    out = capsys.readouterr().out
    assert 'Training step' in out and all(c in out for c in configs)
    for r in results.values():
        assert r['seconds'] > 0 and r['macs'] > 0 and r['params'] > 0
    # the SAPA model has the upsampler's parameters on top of the baseline's
    assert results[configs[1]]['params'] > results[configs[0]]['params']
    # and the command line reaches the same function
    main(['--models', *configs, '--shape', *shape, '--batch', '1', '--repeats', '1'])
    assert '| step vs first |' in capsys.readouterr().out


def test_parts_mode_quick(capsys):
    main(['--quick', '--parts', '--repeats', '1'])
    rows = table_rows(capsys.readouterr().out)
    assert {'bilinear', 'SAPA-B module', 'norm + projection of the guide', 'operator forward',
            'floor: forward + backward traffic'} <= set(rows)


def test_onnx_mode_quick(capsys):
    pytest.importorskip('onnxruntime')
    main(['--quick', '--onnx', '--repeats', '1'])
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert {'SAPA-B module, eager', 'SAPA-B module, onnxruntime', 'bilinear, eager'} <= set(rows)
    assert {'Mul', 'ReduceSum', 'Softmax'} <= set(rows)  # the profile's op types
    error = float(out.split('max |onnxruntime - eager| = ')[1].split()[0])
    assert error < 1e-4
