"""The SAPA demo, its embedded data and the small-scale reproduction.

This package sits at the tool layer: it drives tools/train.py and tools/test.py
and may import the rest of sapa_mm; nothing in sapa_mm.ops, .layers, .seg or .det
imports it. The command lines are tools/demo.py, tools/reproduce_small.py and
tools/make_demo_data.py.

* :mod:`.data`: the synthetic data generator (demo, reproduction and tests) and the
  stamped build every generator shares (``build_once``);
* :mod:`.depth_data` / :mod:`.matting_data`: the RGB-D rooms and the matting composites;
  :mod:`.depth_figures`: the depth demo's predictions and figure;
* :mod:`.spec`: the experiments, their variants, configs and schedules;
* :mod:`.runs`: running the tools with visible progress, reading their metrics
  from what mmengine records (``scalars.json``, the test run's JSON);
* :mod:`.measure`: parameters, MACs and the interleaved training-step timing;
* :mod:`.report`: tables and the reproduction's statistics;
* :mod:`.figures`: training curves and the side-by-side comparison;
* :mod:`.experiments`: the demo (``tools/demo.py``);
* :mod:`.reproduce`: the small-scale reproduction (``tools/reproduce_small.py``).
"""
