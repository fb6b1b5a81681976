"""Types shared by the registry fixtures in `tests/conftest.py` and the tests using them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from regwarden.devtools import Content, LocalRegistry
from regwarden.oci import Credentials

AUTH_USER = "alice"
AUTH_PASSWORD = "wonderland-7"  # a throwaway password for the throwaway htpasswd registry

#: `push(repo, tag="latest", **make_image_kwargs) -> Content`
PushImage = Callable[..., Content]


@dataclass(frozen=True)
class AuthRegistry:
    """A LocalRegistry behind htpasswd Basic auth, with the one user it knows."""

    registry: LocalRegistry
    username: str
    password: str

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def credentials(self) -> Credentials:
        return Credentials(username=self.username, password=self.password)
