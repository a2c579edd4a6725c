"""Placement: three parties on three Ray nodes (ray.cluster_utils.Cluster), pinned by resource.

Runs its own multi-node cluster (so it must not share the session-wide local Ray).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mpc.deploy import DeploymentConfig
from mpc.errors import ConfigurationError
from mpc.parties.keys import PartyKey
from mpc.program import PartyContext
from mpc.session import Session

pytestmark = pytest.mark.ray

NAMES = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for name in NAMES:
        c.add_node(num_cpus=1, resources={f"party:{name}": 1})
    ray.init(address=c.address)
    yield c
    ray.shutdown()
    c.shutdown()


def config_file(tmp_path: Path, keys: bool, resource_of: dict[str, str]) -> Path:
    lines = ['[session]\nprotocol = "additive"\n']
    for name in NAMES:
        lines.append(f'[[party]]\nname = "{name}"\nresource = "{resource_of[name]}"\n')
        if keys:
            key = PartyKey.generate()
            path = tmp_path / f"{name}.key"
            key.save(path)
            lines.append(f'key_file = "{path}"\npublic_key = "{key.public_hex}"\n')
    out = tmp_path / "deploy.toml"
    out.write_text("\n".join(lines))
    return out


def where(ctx: PartyContext) -> tuple[str, float | None]:
    import ray

    x = ctx.input("alice", np.array([3.0]) if ctx.me == "alice" else None)
    y = ctx.input("carol", np.array([-0.5]) if ctx.me == "carol" else None)
    value = ctx.reveal(x * y)
    return ray.get_runtime_context().get_node_id(), float(value[0]) if value is not None else None


def test_each_party_runs_on_its_own_node(cluster: object, tmp_path: Path) -> None:
    path = config_file(tmp_path, keys=True, resource_of={n: f"party:{n}" for n in NAMES})
    config = DeploymentConfig.load(path)
    assert [p.public_key is not None for p in config.parties] == [True] * 3
    with Session(deployment=str(path), timeout=30) as session:
        result = session.run(where)
    nodes = {name: result[name][0] for name in NAMES}
    assert len(set(nodes.values())) == 3, nodes
    assert all(result[name][1] == pytest.approx(-1.5, abs=2.0**-15) for name in NAMES)


def test_missing_resource_is_a_clear_error(cluster: object, tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        keys=False,
        resource_of={"alice": "party:alice", "bob": "party:bob", "carol": "party:nobody"},
    )
    with pytest.raises(ConfigurationError, match="party:nobody"):
        Session(deployment=str(path)).start()


def test_key_file_that_does_not_match_the_pinned_key_is_refused(
    cluster: object, tmp_path: Path
) -> None:
    path = config_file(tmp_path, keys=True, resource_of={n: f"party:{n}" for n in NAMES})
    PartyKey.generate().save(tmp_path / "bob.key")  # bob's key file replaced behind the config
    with pytest.raises(ConfigurationError, match="bob"):
        Session(deployment=str(path)).start()
