"""The ECR provider as the AWS functions use it: a `move` quarantine creates its
destination repository on first use (ECR's put_image never creates one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from regwarden import USER_AGENT
from regwarden.errors import NotFound
from regwarden.providers.ecr import EcrRegistry

if TYPE_CHECKING:
    from regwarden.oci import Manifest

__all__ = ["QuarantineEcr"]

_EXISTS = frozenset({"RepositoryAlreadyExistsException"})


class QuarantineEcr(EcrRegistry):
    """`EcrRegistry` whose `copy` creates a missing destination repository (MUTABLE, so
    release can re-tag; encrypted; tagged as regwarden's), then copies."""

    def copy(
        self,
        src_repository: str,
        reference: str,
        dst_repository: str,
        tag: str | None = None,
        *,
        manifest: Manifest | None = None,
    ) -> str:
        try:
            return super().copy(src_repository, reference, dst_repository, tag, manifest=manifest)
        except NotFound:
            try:
                self._repository(dst_repository)
            except NotFound:
                pass  # the destination is what is missing: create it below
            else:
                raise  # the source is missing: nothing to copy
        self._call_or_code(
            "create_repository",
            f"create repository {dst_repository!r}",
            _EXISTS,  # a concurrent copy created it first: fine
            registryId=self.registry_id,
            repositoryName=dst_repository,
            imageTagMutability="MUTABLE",
            encryptionConfiguration={"encryptionType": "AES256"},
            tags=[{"Key": "managed-by", "Value": USER_AGENT.split("/")[0]}],
        )
        return super().copy(src_repository, reference, dst_repository, tag, manifest=manifest)
