"""Exact resume inside the trainers: Lightning (:mod:`seedlock.integrations.lightning`), the
Hugging Face ``Trainer`` (:mod:`seedlock.integrations.transformers`) and accelerate
(:mod:`seedlock.integrations.accelerate`).

Each module imports its framework; importing this package imports none of them. The guide:
``docs/trainers.md``.
"""
