"""`python -m batch_emulator`: the emulator as a stand-alone endpoint, for trying the AWS path with no account.

It starts the emulator on a chosen port, registers what the CDK stack would create (a job queue, the runner's job
definition with the Spot retry strategy, the signing secret, the bucket and the log group), writes a file shaped like
the one `cdk deploy --outputs-file` writes, and prints the endpoint. Then it serves until interrupted:

    python -m batch_emulator --port 4566 --outputs cdk-outputs.json
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \\
        scaler-batch worker --scheduler tcp://127.0.0.1:2345 --backend aws-batch \\
        --stack-outputs cdk-outputs.json --endpoint-url http://127.0.0.1:4566
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from batch_emulator.config import EmulatorConfig
from batch_emulator.emulator import DUMMY_KEY, BatchEmulator
from scaler_aws_batch.contracts import (
    EMULATOR_ENDPOINT_LINE_PREFIX,
    JOB_SCRATCH_PATH,
    JOB_SCRATCH_VOLUME,
    SIGNING_SECRET_ENV,
    SPOT_RETRY_EVALUATE_ON_EXIT,
    StackOutput,
)
from scaler_aws_batch.signing import generate_key

DEFAULT_STACK_NAME = "ScalerBatchEmulator"
DEFAULT_BUCKET = "scaler-batch-emulator"
DEFAULT_PREFIX = "scaler-tasks"
LOG_GROUP = "/aws/batch/job"
#: Attempts of the job definition's retry strategy (a Spot reclaim is retried once).
RETRY_ATTEMPTS = 2
JOB_TIMEOUT_SECONDS = 3600


def create_signing_secret(emulator: BatchEmulator, name: str = "scaler-batch-signing") -> tuple[str, str]:
    """The signing secret the CDK stack creates (a generated key): its ARN and its value."""
    key = generate_key()
    return emulator.client("secretsmanager").create_secret(Name=name, SecretString=key)["ARN"], key


#: The container the CDK stack's job definition declares (stacks/job_definition.py): a read-only root filesystem and
#: a scratch volume at /tmp (TMPDIR), for jobs run in the image (container execution).
STACK_CONTAINER_PROPERTIES: dict[str, Any] = {
    "readonlyRootFilesystem": True,
    "volumes": [{"name": JOB_SCRATCH_VOLUME, "host": {}}],
    "mountPoints": [{"sourceVolume": JOB_SCRATCH_VOLUME, "containerPath": JOB_SCRATCH_PATH, "readOnly": False}],
}


def provision(emulator: BatchEmulator, *, bucket: str, prefix: str, image: str | None = None) -> dict[str, str]:
    """Create the stack's resources in the emulator; return its outputs, keyed as the CDK stack keys them. With
    ``image``, the job definition runs it with the stack's container settings."""
    secret_arn, _ = create_signing_secret(emulator)
    image_settings: dict[str, Any] = {}
    if image is not None:
        image_settings = {"image": image, "container_properties": STACK_CONTAINER_PROPERTIES}
    queue_arn, job_definition_arn = emulator.create_queue_and_job_definition(
        queue_name="scaler-batch-queue",
        job_definition_name="scaler-batch-runner",
        retry_strategy={"attempts": RETRY_ATTEMPTS, "evaluateOnExit": list(SPOT_RETRY_EVALUATE_ON_EXIT)},
        timeout_seconds=JOB_TIMEOUT_SECONDS,
        log_group=LOG_GROUP,
        environment={SIGNING_SECRET_ENV: secret_arn, "TMPDIR": JOB_SCRATCH_PATH},
        **image_settings,
    )
    emulator.client("s3").create_bucket(Bucket=bucket)
    return {
        StackOutput.JOB_QUEUE_ARN: queue_arn,
        StackOutput.JOB_DEFINITION_ARN: job_definition_arn,
        StackOutput.BUCKET_NAME: bucket,
        StackOutput.PAYLOAD_PREFIX: prefix,
        StackOutput.REGION: emulator.region,
        StackOutput.LOG_GROUP_NAME: LOG_GROUP,
        StackOutput.SIGNING_SECRET_ARN: secret_arn,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batch_emulator",
        description="AWS Batch, S3 and CloudWatch Logs on this machine: jobs run as local processes.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port of the endpoint (0: a free one)")
    parser.add_argument(
        "--outputs", default="cdk-outputs.json", help="where to write the stack outputs file (cdk-outputs.json)"
    )
    parser.add_argument("--stack-name", default=DEFAULT_STACK_NAME, help=f"stack name ({DEFAULT_STACK_NAME})")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"bucket to create ({DEFAULT_BUCKET})")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"payload prefix output ({DEFAULT_PREFIX})")
    parser.add_argument("--max-running-jobs", type=int, default=8, help="jobs running at once; others wait (8)")
    parser.add_argument(
        "--execution",
        choices=("process", "thread", "container"),
        default="process",
        help="run each job as a process (like a container), the runner on a thread of the emulator (faster), or in "
        "the job image with podman (--image; what AWS would run)",
    )
    parser.add_argument(
        "--image",
        default=None,
        help="with --execution container: the job image (e.g. scaler-batch-runner:latest, as `make image` tags it)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"--port must be within 0..65535, got {args.port}", file=sys.stderr)
        return 2
    if args.max_running_jobs <= 0:
        print(f"--max-running-jobs must be positive, got {args.max_running_jobs}", file=sys.stderr)
        return 2
    if (args.execution == "container") != (args.image is not None):
        print("--execution container and --image go together (build the image with `make image`)", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    config = EmulatorConfig(
        host=args.host, port=args.port, max_running_jobs=args.max_running_jobs, execution=args.execution
    )
    emulator = BatchEmulator(config).start()  # a port in use: werkzeug says so and exits with code 1
    try:
        outputs = provision(emulator, bucket=args.bucket, prefix=args.prefix, image=args.image)
        path = pathlib.Path(args.outputs)
        path.write_text(json.dumps({args.stack_name: outputs}, indent=2) + "\n")
        print(f"{EMULATOR_ENDPOINT_LINE_PREFIX}{emulator.endpoint_url}")
        print(f"stack outputs written to {path.resolve()} (stack {args.stack_name})")
        print("start a worker with:")
        print(f"  AWS_ACCESS_KEY_ID={DUMMY_KEY} AWS_SECRET_ACCESS_KEY={DUMMY_KEY} scaler-batch worker \\")
        print("    --scheduler tcp://HOST:PORT --backend aws-batch \\")
        print(f"    --stack-outputs {path} --endpoint-url {emulator.endpoint_url}")
        print("Ctrl-C stops the emulator.", flush=True)
        stop.wait()
    finally:
        emulator.close()
    return 0
