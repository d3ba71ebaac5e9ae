"""The verifier process: store, trust store, Verifier and the gRPC server around them."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import SQLAlchemyError

from lightgate.config import VerifierConfig
from lightgate.wire.v1 import admin_pb2 as admin_pb
from lightgate.wire.v1 import admin_pb2_grpc as admin_pb_grpc
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc
from lightgate.wire.v1 import results_pb2 as results_pb
from lightgate.wire.v1 import results_pb2_grpc as results_pb_grpc
from verifier.api.admin import AdminServicer, OperatorAuth
from verifier.api.attestation import AttestationServicer
from verifier.api.https import (
    HttpsServer,
    ListenRefused,
    Router,
    TlsFiles,
    add_key_routes,
    is_loopback,
)
from verifier.api.results import ResultsServicer
from verifier.enrollment import TrustStore
from verifier.operators import Operators
from verifier.service import Verifier, utc_now
from verifier.store import Store

log = logging.getLogger("lightgate.verifier")

NONCE_PURGE_INTERVAL_SECONDS = 60.0
#: How often expired trust is recorded (a node's trust reads as expired at once anyway).
EXPIRY_SWEEP_SECONDS = 1.0
ATTESTATION_SERVICE = pb.DESCRIPTOR.services_by_name["Attestation"].full_name
RESULTS_SERVICE = results_pb.DESCRIPTOR.services_by_name["Results"].full_name
ADMIN_SERVICE = admin_pb.DESCRIPTOR.services_by_name["Admin"].full_name


def load_trust_store(config: VerifierConfig) -> TrustStore:
    directory = config.enrollment.trust_store
    if directory is None:
        return TrustStore(())
    return TrustStore.from_dir(directory)


@dataclass
class RunningVerifier:
    """A started verifier; `port` is the bound port (useful with `listen: host:0`)."""

    config: VerifierConfig
    store: Store
    verifier: Verifier
    server: grpc.Server
    port: int
    _stop: threading.Event
    _purger: threading.Thread
    admin_server: grpc.Server | None = None
    admin_port: int = 0
    https: HttpsServer | None = None

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        self.server.stop(grace).wait()
        if self.admin_server is not None:
            self.admin_server.stop(grace).wait()
        if self.https is not None:
            self.https.stop()
        self._purger.join(timeout=5)
        self.store.close()

    def wait(self) -> None:
        self.server.wait_for_termination()

    def __enter__(self) -> RunningVerifier:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_verifier(config: VerifierConfig) -> RunningVerifier:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    # One connection per gRPC worker, and one for the nonce purger.
    store = Store.open(config.database(), pool_size=config.workers + 1)
    verifier = Verifier(store, config, load_trust_store(config))
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_AttestationServicer_to_server(AttestationServicer(verifier), server)
    results = ResultsServicer(verifier.jwks, verifier.latest_result)
    results_pb_grpc.add_ResultsServicer_to_server(results, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (ATTESTATION_SERVICE, RESULTS_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME),
        server,
    )
    if config.tls_cert and config.tls_key:
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
        )
        port = server.add_secure_port(config.listen, credentials)
    else:
        port = server.add_insecure_port(config.listen)
    if port == 0:
        store.close()
        raise OSError(f"cannot listen on {config.listen}")
    try:
        admin_server, admin_port = _admin_server(config, store, verifier)
        https = _https_server(config, verifier)
    except (OSError, ListenRefused, ValueError):
        server.stop(0)
        store.close()
        raise
    server.start()
    if admin_server is not None:
        admin_server.start()
    if https is not None:
        https.start()
    for service in ("", ATTESTATION_SERVICE, RESULTS_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    stop = threading.Event()
    purger = threading.Thread(target=_housekeeping, args=(store, verifier, stop), daemon=True)
    purger.start()
    log.info(
        "verifier listening",
        extra={
            "fields": {
                "listen": config.listen,
                "port": port,
                "tls": bool(config.tls_cert),
                "database": _masked(config.database()),
                "enrollment": config.enrollment.mode,
                "admin": config.admin.listen and f"{config.admin.listen} ({config.admin.auth})",
                "https": https.url if https is not None else None,
                "policy": verifier.references.policy.policy_id,
            }
        },
    )
    return RunningVerifier(
        config, store, verifier, server, port, stop, purger, admin_server, admin_port, https
    )


def _admin_server(
    config: VerifierConfig, store: Store, verifier: Verifier
) -> tuple[grpc.Server | None, int]:
    """The operator API on its own listener, so that the agents' port never serves it."""
    admin = config.admin
    if admin.listen is None:
        return None, 0
    server = grpc.server(
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="admin"),
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second verifier must not share this port
        ],
    )
    operators = Operators(store, config, verifier.references, utc_now)
    admin_pb_grpc.add_AdminServicer_to_server(
        AdminServicer(operators, OperatorAuth(admin), utc_now), server
    )
    host = admin.listen.rsplit(":", 1)[0].strip("[]")
    if admin.auth == "mtls":
        if not (config.tls_cert and config.tls_key and admin.client_ca):
            raise ValueError("admin.auth mtls needs tls_cert, tls_key and admin.client_ca")
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
            root_certificates=admin.client_ca.read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port(admin.listen, credentials)
    elif config.tls_cert and config.tls_key:
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
        )
        port = server.add_secure_port(admin.listen, credentials)
    elif is_loopback(host):
        # Bearer tokens in clear text only where no one else can listen.
        port = server.add_insecure_port(admin.listen)
    else:
        raise ValueError(f"admin.listen {admin.listen}: bearer tokens need TLS off loopback")
    if port == 0:
        raise OSError(f"cannot listen on {admin.listen}")
    if admin.auth == "token" and not admin.tokens:
        log.warning("no operator tokens configured: every admin call is refused")
    return server, port


def _https_server(config: VerifierConfig, verifier: Verifier) -> HttpsServer | None:
    listen = config.results.https_listen
    if listen is None:
        return None
    router = Router()
    add_key_routes(router, verifier.jwks)
    tls = None
    if config.tls_cert and config.tls_key:
        tls = TlsFiles(config.tls_cert, config.tls_key)
    return HttpsServer(listen, router, tls)


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _housekeeping(store: Store, verifier: Verifier, stop: threading.Event) -> None:
    """Record trust that lasted out (every second), and drop nonces that can never
    verify again (every minute, a day late, for forensics)."""
    purged_at = time.monotonic()
    while not stop.wait(EXPIRY_SWEEP_SECONDS):
        try:
            verifier.expire()
            if time.monotonic() - purged_at >= NONCE_PURGE_INTERVAL_SECONDS:
                store.purge_nonces(utc_now() - timedelta(days=1))
                purged_at = time.monotonic()
        except SQLAlchemyError:  # the database is away: try again next interval
            log.warning("housekeeping failed", exc_info=True)
