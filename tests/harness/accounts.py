"""ServiceAccount credentials, for tests that prove RBAC against a real authorizer.

A kubeconfig carrying a token the TokenRequest API issued, and a wait until the authorizer
grants what a binding just gave: bindings reach the RBAC authorizer through an informer, a
moment after ``kubectl apply`` returns. Only a real kube-apiserver enforces RBAC.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import yaml
from kubernetes import client

from tests.harness.waiting import wait_for

# Tokens outlive any test; the apiserver's minimum is 10 minutes.
TOKEN_SECONDS = 3600


class Grant(Protocol):
    """A permission as the agent and the aggregator declare theirs."""

    group: str
    resource: str
    verb: str


def user(namespace: str, account: str) -> str:
    """Return the user name RBAC sees for a ServiceAccount."""
    return f"system:serviceaccount:{namespace}:{account}"


def token_kubeconfig(
    api: client.ApiClient, kubeconfig: Path, namespace: str, account: str, path: Path
) -> Path:
    """Write ``kubeconfig`` again at ``path``, as ServiceAccount ``namespace/account``."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
    )
    issued: Any = client.CoreV1Api(api).create_namespaced_service_account_token(
        account, namespace, request
    )
    config = yaml.safe_load(kubeconfig.read_text())
    for entry in config["users"]:
        entry["user"] = {"token": issued.status.token}
    path.write_text(yaml.safe_dump(config))
    return path


def allowed(api: client.ApiClient, who: str, grant: Grant, namespace: str | None) -> bool:
    """Ask the authorizer whether ``who`` may use ``grant`` in ``namespace`` (None: cluster)."""
    resource, _, subresource = grant.resource.partition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=who,
            resource_attributes=client.V1ResourceAttributes(
                group=grant.group,
                resource=resource,
                subresource=subresource or None,
                verb=grant.verb,
                namespace=namespace,
            ),
        )
    )
    answer: Any = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(answer.status.allowed)


def wait_granted(
    api: client.ApiClient, who: str, grants: Iterable[tuple[Grant, str | None]]
) -> None:
    """Wait until the authorizer allows each ``(grant, namespace)`` to ``who``."""
    for grant, namespace in grants:
        wait_for(
            lambda: allowed(api, who, grant, namespace),  # noqa: B023 (called at once)
            timeout=10,
            what=f"{who} to be allowed {grant.verb} {grant.resource} in {namespace}",
        )
