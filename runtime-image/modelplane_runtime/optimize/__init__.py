"""``modelplane-runtime optimize``: an ONNX form of the model, int8 where it applies, behind a gate.

It runs after the pull and before serving (an init container), never on the request path:
:mod:`.convert` makes the ONNX form (and quantizes it), :mod:`.gate` checks it against the original
on a sample, :mod:`.step` measures both, caches the result by the artifact's digest beside the
artifact in its store (:mod:`.cache`) and leaves a record that ``serve`` follows.
"""
