"""One kubernetes-asyncio client per cluster: kubeconfig or in-cluster, our User-Agent, timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import kube_config
from kubernetes_asyncio.config.incluster_config import load_incluster_config

from noderescue import USER_AGENT

DEFAULT_TIMEOUT_S = 10.0


class KubeClient(ApiClient):
    """An ``ApiClient`` that also knows the per-request timeout the transport applies."""

    def __init__(self, configuration: Configuration, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(configuration=configuration)
        self.timeout_s = timeout_s
        self.user_agent = USER_AGENT


def request_timeout_of(api: ApiClient) -> float:
    """The client's per-request timeout (a plain ApiClient gets the default)."""
    return float(getattr(api, "timeout_s", DEFAULT_TIMEOUT_S))


async def make_api_client(
    kubeconfig: Path | None, context: str | None, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> KubeClient:
    """A client for one cluster. Must be called inside a running event loop.

    ``kubeconfig`` None means in-cluster (service account token, refreshed from its file).
    Exec credential plugins are re-run when their token expires: the loader is wired into the
    configuration's refresh hook, which kubernetes-asyncio awaits before every request.
    """
    configuration = Configuration()
    if kubeconfig is None:
        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        loader = await kube_config.load_kube_config(
            config_file=str(kubeconfig),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        if loader._user is not None and "exec" in loader._user:
            configuration.refresh_api_key_hook = _exec_token_refresher(loader)
    return KubeClient(configuration, timeout_s=timeout_s)


def _exec_token_refresher(loader: Any) -> Any:
    async def refresh(configuration: Configuration) -> None:
        # load_from_exec_plugin returns at once while the cached credential has not expired.
        if await loader.load_from_exec_plugin() and getattr(loader, "token", None):
            configuration.api_key["BearerToken"] = loader.token

    return refresh
