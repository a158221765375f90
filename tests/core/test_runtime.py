"""Device resolution, threads and malloc settings (linkstyle.core.runtime)."""

import platform

import pytest
import torch
from torch import nn

from linkstyle.core import runtime
from linkstyle.core.errors import UserError


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_accepted_by_glibc():
    assert runtime.keep_freed_memory() is True


def test_device_resolution_and_missing_cuda(monkeypatch):
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match=r"^params.yaml: s.device: device 'cuda:0' requested but CUDA is not available"):
        runtime.resolve_device("cuda:0", "params.yaml: s.device")


@pytest.mark.parametrize("name", ["gpu", "cuda0", "", "CPU", 3])
def test_unknown_devices_are_one_line_errors(name):
    with pytest.raises(UserError, match=r"^p: s.device: unknown device .*use auto, cpu, cuda or cuda:N$"):
        runtime.resolve_device(name, "p: s.device")


def test_threads_follow_the_environment(monkeypatch):
    monkeypatch.setenv("LINKSTYLE_THREADS", "1")
    assert runtime.cpu_threads() == 1
    monkeypatch.setenv("LINKSTYLE_THREADS", "two")
    with pytest.raises(UserError, match="LINKSTYLE_THREADS"):
        runtime.cpu_threads()


def test_module_device_for_parameters_buffers_and_neither():
    assert runtime.module_device(nn.Linear(2, 2)) == torch.device("cpu")
    m = nn.Module()
    m.register_buffer("b", torch.zeros(1))
    assert runtime.module_device(m) == torch.device("cpu")
    assert runtime.module_device(nn.Module()) == torch.device("cpu")


def test_threads_are_pinned_unless_unpinned(monkeypatch):
    monkeypatch.delenv("LINKSTYLE_THREADS", raising=False)
    monkeypatch.delenv(runtime.UNPIN_VARIABLE, raising=False)
    assert runtime.cpu_threads() == runtime.PINNED_THREADS, "the machine's cores must not decide reductions"
    monkeypatch.setenv(runtime.UNPIN_VARIABLE, "1")
    assert not runtime.pinned() and runtime.cpu_threads() >= 1
    monkeypatch.setenv("LINKSTYLE_THREADS", "0")
    with pytest.raises(UserError, match="LINKSTYLE_THREADS='0': must be a whole number of threads >= 1"):
        runtime.cpu_threads()


def _pinned_environment(env: dict) -> dict:
    """The variables after pin_arithmetic in a fresh process (numpy and torch not loaded)."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json, os\nfrom linkstyle.core import runtime\npinned = runtime.pin_arithmetic()\n"
            "print(json.dumps({'pinned': pinned, **{k: os.environ.get(k) for k in "
            "[*runtime.PINNED_ENVIRONMENT, *runtime.THREAD_VARIABLES, runtime.WAIT_POLICY_VARIABLE]}}))")
    full = {k: v for k, v in os.environ.items()
            if k not in ("LINKSTYLE_THREADS", runtime.UNPIN_VARIABLE, runtime.WAIT_POLICY_VARIABLE)}
    out = subprocess.run([sys.executable, "-c", code], env={**full, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_pin_overrides_the_environment_and_unpinned_leaves_it():
    user = {k: "user" for k in [*runtime.PINNED_ENVIRONMENT, *runtime.THREAD_VARIABLES]}
    got = _pinned_environment(user)
    assert got.pop("pinned") is True
    assert got.pop(runtime.WAIT_POLICY_VARIABLE) in (None, "PASSIVE")  # depends on the machine's load
    assert got == {**runtime.PINNED_ENVIRONMENT, **{k: str(runtime.PINNED_THREADS) for k in runtime.THREAD_VARIABLES}}
    got = _pinned_environment({**user, runtime.UNPIN_VARIABLE: "1"})
    assert got.pop("pinned") is False and got.pop(runtime.WAIT_POLICY_VARIABLE) in (None, "PASSIVE")
    assert set(got.values()) == {"user"}


def test_a_wait_policy_set_in_the_environment_is_kept():
    assert _pinned_environment({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.parametrize("busy, cores, threads, passive", [
    (0.05, 2, 2, False),   # idle 2-core machine: spin, the faster way
    (1.0, 2, 2, True),     # one core busy elsewhere: a stage thread would wait for it
    (0.3, 2, 2, True),
    (10.0, 16, 2, False),  # 6 cores free for 2 threads
    (14.5, 16, 2, True),
    (None, 2, 2, False),   # load unknown (no /proc/stat): OpenMP's default
])
def test_passive_waits_only_where_other_work_holds_the_threads_cores(busy, cores, threads, passive):
    assert runtime.wait_policy(busy, cores, threads) is passive


def test_busy_cores_sees_a_busy_loop():
    import subprocess
    import sys

    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        busy = runtime.busy_cores(0.3)
    finally:
        loop.kill()
        loop.wait()
    assert busy is not None and 0.7 < busy <= (runtime.os.cpu_count() or 1)


def test_pin_leaves_a_process_alone_whose_libraries_loaded_first(monkeypatch):
    # This test process loaded numpy and torch already: half a pin would change results mid-run.
    monkeypatch.delenv(runtime.UNPIN_VARIABLE, raising=False)
    before = dict(runtime.os.environ)
    assert runtime.pin_arithmetic() is False
    assert dict(runtime.os.environ) == before


def test_check_pinned_names_a_library_that_loaded_first(monkeypatch):
    # This test process loaded torch before any pin: on an AVX-512 machine it runs AVX-512 kernels.
    monkeypatch.delenv(runtime.UNPIN_VARIABLE, raising=False)
    state = runtime.arithmetic_state()
    if state["torch_cpu_capability"] == "AVX2" and not any(b.startswith("openblas") and not b.endswith(":Haswell")
                                                           for b in state.get("blas", [])):
        pytest.skip("this process happens to run the pinned kernels already")
    with pytest.raises(RuntimeError, match=r"CPU arithmetic not pinned .*import linkstyle.core.cli before numpy"):
        runtime.check_pinned()
    monkeypatch.setenv(runtime.UNPIN_VARIABLE, "1")
    runtime.check_pinned()  # unpinned: nothing to check
