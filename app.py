#!/usr/bin/env python3
"""The CDK app: reads the ``cdk.json`` context once into :class:`stacks.config.StackConfig` and builds the stack.

``cdk synth`` / ``cdk deploy`` run this file (see ``cdk.json``); tests call :func:`build_app` with their own context.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.config import StackConfig
from stacks.scaler_batch_stack import ScalerBatchStack

#: Set to false (``-c nag=false``) to synthesize without the cdk-nag AwsSolutions gate.
NAG_CONTEXT_KEY = "nag"


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    env: Mapping[str, str] | None = None,
    nag: bool | None = None,
) -> tuple[cdk.App, ScalerBatchStack]:
    """Build the app and its stack. ``context`` adds to (and overrides) what the CDK CLI passes in; ``env`` stands
    in for ``os.environ`` when looking up ``CDK_DEFAULT_ACCOUNT`` and ``CDK_DEFAULT_REGION``."""
    app = cdk.App(context=dict(context) if context is not None else None, outdir=outdir)
    config = StackConfig.from_context(app.node.try_get_context)
    environ = os.environ if env is None else env
    account, region = environ.get("CDK_DEFAULT_ACCOUNT"), environ.get("CDK_DEFAULT_REGION")
    if config.vpc_id is not None and not (account and region):
        raise ValueError(
            f"cdk.json context 'vpc_id' is {config.vpc_id!r}: looking up an existing VPC needs a concrete account and"
            " region; run the CDK CLI with AWS credentials and a region (CDK_DEFAULT_ACCOUNT/CDK_DEFAULT_REGION), or"
            " unset vpc_id to create a new VPC"
        )
    stack = ScalerBatchStack(
        app,
        config.stack_name,
        config=config,
        env=cdk.Environment(account=account, region=region) if account or region else None,
        description="OpenGRIS Scaler tasks on AWS Batch (scaler-aws-batch)",
    )
    run_nag = nag if nag is not None else _as_bool(app.node.try_get_context(NAG_CONTEXT_KEY), default=True)
    if run_nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def _as_bool(raw: object, *, default: bool) -> bool:
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ValueError(f"cdk.json context '{NAG_CONTEXT_KEY}' is {raw!r}: set it to true or false")


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
