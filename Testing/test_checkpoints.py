"""Tests of SuperResMoELib.checkpoints: safetensors + JSON manifest, no pickle."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from SuperResMoELib.checkpoints import store as ck
from SuperResMoELib.checkpoints.store import Checkpoint, Manifest
from SuperResMoELib.core.errors import CheckpointError, DeviceError

#: Elements of the large tensor used to compare float32/float16 file sizes.
SIZE_TEST_ELEMENTS = 1 << 16
#: Absolute tolerance of a float16 round trip for values in [-1, 1].
FP16_ATOL = 1e-3


def make_manifest(**overrides) -> Manifest:
    fields = dict(
        method="ssmoe",
        task="t1_x2",
        architecture={"n_experts": 4, "channels": [8, 16]},
        scale_factors=[1.0, 1.0, 2.0],
        intensity={"kind": "scale", "factor": 1 / 1000},
        training_data={"source": "MNI152 2009", "subjects": 1},
        metrics={"mse_ssmoe": 1.5e-4},
        description="unit test checkpoint",
    )
    fields.update(overrides)
    return Manifest(**fields)


def make_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.rand(4, 2, 3, 3, 3, generator=g) * 2 - 1,
        "conv.bias": torch.rand(4, generator=g) * 2 - 1,
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
    }


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class MarkerPayload:
    """Unpickling this object creates the file ``path``: proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ----------------------------------------------------------------- round trip
@pytest.mark.parametrize("given", ["model", "model.safetensors", "model.json"])
def test_round_trip(tmp_path, given):
    tensors, manifest = make_tensors(), make_manifest()
    weights = ck.save_checkpoint(tmp_path / given, tensors, manifest)
    assert weights == tmp_path / "model.safetensors"
    assert listing(tmp_path) == ["model.json", "model.safetensors"]
    for ref in (tmp_path / "model", weights, tmp_path / "model.json", str(weights)):
        loaded = ck.load_checkpoint(ref, method="ssmoe", task="t1_x2")
        assert isinstance(loaded, Checkpoint)
        assert loaded.path == weights
        assert set(loaded.tensors) == set(tensors)
        for name, t in tensors.items():
            assert loaded.tensors[name].dtype == t.dtype
            assert torch.equal(loaded.tensors[name], t)
        expected = ck.Manifest(**{**manifest.__dict__, "sha256": ck.sha256_file(weights), "created": loaded.manifest.created})
        assert loaded.manifest == expected
    assert manifest.sha256 == "" and manifest.created == ""  # caller's manifest untouched
    assert loaded.manifest.dtype == "float32"
    assert loaded.manifest.format_version == ck.FORMAT_VERSION
    assert loaded.manifest.version  # library version recorded
    assert loaded.manifest.created  # ISO time filled in


def test_manifest_json_round_trip_and_extras():
    m = make_manifest(metrics={"psnr": np.float32(31.5), "per_frame": np.array([1.0, 2.0])}, scale_factors=(2, 2, 2))
    data = json.loads(m.to_json())
    assert data["metrics"] == {"psnr": 31.5, "per_frame": [1.0, 2.0]}
    assert data["scale_factors"] == [2.0, 2.0, 2.0]
    data["future_field"] = {"a": 1}
    back = Manifest.from_dict(data)
    assert back.extra == {"future_field": {"a": 1}}
    assert back.scale_factors == [2.0, 2.0, 2.0]


def test_read_manifest_without_weights(tmp_path):
    ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    (tmp_path / "m.safetensors").unlink()
    assert ck.read_manifest(tmp_path / "m.json").method == "ssmoe"
    assert ck.read_manifest(tmp_path / "m").task == "t1_x2"


def test_sha256_file(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    assert ck.sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ---------------------------------------------------------------------- half
def test_half_storage(tmp_path):
    g = torch.Generator().manual_seed(1)
    tensors = {"big": torch.rand(SIZE_TEST_ELEMENTS, generator=g) * 2 - 1, "steps": torch.arange(3)}
    full = ck.save_checkpoint(tmp_path / "full", tensors, make_manifest())
    half = ck.save_checkpoint(tmp_path / "half", tensors, make_manifest(), half=True)
    ratio = half.stat().st_size / full.stat().st_size
    assert 0.45 < ratio < 0.55
    loaded = ck.load_checkpoint(half)
    assert loaded.manifest.dtype == "float16"
    assert loaded.tensors["big"].dtype == torch.float32
    torch.testing.assert_close(loaded.tensors["big"], tensors["big"], atol=FP16_ATOL, rtol=0)
    assert not torch.equal(loaded.tensors["big"], tensors["big"])  # really went through fp16
    assert loaded.tensors["steps"].dtype == torch.int64
    assert torch.equal(loaded.tensors["steps"], tensors["steps"])


def test_half_overflow_refused(tmp_path):
    with pytest.raises(CheckpointError, match="float16"):
        ck.save_checkpoint(tmp_path / "m", {"w": torch.tensor([1e6])}, make_manifest(), half=True)
    assert listing(tmp_path) == []


# -------------------------------------------------------------- broken files
def test_corrupt_byte_is_detected(tmp_path):
    weights = ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # flip one byte of tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or modified") as info:
        ck.load_checkpoint(weights)
    assert str(weights) in str(info.value)


def test_truncated_file(tmp_path):
    weights = ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt or modified"):
        ck.load_checkpoint(weights)


def test_unparsable_header_with_matching_sha(tmp_path):
    # a manifest that vouches for a file that is not safetensors at all
    ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    data = json.loads((tmp_path / "m.json").read_text())
    data["sha256"] = ck.sha256_file(weights)
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as info:
        ck.load_checkpoint(weights)
    assert str(weights) in str(info.value)


def test_missing_weights(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as info:
        ck.load_checkpoint(tmp_path / "nothing")
    assert "nothing.safetensors" in str(info.value)


def test_missing_manifest(tmp_path):
    ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    (tmp_path / "m.json").unlink()
    with pytest.raises(CheckpointError, match="manifest .*m.json is missing"):
        ck.load_checkpoint(tmp_path / "m.safetensors")


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"method": "ssmoe"}', "lacks required field.*task.*architecture"),
    ],
)
def test_bad_manifest_text(tmp_path, text, message):
    ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(CheckpointError, match=message) as info:
        ck.load_checkpoint(tmp_path / "m")
    assert "m.json" in str(info.value)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("format_version", ck.FORMAT_VERSION + 1, "newer than this SuperResMoE supports"),
        ("format_version", "one", "format_version"),
        ("scale_factors", [2, 2], "scale_factors"),
        ("scale_factors", [2, 0, 2], "scale_factors"),
        ("method", "", "method"),
        ("architecture", [1], "architecture"),
        ("dtype", "int8", "dtype"),
    ],
)
def test_invalid_manifest_fields(tmp_path, field, value, message):
    ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    data = json.loads((tmp_path / "m.json").read_text())
    data[field] = value
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message):
        ck.load_checkpoint(tmp_path / "m")
    with pytest.raises(CheckpointError, match=message):
        ck.read_manifest(tmp_path / "m")


def test_manifest_without_sha_refused(tmp_path):
    ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    data = json.loads((tmp_path / "m.json").read_text())
    data["sha256"] = ""
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="no sha256"):
        ck.load_checkpoint(tmp_path / "m")


@pytest.mark.parametrize("kwargs, message", [({"method": "remix"}, "method 'ssmoe', not 'remix'"), ({"task": "t2_x4"}, "task 't1_x2', not 't2_x4'")])
def test_wrong_method_or_task(tmp_path, kwargs, message):
    ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    with pytest.raises(CheckpointError, match=message):
        ck.load_checkpoint(tmp_path / "m", **kwargs)


def test_bad_device(tmp_path):
    ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    with pytest.raises(DeviceError):
        ck.load_checkpoint(tmp_path / "m", device="no-such-device")


def test_safetensors_header_length_starting_with_0x80_is_not_pickle(tmp_path):
    # the header length is a little-endian u64; make its first byte 0x80 (= pickle PROTO)
    for pad in range(300):
        tensors = {"w" + "x" * pad: torch.ones(2)}
        weights = ck.save_checkpoint(tmp_path / "m", tensors, make_manifest())
        if weights.read_bytes()[0] == ck.PICKLE_PROTO_OPCODE:
            break
    else:  # pragma: no cover
        pytest.fail("could not craft a header length with low byte 0x80")
    assert torch.equal(ck.load_checkpoint(weights).tensors["w" + "x" * pad], torch.ones(2))


# -------------------------------------------------------------------- pickle
def test_marker_payload_really_runs_code(tmp_path):
    """Sanity check of the payload used below: plain unpickling executes it."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(MarkerPayload(marker))).close()  # the payload returns an open file
    assert marker.exists()


@pytest.mark.parametrize("name", ["evil.safetensors", "evil"])
def test_pickle_file_refused_without_running(tmp_path, name):
    marker = tmp_path / "marker"
    target = tmp_path / "evil.safetensors"
    with open(target, "wb") as fh:
        pickle.dump({"w": MarkerPayload(marker)}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    ck.save_checkpoint(tmp_path / "ok", make_tensors(), make_manifest())
    (tmp_path / "ok.json").rename(tmp_path / "evil.json")  # even with a manifest next to it
    with pytest.raises(CheckpointError, match="refusing to load a pickle-based file: it could run code; convert it to safetensors"):
        ck.load_checkpoint(tmp_path / name)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
def test_torch_save_file_refused_by_suffix(tmp_path, suffix):
    marker = tmp_path / "marker"
    target = tmp_path / f"model{suffix}"
    torch.save({"w": torch.ones(2), "payload": MarkerPayload(marker)}, target)
    with pytest.raises(CheckpointError, match="refusing to load a pickle-based file") as info:
        ck.load_checkpoint(target)
    assert str(target) in str(info.value)
    with pytest.raises(CheckpointError, match="refusing"):
        ck.read_manifest(target)
    assert not marker.exists()


def test_torch_save_renamed_to_safetensors_refused(tmp_path):
    marker = tmp_path / "marker"
    target = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2), "payload": MarkerPayload(marker)}, target)
    assert target.read_bytes().startswith(ck.ZIP_MAGIC)
    with pytest.raises(CheckpointError, match="refusing to load a pickle-based file"):
        ck.load_checkpoint(target)
    legacy = tmp_path / "legacy.safetensors"
    torch.save({"payload": MarkerPayload(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="refusing to load a pickle-based file"):
        ck.load_checkpoint(legacy)
    assert not marker.exists()


# ----------------------------------------------------------------- atomicity
def test_failing_weights_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "_save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    assert listing(tmp_path) == []


def test_failing_overwrite_keeps_old_weights(tmp_path, monkeypatch):
    old = ck.save_checkpoint(tmp_path / "m", make_tensors(0), make_manifest())
    before = old.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "_save_file", broken_save)
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path / "m", make_tensors(1), make_manifest())
    assert listing(tmp_path) == ["m.json", "m.safetensors"]
    assert old.read_bytes() == before
    monkeypatch.undo()
    ck.load_checkpoint(old)  # still a valid pair


def test_failing_manifest_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_write(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "write_text_atomic", broken_write)
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest())
    assert listing(tmp_path) == []


def test_unserialisable_manifest_fails_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match="not JSON serialisable"):
        ck.save_checkpoint(tmp_path / "m", make_tensors(), make_manifest(extra={"obj": object()}))
    assert listing(tmp_path) == []


def test_non_tensor_refused(tmp_path):
    with pytest.raises(CheckpointError, match="torch tensors"):
        ck.save_checkpoint(tmp_path / "m", {"w": [1.0, 2.0]}, make_manifest())  # type: ignore[dict-item]


# -------------------------------------------------------------------- search
@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    a, b, cache = tmp_path / "a", tmp_path / "b", tmp_path / "cache"
    for d in (a, b):
        d.mkdir()
    monkeypatch.setenv(ck.ENV_CHECKPOINTS, os.pathsep.join([str(a), str(b)]))
    monkeypatch.setenv(ck.ENV_CACHE, str(cache))
    return a, b, cache


def test_search_dirs_order(isolated_dirs, monkeypatch, tmp_path):
    a, b, cache = isolated_dirs
    dirs = ck.checkpoint_search_dirs()
    assert dirs[:2] == [a, b]
    assert dirs[2] == ck.bundled_checkpoint_dir()
    assert dirs[2].parts[-2:] == ("checkpoints", "bundled")
    assert dirs[3] == cache / "checkpoints"
    monkeypatch.delenv(ck.ENV_CACHE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ck.checkpoint_search_dirs()[-1] == tmp_path / "xdg" / "superresmoe" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv(ck.ENV_CHECKPOINTS)
    dirs = ck.checkpoint_search_dirs()
    assert dirs[-1] == Path.home() / ".cache" / "superresmoe" / "checkpoints"
    assert len(dirs) == 2


def test_list_and_find(isolated_dirs):
    a, b, cache = isolated_dirs
    user = cache / "checkpoints"
    ck.save_checkpoint(b / "late", make_tensors(), make_manifest(method="unit_test_method", task="x2"))
    ck.save_checkpoint(a / "early", make_tensors(), make_manifest(method="unit_test_method", task="x2"))
    ck.save_checkpoint(a / "other", make_tensors(), make_manifest(method="unit_test_method", task="x4"))
    ck.save_checkpoint(user / "mine", make_tensors(), make_manifest(method="unit_test_other", task="x2"))
    (a / "notes.json").write_text('{"hello": 1}')  # not a manifest: ignored
    (a / "broken.json").write_text("{")  # not JSON: ignored
    ck.save_checkpoint(a / "orphan", make_tensors(), make_manifest(method="unit_test_method", task="x2"))
    (a / "orphan.safetensors").unlink()  # manifest without weights: ignored

    found = ck.list_checkpoints(method="unit_test_method")
    assert [p for p, _ in found] == [a / "early.safetensors", a / "other.safetensors", b / "late.safetensors"]
    assert [m.task for _, m in found] == ["x2", "x4", "x2"]
    assert [p for p, _ in ck.list_checkpoints(task="x2") if p.parent in (a, b, user)] == [
        a / "early.safetensors",
        b / "late.safetensors",
        user / "mine.safetensors",
    ]
    assert ck.find_checkpoint("unit_test_method", "x2") == a / "early.safetensors"
    assert ck.find_checkpoint("unit_test_other", "x2") == user / "mine.safetensors"
    with pytest.raises(CheckpointError, match="no checkpoint for method 'unit_test_method' task 'x8'") as info:
        ck.find_checkpoint("unit_test_method", "x8")
    for d in (a, b, user):
        assert str(d) in str(info.value)


def test_checkpoint_files_get_normal_permissions(tmp_path) -> None:
    import os
    import stat

    import torch

    from SuperResMoELib.checkpoints.store import Manifest, save_checkpoint

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "c", {"w": torch.zeros(2)}, Manifest("cubic", "t", {}, [1, 1, 1], {}))
    finally:
        os.umask(old)
    for f in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o644, f
