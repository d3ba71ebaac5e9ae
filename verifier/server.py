"""The verifier process: store, trust store, Verifier and the gRPC server around them."""

from __future__ import annotations

import logging
import os
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
from lightgate.wire.v1 import admission_pb2 as admission_pb
from lightgate.wire.v1 import admission_pb2_grpc as admission_pb_grpc
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc
from lightgate.wire.v1 import results_pb2 as results_pb
from lightgate.wire.v1 import results_pb2_grpc as results_pb_grpc
from verifier.admission.ca import (
    LocalCertificateAuthority,
    LocalTokenIssuer,
)
from verifier.admission.gate import NONCE_SECRET, CredentialGate
from verifier.admission.index import TrustIndex, entries_from_rows, entry_of
from verifier.api.admin import AdminServicer, OperatorAuth
from verifier.api.admission import (
    CredentialsServicer,
    NodeTrustServicer,
    add_credential_routes,
)
from verifier.api.attestation import AttestationServicer
from verifier.api.https import (
    HttpsServer,
    ListenRefused,
    Router,
    TlsFiles,
    add_key_routes,
    is_loopback,
)
from verifier.api.kubernetes import add_kubernetes_routes
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
NODE_TRUST_SERVICE = admission_pb.DESCRIPTOR.services_by_name["NodeTrust"].full_name
CREDENTIALS_SERVICE = admission_pb.DESCRIPTOR.services_by_name["Credentials"].full_name


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
    index: TrustIndex | None = None
    gate: CredentialGate | None = None
    _admission: threading.Thread | None = None

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        self.server.stop(grace).wait()
        if self._admission is not None:
            self._admission.join(timeout=5)
        if self.gate is not None:
            self.gate.stop()
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
    index, gate, https_box = _admission(config, store, verifier)
    admission_pb_grpc.add_NodeTrustServicer_to_server(
        NodeTrustServicer(index, utc_now, max_watches=max(1, config.workers // 2)), server
    )
    admission_pb_grpc.add_CredentialsServicer_to_server(CredentialsServicer(gate), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = (ATTESTATION_SERVICE, RESULTS_SERVICE, NODE_TRUST_SERVICE, CREDENTIALS_SERVICE)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
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
        admin_server, admin_port = _admin_server(config, store, verifier, index)
        https = _https_server(config, verifier, index, gate)
        https_box.append(https)
    except (OSError, ListenRefused, ValueError):
        server.stop(0)
        store.close()
        raise
    server.start()
    if admin_server is not None:
        admin_server.start()
    if https is not None:
        https.start()
    for service in ("", *services):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    stop = threading.Event()
    purger = threading.Thread(target=_housekeeping, args=(store, verifier, stop), daemon=True)
    purger.start()
    gate.start()
    admission = threading.Thread(
        target=_keep_index, args=(store, index, config, stop), name="trust-index", daemon=True
    )
    admission.start()
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
        config,
        store,
        verifier,
        server,
        port,
        stop,
        purger,
        admin_server,
        admin_port,
        https,
        index,
        gate,
        admission,
    )


def _admission(
    config: VerifierConfig, store: Store, verifier: Verifier
) -> tuple[TrustIndex, CredentialGate, list[HttpsServer | None]]:
    """The trust index (loaded from the store, fed by this verifier's attestations)
    and the credential gate over it.  `https_box` receives the HTTPS server once it is
    built: the token issuer's URL and the CRL's are its URL."""
    admission = config.admission
    index = TrustIndex(admission.watch_queue)
    rows, mark = store.trust_changes()
    index.load(entries_from_rows(rows), mark)
    verifier.on_trust_change(lambda entry: index.update(entry, utc_now()))
    https_box: list[HttpsServer | None] = []

    def https_url() -> str | None:
        server = https_box[0] if https_box else None
        return None if server is None else server.url

    def issuer() -> str:
        return (
            admission.issuer
            or https_url()
            or f"urn:lightgate:verifier:{config.results.verifier_id}"
        )

    def crl_url() -> str | None:
        url = admission.issuer if admission.issuer is not None else https_url()
        return None if url is None else f"{url.rstrip('/')}/ca/crl"

    now = utc_now()
    ca = LocalCertificateAuthority.shared(
        lambda name, make: store.shared_secret(name, make, now), admission.ca_common_name, now
    )
    tokens = LocalTokenIssuer(issuer, lambda: verifier.references.keys.active, verifier.jwks)
    gate = CredentialGate(
        store=store,
        index=index,
        ca=ca,
        tokens=tokens,
        config=admission,
        nonce_key=store.shared_secret(NONCE_SECRET, lambda: os.urandom(32), now),
        node_of=store.get_node,
        clock=utc_now,
        crl_url=crl_url,
    )
    return index, gate, https_box


def _keep_index(
    store: Store, index: TrustIndex, config: VerifierConfig, stop: threading.Event
) -> None:
    """Tell watchers of each expiry when it happens, and read other replicas' changes
    every `sync_seconds`."""
    every = config.admission.sync_seconds
    next_sync = time.monotonic() + every
    while not stop.is_set():
        now = utc_now()
        try:
            index.expire_due(now)
            if time.monotonic() >= next_sync:
                next_sync = time.monotonic() + every
                rows, mark = store.trust_changes(index.mark)
                index.sync(rows, mark, now)
        except SQLAlchemyError:  # the database is away: try again next time
            log.warning("trust index sync failed", exc_info=True)
        except Exception:  # a bug must not stop the index for good: logged, tried again
            log.exception("trust index upkeep failed")
        wait = next_sync - time.monotonic()
        upcoming = index.next_expiry()
        if upcoming is not None:
            wait = min(wait, (upcoming - utc_now()).total_seconds())
        stop.wait(max(0.005, wait))


def _admin_server(
    config: VerifierConfig, store: Store, verifier: Verifier, index: TrustIndex
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

    def trust_changed(node_id: str) -> None:
        for row in store.trust_index(node_id=node_id):
            index.update(entry_of(row), utc_now())

    operators = Operators(store, config, verifier.references, utc_now, trust_changed)
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


def _https_server(
    config: VerifierConfig, verifier: Verifier, index: TrustIndex, gate: CredentialGate
) -> HttpsServer | None:
    listen = config.results.https_listen
    if listen is None:
        return None
    router = Router()
    add_key_routes(router, verifier.jwks)
    add_kubernetes_routes(router, index.get, utc_now, config.admission)
    add_credential_routes(router, gate)
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
