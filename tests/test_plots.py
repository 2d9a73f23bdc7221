"""Plots return figures (Agg backend) with the data drawn."""
import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from vecmmu import demo  # noqa: E402
from vecmmu.analysis import plots  # noqa: E402
from vecmmu.analysis.whatif import Variant, whatif  # noqa: E402


@pytest.fixture(scope="module")
def sweep():
    mmu = demo.build_guest()
    acc = demo.make_trace(5000, seed=3)
    return mmu.walker(), acc, whatif(mmu.walker(), acc, [Variant("no SMAP", smap=False),
                                                         Variant("NX off", nxe=False)])


def test_heatmap(sweep):
    _, _, wi = sweep
    fig = plots.faults_heatmap(wi, max_regions=1000)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == wi.names
    img = ax.images[0].get_array()
    assert img.sum() == (wi.fault != 0).sum()     # every fault lands in one cell
    fig2 = plots.faults_heatmap(wi, by="half", share=True)
    assert fig2.axes[0].images[0].get_array().max() <= 1.0
    matplotlib.pyplot.close("all")


def test_fault_kinds(sweep):
    _, _, wi = sweep
    fig = plots.fault_kinds(wi)
    ax = fig.axes[0]
    heights = np.zeros(len(wi.names))
    for p in ax.patches:
        heights[int(round(p.get_x() + p.get_width() / 2))] += p.get_height()
    assert np.allclose(heights, (wi.fault != 0).mean(axis=0))
    matplotlib.pyplot.close("all")


def test_permission_map(sweep):
    w, acc, _ = sweep
    fig = plots.permission_map(w.translate(acc))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "r-ux" in labels and any(s.startswith("fault") for s in labels)
    matplotlib.pyplot.close("all")
