"""How TensorFlow starts: oneDNN asked for on x86 unless the user chose, and in force."""

import os
import platform

import pytest

from resnet_builder.runtime import ONEDNN_SWITCH, X86_MACHINES, onednn_in_force, prefer_onednn


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_onednn_is_asked_for_on_x86_when_the_user_said_nothing(machine):
    environ: dict[str, str] = {}
    assert prefer_onednn(environ, machine) is True
    assert environ == {ONEDNN_SWITCH: "1"}


@pytest.mark.parametrize("value, wanted", [("0", False), ("false", False), ("1", True),
                                           ("TRUE", True)])
def test_a_users_own_setting_is_kept(value, wanted):
    environ = {ONEDNN_SWITCH: value}
    assert prefer_onednn(environ, "x86_64") is wanted
    assert environ == {ONEDNN_SWITCH: value}


def test_other_machines_keep_tensorflows_own_choice():
    environ: dict[str, str] = {}
    assert prefer_onednn(environ, "aarch64") is False
    assert environ == {}


@pytest.mark.skipif(platform.machine().lower() not in X86_MACHINES, reason="x86 only")
def test_tensorflow_runs_onednn_after_import_resnet_builder():
    """conftest imports resnet_builder before anything imports TensorFlow, as a user's
    script or the CLI does; TensorFlow alone turns oneDNN on only on AVX512-VNNI/AMX CPUs."""
    wanted = os.environ[ONEDNN_SWITCH].lower() in ("1", "true")
    assert onednn_in_force() is wanted
