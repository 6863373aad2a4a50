"""The Dockerfile's shape (hadolint runs in .ci/deploy-checks): multi-stage, pinned slim base,
numeric non-root user matching the Deployment, no build tools or pip in the final stage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from tests.deploy.manifests import DEPLOY, IN_CLUSTER, only, render

DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str


def _instructions() -> list[Instruction]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continuation lines
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def _stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in _instructions():
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_both_stages_use_the_same_pinned_slim_python() -> None:
    builder, final = _stages()
    image, _, alias = builder[0].arguments.partition(" AS ")
    assert alias == "builder"
    assert re.fullmatch(r"python:3\.1[12]\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image
    # The venv's python is a symlink to the base image's interpreter: it must be the same one.
    assert final[0].arguments == image


def test_multi_stage_build_copies_only_the_venv_into_the_final_stage() -> None:
    _, final = _stages()
    copies = [i.arguments for i in final if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/noderescue/venv /opt/noderescue/venv"]


@pytest.mark.parametrize(
    "tool",
    [
        pytest.param("apt-get", id="no-apt"),
        pytest.param("gcc", id="no-compiler"),
        pytest.param("pip install", id="no-pip-install"),
        pytest.param("build-essential", id="no-build-essential"),
    ],
)
def test_final_stage_installs_no_build_tools(tool: str) -> None:
    final = _stages()[-1]
    assert not [i for i in final if i.keyword == "RUN" and tool in i.arguments]


def test_final_stage_removes_the_base_images_pip() -> None:
    final = _stages()[-1]
    removal = " ".join(i.arguments for i in final if i.keyword == "RUN" and "rm -rf" in i.arguments)
    for path in ("site-packages/pip ", "site-packages/pip-*.dist-info", "/usr/local/bin/pip "):
        assert path in removal + " ", path


def test_final_stage_runs_as_the_numeric_user_the_deployment_expects() -> None:
    final = _stages()[-1]
    [user] = [i.arguments for i in final if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) >= 10000
    pod = only(render(IN_CLUSTER), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])


def test_entrypoint_is_noderescue_run() -> None:
    final = _stages()[-1]
    [entrypoint] = [json.loads(i.arguments) for i in final if i.keyword == "ENTRYPOINT"]
    [cmd] = [json.loads(i.arguments) for i in final if i.keyword == "CMD"]
    assert entrypoint == ["noderescue"]
    assert cmd == ["run", "--config", "/etc/noderescue/config.yaml"]
    assert [i for i in final if i.keyword == "HEALTHCHECK"]
