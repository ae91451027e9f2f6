"""Tasks, registered by name: ``matting``, ``classification`` (and ``planted``, the ground-truth
task of :mod:`atldas.tasks.planted`). ``get_task(name)`` raises a ConfigError listing the known
names; ``register_task(name, task)`` adds one."""

from __future__ import annotations

from atldas.registry import Registry
from atldas.tasks.base import DataCfg, Task
from atldas.tasks.classification import ClassificationTask
from atldas.tasks.matting import MattingTask
from atldas.tasks.planted import PlantedTask

__all__ = ["TASKS", "DataCfg", "Task", "get_task", "register_task"]

#: Task name -> :class:`Task`.
TASKS: Registry[Task] = Registry("task")


def register_task(name: str, task: Task) -> Task:
    """Register ``task`` under ``name`` (a duplicate raises ValueError). The task's class sets ``name`` to
    the same text: a run records ``task.name``, and a subclass that inherited its parent's name was
    recorded as the parent."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task({name!r}): expected a Task instance, got {type(task).__name__}")
    if task.name != name:
        raise ValueError(f"register_task({name!r}): the task's name is {task.name!r}; set name = {name!r} in "
                         f"{type(task).__name__} (runs record task.name)")
    TASKS.add(name, task)
    return task


def get_task(name: str) -> Task:
    """The registered task ``name``."""
    return TASKS.get(name)


register_task("matting", MattingTask())
register_task("classification", ClassificationTask())
register_task("planted", PlantedTask())
