"""The trusted dealer as its own network service (`mpc dealer serve --policy dealer.toml`).

Responsibility: serve correlated randomness (PRG seeds, correction shares, noise shares) to the
parties of runs over the encrypted, key-pinned channel of `mpc.federation.secure_rpc`; one fresh
`SeededDealer` (fresh seeds) per run, keyed by the run nonce that all parties agreed on.
Security model: the dealer host sees every triple (that is the trusted-dealer assumption; see
`mpc.tee` for the attested variant), never a party's input. What it hands out travels only
encrypted to the requesting party's pinned key, and a party's seed, corrections and noise shares
are served only over a channel authenticated with that party's key, to the rank of that name.
A run nonce is served once: opening a nonce the dealer has seen before is refused, so an old
run's triples and masks are never dealt again. Requests are bounded (elements per request, open
runs), and every party of a run must name the same party list and protocol settings, which must
be the dealer policy's own.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from mpc.dealers.seeded import SeededDealer
from mpc.dealers.streams import Stream
from mpc.errors import ConfigurationError, DealerError
from mpc.federation.policy import DealerPolicy
from mpc.federation.secure_rpc import SecureServer
from mpc.parties.keys import PartyKey
from mpc.protocols.base import Need
from mpc.protocols.registry import check_compatibility, get_protocol

NONCE_BYTES = 32
#: Settings every run must share with the dealer policy (timeouts may differ).
AGREED_SETTINGS = ("protocol", "threshold", "frac_bits", "int_bits", "dealer")


@dataclass
class _Run:
    dealer: SeededDealer
    parties: list[str]
    opened: set[str] = field(default_factory=set)
    seeded: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)
    seed_service: Any = None


class DealerService:
    """Deals for the runs of one deployment (the parties and settings of its policy)."""

    def __init__(self, policy: DealerPolicy, key: PartyKey | None = None) -> None:
        self.policy = policy
        self.key = key if key is not None else PartyKey.load(policy.key_file)
        self.parties = sorted(policy.parties)
        protocol = get_protocol(policy.settings.protocol)
        self.threshold = check_compatibility(
            protocol, len(self.parties), policy.settings.threshold, frozenset(Need)
        )
        self._scheme = protocol.make_scheme(len(self.parties), self.threshold)
        self._runs: OrderedDict[bytes, _Run] = OrderedDict()
        self._seen: set[bytes] = set()
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
            with self._lock:
                answer: bytes = run.seed_service.handle(request)
            return {"answer": answer}
        if method == "corrections":
            stream, start, count = self._stream_request(params)
            return {"items": run.dealer.corrections(rank, stream, start, count)}
        if method == "noise":
            key, spec = params.get("key"), params.get("spec")
            if not isinstance(key, list) or len(key) != 2 or not isinstance(spec, dict):
                raise DealerError("noise takes a key [epoch, counter] and a spec mapping")
            if not all(type(k) is int for k in key):
                raise DealerError(f"a noise key holds two ints, got {key!r}")
            shape = spec.get("shape", [])
            self._bound(math.prod(int(d) for d in shape) if isinstance(shape, list) else -1)
            return {"share": run.dealer.noise_share(rank, (key[0], key[1]), spec)}
        if method == "close":
            with self._lock:
                run.closed.add(party)
                if run.closed >= set(run.parties):
                    self._runs.pop(params["run"], None)
            return {}
        raise DealerError(f"unknown dealer method {method!r}")

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
            if run is None:
                if nonce in self._seen:
                    self._log(f"refused a replay of run {nonce.hex()[:12]} from {party!r}")
                    raise DealerError(
                        "this run nonce was served before: refusing to deal a run twice (replay)"
                    )
                self._seen.add(nonce)
                while len(self._runs) >= self.policy.max_runs:
                    self._runs.popitem(last=False)  # the oldest open run (an aborted one)
                run = _Run(SeededDealer(self._scheme), list(self.parties))
                if self._backend is not None:
                    from mpc.tee import EnclaveSeedService

                    keys = {r: self.policy.parties[p] for r, p in enumerate(self.parties)}
                    run.seed_service = EnclaveSeedService(
                        self._backend, nonce, len(self.parties), run.dealer.seed_for, keys
                    )
                self._runs[nonce] = run
            if party in run.opened:
                raise DealerError(f"party {party!r} opened run {nonce.hex()[:12]} twice")
            run.opened.add(party)
        self._log(f"run {nonce.hex()[:12]} opened by {party!r}")
        return {"rank": run.parties.index(party), "opened_at": time.time()}

    def _log(self, text: str) -> None:
        print(f"[{self.policy.name}] {text}", file=sys.stderr, flush=True)

    def _run(self, party: str, params: dict[str, Any]) -> _Run:
        nonce = params.get("run")
        with self._lock:
            run = self._runs.get(nonce) if isinstance(nonce, bytes) else None
        if run is None or party not in run.opened:
            raise DealerError("unknown run (open it first; a finished or evicted run is gone)")
        return run

    def _take_seed(self, run: _Run, party: str, rank: int) -> bytes:
        with self._lock:
            if party in run.seeded:
                raise DealerError(f"the seed of {party!r} for this run was already handed out")
            run.seeded.add(party)
        return run.dealer.seed_for(rank)

    def _stream_request(self, params: dict[str, Any]) -> tuple[Stream, int, int]:
        wire, start, count = params.get("stream"), params.get("start"), params.get("count")
        if type(start) is not int or type(count) is not int or start < 0 or count < 1:
            raise DealerError(f"bad correction request: start={start!r}, count={count!r}")
        try:
            stream = Stream.from_wire(wire)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise DealerError(f"malformed stream description: {exc}") from None
        if any(d < 0 for s in stream.shapes for d in s) or len(stream.shapes) > 8:
            raise DealerError("malformed stream shapes")
        self._bound(count * sum(math.prod(s) for s in stream.shapes))
        return stream, start, count

    def _bound(self, elements: int) -> None:
        if not 0 <= elements <= self.policy.max_items:
            raise DealerError(
                f"a request for {elements} elements exceeds this dealer's limit of "
                f"{self.policy.max_items} ({self.policy.origin} [dealer] max_items)"
            )
