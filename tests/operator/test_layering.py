"""What the import contracts (pyproject.toml, run by `make lint`) cannot say: what kopf has registered."""

from __future__ import annotations


def test_handlers_register_the_md_and_every_child_kind() -> None:
    import kopf
    from modelplane import handlers

    registry = kopf.get_default_registry()
    watched = set()
    for handler in registry._watching.get_all_handlers():  # noqa: SLF001
        assert handler.selector is not None, handler
        watched.add((handler.selector.group, handler.selector.any_name))
    assert ("modelplane.io", "modeldeployments") in watched
    for group, _version, plural in handlers.CHILD_RESOURCES:
        assert (group, plural) in watched
    assert not list(registry._changing.get_all_handlers())  # noqa: SLF001
    assert not list(registry._spawning.get_all_handlers())  # noqa: SLF001
