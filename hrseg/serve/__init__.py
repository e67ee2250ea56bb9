"""``hrseg serve``: a trained :class:`hrseg.Segmenter` behind an HTTP endpoint on LitServe.

- :mod:`~hrseg.serve.limits`: what a request may send (content types, body size, formats, pixels), PIL only;
- :mod:`~hrseg.serve.api`: the LitServe API (request reading in the HTTP process, batched prediction in the
  inference worker, PNG / JSON responses);
- :mod:`~hrseg.serve.server`: the server with its page (``page.html``), ``/health`` and ``/info``.

Like :mod:`hrseg.deploy`, nothing here imports Lightning: a deployment needs torch, PIL, numpy and
LitServe. See docs/serving.md.
"""
