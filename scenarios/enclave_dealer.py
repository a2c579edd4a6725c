"""The joint-statistics job with the dealer inside an (attested) enclave.

Each hospital party, before it accepts its PRG seed, asks the dealer for a quote over a fresh
nonce, checks it against its own policy (signature by the platform key, the dealer measurement
computed from the party's own source checkout, minimum version, flags, nonce, session) and only
then receives its seed, encrypted to the attested enclave key. The run then proceeds as in
joint_statistics.py.

Only the simulated backend exists (docs/tee.md): its quotes are labelled SIMULATED and DEBUG,
which the parties refuse unless you pass --allow-simulated-enclave. Without it this scenario
stops at start-up with the refusal, which is the point.

Run:  mpc run scenarios/enclave_dealer.py --allow-simulated-enclave
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mpc.scenario import add_session_options, load_script, one_line_errors, session_kwargs
from mpc.session import Session
from mpc.tee import dealer_config, measurement_hex


@one_line_errors
def run(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="joint statistics with an enclave dealer")
    add_session_options(parser)
    parser.add_argument(
        "--allow-simulated-enclave",
        action="store_true",
        help="accept SIMULATED/DEBUG quotes (the only backend that exists today)",
    )
    args = parser.parse_args(argv)
    js = load_script(Path(__file__).resolve().parent / "joint_statistics.py")
    names = js.HOSPITALS[: args.parties]
    paths = js.make_data(names)
    private = {n: {"csv": str(p)} for n, p in paths.items()}
    kwargs = session_kwargs(args)
    kwargs.update(dealer="enclave", runtime="ray")
    session = Session(
        names, private=private, allow_simulated_enclave=args.allow_simulated_enclave, **kwargs
    )
    expected = measurement_hex(
        dealer_config(session.config.protocol, len(names), session.config.threshold)
    )
    print(f"expected dealer measurement (from this checkout): {expected}")
    started = time.perf_counter()
    try:  # a refused attestation ends here: one line on stderr (run with --debug for more)
        session.start()
        print(f"attested and connected in {time.perf_counter() - started:.1f} s")
        for line in session.attestations:
            print(f"  {line}")
        result = session.run(js.joint_statistics)
    finally:
        session.close()
    expected_stats = js.plaintext(paths)
    secure = result.outputs[names[0]]
    worst = max(abs(secure[k] - v) / max(1.0, abs(v)) for k, v in expected_stats.items())
    for key, value in expected_stats.items():
        print(f"{key:<30} {secure[key]:>16.6f} {value:>16.6f}")
    print("OK" if worst < 1e-9 else "MISMATCH")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(run())
