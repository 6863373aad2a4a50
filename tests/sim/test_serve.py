"""`noderescue sim serve` as a real subprocess: files, real kubectl, boto3 / Azure SDK, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from azure.core.credentials import AccessToken
from azure.mgmt.compute.aio import ComputeManagementClient

from noderescue.config import parse_config
from noderescue.sim import serve as serve_module

KUBECTL = str(Path(sys.executable).parent / "kubectl")
START_TIMEOUT_S = 60.0  # a cold start imports moto and boto3 on a shared 2-core machine


@dataclass
class Served:
    process: asyncio.subprocess.Process
    out: Path
    banner: list[str]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for line in (self.out / "env").read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = shlex.split(value)[0]
        return env


async def start_serve(out: Path, scenario: str, *extra: str) -> Served:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noderescue", "sim", "serve", "--scenario", scenario, "--out", str(out),
        "--time-scale", "10", *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    banner: list[str] = []
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"sim serve ended before it was ready: {''.join(banner)}")
            banner.append(line)
            if line.startswith("running"):
                return Served(process, out, banner)


async def stop_serve(served: Served) -> tuple[int, str]:
    served.process.send_signal(signal.SIGTERM)
    assert served.process.stdout is not None
    async with asyncio.timeout(15):
        rest = await served.process.stdout.read()
        code = await served.process.wait()
    return code, rest.decode()


@pytest.fixture
async def aws_served(tmp_path: Path) -> AsyncIterator[Served]:
    served = await start_serve(tmp_path / "out", "one-bad-worker")
    try:
        yield served
    finally:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()


async def kubectl(served: Served, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": served.env()["KUBECONFIG"]},
    )
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.slow
async def test_serve_aws_scenario_end_to_end(aws_served: Served) -> None:
    out = aws_served.out
    for name in ("kubeconfig", "env", "noderescue.yaml", "audit.jsonl"):
        assert (out / name).is_file(), name
        assert str(out / name) in "".join(aws_served.banner), f"{name} not announced"

    env = aws_served.env()
    assert env["KUBECONFIG"] == str(out / "kubeconfig")
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"

    code, output = await kubectl(aws_served, "get", "nodes", "-o", "wide")
    assert code == 0, output
    assert all(f"workers-{i}" in output for i in range(6)), output

    def describe() -> dict[str, Any]:
        client = boto3.client(
            "autoscaling",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        groups = client.describe_auto_scaling_groups(AutoScalingGroupNames=["workers"])["AutoScalingGroups"]
        return dict(groups[0])

    group = await asyncio.to_thread(describe)
    code, output = await kubectl(aws_served, "get", "nodes", "-o", "jsonpath={.items[*].spec.providerID}")
    assert code == 0, output
    assert sorted(p.rpartition("/")[2] for p in output.split()) == sorted(
        i["InstanceId"] for i in group["Instances"]
    )

    code, output = await kubectl(aws_served, "cordon", "workers-3")
    assert code == 0, output
    audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert any(
        a["verb"] == "patch" and a["name"] == "workers-3" and "kubectl" in a["userAgent"] for a in audit
    ), audit

    config = parse_config((out / "noderescue.yaml").read_text(), str(out / "noderescue.yaml"))
    cluster = config.clusters[0]
    assert cluster.provider == "aws" and cluster.aws is not None
    assert cluster.aws.auto_scaling_groups == ("workers",)
    assert [c.name for c in config.node_classes] == ["workers"]

    started = time.monotonic()
    code, rest = await stop_serve(aws_served)
    assert code == 0, rest
    assert time.monotonic() - started < 10
    assert "stopped" in rest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeCredential:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake", int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


@pytest.mark.slow
async def test_serve_azure_scenario_env_works_with_the_sdk(tmp_path: Path) -> None:
    port = free_port()
    served = await start_serve(tmp_path / "out", "azure-workers", "--port", str(port))
    try:
        env = served.env()
        client: Any = ComputeManagementClient(
            FakeCredential(),
            env["AZURE_SUBSCRIPTION_ID"],
            base_url=env["AZURE_ARM_ENDPOINT"],
            connection_verify=env["AZURE_CA_BUNDLE"],
        )
        async with client:
            vms = [
                vm.properties.os_profile.computer_name
                async for vm in client.virtual_machine_scale_set_vms.list(
                    env["AZURE_RESOURCE_GROUP"], "workers"
                )
            ]
        assert vms == ["workers-0", "workers-1", "workers-2", "workers-3"]
        assert f"server: http://127.0.0.1:{port}" in (served.out / "kubeconfig").read_text()
        config = parse_config((served.out / "noderescue.yaml").read_text(), "noderescue.yaml")
        assert config.clusters[0].azure is not None
        assert config.clusters[0].azure.scale_sets == ("workers",)
        code, rest = await stop_serve(served)
        assert code == 0, rest
    finally:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()


async def test_serve_port_in_use_fails_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "noderescue", "sim", "serve", "--scenario", "large", "--out", str(tmp_path),
            "--port", str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NODERESCUE_SIM_NODES": "3"},
        )  # fmt: skip
        async with asyncio.timeout(START_TIMEOUT_S):
            _, stderr = await process.communicate()
    assert process.returncode == 1
    assert "cannot start" in stderr.decode()


async def test_serve_unknown_scenario_lists_the_built_ins(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noderescue", "sim", "serve", "--scenario", "nope", "--out", str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(START_TIMEOUT_S):
        _, stderr = await process.communicate()
    assert process.returncode == 2
    assert "one-bad-worker" in stderr.decode() and "azure-workers" in stderr.decode()
    assert not (tmp_path / "kubeconfig").exists()


def test_serve_without_the_sim_extra_says_which_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(serve_module, "SIM_PACKAGES", ("moto", "no_such_package_for_sim"))
    code = serve_module.serve("one-bad-worker", tmp_path, time_scale=1.0, port=0)
    err = capsys.readouterr().err
    assert code == 2
    assert "no_such_package_for_sim missing" in err and "pip install 'noderescue[sim]'" in err
    assert not (tmp_path / "kubeconfig").exists()
