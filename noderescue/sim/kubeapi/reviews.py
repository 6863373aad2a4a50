"""TokenReview and SubjectAccessReview, as the real API server answers them for non-resource URLs.

The emulated world knows a fixed set of bearer tokens (the daemon's HTTP server asks who holds a
token, then whether that user may ``get`` ``/metrics``): ``add_token`` names the user behind a
token, ``allow`` grants a user or a group a verb on a non-resource path (``/metrics``, or a
prefix ending in ``*`` as in a ClusterRole's ``nonResourceURLs``). Everything else is denied,
the way RBAC denies what no rule allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from noderescue.sim.kubeapi.status import bad_request

TOKEN_REVIEWS_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
SUBJECT_ACCESS_REVIEWS_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
REVIEW_PATHS = frozenset({TOKEN_REVIEWS_PATH, SUBJECT_ACCESS_REVIEWS_PATH})


@dataclass(frozen=True, slots=True)
class TokenUser:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()


@dataclass
class AccessReviews:
    """Known tokens and non-resource-URL grants; counts every review (tests read them)."""

    tokens: dict[str, TokenUser] = field(default_factory=dict)
    # (subject, verb, path) where subject is "user:<name>" or "group:<name>".
    grants: set[tuple[str, str, str]] = field(default_factory=set)
    token_reviews: int = 0
    access_reviews: int = 0

    def add_token(self, token: str, username: str, *, groups: tuple[str, ...] = ()) -> None:
        self.tokens[token] = TokenUser(username, uid=f"uid-{username}", groups=groups)

    def allow(self, *, verb: str, path: str, user: str | None = None, group: str | None = None) -> None:
        if (user is None) == (group is None):
            raise ValueError("allow needs exactly one of user or group")
        subject = f"user:{user}" if user is not None else f"group:{group}"
        self.grants.add((subject, verb, path))

    def review_token(self, body: Any) -> dict[str, Any]:
        self.token_reviews += 1
        token = _spec(body).get("token")
        if not isinstance(token, str) or not token:
            raise bad_request("TokenReview: spec.token is required")
        user = self.tokens.get(token)
        status: dict[str, Any] = {"authenticated": False}
        if user is None:
            status["error"] = "[invalid bearer token, token lookup failed]"
        else:
            status = {
                "authenticated": True,
                "user": {"username": user.username, "uid": user.uid, "groups": list(user.groups)},
                "audiences": ["https://kubernetes.default.svc"],
            }
        return _answer("authentication.k8s.io/v1", "TokenReview", body, status)

    def review_access(self, body: Any) -> dict[str, Any]:
        self.access_reviews += 1
        spec = _spec(body)
        attributes = spec.get("nonResourceAttributes")
        if not isinstance(attributes, dict):
            # The daemon asks about non-resource URLs only; resource checks are not emulated.
            raise bad_request("SubjectAccessReview: only nonResourceAttributes are emulated")
        user, groups = spec.get("user"), spec.get("groups") or []
        if not isinstance(user, str) or not user:
            raise bad_request("SubjectAccessReview: at least one of user or group must be specified")
        verb, path = str(attributes.get("verb", "")), str(attributes.get("path", ""))
        subjects = {f"user:{user}"} | {f"group:{g}" for g in groups if isinstance(g, str)}
        allowed = any(
            subject in subjects and grant_verb in (verb, "*") and _path_matches(grant_path, path)
            for subject, grant_verb, grant_path in self.grants
        )
        status: dict[str, Any] = {"allowed": allowed}
        if not allowed:
            status["reason"] = ""  # RBAC says nothing when no rule matched
        return _answer("authorization.k8s.io/v1", "SubjectAccessReview", body, status)


def _path_matches(pattern: str, path: str) -> bool:
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return pattern == path


def _spec(body: Any) -> dict[str, Any]:
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise bad_request("the review needs a spec")
    return spec


def _answer(api_version: str, kind: str, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    # Reviews are not stored: the server answers with the request's spec and a status, no name.
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"creationTimestamp": None},
        "spec": body["spec"],
        "status": status,
    }
