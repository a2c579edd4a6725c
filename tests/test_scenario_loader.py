"""Scenario scripts imported by path travel to Ray workers by value (they cannot be imported)."""

from __future__ import annotations

import pickle
import sys

from helpers import SCENARIOS
from ray import cloudpickle

from mpc.scenario import load_script


def test_a_loaded_script_pickles_by_value() -> None:
    # dp_joint_statistics hands joint_statistics.load to its program; a party worker has no
    # such module, so the function must carry its code (this failed on Ray before).
    module = load_script(SCENARIOS / "joint_statistics.py")
    data = cloudpickle.dumps(module.load)
    del sys.modules[module.__name__]  # as in a party worker: the script is not importable
    try:
        restored = pickle.loads(data)
    finally:
        sys.modules[module.__name__] = module
    assert restored.__code__.co_code == module.load.__code__.co_code
