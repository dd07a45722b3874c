"""Settings declared once: flags, environment, the TOML file (``-c``), precedence, the generated docs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
from typing import Any

import pytest

from conftest import REPO, WAIT_SECONDS, scaler_with_adapter
from scaler_aws_batch import cli, config, config_docs
from scaler_aws_batch.backends.local.settings import LocalSettings
from scaler_aws_batch.contracts import StackOutput
from scaler_aws_batch.limits import MAX_ARRAY_SIZE
from scaler_aws_batch.worker_settings import WorkerSettings

SAMPLE = REPO / "docs" / "worker.toml"


def _worker_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["worker", *argv])


def _load(*argv: str, env: dict[str, str] | None = None) -> tuple[WorkerSettings, str, Any]:
    worker, kind, backend_settings = cli.load_worker_settings(_worker_args(*argv), env or {})
    return worker, kind.name, backend_settings


def _toml(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "worker.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_configuration_md_is_generated_from_the_declarations() -> None:
    text = config_docs.DOC_PATH.read_text(encoding="utf-8")
    assert config_docs.updated(text) == text, (
        "docs/configuration.md is stale: run python -m scaler_aws_batch.config_docs"
    )


def test_one_field_declaration_gives_flag_variable_key_default_and_help(tmp_path: pathlib.Path) -> None:
    @dataclasses.dataclass(frozen=True)
    class Example(config.Settings):
        section = "example"
        batch_size: int = config.setting(8, "tasks per batch")

    parser = argparse.ArgumentParser()
    config.add_arguments(Example, parser, "example")
    assert "tasks per batch" in parser.format_help() and "--batch-size" in parser.format_help()
    data = config.read_config_file(_toml(tmp_path, "[example]\nbatch-size = 3\n"))
    from_file = config.file_section(data, Example, "worker.toml")
    env = {"SCALER_BATCH_BATCH_SIZE": "5"}

    assert config.load(Example, parser.parse_args([]), {}, {}).batch_size == 8
    assert config.load(Example, parser.parse_args([]), {}, from_file).batch_size == 3
    assert config.load(Example, parser.parse_args([]), env, from_file).batch_size == 5
    assert config.load(Example, parser.parse_args(["--batch-size", "9"]), env, from_file).batch_size == 9
    with pytest.raises(ValueError, match=r"batch_size must be a whole number \(--batch-size / SCALER_BATCH_BATCH"):
        config.load(Example, parser.parse_args(["--batch-size", "many"]), {}, {})


def test_command_line_beats_environment_beats_file_beats_default(tmp_path: pathlib.Path) -> None:
    path = _toml(tmp_path, '[worker]\nscheduler = "tcp://file:1"\nmax_concurrent_jobs = 100\nvanish-after = 9\n')
    env = {"SCALER_BATCH_MAX_CONCURRENT_JOBS": "50", "SCALER_BATCH_SCHEDULER": "tcp://env:1"}

    worker, _, _ = _load("-c", path, "--max-concurrent-jobs", "7", env=env)
    assert (worker.max_concurrent_jobs, worker.scheduler, worker.vanish_after) == (7, "tcp://env:1", 9.0)
    assert _load("-c", path, env=env)[0].max_concurrent_jobs == 50
    assert _load("-c", path)[0].max_concurrent_jobs == 100
    assert _load()[0].max_concurrent_jobs == MAX_ARRAY_SIZE
    assert _load(env={"SCALER_BATCH_CONFIG": path})[0].scheduler == "tcp://file:1"  # the file from the environment


def test_the_sample_file_in_docs_loads() -> None:
    worker, backend, local = _load("-c", str(SAMPLE))
    assert (worker.backend, backend, worker.max_concurrent_jobs, worker.job_timeout_seconds) == (
        "local",
        "local",
        100,
        3600,
    )
    assert isinstance(local, LocalSettings)
    assert (local.max_parallel, local.job_environment()) == (2, {"PYTHONUNBUFFERED": "1"})
    _, backend, slurm = _load("-c", str(SAMPLE), "--backend", "slurm")  # the flag beats the file's backend
    assert (backend, slurm.work_dir, slurm.partition) == ("slurm", ".scaler-batch/slurm", None)


def test_file_mistakes_stop_the_worker_with_what_to_fix(tmp_path: pathlib.Path) -> None:
    with pytest.raises(
        ValueError, match=r"unknown key 'max_concurent_jobs' in \[worker\]; known keys: .*max_concurrent"
    ):
        _load("-c", _toml(tmp_path, "[worker]\nmax_concurent_jobs = 3\n"))
    with pytest.raises(ValueError, match=r"unknown key 'workdir' in \[local\]"):  # another backend's table too
        _load("-c", _toml(tmp_path, '[worker]\nbackend = "aws-batch"\n[local]\nworkdir = "x"\n'))
    with pytest.raises(ValueError, match=r"unknown backend 'kubernetes' \(--backend / SCALER_BATCH_BACKEND\)"):
        _load("-c", _toml(tmp_path, '[worker]\nbackend = "kubernetes"\n'))
    with pytest.raises(ValueError, match=r"log_level must be one of DEBUG"):
        _load(env={"SCALER_BATCH_LOG_LEVEL": "LOUD"})
    # Other programs' sections in a shared Scaler config file are not ours to judge.
    assert _load("-c", _toml(tmp_path, '[scheduler]\nobject_storage_address = "tcp://x:1"\n'))[0].backend == "local"


def test_aws_batch_needs_a_timeout_of_at_least_a_minute(tmp_path: pathlib.Path) -> None:
    outputs = tmp_path / "outputs.json"
    stack = {
        StackOutput.JOB_QUEUE_ARN: "q",
        StackOutput.JOB_DEFINITION_ARN: "jd",
        StackOutput.BUCKET_NAME: "bucket-1",
        StackOutput.REGION: "us-east-1",
    }
    outputs.write_text(json.dumps({"S": stack}))
    worker, kind, aws = cli.load_worker_settings(
        _worker_args("--scheduler", "tcp://127.0.0.1:1", "--backend", "aws-batch", "--job-timeout", "30"),
        {"SCALER_BATCH_STACK_OUTPUTS": str(outputs)},
    )
    with pytest.raises(ValueError, match=r"at least 60 on aws-batch \(--job-timeout / SCALER_BATCH_JOB_TIMEOUT\)"):
        cli.build_worker(worker, kind, aws)


@pytest.mark.e2e
def test_worker_runs_from_a_config_file(tmp_path: pathlib.Path) -> None:
    work_dir = tmp_path / "jobs"
    path = _toml(
        tmp_path,
        f'[worker]\nbackend = "local"\nname = "from-toml"\n'
        f'[local]\nwork_dir = "{work_dir}"\njob_env = ["FROM_TOML=yes"]\n',
    )
    with scaler_with_adapter(tmp_path, ["-c", path]) as (client, _):
        assert client.submit(lambda: os.environ.get("FROM_TOML")).result(timeout=WAIT_SECONDS) == "yes"
    assert any((work_dir / "logs").glob("*.log"))  # the jobs ran under the file's work_dir
