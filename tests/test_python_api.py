"""minimtl from Python (`minimtl.load`, `minimtl.train`), and minimtl installed: its console commands, and
`import minimtl` from the folder that holds a clone named minimtl."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import minimtl
from conftest import ROOT

TEXTS = ["Alice went to Paris last summer.", "Book a table for two at Bob's in London"]


def test_load_predicts_a_string_as_one_json_object_and_a_list_as_a_list_as_infer_json_prints_them(small):
    predictor = minimtl.load(small)
    one, several = predictor.predict(TEXTS[0]), predictor.predict(TEXTS)
    assert isinstance(one, dict) and isinstance(several, list) and len(several) == len(TEXTS)
    assert json.loads(json.dumps([one, several])) == [one, several]  # plain JSON values, as they are
    assert one == several[0] and {"label", "label_probability", "entities", "words", "tags"} <= set(one)
    printed = subprocess.run([sys.executable, "infer.py", "--checkpoint", str(small), "--json", *TEXTS], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr
    assert [json.loads(line) for line in printed.stdout.splitlines()] == several


@pytest.mark.parametrize("texts, message", [("  ", "text 1 is empty"), (["Paris", 7], "text 2 is not a string but int"),
                                            (7, "give a list of texts")])
def test_predict_refuses_what_is_no_text_with_a_user_error(predictor, texts, message):
    with pytest.raises(minimtl.UserError, match=message):
        predictor.predict(texts)


def test_train_runs_a_tiny_run_from_python_with_paths_for_its_path_settings(tiny_data, tiny_weights, tmp_path):
    out = tmp_path / "run"
    results = minimtl.train(data=[tiny_data], weights=tiny_weights, out=out, epochs=1, batch_size=16, device="cpu",
                            quiet=True)
    assert results["best_epoch"] == 1 and "label_accuracy" in results["dev"]
    assert minimtl.load(out).predict(TEXTS[0])["text"] == TEXTS[0]


@pytest.mark.parametrize("settings, message", [
    ({"freeze": "backbone"}, r"--freeze must be a list of strings \(freeze=\['backbone'\] for one\)"),
    ({"epochs": "3"}, "--epochs must be a whole number, not '3'"),
    ({"batch_size": True}, "--batch-size must be a whole number"),
    ({"epochs": 0}, "--epochs must be positive, not 0"),
    ({"epoch": 3}, "'epoch' is not a setting"),
])
def test_a_bad_setting_raises_a_user_error_and_writes_nothing(tmp_path, settings, message):
    with pytest.raises(minimtl.UserError, match=message):
        minimtl.train(out=tmp_path / "run", device="cpu", **settings)
    assert not (tmp_path / "run").exists()


def test_importing_the_core_loads_no_machinery_and_load_brings_none_of_the_training_code():
    script = ("import sys, minimtl.bert; seen = lambda: sorted(m for m in sys.modules if m.startswith(("
              "'minimtl.machinery', 'minimtl.extensions')))\n"
              "import minimtl; before = seen(); names = ('load' in dir(minimtl), 'train' in minimtl.__all__)\n"
              "minimtl.load; print(before, names, 'minimtl.machinery.checkpoint' in sys.modules, "
              "sorted({'minimtl.training', 'minimtl.machinery.run'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "(True,", "True)", "True", "[]"]


# --- installed: one copy of the repository, a regular and an editable install of it, each into its own venv ---

def _copy_of_this_clone(to):
    """The repository as a clone has it: no build outputs, no fetched weights, no caches."""
    def left_out(folder, names):
        fetched = [n for n in names if Path(folder) == ROOT / "weights" and (Path(folder) / n).is_dir()]
        return fetched + [n for n in names if n in {".git", "build", "runs", "__pycache__", ".pytest_cache",
                                                    ".hypothesis"} or n.endswith(".egg-info")]
    shutil.copytree(ROOT, to, ignore=left_out)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """{"regular": venv, "editable": venv}, each with the copy `parent/minimtl` installed; and `parent`."""
    base = tmp_path_factory.mktemp("installed")
    parent = base / "parent"
    _copy_of_this_clone(parent / "minimtl")
    venvs = {}
    for kind, editable in (("regular", []), ("editable", ["-e"])):
        venv = base / kind
        # With the system's site-packages (torch, tokenizers, ...) and its pip and setuptools: offline and quick.
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True)
        done = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                               "--no-index", "-q", *editable, parent / "minimtl"], capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            pytest.skip(f"pip cannot install minimtl offline here: {(done.stderr.strip() or '?').splitlines()[-1]}")
        venvs[kind] = venv
    return venvs, parent


def _clean_env():
    """This environment without what would import this worktree's minimtl instead of the installed one."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")} | {"COLUMNS": "100"}


@pytest.mark.parametrize("command, script", [("minimtl-train", "train.py"), ("minimtl-infer", "infer.py")])
def test_the_installed_commands_print_the_help_of_the_scripts(installed, tmp_path, command, script):
    venvs, _ = installed
    got = subprocess.run([venvs["regular"] / "bin" / command, "--help"], cwd=tmp_path, env=_clean_env(),
                         capture_output=True, text=True, timeout=120)
    expected = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=_clean_env(), capture_output=True,
                              text=True, timeout=120)
    assert got.returncode == 0 and expected.returncode == 0, got.stderr + expected.stderr
    assert got.stdout.startswith(f"usage: {command} [-h]")
    # The usage block names the program (and wraps by its name's length); everything after it is the same.
    assert got.stdout.split("\n\n", 1)[1] == expected.stdout.split("\n\n", 1)[1]


@pytest.mark.parametrize("kind", ["regular", "editable"])
def test_the_installed_package_imports_from_the_folder_holding_a_clone_named_minimtl(installed, kind):
    venvs, parent = installed
    script = "import minimtl.weights, minimtl; print(minimtl.__file__, minimtl.weights.__file__, minimtl.load.__name__)"
    done = subprocess.run([venvs[kind] / "bin" / "python", "-c", script], cwd=parent, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    init, weights, load = done.stdout.split()
    assert init.startswith(str(venvs[kind]) if kind == "regular" else str(parent / "minimtl" / "minimtl"))
    assert Path(weights) == Path(init).parent / "weights.py" and load == "load_predictor"
