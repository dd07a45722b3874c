"""Build the job image the way `cdk deploy` does: from the synthesized cloud assembly's own docker image asset.

`cdk deploy` builds each docker image asset of the assembly (`cdk.out/*.assets.json`: directory, Dockerfile, build
args, build contexts, target, platform) with Docker and pushes it to ECR. This builds the same asset, with Docker
when it runs, otherwise with podman (on a machine with no registry, on a stand-in base image that
`container/offline-base.sh` builds from Debian packages), then checks the image: it runs Python at the version the
asset was built for and can import what a default Scaler client's tasks need.

    python container/build_image.py [--assembly cdk.out] [--tag scaler-batch-runner:latest] [--json FILE]

A stack deployed with `image_uri` has no image asset: there is nothing to build, and this says so.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OFFLINE_BASE = HERE / "offline-base.sh"
DEFAULT_TAG = "scaler-batch-runner:latest"
#: One build at a time on a machine: the base image's one local name is pointed at the architecture a build needs,
#: and must not move while a build reads it. offline-base.sh takes the same lock unless it is told it is held.
LOCK_FILE = Path("/tmp/scaler-batch-image-build.lock")
LOCK_HELD_ENV = "SCALER_BATCH_IMAGE_LOCK_HELD"
_ARG = re.compile(r"^ARG\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<value>\S*))?\s*$", re.MULTILINE)
#: What the image must import for a default Scaler client's task: the runner, and Scaler for its serializer.
_PROBE = (
    "import sys, importlib.metadata as m, scaler, cloudpickle, boto3, tblib, scaler_aws_batch.runner; "
    "print('%d.%d.%d' % sys.version_info[:3], m.version('opengris-scaler'), m.version('cloudpickle'), "
    "len(list(m.distributions())))"
)


class BuildError(Exception):
    """The asset cannot be built or the image fails its checks; the message says what to fix."""


@dataclass(frozen=True)
class ImageAsset:
    """One docker image asset of a cloud assembly, as `cdk deploy` reads it."""

    asset_hash: str
    context: Path
    dockerfile: str
    build_args: dict[str, str]
    build_contexts: dict[str, str]
    target: str | None
    platform: str | None


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    asset_hash: str
    engine: str
    seconds: float
    size_bytes: int
    python: str
    scaler: str
    cloudpickle: str
    distributions: int
    platform: str | None


def image_assets(assembly: Path) -> list[ImageAsset]:
    """The docker image assets of every stack of the assembly."""
    manifests = sorted(assembly.glob("*.assets.json"))
    if not manifests:
        raise BuildError(f"no *.assets.json in {assembly}: run `npx cdk synth` first")
    assets: list[ImageAsset] = []
    for manifest in manifests:
        images: dict[str, Any] = json.loads(manifest.read_text()).get("dockerImages") or {}
        for asset_hash, entry in images.items():
            source = entry["source"]
            if "executable" in source:
                raise BuildError(f"asset {asset_hash} is built by its own command {source['executable']}: run it")
            assets.append(
                ImageAsset(
                    asset_hash=asset_hash,
                    context=(assembly / source["directory"]).resolve(),
                    dockerfile=source.get("dockerFile", "Dockerfile"),
                    build_args=dict(source.get("dockerBuildArgs") or {}),
                    build_contexts=dict(source.get("dockerBuildContexts") or {}),
                    target=source.get("dockerBuildTarget"),
                    platform=source.get("platform"),
                )
            )
    return assets


def dockerfile_args(asset: ImageAsset) -> dict[str, str]:
    """The Dockerfile's ARG defaults with the asset's build args applied."""
    text = (asset.context / asset.dockerfile).read_text()
    values = {m["name"]: m["value"] or "" for m in _ARG.finditer(text)}
    return {**values, **asset.build_args}


def container_engine() -> list[str]:
    """Docker when its daemon answers (what `cdk deploy` uses), podman otherwise."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "info"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker"]
    if shutil.which("podman"):
        # runc: crun refuses this kind of host's hybrid cgroups.
        return ["podman", "--runtime", "runc"]
    raise BuildError("neither a running Docker nor podman: install one (as root: make image-tools)")


def _run(argv: Sequence[str], what: str, capture: bool = False) -> str:
    completed = subprocess.run(list(argv), text=True, capture_output=capture, check=False)
    if completed.returncode != 0:
        detail = (completed.stderr or "").strip()[-2000:] if capture else "see the output above"
        raise BuildError(f"{what} failed (exit {completed.returncode}): {detail}")
    return completed.stdout if capture else ""


def ensure_base(engine: list[str], asset: ImageAsset) -> None:
    """podman with no registry: make the Dockerfile's base image available (pulled, or the Debian stand-in)."""
    if engine[0] != "podman":
        return
    args = dockerfile_args(asset)
    arch = (asset.platform or "linux/amd64").split("/", 1)[1]
    argv = ["bash", str(OFFLINE_BASE), args.get("PYTHON_VERSION", "3.11"), args.get("DEBIAN_RELEASE", "bookworm"), arch]
    completed = subprocess.run(argv, env={**os.environ, LOCK_HELD_ENV: "1"}, check=False)
    if completed.returncode != 0:
        raise BuildError(f"preparing the base image failed (exit {completed.returncode}): see the output above")


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Hold the machine's image-build lock (waits for another build to finish)."""
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_command(engine: list[str], asset: ImageAsset, tag: str) -> list[str]:
    argv = [*engine, "build", "-f", str(asset.context / asset.dockerfile), "-t", tag]
    if engine[0] == "podman":
        # No registry to pull from; RUN steps need chroot isolation and the host's network (pip, apt) here.
        argv += ["--pull=never", "--isolation", "chroot", "--network", "host"]
    if asset.platform:
        argv += ["--platform", asset.platform]
    for name, value in sorted(asset.build_args.items()):
        argv += ["--build-arg", f"{name}={value}"]
    for name, path in sorted(asset.build_contexts.items()):
        argv += ["--build-context", f"{name}={path}"]
    if asset.target:
        argv += ["--target", asset.target]
    return [*argv, str(asset.context)]


def check_image(engine: list[str], asset: ImageAsset, tag: str) -> tuple[str, str, str, int]:
    """Run the image once: its Python must be the asset's PYTHON_VERSION, and the task-side imports must load."""
    runner = [*engine, "run", "--rm", "--network", "host"]
    if engine[0] == "podman":
        runner += ["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=4096:8192"]
    if asset.platform:
        runner += ["--platform", asset.platform]
    out = _run([*runner, tag, "python", "-c", _PROBE], f"running {tag}", capture=True).split()
    python, scaler_version, cloudpickle_version, count = out[0], out[1], out[2], int(out[3])
    wanted = dockerfile_args(asset).get("PYTHON_VERSION")
    if wanted and not (python == wanted or python.startswith(wanted + ".")):
        raise BuildError(
            f"{tag} runs Python {python}, but the stack was synthesized for Python {wanted} (python_version): "
            "payloads only load on the client's minor version; use a base image of that version"
        )
    return python, scaler_version, cloudpickle_version, count


def build(asset: ImageAsset, tag: str, engine: list[str] | None = None) -> BuiltImage:
    engine = engine or container_engine()
    with build_lock():
        ensure_base(engine, asset)
        started = time.monotonic()
        _run(build_command(engine, asset, tag), f"building asset {asset.asset_hash[:12]}")
        seconds = time.monotonic() - started
    python, scaler_version, cloudpickle_version, count = check_image(engine, asset, tag)
    size = int(_run([*engine, "image", "inspect", "--format", "{{.Size}}", tag], "inspecting", capture=True))
    return BuiltImage(
        tag=tag,
        asset_hash=asset.asset_hash,
        engine=engine[0],
        seconds=round(seconds, 1),
        size_bytes=size,
        python=python,
        scaler=scaler_version,
        cloudpickle=cloudpickle_version,
        distributions=count,
        platform=asset.platform,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--assembly", type=Path, default=Path("cdk.out"), help="the cloud assembly (cdk.out)")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"the image's local name (default {DEFAULT_TAG})")
    parser.add_argument("--json", type=Path, help="also write what was built here, as JSON")
    args = parser.parse_args(argv)
    try:
        assets = image_assets(args.assembly)
        if not assets:
            print(f"{args.assembly} has no image asset (the stack names a prebuilt image_uri): nothing to build")
            built: list[BuiltImage] = []
        else:
            tags = [args.tag] if len(assets) == 1 else [f"{args.tag}-{n}" for n in range(1, len(assets) + 1)]
            built = [build(asset, tag) for asset, tag in zip(assets, tags, strict=True)]
    except BuildError as exc:
        print(f"build_image: {exc}", file=sys.stderr)
        return 1
    for image in built:
        print(
            f"built {image.tag} from asset {image.asset_hash[:12]} with {image.engine} in {image.seconds:.0f} s: "
            f"{image.size_bytes / 1e6:.0f} MB, Python {image.python}, opengris-scaler {image.scaler}, "
            f"cloudpickle {image.cloudpickle}, {image.distributions} Python distributions"
        )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(image) for image in built], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
