"""DTensor parameters (FSDP2, tensor parallel) in fingerprints, summaries, traces, ``check`` and
``check_replicas``: a real DTensor on a one-rank gloo process group on the CPU, in a child
process (the process group and the device mesh would otherwise stay in the test process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch.distributed.tensor")

SCRIPT = textwrap.dedent(
    """
    import json, sqlite3, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_module, distribute_tensor

    import seedlock
    from seedlock import audit
    from seedlock.audit import fingerprints

    folder = Path(sys.argv[1])
    dist.init_process_group(
        "gloo", rank=0, world_size=1, store=dist.FileStore(str(folder / "store"), 1)
    )
    mesh = init_device_mesh("cpu", (1,))


    def sharded(name, module, mesh):
        for key, p in list(module.named_parameters(recurse=False)):
            place = [Shard(0)] if key == "weight" else [Replicate()]
            module.register_parameter(key, torch.nn.Parameter(distribute_tensor(p, mesh, place)))


    def replicated_inputs(module, inputs, mesh):
        return tuple(distribute_tensor(x, mesh, [Replicate()]) for x in inputs)


    def make():
        seedlock.seed_everything(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
        distribute_module(model, mesh, sharded, input_fn=replicated_inputs)
        return model, torch.optim.SGD(model.parameters(), lr=0.1)


    def events(path):
        with sqlite3.connect(path) as db:
            return list(db.execute(
                "SELECT event, module, fingerprint, shape, sum FROM events ORDER BY seq"
            ))


    out = {}
    model, opt = make()
    weight = model[0].weight
    local = weight.to_local().detach().clone()
    out["is_dtensor"] = type(weight).__name__
    out["fingerprint"] = fingerprints.fingerprint(weight) == fingerprints.fingerprint(local)
    out["summary"] = list(fingerprints.summary(weight)) == list(fingerprints.summary(local))
    first = fingerprints.fingerprint(local)

    for label, on_device in (("cpu", False), ("device", True)):
        fingerprints._CPU_AS_DEVICE = on_device
        model, opt = make()
        path = folder / f"{label}.trace"
        with audit.trace(model, path, optimizer=opt, summaries=True):
            for _ in range(2):
                loss = model(torch.ones(5, 4)).to_local().pow(2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        rows = events(path)
        params = [r for r in rows if r[0] == "param" and r[1] == "Sequential.0.weight"]
        out[label] = {
            "events": len(rows),
            "kinds": sorted({r[0] for r in rows}),
            "shape": params[0][3],
            "first": params[0][2] == fingerprints.fingerprint(local),
            "sum": params[0][4] == fingerprints.summary(local).sum,
            "last": params[-1][2] == fingerprints.fingerprint(model[0].weight.to_local()),
        }
    fingerprints._CPU_AS_DEVICE = False
    out["device_first_differs"] = first != out["device"]["first"]

    model, opt = make()

    def step():
        loss = model(torch.ones(5, 4)).to_local().pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    report = audit.check(step, model=model, optimizer=opt)
    out["check"] = report.reproducible
    replicas = audit.check_replicas(model)
    out["replicas"] = [replicas.ok, replicas.tensors, list(replicas.skipped)]
    dist.destroy_process_group()
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("dtensor")
    script = folder / "dtensor.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_a_dtensor_is_fingerprinted_and_summarised_by_its_local_shard(result):
    assert result["is_dtensor"] == "DTensor"
    assert result["fingerprint"] is True
    assert result["summary"] is True


@pytest.mark.parametrize("path", ["cpu", "device"])
def test_a_model_of_dtensors_is_traced_with_its_placements_in_the_shape(result, path):
    traced = result[path]
    assert traced["kinds"] == ["batch", "forward", "grad", "grad_input", "param"]
    assert traced["events"] > 20
    assert traced["shape"] == "(3, 4) local of (3, 4) [Shard(dim=0)]"
    assert traced["first"] is True  # the initial weight: its local shard's fingerprint
    assert traced["sum"] is True
    assert traced["last"] is True  # after two steps


def test_check_and_check_replicas_take_a_model_of_dtensors(result):
    assert result["check"] is True
    ok, compared, skipped = result["replicas"]
    assert ok is True
    assert compared == 2  # the two replicated biases
    assert skipped == ["0.weight", "2.weight"]
