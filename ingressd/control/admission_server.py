"""``serve --admission-port``: the validating admission webhook's own TLS listener.

It runs in the process that watches the cluster (``control/cluster.py``), next
to the store it reviews against, never in a proxy worker. A review is built in
a thread of its own (a bounded pool), so the event loop only parses the request
and answers, and a slow review cannot hold up the watch, nor, with
``--workers 1``, the traffic this process proxies.

Everything a caller controls is bounded: the body (``max_body``, 413), its JSON
depth and size (``kube/yamlsafe.check_json``, 400), the reviews at work at once
(``concurrency``) and the time one may take (``budget``). A review that is not
done within its budget is answered "allowed" with a warning: the webhook is
installed with ``failurePolicy: Ignore`` (deploy/admission.yaml), so the API
server would allow the Ingress anyway once its ``timeoutSeconds`` passed; this
answers the same sooner, and says that it was not checked. An Ingress that
ingressd would refuse is still reported by the controller once stored (Events,
``/problems``, ``ingressd check``).

The serving certificate comes from the Secret that ``kube/webhook_certs.py``
keeps; the listener starts with the first one read and takes each new one for
new connections, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from ..kube.config import AdmissionConfig
from ..kube.kubeclient import brief
from ..kube.yamlsafe import LimitError, check_json
from ..model.objects import Snapshot
from ..policy.tls import load_key_pair, server_context
from ..routing.build import BuildOptions
from . import admission
from .admission import ReviewError, Verdict

if TYPE_CHECKING:  # the Kubernetes client is imported only when the webhook is on
    from ..kube.webhook_certs import WebhookCertificates

log = logging.getLogger("ingressd.admission")

RESULTS = ("allowed", "warned", "denied", "unchecked", "rejected")
# The path of the webhook's clientConfig.service (ingress-nginx serves the same one).
PATH = "/networking/v1/ingresses"
JSON = "application/json"


def bind(config: AdmissionConfig) -> socket.socket:
    """The socket, bound before anything starts (a port in use ends the start). It listens
    once there is a certificate to serve with (``AdmissionServer.load``): until then a
    connection is refused at once, rather than left waiting out the API server's
    timeout."""
    try:
        infos = socket.getaddrinfo(
            config.address or None, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(
            exc.errno, f"--admission-port {config.address}:{config.port}: {exc.strerror or exc}"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"cannot listen on --admission-port {config.address}:{config.port}: "
            f"{exc.strerror or exc}",
        ) from None
    return sock


class AdmissionServer:
    """Answers AdmissionReviews against ``snapshot()`` (None: the store is not listed yet)."""

    def __init__(
        self,
        config: AdmissionConfig,
        snapshot: Callable[[], Snapshot | None],
        options: Callable[[], BuildOptions],
        watch_namespace: str | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.options = options
        self.watch_namespace = watch_namespace
        self.sock = sock if sock is not None else bind(config)
        self.executor = ThreadPoolExecutor(config.concurrency, thread_name_prefix="admission")
        self.ctx: ssl.SSLContext | None = None
        self.serving_cert = b""
        self._slots: asyncio.Semaphore | None = None
        self._runner: web.AppRunner | None = None
        # Answers by result, for /metrics (ingressd_admission_reviews_total).
        self.results: dict[str, int] = dict.fromkeys(RESULTS, 0)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def load(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Serve with this certificate from the next connection on; start listening on the
        first one."""
        if cert_pem == self.serving_cert:
            return
        if self.ctx is None:
            self.ctx = server_context(cert_pem, key_pem)
        else:
            # The context of the listener: OpenSSL copies its certificate into each new
            # connection, so those open keep theirs and new ones get this one.
            load_key_pair(self.ctx, cert_pem, key_pem)
        self.serving_cert = cert_pem
        if self._runner is None:
            app = web.Application(client_max_size=self.config.max_body)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            await web.SockSite(self._runner, self.sock, ssl_context=self.ctx).start()
            log.info("admission webhook listening on %s:%d", self.config.address, self.port)
        else:
            log.info("admission webhook: serving certificate reloaded")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(OSError):
            self.sock.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- one request -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await self._answer(request)
        if response.status != 200:
            self.results["rejected"] += 1
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if request.path != PATH:
            return _text(404, f"not found: the webhook answers POST {PATH}")
        if request.method != "POST":
            return _text(405, f"method {request.method} not allowed: POST an AdmissionReview")
        if request.content_type != JSON:
            return _text(415, f"content type {request.content_type or '(none)'} is not {JSON}")
        limit = self.config.max_body
        if request.content_length is not None and request.content_length > limit:
            return _text(413, f"request body of {request.content_length} bytes is over {limit}")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _text(413, f"request body over {limit} bytes")
        try:
            body = json.loads(raw)
            check_json(body)
            review = admission.parse_review(body)
        except (ValueError, RecursionError, LimitError) as exc:  # JSONDecodeError, ReviewError
            what = exc if isinstance(exc, ReviewError | LimitError) else f"not JSON: {exc}"
            if isinstance(exc, RecursionError):
                what = "not JSON it can read: nested too deeply"
            return _text(400, f"malformed AdmissionReview: {what}")
        verdict = await self._verdict(review)
        result = (
            "unchecked"
            if not verdict.checked
            else "denied"
            if not verdict.allowed
            else "warned"
            if verdict.warnings
            else "allowed"
        )
        self.results[result] += 1
        if not verdict.allowed:
            log.info(
                "admission: denied %s Ingress %s/%s: %s",
                review.operation,
                review.namespace,
                review.name,
                verdict.message,
            )
        return web.json_response(admission.response(review.uid, verdict))

    async def _verdict(self, review: admission.ReviewRequest) -> Verdict:
        if not admission.is_reviewed(review):
            return Verdict(True)
        snapshot = self.snapshot()
        if snapshot is None:
            return _unchecked("ingressd has not read the cluster yet")
        loop = asyncio.get_running_loop()
        budget = self.config.budget
        deadline = loop.time() + budget
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.concurrency)
        slots = self._slots
        try:
            await asyncio.wait_for(slots.acquire(), budget)
        except TimeoutError:
            return _unchecked(f"{self.config.concurrency} other reviews took the whole {budget} s")
        try:
            work = loop.run_in_executor(
                self.executor,
                admission.review,
                snapshot,
                self.options(),
                review,
                self.config.deny,
                self.watch_namespace,
            )
        except RuntimeError:  # the executor is shut down: stopping
            slots.release()
            return _unchecked("ingressd is stopping")
        # The slot is the thread's until it is done, even when the answer has gone:
        # at most ``concurrency`` reviews ever run, however many time out.
        work.add_done_callback(lambda _: slots.release())
        try:
            return await asyncio.wait_for(asyncio.shield(work), max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.warning(
                "admission: review of Ingress %s/%s not done within %s s; allowed unchecked",
                review.namespace,
                review.name,
                budget,
            )
            return _unchecked(f"the review took longer than its {budget} s")
        except Exception:
            log.exception(
                "admission: review of Ingress %s/%s failed", review.namespace, review.name
            )
            return _unchecked("the review failed (see ingressd's log)")


def _unchecked(why: str) -> Verdict:
    warning = f"ingressd: not checked: {why}; allowed (failurePolicy Ignore)"
    return Verdict(True, "", (warning,), checked=False)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


class CertificateKeeper:
    """Every ``cert_refresh`` seconds (and when leadership changes): the leader makes sure the
    Secret and caBundle are good (``WebhookCertificates.ensure``), every replica reads the
    Secret and serves with what it holds."""

    def __init__(
        self, server: AdmissionServer, certs: WebhookCertificates, executor: Executor
    ) -> None:
        self.server = server
        self.certs = certs
        self.executor = executor
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event, is_leader: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        refresh = self.server.config.cert_refresh
        while not stop.is_set():
            self.wake.clear()
            delay = refresh
            try:
                call = self.certs.ensure if is_leader() else self.certs.read
                bundle = await loop.run_in_executor(self.executor, call)
                if bundle is None:
                    delay = min(refresh, 1.0)  # none yet, or a write lost a race: soon again
                else:
                    await self.server.load(bundle.cert_pem, bundle.key_pem)
            except Exception as exc:
                log.warning("admission certificate: %s", brief(exc))
                delay = min(refresh, 5.0)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()


def lifetime(config: AdmissionConfig) -> dt.timedelta:
    return dt.timedelta(days=config.cert_days)
