"""Every way a FAN or specialized file, or a user checkpoint, can be damaged stops with one line
that names the file (FanFileError / CheckpointError; exit 2 in the CLI), never a traceback, and
writes nothing. A seeded fuzz test keeps it so."""

import json
import random
import struct
import warnings

import pytest
import torch
from typer.testing import CliRunner

import fan_convert
from fan_convert.cli import app, cli_args
from fan_convert.io import CheckpointError, FanFileError, read_checkpoint
from fan_convert.testing import tiny_tsm

runner = CliRunner()
REDO = "the file is damaged: write it again (fan-convert convert / specialize)"
FOREIGN = "the file is damaged or was written for another version of the architecture"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid FAN file, a valid specialized file, and a plain checkpoint of a tiny model."""
    folder = tmp_path_factory.mktemp("valid")
    model = tiny_tsm()
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, folder / "tiny.pth")
    fan = fan_convert.adapt(model, (4, 8))
    return {
        "fan": fan_convert.save(fan, folder / "tiny.fan.safetensors").read_bytes(),
        "specialized": fan_convert.save_specialized(fan, 8, folder / "tiny.plain8.safetensors").read_bytes(),
        "checkpoint": (folder / "tiny.pth").read_bytes(),
    }


def split(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def with_manifest(data: bytes, change) -> bytes:
    header, body = split(data)
    manifest = json.loads(header["__metadata__"]["fan_convert"])
    manifest = change(manifest)
    header["__metadata__"]["fan_convert"] = manifest if isinstance(manifest, str) else json.dumps(manifest)
    return join(header, body)


def with_header(data: bytes, change) -> bytes:
    header, body = split(data)
    change(header)
    return join(header, body)


def short_by_two(data: bytes) -> bytes:
    """The same file with a header length two bytes short (the header ends in padding, so it still parses)."""
    header, body = split(data)
    raw = json.dumps(header, separators=(",", ":")).encode() + b"    "  # padded, as safetensors pads
    return struct.pack("<Q", len(raw) - 2) + raw + body


def rename_first_tensor(header):
    name = next(k for k in header if k.endswith(".weight"))
    header[name + "_renamed"] = header.pop(name)


def transpose_a_matrix(header):
    name = next(k for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2 and len(set(v["shape"])) == 2)
    header[name]["shape"] = header[name]["shape"][::-1]
    return name


def check_one_line(err: Exception, path) -> str:
    message = str(err)
    assert "\n" not in message and f"'{path}'" in message, message
    return message


# --- each way of damage: the exact message, from the library and from the CLI ----------------


CASES = [
    "truncated", "cut in the header", "header length wrong", "header length short", "header bytes changed", "random bytes",
    "manifest not JSON",
    "manifest not an object", "manifest field missing", "manifest field mistyped", "plan not a plan",
    "tensor names no longer fit", "tensor shapes no longer fit",
]


def _cases(fan: bytes) -> dict:
    header_length = struct.unpack("<Q", fan[:8])[0]
    size, short = len(fan), short_by_two(fan)
    cases = [
        ("truncated", fan[: size // 2],
         f"is truncated: its tensors need {size:,} bytes, the file has {size // 2:,}; write it again"),
        ("cut in the header", fan[:100],
         f"is not a safetensors file, or is truncated (its header length says {header_length:,} bytes, 92 follow); "
         "give a file written by fan-convert, or write it again"),
        ("header length wrong", struct.pack("<Q", header_length + 5) + fan[8:], f"has a damaged safetensors header; {REDO}"),
        ("header length short", short,
         f"has a damaged safetensors header (its tensors end at byte {len(short) - 2:,}, the file has {len(short):,}); {REDO}"),
        ("header bytes changed", fan[:8] + b"\xff\xfe" + fan[10:], f"has a damaged safetensors header; {REDO}"),
        ("random bytes", bytes(random.Random(1).getrandbits(8) for _ in range(300)), None),  # header length: any
        ("manifest not JSON", with_manifest(fan, lambda m: "{not json"), f"has a corrupt fan-convert manifest (not JSON); {REDO}"),
        ("manifest not an object", with_manifest(fan, lambda m: 3.5),
         f"has a corrupt fan-convert manifest (a JSON float, not an object); {REDO}"),
        ("manifest field missing", with_manifest(fan, lambda m: {k: v for k, v in m.items() if k != "frames"}),
         f"has a damaged fan-convert manifest (no 'frames' field); {REDO}"),
        ("manifest field mistyped", with_manifest(fan, lambda m: {**m, "trained_at": "8"}),
         f"has a damaged fan-convert manifest ('trained_at' is \"8\", expected a positive frame count); {REDO}"),
        ("plan not a plan", with_manifest(fan, lambda m: {**m, "plan": {"sites": 1}}),
         f"has a damaged fan-convert manifest ('plan' is {{\"sites\": 1}}, expected a conversion plan object); {REDO}"),
        ("tensor names no longer fit", with_header(fan, rename_first_tensor), None),
        ("tensor shapes no longer fit", with_header(fan, transpose_a_matrix), None),
    ]
    assert [c[0] for c in cases] == CASES
    return {name: (data, message) for name, data, message in cases}


def _expected(name, data, message, path):
    if name == "random bytes":
        return None  # checked for form only below: which check fires depends on the bytes
    if name == "tensor names no longer fit":
        header, _ = split(data)
        renamed = next(k for k in header if k.endswith("_renamed"))
        return (f"'{path}' does not fit the rebuilt model (1 missing, 1 unexpected keys, e.g. {renamed[:-len('_renamed')]!r}); "
                f"{FOREIGN}")
    if name == "tensor shapes no longer fit":
        header, _ = split(data)
        entry = next((k, v) for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2 and len(set(v["shape"])) == 2)
        return (f"'{path}' does not fit the rebuilt model (tensor {entry[0]!r} is {entry[1]['shape']} in the file, "
                f"{entry[1]['shape'][::-1]} in the model); {FOREIGN}")
    return f"'{path}' {message}"


@pytest.mark.parametrize("name", CASES)
def test_each_damage_is_one_exact_line_and_writes_nothing(files, tmp_path, name):
    data, message = _cases(files["fan"])[name]
    path = tmp_path / "damaged.fan.safetensors"
    path.write_bytes(data)
    expected = _expected(name, data, message, path)
    with pytest.raises(FanFileError) as caught:
        fan_convert.load(path)
    got = check_one_line(caught.value, path)
    if expected is not None:
        assert got == expected
    # the CLI: one line, exit 2, no output file
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, cli_args(["specialize", str(path), "--frames", "8", "-o", str(out)]))
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: {got}"]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["damaged.fan.safetensors"]


def test_read_manifest_names_damage_without_building_anything(files, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(with_manifest(files["fan"], lambda m: [1, 2]))
    with pytest.raises(FanFileError, match=r"a JSON list, not an object"):
        fan_convert.read_manifest(path)
    path.write_bytes(with_manifest(files["specialized"], lambda m: {**m, "frames": [4, 8]}))
    with pytest.raises(FanFileError, match=r"'frames' is \[4, 8\], expected one frame count"):
        fan_convert.read_manifest(path)
    path.write_bytes(with_manifest(files["specialized"], lambda m: {**m, "kept_alterations": {"paths": ["a"], "kernel_size": "3"}}))
    with pytest.raises(FanFileError, match=r"'kept_alterations' is .*expected \{paths"):
        fan_convert.read_manifest(path)


# --- fuzz ------------------------------------------------------------------------------------

JSON_VALUES = [None, True, 0, -1, 2.5, "x", "", [], [0], [-4, 8], {}, {"spec": 1}, {"a": []}, 10**20]


def _mutations(data: bytes, rng: random.Random, count: int):
    header, _ = split(data)
    manifest = json.loads(header["__metadata__"]["fan_convert"])
    fields = list(manifest)
    for _ in range(count):
        kind = rng.randrange(7)
        if kind == 0:  # truncation anywhere
            yield data[: rng.randrange(len(data))]
        elif kind == 1:  # bytes changed in the first kilobyte (length and header)
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(min(1024, len(data)))] = rng.randrange(256)
            yield bytes(mutated)
        elif kind == 2:  # a header length that lies
            length = struct.unpack("<Q", data[:8])[0]
            yield struct.pack("<Q", max(0, length + rng.choice([-100, -1, 1, 8, 10**6, 2**40]))) + data[8:]
        elif kind == 3:  # a manifest field replaced by another JSON value, or removed
            field, value = rng.choice(fields), rng.choice(JSON_VALUES + ["<remove>"])
            def change(m, field=field, value=value):
                return {k: v for k, v in m.items() if k != field} if value == "<remove>" else {**m, field: value}
            yield with_manifest(data, change)
        elif kind == 4:  # the manifest replaced by another JSON value
            yield with_manifest(data, lambda m: json.dumps(rng.choice(JSON_VALUES)))
        elif kind == 5:  # a tensor entry renamed, dropped or reshaped
            def change(h):  # noqa: F811
                name = rng.choice([k for k in h if k != "__metadata__"])
                action = rng.randrange(3)
                if action == 0:
                    h[name + ".x"] = h.pop(name)
                elif action == 1:
                    del h[name]
                else:
                    h[name]["shape"] = h[name]["shape"][::-1] + [1]
            yield with_header(data, change)
        else:  # random bytes
            yield bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))


@pytest.mark.parametrize("which,count", [("fan", 240), ("specialized", 120)])
def test_fuzzed_fan_files_load_or_fail_in_one_line(files, tmp_path, which, count):
    rng = random.Random(14)
    path = tmp_path / f"fuzz.{which}.safetensors"
    outcomes = {"loaded": 0, "refused": 0}
    for data in _mutations(files[which], rng, count):
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fan_convert.load(path)
            outcomes["loaded"] += 1  # a change that does not matter (e.g. a version string)
        except FanFileError as err:
            check_one_line(err, path)
            outcomes["refused"] += 1
    assert outcomes["refused"] > count // 2, outcomes


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_fuzzed_checkpoints_read_or_fail_in_one_line(files, tmp_path, suffix):
    rng = random.Random(15)
    data = files["checkpoint"] if suffix == ".pth" else files["specialized"]
    path = tmp_path / f"fuzz{suffix}"
    refused = 0
    for _ in range(120):
        kind = rng.randrange(3)
        if kind == 0:
            mutated = data[: rng.randrange(1, len(data))]
        elif kind == 1:
            buffer = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                buffer[rng.randrange(len(buffer) if suffix == ".pth" else 1024)] = rng.randrange(256)
            mutated = bytes(buffer)
        else:
            mutated = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))
        path.write_bytes(mutated)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # torch's own warnings must not reach the user
                read_checkpoint(path)
        except CheckpointError as err:
            check_one_line(err, path)
            assert "weights_only" not in str(err)
            refused += 1
    assert refused > 60
