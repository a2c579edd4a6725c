"""Tests for mpc.tee: measurement, quotes, ordered verification, the verified seed channel.

Everything runs in-process with the simulated backend (no Ray). Times are fixed numbers passed to
the backend's clock and to the verifier, so nothing depends on timing.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from mpc.cli import build_parser
from mpc.errors import ConfigurationError, MpcError
from mpc.parties.keys import PartyKey
from mpc.rng import new_seed
from mpc.tee import (
    DEALER_CODE_PATTERNS,
    DEALER_ENTRY_MODULES,
    AttestationError,
    ChannelError,
    DebugQuoteError,
    EnclaveSeedService,
    EnclaveStateError,
    KeyBindingError,
    MalformedQuoteError,
    MeasurementError,
    MeasurementNotAllowedError,
    NonceMismatchError,
    NonceReplayError,
    PermissiveAttestationWarning,
    Quote,
    QuoteExpiredError,
    QuotePolicy,
    QuoteSignatureError,
    SealedSeed,
    SealingError,
    SecurityVersionError,
    SeedHandshake,
    SessionMismatchError,
    SimulatedBackend,
    SimulatedQuoteError,
    UntrustedPlatformError,
    dealer_config,
    measure_dealer,
    measurement_hex,
    measurement_report,
    new_nonce,
    open_seed,
    policy_for_dealer,
    seal_seed_for_party,
    verify_quote,
)
from mpc.tee.measurement import dealer_code_files, dealer_dependencies, default_root
from mpc.tee.quote import SIGNATURE_BYTES, SignedQuote, ed25519_public_bytes, sign_quote

NOW = 1_750_000_000
CONFIG = dealer_config("additive", 3, 1)
SESSION = b"session-A-0123456789"
OTHER_SESSION = b"session-B-0123456789"
N = 3


def fixed_clock(t: float = NOW) -> Callable[[], float]:
    return lambda: t


def raw_x25519(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Dealer:
    """A simulated enclave dealer: backend, seeds and the seed service for one session."""

    def __init__(
        self,
        *,
        session_id: bytes = SESSION,
        root: Path | None = None,
        platform_key: Ed25519PrivateKey | None = None,
        security_version: int = 1,
        party_keys: dict[int, bytes] | None = None,
        config: dict[str, object] = CONFIG,
    ) -> None:
        self.backend = SimulatedBackend(
            platform_key or Ed25519PrivateKey.generate(),
            root=root,
            security_version=security_version,
            clock=fixed_clock(),
        )
        self.measurement = self.backend.launch(config)
        self.seeds = [new_seed() for _ in range(N)]
        self.service = EnclaveSeedService(
            self.backend, session_id, N, self.seeds.__getitem__, party_keys=party_keys
        )


@pytest.fixture(scope="module")
def expected_measurement() -> bytes:
    return measure_dealer(None, CONFIG)


@pytest.fixture
def dealer() -> Dealer:
    return Dealer()


def make_policy(dealer: Dealer, expected: bytes, **overrides: object) -> QuotePolicy:
    fields: dict[str, object] = {
        "allowed_measurements": {expected},
        "trusted_platform_keys": {dealer.backend.platform_public_key},
        "min_security_version": 1,
        "allow_simulated": True,
        "allow_debug": True,
    }
    fields.update(overrides)
    return QuotePolicy(**fields)  # type: ignore[arg-type]


def resign(
    response: bytes, mutate: Callable[[list[object]], None], key: Ed25519PrivateKey
) -> bytes:
    """Re-encode the quote in `response` after `mutate`-ing its fields, signed by `key`."""
    sealed = SealedSeed.from_bytes(response)
    fields = msgpack.unpackb(sealed.quote, raw=False)
    mutate(fields)
    body = msgpack.packb(fields, use_bin_type=True)
    return replace(sealed, quote=body, signature=sign_quote(body, key)).to_bytes()


# ---- measurement ------------------------------------------------------------------------------


def test_measurement_is_reproducible_and_covers_the_documented_files() -> None:
    first = measure_dealer(None, CONFIG)
    assert len(first) == 32
    assert first == measure_dealer(default_root(), dict(CONFIG))
    assert measurement_hex(CONFIG) == first.hex()
    paths = [rel for rel, _ in dealer_code_files()]
    assert paths == sorted(paths)
    for fixed in ("mpc/algebra.py", "mpc/rng.py", "mpc/parties/actors.py", "mpc/tee/quote.py"):
        assert fixed in paths
    assert "mpc/dealers/seeded.py" in paths and "mpc/protocols/beaver.py" in paths
    assert not any("__pycache__" in p or not p.endswith(".py") for p in paths)
    report = measurement_report(CONFIG, list_files=True)
    assert first.hex() in report and "mpc/rng.py" in report
    assert '{"n":3,"protocol":"additive","t":1}' in report


def test_measurement_matches_the_documented_encoding() -> None:
    files = dealer_code_files()
    h = hashlib.sha256(b"mpc.tee.measurement.v2\x00" + len(files).to_bytes(4, "big"))
    for rel, content in files:
        path = rel.encode()
        h.update(len(path).to_bytes(4, "big") + path + len(content).to_bytes(8, "big") + content)
    dependencies = dealer_dependencies()
    h.update(len(dependencies).to_bytes(4, "big"))
    for name, version in dependencies:
        for text in (name.encode(), version.encode()):
            h.update(len(text).to_bytes(4, "big") + text)
    config = b'{"n":3,"protocol":"additive","t":1}'
    h.update(len(config).to_bytes(8, "big") + config)
    assert h.digest() == measure_dealer(None, CONFIG)


def test_measurement_depends_on_configuration() -> None:
    base = measure_dealer(None, CONFIG)
    assert measure_dealer(None, dealer_config("additive", 4, 1)) != base
    assert measure_dealer(None, dealer_config("shamir-beaver", 3, 1)) != base
    assert measure_dealer(None, dealer_config("additive", 3, 2)) != base
    # key order does not matter (canonical JSON)
    assert measure_dealer(None, {"t": 1, "n": 3, "protocol": "additive"}) == base


@pytest.mark.parametrize(
    "config",
    [
        {"protocol": "additive", "n": 3},
        {"protocol": "additive", "n": 3.0, "t": 1},
        {"protocol": "additive", "n": True, "t": 1},
        {"protocol": "", "n": 3, "t": 1},
        {"protocol": "additive", "n": 0, "t": 1},
        {"protocol": "additive", "n": 3, "t": 1, "extra": 0.5},
        {"protocol": "additive", "n": 3, "t": 1, "extra": b"raw"},
    ],
)
def test_bad_configuration_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="dealer configuration"):
        measure_dealer(None, config)


def test_measure_needs_a_configuration() -> None:
    with pytest.raises(ConfigurationError, match="needs the dealer configuration"):
        measure_dealer()


def copy_dealer_sources(target: Path) -> None:
    for rel, _ in dealer_code_files():
        destination = target / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(default_root() / rel, destination)


def test_copied_checkout_measures_the_same_and_a_changed_byte_changes_it(tmp_path: Path) -> None:
    copy_dealer_sources(tmp_path)
    assert measure_dealer(tmp_path, CONFIG) == measure_dealer(None, CONFIG)
    target = tmp_path / "mpc" / "dealers" / "seeded.py"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    assert measure_dealer(tmp_path, CONFIG) != measure_dealer(None, CONFIG)


def test_an_added_dealer_module_changes_the_measurement(tmp_path: Path) -> None:
    copy_dealer_sources(tmp_path)
    (tmp_path / "mpc" / "dealers" / "backdoor.py").write_text("LEAK = True\n")
    assert measure_dealer(tmp_path, CONFIG) != measure_dealer(None, CONFIG)


def test_missing_dealer_file_is_a_clear_error(tmp_path: Path) -> None:
    copy_dealer_sources(tmp_path)
    (tmp_path / "mpc" / "rng.py").unlink()
    with pytest.raises(MeasurementError, match=r"mpc/rng\.py"):
        measure_dealer(tmp_path, CONFIG)
    with pytest.raises(MeasurementError, match="no 'mpc' package"):
        measure_dealer(tmp_path / "nowhere", CONFIG)


def test_the_tee_page_example_runs() -> None:
    page = (default_root() / "docs" / "tee.md").read_text()
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", page, flags=re.S | re.M)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/tee.md", "exec"), {"__name__": "tee_doc"})


def test_patterns_are_documented_in_the_tee_page() -> None:
    page = (default_root() / "docs" / "tee.md").read_text()
    for pattern in DEALER_CODE_PATTERNS:
        assert pattern in page
    for module in DEALER_ENTRY_MODULES:
        assert f"`{module}`" in page
    commands = re.findall(r"`(mpc tee measure[^`]*)`", page)
    assert any("--parties" in command for command in commands)
    for command in commands:
        build_parser().parse_args(command.split()[1:])  # the page's commands parse


# ---- the correct flow -------------------------------------------------------------------------


def test_end_to_end_flow_gives_each_party_its_seed(
    dealer: Dealer, expected_measurement: bytes
) -> None:
    policy = make_policy(dealer, expected_measurement)
    seen: set[bytes] = set()
    for rank in range(N):
        handshake = SeedHandshake(rank, SESSION)
        response = dealer.service.handle(handshake.request_bytes())
        attested = handshake.finish(response, policy, now=NOW + 1, seen_nonces=seen)
        assert attested.seed == dealer.seeds[rank]
        verified = attested.verified
        assert verified.measurement == expected_measurement
        assert verified.quote.simulated and verified.quote.debug
        assert verified.quote.session_id == SESSION
        assert "flags=SIMULATED,DEBUG" in verified.summary()
        assert expected_measurement.hex() in verified.summary()
        assert attested.seed.hex() not in repr(attested)
    assert dealer.service.served == {0, 1, 2}
    assert len(seen) == N


def test_flow_with_pinned_party_keys(expected_measurement: bytes) -> None:
    keys = [PartyKey.generate() for _ in range(N)]
    dealer = Dealer(party_keys={r: k.public_bytes for r, k in enumerate(keys)})
    policy = make_policy(dealer, expected_measurement)
    handshake = SeedHandshake(1, SESSION, static_key=keys[1])
    response = dealer.service.handle(handshake.request_bytes())
    assert handshake.finish(response, policy, now=NOW, seen_nonces=set()).seed == dealer.seeds[1]


def test_request_without_the_pinned_key_is_refused_by_the_dealer(
    expected_measurement: bytes,
) -> None:
    keys = [PartyKey.generate() for _ in range(N)]
    dealer = Dealer(party_keys={r: k.public_bytes for r, k in enumerate(keys)})
    with pytest.raises(KeyBindingError, match="pinned public key"):
        dealer.service.handle(SeedHandshake(1, SESSION).request_bytes())
    intruder = PartyKey.generate()
    with pytest.raises(KeyBindingError, match="pinned public key"):
        dealer.service.handle(SeedHandshake(1, SESSION, static_key=intruder).request_bytes())
    assert dealer.service.served == frozenset()


def test_stolen_request_with_pinned_keys_does_not_reveal_the_seed(
    expected_measurement: bytes,
) -> None:
    """An attacker relays the genuine party's request with its own ephemeral key; without rank
    0's static private key it cannot derive the channel key."""
    keys = [PartyKey.generate() for _ in range(N)]
    dealer = Dealer(party_keys={r: k.public_bytes for r, k in enumerate(keys)})
    genuine = SeedHandshake(0, SESSION, static_key=keys[0])
    attacker_ephemeral = X25519PrivateKey.generate()
    forged = replace(genuine.request, party_ephemeral_public=raw_x25519(attacker_ephemeral))
    sealed = SealedSeed.from_bytes(dealer.service.handle(forged.to_bytes()))
    policy = make_policy(dealer, expected_measurement)
    verified = verify_quote(
        sealed.quote, sealed.signature, policy, forged.nonce, SESSION, NOW, set()
    )
    intruder = PartyKey.generate()  # the best the attacker has: some other static key
    as_attacker = replace(forged, party_static_public=intruder.public_bytes)
    with pytest.raises(ChannelError, match="does not decrypt"):
        open_seed(sealed, verified, as_attacker, attacker_ephemeral, intruder)


def test_each_seed_is_handed_out_once(dealer: Dealer) -> None:
    dealer.service.handle(SeedHandshake(2, SESSION).request_bytes())
    with pytest.raises(ChannelError, match="already handed out"):
        dealer.service.handle(SeedHandshake(2, SESSION).request_bytes())
    with pytest.raises(ChannelError, match="no party of rank 5"):
        dealer.service.handle(SeedHandshake(5, SESSION).request_bytes())


def test_handshake_is_single_use(dealer: Dealer, expected_measurement: bytes) -> None:
    policy = make_policy(dealer, expected_measurement)
    handshake = SeedHandshake(0, SESSION)
    response = dealer.service.handle(handshake.request_bytes())
    handshake.finish(response, policy, now=NOW, seen_nonces=set())
    with pytest.raises(ChannelError, match="already used"):
        handshake.finish(response, policy, now=NOW, seen_nonces=set())


def test_policy_for_dealer_computes_the_expected_measurement(
    dealer: Dealer, expected_measurement: bytes
) -> None:
    policy = policy_for_dealer(
        "additive",
        3,
        1,
        trusted_platform_keys=[dealer.backend.platform_public_key],
        allow_simulated=True,
        allow_debug=True,
    )
    assert policy.allowed_measurements == {expected_measurement}
    handshake = SeedHandshake(0, SESSION)
    response = dealer.service.handle(handshake.request_bytes())
    assert handshake.finish(response, policy, now=NOW).seed == dealer.seeds[0]


def test_permissive_policy_says_so_at_startup(dealer: Dealer, expected_measurement: bytes) -> None:
    policy = make_policy(dealer, expected_measurement)
    assert policy.permissive
    with pytest.warns(PermissiveAttestationWarning, match="NOT protected by hardware"):
        policy.warn_if_permissive()
    strict = make_policy(dealer, expected_measurement, allow_simulated=False, allow_debug=False)
    assert strict.startup_notice() is None


# ---- refusals ---------------------------------------------------------------------------------


def run_party(
    dealer: Dealer,
    policy: QuotePolicy,
    *,
    tamper: Callable[[bytes], bytes] = lambda r: r,
    now: float = NOW,
    rank: int | None = None,
) -> bytes:
    """One party's handshake (by default the next rank whose seed was not handed out yet)."""
    if rank is None:
        rank = min(set(range(N)) - dealer.service.served)
    handshake = SeedHandshake(rank, SESSION)
    response = tamper(dealer.service.handle(handshake.request_bytes()))
    return handshake.finish(response, policy, now=now, seen_nonces=set()).seed


def test_modified_dealer_source_is_refused(tmp_path: Path, expected_measurement: bytes) -> None:
    copy_dealer_sources(tmp_path)
    target = tmp_path / "mpc" / "dealers" / "seeded.py"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x20  # one byte of the dealer's source
    target.write_bytes(bytes(data))
    modified = Dealer(root=tmp_path)
    assert modified.measurement != expected_measurement
    with pytest.raises(MeasurementNotAllowedError, match="check 'measurement'") as err:
        run_party(modified, make_policy(modified, expected_measurement))
    assert modified.measurement.hex() in str(err.value)


def test_dealer_with_another_configuration_is_refused(expected_measurement: bytes) -> None:
    other = Dealer(config=dealer_config("additive", 3, 2))
    with pytest.raises(MeasurementNotAllowedError):
        run_party(other, make_policy(other, expected_measurement))


@pytest.mark.parametrize("position", [0, 5, 40, -1])
def test_forged_quote_bit_flip_is_refused(
    dealer: Dealer, expected_measurement: bytes, position: int
) -> None:
    def flip(response: bytes) -> bytes:
        sealed = SealedSeed.from_bytes(response)
        body = bytearray(sealed.quote)
        body[position] ^= 0x04
        return replace(sealed, quote=bytes(body)).to_bytes()

    with pytest.raises(QuoteSignatureError, match="check 'signature'"):
        run_party(dealer, make_policy(dealer, expected_measurement), tamper=flip)


def test_flipped_signature_bit_is_refused(dealer: Dealer, expected_measurement: bytes) -> None:
    def flip(response: bytes) -> bytes:
        sealed = SealedSeed.from_bytes(response)
        signature = bytearray(sealed.signature)
        signature[-1] ^= 0x80
        return replace(sealed, signature=bytes(signature)).to_bytes()

    with pytest.raises(QuoteSignatureError):
        run_party(dealer, make_policy(dealer, expected_measurement), tamper=flip)


def test_quote_resigned_by_untrusted_key_is_refused(
    dealer: Dealer, expected_measurement: bytes
) -> None:
    attacker = Ed25519PrivateKey.generate()

    def resign_same(response: bytes) -> bytes:
        return resign(response, lambda fields: None, attacker)

    with pytest.raises(UntrustedPlatformError, match="does not trust"):
        run_party(dealer, make_policy(dealer, expected_measurement), tamper=resign_same)


def test_untrusted_platform_even_with_the_right_measurement(expected_measurement: bytes) -> None:
    """A second simulated platform (its own key) runs the genuine code: still not trusted."""
    genuine, impostor = Dealer(), Dealer()
    assert impostor.measurement == expected_measurement
    with pytest.raises(UntrustedPlatformError):
        run_party(impostor, make_policy(genuine, expected_measurement))


def test_replayed_nonce_is_refused(dealer: Dealer, expected_measurement: bytes) -> None:
    policy = make_policy(dealer, expected_measurement)
    seen: set[bytes] = set()
    handshake = SeedHandshake(0, SESSION)
    response = dealer.service.handle(handshake.request_bytes())
    handshake.finish(response, policy, now=NOW, seen_nonces=seen)
    sealed = SealedSeed.from_bytes(response)
    nonce = handshake.request.nonce
    with pytest.raises(NonceReplayError, match="already used"):
        verify_quote(sealed.quote, sealed.signature, policy, nonce, SESSION, NOW, seen)
    # the old answer replayed to a later handshake of the same party
    later = SeedHandshake(0, SESSION)
    with pytest.raises(NonceReplayError):
        later.finish(response, policy, now=NOW, seen_nonces=seen)
    # ...and to a verifier that forgot its history: it is not this verifier's nonce
    with pytest.raises(NonceMismatchError, match="fresh nonce"):
        SeedHandshake(0, SESSION).finish(response, policy, now=NOW, seen_nonces=set())


def test_quote_for_another_session_is_refused(expected_measurement: bytes) -> None:
    """A relay rewrites the party's request to another session's dealer."""
    other = Dealer(session_id=OTHER_SESSION)
    policy = make_policy(other, expected_measurement)
    handshake = SeedHandshake(0, SESSION)
    relayed = replace(handshake.request, session_id=OTHER_SESSION)
    response = other.service.handle(relayed.to_bytes())
    with pytest.raises(SessionMismatchError, match="check 'session id'"):
        handshake.finish(response, policy, now=NOW, seen_nonces=set())


def test_dealer_refuses_a_request_for_another_session(dealer: Dealer) -> None:
    with pytest.raises(SessionMismatchError):
        dealer.service.handle(SeedHandshake(0, OTHER_SESSION).request_bytes())


def test_mitm_substituting_its_enclave_key_must_resign(
    dealer: Dealer, expected_measurement: bytes
) -> None:
    """The attacker puts its own X25519 key in the quote and seals an attacker seed to it."""
    policy = make_policy(dealer, expected_measurement)
    attacker_key = X25519PrivateKey.generate()
    attacker_platform = Ed25519PrivateKey.generate()
    handshake = SeedHandshake(0, SESSION)
    genuine = SealedSeed.from_bytes(dealer.service.handle(handshake.request_bytes()))
    fields = msgpack.unpackb(genuine.quote, raw=False)
    fields[7] = raw_x25519(attacker_key)
    body = msgpack.packb(fields, use_bin_type=True)

    # re-signed by the attacker: untrusted platform
    forged = seal_seed_for_party(
        attacker_key,
        SignedQuote(body, sign_quote(body, attacker_platform)),
        handshake.request,
        bytes(16),
    )
    with pytest.raises(UntrustedPlatformError):
        handshake.finish(forged.to_bytes(), policy, now=NOW, seen_nonces=set())

    # keeps the genuine signature: it no longer verifies
    second = SeedHandshake(0, SESSION)
    fields[8] = second.request.nonce
    body = msgpack.packb(fields, use_bin_type=True)
    with_genuine_signature = replace(
        seal_seed_for_party(
            attacker_key,
            SignedQuote(body, sign_quote(body, attacker_platform)),
            second.request,
            bytes(16),
        ),
        signature=genuine.signature,
    )
    with pytest.raises(QuoteSignatureError):
        second.finish(with_genuine_signature.to_bytes(), policy, now=NOW, seen_nonces=set())


def test_mitm_keeping_the_quote_but_sealing_with_its_own_key_fails_decryption(
    dealer: Dealer, expected_measurement: bytes
) -> None:
    """The attacker forwards the genuine quote but replaces the ciphertext by a seed of its
    choice, encrypted with the channel construction under its own X25519 key."""
    from mpc.tee.channel import _aead, _transcript

    policy = make_policy(dealer, expected_measurement)
    handshake = SeedHandshake(0, SESSION)
    genuine = SealedSeed.from_bytes(dealer.service.handle(handshake.request_bytes()))
    attacker_key = X25519PrivateKey.generate()
    party_public = X25519PublicKey.from_public_bytes(handshake.request.party_ephemeral_public)
    transcript = _transcript(genuine.quote, raw_x25519(attacker_key), handshake.request)
    gcm_nonce = bytes(12)
    ciphertext = gcm_nonce + _aead([attacker_key.exchange(party_public)], transcript).encrypt(
        gcm_nonce, bytes(range(16)), transcript
    )
    forged = replace(genuine, ciphertext=ciphertext)
    with pytest.raises(ChannelError, match="does not decrypt"):
        handshake.finish(forged.to_bytes(), policy, now=NOW, seen_nonces=set())


def test_mitm_substituting_the_party_key_is_detected(
    dealer: Dealer, expected_measurement: bytes
) -> None:
    """The relay swaps in its own ephemeral key: the seed is sealed to it, the party aborts,
    and the dealer refuses to hand that rank's seed out again."""
    policy = make_policy(dealer, expected_measurement)
    handshake = SeedHandshake(0, SESSION)
    mitm = X25519PrivateKey.generate()
    swapped = replace(handshake.request, party_ephemeral_public=raw_x25519(mitm))
    response = dealer.service.handle(swapped.to_bytes())
    with pytest.raises(ChannelError, match="does not decrypt"):
        handshake.finish(response, policy, now=NOW, seen_nonces=set())
    with pytest.raises(ChannelError, match="already handed out"):
        dealer.service.handle(SeedHandshake(0, SESSION).request_bytes())


def test_simulated_quote_refused_without_allowance(
    dealer: Dealer, expected_measurement: bytes
) -> None:
    policy = make_policy(dealer, expected_measurement, allow_simulated=False, allow_debug=False)
    with pytest.raises(SimulatedQuoteError, match="SIMULATED"):
        run_party(dealer, policy)
    only_simulated = make_policy(dealer, expected_measurement, allow_debug=False)
    with pytest.raises(DebugQuoteError, match="DEBUG"):
        run_party(dealer, only_simulated)


def test_debug_flag_alone_is_refused(dealer: Dealer, expected_measurement: bytes) -> None:
    """A non-simulated but debug quote (as a debug SGX enclave would report)."""
    platform = Ed25519PrivateKey.generate()
    policy = make_policy(
        dealer,
        expected_measurement,
        trusted_platform_keys={ed25519_public_bytes(platform)},
        allow_simulated=False,
    )
    policy_no_debug = replace(policy, allow_debug=False)

    def hardware_debug(fields: list[object]) -> None:
        fields[6] = False  # simulated

    def tamper(response: bytes) -> bytes:
        return resign(response, hardware_debug, platform)

    with pytest.raises(DebugQuoteError):
        run_party(dealer, policy_no_debug, tamper=tamper)
    # allowed, the altered quote passes verification, but the seed was sealed against the
    # original quote's hash (the channel transcript binds the exact quote): it does not open
    with pytest.raises(ChannelError, match="does not decrypt"):
        run_party(dealer, policy, tamper=tamper)


def test_version_below_minimum_is_refused(expected_measurement: bytes) -> None:
    old = Dealer(security_version=1)
    policy = make_policy(old, expected_measurement, min_security_version=2)
    with pytest.raises(SecurityVersionError, match="below the minimum 2"):
        run_party(old, policy)


@pytest.mark.parametrize(
    ("now", "match"),
    [
        (NOW + 120, "expired"),
        (NOW + 10_000, "expired"),
        (NOW - 3600, "in the future"),
    ],
)
def test_expired_or_future_quote_is_refused(
    dealer: Dealer, expected_measurement: bytes, now: float, match: str
) -> None:
    with pytest.raises(QuoteExpiredError, match=match):
        run_party(dealer, make_policy(dealer, expected_measurement), now=now)


def test_quote_older_than_policy_max_age_is_refused(
    dealer: Dealer, expected_measurement: bytes
) -> None:
    policy = make_policy(dealer, expected_measurement, max_age=10.0)
    with pytest.raises(QuoteExpiredError, match="more than 10 s ago"):
        run_party(dealer, policy, now=NOW + 11)
    assert len(run_party(dealer, policy, now=NOW + 10)) == 16


def non_canonical(f: list[object]) -> bytes:
    """Field 4 (security version 1) as a 16-bit integer instead of a positive fixint."""
    assert f[4] == 1
    items = [msgpack.packb(x, use_bin_type=True) for x in f]
    items[4] = b"\xcd\x00\x01"
    header: bytes = msgpack.Packer().pack_array_header(len(items))
    return header + b"".join(items)


MALFORMED: list[tuple[str, Callable[[list[object]], object]]] = [
    ("truncated", lambda f: msgpack.packb(f, use_bin_type=True)[:-3]),
    ("trailing bytes", lambda f: msgpack.packb(f, use_bin_type=True) + b"\x00"),
    ("not an array", lambda f: msgpack.packb({"quote": 1}, use_bin_type=True)),
    ("too few fields", lambda f: msgpack.packb(f[:-1], use_bin_type=True)),
    ("wrong format tag", lambda f: msgpack.packb(["x", *f[1:]], use_bin_type=True)),
    ("wrong version", lambda f: msgpack.packb([f[0], 2, *f[2:]], use_bin_type=True)),
    ("int as bool flag", lambda f: msgpack.packb([*f[:5], 1, *f[6:]], use_bin_type=True)),
    ("bool as version", lambda f: msgpack.packb([*f[:4], True, *f[5:]], use_bin_type=True)),
    ("short nonce", lambda f: msgpack.packb([*f[:8], b"n" * 31, *f[9:]], use_bin_type=True)),
    ("str measurement", lambda f: msgpack.packb([*f[:3], "m" * 32, *f[4:]], use_bin_type=True)),
    ("zero enclave key", lambda f: msgpack.packb([*f[:7], bytes(32), *f[8:]], use_bin_type=True)),
    ("expires first", lambda f: msgpack.packb([*f[:11], f[10]], use_bin_type=True)),
    ("bad backend", lambda f: msgpack.packb([*f[:2], "Sim ulated", *f[3:]], use_bin_type=True)),
    ("not msgpack", lambda f: b"\xc1"),
    ("non-canonical int", non_canonical),
]


@pytest.mark.parametrize(("name", "make"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_quote_signed_by_a_trusted_platform_is_refused(
    dealer: Dealer,
    expected_measurement: bytes,
    name: str,
    make: Callable[[list[object]], object],
) -> None:
    """Even a trusted platform key cannot make a malformed quote acceptable."""
    platform = Ed25519PrivateKey.generate()
    policy = make_policy(
        dealer, expected_measurement, trusted_platform_keys={ed25519_public_bytes(platform)}
    )
    handshake = SeedHandshake(0, SESSION)
    sealed = SealedSeed.from_bytes(dealer.service.handle(handshake.request_bytes()))
    fields = msgpack.unpackb(sealed.quote, raw=False)
    body = make(fields)
    assert isinstance(body, bytes)
    with pytest.raises(MalformedQuoteError, match="check 'format'"):
        verify_quote(
            body, sign_quote(body, platform), policy, handshake.request.nonce, SESSION, NOW, set()
        )


def test_the_non_canonical_case_really_is_non_canonical(dealer: Dealer) -> None:
    sealed = SealedSeed.from_bytes(dealer.service.handle(SeedHandshake(0, SESSION).request_bytes()))
    fields = msgpack.unpackb(sealed.quote, raw=False)
    make = dict(MALFORMED)["non-canonical int"]
    body = make(fields)
    assert isinstance(body, bytes)
    assert msgpack.unpackb(body, raw=False) == fields  # same values, other bytes


@pytest.mark.parametrize(
    "signature", [b"", bytes(SIGNATURE_BYTES - 1), bytes(SIGNATURE_BYTES + 1), "x" * 96]
)
def test_malformed_signature_field_is_refused(
    dealer: Dealer, expected_measurement: bytes, signature: object
) -> None:
    signed = dealer.backend.quote(new_nonce(), SESSION, raw_x25519(X25519PrivateKey.generate()))
    with pytest.raises(MalformedQuoteError):
        verify_quote(
            signed.body,
            signature,  # type: ignore[arg-type]
            make_policy(dealer, expected_measurement),
            new_nonce(),
            SESSION,
            NOW,
            set(),
        )


@pytest.mark.parametrize(
    "response",
    [
        b"",
        b"\x00",
        b"garbage that is not msgpack \xc1",
        msgpack.packb(["mpc-tee-sealed-seed", 1, 0, b"q", b"s", b"c"], use_bin_type=True),
        msgpack.packb(["mpc-tee-sealed-seed", 2, 0, b"q", bytes(96), bytes(44)], use_bin_type=True),
    ],
)
def test_malformed_dealer_response_is_refused(
    dealer: Dealer, expected_measurement: bytes, response: bytes
) -> None:
    with pytest.raises(ChannelError, match="malformed sealed seed"):
        SeedHandshake(0, SESSION).finish(
            response, make_policy(dealer, expected_measurement), now=NOW, seen_nonces=set()
        )


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"",
        b"\xc1",
        msgpack.packb(["mpc-tee-seed-request", 1, -1, b"s", bytes(32), bytes(32), None]),
        msgpack.packb(["mpc-tee-seed-request", 1, 0, b"s", bytes(31), b"k" * 32, None]),
        msgpack.packb(["mpc-tee-seed-request", 1, 0, b"s", bytes(32), bytes(32), None]),
    ],
)
def test_malformed_seed_request_is_refused_by_the_dealer(
    dealer: Dealer, request_bytes: bytes
) -> None:
    with pytest.raises(ChannelError, match="malformed seed request"):
        dealer.service.handle(request_bytes)
    assert dealer.service.served == frozenset()


def test_checks_run_in_the_documented_order(dealer: Dealer, expected_measurement: bytes) -> None:
    """A quote that fails several checks reports the first one in the documented order."""
    platform = Ed25519PrivateKey.generate()
    trusted = ed25519_public_bytes(platform)
    strict = make_policy(
        dealer,
        expected_measurement,
        trusted_platform_keys={trusted},
        min_security_version=5,
        allow_simulated=False,
        allow_debug=False,
        max_age=10.0,
    )
    handshake = SeedHandshake(0, SESSION)
    sealed = SealedSeed.from_bytes(dealer.service.handle(handshake.request_bytes()))
    base = msgpack.unpackb(sealed.quote, raw=False)
    base[3] = bytes(32)  # unknown measurement
    base[8] = new_nonce()  # not this verifier's nonce
    base[9] = OTHER_SESSION
    # fails: measurement, version, flags, age, nonce, session
    steps: list[tuple[type[AttestationError], Callable[[list[object]], None]]] = [
        (MeasurementNotAllowedError, lambda f: f.__setitem__(3, expected_measurement)),
        (SecurityVersionError, lambda f: f.__setitem__(4, 5)),
        (SimulatedQuoteError, lambda f: f.__setitem__(6, False)),
        (DebugQuoteError, lambda f: f.__setitem__(5, False)),
        (QuoteExpiredError, lambda f: f.__setitem__(10, NOW + 100)),
        (NonceMismatchError, lambda f: f.__setitem__(8, handshake.request.nonce)),
        (SessionMismatchError, lambda f: f.__setitem__(9, SESSION)),
    ]
    fields = list(base)

    def attempt(signing_key: Ed25519PrivateKey) -> None:
        body = msgpack.packb(fields, use_bin_type=True)
        verify_quote(
            body,
            sign_quote(body, signing_key),
            strict,
            handshake.request.nonce,
            SESSION,
            NOW + 100,
            set(),
        )

    with pytest.raises(UntrustedPlatformError):
        attempt(Ed25519PrivateKey.generate())
    for error, fix in steps:
        with pytest.raises(error):
            attempt(platform)
        fix(fields)
    attempt(platform)  # every check passes now


def test_every_refusal_is_an_mpc_error_naming_its_check() -> None:
    for cls in (
        MalformedQuoteError,
        UntrustedPlatformError,
        QuoteSignatureError,
        MeasurementNotAllowedError,
        SecurityVersionError,
        SimulatedQuoteError,
        DebugQuoteError,
        QuoteExpiredError,
        NonceReplayError,
        NonceMismatchError,
        SessionMismatchError,
        KeyBindingError,
        ChannelError,
    ):
        assert issubclass(cls, AttestationError) and issubclass(cls, MpcError)
        assert cls.check and cls.check != "attestation"


def test_policy_denies_by_default() -> None:
    key = ed25519_public_bytes(Ed25519PrivateKey.generate())
    with pytest.raises(ConfigurationError, match="deny by default"):
        QuotePolicy(set(), {key}, 1)
    with pytest.raises(ConfigurationError, match="deny by default"):
        QuotePolicy({bytes(32)}, set(), 1)
    with pytest.raises(ConfigurationError, match="length 32"):
        QuotePolicy({bytes(32)}, {b"short"}, 1)
    with pytest.raises(ConfigurationError, match="min_security_version"):
        QuotePolicy({bytes(32)}, {key}, -1)
    with pytest.raises(ConfigurationError, match="set of byte strings"):
        QuotePolicy(bytes(32), {key}, 1)  # type: ignore[arg-type]
    policy = QuotePolicy({bytes(32)}, {key}, 1)
    assert not policy.allow_simulated and not policy.allow_debug and not policy.permissive


# ---- no seed in clear on the wire -------------------------------------------------------------


def test_no_seed_crosses_the_wire_in_clear(expected_measurement: bytes) -> None:
    keys = [PartyKey.generate() for _ in range(N)]
    for pinned in (None, {r: k.public_bytes for r, k in enumerate(keys)}):
        dealer = Dealer(party_keys=pinned)
        policy = make_policy(dealer, expected_measurement)
        wire: list[bytes] = []
        for rank in range(N):
            static = keys[rank] if pinned else None
            handshake = SeedHandshake(rank, SESSION, static_key=static)
            wire.append(handshake.request_bytes())
            wire.append(dealer.service.handle(wire[-1]))
            assert handshake.finish(wire[-1], policy, now=NOW).seed == dealer.seeds[rank]
        captured = b"".join(wire)
        for seed in dealer.seeds:
            for form in (seed, seed.hex().encode(), seed[:8], seed[8:]):
                assert form not in captured


def test_sealed_seed_repr_and_wire_do_not_contain_the_seed(dealer: Dealer) -> None:
    request = SeedHandshake(0, SESSION).request
    signed_key = X25519PrivateKey.generate()
    seed = new_seed()
    signed = dealer.backend.quote(request.nonce, SESSION, raw_x25519(signed_key))
    sealed = seal_seed_for_party(signed_key, signed, request, seed)
    assert seed not in sealed.to_bytes() and seed.hex() not in repr(sealed)


def test_seal_key_must_match_the_quoted_key(dealer: Dealer) -> None:
    request = SeedHandshake(0, SESSION).request
    quoted = X25519PrivateKey.generate()
    signed = dealer.backend.quote(request.nonce, SESSION, raw_x25519(quoted))
    with pytest.raises(KeyBindingError):
        seal_seed_for_party(X25519PrivateKey.generate(), signed, request, new_seed())


# ---- backend: state and sealing ---------------------------------------------------------------


def test_backend_must_be_launched_once() -> None:
    backend = SimulatedBackend(Ed25519PrivateKey.generate(), clock=fixed_clock())
    assert not backend.launched
    with pytest.raises(EnclaveStateError):
        backend.quote(new_nonce(), SESSION, raw_x25519(X25519PrivateKey.generate()))
    with pytest.raises(EnclaveStateError):
        EnclaveSeedService(backend, SESSION, N, lambda r: new_seed())
    backend.launch(CONFIG)
    assert backend.launched
    with pytest.raises(EnclaveStateError, match="already launched"):
        backend.launch(CONFIG)


def test_quotes_are_labelled_simulated_and_debug(dealer: Dealer) -> None:
    enclave = raw_x25519(X25519PrivateKey.generate())
    nonce = new_nonce()
    quote = Quote.from_bytes(dealer.backend.quote(nonce, SESSION, enclave).body)
    assert quote.backend == "simulated" and quote.simulated and quote.debug
    assert quote.nonce == nonce and quote.session_id == SESSION
    assert quote.enclave_public_key == enclave
    assert quote.measurement == dealer.measurement
    assert quote.issued_at == NOW and quote.expires_at > NOW
    assert Quote.from_bytes(quote.to_bytes()) == quote


def test_default_platform_key_is_per_process() -> None:
    a, b = SimulatedBackend(), SimulatedBackend()
    assert a.platform_public_key == b.platform_public_key
    assert len(a.platform_public_key) == 32


def test_seal_roundtrip_and_binding(dealer: Dealer, tmp_path: Path) -> None:
    secret = b"dealer state " + new_seed()
    blob = dealer.backend.seal(secret, b"state")
    assert secret not in blob
    assert dealer.backend.unseal(blob, b"state") == secret
    with pytest.raises(SealingError):
        dealer.backend.unseal(blob, b"other label")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(SealingError):
        dealer.backend.unseal(bytes(tampered), b"state")
    with pytest.raises(SealingError):
        dealer.backend.unseal(b"short", b"state")
    # another platform key cannot unseal
    with pytest.raises(SealingError):
        Dealer().backend.unseal(blob, b"state")
    # the same platform key running modified code cannot unseal
    copy_dealer_sources(tmp_path)
    rng = tmp_path / "mpc" / "rng.py"
    rng.write_bytes(rng.read_bytes() + b"\n")
    key = Ed25519PrivateKey.generate()
    honest = Dealer(platform_key=key)
    modified = Dealer(platform_key=key, root=tmp_path)
    sealed = honest.backend.seal(secret)
    assert Dealer(platform_key=key).backend.unseal(sealed) == secret
    with pytest.raises(SealingError):
        modified.backend.unseal(sealed)


# ---- hygiene ----------------------------------------------------------------------------------


def test_tee_sources_use_no_insecure_randomness_and_no_pickle() -> None:
    for path in (default_root() / "mpc" / "tee").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.Name):
                names = [node.id]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in {"random", "pickle", "cloudpickle"}, (path, name)
