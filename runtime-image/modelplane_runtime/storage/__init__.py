"""Fetching models from object stores, web servers, the Hugging Face Hub and local paths.

``dispatch.backend_for(uri)`` picks the backend (one module per scheme, each a thin adapter over
its client library behind ``base.Backend``); ``transfer`` fetches with retries and stall limits;
``digest`` and ``archive`` verify and unpack what was fetched. ``modelplane_runtime.pull`` composes
them into the ``pull`` command.
"""
