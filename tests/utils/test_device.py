"""megasnow.utils.device.resolve_device: the one --device / *.device rule (auto, a device this machine lacks)."""
import pytest
import torch

from megasnow.errors import UserError
from megasnow.utils.device import resolve_device


def test_auto_and_cpu():
    assert resolve_device("auto") == resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_bad_or_missing_devices_name_the_flag():
    with pytest.raises(UserError, match=r"^--device 'gpu0' is not a torch device: give cpu, cuda, cuda:N or auto$"):
        resolve_device("gpu0")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(UserError, match=rf"^train.device is cuda:{n} but only {n} CUDA device"):
            resolve_device(f"cuda:{n}", "train.device")
    else:
        for spec in ("cuda", "cuda:1"):
            with pytest.raises(UserError, match=rf"^train.device is {spec} but this machine has no CUDA device .*: use "
                                                r"cpu$"):
                resolve_device(spec, "train.device")
