"""Studies: a YAML protocol (data, folds, generators, arms, volumes, classifiers, seeds) run resumably."""
from medsyn.study.config import StudyConfig, load_study
from medsyn.study.runner import StudyInterrupted, StudyRunner

__all__ = ["StudyConfig", "StudyInterrupted", "StudyRunner", "load_study"]
