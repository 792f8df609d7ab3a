"""`modelplane render FILE`: the children a ModelDeployment would produce; `modelplane run`: the operator."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from modelplane import render, spec
from modelplane.config import Config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelplane", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser("render", help="print the children of the ModelDeployments in FILE")
    render_cmd.add_argument("file", help="a YAML file with one or more ModelDeployments ('-' for stdin)")
    render_cmd.add_argument("--namespace", default="default", help="for objects without metadata.namespace")
    render_cmd.add_argument("--canary-ready", action="store_true", help="render as if the canary were Ready")
    render_cmd.add_argument("--keda", action="store_true", help="render as if KEDA were installed")
    commands.add_parser("run", help="run the operator (configuration from MODELPLANE_* variables)")
    args = parser.parse_args(argv)
    if args.command == "render":
        return _render(args)
    return _run()


def _render(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    config = Config.from_env()
    output = []
    for document in yaml.safe_load_all(text):
        if not document or document.get("kind") != spec.KIND:
            continue
        document.setdefault("metadata", {}).setdefault("namespace", args.namespace)
        document["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
        try:
            md = spec.parse(document)
        except spec.SpecError as error:
            print(f"error: {document['metadata'].get('name', '?')}: {error}", file=sys.stderr)
            return 1
        observed = render.Observations(canary_ready=args.canary_ready, keda_installed=args.keda)
        output.extend(render.children(md, config.render, observed))
    sys.stdout.write(yaml.safe_dump_all(output, sort_keys=False))
    return 0


def _run() -> int:
    import asyncio

    import kopf

    from modelplane import handlers  # registers the handlers

    config = Config.from_env()
    handlers.STATE.config = config  # one Config (and one random peering priority) for kopf and handlers
    kopf.configure(verbose=os.environ.get("MODELPLANE_LOG_LEVEL", "").lower() == "debug")
    asyncio.run(
        kopf.operator(
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
            peering_name=config.peering_name or None,
            priority=config.peering_priority,
            standalone=not config.peering_name,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
