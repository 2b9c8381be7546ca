"""Bad input, end to end: every mistake gets ONE line naming the file or field and what to do, exit 2.

The command line runs as a real subprocess; files are real files (a FIFO, a directory, a file the
user cannot read, checkpoints written by ``torch.save``, a tar built here).
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from mfsearch.ablation import load_experiment
from mfsearch.errors import InputError
from mfsearch.evaluation.data import MfsearchDataError, read_cifar
from mfsearch.models import create_model
from mfsearch.models.checkpoint import CheckpointError, load_released_checkpoint
from mfsearch.models.io import load_config_file
from mfsearch.space import load_space
from mfsearch.store import StorageError, StudyRef, default_storage_url, open_storage, write_run_info

_LIBC = ctypes.CDLL(None, use_errno=True)


def _obey_file_modes() -> None:
    """In the child, before exec: drop the capabilities that let root read any file.

    Root then meets file modes like any other user (the interpreter may live in root's own
    home, so switching to another user would not even start Python).
    """
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, from the bounding set (kept across exec)
        if _LIBC.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def cli(*args: str, cwd: Path, obey_modes: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, MFSEARCH_RUNS=str(cwd / "runs"))
    extra = {"preexec_fn": _obey_file_modes} if obey_modes and os.geteuid() == 0 else {}
    return subprocess.run([sys.executable, "-m", "mfsearch.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, **extra)


def one_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exit 2 and one ``mfsearch: error:`` line holding every needle."""
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("mfsearch: error: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def experiment(tmp_path: Path, arms: str = "  a: {}\n  b: {activation: relu}\n", name: str = "e") -> Path:
    """An experiment file whose data set folder is empty: nothing can train from it."""
    (tmp_path / "nodata").mkdir(exist_ok=True)
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\nbase: mobile_former_26m\nseeds: [0]\narms:\n{arms}"
                 f"evaluation: {{data_root: {tmp_path / 'nodata'}, image_size: 16, train_size: 100, val_size: 20, "
                 "batch_size: 16}\n")
    return p


# ----------------------------------------------------------------------------- 1. what a path is


def _space_text(tiny_yaml) -> str:
    return tiny_yaml.read_text()


ENTRY_POINTS = {  # command line -> the kind of file it reads
    "info": lambda p: ["info", str(p)],
    "latency": lambda p: ["latency", str(p), "--runs", "1", "--warmup", "0"],
    "run": lambda p: ["run", str(p), "--no-progress"],
    "ablate": lambda p: ["ablate", str(p)],
    "proxy-check": lambda p: ["proxy-check", str(p), "--quiet"],
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("command,kind", [("info", "fifo"), ("info", "dir"), ("latency", "fifo"), ("run", "fifo"),
                                          ("ablate", "fifo"), ("proxy-check", "fifo")])
def test_a_fifo_or_a_directory_is_named_and_never_opened_for_reading(tmp_path, command, kind):
    p = tmp_path / "given.yaml"
    if kind == "fifo":
        os.mkfifo(p)  # opening it for reading in blocking mode would wait forever for a writer
    else:
        p.mkdir()
    r = cli(*ENTRY_POINTS[command](p), cwd=tmp_path, timeout=120)
    rule = "is not a regular file (a FIFO)" if kind == "fifo" else "is a directory"
    one_line(r, f"{p}: {rule}")


@pytest.mark.parametrize("command", ["info", "run"])
def test_an_unreadable_file_says_permission_denied(tmp_path, command, tiny_yaml):
    text = "base: mobile_former_26m\n" if command == "info" else _space_text(tiny_yaml)
    p = tmp_path / "secret.yaml"
    p.write_text(text)
    p.chmod(0o000)
    r = cli(*ENTRY_POINTS[command](p), cwd=tmp_path, obey_modes=True)
    one_line(r, f"{p}: ", "cannot be read (permission denied)")


# ----------------------------------------------------------------------------- 2. studies: study.json, no trials


@pytest.mark.parametrize("content", ["", "{\"name\": \"tiny\", \"stor", "[1, 2]", "{\"name\": \"tiny\"}"])
def test_an_empty_or_corrupt_study_json_is_one_line(tmp_path, content):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "study.json").write_text(content)
    one_line(cli("results", "tiny", cwd=tmp_path), f"{run_dir / 'study.json'}: ", "space file")


def test_results_and_pareto_of_a_study_with_no_trials(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    ref = StudyRef("tiny", default_storage_url(run_dir), run_dir)
    optuna.create_study(study_name="tiny", storage=open_storage(ref.storage), directions=["maximize", "minimize"])
    write_run_info(ref, {})
    for command in ("results", "pareto"):
        one_line(cli(command, "tiny", cwd=tmp_path), "study tiny has no trials yet", "mfsearch run")


# ----------------------------------------------------------------------------- 3. subset sizes vs the data set


def test_train_plus_val_larger_than_fashion_mnist_is_refused_at_load(tmp_path, tiny_space):
    p = tiny_space(tmp_path, evaluation={"train_size": 59000, "val_size": 2000})
    line = one_line(cli("run", str(p), "--no-progress", "--trials", "1", "--no-references", cwd=tmp_path),
                    "evaluation.train_size: ", "61000", "60000")
    assert f"{p}:" in line and not (tmp_path / "runs" / "tiny").exists()


def test_batch_larger_than_train_size_is_refused_not_trained_for_zero_steps(tmp_path, tiny_space):
    p = tiny_space(tmp_path, evaluation={"train_size": 100, "val_size": 50, "batch_size": 128})
    one_line(cli("run", str(p), "--no-progress", "--trials", "1", "--no-references", cwd=tmp_path),
             f"{p}:", "evaluation.batch_size: ", "train_size (100)")


@pytest.mark.parametrize("evaluation,pattern", [
    ({"dataset": "cifar10", "train_size": 49000, "val_size": 2000}, r"evaluation.train_size: .*51000.*50000"),
    ({"dataset": "cifar100", "train_size": None, "val_size": 50000}, r"evaluation.val_size: .*50000"),
    ({"dataset": "fashion_mnist", "train_size": None, "val_size": 59990, "batch_size": 64},
     r"evaluation.batch_size: .* 10 "),
    ({"dataset": "fashion_mnist", "train_size": 10, "val_size": 10, "batch_size": 2.5e1},
     r"evaluation.batch_size: .*train_size \(10\)"),
])
def test_subset_sizes_are_checked_against_the_known_split_sizes(tmp_path, evaluation, pattern, tiny_space):
    with pytest.raises(InputError, match=pattern):
        load_space(tiny_space(tmp_path, evaluation=evaluation))
    exp = experiment(tmp_path)
    data = yaml.safe_load(exp.read_text())
    data["evaluation"].update(evaluation)
    exp.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match=pattern):
        load_experiment(exp)


def _image_tree(root: Path, per_class: int = 12) -> Path:
    from PIL import Image

    for c in ("cat", "dog"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (i * 20, 0 if c == "cat" else 255, 7)).save(root / "train" / c / f"{i}.png")
    return root


def test_imagefolder_sizes_are_refused_when_the_data_is_read(tmp_path, tiny_space):
    tree = _image_tree(tmp_path / "images")
    p = tiny_space(tmp_path, evaluation={"dataset": "imagefolder", "data_root": str(tree), "image_size": 8,
                                         "train_size": 20, "val_size": 10, "batch_size": 4})
    one_line(cli("run", str(p), "--no-progress", "--trials", "1", "--no-references", cwd=tmp_path),
             f"{p}: evaluation.train_size: ", "30", "24")
    p = tiny_space(tmp_path, evaluation={"dataset": "imagefolder", "data_root": str(tree), "image_size": 8,
                                         "train_size": None, "val_size": 10, "batch_size": 16})
    one_line(cli("run", str(p), "--no-progress", "--trials", "1", "--no-references", cwd=tmp_path),
             f"{p}: evaluation.batch_size: ", "14")


# ----------------------------------------------------------------------------- 4. proxy-check flags


@pytest.mark.parametrize("value", ["!!python/object:os.system", "[1"])
def test_proxy_check_set_with_bad_yaml_is_one_line(tmp_path, value, tiny_space):
    p = tiny_space(tmp_path)
    one_line(cli("proxy-check", str(p), "--set", f"evaluation.epochs={value}", "--quiet", cwd=tmp_path),
             f"--set 'evaluation.epochs={value}'", "VALUE")
    assert not (tmp_path / "runs").exists()


def test_proxy_check_zero_cost_batch_larger_than_the_data(tmp_path, tiny_space):
    p = tiny_space(tmp_path)  # train_size 2000, batch_size 64: 31 full batches, 1984 examples an epoch
    one_line(cli("proxy-check", str(p), "--zero-cost", "--skip-paper", "--sample", "4", "--batch-size", "1985",
                 "--quiet", cwd=tmp_path), "--batch-size: ", "1984")


# ----------------------------------------------------------------------------- 5. latency memory


def test_latency_input_beyond_memory_is_refused_up_front(tmp_path):
    one_line(cli("latency", "mobile_former_26m", "--batch", "4096", "--input-size", "4096", cwd=tmp_path),
             "--batch 4096", "--input-size 4096", "GiB", "available")


def test_latency_allocator_failure_is_one_line(tmp_path):
    """The input fits in free memory, but not in the address space this process may use."""
    code = ("import resource, runpy, sys\n"
            "import mfsearch.evaluation.latency\n"
            "vm = next(int(s.split()[1]) * 1024 for s in open('/proc/self/status') if s.startswith('VmSize:'))\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))\n"
            "sys.argv = ['mfsearch', *sys.argv[1:]]\n"
            "runpy.run_module('mfsearch.cli', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code, "latency", "mobile_former_26m", "--batch", "64",
                        "--input-size", "1024", "--runtime", "eager", "--warmup", "0", "--runs", "1"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    one_line(r, "--batch 64", "--input-size 1024", "lower --batch or --input-size")


# ----------------------------------------------------------------------------- 6. checkpoints


class Payload:
    """Any class: a pickle of it is code to run, not weights."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ.get("MFSEARCH_PWNED", "/nonexistent/pwned")),))


def test_checkpoint_with_an_integer_key(tmp_path):
    f = tmp_path / "intkey.pth"
    torch.save({3: torch.zeros(2), "stem.0.weight": torch.zeros(8, 3, 3, 3)}, f)
    with pytest.raises(CheckpointError, match=r"key 3 \(int\).*names"):
        load_released_checkpoint(create_model("mobile_former_26m"), f)


def test_checkpoint_with_a_non_tensor_value(tmp_path):
    f = tmp_path / "strval.pth"
    torch.save({"state_dict": {"stem.0.weight": "hello"}}, f)
    with pytest.raises(CheckpointError, match=r"'stem.0.weight' holds a str, not a tensor"):
        load_released_checkpoint(create_model("mobile_former_26m"), f)


def test_hostile_checkpoint_is_not_a_weights_file(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MFSEARCH_PWNED", str(marker))
    f = tmp_path / "hostile.pth"
    torch.save({"stem.0.weight": Payload()}, f)
    with pytest.raises(CheckpointError) as e:
        load_released_checkpoint(create_model("mobile_former_26m"), f)
    msg = str(e.value)
    assert "not a plain weights checkpoint (a state dict of tensors)" in msg and str(f) in msg
    assert "weights_only" not in msg and "\n" not in msg
    assert not marker.exists()


@pytest.mark.timeout(120)
def test_checkpoint_path_that_is_a_fifo_or_a_directory(tmp_path):
    os.mkfifo(tmp_path / "pipe.pth")
    (tmp_path / "folder.pth").mkdir()
    model = create_model("mobile_former_26m")
    with pytest.raises(CheckpointError, match=r"pipe.pth: is not a regular file \(a FIFO\)"):
        load_released_checkpoint(model, tmp_path / "pipe.pth")
    with pytest.raises(CheckpointError, match=r"folder.pth: is a directory"):
        load_released_checkpoint(model, tmp_path / "folder.pth")


# ----------------------------------------------------------------------------- 7. repeated keys


def test_repeated_key_names_both_lines(tmp_path, tiny_yaml):
    p = tmp_path / "space.yaml"
    text = _space_text(tiny_yaml).replace("  stem: {choice: [8, 12]}\n", "  stem: {choice: [8, 12]}\n  stem: 8\n")
    p.write_text(text)
    first = text.splitlines().index("  stem: {choice: [8, 12]}") + 1
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:{first + 1}: space.stem: repeated key "
                                         rf"\(first at line {first}\)"):
        load_space(p)


@pytest.mark.parametrize("text,line,field,first", [
    ("base: mobile_former_26m\nhead: 64\nstem: 8\nhead: 128\n", 4, "head", 2),
    ("a: 1\nb:\n  x: 1\n  1: 2\n  1.0: 3\n", 5, "b.1.0", 4),  # 1 and 1.0 are one dict key
    ("a: 1\nb:\n  yes: 1\n  true: 2\n", 4, "b.true", 3),
])
def test_repeated_keys_in_config_files(tmp_path, text, line, field, first):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:{line}: {re.escape(field)}: repeated key "
                                         rf"\(first at line {first}\)"):
        load_config_file(p)


@pytest.mark.parametrize("arms,line,field,first", [
    ("  a: {}\n  b: {activation: relu}\n  a: {activation: relu6}\n", 7, "arms.a", 5),
    ("  1: {}\n  \"1\": {activation: relu}\n", 6, "arms.1", 5),
])
def test_repeated_arm_names_are_refused(tmp_path, arms, line, field, first):
    p = experiment(tmp_path, arms)
    one_line(cli("ablate", str(p), cwd=tmp_path), f"{p}:{line}: {field}: repeated key (first at line {first})")




def test_proxy_check_set_value_with_a_repeated_key(tmp_path, tiny_space):
    p = tiny_space(tmp_path)
    one_line(cli("proxy-check", str(p), "--set", "evaluation.epochs={a: 1, a: 2}", "--quiet", cwd=tmp_path),
             "--set 'evaluation.epochs={a: 1, a: 2}'", "VALUE:1: a: repeated key (first at line 1)")


def test_arm_names_that_read_alike_as_text_are_refused(tmp_path):
    p = experiment(tmp_path, "  true: {}\n  \"True\": {activation: relu}\n")  # True and "True": one name, "True"
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:6: arms.True: two arms have this name"):
        load_experiment(p)
# ----------------------------------------------------------------------------- 8. ablate --seeds


@pytest.mark.parametrize("seeds", ["0", "-2"])
def test_ablate_seeds_must_be_positive(tmp_path, seeds):
    one_line(cli("ablate", str(experiment(tmp_path)), "--seeds", seeds, cwd=tmp_path),
             f"--seeds: must be in [1, 100], got {seeds}")


# ----------------------------------------------------------------------------- 9. info of a variant


def test_info_of_a_variant_shows_its_own_name_and_no_paper_line(tmp_path):
    v = tmp_path / "my_variant.yaml"
    v.write_text("base: mobile_former_294m\nactivation: relu6\n")
    r = cli("info", str(v), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("my_variant  arch_id ") and "paper:" not in r.stdout
    same = tmp_path / "mobile_former_294m.yaml"  # named like the preset, but not the preset
    same.write_text("base: mobile_former_294m\nnum_tokens: 3\n")
    out = json.loads(cli("info", str(same), "--json", cwd=tmp_path).stdout)
    assert "paper" not in out
    plain = tmp_path / "plain.yaml"  # the preset itself, in a file
    plain.write_text("base: mobile_former_294m\n")
    r = cli("info", str(plain), cwd=tmp_path)
    assert r.stdout.startswith("mobile_former_294m  arch_id ")
    assert "paper: MACs 294M  params 11.4M  ImageNet top-1 77.9" in r.stdout


# ----------------------------------------------------------------------------- 10. numbers written as text


def test_integer_fields_take_exact_integers_in_any_notation(tmp_path, tiny_yaml, tiny_space):
    space = load_space(tiny_space(tmp_path, budget={"macs": "8.5e6", "params": "1e6"},
                                  evaluation={"train_size": "2e3", "lr": "1e-2"}))
    assert space.budget.macs == 8_500_000 and space.budget.params == 1_000_000
    assert space.evaluation.train_size == 2000 and space.evaluation.lr == 0.01
    p = tmp_path / "t.yaml"
    p.write_text(tiny_yaml.read_text().replace("macs: 8500000", "macs: 8.5e6"))  # YAML 1.1 reads 8.5e6 as text
    assert load_space(p).budget.macs == 8_500_000


@pytest.mark.parametrize("evaluation,pattern", [
    ({"epochs": 2.5}, r"evaluation.epochs: must be an integer, got 2.5"),
    ({"epochs": "2.5e0"}, r"evaluation.epochs: must be an integer, got '2.5e0'"),
    ({"epochs": "two"}, r"evaluation.epochs: must be an integer, got 'two'"),
    ({"epochs": "nan"}, r"evaluation.epochs: must be an integer, got 'nan'"),
    ({"lr": "fast"}, r"evaluation.lr: must be a number, got 'fast'"),
    ({"lr": "inf"}, r"evaluation.lr: must be a number, got 'inf'"),
])
def test_non_integral_or_non_numeric_values_are_refused(tmp_path, evaluation, pattern, tiny_space):
    with pytest.raises(InputError, match=pattern):
        load_space(tiny_space(tmp_path, evaluation=evaluation))


def test_ablation_paper_numbers_and_seeds_in_any_notation(tmp_path):
    p = experiment(tmp_path)
    data = yaml.safe_load(p.read_text())
    data.update(seeds=["0", "1e0"], paper={"top1": {"a": "6.4e1"}})
    p.write_text(yaml.safe_dump(data))
    exp = load_experiment(p)
    assert exp.seeds == (0, 1) and exp.arm("a").paper_top1 == 64.0


# ----------------------------------------------------------------------------- 11. storage driver hints


@pytest.mark.parametrize("url,names,not_named", [
    ("mysql://u@127.0.0.1/db", ("mysqlclient", "pymysql"), "postgres"),
    ("mysql+pymysql://u@127.0.0.1/db", ("pip install pymysql",), "postgres"),
    ("postgresql+psycopg2://u@127.0.0.1/db", ("psycopg2",), "mysql"),
])
def test_missing_driver_hint_names_what_the_scheme_needs(url, names, not_named):
    with pytest.raises(StorageError) as e:
        open_storage(url)
    hint = str(e.value).split(";", 1)[1]
    for n in names:
        assert n in hint
    assert not_named not in hint


# ----------------------------------------------------------------------------- 12. CIFAR archive members


BIG = 600 << 20  # over the 512 MiB a CIFAR batch may take


def _sparse_tar(path: Path, sizes: dict[str, int]) -> Path:
    """A .tar.gz of a few hundred bytes whose members unpack to ``sizes`` (GNU sparse files: mostly holes)."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as t:
        for member, size in sizes.items():
            data = f"1\n{size - 10}\n10\n".encode().ljust(512, b"\0") + b"x" * 10
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": member,
                                "GNU.sparse.realsize": str(size)}
            t.addfile(info, io.BytesIO(data))
    return path


def test_cifar_archive_member_larger_than_the_limit_is_refused(tmp_path):
    archive = _sparse_tar(tmp_path / "cifar-10-python.tar.gz", {"cifar-10-batches-py/data_batch_1": BIG})
    assert archive.stat().st_size < 4096
    with pytest.raises(MfsearchDataError, match=r"cifar-10-batches-py/data_batch_1: .*629145600 bytes.*512 MiB"):
        read_cifar(tmp_path, "cifar10")


def test_cifar_batch_file_larger_than_the_limit_is_refused(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            f.truncate(BIG)  # sparse: no disk space used
    with pytest.raises(MfsearchDataError, match=r"cifar-100-python/train: .*629145600 bytes.*512 MiB"):
        read_cifar(tmp_path, "cifar100")


def test_cifar_archive_whose_batches_add_up_to_too_much_is_refused_before_reading(tmp_path):
    sizes = {f"cifar-10-batches-py/data_batch_{i}": 250 << 20 for i in range(1, 6)}  # each fits; not all five
    _sparse_tar(tmp_path / "cifar-10-python.tar.gz", sizes)
    with pytest.raises(MfsearchDataError, match=r"cifar-10-python.tar.gz: the 5 batches unpack to 1310720000 bytes in "
                                                r"all, more than the 1024 MiB"):
        read_cifar(tmp_path, "cifar10")


def test_a_space_taking_its_evaluation_from_a_file_without_one_is_one_line(tmp_path, tiny_space, run_cli):
    (tmp_path / "notes.yaml").write_text("name: notes\n")
    p = tiny_space(tmp_path, evaluation={"from": "notes.yaml"})
    r = run_cli("run", str(p), "--no-progress", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "evaluation.from" in line and "notes.yaml has no evaluation: section" in line, line
