"""The trusted dealer as its own network service (`mpc dealer serve --policy dealer.toml`).

Responsibility: serve correlated randomness (PRG seeds, correction shares, noise shares) to the
parties of runs over the encrypted, key-pinned channel of `mpc.federation.secure_rpc`; one fresh
`SeededDealer` (fresh seeds) per run, keyed by the run nonce that all parties agreed on.
Security model: the dealer host sees every triple (that is the trusted-dealer assumption; see
`mpc.tee` for the attested variant), never a party's input. What it hands out travels only
encrypted to the requesting party's pinned key, and a party's seed, corrections and noise shares
are served only over a channel authenticated with that party's key, to the rank of that name.
A run nonce is served once: opening a nonce the dealer has seen before (one of the last
`MAX_SEEN_NONCES`) is refused, and every opened run gets fresh seeds, so an old run's triples and
masks are never dealt again. With the enclave, a party may ask only for its own rank's seed.
Every party of a run must name the same party list and protocol settings, which must be the
dealer policy's own. Denial of service by a party is bounded: a request counts the elements the
dealer really generates for it (every component of every item, e.g. the N x N product of an
[N, 1] x [1, N] matrix triple) against `max_items`, a run's requests together against
`RUN_ITEMS_FACTOR` x `max_items`, and requests are at most `MAX_REQUEST_BYTES` on the wire. A party
has at most one run open: opening another ends its earlier ones for it (a run is dropped when no
party that opened it still uses it), so one party's opens cannot pile up runs or push out a run
of the others, and a run that every party opened is never evicted to make room (`max_runs`).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from mpc.dealers.seeded import SeededDealer
from mpc.dealers.streams import Stream
from mpc.errors import ConfigurationError, DealerError, MpcError
from mpc.federation.policy import DealerPolicy
from mpc.federation.secure_rpc import GCM_TAG, MAX_NDIM, SecureServer
from mpc.parties.keys import PartyKey
from mpc.protocols.base import Need, Shape
from mpc.protocols.registry import check_compatibility, get_protocol

NONCE_BYTES = 32
#: Settings every run must share with the dealer policy (timeouts may differ).
AGREED_SETTINGS = ("protocol", "threshold", "frac_bits", "int_bits", "dealer")
#: The largest request the dealer reads (requests are small: a stream, a seed request, a spec).
MAX_REQUEST_BYTES = 2**20
#: A run may ask for at most this many times `max_items` elements in all its requests.
RUN_ITEMS_FACTOR = 64
#: How many run nonces the dealer remembers in order to refuse replays (oldest forgotten first).
#: Forgetting one is harmless: the dealer makes fresh seeds for every run it opens, so a
#: re-opened old nonce gets new, independent triples and masks, never the old run's; and the
#: parties' nonces hold every party's fresh random contribution, so honest parties never reuse one.
MAX_SEEN_NONCES = 1 << 17
#: Response bytes per counted element: 8 bytes of data, and for each array (counted as at least
#: one element) its msgpack extension header (at most 6 + 2 + 8 x MAX_NDIM bytes) and its item's
#: list header (at most 5 bytes).
_RESPONSE_BYTES_PER_ELEMENT = 8 + 6 + 2 + 8 * MAX_NDIM + 5


def response_limit(max_items: int) -> int:
    """The largest response the dealer sends when a request deals at most `max_items` elements."""
    return min(4096 + _RESPONSE_BYTES_PER_ELEMENT * max(max_items, 0), 2**32 - GCM_TAG - 1)


def _elements(shape: Shape) -> int:
    """Elements of an array of `shape`, counted as at least one (every array costs something)."""
    return max(1, math.prod(shape))


@dataclass
class _Run:
    dealer: SeededDealer
    parties: list[str]
    opened: set[str] = field(default_factory=set)
    seeded: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)
    seed_service: Any = None
    #: Elements requested so far (corrections and noise), bounded by `max_run_items`.
    dealt: int = 0

    def in_use(self) -> bool:
        """Whether a party that opened the run has not closed it."""
        return not self.opened <= self.closed


class DealerService:
    """Deals for the runs of one deployment (the parties and settings of its policy)."""

    def __init__(self, policy: DealerPolicy, key: PartyKey | None = None) -> None:
        self.policy = policy
        self.key = key if key is not None else PartyKey.load(policy.key_file)
        self.parties = sorted(policy.parties)
        if policy.enclave is not None:  # an attested dealer loads no protocol plug-in
            from mpc.parties.actors import measured_protocol

            protocol = measured_protocol(policy.settings.protocol)
        else:
            protocol = get_protocol(policy.settings.protocol)
        self.threshold = check_compatibility(
            protocol, len(self.parties), policy.settings.threshold, frozenset(Need)
        )
        self._scheme = protocol.make_scheme(len(self.parties), self.threshold)
        self.max_run_items = RUN_ITEMS_FACTOR * policy.max_items
        self._runs: OrderedDict[bytes, _Run] = OrderedDict()
        self._seen: set[bytes] = set()  # bounded: MAX_SEEN_NONCES, oldest forgotten first
        self._seen_order: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._backend: Any = None
        if policy.enclave == "simulated":
            from mpc.tee import SimulatedBackend, dealer_config

            self._backend = SimulatedBackend()
            config = dealer_config(policy.settings.protocol, len(self.parties), self.threshold)
            self._backend.launch(config)
        self.server = SecureServer(
            policy.name,
            self.key,
            dict(policy.parties),
            self.handle,
            host=policy.bind or policy.host,
            port=policy.port,
            timeout=policy.settings.timeout,
            max_message=MAX_REQUEST_BYTES,
            max_response=response_limit(policy.max_items),
        )

    def start(self) -> tuple[str, int]:
        return self.server.start()

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> DealerService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def platform_key(self) -> bytes:
        """The simulated platform's quote-signing key (what a party's policy must pin)."""
        if self._backend is None:
            raise DealerError("this dealer runs without an enclave")
        key: bytes = self._backend.platform_public_key
        return key

    # ---- requests ---------------------------------------------------------------------------

    def handle(self, party: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One request of `party` (the name its channel was authenticated with)."""
        if method == "open":
            return self._open(party, params)
        run = self._run(party, params)
        rank = run.parties.index(party)
        if method == "seed":
            if run.seed_service is not None:
                raise DealerError("enclave dealer: seeds leave only over the attested channel")
            return {"seed": self._take_seed(run, party, rank)}
        if method == "attested_seed":
            if run.seed_service is None:
                raise DealerError("this dealer runs without an enclave; ask for 'seed'")
            request = params.get("request")
            if not isinstance(request, bytes) or len(request) > 4096:
                raise DealerError("attested_seed takes the request bytes (at most 4 KiB)")
            self._check_seed_rank(run, party, rank, request)
            with self._lock:
                answer: bytes = run.seed_service.handle(request)
            return {"answer": answer}
        if method == "corrections":
            stream, start, count = self._stream_request(run, params)
            return {"items": run.dealer.corrections(rank, stream, start, count)}
        if method == "noise":
            key, spec = params.get("key"), params.get("spec")
            if not isinstance(key, list) or len(key) != 2 or not isinstance(spec, dict):
                raise DealerError("noise takes a key [epoch, counter] and a spec mapping")
            if not all(type(k) is int for k in key):
                raise DealerError(f"a noise key holds two ints, got {key!r}")
            shape = spec.get("shape", [])
            if (
                not isinstance(shape, list)
                or len(shape) > MAX_NDIM
                or not all(type(d) is int and d >= 0 for d in shape)
            ):
                raise DealerError(f"a noise shape is a list of ints >= 0, got {shape!r}")
            self._charge(run, _elements(tuple(shape)))
            return {"share": run.dealer.noise_share(rank, (key[0], key[1]), spec)}
        if method == "close":
            with self._lock:
                run.closed.add(party)
                if run.closed >= set(run.parties) and self._runs.get(params["run"]) is run:
                    del self._runs[params["run"]]
            return {}
        raise DealerError(f"unknown dealer method {method!r}")

    def _check_seed_rank(self, run: _Run, party: str, rank: int, request: bytes) -> None:
        """A party may ask the enclave only for its own rank's seed: the enclave hands each
        seed out once, so a request for another rank would use up (deny) that party's seed."""
        from mpc.tee.channel import SeedRequest

        try:
            asked = SeedRequest.from_bytes(request).rank
        except MpcError as exc:
            raise DealerError(f"malformed enclave seed request from {party!r}: {exc}") from None
        if asked != rank:
            whose = f" ({run.parties[asked]!r})" if 0 <= asked < len(run.parties) else ""
            raise DealerError(
                f"party {party!r} (rank {rank}) asked for the enclave seed of rank {asked}{whose}: "
                "a party may ask only for its own seed"
            )

    def _open(self, party: str, params: dict[str, Any]) -> dict[str, Any]:
        nonce, parties, settings = params.get("run"), params.get("parties"), params.get("settings")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise DealerError(f"a run is named by its {NONCE_BYTES}-byte nonce")
        if parties != self.parties:
            raise ConfigurationError(
                f"the run's parties {parties!r} are not this dealer's {self.parties} "
                f"({self.policy.origin} [[party]])"
            )
        mine = self.policy.settings.describe()
        if not isinstance(settings, dict) or any(
            settings.get(k) != mine[k] for k in AGREED_SETTINGS if k != "threshold"
        ):
            raise ConfigurationError(
                f"the run's protocol settings {settings!r} differ from this dealer's "
                f"{ {k: mine[k] for k in AGREED_SETTINGS} } ({self.policy.origin} [protocol])"
            )
        if settings.get("threshold") not in (None, self.threshold):
            raise ConfigurationError(
                f"the run's threshold {settings.get('threshold')} is not this dealer's "
                f"{self.threshold}"
            )
        with self._lock:
            run = self._runs.get(nonce)
            if run is not None and party in run.opened:
                raise DealerError(f"party {party!r} opened run {nonce.hex()[:12]} twice")
            if run is None and nonce in self._seen:
                self._log(f"refused a replay of run {nonce.hex()[:12]} from {party!r}")
                raise DealerError(
                    "this run nonce was served before: refusing to deal a run twice (replay)"
                )
            self._leave_runs(party)
            if run is None:
                self._make_room()
                self._seen.add(nonce)
                self._seen_order.append(nonce)
                while len(self._seen_order) > MAX_SEEN_NONCES:
                    self._seen.discard(self._seen_order.popleft())  # harmless: MAX_SEEN_NONCES
                run = _Run(SeededDealer(self._scheme), list(self.parties))
                if self._backend is not None:
                    from mpc.tee import EnclaveSeedService

                    keys = {r: self.policy.parties[p] for r, p in enumerate(self.parties)}
                    run.seed_service = EnclaveSeedService(
                        self._backend, nonce, len(self.parties), run.dealer.seed_for, keys
                    )
                self._runs[nonce] = run
            run.opened.add(party)
        self._log(f"run {nonce.hex()[:12]} opened by {party!r}")
        return {"rank": run.parties.index(party), "opened_at": time.time()}

    def _leave_runs(self, party: str) -> None:
        """End `party`'s earlier runs for it (it opens another), and drop those that no party
        uses any more: a party has at most one run open, so its opens cannot pile up runs.
        (A run a party has closed stays for the parties that have not opened it yet, until
        every party has closed it or the parties that opened it have all moved on.)"""
        for nonce, run in list(self._runs.items()):
            if party in run.opened:
                run.closed.add(party)
                if not run.in_use():
                    del self._runs[nonce]

    def _make_room(self) -> None:
        """Make room for one more run: evict the oldest run that no party uses any more, else
        the oldest that not every party has opened (an aborted one); a run that every party
        opened and one still uses is never evicted (then refuse the open)."""
        while len(self._runs) >= self.policy.max_runs:
            unused = (n for n, r in self._runs.items() if not r.in_use())
            partial = (n for n, r in self._runs.items() if r.opened < set(r.parties))
            victim = next(unused, None) or next(partial, None)
            if victim is None:
                raise DealerError(
                    f"this dealer already serves {len(self._runs)} runs, its limit "
                    f"({self.policy.origin} [dealer] max_runs); try again when one has ended"
                )
            del self._runs[victim]

    def _log(self, text: str) -> None:
        print(f"[{self.policy.name}] {text}", file=sys.stderr, flush=True)

    def _run(self, party: str, params: dict[str, Any]) -> _Run:
        nonce = params.get("run")
        with self._lock:
            run = self._runs.get(nonce) if isinstance(nonce, bytes) else None
        if run is None or party not in run.opened or party in run.closed:
            raise DealerError(
                "unknown run (open it first; a finished or evicted run is gone, and opening "
                "another run ends a party's earlier ones)"
            )
        return run

    def _take_seed(self, run: _Run, party: str, rank: int) -> bytes:
        with self._lock:
            if party in run.seeded:
                raise DealerError(f"the seed of {party!r} for this run was already handed out")
            run.seeded.add(party)
        return run.dealer.seed_for(rank)

    def _stream_request(self, run: _Run, params: dict[str, Any]) -> tuple[Stream, int, int]:
        wire, start, count = params.get("stream"), params.get("start"), params.get("count")
        if type(start) is not int or type(count) is not int or start < 0 or count < 1:
            raise DealerError(f"bad correction request: start={start!r}, count={count!r}")
        try:
            stream = Stream.from_wire(wire)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise DealerError(f"malformed stream description: {exc}") from None
        if len(stream.shapes) > 8 or any(len(s) > MAX_NDIM for s in stream.shapes):
            raise DealerError("malformed stream shapes")
        self._charge(run, count * self._item_elements(stream))
        return stream, start, count

    @staticmethod
    def _item_elements(stream: Stream) -> int:
        """The elements the dealer generates for one item of `stream`: every component (as at
        least one), e.g. A, B and C = A @ B of a matrix triple, plus the mask matrix A that a
        "masked_matrix" item multiplies (the declared shapes alone undercount products)."""
        try:
            total = sum(_elements(stream.component_shape(c)) for c in stream.components)
            if stream.kind == "masked_matrix":
                total += _elements(stream.shapes[0])
        except (IndexError, ValueError) as exc:
            raise DealerError(f"malformed {stream.kind} stream shapes: {exc}") from None
        return total

    def _charge(self, run: _Run, elements: int) -> None:
        """Count a request of `elements` against the request and the run limits."""
        self._bound(elements)
        with self._lock:
            if run.dealt + elements > self.max_run_items:
                raise DealerError(
                    f"this run asked for more than {self.max_run_items} elements in all, this "
                    f"dealer's limit ({RUN_ITEMS_FACTOR} x {self.policy.origin} [dealer] "
                    "max_items)"
                )
            run.dealt += elements

    def _bound(self, elements: int) -> None:
        if not 0 <= elements <= self.policy.max_items:
            raise DealerError(
                f"a request for {elements} elements exceeds this dealer's limit of "
                f"{self.policy.max_items} ({self.policy.origin} [dealer] max_items)"
            )
