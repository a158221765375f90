"""Stage plumbing: malloc settings and device resolution."""

import platform

import pytest
import torch

from linkstyle import cli
from linkstyle.errors import UserError


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_accepted_by_glibc():
    assert cli.keep_freed_memory() is True


def test_device_resolution_and_missing_cuda(monkeypatch):
    assert cli.device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="device: auto or cpu"):
        cli.device("cuda:0")
