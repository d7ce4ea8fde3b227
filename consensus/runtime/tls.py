"""TLS for real clusters: the contexts ``[tls]`` in a cluster file asks for.

Every connection (peer or client) is wrapped in ``trio.SSLStream`` when the
cluster file has a ``[tls]`` table.  Both ends present a certificate signed
by the cluster's CA and verify the other's (mutual TLS); the HMAC handshake
of ``consensus.runtime.wire`` still runs inside, so the cluster secret is
checked too.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from consensus.runtime.clusterfile import ClusterFile, TlsConfig
from consensus.schema import ConfigError

__all__ = ["tls_contexts"]


def tls_contexts(
    tls: TlsConfig | None, cluster: ClusterFile
) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) TLS contexts for ``[tls]``, or (None, None) without it."""
    if tls is None:
        return None, None
    cert, key, ca = (str(cluster.path(p)) for p in (tls.cert, tls.key, tls.ca))
    for name, path in (("cert", cert), ("key", key), ("ca", ca)):
        if not Path(path).is_file():
            raise ConfigError(f"tls.{name}: no such file {path}")
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
        server.load_cert_chain(cert, key)
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        client.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls: cannot load certificates: {exc}") from None
    return server, client
