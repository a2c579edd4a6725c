"""The verified channel: a party receives its PRG seed only encrypted to the attested enclave key.

Responsibility: one round trip between a party and the dealer enclave.

1. Party (`SeedHandshake`): a fresh 32-byte nonce and a fresh X25519 key; sends a `SeedRequest`
   (rank, session id, nonce, its ephemeral public key, optionally its pinned static public key).
2. Enclave (`EnclaveSeedService.handle` -> `attest_and_seal` -> `seal_seed_for_party`): a fresh
   X25519 key, a quote for (nonce, session id, that key), and the party's seed encrypted with
   AES-256-GCM under a key derived from the Diffie-Hellman secret(s) and the transcript; answers
   a `SealedSeed` (quote, signature, ciphertext). The enclave key is then dropped.
3. Party (`SeedHandshake.finish` -> `verify_quote` -> `open_seed`): verifies the quote against
   its policy and only then derives the key from the *verified* enclave key and decrypts.

Key derivation (version 1)::

    transcript = SHA-256(msgpack(["mpc.tee.channel.v1", SHA-256(quote bytes), enclave public,
                                  party ephemeral public, party static public or b"", nonce,
                                  session id, rank]))
    ikm        = X25519(enclave, party ephemeral) [|| X25519(enclave, party static)]
    key        = HKDF-SHA256(ikm, salt=transcript, info=b"mpc.tee.channel.v1 seed", 32 bytes)
    ciphertext = 12-byte random nonce || AES-256-GCM(key, seed, associated data=transcript)

(X25519, HKDF and AES-GCM set-up: `mpc.channel_crypto`, shared with the TCP transport.)

Security model: the seed is on the wire only as AES-GCM ciphertext under a key that needs the
private half of the quoted enclave key, so a man in the middle who substitutes its own enclave key
must re-sign the quote (refused: untrusted platform / bad signature), and one who keeps the quote
but encrypts under its own key is refused at decryption. A man in the middle who substitutes the
*party's* ephemeral key in the request gets a seed encrypted to itself; the real party then fails
to decrypt and aborts, and the dealer hands each rank's seed out only once, so the session never
uses a seed someone else holds. With `party_keys` pinned at the service (the parties' long-term
X25519 keys, `mpc.parties.keys`), the second Diffie-Hellman term means only the holder of rank r's
private key can decrypt rank r's seed, so a stolen request is useless. Both ephemeral keys are
fresh per handshake (forward secrecy). Nothing here is pickled; messages are strict msgpack.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Mapping, MutableSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
from cryptography.exceptions import InvalidTag

from mpc.channel_crypto import (
    AEAD_NONCE_BYTES,
    AEAD_TAG_BYTES,
    derive_aeads,
    ephemeral_key,
    raw_public,
    x25519,
)
from mpc.errors import ConfigurationError
from mpc.parties.keys import PUBLIC_KEY_BYTES, PartyKey, check_public
from mpc.tee.backend import (
    ChannelError,
    EnclaveBackend,
    EnclaveStateError,
    KeyBindingError,
    MalformedQuoteError,
    SessionMismatchError,
)
from mpc.tee.quote import (
    MAX_QUOTE_BYTES,
    MAX_SESSION_ID_BYTES,
    NONCE_BYTES,
    SIGNATURE_BYTES,
    SignedQuote,
    new_nonce,
)
from mpc.tee.verify import QuotePolicy, VerifiedQuote, verify_quote

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "AttestedSeed",
    "EnclaveSeedService",
    "SealedSeed",
    "SeedHandshake",
    "SeedRequest",
    "attest_and_seal",
    "open_seed",
    "seal_seed_for_party",
]

REQUEST_FORMAT = "mpc-tee-seed-request"
RESPONSE_FORMAT = "mpc-tee-sealed-seed"
CHANNEL_VERSION = 1
SEED_LENGTHS = (16, 32)
_MAX_RANK = 1 << 16
_LABEL = "mpc.tee.channel.v1"
_INFO = b"mpc.tee.channel.v1 seed"
_MAX_MESSAGE = 2 * MAX_QUOTE_BYTES + 1024

# Nonces accepted in this process (used by `SeedHandshake.finish` when no set is given).
_process_seen_nonces: set[bytes] = set()


def _unpack(data: bytes, what: str, fields: int, fmt: str) -> list[Any]:
    if not isinstance(data, bytes) or not 0 < len(data) <= _MAX_MESSAGE:
        raise ChannelError(f"malformed {what}: expected 1 to {_MAX_MESSAGE} bytes")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=_MAX_MESSAGE,
            max_str_len=64,
            max_array_len=fields,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise ChannelError(f"malformed {what}: not a msgpack value ({exc})") from None
    if not isinstance(value, list) or len(value) != fields:
        raise ChannelError(f"malformed {what}: expected an array of {fields} fields")
    if value[0] != fmt or isinstance(value[1], bool) or value[1] != CHANNEL_VERSION:
        raise ChannelError(f"malformed {what}: expected format {fmt!r} version {CHANNEL_VERSION}")
    return value[2:]


def _need_bytes(what: str, name: str, value: object, low: int, high: int) -> bytes:
    if not isinstance(value, bytes) or not low <= len(value) <= high:
        raise ChannelError(f"malformed {what}: {name!r} must be {low} to {high} bytes")
    return value


def _need_rank(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_RANK:
        raise ChannelError(f"malformed {what}: 'rank' must be an integer in [0, {_MAX_RANK})")
    return value


@dataclass(frozen=True)
class SeedRequest:
    """A party's request for its seed (public values only)."""

    rank: int
    session_id: bytes
    nonce: bytes
    party_ephemeral_public: bytes
    party_static_public: bytes | None = None

    def __post_init__(self) -> None:
        what = "seed request"
        _need_rank(what, self.rank)
        _need_bytes(what, "session_id", self.session_id, 1, MAX_SESSION_ID_BYTES)
        _need_bytes(what, "nonce", self.nonce, NONCE_BYTES, NONCE_BYTES)
        for name in ("party_ephemeral_public", "party_static_public"):
            value = getattr(self, name)
            if value is None and name == "party_static_public":
                continue
            _need_bytes(what, name, value, PUBLIC_KEY_BYTES, PUBLIC_KEY_BYTES)
            if not any(value):
                raise ChannelError(f"malformed {what}: {name!r} is the all-zero X25519 key")

    def to_bytes(self) -> bytes:
        packed: bytes = msgpack.packb(
            [
                REQUEST_FORMAT,
                CHANNEL_VERSION,
                self.rank,
                self.session_id,
                self.nonce,
                self.party_ephemeral_public,
                self.party_static_public,
            ],
            use_bin_type=True,
        )
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> SeedRequest:
        fields = _unpack(data, "seed request", 7, REQUEST_FORMAT)
        request = cls(*fields)
        if request.to_bytes() != data:
            raise ChannelError("malformed seed request: not in canonical encoding")
        return request


@dataclass(frozen=True)
class SealedSeed:
    """The enclave's answer: the signed quote and the seed encrypted to the party (no plaintext)."""

    rank: int
    quote: bytes
    signature: bytes
    ciphertext: bytes

    def __post_init__(self) -> None:
        what = "sealed seed"
        _need_rank(what, self.rank)
        _need_bytes(what, "quote", self.quote, 1, MAX_QUOTE_BYTES)
        _need_bytes(what, "signature", self.signature, SIGNATURE_BYTES, SIGNATURE_BYTES)
        low = AEAD_NONCE_BYTES + AEAD_TAG_BYTES + min(SEED_LENGTHS)
        high = AEAD_NONCE_BYTES + AEAD_TAG_BYTES + max(SEED_LENGTHS)
        _need_bytes(what, "ciphertext", self.ciphertext, low, high)

    def to_bytes(self) -> bytes:
        packed: bytes = msgpack.packb(
            [
                RESPONSE_FORMAT,
                CHANNEL_VERSION,
                self.rank,
                self.quote,
                self.signature,
                self.ciphertext,
            ],
            use_bin_type=True,
        )
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedSeed:
        rank, quote, signature, ciphertext = _unpack(data, "sealed seed", 6, RESPONSE_FORMAT)
        sealed = cls(rank, quote, signature, ciphertext)
        if sealed.to_bytes() != data:
            raise ChannelError("malformed sealed seed: not in canonical encoding")
        return sealed


@dataclass(frozen=True)
class AttestedSeed:
    """What a party obtains: its seed (never shown in repr) and what was verified."""

    seed: bytes = field(repr=False)
    verified: VerifiedQuote


def _transcript(quote_bytes: bytes, enclave_public: bytes, request: SeedRequest) -> bytes:
    packed: bytes = msgpack.packb(
        [
            _LABEL,
            hashlib.sha256(quote_bytes).digest(),
            enclave_public,
            request.party_ephemeral_public,
            request.party_static_public or b"",
            request.nonce,
            request.session_id,
            request.rank,
        ],
        use_bin_type=True,
    )
    return hashlib.sha256(packed).digest()


def _aead(shared: list[bytes], transcript: bytes) -> AESGCM:
    return derive_aeads(b"".join(shared), salt=transcript, info=_INFO, count=1)[0]


def _exchange(private: X25519PrivateKey, public: bytes, whose: str) -> bytes:
    try:
        return x25519(private, public)
    except ValueError as exc:  # wrong length, or a low-order point (all-zero shared secret)
        raise KeyBindingError(
            f"attestation refused at check 'key binding': key exchange with the {whose} key "
            f"failed: {exc}"
        ) from None


def seal_seed_for_party(
    enclave_key: X25519PrivateKey, signed: SignedQuote, request: SeedRequest, seed: bytes
) -> SealedSeed:
    """Enclave side: encrypt `seed` for the party that sent `request`, under the key that the
    quote in `signed` binds (`enclave_key` must be its private half)."""
    if not isinstance(seed, bytes) or len(seed) not in SEED_LENGTHS:
        raise ConfigurationError(f"a PRG seed is {SEED_LENGTHS[0]} or {SEED_LENGTHS[1]} bytes")
    quote = signed.quote
    enclave_public = raw_public(enclave_key)
    if not hmac.compare_digest(quote.enclave_public_key, enclave_public):
        raise KeyBindingError("the quote does not bind the enclave key used to seal the seed")
    if quote.nonce != request.nonce or quote.session_id != request.session_id:
        raise ChannelError("the quote does not answer this request (nonce or session id differ)")
    shared = [_exchange(enclave_key, request.party_ephemeral_public, "party's ephemeral")]
    if request.party_static_public is not None:
        shared.append(_exchange(enclave_key, request.party_static_public, "party's static"))
    transcript = _transcript(signed.body, enclave_public, request)
    gcm_nonce = secrets.token_bytes(AEAD_NONCE_BYTES)
    ciphertext = gcm_nonce + _aead(shared, transcript).encrypt(gcm_nonce, seed, transcript)
    return SealedSeed(request.rank, signed.body, signed.signature, ciphertext)


def attest_and_seal(backend: EnclaveBackend, request: SeedRequest, seed: bytes) -> SealedSeed:
    """Enclave side, bundled: a fresh enclave X25519 key, a quote for (nonce, session id, key)
    from `backend`, and `seed` sealed for the requesting party. The enclave key is not kept."""
    enclave_key = ephemeral_key()
    signed = backend.quote(request.nonce, request.session_id, raw_public(enclave_key))
    return seal_seed_for_party(enclave_key, signed, request, seed)


def open_seed(
    sealed: SealedSeed,
    verified: VerifiedQuote,
    request: SeedRequest,
    party_ephemeral: X25519PrivateKey,
    party_static: PartyKey | None = None,
) -> bytes:
    """Party side: decrypt the seed, with the key agreed with the *verified* enclave key.

    `verified` must come from `verify_quote` on `sealed.quote`; `request` and the private keys
    are the party's own (those it sent). Raises `KeyBindingError` if the sealed seed refers to
    another quote, `ChannelError` if it does not decrypt (wrong key: man in the middle).
    """
    if not hmac.compare_digest(hashlib.sha256(sealed.quote).digest(), verified.quote_hash):
        raise KeyBindingError(
            "attestation refused at check 'key binding': the sealed seed refers to another "
            "quote than the one verified"
        )
    quote = verified.quote
    if quote.nonce != request.nonce or quote.session_id != request.session_id:
        raise KeyBindingError(
            "attestation refused at check 'key binding': the verified quote does not answer "
            "this request (nonce or session id differ)"
        )
    if sealed.rank != request.rank:
        raise ChannelError(f"the dealer sealed the seed of rank {sealed.rank}, not {request.rank}")
    if raw_public(party_ephemeral) != request.party_ephemeral_public:
        raise ConfigurationError("open_seed: party_ephemeral is not the key sent in the request")
    enclave_public = verified.enclave_public_key
    shared = [_exchange(party_ephemeral, enclave_public, "enclave's")]
    if request.party_static_public is not None:
        if party_static is None or party_static.public_bytes != request.party_static_public:
            raise ConfigurationError("open_seed: party_static is not the key sent in the request")
        try:
            shared.append(party_static.exchange(enclave_public))
        except ConfigurationError as exc:
            raise KeyBindingError(f"attestation refused at check 'key binding': {exc}") from None
    transcript = _transcript(sealed.quote, enclave_public, request)
    gcm_nonce = sealed.ciphertext[:AEAD_NONCE_BYTES]
    try:
        seed = _aead(shared, transcript).decrypt(
            gcm_nonce, sealed.ciphertext[AEAD_NONCE_BYTES:], transcript
        )
    except InvalidTag:
        raise ChannelError(
            "attestation refused at check 'channel': the seed does not decrypt under the key "
            "agreed with the verified enclave key (it was encrypted to another key: man in the "
            "middle, or a corrupted message)"
        ) from None
    if len(seed) not in SEED_LENGTHS:
        raise ChannelError(f"the decrypted seed has {len(seed)} bytes, expected 16 or 32")
    return seed


class SeedHandshake:
    """Party side of the verified channel, for one seed (use once).

    ``hs = SeedHandshake(rank, session_id, static_key=party_key)``;
    send ``hs.request_bytes()`` to the dealer; ``hs.finish(answer, policy).seed``.
    """

    def __init__(self, rank: int, session_id: bytes, static_key: PartyKey | None = None) -> None:
        if static_key is not None and not isinstance(static_key, PartyKey):
            raise ConfigurationError("static_key must be a mpc.parties.keys.PartyKey")
        self._ephemeral: X25519PrivateKey | None = ephemeral_key()
        self._static = static_key
        self.request = SeedRequest(
            rank=rank,
            session_id=session_id,
            nonce=new_nonce(),
            party_ephemeral_public=raw_public(self._ephemeral),
            party_static_public=static_key.public_bytes if static_key is not None else None,
        )

    def request_bytes(self) -> bytes:
        """The request to send to the dealer (public values only)."""
        return self.request.to_bytes()

    def finish(
        self,
        response: bytes,
        policy: QuotePolicy,
        *,
        now: float | None = None,
        seen_nonces: MutableSet[bytes] | None = None,
    ) -> AttestedSeed:
        """Verify the dealer's answer against `policy`, then open the seed.

        Single use: the ephemeral key is dropped whatever the outcome. `seen_nonces` defaults to
        a per-process set of accepted nonces.
        """
        ephemeral, self._ephemeral = self._ephemeral, None
        if ephemeral is None:
            raise ChannelError("this seed handshake was already used; start a new one")
        sealed = SealedSeed.from_bytes(response)
        ledger = _process_seen_nonces if seen_nonces is None else seen_nonces
        verified = verify_quote(
            sealed.quote,
            sealed.signature,
            policy,
            self.request.nonce,
            self.request.session_id,
            now,
            ledger,
        )
        seed = open_seed(sealed, verified, self.request, ephemeral, self._static)
        return AttestedSeed(seed=seed, verified=verified)


class EnclaveSeedService:
    """Dealer (enclave) side: answers each rank's `SeedRequest` once, with a quote and its seed.

    `seed_for(rank)` gives the seed (e.g. `SeededDealer.seed_for`); `backend` must be launched.
    `party_keys` (rank -> 32-byte X25519 public key), if given, pins each rank's static key: a
    request must carry it, and the seed is then encrypted so that only its holder can open it.
    """

    def __init__(
        self,
        backend: EnclaveBackend,
        session_id: bytes,
        n: int,
        seed_for: Callable[[int], bytes],
        party_keys: Mapping[int, bytes] | None = None,
    ) -> None:
        if not backend.launched:
            raise EnclaveStateError("launch the enclave backend before serving seeds")
        if not isinstance(session_id, bytes) or not 1 <= len(session_id) <= MAX_SESSION_ID_BYTES:
            raise ConfigurationError(f"session_id must be 1 to {MAX_SESSION_ID_BYTES} bytes")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigurationError(f"n must be a positive int, got {n!r}")
        self._pinned: dict[int, bytes] | None = None
        if party_keys is not None:
            if set(party_keys) != set(range(n)):
                raise ConfigurationError(f"party_keys must map every rank 0..{n - 1} to a key")
            self._pinned = {rank: check_public(key) for rank, key in party_keys.items()}
        self._backend = backend
        self._session_id = session_id
        self._n = n
        self._seed_for = seed_for
        self._served: set[int] = set()
        self._lock = threading.Lock()

    @property
    def served(self) -> frozenset[int]:
        """Ranks whose seed was handed out."""
        with self._lock:
            return frozenset(self._served)

    def handle(self, request_bytes: bytes) -> bytes:
        """Answer one party's request with the bytes of a `SealedSeed` (the seed only encrypted)."""
        request = SeedRequest.from_bytes(request_bytes)
        if not hmac.compare_digest(request.session_id, self._session_id):
            raise SessionMismatchError(
                "attestation refused at check 'session id': the seed request is for another session"
            )
        if request.rank >= self._n:
            raise ChannelError(f"no party of rank {request.rank} in a {self._n}-party session")
        if self._pinned is not None:
            pinned = self._pinned[request.rank]
            static = request.party_static_public
            if static is None or not hmac.compare_digest(static, pinned):
                raise KeyBindingError(
                    f"attestation refused at check 'key binding': the seed request for rank "
                    f"{request.rank} does not carry that party's pinned public key"
                )
        with self._lock:
            if request.rank in self._served:
                raise ChannelError(
                    f"the seed of party rank {request.rank} was already handed out (a second "
                    "request for it means someone else asked first: abort the session)"
                )
            self._served.add(request.rank)
        try:
            return attest_and_seal(self._backend, request, self._seed_for(request.rank)).to_bytes()
        except MalformedQuoteError as exc:  # the backend built an invalid quote: a dealer bug
            raise ChannelError(f"the enclave could not produce a quote: {exc}") from None
