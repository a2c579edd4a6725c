"""The `mpc` command line: run scenarios, serve parties and the dealer, benchmark, keys.

Responsibility: argument parsing and dispatch only; the work happens in the library.
Security model: `mpc keygen` writes the private key with 0600 permissions and prints only the
public key; scenarios are Python files the user chose to run (they execute with the user's rights).
`mpc party serve` / `mpc dealer serve` enforce the policy file they are given (mpc.federation);
`mpc run FILE --policy P` sends that party only the file's hash and public arguments.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_run(args: argparse.Namespace, rest: list[str]) -> int:
    scenario_args = [*args.args, *rest]
    if "--policy" in scenario_args:
        return _start_federated(args.scenario, scenario_args)
    path = Path(args.scenario)
    if not path.exists():
        builtin = Path(__file__).resolve().parent.parent / "scenarios" / path.name
        if not builtin.exists():
            print(f"mpc run: no scenario file {path}", file=sys.stderr)
            return 2
        path = builtin
    module = runpy.run_path(str(path), run_name="mpc_scenario")
    entry = module.get("run")
    if not callable(entry):
        print(f"mpc run: {path} defines no run(argv) function", file=sys.stderr)
        return 2
    code = entry(scenario_args)
    return int(code or 0)


def _start_federated(program: str, argv: list[str]) -> int:
    """`mpc run FILE --policy P [--key K --name N --party-key HEX] [program options]`."""
    from mpc.errors import MpcError
    from mpc.federation.starter import start_run
    from mpc.stats import PartyStats

    parser = argparse.ArgumentParser(prog=f"mpc run {program}", add_help=False)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--key", default=None, help="a starter key the party's policy lists")
    parser.add_argument("--name", default=None, help="the starter name for --key")
    parser.add_argument("--party-key", default=None, help="the party's public key (with --key)")
    debug = "--debug" in argv
    known, program_argv = parser.parse_known_args([a for a in argv if a != "--debug"])
    try:
        _answer, text = start_run(
            known.policy,
            program,
            program_argv,
            key_file=known.key,
            name=known.name,
            party_key=known.party_key,
        )
    except (MpcError, OSError, ValueError) as exc:  # one line: what went wrong, where
        if debug:
            raise
        print(f"mpc run: {exc}", file=sys.stderr)
        return 1
    print(text)
    cost = PartyStats.from_dict(_answer["stats"]).total
    print(
        f"cost at this party: {cost.rounds} rounds, {cost.bytes_sent:,} bytes sent by the "
        "program (agreeing on the run and ending it add 3 rounds)"
    )
    return 0


def _cmd_party_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from mpc.federation.serve import serve_party

    return serve_party(args.policy, use_ray=not args.no_ray)


def _cmd_dealer_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from mpc.federation.serve import serve_dealer

    return serve_dealer(args.policy)


def _cmd_deploy_example(args: argparse.Namespace, rest: list[str]) -> int:
    from mpc.federation.example import write_example

    names = [n.strip() for n in args.parties.split(",") if n.strip()]
    folder = Path(args.folder)
    if folder.exists() and any(folder.iterdir()):
        print(f"mpc deploy example: {folder} is not empty; choose a new folder", file=sys.stderr)
        return 2
    paths = write_example(folder, names, base_port=args.base_port)
    mpc = "mpc"
    print(f"wrote an example deployment of {', '.join(names)} and a dealer to {folder}")
    print("start each in its own terminal (each is one organisation's machine):")
    print(f"  {mpc} dealer serve --policy {paths['dealer']}")
    for name in names:
        print(f"  {mpc} party serve --policy {paths[name]}")
    first = paths[names[0]]
    print("then start a run at any party, e.g.:")
    for program in ("joint_statistics.py", "hospitals_logreg.py --epochs 5"):
        print(
            f"  {mpc} run {first.parent / 'programs' / program.split()[0]} --policy {first}"
            + (" " + " ".join(program.split()[1:]) if " " in program else "")
        )
    return 0


def _cmd_program_hash(args: argparse.Namespace, rest: list[str]) -> int:
    from mpc.federation.programs import program_hash

    for path in args.files:
        print(f"{program_hash(path)}  {path}")
    return 0


def _cmd_protocols(args: argparse.Namespace, rest: list[str]) -> int:
    """List every protocol that loads; name each plug-in that does not on stderr (one line each,
    the others are still listed)."""
    import warnings

    from mpc.protocols.registry import PluginWarning, available_protocols, broken_plugins

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # said below, once, in our own words
        protocols = available_protocols()
    for name, cls in protocols.items():
        needs = ", ".join(sorted(n.value for n in cls.needs)) or "nothing"
        if cls.optional_needs:  # e.g. comparison masks: only comparisons take them
            optional = ", ".join(sorted(n.value for n in cls.optional_needs))
            needs += f"; only for the operations that use them: {optional}"
        print(
            f"{name}\n    {cls.summary}\n    security: {cls.security.describe()}\n"
            f"    needs from a dealer: {needs}"
        )
    for problem in broken_plugins().values():
        print(f"mpc protocols: warning: {problem}", file=sys.stderr)
    return 0


def _cmd_keygen(args: argparse.Namespace, rest: list[str]) -> int:
    from mpc.parties.keys import PartyKey

    out = Path(args.out or f"{args.party}.key")
    if out.exists() and not args.force:
        print(f"mpc keygen: {out} exists; pass --force to replace it", file=sys.stderr)
        return 2
    if not out.parent.is_dir():
        print(f"mpc keygen: folder {out.parent} does not exist; create it first", file=sys.stderr)
        return 2
    key = PartyKey.generate()
    key.save(out)
    print(f"private key: {out} (keep it on {args.party}'s machine)")
    print(
        f"public key:  {key.public_hex}  (send it to the other organisations for their "
        "policies; also in the .pub file)"
    )
    return 0


def _cmd_bench(args: argparse.Namespace, rest: list[str]) -> int:
    from mpc import bench

    sizes = tuple(int(float(s)) for s in args.sizes.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.what in ("protocols", "all"):
        rows = bench.bench_inprocess(sizes=sizes)
        bench.write_results(rows, out / "bench_protocols.json")
        bench.plot_throughput(rows, out / "bench_protocols.png")
    if args.what in ("runtime", "all"):
        result = bench.bench_ray(sizes=sizes)
        bench.write_results(result, out / "bench_runtime.json")
        bench.plot_throughput(result, out / "bench_runtime.png")
    print(f"results written to {out}/")
    return 0


def _cmd_tee_measure(args: argparse.Namespace, rest: list[str]) -> int:
    from mpc.protocols.registry import get_protocol
    from mpc.tee import dealer_config, measurement_report

    t = get_protocol(args.protocol).check_parties(args.parties, args.threshold)
    config = dealer_config(args.protocol, args.parties, t)
    print(measurement_report(config, root=args.root, list_files=args.files))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpc", description="secure multi-party computation")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario script (options after it go to the scenario)")
    run.add_argument(
        "scenario", help="path of a scenario script, e.g. scenarios/joint_statistics.py"
    )
    run.add_argument("args", nargs=argparse.REMAINDER, help="options for the scenario (--help)")
    run.set_defaults(func=_cmd_run)
    protocols = sub.add_parser("protocols", help="list protocols and their security models")
    protocols.set_defaults(func=_cmd_protocols)
    keygen = sub.add_parser("keygen", help="generate a party's X25519 key pair")
    keygen.add_argument("party")
    keygen.add_argument("--out", help="private key file (default: <party>.key)")
    keygen.add_argument("--force", action="store_true")
    keygen.set_defaults(func=_cmd_keygen)
    tee = sub.add_parser("tee", help="enclave dealer tools")
    tee_sub = tee.add_subparsers(dest="tee_command", required=True)
    measure = tee_sub.add_parser(
        "measure", help="print the dealer measurement expected from this source checkout"
    )
    measure.add_argument("--protocol", default="additive")
    measure.add_argument("--parties", type=int, default=3)
    measure.add_argument("--threshold", type=int, default=None)
    measure.add_argument("--root", default=None, help="directory that contains mpc/")
    measure.add_argument("--files", action="store_true", help="list each file's hash")
    measure.set_defaults(func=_cmd_tee_measure)
    party = sub.add_parser("party", help="run this organisation's party as a service")
    party_sub = party.add_subparsers(dest="party_command", required=True)
    party_serve = party_sub.add_parser("serve", help="serve runs under a local policy file")
    party_serve.add_argument("--policy", required=True, help="this party's policy (TOML)")
    party_serve.add_argument(
        "--no-ray", action="store_true", help="run in this process instead of a Ray actor"
    )
    party_serve.set_defaults(func=_cmd_party_serve)
    dealer = sub.add_parser("dealer", help="run the trusted dealer as a service")
    dealer_sub = dealer.add_subparsers(dest="dealer_command", required=True)
    dealer_serve = dealer_sub.add_parser("serve", help="deal for the parties of a policy file")
    dealer_serve.add_argument("--policy", required=True, help="the dealer's policy (TOML)")
    dealer_serve.set_defaults(func=_cmd_dealer_serve)
    deploy = sub.add_parser("deploy", help="deployments across organisations")
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True)
    example = deploy_sub.add_parser(
        "example", help="write keys and policies for hospitals and a dealer on this machine"
    )
    example.add_argument("folder", help="a new folder for the keys, policies and data")
    example.add_argument("--parties", default="east,north,south")
    example.add_argument("--base-port", type=int, default=7100)
    example.set_defaults(func=_cmd_deploy_example)
    program = sub.add_parser("program", help="agreed programs")
    program_sub = program.add_subparsers(dest="program_command", required=True)
    program_hash = program_sub.add_parser("hash", help="print the SHA-256 a policy approves")
    program_hash.add_argument("files", nargs="+")
    program_hash.set_defaults(func=_cmd_program_hash)
    bench_p = sub.add_parser("bench", help="benchmark protocols in-process and on Ray actors")
    bench_p.add_argument("what", choices=["protocols", "runtime", "all"], nargs="?", default="all")
    bench_p.add_argument("--sizes", default="1e3,1e5,1e6")
    bench_p.add_argument("--out", default="results")
    bench_p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `mpc` command. A refused or failed command (any MpcError: a bad option value, a
    missing file, an unknown protocol) prints one line `mpc <command>: <message>` and exits 1;
    Ctrl-C exits 130; `--debug` (anywhere) shows the traceback instead."""
    from mpc.errors import MpcError
    from mpc.scenario import DEBUG_OPTION, error_line

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_OPTION in argv
    parser = build_parser()
    args, rest = parser.parse_known_args([a for a in argv if a != DEBUG_OPTION])
    if rest and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if debug and args.command == "run":
        rest = [*rest, DEBUG_OPTION]  # the scenario's own one-line handler reads it
    try:
        code: int = args.func(args, rest)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"mpc {args.command}: interrupted", file=sys.stderr, flush=True)
        return 130
    except (MpcError, FileNotFoundError, NotADirectoryError) as exc:
        if debug:
            raise
        print(f"mpc {args.command}: {error_line(exc)}", file=sys.stderr, flush=True)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
