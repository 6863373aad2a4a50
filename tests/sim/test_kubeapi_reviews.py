"""TokenReview and SubjectAccessReview on the emulated API server, through kubernetes-asyncio."""

from __future__ import annotations

import aiohttp
from kubernetes_asyncio import client

from noderescue.sim.cluster import SimCluster


async def test_token_review_knows_only_the_tokens_of_the_world(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    cluster.server.reviews.add_token(
        "prom-token", "system:serviceaccount:monitoring:prometheus", groups=("system:serviceaccounts",)
    )
    authn = client.AuthenticationV1Api(api)
    known = await authn.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token="prom-token"))
    )
    assert known.status.authenticated is True
    assert known.status.user.username == "system:serviceaccount:monitoring:prometheus"
    assert known.status.user.groups == ["system:serviceaccounts"]
    unknown = await authn.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token="guess"))
    )
    assert unknown.status.authenticated is False
    assert cluster.server.reviews.token_reviews == 2


def _sar(
    user: str, path: str, *, groups: list[str] | None = None, verb: str = "get"
) -> client.V1SubjectAccessReview:
    return client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=groups,
            non_resource_attributes=client.V1NonResourceAttributes(path=path, verb=verb),
        )
    )


async def test_subject_access_review_allows_only_what_was_granted(
    cluster: SimCluster, api: client.ApiClient
) -> None:
    reviews = cluster.server.reviews
    reviews.allow(verb="get", path="/metrics", user="prometheus")
    reviews.allow(verb="get", path="/debug/*", group="admins")
    authz = client.AuthorizationV1Api(api)

    async def allowed(review: client.V1SubjectAccessReview) -> bool:
        return bool((await authz.create_subject_access_review(review)).status.allowed)

    assert await allowed(_sar("prometheus", "/metrics"))
    assert not await allowed(_sar("prometheus", "/status"))
    assert not await allowed(_sar("prometheus", "/metrics", verb="post"))
    assert not await allowed(_sar("someone", "/metrics"))
    assert await allowed(_sar("someone", "/debug/pprof", groups=["admins"]))


async def test_reviews_are_create_only(cluster: SimCluster) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{cluster.url}/apis/authentication.k8s.io/v1/tokenreviews") as resp,
    ):
        assert resp.status == 405
