"""Evaluators shared by every grape model (semantic metrics, bunch counting)."""

from .count import CountEvaluator
from .semantic import MergedInstancesEvaluator, SemanticEvaluator, instances_to_semantic

__all__ = ["CountEvaluator", "MergedInstancesEvaluator", "SemanticEvaluator",
           "instances_to_semantic"]
