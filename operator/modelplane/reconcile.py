"""The executor of plans, and the controller loop that feeds it keys.

``Reconciler.reconcile`` reads one ModelDeployment and its children from the watch-fed cache, asks
plan.py what to do, and does it through the Kube seam: apply, prune, then plan again from the updated
cache and write that plan's status and events. A steady state makes no API call at all (the
credentials Secret is read by name when the spec or its generation is new, while it is missing, and
once per resync interval).

``Controller`` runs the workers over one de-duplicating work queue: a reconcile that fails for a reason
that passes (a conflict, throttling, a 5xx, a timeout) is retried after a capped, jittered exponential
backoff; a refusal only a change can fix (an invalid field, RBAC, a quota: ``refused_for_good``) is
written to status and retried on the next change of the spec or a child, or by the periodic resync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from modelplane import metrics, plan
from modelplane.cache import Cache, Key, Snapshot
from modelplane.config import Config
from modelplane.consumers import Directory
from modelplane.events import PostEvent
from modelplane.kube import KubeError
from modelplane.workqueue import Backoff, WorkQueue

log = logging.getLogger(__name__)


class KubeApi(Protocol):
    """What the executor needs of the API (kube.Kube; an in-memory stand-in in unit tests)."""

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Mapping[str, Any] | None: ...

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None: ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]: ...

    def post_event(
        self, namespace: str, name: str, uid: str, warning: bool, reason: str, message: str
    ) -> None: ...

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None: ...

    def consumer_secrets(self, namespace: str) -> Directory: ...
    def provisioning_failure(self, namespace: str, claim: str) -> str | None: ...


@dataclass(frozen=True)
class Outcome:
    result: str  # "ok", "invalid", "refused" (ApplyFailed), "gone"
    applied: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    status_written: bool = False
    # Run again in this many seconds, even if no event comes: a child we wrote is then due to be
    # confirmed (cache.CONFIRM_SECONDS) unless the watch has shown it by then.
    recheck_in: float | None = None


def refused_for_good(error: KubeError) -> bool:
    """A 4xx that retrying alone will not fix (a conflict or throttling will pass on their own)."""
    return 400 <= error.status < 500 and error.status not in (409, 429)


# A ModelDeployment naming a consumer the directory lacks reads the directory again, at most this often.
CONSUMERS_REREAD_SECONDS = 5.0
# The Events of a cache claim that stays unbound and says nothing yet: read again after 5 s, doubling to
# 5 minutes, so a provisioner's refusal shows within seconds and a claim that waits costs little.
CLAIM_EVENTS_REREAD = Backoff(5.0, 300.0, jitter=0.0)


@dataclass(frozen=True)
class _ClaimEvents:
    version: tuple[str, str]  # the claim's (uid, resourceVersion) when they were read
    message: str | None  # the provisioner's latest word; None: nothing yet
    due: float  # (monotonic) when to read them again if the claim still says nothing
    silent_reads: int  # reads in a row at this version that found nothing


@dataclass
class _Secrets:
    generation: int
    read_at: float
    keys: dict[str, frozenset[str] | None]


class Reconciler:
    def __init__(
        self,
        kube: KubeApi,
        config: Config,
        cache: Cache,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        post_event: PostEvent | None = None,
    ) -> None:
        self._kube = kube
        # The operator posts through events.EventRecorder, off the reconcile's path; by default here
        # (unit tests), synchronously.
        self._post_event: PostEvent = post_event or kube.post_event
        self._config = config
        self._cache = cache
        self._clock = clock or (lambda: datetime.now(UTC))
        self._monotonic = monotonic
        self._secrets: dict[Key, _Secrets] = {}
        self._seen: dict[Key, frozenset[tuple[str, str]]] = {}  # every child observed since the start
        self._doomed: dict[Key, str] = {}  # the uid of each ModelDeployment whose namespace is being deleted
        self._consumers: tuple[float, Directory] | None = None  # (read at, directory)
        # Per cache claim: what its provisioner's Events said, at which version of it, and when to ask again.
        self._claim_failures: dict[tuple[Key, str], _ClaimEvents] = {}
        self._claim_recheck: dict[Key, float | None] = {}  # seconds until a claim's Events are due again
        self._lock = threading.Lock()

    def reconcile(self, namespace: str, name: str) -> Outcome:
        key = (namespace, name)
        outcome = self._reconcile(key)
        if outcome.result == "gone":
            return outcome
        with self._lock:
            claim_due = self._claim_recheck.get(key)
        due = [d for d in (self._cache.confirm_due_in(key), claim_due) if d is not None]
        return replace(outcome, recheck_in=min(due, default=None))

    def _reconcile(self, key: Key) -> Outcome:
        namespace, name = key
        view = self._observe(key)
        body = view.body
        if body is None or body["metadata"].get("deletionTimestamp"):
            metrics.record_ready(namespace, name, None)
            self.forget(key)
            return Outcome("gone")  # the garbage collector removes the children by owner reference
        with self._lock:
            if self._doomed.get(key) == body["metadata"].get("uid"):
                return Outcome("gone")  # its namespace is going: every child event would only be refused
        previous: Mapping[str, Any] = body.get("status") or {}
        want = plan.desired(body, self._config.render)
        seen = self._remember(key, view)
        observed = plan.Observed(
            children=view.children,
            pods=view.pods,
            fill_pods=view.fill_pods,
            crds=view.crds,
            secrets=self._read_secrets(key, want),
            seen=seen,
            gateway=view.gateway,
            consumers=self._read_consumers(want),
            claim_failures=self._read_claim_failures(key, want, view),
        )
        now = self._clock()
        step = plan.plan(want, observed, previous, now)
        applied: list[str] = []
        pruned: list[str] = []
        if step.apply or step.prune:
            for repair in step.repairs:
                metrics.DRIFT_CORRECTIONS.labels(kind=repair.kind).inc()
                what = (
                    "was edited: putting it back" if repair.how == "edited" else "was deleted: recreating it"
                )
                log.info("%s %s/%s %s", repair.kind, namespace, repair.name, what)
            for manifest in step.apply:
                try:
                    self._cache.wrote(key, self._kube.apply(manifest))
                except KubeError as error:
                    if error.namespace_terminating:
                        # The namespace's deletion removes this ModelDeployment too; its children are
                        # being deleted under it. Re-creating them (and retrying) would only be refused.
                        log.info("%s/%s: namespace is being deleted; leaving it be", namespace, name)
                        with self._lock:
                            self._doomed[key] = str(body["metadata"].get("uid"))
                        return Outcome("gone", tuple(applied))
                    if not refused_for_good(error):
                        raise
                    # Quota, admission or validation said no: say so; a change of spec or child retries.
                    log.warning("%s/%s: %s", namespace, name, error)
                    failed = plan.not_ready(want, previous, "ApplyFailed", str(error), now, result="refused")
                    written = self._carry_out(key, want, failed)
                    return Outcome("refused", tuple(applied), (), written)
                applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
            for ref in step.prune:
                self._kube.delete(ref.api_version, ref.kind, ref.namespace, ref.name, ref.uid)
                self._cache.deleted(key, ref.kind, ref.name, ref.uid)
                pruned.append(f"{ref.kind}/{ref.name}")
            log.info(
                "%s/%s: applied %s; pruned %s", namespace, name, applied or "nothing", pruned or "nothing"
            )
            # Status from the children as they are now: the cache holds what the API returned.
            view = self._observe(key)
            self._remember(key, view)
            step = plan.plan(
                want,
                replace(observed, children=view.children, pods=view.pods, fill_pods=view.fill_pods),
                previous,
                now,
            )
        written = self._carry_out(key, want, step)
        return Outcome(step.result, tuple(applied), tuple(pruned), written)

    def _remember(self, key: Key, view: Snapshot) -> frozenset[tuple[str, str]] | None:
        """Add VIEW's children to those seen for KEY; returns what was seen before (None: nothing yet)."""
        with self._lock:
            seen = self._seen.get(key)
            self._seen[key] = (seen or frozenset()) | frozenset(view.children)
        return seen

    def _observe(self, key: Key) -> Snapshot:
        """The cache's view, once what we wrote and the watch still does not show is read by name:
        a GET only in that case (the watch is late, or never saw the object because it was deleted
        before the watch listed its kind), never in a steady state."""
        view = self._cache.observe(key)
        if not view.unconfirmed:
            return view
        for ours in view.unconfirmed:
            meta = ours["metadata"]
            live = self._kube.get(ours["apiVersion"], ours["kind"], meta.get("namespace"), meta["name"])
            if live is None:
                log.info("%s %s/%s is gone, unseen by the watch", ours["kind"], key[0], meta["name"])
            self._cache.confirmed(key, ours, live)
        return self._cache.observe(key)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._secrets.pop(key, None)
            self._seen.pop(key, None)
            self._doomed.pop(key, None)
            for claim in [c for c in self._claim_failures if c[0] == key]:
                del self._claim_failures[claim]
            self._claim_recheck.pop(key, None)
        self._cache.forget([key])

    def _read_secrets(self, key: Key, want: plan.Desired) -> dict[str, frozenset[str] | None]:
        """GET the Secrets the spec names (and only those), by name; keys only, values are not kept.
        Read again when the generation changes, while one is missing, and once per resync interval."""
        if not want.secret_names:
            return {}
        with self._lock:
            cached = self._secrets.get(key)
        if (
            cached is not None
            and cached.generation == want.generation
            and set(cached.keys) == set(want.secret_names)
            and all(keys is not None for keys in cached.keys.values())
            and self._monotonic() - cached.read_at < self._config.resync_seconds
        ):
            return cached.keys
        keys = {name: self._kube.secret_keys(want.namespace, name) for name in want.secret_names}
        with self._lock:
            self._secrets[key] = _Secrets(want.generation, self._monotonic(), keys)
        return keys

    def _read_consumers(self, want: plan.Desired) -> Directory | None:
        """The consumer directory (the consumer Secrets' metadata, one LIST) for a spec that names
        consumers, shared by every ModelDeployment. Kept fresh by refresh_consumers (the controller's
        poll); read again here when it is older than the resync interval, or when a reconcile meets a
        name it does not know (at most every CONSUMERS_REREAD_SECONDS)."""
        if not want.needs_consumers:
            return None
        assert want.md is not None
        with self._lock:
            cached = self._consumers
        if cached is not None:
            age = self._monotonic() - cached[0]
            unknown = cached[1].resolve(want.md.consumers).unknown
            if age < self._config.resync_seconds and (not unknown or age < CONSUMERS_REREAD_SECONDS):
                return cached[1]
        namespace = want.settings.consumer_namespace
        directory = self._kube.consumer_secrets(namespace) if namespace else Directory(namespace)
        with self._lock:
            self._consumers = (self._monotonic(), directory)
        return directory

    def refresh_consumers(self) -> bool:
        """Read the consumer directory again, if a ModelDeployment uses it; whether it changed (a
        consumer Secret created or deleted, a group changed: every policy may render differently)."""
        with self._lock:
            cached = self._consumers
        if cached is None or not cached[1].namespace:
            return False
        directory = self._kube.consumer_secrets(cached[1].namespace)
        with self._lock:
            self._consumers = (self._monotonic(), directory)
        return directory != cached[1]

    def _read_claim_failures(self, key: Key, want: plan.Desired, view: Snapshot) -> dict[str, str]:
        """Why each model cache claim that stays unbound (its fill Job made) has no volume, as its
        provisioner's Events say (a class that cannot provide the access mode). Read again when the
        claim changes (a provisioner that retries moves it) and, while they say nothing, after
        CLAIM_EVENTS_REREAD (the provisioner's Event often comes after the claim's last change); never
        for a bound claim. When the next read is due is kept for ``reconcile``'s recheck."""
        found: dict[str, str] = {}
        now = self._monotonic()
        due: list[float] = []
        for name in plan.unbound_cache_claims(want, view.children):
            claim = view.children[("PersistentVolumeClaim", name)]
            version = (str(claim["metadata"].get("uid")), str(claim["metadata"].get("resourceVersion")))
            with self._lock:
                cached = self._claim_failures.get((key, name))
            if cached is None or cached.version != version or (cached.message is None and now >= cached.due):
                try:
                    message = self._kube.provisioning_failure(want.namespace, name)
                except KubeError as error:  # informative only: status then says "not bound yet"
                    log.warning("could not read the Events of claim %s/%s: %s", want.namespace, name, error)
                    message = None
                silent = 0 if cached is None or cached.version != version else cached.silent_reads
                cached = _ClaimEvents(version, message, now + CLAIM_EVENTS_REREAD.delay(silent), silent + 1)
                with self._lock:
                    self._claim_failures[(key, name)] = cached
            if cached.message:
                found[name] = cached.message
            else:
                due.append(cached.due - now)
        with self._lock:
            self._claim_recheck[key] = min(due, default=None)
        return found

    def _carry_out(self, key: Key, want: plan.Desired, step: plan.Plan) -> bool:
        """Write the plan's status (if it changed) and post its events."""
        metrics.record_ready(want.namespace, want.name, step.ready)
        if step.status is None:
            return False
        self._cache.wrote(key, self._kube.patch_status(want.namespace, want.name, step.status))
        ready = next((c for c in step.status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if ready:
            log.info(
                "%s/%s: Ready=%s %s: %s",
                want.namespace,
                want.name,
                ready["status"],
                ready["reason"],
                ready["message"],
            )
        for event in step.events:
            try:
                self._post_event(
                    want.namespace, want.name, want.uid, event.warning, event.reason, event.message
                )
            except KubeError as error:  # an Event is informative; losing one must not fail the reconcile
                log.warning("could not post an event: %s", error)
        return True


class Controller:
    """Workers over one work queue of ModelDeployment keys, and the periodic resync.

    Keys come from the watches (informer.py), the resync and retries. With peering (``peered``), kopf
    pauses this operator while a live peer has a higher priority (or another has the same): the
    controller reads the same peering objects (``peers_changed``) and is paused by the same rule, so
    keys that come up meanwhile are dropped, the resync waits, and resuming queues every
    ModelDeployment. Until the peering objects are first listed, it counts as paused.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        config: Config,
        keys: Callable[[], Iterable[Key]],
        queue: WorkQueue[Key] | None = None,
        peered: bool = False,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.queue: WorkQueue[Key] = (
            queue
            if queue is not None
            else WorkQueue("modeldeployment", Backoff(config.retry_seconds, config.retry_max_seconds))
        )
        self._config = config
        self._keys = keys
        self._peered = peered
        self._wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self._peers: list[tuple[int, datetime]] | None = None  # (priority, alive until) of every peer
        self._paused_when_last_told = peered  # by peers_changed: so that resuming is noticed there
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def enqueue(self, namespace: str, name: str) -> None:
        """From the watches: a change of the ModelDeployment NAMESPACE/NAME or of what it observes."""
        self.queue.add((namespace, name))

    def peers_changed(self, peerings: Iterable[Mapping[str, Any]]) -> None:
        """kopf's peering objects as the watch shows them: their status maps each peer's id to its
        priority, lifetime (s) and lastseen. Resuming queues every ModelDeployment (their changes
        while paused were dropped). An operator watching several namespaces is in each one's peering
        object under the same id: it counts once (at its latest), or it would pause for itself."""
        peers: dict[str, tuple[int, datetime]] = {}
        for peering in peerings:
            for peer_id, peer in (peering.get("status") or {}).items():
                if isinstance(peer, Mapping) and peer.get("lastseen"):
                    seen = datetime.fromisoformat(str(peer["lastseen"]))
                    alive_until = seen + timedelta(seconds=int(peer.get("lifetime", 60)))
                    if peer_id not in peers or peers[peer_id][1] < alive_until:
                        peers[peer_id] = (int(peer.get("priority", 0)), alive_until)
        self._peers = list(peers.values())
        paused, was_paused = self.paused, self._paused_when_last_told
        self._paused_when_last_told = paused
        if paused and not was_paused:
            log.info("pausing: a peer of a higher priority is alive")
        elif was_paused and not paused:
            log.info("resuming: no peer of a higher priority is alive")
            self.resync()

    @property
    def paused(self) -> bool:
        """kopf's rule (its peering.process_peering_event): a live peer of a higher priority, or
        another live one of the same (ours is among them)."""
        if not self._peered:
            return False
        if self._peers is None:
            return True
        now = self._wall_clock()
        live = [priority for priority, alive_until in self._peers if alive_until > now]
        ours = self._config.peering_priority
        return any(priority > ours for priority in live) or live.count(ours) > 1

    def resync(self) -> None:
        """Queue every known ModelDeployment (the safety net under the watches)."""
        if self.paused:
            log.info("resync skipped: kopf is paused in favour of another operator")
            return
        for key in self._keys():
            self.queue.add(key)

    def start(self, ready: Callable[[], bool] | None = None) -> None:
        """Start the workers; with READY, only once it returns True (the watches' first LISTs are in;
        False: they stopped first), and then every ModelDeployment is queued once."""
        if ready is None:
            self._start_workers()
            return

        def when_ready() -> None:
            if ready() and not self._stop.is_set():
                self._start_workers()
                self.resync()

        self._spawn(when_ready, "start")

    def _start_workers(self) -> None:
        for number in range(self._config.workers):
            self._spawn(self._work, f"reconcile-{number}")
        if self._config.resync_seconds > 0:
            self._spawn(self._resync_loop, "resync")
        if self._config.consumer_poll_seconds > 0:
            self._spawn(self._consumers_loop, "consumers")

    def stop(self) -> None:
        self._stop.set()
        self.queue.shutdown()
        for thread in list(self._threads):
            thread.join(timeout=10)

    def process_one(self, timeout: float | None = None) -> Outcome | None:
        """Take one key from the queue and reconcile it; None if there was none (or on shutdown)."""
        key = self.queue.get(timeout)
        if key is None:
            return None
        try:
            return self._timed(key)
        finally:
            self.queue.done(key)

    def _timed(self, key: Key) -> Outcome | None:
        if self.paused:  # another operator is active: resuming (peers_changed) queues every key again
            self.queue.discard(key)
            return None
        started = time.monotonic()
        try:
            outcome = self.reconciler.reconcile(*key)
        except KubeError as error:
            metrics.RECONCILES.labels(result="error").inc()
            delay = self.queue.add_rate_limited(key)
            log.warning("reconcile of %s/%s failed, retrying in %.1fs: %s", *key, delay, error)
            return None
        except Exception:  # a bug must not stop the worker; the key is retried with backoff
            metrics.RECONCILES.labels(result="error").inc()
            delay = self.queue.add_rate_limited(key)
            log.exception("reconcile of %s/%s crashed, retrying in %.1fs", *key, delay)
            return None
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        metrics.RECONCILES.labels(result=outcome.result).inc()
        self.queue.forget(key)
        if outcome.result == "gone":
            self.queue.discard(key)
        elif outcome.recheck_in is not None:
            self.queue.add_after(key, outcome.recheck_in)
        return outcome

    def _work(self) -> None:
        while not self._stop.is_set():
            self.process_one()

    def _resync_loop(self) -> None:
        while not self._stop.wait(self._config.resync_seconds):
            try:
                self.resync()
            except Exception:  # the next interval tries again
                log.exception("resync failed")

    def _consumers_loop(self) -> None:
        """A consumer Secret created or deleted changes every SecurityPolicy (each lists every
        consumer's Secret; one naming a deleted Secret is refused by the gateway): poll the directory's
        metadata and reconcile everything when it changed. Secrets are not watched: a watch would
        bring their keys into this process."""
        while not self._stop.wait(self._config.consumer_poll_seconds):
            if self.paused:
                continue
            try:
                if self.reconciler.refresh_consumers():
                    log.info("consumer directory changed: reconciling every ModelDeployment")
                    self.resync()
            except Exception:  # the next interval tries again
                log.exception("reading the consumer directory failed")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
