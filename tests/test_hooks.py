"""Post-import hooks: a callback runs right after a module is imported, once."""

from __future__ import annotations

from conftest import run_python


def test_callback_runs_after_the_module_executes():
    out = run_python(
        """
        from seedlock import _hooks
        seen = []
        _hooks.on_import('json', 'k', lambda: seen.append(__import__('sys').modules['json'].dumps))
        assert seen == []
        import json
        print(len(seen), seen[0] is json.dumps)
        """
    ).stdout.split()
    assert out == ["1", "True"]


def test_finder_removes_itself_and_leaves_the_real_loader_behind():
    out = run_python(
        """
        import sys
        from seedlock import _hooks
        _hooks.on_import('json', 'k', lambda: None)
        import json
        print(_hooks._FINDER in sys.meta_path, type(json.__spec__.loader).__name__,
              type(json.__loader__).__name__)
        """
    ).stdout.split()
    assert out == ["False", "SourceFileLoader", "SourceFileLoader"]


def test_cancelled_callback_never_runs():
    out = run_python(
        """
        from seedlock import _hooks
        _hooks.on_import('json', 'k', lambda: print('ran'))
        _hooks.cancel('json', 'k')
        import json
        print('done')
        """
    ).stdout.split()
    assert out == ["done"]


def test_failing_callback_warns_and_the_import_still_succeeds():
    proc = run_python(
        """
        import warnings
        from seedlock import _hooks
        def boom():
            raise RuntimeError('nope')
        _hooks.on_import('json', 'k', boom)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import json
        print(json.dumps(1), [str(w.message) for w in caught])
        """
    )
    assert proc.stdout.startswith("1 ")
    assert "json is NOT seeded" in proc.stdout
