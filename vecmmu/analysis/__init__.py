"""Analysis on top of translations and page tables.

- :mod:`~vecmmu.analysis.mappings`: every mapping of a page-table hierarchy, merged into
  ranges (a page-table dump), with filters and policy checks
- :mod:`~vecmmu.analysis.stats`: fault summaries of translated traces
"""
from .mappings import Mappings, list_mappings, policy_violations
from .stats import fault_summary, error_code_table, region_summary, TraceStats

__all__ = ["Mappings", "TraceStats", "error_code_table", "fault_summary", "list_mappings",
           "policy_violations", "region_summary"]
