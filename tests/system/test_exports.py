"""A handler module imports no heavy library, checked in a fresh interpreter."""



def test_a_handler_module_imports_no_heavy_library() -> None:
    """``from receiver import on`` is what every handler module runs: milliseconds, not the
    web and queue stacks (measured with ``python -X importtime``)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from receiver import Event, filters, on\n"
        "heavy = ('rq', 'redis', 'prometheus_client', 'gevent', 'httpx', 'flask')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert loaded == ""
