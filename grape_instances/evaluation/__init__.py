"""Evaluators shared by every grape model (semantic metrics, bunch counting, instance F1)."""

from .count import CountEvaluator
from .instance import InstanceF1Evaluator
from .semantic import MergedInstancesEvaluator, SemanticEvaluator, instances_to_semantic

__all__ = ["CountEvaluator", "InstanceF1Evaluator", "MergedInstancesEvaluator",
           "SemanticEvaluator", "instances_to_semantic"]
