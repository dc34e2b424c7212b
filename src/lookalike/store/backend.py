"""Where a collection lives: a folder (the embedded default) or a store URI.

`milvus://host:19530/name` names the collection `name` on a Milvus server. A `pathlib.Path`
made from such a URI has lost one slash of the scheme (`milvus:/host:19530/name`), and the CLI
hands collections around as paths, so that form is accepted too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from lookalike.errors import CollectionError

MILVUS_SCHEME = "milvus"
DEFAULT_PORT = 19530
_URI = re.compile(r"milvus:/{1,2}(?P<host>[^/:?#]*)(?::(?P<port>[^/?#]*))?(?P<rest>.*)", re.I)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class StoreAddress:
    """A collection on a server: which server, which collection."""

    scheme: str
    host: str
    port: int
    name: str

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{self.name}"


def is_store_uri(location: str | os.PathLike[str]) -> bool:
    return bool(re.match(r"milvus:/", os.fspath(location), re.I))


def parse_store_uri(location: str | os.PathLike[str]) -> StoreAddress:
    """`milvus://host[:port]/name` -> StoreAddress; CollectionError saying what is wrong."""
    text = os.fspath(location)
    match = _URI.fullmatch(text)
    if match is None:
        raise CollectionError(f"{text!r} is not a store URI (milvus://host:19530/name)")
    host, port_text, rest = match["host"], match["port"], match["rest"]
    if not host:
        raise CollectionError(
            f"{text!r}: name the Milvus server, e.g. milvus://localhost:19530/photos"
        )
    port = DEFAULT_PORT
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise CollectionError(f"{text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    name = rest[1:] if rest.startswith("/") else ""
    if not _NAME.fullmatch(name):
        raise CollectionError(
            f"{text!r}: the collection name must be 1-64 letters, digits or underscores, not "
            "starting with a digit (e.g. milvus://localhost:19530/photos)"
        )
    return StoreAddress(MILVUS_SCHEME, host, port, name)
