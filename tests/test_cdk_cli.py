"""The real CDK CLI (pinned in package.json, installed by `npm ci`) synthesizes the app offline, without Docker.

`cdk synth` only stages the image's build context (a copy); the image is built by `cdk deploy`. The environment keeps
the CLI off the network: no instance-metadata lookups, no version check, no telemetry.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from cdk_support import REPO, STACK_NAME

pytestmark = pytest.mark.cdk

CDK_BIN = REPO / "node_modules" / ".bin" / "cdk"


def _offline_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "CDK_"))}
    env.update(
        {
            # app.py runs under the venv's python3 (cdk.json: "python3 app.py").
            "PATH": os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")]),
            "AWS_EC2_METADATA_DISABLED": "true",
            "CDK_DISABLE_VERSION_CHECK": "1",
            "CDK_DISABLE_CLI_TELEMETRY": "true",
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        }
    )
    return env


@pytest.mark.skipif(not CDK_BIN.exists(), reason="the CDK CLI is not installed: run `npm ci` (make test does)")
def test_cdk_cli_synth_works_offline(tmp_path: pathlib.Path) -> None:
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"]["aws-cdk"]
    version = subprocess.run(
        [str(CDK_BIN), "--version"], cwd=REPO, env=_offline_env(), capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith(pinned), version.stdout

    outdir = tmp_path / "cdk.out"
    result = subprocess.run(
        [str(CDK_BIN), "synth", "--output", str(outdir), "--ci", "--no-notices", "--no-version-reporting", "--quiet"],
        cwd=REPO,
        env=_offline_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert manifest["artifacts"][STACK_NAME]["type"] == "aws:cloudformation:stack"
    template = json.loads((outdir / f"{STACK_NAME}.template.json").read_text())
    assert "JobQueueArn" in template["Outputs"]
    report = json.loads((outdir / "validation-report.json").read_text())
    assert [plugin["violations"] for plugin in report["pluginReports"]] == [[]]
    assert not (REPO / "cdk.context.json").exists(), "the default app needs no context lookups"


@pytest.mark.skipif(not CDK_BIN.exists(), reason="the CDK CLI is not installed: run `npm ci` (make test does)")
@pytest.mark.parametrize(
    ("context", "platform"),
    [
        (["-c", "compute=fargate", "-c", "architecture=arm64"], "linux/arm64"),
        (["-c", "image_uri=123456789012.dkr.ecr.us-east-1.amazonaws.com/my-runner:1.0"], None),
    ],
    ids=["fargate-arm64", "prebuilt-image"],
)
def test_cdk_cli_synth_of_a_variant_works_offline_without_docker(
    tmp_path: pathlib.Path, context: list[str], platform: str | None
) -> None:
    env = _offline_env()
    # No Docker on PATH: synth never builds, and a prebuilt image leaves nothing for deploy to build either.
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), "/usr/bin", "/bin"])
    outdir = tmp_path / "cdk.out"
    result = subprocess.run(
        [str(CDK_BIN), "synth", *context, "--output", str(outdir), "--ci", "--no-notices", "--no-version-reporting",
         "--quiet"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    images = json.loads((outdir / f"{STACK_NAME}.assets.json").read_text()).get("dockerImages", {})
    assert [image["source"]["platform"] for image in images.values()] == ([platform] if platform else [])
    report = json.loads((outdir / "validation-report.json").read_text())
    assert [plugin["violations"] for plugin in report["pluginReports"]] == [[]]
