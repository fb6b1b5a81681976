"""A loopback HTTPS stand-in for the two Azure Resource Manager calls the `aks` inventory
source makes, with a test CA (`arm.ca_file`, for `REGWARDEN_AZURE_CA_BUNDLE`):

- `GET /subscriptions/{sub}/providers/Microsoft.ContainerService/managedClusters
  ?api-version=2024-09-01` → `{"value": [ManagedCluster], "nextLink"}` (`page` clusters a
  page; `nextLink` an absolute URL on the same host, as ARM gives it);
- `POST /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/
  managedClusters/{name}/listClusterUserCredential?api-version=2024-09-01[&format=exec]` →
  `{"kubeconfigs": [{"name": "clusterUser", "value": base64(kubeconfig)}]}`.

Shapes: azure-rest-api-specs `specification/containerservice/resource-manager/
Microsoft.ContainerService/aks/stable/2024-09-01/examples/ManagedClustersList.json` (`id`,
`location`, `name`, `type`, `properties.{provisioningState, powerState.code,
kubernetesVersion, dnsPrefix, fqdn, agentPoolProfiles, aadProfile, …}`) and
`ManagedClustersListClusterCredentialResult.json` (`kubeconfigs: [{name, value}]`); the
kubeconfig is what AKS hands an Entra-integrated cluster's user (`format=exec`: a kubelogin
`exec` user entry, `--server-id 6dae42f8-…`), or, for a cluster made with `local_token`,
a local account's token user. The cluster's `server` is the `FakeKube` it fronts.
Errors: ARM's envelope `{"error": {"code", "message"}}`. Every request must carry
`Authorization: Bearer <arm_token>` (401 `InvalidAuthenticationToken` otherwise).

    with FakeKube(token=...) as kube, FakeArm() as arm:
        arm.add_cluster("prod", kube)
        env = {"REGWARDEN_AZURE_ENDPOINT_ARM": arm.url, "REGWARDEN_AZURE_CA_BUNDLE": arm.ca_file}
"""

from __future__ import annotations

import base64
import secrets
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from support.fake_acr import _make_tls
from support.fake_kube import FakeKube
from support.google_fake import GoogleFake, Reply, Request

__all__ = [
    "AKS_SERVER_APP",
    "API_VERSION",
    "SUBSCRIPTION",
    "FakeArm",
    "ScopedCredential",
]

API_VERSION = "2024-09-01"
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
TENANT = "11111111-1111-1111-1111-111111111111"
AKS_SERVER_APP = "6dae42f8-4368-4678-94ff-3960e28e3630"
ARM_SCOPE = "https://management.azure.com/.default"
_PROVIDER = "providers/Microsoft.ContainerService/managedClusters"
_LIST = rf"/subscriptions/(?P<sub>[^/]+)/{_PROVIDER}"
_CREDENTIAL = (
    rf"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/{_PROVIDER}/"
    r"(?P<name>[^/]+)/listClusterUserCredential"
)


class _Token(NamedTuple):
    token: str
    expires_on: int


class ScopedCredential:
    """An azure-core `TokenCredential` with one token per scope (`tokens`), recording each
    scope it was asked for in `scopes`; an unknown scope gets a token nobody accepts."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = dict(tokens)
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **_kwargs: Any) -> _Token:
        self.scopes.extend(scopes)
        return _Token(self.tokens.get(scopes[0], "unknown-scope"), 2**31)


def _arm_error(status: int, code: str, message: str) -> Reply:
    return status, {"error": {"code": code, "message": message}}


class FakeArm(GoogleFake):
    def __init__(self, *, page: int = 2) -> None:
        super().__init__()
        self.page = page
        self.arm_token = "arm-" + secrets.token_urlsafe(12)
        self.aks_token = "aks-" + secrets.token_urlsafe(12)
        self.clusters: list[dict[str, Any]] = []
        self._kubeconfigs: dict[str, bytes] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="fake-arm-")
        self.ca_file, context = _make_tls(Path(self._dir.name))
        self._server.server.socket = context.wrap_socket(
            self._server.server.socket, server_side=True
        )
        self.route("GET", _LIST, self._list)
        self.route("POST", _CREDENTIAL, self._credential)

    @property
    def url(self) -> str:
        """`https://127.0.0.1:PORT`: the value for `REGWARDEN_AZURE_ENDPOINT_ARM`."""
        return f"https://{self.host}"

    def env(self) -> dict[str, str]:
        return {"REGWARDEN_AZURE_ENDPOINT_ARM": self.url, "REGWARDEN_AZURE_CA_BUNDLE": self.ca_file}

    def credential(self) -> ScopedCredential:
        """Hands out the ARM token for ARM's scope and the AKS token for the AKS server
        application's (`<app id>/.default`)."""
        return ScopedCredential(
            {ARM_SCOPE: self.arm_token, f"{AKS_SERVER_APP}/.default": self.aks_token}
        )

    def stop(self) -> None:
        super().stop()
        self._dir.cleanup()

    # -- state ----------------------------------------------------------------------------

    def add_cluster(
        self,
        name: str,
        kube: FakeKube,
        *,
        subscription: str = SUBSCRIPTION,
        resource_group: str = "rg1",
        power: str = "Running",
        local_token: str | None = None,
    ) -> str:
        """A managed cluster whose API server is `kube`; returns its resource id."""
        resource_id = (
            f"/subscriptions/{subscription}/resourceGroups/{resource_group}/{_PROVIDER}/{name}"
        )
        fqdn = f"{name}-dns-4f2c1a9b.hcp.eastus.azmk8s.io"
        cluster = {
            "id": resource_id,
            "location": "eastus",
            "name": name,
            "tags": {},
            "type": "Microsoft.ContainerService/ManagedClusters",
            "sku": {"name": "Base", "tier": "Free"},
            "properties": {
                "provisioningState": "Succeeded",
                "powerState": {"code": power},
                "kubernetesVersion": "1.30.5",
                "currentKubernetesVersion": "1.30.5",
                "dnsPrefix": f"{name}-dns",
                "fqdn": fqdn,
                "azurePortalFQDN": f"{name}-dns-4f2c1a9b.portal.hcp.eastus.azmk8s.io",
                "agentPoolProfiles": [
                    {
                        "name": "nodepool1",
                        "count": 3,
                        "vmSize": "Standard_DS2_v2",
                        "maxPods": 110,
                        "osType": "Linux",
                        "provisioningState": "Succeeded",
                        "orchestratorVersion": "1.30.5",
                        "powerState": {"code": power},
                    }
                ],
                "servicePrincipalProfile": {"clientId": "msi"},
                "nodeResourceGroup": f"MC_{resource_group}_{name}_eastus",
                "enableRBAC": True,
                "aadProfile": None
                if local_token
                else {"managed": True, "enableAzureRBAC": True, "tenantID": TENANT},
                "disableLocalAccounts": local_token is None,
                "networkProfile": {
                    "networkPlugin": "azure",
                    "serviceCidr": "10.0.0.0/16",
                    "dnsServiceIP": "10.0.0.10",
                    "loadBalancerSku": "standard",
                },
            },
        }
        user_name = f"clusterUser_{resource_group}_{name}"
        user: dict[str, Any]
        if local_token is not None:
            user = {"token": local_token}
        else:
            user = {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": "kubelogin",
                    "args": [
                        "get-token",
                        "--environment",
                        "AzurePublicCloud",
                        "--server-id",
                        AKS_SERVER_APP,
                        "--client-id",
                        "80faf920-1908-4b52-b5ef-a8e7bedfc67a",
                        "--tenant-id",
                        TENANT,
                        "--login",
                        "devicecode",
                    ],
                    "env": None,
                    "installHint": "kubelogin is not installed which is required to connect "
                    "to AAD enabled cluster.",
                    "provideClusterInfo": False,
                }
            }
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "current-context": name,
            "clusters": [
                {
                    "name": name,
                    "cluster": {
                        "certificate-authority-data": base64.b64encode(
                            Path(self.ca_file).read_bytes()
                        ).decode(),
                        "server": kube.url,  # in Azure: https://<fqdn>:443
                    },
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": name, "user": user_name}}],
            "users": [{"name": user_name, "user": user}],
        }
        with self.lock:
            self.clusters.append(cluster)
            self._kubeconfigs[resource_id.lower()] = yaml.safe_dump(kubeconfig).encode()
        return resource_id

    # -- routes ---------------------------------------------------------------------------

    def dispatch(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        if request.headers.get("authorization") != f"Bearer {self.arm_token}":
            status, body = _arm_error(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )
            with self.lock:
                self.requests.append(request)
            return status, body, {}
        if request.arg("api-version") != API_VERSION:
            status, body = _arm_error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{request.arg('api-version')}' is invalid.",
            )
            return status, body, {}
        status, body, headers = super().dispatch(request)
        if status >= 400 and isinstance(body, dict) and "status" in body.get("error", {}):
            status, body = _arm_error(status, "InjectedFault", body["error"]["message"])
        return status, body, headers

    def _list(self, request: Request) -> Reply:
        sub = request.params["sub"].lower()
        mine = [c for c in self.clusters if c["id"].lower().startswith(f"/subscriptions/{sub}/")]
        start = int(request.arg("$skipToken") or 0)
        answer: dict[str, Any] = {"value": mine[start : start + self.page]}
        if start + self.page < len(mine):
            answer["nextLink"] = (
                f"{self.url}{request.raw_path}?api-version={API_VERSION}"
                f"&$skipToken={start + self.page}"
            )
        return 200, answer

    def _credential(self, request: Request) -> Reply:
        resource_id = request.path.rsplit("/", 1)[0].lower()
        config = self._kubeconfigs.get(resource_id)
        if config is None:
            return _arm_error(
                404,
                "ResourceNotFound",
                f"The Resource '{_PROVIDER.split('/', 1)[1]}/{request.params['name']}' under "
                f"resource group '{request.params['rg']}' was not found.",
            )
        return 200, {
            "kubeconfigs": [{"name": "clusterUser", "value": base64.b64encode(config).decode()}]
        }
