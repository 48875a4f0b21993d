"""``resnet-builder bench`` and what only benchmarks use (the machine's yardsticks).

``run.py`` measures the trainer's own step against ``model.fit``, prediction
against ``model.predict``, and the input pipelines; ``machine.py`` holds the
matmul yardstick, CPU probes and dtype-policy copies the ``bench/`` scripts
compare. The trainer imports nothing from here.
"""
