"""The job image: built from ``container/Dockerfile`` (with the user's requirements and system packages) for the
stack's architecture, or a prebuilt image the user names (then synth and deploy need no Docker)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Aws, IgnoreMode
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from scaler_aws_batch.contracts import Architecture

#: The image builds from the repository root (it installs this repo's package) with ``container/Dockerfile``.
#: The root ``.dockerignore`` keeps the build context (and CDK's asset staging copy) to what the image needs.
REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "container/Dockerfile"
#: The Dockerfile's stage that a named build context replaces with the requirements file's directory.
REQUIREMENTS_CONTEXT = "requirements"
PLATFORMS = {Architecture.X86_64: ecr_assets.Platform.LINUX_AMD64, Architecture.ARM64: ecr_assets.Platform.LINUX_ARM64}
#: A private ECR image: its repository gets a pull grant for the execution role (other registries need none).
_ECR_URI = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/(?P<repository>[^:@]+)"
    r"(?::(?P<tag>[^@]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def build_args(python_version: str, requirements: Path | None, system_packages: Sequence[str]) -> dict[str, str]:
    """The Dockerfile's build arguments for these settings (unset ones are left out, so the defaults apply)."""
    args = {"PYTHON_VERSION": python_version}
    if requirements is not None:
        args["REQUIREMENTS_FILE"] = requirements.name
    if system_packages:
        args["SYSTEM_PACKAGES"] = " ".join(system_packages)
    return args


def job_image(
    scope: Construct,
    *,
    image_uri: str | None,
    python_version: str,
    architecture: str,
    requirements: Path | None,
    system_packages: Sequence[str],
) -> ecs.ContainerImage:
    """The job image: ``image_uri`` as is, or the runner image built for ``architecture``."""
    if image_uri is not None:
        ecr_match = _ECR_URI.match(image_uri)
        if ecr_match is None:
            return ecs.ContainerImage.from_registry(image_uri)
        repository = ecr.Repository.from_repository_attributes(
            scope,
            "ImageRepository",
            repository_arn=f"arn:{Aws.PARTITION}:ecr:{ecr_match['region']}:{ecr_match['account']}:repository/"
            f"{ecr_match['repository']}",
            repository_name=ecr_match["repository"],
        )
        return ecs.ContainerImage.from_ecr_repository(repository, ecr_match["digest"] or ecr_match["tag"] or "latest")
    build_contexts: dict[str, str] = {}
    extra_hash: str | None = None
    if requirements is not None:
        build_contexts[REQUIREMENTS_CONTEXT] = str(requirements.parent)
        # The named context is outside the asset directory: its file's digest makes a changed file a new image.
        extra_hash = hashlib.sha256(requirements.read_bytes()).hexdigest()
    return ecs.ContainerImage.from_asset(
        str(REPO_ROOT),
        file=DOCKERFILE,
        build_args=build_args(python_version, requirements, system_packages),
        build_contexts=build_contexts or None,
        extra_hash=extra_hash,
        platform=PLATFORMS[architecture],
        ignore_mode=IgnoreMode.DOCKER,
    )
