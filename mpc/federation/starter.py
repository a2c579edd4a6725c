"""Starting a run at one's own party (`mpc run PROGRAM --policy alice.toml [program options]`).

Responsibility: hash the program file, turn the program's command-line options into public
arguments (the file's `public_args(argv)`), ask this organisation's party service to run it,
and print what the run revealed to that party (through the file's `report(output, args)`).
Security model: the starter holds a key the party's policy accepts (by default the party's own
key file, so it runs on the party's machine) and sends only a program hash and public
arguments; the party refuses anything its policy does not approve. The starter receives only
the party's revealed output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mpc.errors import ConfigurationError
from mpc.federation.party_service import RUN_TIMEOUT
from mpc.federation.policy import PartyPolicy
from mpc.federation.programs import check_args, load_source, source_hash
from mpc.federation.secure_rpc import SecureClient
from mpc.parties.keys import PartyKey, load_public


def start_run(
    policy_path: str | Path,
    program_path: str | Path,
    argv: Sequence[str] = (),
    *,
    key_file: str | Path | None = None,
    name: str | None = None,
    party_key: str | None = None,
    timeout: float = RUN_TIMEOUT,
) -> tuple[dict[str, Any], str]:
    """Run `program_path` through the party of `policy_path`; return (answer, printed report).

    `key_file`/`name`: a starter key listed in the party's `[starters]` (default: the party's
    own key, which needs `party_key` only when it differs from the key file's public half).
    """
    policy = PartyPolicy.load(policy_path)
    path = Path(program_path)
    if not path.is_file():
        raise ConfigurationError(f"no program file {path}")
    source = path.read_bytes()
    digest = source_hash(source)
    module = load_source(path, source, digest).module
    parse = getattr(module, "public_args", None)
    if callable(parse):
        args = check_args(parse(list(argv)))
    elif argv:
        raise ConfigurationError(
            f"{path.name} takes no options across organisations (it defines no public_args)"
        )
    else:
        args = {}
    own_key = PartyKey.load(policy.key_file if key_file is None else key_file)
    server_key = (
        load_public(party_key) if party_key else PartyKey.load(policy.key_file).public_bytes
    )
    with SecureClient(
        name or policy.name,
        own_key,
        policy.name,
        server_key,
        (policy.host, policy.port),
        timeout=timeout,
        connect_timeout=10.0,
    ) as client:
        # a run may take long, but a party that stops answering is reported after one
        # receive timeout (the party service tells its starter it is still running)
        answer = client.call(
            "start", {"program": digest, "args": args}, stall=policy.settings.timeout
        )
    report = getattr(module, "report", None)
    text = report(answer["output"], args) if callable(report) else repr(answer["output"])
    return answer, str(text)
