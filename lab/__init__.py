"""The lab's front door: CLI, experiment configs, job orchestration, tracking and reports."""

__version__ = "0.1.0"
