"""``kubeprober cluster add NAME --kubeconfig``: a Cluster and its token Secret, through the API.

Exists so defining a cluster in Kubernetes mode is one command, as in file mode. The
Secret is owned by the Cluster (ownerReference), so deleting the Cluster revokes its token
with it. It runs with the operator's credentials, not the aggregator's: the aggregator's
service account may only read. It must not overwrite anything: a taken name is an error.
"""

from __future__ import annotations

from kubeprober.aggregator.kube.source import TOKEN_LABEL
from kubeprober.aggregator.tokens import hashed_token, new_token
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import AlreadyExists, KubeError, NotFound
from kubeprober.kube.resources import CLUSTERS, SECRETS, Permission

PERMISSIONS: tuple[Permission, ...] = (
    SECRETS.permission("get"),
    CLUSTERS.permission("create"),
    SECRETS.permission("create"),
)
"""What ``cluster add --kubeconfig`` needs (Role ``kubeprober-cluster-registrar``)."""


def secret_name(cluster: str) -> str:
    """Return the name of ``cluster``'s token Secret (the same as file mode's)."""
    return f"kubeprober-token-{cluster}"


async def add_cluster(api: KubeApi, name: str, *, display_name: str = "") -> str:
    """Create the Cluster ``name`` and its token Secret; return the new token.

    Raises :class:`AlreadyExists` (with a plain message) when either name is taken.
    """
    token = str(new_token(name))  # validates the name as a DNS label first
    secret = secret_name(name)
    try:
        await api.get(SECRETS, secret, namespace=api.namespace)
    except NotFound:
        pass
    else:
        raise AlreadyExists(f"Secret {api.namespace}/{secret} already exists; not replacing it")
    try:
        created = await api.create(
            CLUSTERS,
            namespace=api.namespace,
            body={
                "apiVersion": CLUSTERS.api_version,
                "kind": CLUSTERS.kind,
                "metadata": {"name": name},
                "spec": {"displayName": display_name or name, "tokenSecretRef": {"name": secret}},
            },
        )
    except AlreadyExists:
        raise AlreadyExists(f"cluster {name} already exists in namespace {api.namespace}") from None
    meta = created.get("metadata") or {}
    owner = {
        "apiVersion": CLUSTERS.api_version,
        "kind": CLUSTERS.kind,
        "name": name,
        "uid": meta.get("uid", ""),
    }
    try:
        await api.create(
            SECRETS,
            namespace=api.namespace,
            body={
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": secret,
                    "labels": {TOKEN_LABEL: name},
                    "ownerReferences": [owner],
                },
                "type": "Opaque",
                "stringData": {"tokenHash": hashed_token(token)},
            },
        )
    except AlreadyExists:
        raise AlreadyExists(
            f"Secret {api.namespace}/{secret} appeared meanwhile; cluster {name} was created "
            "without a token of ours: delete both and run again"
        ) from None
    except KubeError as exc:
        raise KubeError(f"cluster {name} was created but its token Secret was not: {exc}") from exc
    return token
