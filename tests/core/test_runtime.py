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
