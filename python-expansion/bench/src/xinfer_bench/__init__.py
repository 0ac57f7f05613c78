"""xinfer's benchmark: its Python pieces (a separate distribution, not part of
the runtime that worker venvs install).

- ``measure``: the benchmark models (ONNX), the plain-Python baseline, the
  results CSV, report and plots;
- ``model_server``: the microservice approach's HTTP model server;
- ``beam_pipeline``: Beam's own RunInference in a pure-Python pipeline;
- ``python -m xinfer_bench ...``: the command line ``./xinfer bench`` uses.
"""
