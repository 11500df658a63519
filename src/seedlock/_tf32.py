"""TF32 in torch: read it without ever raising, and switch it the way the program already does.

torch has two ways to say whether float32 matmuls and convolutions may round to TF32:

* the legacy switches ``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``
  and ``torch.set_float32_matmul_precision`` (``"highest"``, ``"high"``, ``"medium"``);
* the newer ``fp32_precision`` attributes (``"ieee"``, ``"tf32"``, or ``"none"``: inherit), on
  ``torch.backends.cuda.matmul``, ``torch.backends.cudnn.conv`` and ``torch.backends.cudnn.rnn``,
  which torch now recommends.

Once a program has set one of the newer attributes, *reading* a legacy switch raises ("mix of the
legacy and new APIs"), and some mixes make ``torch.get_float32_matmul_precision()`` (which
Inductor calls) raise too. So seedlock reads TF32 through :func:`state` (never raises) and
switches it in the family the process already uses (:func:`target`): the legacy family while
the legacy switches read cleanly — with ``set_float32_matmul_precision``, which keeps the
matmul switches consistent, rather than ``matmul.allow_tf32`` — and the newer one once the
program has used it. :func:`describe` gives the effective setting for manifests and ``doctor``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds: the manifest imports this at every start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["describe", "set_state", "state", "target"]

_NEW = ("cuda.matmul", "cudnn.conv", "cudnn.rnn")


def _attr(torch: Any, path: str) -> Any:
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _legacy(torch: Any) -> tuple[str, bool] | None:
    """(float32 matmul precision, cudnn.allow_tf32) while the legacy switches read cleanly."""
    try:
        matmul = bool(torch.backends.cuda.matmul.allow_tf32)
        cudnn = bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:  # the newer attributes are in use: reading a legacy switch raises
        return None
    try:
        precision = str(torch.get_float32_matmul_precision())
    except RuntimeError:  # allow_tf32 set after set_float32_matmul_precision: torch cannot say
        precision = "high" if matmul else "highest"
    return precision, cudnn


def _newer(torch: Any) -> tuple[str, ...] | None:
    try:
        return tuple(str(_attr(torch, path).fp32_precision) for path in _NEW)
    except AttributeError:  # a torch without them
        return None


def state(torch: Any) -> tuple[Any, ...]:
    """TF32's settings now, in the family in use: ``("legacy", precision, cudnn_allow)`` or
    ``("new", matmul, conv, rnn)``; never raises."""
    legacy = _legacy(torch)
    if legacy is not None or _newer(torch) is None:
        return ("legacy", *(legacy or ("highest", False)))
    return ("new", *(_newer(torch) or ()))


def set_state(torch: Any, value: tuple[Any, ...]) -> None:
    """Put back a :func:`state` (or set a :func:`target`)."""
    if value[0] == "legacy":
        torch.set_float32_matmul_precision(value[1])
        torch.backends.cudnn.allow_tf32 = value[2]
    else:
        for path, precision in zip(_NEW, value[1:], strict=True):
            _attr(torch, path).fp32_precision = precision


def target(torch: Any, allow: bool) -> tuple[Any, ...]:
    """The setting that allows (``allow``) or forbids TF32 everywhere, in the family in use."""
    if state(torch)[0] == "legacy":
        return ("legacy", "high" if allow else "highest", allow)
    return ("new", *(["tf32" if allow else "ieee"] * len(_NEW)))


def describe(torch: Any) -> dict[str, Any]:
    """The effective TF32 settings, for a manifest or ``doctor``; never raises.

    Returns
    -------
    dict
        ``matmul`` and ``cudnn`` (``"tf32"`` or ``"ieee"``), ``float32_matmul_precision`` (or
        ``None`` where torch cannot say in this state) and ``api`` (``"legacy"`` or ``"new"``).
    """
    now = state(torch)
    if now[0] == "legacy":
        matmul = "ieee" if now[1] == "highest" else "tf32"
        return {"api": "legacy", "matmul": matmul, "cudnn": "tf32" if now[2] else "ieee",
                "float32_matmul_precision": now[1]}  # fmt: skip
    try:
        precision: str | None = str(torch.get_float32_matmul_precision())
    except RuntimeError:
        precision = None
    root = str(getattr(torch.backends, "fp32_precision", "none"))

    def effective(value: str) -> str:
        return value if value != "none" else (root if root != "none" else "ieee")

    return {"api": "new", "matmul": effective(now[1]), "cudnn": effective(now[2]),
            "float32_matmul_precision": precision}  # fmt: skip
