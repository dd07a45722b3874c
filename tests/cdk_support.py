"""Helpers for the CDK tests: the repository's cdk.json context, app synthesis into a directory, tool lookup."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # app.py and stacks/ live at the repository root, outside the installed package
    sys.path.insert(0, str(REPO))

#: Quiets jsii's banner about the local Node version; it changes nothing else.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")

STACK_NAME = "ScalerAwsBatch"
#: A made-up account and region for tests that need a concrete environment (existing-VPC lookups).
TEST_ENV = {"CDK_DEFAULT_ACCOUNT": "123456789012", "CDK_DEFAULT_REGION": "us-east-1"}
#: No environment at all: the stack is environment-agnostic, like a synth without credentials.
NO_ENV: dict[str, str] = {}


def cdk_json_context(**overrides: Any) -> dict[str, Any]:
    """The ``context`` of the repository's ``cdk.json`` with ``overrides`` applied: what ``cdk synth`` would use."""
    context = dict(json.loads((REPO / "cdk.json").read_text())["context"])
    context.update(overrides)
    return context


#: checkov findings accepted for the stack's template (every variant), each with the reason (also listed in
#: docs/deploy.md).
CHECKOV_TEMPLATE_SKIPS = {
    "CKV_AWS_18": "S3 server access logs would need a second bucket for short-lived payloads; use CloudTrail data"
    " events (same reason as the cdk-nag S1 acknowledgment).",
    "CKV_AWS_21": "No versioning: payloads and results are written once and expire; versions would keep expired"
    " data (and its cost) around and make `cdk destroy` leave objects behind.",
    "CKV_AWS_158": "The job log group uses CloudWatch's default encryption at rest; a KMS key would add a key to manage"
    " and pay for; task code should not log secrets (the runner logs no payloads).",
    "CKV_AWS_115": "CDK's own S3 auto-delete Lambda (custom resource, runs only on stack delete): no concurrency limit"
    " is needed.",
    "CKV_AWS_116": "CDK's own S3 auto-delete Lambda: CloudFormation invokes it synchronously and reports failures; a"
    " dead-letter queue would never receive anything.",
    "CKV_AWS_117": "CDK's own S3 auto-delete Lambda only calls the S3 API; putting it in the VPC would add ENIs and"
    " slow stack deletion for no benefit.",
}
#: cfn-lint findings accepted, by rule and the logical-id prefix of CDK-generated resources they come from.
CFN_LINT_ALLOWED = {
    "W3005": "CustomS3AutoDeleteObjectsCustomResourceProvider",  # CDK's provider adds a redundant DependsOn
}


def cfn_lint_unexpected(template: pathlib.Path) -> tuple[list[dict[str, Any]], int, str]:
    """Run cfn-lint on a template; return its findings other than :data:`CFN_LINT_ALLOWED`, its exit code and
    stderr."""
    result = subprocess.run(
        [tool("cfn-lint"), "--format", "json", str(template)], capture_output=True, text=True, check=False
    )
    findings = json.loads(result.stdout or "[]")
    unexpected = [
        finding
        for finding in findings
        if not (
            finding["Rule"]["Id"] in CFN_LINT_ALLOWED
            and finding["Location"]["Path"][1].startswith(CFN_LINT_ALLOWED[finding["Rule"]["Id"]])
        )
    ]
    return unexpected, result.returncode, result.stderr


def checkov_failures(path: pathlib.Path, framework: str, skips: Iterable[str]) -> tuple[list[tuple[str, str]], int]:
    """Run checkov on one file; return its failed checks as (check id, resource) and its exit code."""
    result = subprocess.run(
        [tool("checkov"), "--file", str(path), "--framework", framework, "--skip-check", ",".join(skips),
         "--skip-download", "--quiet", "--compact", "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        (check["check_id"], check["resource"]) for entry in reports for check in entry["results"]["failed_checks"]
    ]
    return failed, result.returncode


def tool(name: str) -> str:
    """A console script next to this interpreter (the venv), or on PATH."""
    local = pathlib.Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: run `make .venv/.dev-installed`")
    return found


def synth_to(outdir: pathlib.Path, context: Mapping[str, Any], env: Mapping[str, str] = NO_ENV) -> dict[str, Any]:
    """Synthesize the app (with the cdk-nag gate) into ``outdir`` and return the stack's template."""
    from app import build_app

    app, stack = build_app(context, outdir=str(outdir), env=env)
    assembly = app.synth()
    template: dict[str, Any] = assembly.get_stack_by_name(stack.stack_name).template
    return template
