"""The implementation of the command-line tools; ``tools/*.py`` are thin entry points.

=========================  ====================================================
module                     what
=========================  ====================================================
``train`` / ``test``       ``tools/train.py`` / ``tools/test.py``
``launch``                 what both share: arguments, config, process group,
                           Runner
``errors``                 ``UserError`` and the one-line ``error:`` reports
``stack``                  what the tools set up in mmengine (checked checkpoint
                           loading, CPU-only distributed runs, warnings)
``data_roots``             "the data set is missing" messages
``complexity``             a config's model, input size, params and MACs
``get_flops``              ``tools/get_flops.py`` (the paper's columns)
``benchmark_op``           ``tools/benchmark_op.py`` (torch alone)
``attention_stats``        ``tools/attention_stats.py``: saturation of learned
                           upsamplers (the recorder needs torch alone)
=========================  ====================================================

Importing this package (or any of its modules) changes nothing; the tools call
:func:`sapa_mm.tools.stack.apply` and friends explicitly.
"""
