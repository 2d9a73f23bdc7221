"""Figures for fault statistics and what-if sweeps (matplotlib, imported on use).

Each function returns a :class:`matplotlib.figure.Figure` and draws nothing else, so a
notebook shows it and a script saves it (``fig.savefig(...)``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:                      # pragma: no cover
        raise ImportError("plots need matplotlib: pip install 'vecmmu[plot]'") from e
    return plt


def faults_heatmap(wi, by="2M", *, share: bool = False, max_regions: int = 30, ax=None):
    """Faults per region (rows) × variant (columns) of a :class:`~vecmmu.analysis.WhatIf`.
    ``by``: ``"2M"``, ``"1G"``, ``"page"``, ``"half"``, or labels per translation.
    Regions with no fault under any variant are left out; the busiest ``max_regions`` kept."""
    plt = _plt()
    data = wi.by_region(by)
    if share:
        total = pd.Series(np.ones(len(wi.addr)), index=np.asarray(_labels(wi, by))).groupby(
            level=0).sum()
        data = data.div(total.reindex(data.index.astype(str)).to_numpy(), axis=0)
    data = data.loc[data.sum(axis=1) > 0]
    data = data.iloc[np.argsort(-data.sum(axis=1).to_numpy(), kind="stable")[:max_regions]]
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * data.shape[1], 1.0 + 0.35 * max(len(data), 1)))
    else:
        fig = ax.figure
    im = ax.imshow(data.to_numpy(dtype=float), aspect="auto", cmap="Reds")
    ax.set_xticks(range(data.shape[1]), data.columns, rotation=35, ha="right")
    ax.set_yticks(range(len(data)), [str(i) for i in data.index])
    for (r, c), v in np.ndenumerate(data.to_numpy()):
        ax.text(c, r, f"{v:.0%}" if share else f"{int(v):,}", ha="center", va="center", fontsize=7)
    ax.set_title("faults per region and variant")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


def _labels(wi, by):
    from .stats import region_labels
    return region_labels(wi.addr, by) if isinstance(by, str) else np.asarray(by)


def fault_kinds(wi, *, ax=None):
    """Stacked bars: fault classes (and 2-D stages) per variant, as shares of translations."""
    plt = _plt()
    s = wi.summary()
    s = s[s["fault"] != "none"].copy()
    s["what"] = s["fault"].astype(str) + np.where(s["stage"].astype(str).isin(["none", "guest"]),
                                                  "", " (" + s["stage"].astype(str) + ")")
    tab = s.pivot_table(index="variant", columns="what", values="share", aggfunc="sum",
                        fill_value=0.0, observed=False).reindex(wi.names, fill_value=0.0)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(wi.names), 4))
    else:
        fig = ax.figure
    bottom = np.zeros(len(tab))
    for col in tab.columns:
        ax.bar(range(len(tab)), tab[col].to_numpy(), bottom=bottom, label=col)
        bottom += tab[col].to_numpy()
    ax.set_xticks(range(len(tab)), tab.index, rotation=35, ha="right")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{y:.0%}"))
    ax.set_ylabel("share of translations")
    ax.set_title("fault kinds per variant")
    if len(tab.columns):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


def permission_map(res, *, by="2M", ax=None, max_regions: int = 40):
    """An address-space map: for each region touched by a translated batch, the share of
    its translations per rights string (``r-ux`` style; rights of the guest leaf, and
    TDP rights beside them for 2-D walks), faults shown as their class."""
    plt = _plt()
    from .stats import region_labels
    df = res.to_frame()
    lab = region_labels(res.addr, by) if isinstance(by, str) else np.asarray(by)
    what = df["rights"].astype(str)
    if "tdp_rights" in df:
        what = what + " / " + df["tdp_rights"].astype(str)
    what = what.where(df["fault"] == "none", "fault: " + df["fault"].astype(str))
    tab = pd.crosstab(pd.Series(lab, name="region"), what.rename("rights"), normalize="index")
    tab = tab.iloc[:max_regions]
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.3 * len(tab)))
    else:
        fig = ax.figure
    left = np.zeros(len(tab))
    cmap = plt.get_cmap("tab20")
    for j, col in enumerate(tab.columns):
        ax.barh(range(len(tab)), tab[col].to_numpy(), left=left, label=col, color=cmap(j % 20))
        left += tab[col].to_numpy()
    ax.set_yticks(range(len(tab)), [str(i) for i in tab.index])
    ax.invert_yaxis()
    ax.set_xlabel("share of the region's translations")
    ax.set_title("rights by address region (guest / TDP)" if "tdp_rights" in df else
                 "rights by address region")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig
