"""The home page renders on a machine without a GPU and never imports a framework."""
import subprocess
import sys

from conftest import REPO
from streamlit.testing.v1 import AppTest


def test_home_page_renders_machine_and_datasets():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Framework comparison lab"
    headers = [h.value for h in at.header]
    assert "This machine" in headers and "Datasets here" in headers
    frameworks = at.dataframe[0].value
    assert set(frameworks["framework"]) == {"keras", "tensorflow", "pytorch", "jax"}
    datasets = at.dataframe[1].value
    assert "digits" in set(datasets["name"])
    assert set(datasets.loc[datasets["name"] == "chestmnist", "state"]) == {"unsupported"}


def test_ui_modules_import_no_framework():
    code = ("import sys, runpy; sys.argv=['x']; import engines.datasets, engines.machine, engines.cli; "
            "bad=[m for m in ('torch','tensorflow','jax','keras') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
