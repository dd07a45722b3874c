"""`python -m batch_emulator`: the emulator as a stand-alone endpoint, for trying the AWS path with no account.

It starts the emulator on a chosen port, registers what the CDK stack would create (a job queue, the runner's job
definition with the Spot retry strategy, the bucket and the log group), writes a file shaped like the one
`cdk deploy --outputs-file` writes, and prints the endpoint. Then it serves until interrupted:

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

from batch_emulator.config import EmulatorConfig
from batch_emulator.emulator import DUMMY_KEY, BatchEmulator
from scaler_aws_batch.contracts import EMULATOR_ENDPOINT_LINE_PREFIX, SPOT_RETRY_EVALUATE_ON_EXIT, StackOutput

DEFAULT_STACK_NAME = "ScalerBatchEmulator"
DEFAULT_BUCKET = "scaler-batch-emulator"
DEFAULT_PREFIX = "scaler-tasks"
LOG_GROUP = "/aws/batch/job"
#: Attempts of the job definition's retry strategy (a Spot reclaim is retried once).
RETRY_ATTEMPTS = 2
JOB_TIMEOUT_SECONDS = 3600


def provision(emulator: BatchEmulator, *, bucket: str, prefix: str) -> dict[str, str]:
    """Create the stack's resources in the emulator; return its outputs, keyed as the CDK stack keys them."""
    queue_arn, job_definition_arn = emulator.create_queue_and_job_definition(
        queue_name="scaler-batch-queue",
        job_definition_name="scaler-batch-runner",
        retry_strategy={"attempts": RETRY_ATTEMPTS, "evaluateOnExit": list(SPOT_RETRY_EVALUATE_ON_EXIT)},
        timeout_seconds=JOB_TIMEOUT_SECONDS,
        log_group=LOG_GROUP,
    )
    emulator.client("s3").create_bucket(Bucket=bucket)
    return {
        StackOutput.JOB_QUEUE_ARN: queue_arn,
        StackOutput.JOB_DEFINITION_ARN: job_definition_arn,
        StackOutput.BUCKET_NAME: bucket,
        StackOutput.PAYLOAD_PREFIX: prefix,
        StackOutput.REGION: emulator.region,
        StackOutput.LOG_GROUP_NAME: LOG_GROUP,
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
        choices=("process", "thread"),
        default="process",
        help="run each job as a process (like a container), or the runner on a thread of the emulator (faster)",
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
        outputs = provision(emulator, bucket=args.bucket, prefix=args.prefix)
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
