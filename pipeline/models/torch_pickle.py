"""Reading a PyTorch state dict saved in the legacy format, without torch and without trusting the file.

The legacy `torch.save` format is five pickles (magic number, protocol, system info, the object whose tensors
name their storages by persistent id, the storage keys in file order) followed by each storage as an 8-byte
little-endian element count and its raw little-endian data. The unpickler here admits only the classes a
state dict is made of (an `OrderedDict`, tensor rebuilders, typed storages): any other global in the file is
refused, so a hostile file cannot run code. Tensors keep their storage offset and strides: many are stored
non-contiguously (a transposed view), and reading them as contiguous would scramble the weights.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import PipelineError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: type
    size: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, shape: tuple, stride: tuple, *_: object) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(int(s) for s in shape), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _TensorRef, *_: object) -> _TensorRef:
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Admits only what a state dict holds; storages become placeholders filled after the pickles."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a state dict; refusing to load it")

    def persistent_load(self, pid: tuple) -> _Storage:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        return _Storage(key=str(pid[2]), dtype=pid[1].dtype, size=int(pid[4]))


def _materialise(ref: _TensorRef, data: dict[str, np.ndarray]) -> np.ndarray:
    flat = data[ref.storage.key]
    if not ref.shape:
        return flat[ref.offset].copy()
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    if min(ref.shape) > 0 and last >= flat.size:
        raise PipelineError("A tensor in the weights file reaches past its storage: the file is damaged.")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.shape, strides=[s * flat.itemsize for s in ref.stride], writeable=False
    )
    return np.ascontiguousarray(view)


def _restore(value: object, data: dict[str, np.ndarray]) -> object:
    if isinstance(value, _TensorRef):
        return _materialise(value, data)
    if isinstance(value, dict):
        return collections.OrderedDict((key, _restore(item, data)) for key, item in value.items())
    return value


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format `.pth` file as numpy arrays, by their state-dict names."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PipelineError(f"Cannot read the weights file {path}: {error}") from error
    stream = io.BytesIO(raw)
    try:
        if _StateDictUnpickler(stream).load() != LEGACY_MAGIC:
            raise PipelineError(f"{path.name} is not a legacy PyTorch file (wrong magic number).")
        if _StateDictUnpickler(stream).load() != LEGACY_PROTOCOL:
            raise PipelineError(f"{path.name} uses an unknown PyTorch protocol version.")
        _StateDictUnpickler(stream).load()  # system info: plain values only
        state = _StateDictUnpickler(stream).load()
        keys = _StateDictUnpickler(stream).load()
    except (pickle.UnpicklingError, EOFError, ValueError, struct.error) as error:
        if isinstance(error, PipelineError):
            raise
        raise PipelineError(f"{path.name} is not a readable PyTorch state dict: {error}") from error
    storages = {ref.storage.key: ref.storage for ref in _tensor_refs(state)}
    data: dict[str, np.ndarray] = {}
    for key in keys:
        storage = storages.get(str(key))
        header = stream.read(8)
        if storage is None or len(header) != 8:
            raise PipelineError(f"{path.name} is damaged: storage {key} is missing or unknown.")
        (count,) = struct.unpack("<q", header)
        itemsize = np.dtype(storage.dtype).itemsize
        payload = stream.read(count * itemsize)
        if count != storage.size or len(payload) != count * itemsize:
            raise PipelineError(f"{path.name} is damaged: storage {key} is truncated.")
        data[str(key)] = np.frombuffer(payload, dtype=np.dtype(storage.dtype).newbyteorder("<"))
    if set(storages) - set(data):
        raise PipelineError(f"{path.name} is damaged: some storages are missing.")
    return _restore(state, data)


def _tensor_refs(value: object) -> list[_TensorRef]:
    if isinstance(value, _TensorRef):
        return [value]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _tensor_refs(item)]
    return []
