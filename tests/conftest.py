import os
import sys
from pathlib import Path

import pytest

from arcli import registry

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCE = ROOT / "examples" / "plugin"


def install_plugin_metadata(site: Path) -> Path:
    """Make the example plugin discoverable the way `pip install` would: a dist-info folder with
    its entry points, on the path beside the plugin's source."""
    info = site / "arcli_bigram-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: arcli-bigram\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[arcli.models]\nbigram = arcli_bigram:family\n")
    return site


@pytest.fixture
def bigram_plugin(tmp_path, monkeypatch):
    """The example plugin registered through its entry point, for this test only."""
    site = install_plugin_metadata(tmp_path / "site")
    monkeypatch.syspath_prepend(str(PLUGIN_SOURCE))
    monkeypatch.syspath_prepend(str(site))
    registry._entry_point_families.cache_clear()
    yield os.pathsep.join([str(site), str(PLUGIN_SOURCE)])  # for PYTHONPATH in subprocess tests
    registry._entry_point_families.cache_clear()
    sys.modules.pop("arcli_bigram", None)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run faster on one thread, and the suite's timing is steadier on shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
