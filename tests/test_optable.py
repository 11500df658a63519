"""Specification of seedlock's known-nondeterministic-op table and of :func:`explain`."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from typing import Any

import pytest

from seedlock.optable import Explanation, OpInfo, explain, known_ops

REQUIRED_FIELDS = {"name", "aliases", "devices", "when", "under_deterministic_algorithms", "fix"}
COVERAGE = {"deterministic_kernel", "raises", "not_covered"}
# Settings that touch every matmul / convolution: they are listed under those op names on purpose.
SETTINGS_ENTRIES = {"CUBLAS_WORKSPACE_CONFIG", "torch.backends.cuda.matmul.allow_tf32"}


def raw_table() -> dict[str, Any]:
    text = resources.files("seedlock").joinpath("nondeterministic_ops.json").read_text("utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def names(result: Explanation) -> list[str]:
    return [entry.name for entry in result.entries]


# --- what explain() answers ----------------------------------------------------------------------


def test_interpolate_backward_on_cuda_is_known_and_raises_under_the_flag() -> None:
    result = explain("torch.nn.functional.interpolate", device="cuda")

    assert result.known is True
    assert result.nondeterministic is True
    assert names(result) == ["torch.nn.functional.interpolate"]
    assert result.entries[0].devices == ("cuda",)
    assert result.entries[0].under_deterministic_algorithms == "raises"
    assert "bilinear" in result.entries[0].when


def test_aten_backward_op_as_the_dispatcher_prints_it_resolves_to_interpolate() -> None:
    torch = pytest.importorskip("torch")
    overload = torch.ops.aten.upsample_bilinear2d_backward.default

    for spelling in (overload.name(), str(overload), "torch.ops.aten.upsample_bilinear2d_backward"):
        assert names(explain(spelling)) == ["torch.nn.functional.interpolate"], spelling


def test_every_spelling_of_index_add_resolves_to_the_same_entry() -> None:
    spellings = [
        "aten::index_add",
        "aten.index_add.default",
        "index_add_",
        "torch.index_add",
        "torch.Tensor.index_add_",
        "Tensor.index_add",
        "INDEX_ADD",
    ]

    results = {spelling: explain(spelling).entries for spelling in spellings}

    assert [entry.name for entry in results["torch.index_add"]] == ["torch.index_add"]
    assert all(found == results["torch.index_add"] for found in results.values())


def test_module_class_names_resolve_like_their_functional_form() -> None:
    assert names(explain("torch.nn.AdaptiveAvgPool2d")) == [
        "torch.nn.functional.adaptive_avg_pool2d"
    ]
    assert names(explain("nn.ReflectionPad2d")) == ["torch.nn.functional.pad"]


def test_overload_suffix_is_ignored_for_aten_names() -> None:
    assert names(explain("aten::median.dim")) == ["torch.median"]
    assert names(explain("aten.scatter_reduce.two")) == [
        "torch.Tensor.scatter_reduce_",
        "torch.Tensor.scatter_reduce_",
    ]


def test_trailing_underscore_is_dropped_when_only_the_out_of_place_name_is_listed() -> None:
    assert names(explain("histc_")) == ["torch.histc"]
    assert names(explain("Tensor.gather_")) == ["torch.gather"]


def test_pad_matches_both_its_replicate_and_reflect_entries() -> None:
    result = explain("F.pad", device="cuda")

    assert [entry.under_deterministic_algorithms for entry in result.entries] == [
        "deterministic_kernel",
        "raises",
    ]
    assert "replicate" in result.entries[0].when
    assert "reflect" in result.entries[1].when


def test_matmul_on_cuda_matches_the_cublas_workspace_and_tf32_entries() -> None:
    result = explain("aten::mm", device="cuda")

    assert names(result) == ["CUBLAS_WORKSPACE_CONFIG", "torch.backends.cuda.matmul.allow_tf32"]
    assert [entry.under_deterministic_algorithms for entry in result.entries] == [
        "raises",
        "not_covered",
    ]


def test_per_pixel_cross_entropy_is_reported_through_nll_loss() -> None:
    result = explain("CrossEntropyLoss", device="cuda")

    assert names(result) == ["torch.nn.functional.nll_loss"]
    assert result.entries[0].under_deterministic_algorithms == "raises"


def test_cpu_sum_depends_on_the_thread_count_and_the_flag_does_not_fix_it() -> None:
    result = explain("torch.sum", device="cpu")

    assert names(result) == ["torch.sum"]
    assert result.entries[0].under_deterministic_algorithms == "not_covered"
    assert "set_num_threads" in result.entries[0].fix


def test_compiled_random_ops_point_to_fallback_random() -> None:
    result = explain("torch.compile")

    assert result.entries[0].under_deterministic_algorithms == "not_covered"
    assert "torch._inductor.config.fallback_random = True" in result.entries[0].fix


# --- device filtering ----------------------------------------------------------------------------


def test_cpu_filter_excludes_cuda_only_entries_but_the_op_stays_known() -> None:
    result = explain("interpolate", device="cpu")

    assert result.known is True
    assert result.nondeterministic is False
    assert result.entries == ()
    assert result.device == "cpu"


def test_device_index_is_ignored() -> None:
    assert explain("index_add", device="cuda:1").entries == explain("index_add", "cuda").entries
    assert explain("index_add", device="CUDA:0").device == "cuda"
    assert names(explain("index_add", device="cuda:0")) == ["torch.index_add"]


def test_without_a_device_every_matching_entry_is_returned() -> None:
    everywhere = explain("put_")
    on_cuda = explain("put_", device="cuda")

    assert [entry.devices for entry in everywhere.entries] == [("cpu",), ("cpu", "cuda")]
    assert [entry.under_deterministic_algorithms for entry in on_cuda.entries] == ["raises"]


def test_a_device_the_table_does_not_record_matches_nothing() -> None:
    result = explain("index_add", device="mps")

    assert (result.known, result.nondeterministic, result.entries) == (True, False, ())
    assert "only records cpu and cuda" in str(result)


# --- unknown ops and bad input -------------------------------------------------------------------


def test_unknown_op_is_not_known_and_says_that_proves_nothing() -> None:
    result = explain("torch.add", device="cuda")

    assert (result.known, result.nondeterministic, result.entries) == (False, False, ())
    text = str(result)
    assert "not in seedlock's table of known nondeterministic ops for torch 2.13" in text
    assert "does not prove it deterministic" in text


@pytest.mark.parametrize("op", ["", "   "])
def test_empty_op_name_is_a_value_error(op: str) -> None:
    with pytest.raises(ValueError, match="op must name a torch operation"):
        explain(op)


def test_non_str_op_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="op must be a str naming a torch operation, got int 3"):
        explain(3)  # type: ignore[arg-type]


def test_non_str_device_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="device must be a str such as 'cpu' or 'cuda:0'"):
        explain("index_add", device=0)  # type: ignore[arg-type]


def test_empty_device_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="device must name a device"):
        explain("index_add", device="")


# --- rendering -----------------------------------------------------------------------------------


def test_explanation_str_shows_condition_flag_effect_and_fix() -> None:
    text = str(explain("aten::upsample_bilinear2d_backward", device="cuda"))

    assert text.startswith("'aten::upsample_bilinear2d_backward' on cuda can be nondeterministic")
    assert "torch.nn.functional.interpolate (cuda)" in text
    assert "raises RuntimeError" in text
    assert "mode='nearest'" in text


def test_opinfo_str_is_one_labelled_line_per_field() -> None:
    entry = explain("torch.histc").entries[0]

    assert str(entry).splitlines()[:2] == ["torch.histc (cuda)", "  when: on CUDA"]


def test_to_dict_is_plain_json_data() -> None:
    result = explain("aten::index_add", device="cuda:0").to_dict()

    assert json.loads(json.dumps(result)) == result
    assert {key: result[key] for key in ("query", "device", "known", "nondeterministic")} == {
        "query": "aten::index_add",
        "device": "cuda",
        "known": True,
        "nondeterministic": True,
    }
    assert [entry["name"] for entry in result["entries"]] == ["torch.index_add"]
    assert result["entries"][0]["aliases"] == [
        "index_add",
        "index_add_",
        "aten::index_add",
        "aten::index_add_",
    ]


# --- the data file -------------------------------------------------------------------------------


def test_table_records_its_format_version_and_the_torch_it_was_checked_against() -> None:
    table = raw_table()

    assert table["version"] == 1
    assert table["torch_version"] == "2.13.0"
    assert "2.13.0" in table["source"]


def test_every_entry_has_exactly_the_required_fields_with_allowed_values() -> None:
    for entry in raw_table()["ops"]:
        assert set(entry) == REQUIRED_FIELDS, entry
        assert isinstance(entry["name"], str) and entry["name"]
        assert entry["under_deterministic_algorithms"] in COVERAGE, entry["name"]
        assert entry["devices"], entry["name"]
        assert len(set(entry["devices"])) == len(entry["devices"]), entry["name"]
        assert set(entry["devices"]) <= {"cpu", "cuda"}, entry["name"]
        assert all(isinstance(alias, str) and alias for alias in entry["aliases"]), entry["name"]
        assert isinstance(entry["when"], str) and entry["when"], entry["name"]
        assert isinstance(entry["fix"], str) and entry["fix"], entry["name"]


def test_no_alias_is_repeated_within_an_entry() -> None:
    for entry in raw_table()["ops"]:
        lowered = [alias.lower() for alias in entry["aliases"]]
        assert len(lowered) == len(set(lowered)), entry["name"]


def test_entries_of_the_same_op_differ_in_their_condition() -> None:
    pairs = [(entry["name"], entry["when"]) for entry in raw_table()["ops"]]

    assert len(pairs) == len(set(pairs))


def test_no_alias_points_at_two_different_ops_except_the_settings_entries() -> None:
    # Variants of one op (put_ with and without accumulate) share a name and their aliases; the
    # cuBLAS and TF32 entries are listed under every matmul and convolution name on purpose.
    # Anything else sharing an alias is a copy-paste mistake.
    for entry in raw_table()["ops"]:
        for spelling in [entry["name"], *entry["aliases"]]:
            ops = {found.name for found in explain(spelling).entries} - SETTINGS_ENTRIES
            assert len(ops) <= 1, (spelling, sorted(ops))


def test_every_name_and_alias_finds_its_own_entry() -> None:
    for entry in known_ops():
        for spelling in (entry.name, *entry.aliases):
            assert entry in explain(spelling).entries, spelling


def test_every_aten_alias_exists_in_the_installed_torch() -> None:
    torch = pytest.importorskip("torch")
    aten_aliases = sorted(
        alias
        for entry in raw_table()["ops"]
        for alias in entry["aliases"]
        if alias.startswith("aten::")
    )

    missing = [alias for alias in aten_aliases if not hasattr(torch.ops.aten, alias[6:])]

    assert aten_aliases
    assert missing == []


def test_known_ops_mirrors_the_file_in_order() -> None:
    ops = known_ops()

    assert [op.name for op in ops] == [entry["name"] for entry in raw_table()["ops"]]
    assert all(isinstance(op, OpInfo) and isinstance(op.aliases, tuple) for op in ops)
    assert known_ops() is ops


def test_importing_and_using_the_table_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from seedlock.optable import explain\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        "explain('aten::index_add', device='cuda')\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cudnn_attention_is_known_with_the_warn_only_gap() -> None:
    for name in ("aten::_scaled_dot_product_cudnn_attention_backward",
                 "aten._scaled_dot_product_cudnn_attention.default"):  # fmt: skip
        (entry,) = explain(name).entries
        assert entry.name == "torch.nn.functional.scaled_dot_product_attention (cuDNN backend)"
        assert "warn_only=True it can still be picked" in entry.when
        assert "enable_cudnn_sdp(False)" in entry.fix


def test_index_reduce_on_cuda_raises_under_the_flag() -> None:
    (entry,) = explain("aten::index_reduce_").entries
    assert entry.devices == ("cuda",)
    assert entry.under_deterministic_algorithms == "raises"
    assert explain("index_reduce", device="cpu").entries == ()
