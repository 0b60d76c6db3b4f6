"""Damaged or misplaced converter inputs are one `error:` line (exit 2) naming the file and the fix: damaged
safetensors (import --hf, generate --hf, the server's loader share one reader), truncated GGUF files, a file where
a folder is expected and the other way round, an export into its own source."""
import os
import shutil
import subprocess
import sys

import pytest

from megasnow.convert import hf_llama
from megasnow.convert.errors import ConversionError
from megasnow.errors import UserError
from megasnow.generation.model_files import load_model
from tests.convert.test_round_trip_files import REPO, TOOL, tool


def damaged_copy(tiny_hf, tmp_path, case):
    out = tmp_path / case
    shutil.copytree(tiny_hf, out)
    weights = out / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[:len(data) // 2], "tiny": data[:5], "empty": b""}[case])
    return str(out)


@pytest.mark.parametrize("case", ["truncated", "tiny", "empty"])
def test_a_damaged_safetensors_file_is_a_user_error_everywhere(tmp_path, tiny_hf, case):
    folder = damaged_copy(tiny_hf, tmp_path, case)
    weights = os.path.join(folder, "model.safetensors")
    for load in (lambda: hf_llama.import_from_hf(folder, str(tmp_path / "out")), lambda: load_model(folder)):
        with pytest.raises(UserError) as e:
            load()
        assert str(e.value).startswith(f"{weights}: damaged safetensors file (")
        assert str(e.value).endswith("re-download or re-export it")
    assert not os.path.exists(tmp_path / "out")


def test_damaged_safetensors_in_the_tools(tmp_path, tiny_hf):
    folder = damaged_copy(tiny_hf, tmp_path, "truncated")
    res = tool("import", "--hf", folder, "--output", tmp_path / "out")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "damaged safetensors file" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, os.path.join(REPO, "tools", "generate.py"), "--hf", folder, "--prompt", "x"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "damaged safetensors file" in res.stderr and "Traceback" not in res.stderr


# empty, inside the magic, inside the header's counts (numpy's dtype message), inside the metadata, inside the data
@pytest.mark.parametrize("cut", [0, 3, 30, 200_000, 50_000_000])
def test_a_truncated_gguf_file_is_refused_up_front(tmp_path, cut):
    from megasnow.convert.gguf import check_gguf_file
    from tests.smollm2 import gguf_path

    source = gguf_path()
    cut_file = tmp_path / "cut.gguf"
    with open(source, "rb") as f:
        cut_file.write_bytes(f.read(cut))
    with pytest.raises(ConversionError) as e:
        check_gguf_file(str(cut_file))
    if cut == 0:
        assert str(e.value) == f"{cut_file}: empty file (0 bytes); re-download it"
    elif cut < 4:
        assert str(e.value) == f"{cut_file}: truncated GGUF file ({cut} bytes); re-download it"
    elif cut < 1_000_000:  # the reader's own message (numpy internals) stays out of the line
        assert str(e.value) == (f"{cut_file}: truncated or damaged GGUF file ({cut} bytes; its header cannot be "
                                f"read); re-download it")
    if cut in (0, 200_000):  # the tool's line is the check's message
        res = tool("import", "--gguf", cut_file, "--output", tmp_path / "out")
        assert res.returncode == 2 and res.stderr.strip() == f"error: {e.value}", res.stderr
        assert "Traceback" not in res.stderr and not os.path.exists(tmp_path / "out")
    if cut > 1_000_000:
        assert str(e.value) == (f"{cut_file}: truncated GGUF file ({cut} bytes, tensors need "
                                f"{os.path.getsize(source)}); re-download it")


def test_an_interrupted_conversion_says_nothing_was_written(tmp_path):
    import signal
    import time

    from tests.smollm2 import gguf_path

    proc = subprocess.Popen([sys.executable, TOOL, "import", "--gguf", gguf_path(), "--output", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Wait for the slow read to begin (a fixed sleep could land in Python's start-up on a loaded machine, before the
    # tool's Ctrl-C handling exists), then a moment more so the signal lands inside it.
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("reading ") and "with transformers" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    err = "".join(seen) + rest
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == \
        "convert_checkpoint.py: interrupted (Ctrl-C); nothing was written; rerun the same command"
    assert not os.path.exists(tmp_path / "out")


def test_sources_of_the_wrong_kind_are_named_with_the_fix(tmp_path, tiny, tiny_hf):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    gguf_dir = tmp_path / "pkg"
    gguf_dir.mkdir()
    (gguf_dir / "m.gguf").write_bytes(b"GGUF")
    bin_only = tmp_path / "binonly"
    bin_only.mkdir()
    (bin_only / "config.json").write_text("{}")
    (bin_only / "pytorch_model.bin").write_bytes(b"x")
    step = os.path.join(tiny, "step_00000000") if os.path.isdir(os.path.join(tiny, "step_00000000")) else tiny
    cases = [
        (["import", "--hf", gguf], f"--hf {gguf}: a GGUF file, not a HF folder; import it with --gguf"),
        (["import", "--hf", gguf_dir], f"--hf {gguf_dir}: a folder holding GGUF file(s) (m.gguf)"),
        (["import", "--hf", bin_only], f"--hf {bin_only}: a HF folder (config.json) without model.safetensors (it "
                                       f"has pytorch_model.bin"),
        (["export", "--checkpoint", tiny_hf], f"--checkpoint {tiny_hf}: a HuggingFace model folder (config.json), "
                                              f"not a megasnow checkpoint: it needs no export; serve it as is"),
        (["export", "--checkpoint", gguf], f"--checkpoint {gguf}: a GGUF file, not a megasnow checkpoint; import it "
                                           f"first"),
        (["export", "--checkpoint", step], f"--output {step}/hfout is inside --checkpoint {step}"),
    ]
    for argv, expected in cases:
        out = os.path.join(step, "hfout") if argv[-1] == step else str(tmp_path / "out")
        res = tool(*argv, "--output", out)
        assert res.returncode == 2, (argv, res.stderr)
        assert res.stderr.startswith("error: " + expected), (argv, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and not os.path.exists(out)


def test_rerunning_a_finished_conversion_has_nothing_to_do(tmp_path, tiny, tiny_hf):
    for argv in (["export", "--checkpoint", tiny], ["import", "--hf", tiny_hf]):
        out = tmp_path / argv[0]
        assert tool(*argv, "--output", out).returncode == 0
        before = sorted(os.listdir(out))
        res = tool(*argv, "--output", out)
        assert res.returncode == 0, res.stderr
        assert res.stderr.startswith(f"{out} already holds this conversion (finished 20")
        assert res.stderr.strip().endswith("; nothing to do") and sorted(os.listdir(out)) == before
    res = tool("export", "--checkpoint", tiny, "--output", tmp_path / "export", "--dtype", "bfloat16")
    assert res.returncode == 2 and "is not empty" in res.stderr  # other options: another conversion
    # The run trained further (`latest` moved): the refusal names the exported step and the new one.
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny, ckpt)
    first = (ckpt / "latest").read_text().strip()
    assert tool("export", "--checkpoint", ckpt, "--output", tmp_path / "hf").returncode == 0
    shutil.copytree(ckpt / first, ckpt / "step_00000099")
    (ckpt / "latest").write_text("step_00000099\n")
    res = tool("export", "--checkpoint", ckpt, "--output", tmp_path / "hf")
    assert res.returncode == 2 and res.stderr.strip() == (
        f"error: --output {tmp_path / 'hf'} holds an export of {first} of this checkpoint; the checkpoint's latest "
        f"is now step_00000099: use --overwrite to replace it (or give a new --output)"), res.stderr
    res = tool("export", "--checkpoint", ckpt, "--output", tmp_path / "hf", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert tool("export", "--checkpoint", ckpt, "--output", tmp_path / "hf").stderr.startswith(
        f"{tmp_path / 'hf'} already holds this conversion")
