"""The legacy PyTorch reader, on files written here in that format (no torch): strides honoured, nothing but a
state dict's own classes admitted, damage named."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.models.torch_pickle import LEGACY_MAGIC, LEGACY_PROTOCOL, read_legacy_state_dict


class _Storage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, np.ascontiguousarray(data, dtype=np.float32).ravel()


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Globals named as torch names them, so that pickle writes the same references torch.save writes."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    FloatStorage.__module__, _rebuild_tensor_v2.__module__ = "torch", "torch._utils"
    FloatStorage.__qualname__, _rebuild_tensor_v2.__qualname__ = "FloatStorage", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = FloatStorage, _rebuild_tensor_v2, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return types.SimpleNamespace(FloatStorage=FloatStorage, rebuild=_rebuild_tensor_v2)


class _Tensor:
    def __init__(self, torch: types.SimpleNamespace, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.torch, self.args = torch, (storage, offset, shape, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return self.torch.rebuild, self.args


def write_legacy(path: Path, torch: types.SimpleNamespace, tensors: dict[str, tuple], extra_global=None) -> None:
    """A legacy `torch.save` file: five pickles, then each storage as a count and little-endian float32s."""
    storages = {id(spec[0]): spec[0] for spec in tensors.values()}

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.data.size, None)
            return None

    buffer = io.BytesIO()
    for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    state = collections.OrderedDict((name, _Tensor(torch, *spec)) for name, spec in tensors.items())
    if extra_global is not None:
        state["evil"] = extra_global
    Writer(buffer, protocol=2).dump(state)
    pickle.dump([storage.key for storage in storages.values()], buffer, protocol=2)
    for storage in storages.values():
        buffer.write(struct.pack("<q", storage.data.size) + storage.data.astype("<f4").tobytes())
    path.write_bytes(buffer.getvalue())


def test_a_tensor_stored_transposed_reads_as_its_view(tmp_path: Path, fake_torch) -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    storage = _Storage("0", base)
    shared = _Storage("1", np.arange(10, dtype=np.float32))
    write_legacy(
        tmp_path / "w.pth",
        fake_torch,
        {
            "plain": (storage, 0, (3, 4), (4, 1)),
            "transposed": (storage, 0, (4, 3), (1, 4)),  # base.T, not contiguous in its storage
            "offset": (shared, 3, (2, 2), (2, 1)),
        },
    )
    state = read_legacy_state_dict(tmp_path / "w.pth")
    assert list(state) == ["plain", "transposed", "offset"]
    np.testing.assert_array_equal(state["plain"], base)
    np.testing.assert_array_equal(state["transposed"], base.T)
    assert not np.array_equal(state["transposed"], base.reshape(4, 3)), "read as contiguous would differ"
    np.testing.assert_array_equal(state["offset"], np.array([[3, 4], [5, 6]], np.float32))


def test_any_other_global_is_refused_before_it_runs(tmp_path: Path, fake_torch) -> None:
    class Hostile:
        def __reduce__(self):
            return os.system, ("echo pwned > " + str(tmp_path / "pwned"),)

    write_legacy(tmp_path / "w.pth", fake_torch, {"w": (_Storage("0", np.ones(2)), 0, (2,), (1,))}, Hostile())
    with pytest.raises(PipelineError, match="not part of a state dict"):
        read_legacy_state_dict(tmp_path / "w.pth")
    assert not (tmp_path / "pwned").exists()


def test_damaged_files_are_named(tmp_path: Path, fake_torch) -> None:
    write_legacy(tmp_path / "w.pth", fake_torch, {"w": (_Storage("0", np.ones(8)), 0, (8,), (1,))})
    whole = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[:-5])
    with pytest.raises(PipelineError, match="truncated"):
        read_legacy_state_dict(tmp_path / "cut.pth")
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04 not a legacy file")
    with pytest.raises(PipelineError, match="not a"):
        read_legacy_state_dict(tmp_path / "zip.pth")
