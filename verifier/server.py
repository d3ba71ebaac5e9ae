"""The verifier process: store, trust store, Verifier and the gRPC server around them."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import SQLAlchemyError

from lightgate.config import VerifierConfig
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc
from verifier.api.attestation import AttestationServicer
from verifier.enrollment import TrustStore
from verifier.service import Verifier, utc_now
from verifier.store import Store

log = logging.getLogger("lightgate.verifier")

NONCE_PURGE_INTERVAL_SECONDS = 60.0
ATTESTATION_SERVICE = pb.DESCRIPTOR.services_by_name["Attestation"].full_name


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

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        self.server.stop(grace).wait()
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
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (ATTESTATION_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
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
    server.start()
    for service in ("", ATTESTATION_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    stop = threading.Event()
    purger = threading.Thread(target=_purge_nonces, args=(store, stop), daemon=True)
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
            }
        },
    )
    return RunningVerifier(config, store, verifier, server, port, stop, purger)


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _purge_nonces(store: Store, stop: threading.Event) -> None:
    """Expired nonces can never verify; drop them (a day late, for forensics)."""
    while not stop.wait(NONCE_PURGE_INTERVAL_SECONDS):
        try:
            store.purge_nonces(utc_now() - timedelta(days=1))
        except SQLAlchemyError:  # the database is away: try again next interval
            log.warning("nonce purge failed", exc_info=True)
