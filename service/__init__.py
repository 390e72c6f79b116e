"""The attention service, in two kinds of process.

- service/server/: the server process. HTTP only (FastAPI, the admission gate, the compute pool, metrics, the
  page); it never imports torch.
- service/compute/: the compute processes (started in compute/entry.py). They own torch and the models and
  turn request bodies into answers, through two doors (/attend's pipeline.py, the Open Inference Protocol's
  oip/) over one dispatch (dispatch.py).
- service/protocol.py: the socket between them; settings.py, errors.py, logs.py: what both use.
"""
