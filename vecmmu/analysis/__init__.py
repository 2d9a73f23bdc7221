"""Analysis on top of translations and page tables.

- :mod:`~vecmmu.analysis.mappings`: every mapping of a page-table hierarchy, merged into
  ranges (a page-table dump), with filters and policy checks
- :mod:`~vecmmu.analysis.stats`: fault summaries of translated traces
- :mod:`~vecmmu.analysis.whatif`: what-if permission sweeps (walk once, decide many times)
- :mod:`~vecmmu.analysis.overlay`: EPT permission overlays (RWX memory attributes)
- :mod:`~vecmmu.analysis.plots`: figures (matplotlib, imported on use)
"""
from .mappings import Mappings, list_mappings, policy_violations
from .overlay import Overlay, overlays_for_gva
from .stats import (TraceStats, error_code_table, fault_frame, fault_stats, fault_summary,
                    region_labels, region_summary, top_faulting_pages)
from .whatif import Variant, WhatIf, whatif

__all__ = ["Mappings", "Overlay", "TraceStats", "Variant", "WhatIf", "error_code_table",
           "fault_frame", "fault_stats", "fault_summary", "list_mappings", "overlays_for_gva",
           "policy_violations", "region_labels", "region_summary", "top_faulting_pages", "whatif"]
