"""Importing seedlock is cheap: it imports no framework until the user does."""

from __future__ import annotations

from conftest import run_python


def test_import_seedlock_imports_no_framework():
    run_python(
        """
        import seedlock, sys
        loaded = {'torch', 'numpy', 'jax', 'tensorflow', 'cupy', 'lightning',
                  'transformers', 'accelerate'} & set(sys.modules)
        assert not loaded, loaded
        """
    )


def test_seed_everything_imports_no_framework():
    run_python(
        """
        import seedlock, sys
        seedlock.seed_everything(0, deterministic=True)
        loaded = {'torch', 'numpy', 'jax', 'tensorflow', 'cupy', 'lightning',
                  'transformers', 'accelerate'} & set(sys.modules)
        assert not loaded, loaded
        """
    )


def test_public_names_resolve_lazily():
    import seedlock

    for name in seedlock.__all__:
        assert getattr(seedlock, name) is not None
    assert callable(seedlock.derive)
    assert "seed_everything" in dir(seedlock)


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    import seedlock

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = seedlock.nope


def test_all_lists_exactly_the_lazy_exports():
    import seedlock

    assert set(seedlock.__all__) == {"__version__", *seedlock._EXPORTS}


def test_comparing_traces_does_not_import_torch():
    # seedlock diff of two traces and seedlock check's parent only read SQLite files.
    proc = run_python(
        """
        import sys
        import seedlock.audit as audit
        assert callable(audit.compare)
        print("torch" in sys.modules)
        """
    )
    assert proc.stdout.split() == ["False"]


def test_audit_all_lists_exactly_its_lazy_exports():
    from seedlock import audit

    assert set(audit.__all__) == set(audit._EXPORTS)
    for name in audit.__all__:
        assert getattr(audit, name) is not None


def test_subpackages_are_attributes_of_seedlock_and_load_frameworks_only_when_used():
    proc = run_python(
        """
        import sys
        import seedlock
        frameworks = lambda: sorted({'torch', 'numpy'} & set(sys.modules))
        print(seedlock.distributed.rank(), seedlock.distributed.world_size(), frameworks())
        print(callable(seedlock.audit.compare), frameworks())
        assert callable(seedlock.data.loader) and callable(seedlock.audit.check)
        assert callable(seedlock.audit.check_replicas)
        print(frameworks())
        """
    )
    assert proc.stdout.splitlines() == ["0 1 []", "True []", "['numpy', 'torch']"]


def test_a_module_named_like_a_public_function_does_not_shadow_it():
    import seedlock.data

    assert callable(seedlock.data.loader)  # the function, not a module
    assert callable(seedlock.audit.check)


def test_a_name_that_moved_says_where_it_went():
    import pytest

    import seedlock.distributed

    with pytest.raises(AttributeError, match=r"is now seedlock\.audit\.check_replicas"):
        _ = seedlock.distributed.check_replicas
