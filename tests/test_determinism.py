"""The determinism profile: every switch it flips, and that each one is put back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import seedlock
from conftest import run_python
from seedlock.determinism import active_profiles

B = torch.backends


def put_without_deterministic_kernel() -> None:
    torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))


def get_env() -> str | None:
    return os.environ.get("CUBLAS_WORKSPACE_CONFIG")


# (label, read the switch, set it to the "before" value, expected inside the profile)
SWITCHES = [
    ("deterministic algorithms", torch.are_deterministic_algorithms_enabled,
     lambda: torch.use_deterministic_algorithms(False), True),
    ("cudnn.deterministic", lambda: B.cudnn.deterministic,
     lambda: setattr(B.cudnn, "deterministic", False), True),
    ("cudnn.benchmark", lambda: B.cudnn.benchmark,
     lambda: setattr(B.cudnn, "benchmark", True), False),
    ("cuda.matmul.allow_tf32", lambda: B.cuda.matmul.allow_tf32,
     lambda: setattr(B.cuda.matmul, "allow_tf32", True), False),
    ("cudnn.allow_tf32", lambda: B.cudnn.allow_tf32,
     lambda: setattr(B.cudnn, "allow_tf32", True), False),
    ("mkldnn.deterministic", lambda: B.mkldnn.deterministic,
     lambda: setattr(B.mkldnn, "deterministic", False), True),
    ("CUBLAS_WORKSPACE_CONFIG", get_env,
     lambda: os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None), ":4096:8"),
]  # fmt: skip


@pytest.fixture(autouse=True)
def _torch_defaults():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        B.cudnn.deterministic,
        B.cudnn.benchmark,
        B.cuda.matmul.allow_tf32,
        B.cudnn.allow_tf32,
        B.mkldnn.deterministic,
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    B.cudnn.deterministic, B.cudnn.benchmark = saved[2], saved[3]
    B.cuda.matmul.allow_tf32, B.cudnn.allow_tf32 = saved[4], saved[5]
    B.mkldnn.deterministic = saved[6]


@pytest.mark.parametrize(
    ("label", "read", "prepare", "inside"), SWITCHES, ids=[s[0] for s in SWITCHES]
)
def test_context_sets_each_switch_and_restores_it(label, read, prepare, inside):
    prepare()
    before = read()
    assert before != inside
    with seedlock.deterministic():
        assert read() == inside
    assert read() == before


@pytest.mark.parametrize(
    ("label", "read", "prepare", "inside"), SWITCHES, ids=[s[0] for s in SWITCHES]
)
def test_context_restores_each_switch_when_the_body_raises(label, read, prepare, inside):
    prepare()
    before = read()
    with pytest.raises(KeyError), seedlock.deterministic():
        raise KeyError("boom")
    assert read() == before


def test_existing_cublas_workspace_config_is_left_alone():
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    with seedlock.deterministic() as profile:
        assert get_env() == ":16:8"
    assert not any("CUBLAS" in c.name for c in profile.changes)
    assert get_env() == ":16:8"


def test_op_without_deterministic_kernel_raises_inside_the_profile():
    with seedlock.deterministic(), pytest.raises(RuntimeError, match="deterministic"):
        put_without_deterministic_kernel()
    put_without_deterministic_kernel()  # allowed again after the block


def test_warn_only_turns_the_error_into_a_warning_and_is_restored():
    with seedlock.deterministic(warn_only=True):
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            put_without_deterministic_kernel()
        assert any("deterministic" in str(w.message) for w in caught)
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


def test_tf32_is_allowed_only_when_asked():
    B.cuda.matmul.allow_tf32 = False
    with seedlock.deterministic(tf32=True):
        assert B.cuda.matmul.allow_tf32 is True
    assert B.cuda.matmul.allow_tf32 is False


def test_inductor_fallback_random_is_set_when_asked_and_restored():
    import torch._inductor.config as inductor_config

    before = inductor_config.fallback_random
    with seedlock.deterministic(fallback_random=True):
        assert inductor_config.fallback_random is True
    assert inductor_config.fallback_random == before


def test_profiles_nest_and_restore_in_order():
    B.cudnn.benchmark = True
    with seedlock.deterministic() as outer:
        with seedlock.deterministic(warn_only=True):
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert outer.active
    assert not torch.are_deterministic_algorithms_enabled()
    assert B.cudnn.benchmark is True


def test_deterministic_false_inside_a_profile_switches_off_then_back_on():
    with seedlock.deterministic():
        with seedlock.deterministic(False):
            assert not torch.are_deterministic_algorithms_enabled()
            assert get_env() is None
            put_without_deterministic_kernel()
        assert torch.are_deterministic_algorithms_enabled()
        assert get_env() == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_false_as_a_call_undoes_the_active_profiles():
    B.cudnn.benchmark = True
    seedlock.deterministic()
    seedlock.deterministic()
    assert len(active_profiles()) == 2
    seedlock.deterministic(False)
    assert active_profiles() == []
    assert not torch.are_deterministic_algorithms_enabled()
    assert B.cudnn.benchmark is True
    assert get_env() is None


def test_deterministic_false_switches_off_determinism_set_by_hand():
    torch.use_deterministic_algorithms(True)
    with seedlock.deterministic(False):
        assert not torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled()


def test_restore_is_idempotent():
    profile = seedlock.deterministic()
    profile.restore()
    profile.restore()
    assert not torch.are_deterministic_algorithms_enabled()
    assert "restored" in repr(profile)


def test_profile_lists_its_changes():
    B.cudnn.benchmark = True
    with seedlock.deterministic() as profile:
        text = str(profile)
    assert "use_deterministic_algorithms" in text
    assert "backends.cudnn.benchmark True -> False" in text


def test_invalid_cublas_workspace_config_is_an_error():
    with pytest.raises(ValueError, match="':4096:8' or ':16:8'"):
        seedlock.deterministic(cublas_workspace_config=":1:1")


def test_profile_switched_on_before_torch_is_imported_applies_on_import():
    out = run_python(
        """
        import os, seedlock
        profile = seedlock.deterministic()
        print(os.environ['CUBLAS_WORKSPACE_CONFIG'])
        import torch
        print(torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
        profile.restore()
        print(torch.are_deterministic_algorithms_enabled(), 'CUBLAS_WORKSPACE_CONFIG' in os.environ)
        """
    ).stdout.split()
    assert out == [":4096:8", "True", "True", "False", "False"]


def test_profile_restored_before_torch_is_imported_leaves_torch_untouched():
    out = run_python(
        """
        import seedlock
        with seedlock.deterministic():
            pass
        import torch
        print(torch.are_deterministic_algorithms_enabled())
        """
    ).stdout.split()
    assert out == ["False"]


def test_jax_flag_is_set_before_jax_starts_and_restored():
    out = run_python(
        """
        import os, seedlock
        os.environ['XLA_FLAGS'] = '--xla_cpu_use_thunk_runtime=true'
        with seedlock.deterministic():
            print(os.environ['XLA_FLAGS'])
        print(os.environ['XLA_FLAGS'])
        """
    ).stdout.splitlines()
    assert out == [
        "--xla_cpu_use_thunk_runtime=true --xla_gpu_deterministic_ops=true",
        "--xla_cpu_use_thunk_runtime=true",
    ]


def test_jax_already_initialised_gets_a_warning_not_a_silent_no_op():
    proc = run_python(
        """
        import warnings, jax.numpy as jnp, seedlock
        jnp.ones(1).block_until_ready()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            seedlock.deterministic()
        print([str(w.message) for w in caught])
        """
    )
    assert "JAX is already initialised" in proc.stdout


def test_explain_is_reachable_from_the_determinism_module():
    from seedlock import determinism

    assert determinism.explain("index_add_").known


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_missing_cublas_config_after_cuda_init_warns():
    torch.ones(1, device="cuda")
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    with pytest.warns(RuntimeWarning, match="CUBLAS_WORKSPACE_CONFIG is read when cuBLAS starts"):
        seedlock.deterministic().restore()


def test_restoring_an_earlier_profile_leaves_the_later_one_in_effect():
    B.cudnn.benchmark = True
    first = seedlock.deterministic()
    second = seedlock.deterministic()
    first.restore()
    assert torch.are_deterministic_algorithms_enabled()
    assert get_env() == ":4096:8"
    assert active_profiles() == [second]
    second.restore()
    assert not torch.are_deterministic_algorithms_enabled()
    assert get_env() is None
    assert B.cudnn.benchmark is True


def test_restoring_an_earlier_profile_keeps_the_later_ones_options():
    first = seedlock.deterministic(warn_only=True)
    second = seedlock.deterministic()
    first.restore()
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    second.restore()
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_profile_restored_while_switched_off_stays_off():
    on = seedlock.deterministic()
    off = seedlock.deterministic(False)
    on.restore()
    assert not torch.are_deterministic_algorithms_enabled()
    off.restore()  # must not switch the restored profile back on
    assert not on.active and not on.suspended
    assert not torch.are_deterministic_algorithms_enabled()
    assert get_env() is None
    assert active_profiles() == []


def test_the_profile_leaves_inductor_unloaded_and_sets_it_when_it_loads():
    # torch.use_deterministic_algorithms imports torch._inductor.config (seconds of start-up in
    # every process); the profile sets the same flags without it, and Inductor's on its import.
    code = textwrap.dedent("""
        import sys, torch, seedlock
        with seedlock.deterministic(warn_only=True):
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            assert "torch._inductor.config" not in sys.modules
            import torch._inductor.config as config
            assert config.deterministic is True
        assert not torch.are_deterministic_algorithms_enabled()
        assert config.deterministic is False
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
